"""The small interface every model engine implements; free of torch so the service can import it cheaply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

QUALITIES: tuple[str, ...] = ("fast", "medium", "high")

Progress = Callable[[str, int, int], None]
"""(stage, done, total). Stages: "faces_detected" (n, n), "restoring" (face k of n), "upscaling" (tile k of n).

"upscaling" may restart from 1 with a larger total when a tile size is halved after running out of memory.
The callback may raise (e.g. to cancel a job): engines let the exception propagate and return nothing.
"""


def no_progress(stage: str, done: int, total: int) -> None:
    """A :data:`Progress` that ignores everything."""


@dataclass(frozen=True)
class EnhanceOptions:
    """What the user asked for. ``tile_size`` is the tile edge in *input* pixels; 0 runs the whole image.

    ``face_enhance`` is a routing hint for the caller (pick the "gfpgan" engine); engines do not read it.
    """

    scale: int = 4
    quality: str = "high"  # "fast" | "medium" | "high"
    tile_size: int = 400
    face_enhance: bool = False

    def __post_init__(self) -> None:
        if self.scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, not {self.scale!r}")
        if self.quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, not {self.quality!r}")
        if not isinstance(self.tile_size, int) or not (self.tile_size == 0 or 32 <= self.tile_size <= 2048):
            raise ValueError(f"tile_size must be 0 (no tiling) or 32..2048, not {self.tile_size!r}")


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
