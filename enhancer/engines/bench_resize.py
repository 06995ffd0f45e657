"""BENCHMARK ONLY — a trivial engine that resizes with Lanczos and optionally waits.

It exists so that ``bench/`` can measure the service's own overhead and the fleet's load
balancing without a model's cost drowning the figures. It never runs unless an operator sets
``ENHANCER_ENGINE=bench-resize``, and every result it makes is labelled ``bench-resize``.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from .base import EngineResult, EnhanceOptions, Progress
from .registry import BENCH_RESIZE


class BenchResizeEngine:
    name = BENCH_RESIZE.name

    def __init__(self, delay: float = 0.0) -> None:
        #: Seconds each job takes on top of the resize (simulates a slower or faster GPU).
        self.delay = delay

    def enhance(self, rgb: np.ndarray, opts: EnhanceOptions, progress: Progress) -> EngineResult:
        progress("upscaling", 0, 1)  # the engine's start, visible on the bus (tests check the pipelining)
        out = self._resize(rgb, opts)
        if self.delay:
            time.sleep(self.delay)
        progress("upscaling", 1, 1)
        return EngineResult(image=out, tiles=1, engine=self.name, model=BENCH_RESIZE.models)

    def warm_up(self, rgb: np.ndarray, opts: EnhanceOptions) -> None:
        """The worker's start-up run: the resize without the simulated job time (a warm-up is not a job)."""
        self._resize(rgb, opts)

    @staticmethod
    def _resize(rgb: np.ndarray, opts: EnhanceOptions) -> np.ndarray:
        h, w = rgb.shape[:2]
        return cv2.resize(rgb, (w * opts.scale, h * opts.scale), interpolation=cv2.INTER_LANCZOS4)
