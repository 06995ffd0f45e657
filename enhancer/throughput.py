"""How fast this worker is, measured on its own jobs: the moving averages it publishes in its presence.

Two figures, both exponential moving averages over the jobs it completed (failed ones are not counted):

- ``job_seconds``: the seconds a job took, whatever it asked (fetch to store, not counting a prefetched job's wait
  for the engine). With ``capacity`` it is the worker's pace through a queue: ``capacity / job_seconds`` jobs a
  second. The edge tells a waiting task its wait from it (``edge/eta.py``).
- ``per_megapixel[quality]``: the seconds per megapixel of the photo the engine enlarges (after any shrinking
  for the output limits), at each quality level: each level runs its own model, and they differ a hundredfold on
  a CPU. How long one job of a given size will take: the worker's own estimate until its engine reports steps
  (``enhancer.progress.Remaining``), and the edge's for a waiting task.

Photos under ``MIN_MEGAPIXELS`` count for ``job_seconds`` only: their time is mostly fixed costs, and divided by
their few pixels would make every later estimate far too long.
"""

from __future__ import annotations

#: Weight of the newest job: the last few jobs dominate, so a change in load or in the photos shows within a few.
WEIGHT = 0.3
#: Below this, a job's seconds say nothing about its seconds per megapixel (fixed costs dominate).
MIN_MEGAPIXELS = 0.05


def _average(previous: float | None, value: float) -> float:
    return value if previous is None else (1 - WEIGHT) * previous + WEIGHT * value


class Throughput:
    """This worker's moving averages (see the module's docstring)."""

    def __init__(self) -> None:
        self.job_seconds: float | None = None
        self.per_megapixel: dict[str, float] = {}

    def add(self, quality: str, megapixels: float, seconds: float) -> None:
        """One completed job: ``seconds`` it took on a photo of ``megapixels`` at ``quality``."""
        if seconds <= 0:
            return
        self.job_seconds = _average(self.job_seconds, seconds)
        if megapixels >= MIN_MEGAPIXELS:
            self.per_megapixel[quality] = _average(self.per_megapixel.get(quality), seconds / megapixels)

    def expected(self, quality: str, megapixels: float) -> float | None:
        """Seconds a job at ``quality`` on a photo of ``megapixels`` should take here; None before one was measured."""
        rate = self.per_megapixel.get(quality)
        return None if rate is None else rate * megapixels

    def published(self) -> tuple[float | None, dict[str, float]]:
        """``job_seconds`` and ``per_megapixel``, rounded, as the presence carries them."""
        return (None if self.job_seconds is None else round(self.job_seconds, 3),
                {q: round(r, 3) for q, r in self.per_megapixel.items()})
