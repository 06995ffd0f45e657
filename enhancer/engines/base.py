"""The small interface every model engine implements; free of torch so the service can import it cheaply.

Engines take the job's own options (``bus.schemas.EnhanceOptions``, the one definition the edge parses
into and the job carries); they read scale, quality and tile size, never ``face_enhance`` (which routes the
job to a worker whose engine restores faces).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bus.schemas import QUALITIES, EnhanceOptions

__all__ = ["QUALITIES", "Engine", "EngineError", "EngineResult", "EnhanceOptions", "Progress", "no_progress"]

Progress = Callable[[str, int, int], None]
"""(stage, done, total). Stages: "faces_detected" (n, n), "restoring" (face k of n), "upscaling" (tile k of n).

"upscaling" may restart from 1 with a larger total when a tile size is halved after running out of memory.
The callback may raise (e.g. to cancel a job): engines let the exception propagate and return nothing.
"""


def no_progress(stage: str, done: int, total: int) -> None:
    """A :data:`Progress` that ignores everything."""


def warm_up_picture(size: int) -> np.ndarray:
    """A ``size``² RGB picture that engines warm up on: two ramps and a flat channel, so that it is not black and
    the fp16 checks (black out of a visible picture) mean something."""
    ramps = np.meshgrid(np.linspace(16, 240, size), np.linspace(240, 16, size))
    return np.dstack([*ramps, np.full((size, size), 128.0)]).astype(np.uint8)


@dataclass
class EngineResult:
    """``image`` is HxWx3 uint8 RGB of exactly (input H * scale, input W * scale)."""

    image: np.ndarray
    faces: int = 0
    tiles: int = 0
    engine: str = ""
    model: str = ""


class Engine(Protocol):
    """A synchronous model engine, called from a worker thread.

    One instance serves one job at a time: engines keep no per-call state on the instance, but they hold
    the models and the device memory, so running two jobs on one instance at once only competes for it.
    """

    name: str

    def enhance(self, rgb: np.ndarray, opts: EnhanceOptions, progress: Progress) -> EngineResult: ...


class EngineError(Exception):
    """A failure worded for a person (shown to the user), e.g. memory that could not be recovered."""
