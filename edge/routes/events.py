"""``GET /api/v1/events/{task_id}``: a task's status and live progress, pushed (server-sent events).

Two sources are merged into one stream: the task's KV record (every change, durable) and the
enhancer's live ``pe.progress.<task>`` messages (frequent, not persisted). While the task waits,
its place in line is refreshed, and until it ends, its time left (``edge/eta.py``). The stream ends
after the final status, so a browser's ``EventSource`` is told exactly when to stop; polling
``/status`` stays the fallback.

A stream also ends after ``EDGE_STREAM_SECONDS`` (the client reconnects and gets the current status
first), and how many may be open is bounded (``edge/connections.py``). Each open stream holds a NATS
subscription and a KV watch; both are released however the stream ends, client gone included.

Its sentences are in the request's language: a browser's ``EventSource`` cannot set headers, so the page
names its language with ``?lang=zh`` or ``?lang=en`` (``edge/texts.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent
from nats.aio.msg import Msg

from bus import subjects
from bus.codec import SchemaError
from bus.schemas import TaskProgress, TaskState

from .. import contract, eta
from ..deps import ResourcesDep
from ..resources import Resources
from ..texts import LanguageDep
from ..views import in_words
from .tasks import load_task, status_view

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["tasks"])

#: Seconds between refreshes of a waiting task's place in line, and of any task's time left (``eta_seconds``).
POSITION_EVERY = 2.0


async def existing_task(task_id: str, res: ResourcesDep) -> TaskState:
    """Resolved before the stream starts, so an unknown id is a plain 404, not an empty stream."""
    return await load_task(res, task_id)


class _Merged:
    """Record changes and progress messages in arrival order; progress may be dropped, records not."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.progress_waiting = 0

    def record(self, state: TaskState) -> None:
        self.queue.put_nowait(("status", state))

    async def on_progress(self, msg: Msg) -> None:
        if self.progress_waiting > 8:  # a slow reader gets the latest progress, not a backlog
            return
        try:
            progress = TaskProgress.decode(msg.data, subject=msg.subject)
        except SchemaError as e:
            log.warning("ignoring a malformed progress message: %s", e)
            return
        self.progress_waiting += 1
        self.queue.put_nowait(("progress", progress))


async def _follow(res: Resources, task_id: str, merged: _Merged) -> None:
    try:
        async for state in res.tasks.watch(task_id):
            merged.record(state)
            if state.final:
                return
    except Exception as e:  # the bus went away: end the stream; the browser reconnects or polls
        log.warning("task %s: event stream lost its record watch: %s", task_id, e)
        merged.queue.put_nowait(("end", None))


async def _positions(res: Resources, merged: _Merged) -> None:
    while True:
        await asyncio.sleep(POSITION_EVERY)
        merged.queue.put_nowait(("position", None))


@router.get("/events/{task_id}", response_class=EventSourceResponse,
            summary="Status and live progress of a task as server-sent events (ends after the final status)",
            description="Events named `status` carry a TaskStatus (first, then on every change), events named "
                        "`progress` a TaskProgress.", responses=contract.stream_errors(400, 404, 503))
async def events(task: Annotated[TaskState, Depends(existing_task)], res: ResourcesDep,
                 language: LanguageDep) -> AsyncIterator[contract.TaskStatus | contract.TaskProgress]:
    # The annotation names the events' data for the OpenAPI document; what is yielded are ServerSentEvents
    # wrapping them (for the event names), which FastAPI sends as they are.
    merged = _Merged()
    task_id = task.task_id
    sub = await res.nc.subscribe(subjects.progress(task_id), cb=merged.on_progress)
    follower = asyncio.create_task(_follow(res, task_id, merged))
    ticker = asyncio.create_task(_positions(res, merged))
    state, sent = task, None
    deadline = asyncio.get_running_loop().time() + res.settings.connections.stream_seconds
    try:
        while True:
            try:
                kind, item = await asyncio.wait_for(merged.queue.get(),
                                                    deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                return
            if kind == "end":
                return
            if kind == "progress":
                merged.progress_waiting -= 1
                if not state.final:
                    yield ServerSentEvent(event="progress", data=contract.TaskProgress(
                        task_id=task_id, stage=item.stage, progress=round(item.progress, 4),
                        message=in_words(item.message_text, item.message, language),
                        eta_seconds=eta.counted_down(item.eta_seconds, item.at, time.time())))
                continue
            if kind == "status":
                state = item
            body = await status_view(res, state, language)
            if body != sent:
                sent = body
                yield ServerSentEvent(event="status", data=body)
            if state.final:
                return
    finally:
        # Shielded: when the client has gone this runs in a cancelled scope, where any await would be cancelled
        # again before the subscription and the watch are released.
        with anyio.CancelScope(shield=True):
            follower.cancel()
            ticker.cancel()
            await asyncio.gather(follower, ticker, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
