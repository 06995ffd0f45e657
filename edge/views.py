"""The JSON the clients read (the original's keys, plus what was missing)."""

from __future__ import annotations

from typing import Any

from bus.schemas import COMPLETED, TaskState


def download_path(task_id: str) -> str:
    return f"/api/v1/download/{task_id}"


def task_status(state: TaskState, queue_position: int | None = None) -> dict[str, Any]:
    done = state.status == COMPLETED
    url = download_path(state.task_id) if done else None
    body: dict[str, Any] = {
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
        "options": {"scale": state.scale, "quality_level": state.quality, "tile_size": state.tile_size,
                    "face_enhance": state.face_enhance},
        "input": {"filename": state.input_name, "width": state.width, "height": state.height,
                  "size": state.input_size},
        "output": None,
    }
    if done:
        body["output"] = {"filename": state.output_name, "content_type": state.output_content_type,
                          "width": state.output_width, "height": state.output_height, "size": state.output_size,
                          "engine": state.engine, "faces": state.faces}
    return body
