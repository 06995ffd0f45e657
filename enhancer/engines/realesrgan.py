"""Real-ESRGAN super-resolution engine (the default), one photo model per quality level (``weights.model_for``):
fast runs realesr-general-x4v3, medium RealESRGAN_x2plus (resized for ×4, as the original service ran it), high
RealESRGAN_x4plus. While a level's own weights are missing it runs a labelled stand-in: fast the anime model
realesr-animevideov3, medium x4plus; both ship converted from ncnn. The choice is made per job from the files in
the model folder, so weights fetched while the service runs are used from the next job on.

Own tiled inference instead of RealESRGANer, because that class keeps per-call state on the instance and
swallows CUDA OOM (pasting the previous tile). Here an OOM halves the tile size and redoes the whole image,
down to 64-pixel tiles, and then fails with an :class:`EngineError`.
"""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bus import texts
from enhancer import weights
from enhancer.engines import compiled
from enhancer.engines._memory import SimulatedOOM, is_oom, release
from enhancer.engines.base import EngineError, EngineResult, EnhanceOptions, Progress
from enhancer.engines.registry import REALESRGAN
from enhancer.engines.tiling import NonFiniteOutput, tile_grid, upscale_tiled

log = logging.getLogger(__name__)

TILE_PAD = 10
MIN_TILE = 64


class _EvenInput(torch.nn.Module):
    """RealESRGAN_x2plus pixel-unshuffles its input by 2, so height and width must be even: pad the odd ones by
    repeating the last row/column (as upstream pads before inference) and crop the output back."""

    def __init__(self, net: torch.nn.Module, scale: int) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    @property
    def fixed_input(self) -> tuple[int, int] | None:
        """The wrapped compiled net's (``tiling.upscale_tiled`` grows edge tiles to it); None for an eager one."""
        return getattr(self.net, "fixed_input", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2 == 0 and w % 2 == 0:
            return self.net(x)
        y = self.net(F.pad(x, (0, w % 2, 0, h % 2), mode="replicate"))
        return y[..., : h * self.scale, : w * self.scale]


def _smaller_tile(tile: int, height: int, width: int) -> int | None:
    """Next tile edge after an OOM: half the edge in effect, never below MIN_TILE; None when out of room."""
    edge = max(height, width) if tile <= 0 else min(tile, max(height, width))
    return None if edge <= MIN_TILE else max(edge // 2, MIN_TILE)


class RealESRGANEngine:
    """Real-ESRGAN models with tiling, OOM recovery, and exact output sizes (an x4 model's ×2 via INTER_AREA, the
    x2 model's ×4 via Lanczos, as the original service resized it).

    Models load lazily per quality (a lock makes that safe) and are then read-only, so the instance holds
    no per-call state. fp16 is used on CUDA; if a card produces NaN/inf or black output in fp16, the image
    is redone in fp32 and fp16 stays off for this instance (that is a property of the card, not the job).
    """

    name = REALESRGAN.name

    def __init__(
        self,
        model_dir: Path,
        device: torch.device | str = "cpu",
        *,
        half: bool | None = None,
        channels_last: bool | None = None,
        tile_pad: int = TILE_PAD,
        compile: str = "off",
        compile_tile: int = EnhanceOptions().tile_size,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.tile_pad = tile_pad  # context around each tile; 10 as upstream, more costs time but hides seams
        self.device = torch.device(device)
        self.half = self.device.type == "cuda" if half is None else half
        #: NHWC on CUDA: cuDNN's fp16 tensor-core convolutions work in NHWC, so an NCHW net pays two
        #: transposes per convolution; the NHWC output is also already the HxWx3 layout the host wants.
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        #: ``ENHANCER_COMPILE`` resolved for the device (``compiled.resolve``): off, torch, tensorrt or openvino.
        #: Each model is compiled for ``compile_tile``-pixel tiles (the service's default) with their padding, once,
        #: at load (OpenVINO's then takes any size).
        self.compile = compiled.resolve(compile, self.device)
        self.compile_tile = compile_tile
        self._models: dict[tuple[str, torch.dtype], torch.nn.Module] = {}
        self._lock = threading.Lock()
        #: Test hook: raise a (simulated) OOM for any tile whose edge exceeds this many input pixels.
        self.simulate_oom_above: int | None = None

    def _model(self, variant: str, dtype: torch.dtype) -> torch.nn.Module:
        with self._lock:
            key = (variant, dtype)
            if key not in self._models:
                spec = weights.SR_MODELS[variant]
                net = spec.arch()
                try:
                    net.load_state_dict(spec.load(self.model_dir), strict=True)
                except weights.WeightsError as exc:
                    raise EngineError(str(exc)) from exc
                except Exception as exc:  # a damaged or foreign file under the official name
                    # The operator learns where and what to do; the person, which model and what to do meanwhile.
                    log.error("loading %s from %s failed (not a valid checkpoint: %s); delete the file and run "
                              "`photoenhance models fetch`", spec.name, self.model_dir, exc)
                    raise EngineError(texts.TASK_MODEL_UNUSABLE(model=spec.name)) from exc
                net.requires_grad_(False).eval()
                # The compiled net's accuracy is checked against eager fp32: keep an fp32 copy until then.
                reference = copy.deepcopy(net) if self.compile != "off" and dtype != torch.float32 else None
                layout = torch.channels_last if self.channels_last else torch.contiguous_format
                net = net.to(device=self.device, dtype=dtype, memory_format=layout)
                net = compiled.compile_net(
                    net, name=spec.name, mode=self.compile, device=self.device, dtype=dtype,
                    edge=self.compile_tile + 2 * self.tile_pad, layout=layout, reference=reference,
                    cache_root=self.model_dir / "compiled")
                # Around the compiled net, not inside it: a traced graph keeps only the branch its example took.
                self._models[key] = _EvenInput(net, spec.scale) if spec.scale == 2 else net
            return self._models[key]

    def enhance(self, rgb: np.ndarray, opts: EnhanceOptions, progress: Progress) -> EngineResult:
        """Upscale ``rgb`` (HxWx3 uint8) by ``opts.scale``; see the class docstring for the failure rules."""
        image, tiles, model = self.upscale(rgb, opts, progress)
        return EngineResult(image=image, tiles=tiles, engine=self.name, model=model)

    def upscale(self, rgb: np.ndarray, opts: EnhanceOptions, progress: Progress) -> tuple[np.ndarray, int, str]:
        """Return (image at ``opts.scale``, tiles in the final pass, model name)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
        spec, _fallback = weights.model_for(opts.quality, self.model_dir)
        out, tiles = self._upscale_native(rgb, spec.name, opts.tile_size, progress)
        h, w = rgb.shape[:2]
        if opts.scale < spec.scale:
            out = cv2.resize(out, (w * opts.scale, h * opts.scale), interpolation=cv2.INTER_AREA)
        elif opts.scale > spec.scale:
            out = cv2.resize(out, (w * opts.scale, h * opts.scale), interpolation=cv2.INTER_LANCZOS4)
        return out, tiles, spec.name

    def _upscale_native(self, rgb: np.ndarray, variant: str, tile: int, progress: Progress) -> tuple[np.ndarray, int]:
        h, w = rgb.shape[:2]
        while True:
            try:
                return self._run_precision(rgb, variant, tile, progress)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            release(self.device)  # outside the except block, so the traceback's tensors are gone
            smaller = _smaller_tile(tile, h, w)
            if smaller is None:
                last = min(tile if tile > 0 else max(h, w), max(h, w))
                raise EngineError(texts.TASK_OUT_OF_GPU_MEMORY(tile=last))
            log.warning("Out of memory with tile %s (%s); retrying with %s-pixel tiles", tile, reason, smaller)
            tile = smaller

    def _run_precision(
        self, rgb: np.ndarray, variant: str, tile: int, progress: Progress
    ) -> tuple[np.ndarray, int]:
        if self.half:
            try:
                out = self._run(rgb, variant, tile, torch.float16, progress)
                if not (out.max() == 0 and rgb.max() > 8):
                    return out, len(tile_grid(*rgb.shape[:2], tile))
            except NonFiniteOutput:
                pass
            log.warning("fp16 gave NaN/inf or black output on %s; using fp32 from now on", self.device)
            self.half = False
        return self._run(rgb, variant, tile, torch.float32, progress), len(tile_grid(*rgb.shape[:2], tile))

    def _run(self, rgb: np.ndarray, variant: str, tile: int, dtype: torch.dtype, progress: Progress) -> np.ndarray:
        return upscale_tiled(
            self._model(variant, dtype),
            rgb,
            scale=weights.SR_MODELS[variant].scale,
            tile=tile,
            pad=self.tile_pad,
            device=self.device,
            dtype=dtype,
            channels_last=self.channels_last,
            progress=progress,
            check_tile=self._check_tile if self.simulate_oom_above is not None else None,
        )

    def _check_tile(self, height: int, width: int) -> None:
        limit = self.simulate_oom_above
        if limit is not None and max(height, width) > limit:
            raise SimulatedOOM(f"CUDA out of memory (simulated for a {height}x{width} tile)")

