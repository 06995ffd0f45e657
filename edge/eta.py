"""How long until a task is done: the ``eta_seconds`` of its status and of its event stream (README, "How long
will it take?").

Always from measured throughput, never from a table of guesses:

- A task being enhanced: its worker's estimate (``enhancer.progress.Remaining``: the pace of the engine's tiles
  so far times the tiles left), written into the record and the live progress with the time it was made, and
  counted down from there.
- A task waiting in line: its wait, its place in line ÷ the jobs a second the healthy enhancers that serve its
  queue get through (each one's capacity ÷ its moving average of job seconds, from its presence; the jobs running
  are on average half done, hence place − ½); plus its own run, its photo's megapixels × their seconds per
  megapixel at its quality level (where none has measured that level yet, a job's seconds), averaged over those
  enhancers in the shares of the queue each takes. Within twice the truth on a steady fleet whose enhancers differ
  a few-fold (``tests/test_eta.py`` simulates it); where one is many times faster than another, which of them takes
  the job decides, and no single figure is that close.

None where nothing has been measured yet (a fresh fleet, the first tiles of a job not yet done).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bus import capabilities
from bus.schemas import PROCESSING, QUEUED, TaskState


def seconds(value: float | None) -> int | None:
    """An estimate as the clients get it: whole seconds, rounded up, at least 1 (it is not done yet)."""
    return None if value is None else max(1, math.ceil(value - 1e-6))


def counted_down(estimate: float | None, made_at: float, now: float) -> int | None:
    """What an estimate made at ``made_at`` (Unix time) says at ``now``."""
    return None if estimate is None else seconds(estimate - max(0.0, now - made_at))


def megapixels(state: TaskState) -> float:
    """The megapixels of the photo the engine enlarges: the upload's, or fewer when it is shrunk first to keep the
    result within the limits (``output_scale`` below the scale asked)."""
    pixels = state.width * state.height
    if state.output_scale is not None and state.options.scale:
        pixels *= (state.output_scale / state.options.scale) ** 2
    return pixels / 1e6


def waiting(rows: Iterable[Mapping[str, Any]], state: TaskState, position: int) -> float | None:
    """Seconds until a task waiting at ``position`` (1 = next) is done, from the fleet's presence ``rows``."""
    capability = state.capability or capabilities.BASE
    serving = [r for r in rows if r.get("status") == "healthy" and capability in r.get("capabilities", ())
               and (r.get("job_seconds") or 0) > 0]
    if not serving:
        return None
    pace = {r["server_id"]: max(1, r.get("capacity", 1)) / r["job_seconds"] for r in serving}  # jobs a second
    wait = max(position - 0.5, 0.0) / sum(pace.values())
    quality = state.options.quality
    rated = [(pace[r["server_id"]], rate) for r in serving if (rate := r.get("seconds_per_megapixel", {}).get(quality))]
    if rated:  # its own run, on each enhancer as often as it takes jobs from this queue
        own = sum(share * rate for share, rate in rated) / sum(share for share, _ in rated) * megapixels(state)
    else:
        own = sum(pace[r["server_id"]] * r["job_seconds"] for r in serving) / sum(pace.values())
    return wait + own


def estimate(rows: Iterable[Mapping[str, Any]], state: TaskState, position: int | None,
             now: float | None = None) -> int | None:
    """The task's ``eta_seconds``: see the module's docstring. None for a finished task."""
    if state.status == PROCESSING:
        return counted_down(state.eta_seconds, state.updated_at, time.time() if now is None else now)
    if state.status == QUEUED and position is not None:
        return seconds(waiting(rows, state, position))
    return None
