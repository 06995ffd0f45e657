"""The JSON the clients read (the original's keys, plus what was missing), built from a task's record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.schemas import COMPLETED, TaskState
from bus.texts import DEFAULT, Language, render, restore

from .contract import TaskInput, TaskOptions, TaskOutput, TaskStatus


def in_words(stored: Mapping[str, Any] | None, english: str | None, language: Language) -> str | None:
    """A record's sentence in ``language``: from its catalogue key and values when they still say its English,
    else that English as it was stored (a record from before keys, or from a newer writer)."""
    said = restore(stored, english)
    return None if said is None else render(said, language)


def download_path(task_id: str) -> str:
    return f"/api/v1/download/{task_id}"


def task_status(state: TaskState, queue_position: int | None = None, language: Language = DEFAULT,
                eta_seconds: int | None = None) -> TaskStatus:
    """The status JSON, its sentences (``message``, ``error``) in ``language``; ``eta_seconds`` from ``edge.eta``."""
    done = state.status == COMPLETED
    url = download_path(state.task_id) if done else None
    # Validated, not constructed: the record's plain strings are checked against the contract (``status``).
    return TaskStatus.model_validate({
        "task_id": state.task_id,
        "status": state.status,
        "stage": state.stage,
        "message": in_words(state.message_text, state.message, language),
        "progress": round(state.progress, 4),
        "queue_position": queue_position,
        "result_url": url,
        "download_url": url,  # the original's README promised this key; clients may read either
        "error": in_words(state.error_text, state.error, language),
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "processing_time": state.processing_time,
        "attempts": state.attempts,
        "options": TaskOptions(scale=state.options.scale, quality_level=state.options.quality,
                               tile_size=state.options.tile_size, face_enhance=state.options.face_enhance,
                               face_strength=state.options.face_strength,
                               output_format=state.options.output_format,
                               output_quality=state.options.output_quality),
        "input": TaskInput(filename=state.input_name, width=state.width, height=state.height,
                           size=state.input_size),
        "output": TaskOutput(filename=state.output_name, content_type=state.output_content_type,
                             width=state.output_width, height=state.output_height, size=state.output_size,
                             engine=state.engine, faces=state.faces) if done else None,
        "output_scale": state.output_scale if state.output_scale is not None else float(state.options.scale),
        "notice": in_words(state.notice_text, state.notice, language),
        "eta_seconds": None if state.final else eta_seconds,
    })
