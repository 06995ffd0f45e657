"""Handing work to the bus: is anyone there, submit a job, wait for its end, who is on the bus.

A job is routed by the capability it needs (``bus.capabilities``): it is published on that capability's
subject and waits in that capability's consumer, which only workers that have it pull from. Which
capabilities the fleet offers comes from the workers' presence (the registry view), never from engine
names: the edge knows no engine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerInfo

from bus import BusUnavailable, capabilities, output_size, retrying, subjects
from bus.schemas import FAILED, QUEUED, EnhanceJob, EnhanceOptions, TaskState
from bus.texts import TASK_CANCELLED, TASK_CANCELLED_BY_USER, TASK_QUEUED, capability_name, said_of, stored

from . import texts
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


async def require_enhancer(res: Resources, options: EnhanceOptions | None = None) -> None:
    """503 at once when no enhancer is on the bus, or (given the job's ``options``) none that can do what
    the job needs: refused before anything is stored or reserved."""
    if not await enhancers_present(res):
        raise ApiError(503, texts.NO_ENHANCER(), headers={"Retry-After": "10"})
    if options is not None:
        route(res, options)


def offered_capabilities(res: Resources) -> set[str]:
    """What the healthy enhancers on the bus can do, as their presence says."""
    return {c for row in res.registry.servers() if row["status"] == "healthy" for c in row.get("capabilities", ())}


#: Why a job was refused when it needs a capability that no healthy enhancer has, by capability.
_UNAVAILABLE = {capabilities.FACES: texts.FACES_UNAVAILABLE}


def route(res: Resources, options: EnhanceOptions) -> str:
    """The capability a job with ``options`` is queued for (``bus.capabilities.needed``), given the fleet now.

    503 when it needs one that no healthy enhancer has: such a job would wait for a worker that may never
    come. The base capability is every worker's, so whoever answers the ping (``require_enhancer``) has it.
    """
    offered = offered_capabilities(res)
    capability = capabilities.needed(options, offered)
    if capability != capabilities.BASE and capability not in offered:
        unavailable = _UNAVAILABLE.get(capability)
        raise ApiError(503, unavailable() if unavailable is not None
                       else texts.CAPABILITY_UNAVAILABLE(capability=capability_name(capability)))
    return capability


#: What a client is told to wait when the queue is full.
BUSY_RETRY_AFTER = 10


async def require_room(res: Resources) -> None:
    """Refuse early (429) when the bounded queue is full (jobs waiting for any capability), before storing
    anything."""
    waiting = (await queue_depth(res)).waiting
    if waiting >= res.settings.tasks.queue_limit:
        raise ApiError(429, texts.BUSY(waiting=waiting), headers={"Retry-After": str(BUSY_RETRY_AFTER)})


def output_plan(res: Resources, width: int, height: int, options: EnhanceOptions) -> output_size.OutputPlan:
    """The result a ``width`` × ``height`` photo will give: at the scale asked, or the largest that keeps it
    within ``MAX_OUTPUT_MEGAPIXELS`` and its format's limits (``bus.output_size``); 422 when none does."""
    try:
        return output_size.plan(width, height, options.scale, options.output_format,
                                max_pixels=res.settings.max_output_pixels)
    except output_size.ResultTooLarge as e:
        raise ApiError(422, said_of(e)) from e


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
    """Record the task (queued) and put its job on the queue of the capability it needs, de-duplicated by
    task id; 503 (nothing recorded) when no enhancer on the bus has that capability (see :func:`route`)."""
    capability = route(res, options)
    planned = output_plan(res, width, height, options)
    now = time.time()
    state = TaskState(
        task_id=task_id, status=QUEUED, created_at=now, updated_at=now, input_key=input_key,
        input_name=input_name, input_size=input_size, width=width, height=height, options=options, owner=owner,
        capability=capability, stage=QUEUED, **stored(message=TASK_QUEUED()),
        output_scale=planned.scale if planned.reduced else None, **stored(notice=planned.notice),
    )
    revision = await res.tasks.create(state)
    job = EnhanceJob(task_id=task_id, input_key=input_key, input_name=input_name, options=options, owner=owner,
                     submitted_at=now, max_output_pixels=res.settings.max_output_pixels)
    subject = subjects.jobs_subject(capability)
    try:
        # Idempotent thanks to Nats-Msg-Id: a retry after a lost acknowledgement is dropped as a duplicate.
        ack = await retrying(lambda: res.js.publish(subject, job.encode(), headers={
            subjects.MSG_ID_HEADER: task_id, subjects.TYPE_HEADER: EnhanceJob.TYPE}), what=f"task {task_id}: queue")
    except nats.js.errors.APIError as e:
        # JetStream refused the job outright ("not now" was retried above): the stream has no message limit, so
        # this is never a full queue (require_room sees that) but the bus failing over or out of storage: undo,
        # and the client is told to come back (503, Retry-After) instead of being told the queue is full.
        await res.tasks.kv.delete(task_id)
        raise BusUnavailable(f"task {task_id}: queue: JetStream refused the job ({e.code}/{e.err_code}: "
                             f"{e.description})") from e
    # Remember the job's place in the stream (for "N ahead of you"): one conditional write, skipped
    # when a worker has claimed the task already. The answer stays the record as submitted (queued).
    await res.tasks.replace_if_unchanged(state.replace(queue_seq=ack.seq), revision)
    return state


async def jobs_consumer(res: Resources, capability: str) -> ConsumerInfo:
    """The consumer of one capability's jobs: how many wait, how many are held, where delivery has got to."""
    consumer = subjects.jobs_consumer(capability)
    return await retrying(lambda: res.js.consumer_info(subjects.JOBS_STREAM, consumer), what="queue depth")


@dataclass(frozen=True)
class QueueDepth:
    """Jobs on the work queue, all capabilities together."""

    #: Not yet handed to a worker.
    waiting: int
    #: Handed out and not yet acknowledged (running, or prefetched by a worker).
    processing: int


async def queue_depth(res: Resources) -> QueueDepth:
    """How many jobs wait and how many are held, summed over every capability's consumer."""
    infos = await asyncio.gather(*(jobs_consumer(res, c) for c in capabilities.CAPABILITIES))
    return QueueDepth(waiting=sum(i.num_pending or 0 for i in infos),
                      processing=sum(i.num_ack_pending or 0 for i in infos))


async def queue_position(res: Resources, state: TaskState) -> int | None:
    """A queued task's place in line (1 = next) in the queue of its capability. ``None`` when not queued.

    From that consumer's delivery cursor: the jobs after the last one it handed out and before this one
    are still waiting. The stream holds every capability's jobs, so that count may include other queues'
    jobs; it is capped by how many jobs wait in this queue at all. Exact while jobs of one capability are
    queued; never more than the jobs really waiting in this queue.
    """
    if state.status != QUEUED or state.queue_seq is None:
        return None
    info = await jobs_consumer(res, state.capability or capabilities.BASE)  # no capability: a pe.v1 task
    delivered = (info.delivered.stream_seq if info.delivered else 0) or 0
    return max(1, min(state.queue_seq - delivered, info.num_pending or 0))


async def cancel(res: Resources, task_id: str) -> TaskState | None:
    """Fail a task that is still waiting (a worker that later pulls its job finds it final and drops
    it). Returns the record as it now is — cancelled (``stage == CANCELLED``) or, when it had already
    started, unchanged; ``None`` when there is no such task."""
    now = time.time()
    return await res.tasks.update(task_id, lambda s: s.replace(
        status=FAILED, stage=CANCELLED, **stored(message=TASK_CANCELLED(), error=TASK_CANCELLED_BY_USER()),
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
