"""Handing work to the bus: is anyone there, submit a job, wait for its end, who is on the bus."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerInfo

from bus import retrying, subjects
from bus.schemas import FAILED, QUEUED, EnhanceJob, EnhanceOptions, TaskState

from .errors import ApiError
from .resources import Resources

#: The stage of a task cancelled while it waited (its status is ``failed``, so every client sees it end).
CANCELLED = "cancelled"

#: How long the edge waits for the first enhancer to answer a presence ping.
PING_TIMEOUT = 1.0


async def enhancers_present(res: Resources) -> bool:
    """True when at least one enhancer answers; ``NoRespondersError`` arrives in about a millisecond."""
    try:
        await res.nc.request(subjects.ENHANCER_PING, b"", timeout=PING_TIMEOUT)
        return True
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return False


async def require_enhancer(res: Resources) -> None:
    if not await enhancers_present(res):
        raise ApiError(503, "No enhancer is available right now; please try again in a moment.",
                       headers={"Retry-After": "10"})


#: What a client is told to wait when the queue is full.
BUSY_RETRY_AFTER = 10


def _busy(waiting: int) -> ApiError:
    return ApiError(429, f"The service is busy: {waiting} photos are already waiting. Please try again shortly.",
                    headers={"Retry-After": str(BUSY_RETRY_AFTER)})


async def require_room(res: Resources) -> None:
    """Refuse early (429) when the bounded queue is full, before storing anything."""
    waiting = (await jobs_consumer(res)).num_pending or 0
    if waiting >= res.settings.tasks.queue_limit:
        raise _busy(waiting)


async def submit(
    res: Resources,
    *,
    task_id: str,
    input_key: str,
    input_name: str,
    input_size: int,
    width: int,
    height: int,
    options: EnhanceOptions,
    owner: str | None = None,
) -> TaskState:
    """Record the task (queued) and put its job on the work queue, de-duplicated by task id."""
    now = time.time()
    state = TaskState(
        task_id=task_id, status=QUEUED, created_at=now, updated_at=now, input_key=input_key,
        input_name=input_name, input_size=input_size, width=width, height=height, scale=options.scale,
        quality=options.quality, tile_size=options.tile_size, face_enhance=options.face_enhance, owner=owner,
        stage=QUEUED, message="Queued: waiting for a free enhancer",
    )
    revision = await res.tasks.create(state)
    job = EnhanceJob(task_id=task_id, input_key=input_key, input_name=input_name, scale=options.scale,
                     quality=options.quality, tile_size=options.tile_size, face_enhance=options.face_enhance,
                     owner=owner, submitted_at=now)
    try:
        # Idempotent thanks to Nats-Msg-Id: a retry after a lost acknowledgement is dropped as a duplicate.
        ack = await retrying(lambda: res.js.publish(subjects.JOBS_SUBJECT, job.encode(), headers={
            subjects.MSG_ID_HEADER: task_id, subjects.TYPE_HEADER: EnhanceJob.TYPE}), what=f"task {task_id}: queue")
    except nats.js.errors.APIError as e:  # the stream is full (a race past require_room): undo, refuse
        await res.tasks.kv.delete(task_id)
        raise _busy(res.settings.tasks.queue_limit) from e
    # Remember the job's place in the stream (for "N ahead of you"): one conditional write, skipped
    # when a worker has claimed the task already. The answer stays the record as submitted (queued).
    await res.tasks.replace_if_unchanged(state.replace(queue_seq=ack.seq), revision)
    return state


async def jobs_consumer(res: Resources) -> ConsumerInfo:
    """The work queue's consumer: how many jobs wait, how many are held, where delivery has got to."""
    return await retrying(lambda: res.js.consumer_info(subjects.JOBS_STREAM, subjects.JOBS_CONSUMER),
                          what="queue depth")


async def queue_position(res: Resources, state: TaskState) -> int | None:
    """A queued task's place in line (1 = next), from the consumer's delivery cursor: every job
    after the last one handed out and before this one is still waiting. ``None`` when not queued."""
    if state.status != QUEUED or state.queue_seq is None:
        return None
    info = await jobs_consumer(res)
    delivered = info.delivered.stream_seq if info.delivered else 0
    return max(1, state.queue_seq - (delivered or 0))


async def cancel(res: Resources, task_id: str) -> TaskState | None:
    """Fail a task that is still waiting (a worker that later pulls its job finds it final and drops
    it). Returns the record as it now is — cancelled (``stage == CANCELLED``) or, when it had already
    started, unchanged; ``None`` when there is no such task."""
    now = time.time()
    return await res.tasks.update(task_id, lambda s: s.replace(
        status=FAILED, stage=CANCELLED, message="Cancelled", error="Cancelled by the user before it started.",
        finished_at=now, updated_at=now) if s.status == QUEUED else None)


async def wait_final(res: Resources, task_id: str, timeout: float) -> TaskState | None:
    """The task's record once it is completed or failed; ``None`` if that takes longer than ``timeout``."""

    async def watch() -> TaskState | None:
        async for state in res.tasks.watch(task_id):
            if state.final:
                return state
        return None

    try:
        return await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        return None
