"""The mini-program's newer flow: upload straight to storage, then one synchronous call.

1. ``POST /api/v1/upload/presigned-url`` returns a presigned S3 ``PUT`` URL and its ``file_key``.
2. The client ``PUT``s the photo there (the edge never carries the bytes).
3. ``POST /api/v1/single-process-uploaded-image`` ``{file_key, ...}`` waits for the result and
   returns a presigned result URL (``cdn_url``) and the timings.

What a URL can store is bounded: by the exact ``size`` the client announced (a signed
``Content-Length``: the storage refuses any other body), else by the upload limit; anything larger
is refused with 413 and deleted at once. The URL lives minutes. The edge reads the staging object
once, checks it, writes those very bytes to the task's own ``inputs/`` key and deletes the staging
object: a later ``PUT`` through the same URL changes nothing, and a ``file_key`` becomes one task only.
Staging objects never processed are deleted by the janitor (``edge.staging``).
"""

from __future__ import annotations

import contextlib
import io
import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bus.schemas import COMPLETED
from bus.storage import ObjectMissing, ObjectTooLarge, StorageError, display_name

from .. import contract, dispatch, intake, options, staging
from ..contract import PresignedUpload, ProcessedUpload, UnfinishedUpload
from ..credits import Payer
from ..deps import ResourcesDep, client_address
from ..errors import ApiError
from ..intake import too_large
from ..resources import Resources
from ..views import download_path

router = APIRouter(prefix="/api/v1", tags=["presigned upload"])


class PresignRequest(BaseModel):
    filename: str | None = Field(default=None, max_length=255)
    content_type: str | None = Field(default=None, max_length=100)
    size: int | None = Field(default=None, ge=1, description="The file's exact size in bytes: the URL then "
                                                             "accepts exactly this many bytes")


class ProcessRequest(BaseModel):
    file_key: str | None = Field(default=None, max_length=300)
    cos_key: str | None = Field(default=None, max_length=300, description="The original client's name for file_key")
    tile_size: int | str | None = None
    quality_level: str | None = None
    scale: int | str | None = None
    face_enhance: bool | str | None = None


async def _discard(res: Resources, key: str) -> None:
    """Delete a staging object now (the janitor retries what fails here)."""
    with contextlib.suppress(StorageError):
        await res.store.remove(key)


@router.post("/upload/presigned-url", summary="A presigned URL to PUT one photo to storage",
             responses=contract.errors(413, 429, 503))
async def presigned_url(res: ResourcesDep, body: PresignRequest | None = None) -> PresignedUpload:
    settings = res.settings
    size = body.size if body else None
    if size is not None and size > settings.max_upload_bytes:
        raise too_large(settings.max_upload_bytes)
    name = display_name((body.filename if body else None) or "photo.jpg")
    key = staging.new_key(name, size or settings.max_upload_bytes)
    expires = settings.upload_url_seconds
    url = await res.store.presigned_put(key, timedelta(seconds=expires), content_length=size)
    return PresignedUpload(success=True, presigned_url=url, file_key=key, cos_key=key, method="PUT",
                           expires_in=expires, max_size=size or settings.max_upload_bytes)


@router.post("/single-process-uploaded-image", summary="Enhance a photo uploaded with a presigned URL; waits",
             response_model=ProcessedUpload,
             responses={202: {"model": UnfinishedUpload, "description": "Still processing when the wait ended"},
                        **contract.errors(400, 401, 402, 404, 413, 415, 429, 503),
                        422: {"model": UnfinishedUpload | contract.ErrorBody,
                              "description": "The enhancement failed, or the request was invalid"}})
async def process_uploaded(
    request: Request, res: ResourcesDep, body: ProcessRequest,
    authorization: Annotated[str | None, Header(description="Bearer <mini-program session>: uses its credits")] = None,
) -> ProcessedUpload | JSONResponse:
    started = time.perf_counter()
    key = body.file_key or body.cos_key
    if not key:
        raise ApiError(400, "Missing file_key: first upload the photo with a URL from /api/v1/upload/presigned-url.")
    settings = res.settings
    staged = staging.parse(key, settings.max_upload_bytes)
    if staged is None:
        raise ApiError(400, "This file_key was not issued by /api/v1/upload/presigned-url.")
    opts = options.parse({"tile_size": body.tile_size, "quality_level": body.quality_level, "scale": body.scale,
                          "face_enhance": body.face_enhance})
    task_id = staged.task_id
    if await res.tasks.get(task_id) is not None:
        # A repeated request (a retry after a lost answer): the same task's answer. Bytes PUT again
        # through the same URL are deleted, never processed.
        await _discard(res, key)
        return await _answer(res, task_id, started, time.perf_counter())
    try:
        data = await res.store.get_bytes(key, max_bytes=staged.bound)
    except ObjectTooLarge as e:
        await _discard(res, key)
        if staged.bound < settings.max_upload_bytes:
            raise ApiError(413, f"The upload is larger than the {staged.bound} bytes this URL was issued for; "
                                "it was deleted.") from e
        raise too_large(settings.max_upload_bytes) from e
    except ObjectMissing as e:
        if await res.tasks.get(task_id) is not None:  # a concurrent request with this file_key took it
            return await _answer(res, task_id, started, time.perf_counter())
        raise ApiError(404, "Nothing was uploaded under this file_key (or it has expired).") from e
    photo = await intake.check(res, io.BytesIO(data), len(data), key.rsplit("/", 1)[-1])
    fetched = time.perf_counter()
    await intake.accept(res, photo, opts, Payer(authorization, client_address(request)), task_id=task_id)
    await _discard(res, key)  # its bytes are the task's now (or, after a concurrent request, already were)
    return await _answer(res, task_id, started, fetched)


async def _answer(res: Resources, task_id: str, started: float, fetched: float) -> ProcessedUpload | JSONResponse:
    """Wait for the task and answer as the mini-program expects (the same for a repeated request)."""
    settings = res.settings
    final = await dispatch.wait_final(res, task_id, settings.sync_timeout)
    if final is None:
        return _unfinished(202, UnfinishedUpload(
            success=False, task_id=task_id, status="processing",
            error=f"Still processing after {settings.sync_timeout:g} s; poll /api/v1/status/{task_id}."))
    if final.status != COMPLETED or not final.output_key:
        return _unfinished(422, UnfinishedUpload.model_validate({"success": False, "task_id": task_id,
                                                                 "status": final.status,
                                                                 "error": final.error or "Enhancement failed."}))
    url = await res.store.presigned_get(final.output_key, timedelta(seconds=settings.presign_seconds),
                                        filename=final.output_name)
    total = time.perf_counter() - started
    return ProcessedUpload(
        success=True, task_id=task_id, status="completed",
        cdn_url=url, result_url=url, download_url=download_path(task_id),
        width=final.output_width, height=final.output_height, size=final.output_size,
        content_type=final.output_content_type,
        download_time=round(fetched - started, 3),
        processing_time=final.processing_time,
        upload_time=final.timings.get("store"),
        total_time=round(total, 3),
    )


def _unfinished(status_code: int, body: UnfinishedUpload) -> JSONResponse:
    """An answer with another status than 200 (a returned model is always 200)."""
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code)
