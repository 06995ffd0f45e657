"""Tiled super-resolution inference with overlap, written directly into a uint8 output.

Replaces RealESRGANer.tile_process, which keeps per-call state on the instance and, on OOM, pastes the
previous tile. Each tile is cut with ``pad`` pixels of real context on every side that has any, upscaled,
and only its core is kept, so seams match whole-image inference closely.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from enhancer.engines.base import Progress

Region = tuple[int, int, int, int]  # y0, y1, x0, x1 in input pixels (end exclusive)
TileCheck = Callable[[int, int], None]  # (tile height, tile width) of the core, before inference


class NonFiniteOutput(RuntimeError):
    """fp16 overflowed (NaN/inf): the caller should redo the image in fp32."""


def tile_grid(height: int, width: int, tile: int) -> list[Region]:
    """Row-major core regions; ``tile`` 0 means the whole image as one tile."""
    if tile <= 0:
        return [(0, height, 0, width)]
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    return [
        (r * tile, min((r + 1) * tile, height), c * tile, min((c + 1) * tile, width))
        for r in range(rows)
        for c in range(cols)
    ]


@torch.inference_mode()
def upscale_tiled(
    model: torch.nn.Module,
    rgb: np.ndarray,
    *,
    scale: int,
    tile: int,
    pad: int,
    device: torch.device,
    dtype: torch.dtype,
    progress: Progress,
    check_tile: TileCheck | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Run ``model`` (an x``scale`` SR net taking RGB in [0, 1]) over ``rgb`` tile by tile.

    Returns HxWx3 uint8 of (H*scale, W*scale). Errors (including OOM) propagate; nothing is patched over.
    ``channels_last``: feed the net NHWC tensors (the net must have been converted to match).
    A net with a ``fixed_input`` (height, width), a compiled one, gets the windows of the tiles at the image's
    edges grown inward to that size (:func:`fixed_window`): more real context, where other nets get less.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    fixed: tuple[int, int] | None = getattr(model, "fixed_input", None)
    h, w = rgb.shape[:2]
    out = np.empty((h * scale, w * scale, 3), np.uint8)
    regions = tile_grid(h, w, tile)
    for k, (y0, y1, x0, x1) in enumerate(regions, 1):
        if check_tile is not None:
            check_tile(y1 - y0, x1 - x0)
        py0, py1, px0, px1 = max(y0 - pad, 0), min(y1 + pad, h), max(x0 - pad, 0), min(x1 + pad, w)
        if fixed is not None:
            rows, cols = fixed_window(py0, py1, h, fixed[0]), fixed_window(px0, px1, w, fixed[1])
            if rows is not None and cols is not None:
                (py0, py1), (px0, px1) = rows, cols
        region = np.ascontiguousarray(rgb[py0:py1, px0:px1])
        if not region.flags.writeable:  # torch warns about read-only arrays (a photo decoded from bytes can be)
            region = region.copy()
        x = torch.from_numpy(region).to(device)
        x = x.permute(2, 0, 1).unsqueeze(0).to(dtype).contiguous(memory_format=layout).div_(255.0)
        y = model(x)
        if dtype != torch.float32 and not bool(torch.isfinite(y).all()):
            raise NonFiniteOutput("non-finite values in half-precision output")
        cy, cx = (y0 - py0) * scale, (x0 - px0) * scale
        core = y[0, :, cy : cy + (y1 - y0) * scale, cx : cx + (x1 - x0) * scale]
        core = core.float().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0)
        if core.is_cuda:  # interleave on the GPU (a no-op for NHWC output); the host then gets a plain copy
            core = core.contiguous()
        out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = core.cpu().numpy()
        del x, y, core
        progress("upscaling", k, len(regions))
    return out


def fixed_window(start: int, end: int, size: int, fixed: int) -> tuple[int, int] | None:
    """The tile window ``[start, end)`` of an image ``size`` pixels long, grown to ``fixed`` pixels inward from
    the image's edge it touches, so a net with a fixed input size (a compiled one) sees only real pixels there;
    None when it cannot be: an image shorter than ``fixed``, or a short window away from the image's edges
    (a tile size other than the one compiled for)."""
    if end - start == fixed:
        return start, end
    if end - start > fixed or size < fixed:
        return None
    if start == 0:
        return 0, fixed
    if end == size:
        return size - fixed, size
    return None
