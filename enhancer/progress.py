"""Turning engine callbacks (from a worker thread) into progress the user sees.

The engine calls ``reporter(stage, done, total)`` from its thread; the reporter hops onto
the event loop, publishes a live ``TaskProgress`` on ``pe.progress.<task>`` every time and
writes the task record at most every ``min_interval`` seconds (and at each new stage), so
a 400-tile job does not hammer JetStream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bus import subjects
from bus.schemas import TaskProgress

log = logging.getLogger(__name__)

#: Where each stage sits on the 0–1 bar. Tile and face stages interpolate inside their span.
SPANS: dict[str, tuple[float, float]] = {
    "fetched": (0.05, 0.05),
    "decoded": (0.08, 0.08),
    "faces_detected": (0.12, 0.12),
    "restoring": (0.12, 0.35),
    "upscaling": (0.35, 0.90),
    "encoding": (0.92, 0.92),
    "stored": (0.97, 0.97),
}

MESSAGES: dict[str, str] = {
    "fetched": "Image fetched",
    "decoded": "Image decoded",
    "faces_detected": "{done} face(s) detected",
    "restoring": "Restoring face {done}/{total}",
    "upscaling": "Upscaling tile {done}/{total}",
    "encoding": "Encoding the result",
    "stored": "Result stored",
}


def fraction(stage: str, done: int = 0, total: int = 0) -> float:
    lo, hi = SPANS.get(stage, (0.0, 0.0))
    if total > 0:
        return lo + (hi - lo) * min(done, total) / total
    return hi


def message(stage: str, done: int = 0, total: int = 0) -> str:
    return MESSAGES.get(stage, stage).format(done=done, total=total)


class Reporter:
    """Progress of one task; safe to call from the engine's thread."""

    def __init__(
        self,
        nc,
        task_id: str,
        record: Callable[[str, float, str], Awaitable[None]],
        *,
        min_interval: float = 0.3,
    ) -> None:
        self._nc = nc
        self._task_id = task_id
        self._record = record
        self._min_interval = min_interval
        self._loop = asyncio.get_running_loop()
        self._last_write = time.monotonic()  # the claim was just written
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    def __call__(self, stage: str, done: int = 0, total: int = 0) -> None:
        """Engine callback (any thread)."""
        self._loop.call_soon_threadsafe(self._schedule, stage, done, total)

    def _schedule(self, stage: str, done: int, total: int) -> None:
        task = self._loop.create_task(self.report(stage, done, total))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def report(self, stage: str, done: int = 0, total: int = 0) -> None:
        value, text = fraction(stage, done, total), message(stage, done, total)
        event = TaskProgress(task_id=self._task_id, stage=stage, progress=round(value, 4), message=text,
                             at=time.time())
        try:
            await self._nc.publish(subjects.progress(self._task_id), event.encode(),
                                   headers={subjects.TYPE_HEADER: TaskProgress.TYPE})
            async with self._lock:
                now = time.monotonic()
                # The record is for pollers: a write per interval is enough (the live subject has every step),
                # and a quick job should not pay a JetStream round trip per stage.
                if now - self._last_write >= self._min_interval:
                    self._last_write = now
                    await self._record(stage, value, text)
        except Exception as e:  # progress is best effort; the job goes on
            log.warning("task %s: progress not recorded: %s", self._task_id, e)

    async def flush(self) -> None:
        """Wait for progress already reported, so it cannot land after the final record."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
