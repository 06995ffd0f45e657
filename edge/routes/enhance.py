"""``POST /api/v1/enhance``: accept a photo, queue it, answer at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile
from starlette.datastructures import UploadFile as ReceivedFile

from bus.schemas import EnhanceOptions, TaskState
from bus.tasks import is_task_id, new_task_id

from .. import contract, idempotency, intake, options
from ..contract import Accepted
from ..credits import Payer
from ..deps import ResourcesDep, client_address
from ..errors import ApiError
from ..resources import Resources

router = APIRouter(prefix="/api/v1", tags=["enhance"])

OptionalStr = str | None


@router.post("/enhance", summary="Enhance one photo (asynchronous: poll the status, then download)",
             responses=contract.errors(400, 401, 402, 408, 409, 413, 415, 429, 503))
async def enhance(
    request: Request, res: ResourcesDep,
    file: Annotated[UploadFile | None, File(description="The photo (JPEG, PNG, WebP, AVIF, BMP, TIFF)")] = None,
    tile_size: Annotated[OptionalStr, Form(description="0 (whole image) or 32–2048; default 400")] = None,
    quality_level: Annotated[OptionalStr, Form(description="fast | medium | high (default)")] = None,
    scale: Annotated[OptionalStr, Form(description="2 or 4 (default)")] = None,
    face_enhance: Annotated[OptionalStr, Form(description="true | false | auto (default)")] = None,
    q_tile_size: Annotated[OptionalStr, Query(alias="tile_size")] = None,
    q_quality_level: Annotated[OptionalStr, Query(alias="quality_level")] = None,
    q_scale: Annotated[OptionalStr, Query(alias="scale")] = None,
    q_face_enhance: Annotated[OptionalStr, Query(alias="face_enhance")] = None,
    authorization: Annotated[OptionalStr, Header(description="Bearer <mini-program session>: uses its credits")] = None,
    idempotency_key: Annotated[OptionalStr, Header(
        alias=idempotency.HEADER, description="Sending again with the same key returns the same task")] = None,
) -> Accepted:
    opts = options.parse(
        {"tile_size": tile_size, "quality_level": quality_level, "scale": scale, "face_enhance": face_enhance},
        {"tile_size": q_tile_size, "quality_level": q_quality_level, "scale": q_scale,
         "face_enhance": q_face_enhance},
    )
    if not isinstance(file, ReceivedFile):
        raise ApiError(400, "No file was uploaded: send the photo in a multipart form field named 'file'.")
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
            raise ApiError(409, "An earlier request with this Idempotency-Key is still being handled; "
                                "try again in a moment.", headers={"Retry-After": "2"})
        return _accepted(state)
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
    return _accepted(state)


def _accepted(state: TaskState) -> Accepted:
    return Accepted.model_validate(state, from_attributes=True)


def _measure(file: UploadFile) -> int:
    file.file.seek(0, 2)
    size = file.file.tell()
    file.file.seek(0)
    return size
