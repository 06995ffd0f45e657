"""``POST /api/v1/enhance``: accept a photo, queue it, answer at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile
from starlette.datastructures import UploadFile as ReceivedFile

from bus.schemas import EnhanceOptions, TaskState
from bus.tasks import is_task_id, new_task_id

from .. import contract, idempotency, intake, options, texts
from ..contract import Accepted
from ..credits import Payer
from ..deps import ResourcesDep, client_address
from ..errors import ApiError
from ..resources import Resources
from ..texts import request_language
from ..views import in_words

router = APIRouter(prefix="/api/v1", tags=["enhance"])

OptionalStr = str | None


@router.post("/enhance", summary="Enhance one photo (asynchronous: poll the status, then download)",
             responses=contract.errors(400, 401, 402, 408, 409, 413, 415, 429, 503))
async def enhance(
    request: Request, res: ResourcesDep,
    file: Annotated[UploadFile | None, File(
        description="The photo (JPEG, PNG, WebP, AVIF, HEIC/HEIF, BMP, TIFF)")] = None,
    tile_size: Annotated[OptionalStr, Form(description="0 (whole image) or 32–2048; default 400")] = None,
    quality_level: Annotated[OptionalStr, Form(
        description="fast | medium | high; default high, or fast where every enhancer runs on a CPU (/api/v1/info "
                    "says which: default_quality)")] = None,
    scale: Annotated[OptionalStr, Form(description="2 or 4 (default)")] = None,
    face_enhance: Annotated[OptionalStr, Form(description="true | false | auto (default)")] = None,
    face_strength: Annotated[OptionalStr, Form(
        description="0 (the original face) to 1 (fully restored); default 0.7")] = None,
    output_format: Annotated[OptionalStr, Form(
        description="auto (default: PNG stays PNG, as does transparency; else JPEG) | jpeg | png | webp | avif"
    )] = None,
    output_quality: Annotated[OptionalStr, Form(description="1–100 for jpeg, webp and avif; default 92")] = None,
    q_tile_size: Annotated[OptionalStr, Query(alias="tile_size")] = None,
    q_quality_level: Annotated[OptionalStr, Query(alias="quality_level")] = None,
    q_scale: Annotated[OptionalStr, Query(alias="scale")] = None,
    q_face_enhance: Annotated[OptionalStr, Query(alias="face_enhance")] = None,
    q_face_strength: Annotated[OptionalStr, Query(alias="face_strength")] = None,
    q_output_format: Annotated[OptionalStr, Query(alias="output_format")] = None,
    q_output_quality: Annotated[OptionalStr, Query(alias="output_quality")] = None,
    authorization: Annotated[OptionalStr, Header(description="Bearer <mini-program session>: uses its credits")] = None,
    idempotency_key: Annotated[OptionalStr, Header(
        alias=idempotency.HEADER, description="Sending again with the same key returns the same task")] = None,
) -> Accepted:
    sources = (
        {"tile_size": tile_size, "quality_level": quality_level, "scale": scale, "face_enhance": face_enhance,
         "output_format": output_format, "output_quality": output_quality, "face_strength": face_strength},
        {"tile_size": q_tile_size, "quality_level": q_quality_level, "scale": q_scale,
         "face_enhance": q_face_enhance, "output_format": q_output_format, "output_quality": q_output_quality,
         "face_strength": q_face_strength},
    )
    opts = options.parse(*sources)
    if not isinstance(file, ReceivedFile):
        raise ApiError(400, texts.UPLOAD_NO_FILE())
    opts = options.with_fleet_default(opts, res.registry.servers(), *sources)
    task_id = new_task_id()
    if idempotency_key is None:
        return await _accept(request, res, file, opts, task_id, authorization)
    claim = idempotency.claim_key(authorization or client_address(request), idempotency_key)

    async def has_task(earlier: str) -> bool:
        return is_task_id(earlier) and await res.tasks.get(earlier) is not None

    earlier = await idempotency.claim(res.tasks.kv, claim, task_id, has_task=has_task)
    if earlier is not None:
        state = await res.tasks.get(earlier) if is_task_id(earlier) else None
        if state is None:
            raise ApiError(409, texts.IDEMPOTENCY_IN_FLIGHT(), headers={"Retry-After": "2"})
        return _accepted(request, state)
    try:
        return await _accept(request, res, file, opts, task_id, authorization)
    except BaseException:
        await idempotency.release(res.tasks.kv, claim)
        raise


async def _accept(request: Request, res: Resources, file: UploadFile, opts: EnhanceOptions, task_id: str,
                  authorization: str | None) -> Accepted:
    """The upload's bytes through the one intake (``edge/intake.py``)."""
    size = file.size if file.size is not None else _measure(file)
    photo = await intake.check(res, file.file, size, file.filename)
    state = await intake.accept(res, photo, opts, Payer(authorization, client_address(request)), task_id=task_id)
    return _accepted(request, state)


def _accepted(request: Request, state: TaskState) -> Accepted:
    """The answer, its ``message`` in the request's language."""
    return Accepted.model_validate({
        "task_id": state.task_id, "status": state.status, "created_at": state.created_at,
        "message": in_words(state.message_text, state.message, request_language(request)) or ""})


def _measure(file: UploadFile) -> int:
    file.file.seek(0, 2)
    size = file.file.tell()
    file.file.seek(0)
    return size
