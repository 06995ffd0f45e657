"""One way in: a photo becomes a queued task here, whichever route brought it.

``POST /api/v1/enhance`` (a multipart upload) and ``POST /api/v1/single-process-uploaded-image`` (an
object PUT through a presigned URL) only parse HTTP; both hand their bytes to :func:`check` and the
checked photo to :func:`accept`, so the rules of admission are written once:

1. :func:`check` — not empty, not over the upload limit, an image we can read and within the pixel limit
   (4xx with a sentence, at once, rather than a failed task minutes later);
2. :func:`accept` — a result some scale can fit (422, ``bus.output_size``: a WebP cannot be wider than 16383
   pixels), an enhancer that can do what the options need is on the bus (503) and the queue has
   room (429), *then* one use is held for the payer (401/402), the checked bytes are stored under a key
   of this request's own, the task is recorded and its job queued. If anything fails before the task is
   queued, the use is given back; once a task with this id is queued — by this request or by a
   concurrent one with the same presigned ``file_key`` — its use stays held, and billing settles it
   when the task ends.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import BinaryIO

from nats.js.errors import KeyWrongLastSequenceError
from starlette.concurrency import run_in_threadpool

from bus.schemas import EnhanceOptions, TaskState
from bus.storage import display_name, input_key

from . import credits, dispatch, texts
from .credits import Payer
from .errors import ApiError
from .images import ImageInfo, inspect
from .resources import Resources


@dataclass(frozen=True)
class Photo:
    """Bytes that passed :func:`check`: what the task will process is exactly what was checked."""

    #: The bytes, seekable (a spooled upload or an in-memory copy of a presigned object).
    file: BinaryIO
    size: int
    #: The name shown to the user and given to the result (``<stem>_enhanced.<ext>``).
    name: str
    info: ImageInfo


def too_large(limit: int) -> ApiError:
    """413 with the limit in megabytes (also what a presigned URL's oversized object is told)."""
    return ApiError(413, texts.UPLOAD_TOO_LARGE(mb=limit / (1024 * 1024)))


async def check(res: Resources, file: BinaryIO, size: int, filename: str | None) -> Photo:
    """Size and image checks; decoding runs off the event loop (a large photo takes a while)."""
    settings = res.settings
    if size == 0:
        raise ApiError(400, texts.UPLOAD_EMPTY())
    if size > settings.max_upload_bytes:
        raise too_large(settings.max_upload_bytes)
    info = await run_in_threadpool(inspect, file, max_pixels=settings.max_input_pixels)
    return Photo(file=file, size=size, name=display_name(filename or f"image.{info.format.lower()}"), info=info)


async def accept(res: Resources, photo: Photo, options: EnhanceOptions, payer: Payer, *, task_id: str) -> TaskState:
    """Queue ``photo`` as task ``task_id`` and return its record (``queued``). When a concurrent request
    queued the same ``task_id`` first (one presigned ``file_key`` sent twice), that task's record."""
    dispatch.output_plan(res, photo.info.width, photo.info.height, options)  # a result no scale can fit: 422
    await dispatch.require_enhancer(res, options)  # also one that can do what the options need
    await dispatch.require_room(res)
    owner = await credits.reserve_use(res, payer, task_id)
    try:
        # A key of this request's own: a concurrent request for the same task id cannot overwrite these bytes.
        key = input_key(task_id, f"{secrets.token_hex(4)}-{photo.name}")
        await res.store.put_stream(key, photo.file, photo.size, photo.info.content_type)  # StorageError → 503
        return await dispatch.submit(res, task_id=task_id, input_key=key, input_name=photo.name,
                                     input_size=photo.size, width=photo.info.width, height=photo.info.height,
                                     options=options, owner=owner)
    except KeyWrongLastSequenceError:  # the record exists already: a concurrent request queued this task
        state = await res.tasks.get(task_id)
        if state is None:
            raise
        return state
    except BaseException as e:
        if await res.tasks.get(task_id) is None:  # never release a use that a queued task holds
            await credits.release_use(res, owner, task_id, f"not queued: {e}")
        raise
