"""The JSON the clients read (the original's keys, plus what was missing), built from a task's record."""

from __future__ import annotations

from bus.schemas import COMPLETED, TaskState

from .contract import TaskInput, TaskOptions, TaskOutput, TaskStatus


def download_path(task_id: str) -> str:
    return f"/api/v1/download/{task_id}"


def task_status(state: TaskState, queue_position: int | None = None) -> TaskStatus:
    done = state.status == COMPLETED
    url = download_path(state.task_id) if done else None
    # Validated, not constructed: the record's plain strings are checked against the contract (``status``).
    return TaskStatus.model_validate({
        "task_id": state.task_id,
        "status": state.status,
        "stage": state.stage,
        "message": state.message,
        "progress": round(state.progress, 4),
        "queue_position": queue_position,
        "result_url": url,
        "download_url": url,  # the original's README promised this key; clients may read either
        "error": state.error,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "processing_time": state.processing_time,
        "attempts": state.attempts,
        "options": TaskOptions(scale=state.options.scale, quality_level=state.options.quality,
                               tile_size=state.options.tile_size, face_enhance=state.options.face_enhance),
        "input": TaskInput(filename=state.input_name, width=state.width, height=state.height,
                           size=state.input_size),
        "output": TaskOutput(filename=state.output_name, content_type=state.output_content_type,
                             width=state.output_width, height=state.output_height, size=state.output_size,
                             engine=state.engine, faces=state.faces) if done else None,
    })
