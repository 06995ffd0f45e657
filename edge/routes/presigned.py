"""The mini-program's newer flow: upload straight to storage, then one synchronous call.

1. ``POST /api/v1/upload/presigned-url`` returns a presigned S3 ``PUT`` URL and its ``file_key``.
2. The client ``PUT``s the photo there (the edge never carries the bytes).
3. ``POST /api/v1/single-process-uploaded-image`` ``{file_key, ...}`` waits for the result and
   returns a presigned result URL (``cdn_url``) and the timings.
"""

from __future__ import annotations

import io
import re
import secrets
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bus.schemas import COMPLETED
from bus.storage import ObjectMissing, display_name, upload_key
from bus.tasks import new_task_id

from .. import dispatch, options
from ..deps import ResourcesDep, client_address
from ..errors import ApiError
from ..images import inspect
from ..views import download_path
from .wechat import release_use, reserve_use

router = APIRouter(prefix="/api/v1", tags=["presigned upload"])

_UPLOAD_KEY = re.compile(r"^uploads/[A-Za-z0-9_-]{20,64}/[A-Za-z0-9._-]{1,120}$")


class PresignRequest(BaseModel):
    filename: str | None = Field(default=None, max_length=255)
    content_type: str | None = Field(default=None, max_length=100)


class ProcessRequest(BaseModel):
    file_key: str | None = Field(default=None, max_length=300)
    cos_key: str | None = Field(default=None, max_length=300, description="The original client's name for file_key")
    tile_size: int | str | None = None
    quality_level: str | None = None
    scale: int | str | None = None
    face_enhance: bool | str | None = None


@router.post("/upload/presigned-url", summary="A presigned URL to PUT one photo to storage")
async def presigned_url(res: ResourcesDep, body: PresignRequest | None = None) -> dict[str, Any]:
    name = display_name((body.filename if body else None) or "photo.jpg")
    key = upload_key(secrets.token_urlsafe(24), name)
    expires = res.settings.presign_seconds
    url = await res.store.presigned_put(key, timedelta(seconds=expires))
    return {"success": True, "presigned_url": url, "file_key": key, "cos_key": key, "method": "PUT",
            "expires_in": expires, "max_size": res.settings.max_upload_bytes}


@router.post("/single-process-uploaded-image", summary="Enhance a photo uploaded with a presigned URL; waits")
async def process_uploaded(
    request: Request, res: ResourcesDep, body: ProcessRequest,
    authorization: Annotated[str | None, Header(description="Bearer <mini-program session>: uses its credits")] = None,
) -> JSONResponse:
    started = time.perf_counter()
    key = body.file_key or body.cos_key
    if not key:
        raise ApiError(400, "Missing file_key: first upload the photo with a URL from /api/v1/upload/presigned-url.")
    if not _UPLOAD_KEY.match(key):
        raise ApiError(400, "This file_key was not issued by /api/v1/upload/presigned-url.")
    opts = options.parse({"tile_size": body.tile_size, "quality_level": body.quality_level, "scale": body.scale,
                          "face_enhance": body.face_enhance})
    settings = res.settings
    try:
        stat = await res.store.stat(key)
        if stat.size > settings.max_upload_bytes:
            raise ApiError(413, f"The upload is too large. The maximum size is "
                                f"{settings.max_upload_bytes / (1024 * 1024):g} MB.")
        if stat.size == 0:
            raise ApiError(400, "The uploaded file is empty.")
        data = await res.store.get_bytes(key)
    except ObjectMissing as e:
        raise ApiError(404, "Nothing was uploaded under this file_key (or it has expired).") from e
    info = await run_in_threadpool(inspect, io.BytesIO(data), max_pixels=settings.max_input_pixels)
    fetched = time.perf_counter()
    await dispatch.require_enhancer(res)
    await dispatch.require_room(res)
    task_id = new_task_id()
    owner = await reserve_use(res, authorization, task_id, client_address(request))
    try:
        await dispatch.submit(res, task_id=task_id, input_key=key, input_name=key.rsplit("/", 1)[-1],
                              input_size=len(data), width=info.width, height=info.height, options=opts, owner=owner)
    except BaseException as e:
        await release_use(res, owner, task_id, f"not queued: {e}")
        raise
    final = await dispatch.wait_final(res, task_id, settings.sync_timeout)
    if final is None:
        return JSONResponse(status_code=202, content={
            "success": False, "task_id": task_id, "status": "processing",
            "error": f"Still processing after {settings.sync_timeout:g} s; poll /api/v1/status/{task_id}."})
    if final.status != COMPLETED or not final.output_key:
        return JSONResponse(status_code=422, content={"success": False, "task_id": task_id, "status": final.status,
                                                      "error": final.error or "Enhancement failed."})
    url = await res.store.presigned_get(final.output_key, timedelta(seconds=settings.presign_seconds),
                                        filename=final.output_name)
    total = time.perf_counter() - started
    return JSONResponse({
        "success": True, "task_id": task_id, "status": final.status,
        "cdn_url": url, "result_url": url, "download_url": download_path(task_id),
        "width": final.output_width, "height": final.output_height, "size": final.output_size,
        "content_type": final.output_content_type,
        "download_time": round(fetched - started, 3),
        "processing_time": final.processing_time,
        "upload_time": final.timings.get("store"),
        "total_time": round(total, 3),
    })
