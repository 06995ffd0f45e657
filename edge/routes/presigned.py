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
from bus.texts import Language, render

from .. import contract, dispatch, intake, options, staging, texts
from ..contract import PresignedUpload, ProcessedUpload, UnfinishedUpload
from ..credits import Payer
from ..deps import ResourcesDep, client_address
from ..errors import ApiError
from ..intake import too_large
from ..resources import Resources
from ..texts import request_language
from ..views import download_path, in_words

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
    #: 0 (the original face) to 1 (fully restored); default 0.7.
    face_strength: float | str | None = None
    output_format: str | None = None
    output_quality: int | str | None = None


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
    language = request_language(request)
    key = body.file_key or body.cos_key
    if not key:
        raise ApiError(400, texts.PRESIGNED_MISSING_KEY())
    settings = res.settings
    staged = staging.parse(key, settings.max_upload_bytes)
    if staged is None:
        raise ApiError(400, texts.PRESIGNED_FOREIGN_KEY())
    given = {"tile_size": body.tile_size, "quality_level": body.quality_level, "scale": body.scale,
             "face_enhance": body.face_enhance, "face_strength": body.face_strength,
             "output_format": body.output_format, "output_quality": body.output_quality}
    opts = options.with_fleet_default(options.parse(given), res.registry.servers(), given)
    task_id = staged.task_id
    if await res.tasks.get(task_id) is not None:
        # A repeated request (a retry after a lost answer): the same task's answer. Bytes PUT again
        # through the same URL are deleted, never processed.
        await _discard(res, key)
        return await _answer(res, task_id, started, time.perf_counter(), language)
    try:
        data = await res.store.get_bytes(key, max_bytes=staged.bound)
    except ObjectTooLarge as e:
        await _discard(res, key)
        if staged.bound < settings.max_upload_bytes:
            raise ApiError(413, texts.PRESIGNED_OVER_BOUND(bound=staged.bound)) from e
        raise too_large(settings.max_upload_bytes) from e
    except ObjectMissing as e:
        if await res.tasks.get(task_id) is not None:  # a concurrent request with this file_key took it
            return await _answer(res, task_id, started, time.perf_counter(), language)
        raise ApiError(404, texts.PRESIGNED_NOTHING()) from e
    photo = await intake.check(res, io.BytesIO(data), len(data), key.rsplit("/", 1)[-1])
    fetched = time.perf_counter()
    await intake.accept(res, photo, opts, Payer(authorization, client_address(request)), task_id=task_id)
    await _discard(res, key)  # its bytes are the task's now (or, after a concurrent request, already were)
    return await _answer(res, task_id, started, fetched, language)


async def _answer(res: Resources, task_id: str, started: float, fetched: float,
                  language: Language) -> ProcessedUpload | JSONResponse:
    """Wait for the task and answer as the mini-program expects (the same for a repeated request); its
    sentences in ``language``."""
    settings = res.settings
    final = await dispatch.wait_final(res, task_id, settings.sync_timeout)
    if final is None:
        return _unfinished(202, UnfinishedUpload(
            success=False, task_id=task_id, status="processing",
            error=render(texts.PRESIGNED_STILL_PROCESSING(seconds=settings.sync_timeout, task_id=task_id),
                         language)))
    if final.status != COMPLETED or not final.output_key:
        error = in_words(final.error_text, final.error, language) or render(texts.PRESIGNED_FAILED(), language)
        return _unfinished(422, UnfinishedUpload.model_validate({"success": False, "task_id": task_id,
                                                                 "status": final.status, "error": error}))
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
