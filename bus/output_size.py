"""How large a result may be, and the scale it is made at: the one asked, or the largest smaller one that fits.

A ×4 of a 20-megapixel photo would be 320 megapixels: about 1 GB of pixels before encoding (several GB while
a model makes it and an encoder reads it), more than anyone can use, and enough to exhaust a worker's memory.
So results are kept under ``MAX_OUTPUT_MEGAPIXELS`` (64 by default) and within what the chosen file format can
hold (WebP: 16383 pixels a side; JPEG: 65500). One function, :func:`plan`, decides; both sides call it:

- the edge when it accepts a photo (it knows the size), so the task's status says at once that the result
  will be made at, say, ×3.2 instead of ×4 (``notice``), and a photo no scale can fit is refused there;
- the worker before the engine, with the smaller of its own limit and the one the edge put in the job (a job
  from an older edge, or an edge with a larger limit, cannot make it run out of memory). It shrinks the photo
  to :attr:`OutputPlan.input_size` and runs the engine at the scale asked, so nothing larger than the result
  is ever made, and the result is exactly :attr:`OutputPlan.size`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import texts

#: Results are kept under this many pixels unless ``MAX_OUTPUT_MEGAPIXELS`` says otherwise.
DEFAULT_MAX_OUTPUT_PIXELS = 64_000_000

#: The widest or tallest picture each output format can hold (libjpeg-turbo: 65500; libwebp: 16383; AV1: 65536).
MAX_SIDE = {"jpeg": 65_500, "png": 2**31 - 1, "webp": 16_383, "avif": 65_536}
#: ``auto`` writes JPEG or PNG: the tighter of the two.
MAX_SIDE["auto"] = min(MAX_SIDE["jpeg"], MAX_SIDE["png"])
FORMAT_NAMES = {"auto": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WebP", "avif": "AVIF"}


class ResultTooLarge(ValueError):
    """No scale of at least 1 fits; raised with what the person is told (a ``bus.texts`` sentence)."""


@dataclass(frozen=True)
class OutputPlan:
    #: The scale the result is made at: the one asked, or less (two decimals, rounded down) to fit.
    scale: float
    #: What the engine is given: the photo itself, or the photo shrunk so that ×``asked`` makes ``size``.
    input_size: tuple[int, int]
    #: The result's (width, height).
    size: tuple[int, int]
    #: What the person is told when the scale is less than the one asked; None otherwise.
    notice: texts.Said | None

    @property
    def reduced(self) -> bool:
        return self.notice is not None


def plan(width: int, height: int, scale: int, output_format: str = "auto", *,
         max_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS) -> OutputPlan:
    """The result of enlarging a ``width`` × ``height`` photo ×``scale`` into ``output_format``, kept under
    ``max_pixels`` and the format's side limit. Raises :class:`ResultTooLarge` when even ×1 would not fit."""
    if width < 1 or height < 1 or scale < 1 or max_pixels < 1:
        raise ValueError(f"cannot plan a {width}×{height} result at ×{scale} under {max_pixels} pixels")
    side = MAX_SIDE.get(output_format, MAX_SIDE["auto"])
    by_pixels = math.sqrt(max_pixels / (width * height))
    by_side = side / max(width, height)
    if min(by_pixels, by_side) >= scale:
        return OutputPlan(float(scale), (width, height), (width * scale, height * scale), None)
    fits = math.floor(min(by_pixels, by_side) * 100) / 100
    name = FORMAT_NAMES.get(output_format, output_format)
    if by_pixels <= by_side:
        notice = texts.RESULT_REDUCED_PIXELS(scale=fits, asked=scale, megapixels=max_pixels / 1e6)
        refusal = texts.RESULT_TOO_LARGE_PIXELS(width=width, height=height, megapixels=max_pixels / 1e6)
    else:
        notice = texts.RESULT_REDUCED_SIDE(scale=fits, asked=scale, side=side, format=name)
        too = texts.RESULT_TOO_WIDE if width >= height else texts.RESULT_TOO_TALL
        refusal = too(format=name, side=side, length=max(width, height))
    if fits < 1:
        raise ResultTooLarge(refusal)
    shrink = fits / scale

    def shrunk(rounding: Callable[[float], int]) -> tuple[int, int]:
        return max(1, rounding(width * shrink)), max(1, rounding(height * shrink))

    input_size = shrunk(round)  # the nearest shape (2 pixels stay 2, not 1), unless rounding up breaks a limit
    if input_size[0] * input_size[1] * scale * scale > max_pixels or max(input_size) * scale > side:
        input_size = shrunk(math.floor)
    size = (input_size[0] * scale, input_size[1] * scale)
    return OutputPlan(fits, input_size, size, notice)
