"""GFPGAN v1.4 face restoration on top of the Real-ESRGAN background, as the original service ran it.

Pipeline: detect → keep the biggest ``max_faces`` → align each to the 512² FFHQ crop → restore all faces of
the photo in one batched GFPGAN pass → upscale the whole photo with Real-ESRGAN → paste the faces back, blended
``face_strength`` of the way from the photo's own (upscaled) face to the restored one. GFPGAN v1.4 ignores its
own ``weight`` argument, so the strength is this blend: 0 gives back the photo's face, 1 the restored face.
Unlike upstream GFPGANer, an OOM never returns the unrestored face: batches shrink, then the job fails with a
clear message; and fp16 output that is NaN/inf or black is never returned either: the batch is redone in fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bus import texts
from enhancer.engines import _compat  # noqa: F401  (before gfpgan/basicsr)
from enhancer.engines._memory import SimulatedOOM, is_oom, release
from enhancer.engines.base import EngineError, EngineResult, EnhanceOptions, Progress
from enhancer.engines.faces import (
    FaceDetector,
    alignment,
    detect_faces,
    make_detector,
    paste_faces,
    select_faces,
    warp_face,
)
from enhancer.engines.realesrgan import RealESRGANEngine
from enhancer.engines.registry import GFPGAN, GFPGAN_WEIGHTS
from enhancer.weights import state_dict_from_checkpoint

log = logging.getLogger(__name__)

WEIGHTS_FILE = GFPGAN_WEIGHTS
MODEL_NAME = "GFPGANv1.4"


def gfpgan_arch() -> torch.nn.Module:
    """GFPGANv1Clean exactly as GFPGANer builds it for v1.4 (``arch='clean'``, ``channel_multiplier=2``)."""
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    return GFPGANv1Clean(
        out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
        num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True,
    )


class GFPGANEngine:
    """Face restoration engine. Weights load in the constructor so a missing/bad file fails at startup.

    All faces of a photo go through GFPGAN in one forward pass (``face_batch`` defaults to ``max_faces``);
    on OOM the batch is halved, down to one face. On CUDA the pass runs under fp16 autocast (``half``): the
    weights stay fp32, convolutions run in fp16 and the reductions that overflow easily (the StyleGAN
    demodulation's sums and rsqrt) stay in fp32. If a batch still comes out NaN/inf or black, it is redone
    in fp32 and fp16 stays off for this instance, as Real-ESRGAN does. The stored StyleGAN noise is used
    instead of fresh random noise, so the same photo always gives the same result. No per-call state on the
    instance; the detector (RetinaFace) keeps some, so one job at a time per instance.
    """

    name = GFPGAN.name

    def __init__(
        self,
        model_dir: Path,
        device: torch.device | str = "cpu",
        *,
        background: RealESRGANEngine | None = None,
        detector: FaceDetector | None = None,
        max_faces: int = 10,
        min_face_size: int = 20,
        face_batch: int | None = None,
        half: bool | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        path = self.model_dir / WEIGHTS_FILE
        if not path.is_file():
            raise EngineError(
                f"Face restoration needs {WEIGHTS_FILE} in {self.model_dir}; run `photoenhance models fetch`."
            )
        net = gfpgan_arch()
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state_dict_from_checkpoint(ckpt), strict=True)
        self._net = net.requires_grad_(False).eval().to(self.device)
        self.background = background or RealESRGANEngine(self.model_dir, self.device)
        self.detector = detector or make_detector(self.model_dir, self.device)
        self.max_faces, self.min_face_size = max_faces, min_face_size
        #: Faces per GFPGAN forward pass: by default every face of a photo in one pass.
        self.face_batch = face_batch or max_faces
        #: fp16 autocast for GFPGAN (default: on CUDA); turned off for good if it ever gives NaN/inf or black.
        self.half = self.device.type == "cuda" if half is None else half
        #: Test hook: raise a (simulated) OOM for any GFPGAN batch of more than this many faces.
        self.simulate_oom_batch_above: int | None = None

    def enhance(self, rgb: np.ndarray, opts: EnhanceOptions, progress: Progress) -> EngineResult:
        """Restore up to ``max_faces`` faces, ``opts.face_strength`` of the way, and upscale the photo by
        ``opts.scale``. Strength 0 restores nothing (no detection, no GFPGAN pass): the photo is only upscaled."""
        if opts.face_strength <= 0:
            background, tiles, bg_model = self.background.upscale(rgb, opts, progress)
            return EngineResult(image=background, faces=0, tiles=tiles, engine=self.name, model=bg_model)
        faces = select_faces(detect_faces(self.detector, rgb), self.max_faces, self.min_face_size)
        aligned = [(a, warp_face(rgb, a)) for a in map(alignment, faces) if a is not None]
        n = len(aligned)
        progress("faces_detected", n, n)
        restored = self.restore([crop for _, crop in aligned], progress)
        background, tiles, bg_model = self.background.upscale(rgb, opts, progress)
        # Paste smallest first so that where faces overlap the biggest one wins.
        image = paste_faces(background, restored[::-1], [a for a, _ in aligned][::-1], opts.scale,
                            strength=opts.face_strength)
        return EngineResult(image=image, faces=n, tiles=tiles, engine=self.name, model=f"{MODEL_NAME}+{bg_model}")

    def restore(self, crops: list[np.ndarray], progress: Progress) -> list[np.ndarray]:
        """Run GFPGAN on aligned 512² RGB crops in batches; halve the batch on OOM, down to one face."""
        done: list[np.ndarray] = []
        batch = max(self.face_batch, 1)
        while len(done) < len(crops):
            chunk = crops[len(done) : len(done) + batch]
            try:
                out = self._restore_chunk(chunk)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                out = None
            if out is None:
                release(self.device)
                if len(chunk) == 1:
                    raise EngineError(texts.TASK_OUT_OF_GPU_MEMORY_FACES())
                batch = len(chunk) // 2  # the chunk may already be smaller than the batch size
                log.warning("Out of memory in GFPGAN; retrying with batches of %d faces", batch)
                continue
            for face in out:
                done.append(face)
                progress("restoring", len(done), len(crops))
        return done

    def _restore_chunk(self, chunk: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass in fp16 when enabled; in fp32 if fp16 is off or its output is unusable."""
        if self.half:
            out = self._forward(chunk, half=True)
            if out is not None:
                return out
            log.warning("GFPGAN in fp16 gave NaN/inf or black faces on %s; using fp32 from now on", self.device)
            self.half = False
        out = self._forward(chunk, half=False)
        assert out is not None  # only fp16 output is checked
        return out

    @torch.inference_mode()
    def _forward(self, chunk: list[np.ndarray], *, half: bool) -> list[np.ndarray] | None:
        """Restored 512² RGB faces; ``None`` when ``half`` and the output is non-finite or black."""
        if self.simulate_oom_batch_above is not None and len(chunk) > self.simulate_oom_batch_above:
            raise SimulatedOOM(f"CUDA out of memory (simulated for a batch of {len(chunk)} faces)")
        x = torch.from_numpy(np.stack(chunk)).to(self.device).permute(0, 3, 1, 2).float().contiguous()
        x = x.div_(255.0).sub_(0.5).div_(0.5)  # RGB in [-1, 1], as GFPGAN was trained
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=half):
            y = self._net(x, return_rgb=False, randomize_noise=False)[0]
        y = y.float()
        if half and not bool(torch.isfinite(y).all()):
            return None
        y = y.clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)
        faces = list(y.permute(0, 2, 3, 1).cpu().numpy())
        if half and any(face.max() == 0 and crop.max() > 8 for face, crop in zip(faces, chunk, strict=True)):
            return None  # a black face from a visible one: fp16 underflow/overflow, not a picture
        return faces
