"""Turning engine callbacks (from a worker thread) into progress the user sees.

The engine calls ``reporter(stage, done, total)`` from its thread; the reporter hops onto
the event loop, publishes a live ``TaskProgress`` on ``pe.progress.<task>`` every time and
writes the task record at most every ``min_interval`` seconds (and at each new stage), so
a 400-tile job does not hammer JetStream. Both carry how many seconds the job still needs
(:class:`Remaining`), which the edge counts down from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bus import subjects
from bus.schemas import TaskProgress
from bus.texts import PROGRESS, Said, stored, verbatim

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


def fraction(stage: str, done: int = 0, total: int = 0) -> float:
    lo, hi = SPANS.get(stage, (0.0, 0.0))
    if total > 0:
        return lo + (hi - lo) * min(done, total) / total
    return hi


def message(stage: str, done: int = 0, total: int = 0) -> Said:
    """What the bar says at ``stage`` (``bus.texts.PROGRESS``; an unknown stage by its name)."""
    text = PROGRESS.get(stage)
    return text(done=done, total=total) if text is not None else verbatim(stage)


#: The stages an engine reports step by step (faces, tiles), whose pace is measured as they go.
STEPPED = ("restoring", "upscaling")


class Remaining:
    """How many seconds a job still needs, from its own progress (pure: every call is given the time).

    In a stage the engine reports step by step, from that stage's measured pace: seconds per step so far times
    the steps left (once there are two reports, the pace between them, so the stage's start-up is not counted
    for every step). Upscaling is a job's last long stage: its steps left are the estimate (encoding and storing
    the result after it are a small share on either device). Anywhere else (before the engine starts, restoring
    faces with the upscaling still to come, encoding), from what the job was ``expected`` to take (this worker's
    recent seconds per megapixel at the job's quality times the photo's megapixels, ``enhancer.throughput``) less
    the time it has run. None when it cannot tell: nothing expected yet, or the job has overrun what was.
    """

    def __init__(self, started: float, expected: float | None = None) -> None:
        self.started = started
        #: Seconds the whole job should take; set once the photo's size is known.
        self.expected = expected
        self._stage: str | None = None
        self._done = self._total = 0
        self._last = started  # when the latest report came
        self._stage_began = started  # when the report before the stage's first came: the stage's start
        self._first: tuple[int, float] = (0, started)  # the stage's first report: (done, when)

    def seen(self, stage: str, done: int, total: int, at: float) -> None:
        """A progress report made at ``at`` (monotonic seconds)."""
        if stage != self._stage or done < self._done or total != self._total:  # new, or started over (smaller tiles)
            self._stage, self._stage_began, self._first = stage, self._last, (done, at)
        self._done, self._total, self._last = done, total, at

    def stage_left(self, at: float) -> float | None:
        """Seconds until the current stepped stage ends, from its pace so far; None outside one or before a step."""
        if self._stage not in STEPPED or self._total <= 0 or self._done <= 0:
            return None
        first_done, first_at = self._first
        if first_done > 0 and self._done > first_done:
            pace = (self._last - first_at) / (self._done - first_done)
        else:
            pace = (self._last - self._stage_began) / self._done
        return max(0.0, pace * (self._total - self._done) - (at - self._last))

    def seconds(self, at: float) -> float | None:
        """The job's seconds left at ``at``, or None when it cannot tell."""
        in_stage = self.stage_left(at)
        if self._stage == "upscaling" and in_stage is not None:
            return in_stage
        if self.expected is None:
            return None
        left = self.expected - (at - self.started)
        if in_stage is not None:
            left = max(left, in_stage)
        return left if left > 0 else None


class Reporter:
    """Progress of one task; safe to call from the engine's thread."""

    def __init__(
        self,
        nc,
        task_id: str,
        record: Callable[[str, float, Said, float | None], Awaitable[None]],
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
        #: The job's seconds left; the worker sets ``remaining.expected`` once it knows the photo's size.
        self.remaining = Remaining(time.monotonic())

    def __call__(self, stage: str, done: int = 0, total: int = 0) -> None:
        """Engine callback (any thread): timed here, where the step ended, not when the loop gets to it."""
        self._loop.call_soon_threadsafe(self._schedule, stage, done, total, time.monotonic())

    def _schedule(self, stage: str, done: int, total: int, at: float) -> None:
        task = self._loop.create_task(self.report(stage, done, total, at=at))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def report(self, stage: str, done: int = 0, total: int = 0, *, at: float | None = None) -> None:
        value, text = fraction(stage, done, total), message(stage, done, total)
        now = time.monotonic()
        self.remaining.seen(stage, done, total, now if at is None else at)
        left = self.remaining.seconds(now)
        eta = None if left is None else round(left, 1)
        event = TaskProgress(task_id=self._task_id, stage=stage, progress=round(value, 4), at=time.time(),
                             eta_seconds=eta, **stored(message=text))
        try:
            await self._nc.publish(subjects.progress(self._task_id), event.encode(),
                                   headers={subjects.TYPE_HEADER: TaskProgress.TYPE})
            async with self._lock:
                now = time.monotonic()
                # The record is for pollers: a write per interval is enough (the live subject has every step),
                # and a quick job should not pay a JetStream round trip per stage.
                if now - self._last_write >= self._min_interval:
                    self._last_write = now
                    await self._record(stage, value, text, eta)
        except Exception as e:  # progress is best effort; the job goes on
            log.warning("task %s: progress not recorded: %s", self._task_id, e)

    async def flush(self) -> None:
        """Wait for progress already reported, so it cannot land after the final record."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
