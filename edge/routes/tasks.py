"""Task status and result download. A task is reachable only through its unguessable id."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from bus.schemas import COMPLETED, PROCESSING, TaskState
from bus.storage import ObjectMissing
from bus.tasks import is_task_id
from bus.texts import Language, status_word

from .. import contract, dispatch, eta, texts
from ..contract import Deleted, TaskStatus
from ..credits import release_use
from ..deps import ResourcesDep
from ..errors import ApiError
from ..resources import Resources
from ..texts import LanguageDep
from ..views import task_status

router = APIRouter(prefix="/api/v1", tags=["tasks"])


def check_task_id(task_id: str) -> None:
    if not is_task_id(task_id):
        raise ApiError(400, texts.TASK_ID_INVALID())


def task_not_found(res: Resources) -> ApiError:
    hours = res.settings.tasks.retention_hours
    return ApiError(404, texts.TASK_NOT_FOUND(hours=hours))


async def load_task(res: Resources, task_id: str) -> TaskState:
    check_task_id(task_id)
    state = await res.tasks.get(task_id)
    if state is None:
        raise task_not_found(res)
    return state


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / 5987)."""
    fallback = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\;' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def status_view(res: Resources, state: TaskState, language: Language) -> TaskStatus:
    """The status JSON in ``language``, with the place in line while the task waits and the time left
    (``edge/eta.py``)."""
    position = await dispatch.queue_position(res, state)
    return task_status(state, position, language, eta.estimate(res.registry.servers(), state, position))


@router.get("/status/{task_id}", summary="Where a task is: queued (and its place in line), processing (with "
                                         "progress), completed or failed", responses=contract.errors(400, 404, 503))
async def status(task_id: str, res: ResourcesDep, language: LanguageDep) -> TaskStatus:
    return await status_view(res, await load_task(res, task_id), language)


@router.post("/tasks/{task_id}/cancel", summary="Cancel a task that has not started yet",
             responses={**contract.errors(400, 404, 503),
                        409: {"model": contract.ErrorBody, "description": "The task has already started or finished"}})
async def cancel(task_id: str, res: ResourcesDep, language: LanguageDep) -> TaskStatus:
    check_task_id(task_id)
    state = await dispatch.cancel(res, task_id)
    if state is None:
        raise task_not_found(res)
    if state.stage != dispatch.CANCELLED:
        raise ApiError(409, texts.TASK_NOT_CANCELLABLE(status=status_word(state.status)),
                       current_status=state.status, task_id=task_id)
    await release_use(res, state.owner, task_id, "cancelled by the user")
    return task_status(state, language=language)


@router.delete("/tasks/{task_id}", summary="Delete a task now: its photo, its result and its record",
               responses={**contract.errors(400, 404, 503),
                          409: {"model": contract.ErrorBody, "description": "The photo is being enhanced right now"}})
async def delete(task_id: str, res: ResourcesDep) -> Deleted:
    """The task id is the capability, as for download. A waiting task is cancelled first (its job is dropped
    unrun and its use given back); one being enhanced right now is refused with 409 (its worker is about to
    write the result), and can be deleted once it has finished."""
    check_task_id(task_id)
    state = await dispatch.cancel(res, task_id)
    if state is None:
        raise task_not_found(res)
    if state.status == PROCESSING:
        raise ApiError(409, texts.TASK_DELETE_WHILE_PROCESSING(), headers={"Retry-After": "10"},
                       current_status=state.status, task_id=task_id)
    if state.stage == dispatch.CANCELLED:
        await release_use(res, state.owner, task_id, "deleted by the user")
    for key in (state.input_key, state.output_key):
        if key:
            await res.store.remove(key)
    await res.tasks.purge(task_id)
    return Deleted(task_id=task_id)


@router.get("/download/{task_id}", summary="The enhanced image", response_class=StreamingResponse,
            responses={200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "The image, with its real Content-Type, as an attachment"},
                       **contract.errors(400, 404, 503)})
async def download(task_id: str, res: ResourcesDep) -> StreamingResponse:
    state = await load_task(res, task_id)
    if state.status != COMPLETED or not state.output_key:
        raise ApiError(400, texts.TASK_NOT_COMPLETED(status=status_word(state.status)),
                       current_status=state.status, task_id=task_id)
    try:
        chunks = await res.store.open_stream(state.output_key)
    except ObjectMissing as e:
        raise ApiError(404, texts.TASK_RESULT_EXPIRED()) from e
    headers = {"Content-Disposition": content_disposition(state.output_name or "image_enhanced.jpg"),
               "Cache-Control": "private, max-age=3600"}
    if state.output_size:
        headers["Content-Length"] = str(state.output_size)
    return StreamingResponse(chunks, media_type=state.output_content_type or "application/octet-stream",
                             headers=headers)
