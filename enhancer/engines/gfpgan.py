"""GFPGAN v1.4 face restoration on top of the Real-ESRGAN background, as the original service ran it.

Pipeline: detect → keep the biggest ``max_faces`` → align each to the 512² FFHQ crop → restore all faces of
the photo in one batched GFPGAN pass (with other photos' faces when the worker holds several) → upscale the
whole photo with Real-ESRGAN → paste the faces back, blended ``face_strength`` of the way from the photo's own
(upscaled) face to the restored one. GFPGAN v1.4 ignores its own ``weight`` argument, so the strength is this
blend: 0 gives back the photo's face, 1 the restored face. Unlike upstream GFPGANer, an OOM never returns the
unrestored face: batches shrink, then the job fails with a clear message; and fp16 output that is NaN/inf or
black is never returned either: the batch is redone in fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from enhancer.engines import _compat  # noqa: F401  (before gfpgan/basicsr)
from enhancer.engines.base import EngineError, EngineResult, EnhanceOptions, Progress, no_progress
from enhancer.engines.face_restorer import FaceRestorer
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

WEIGHTS_FILE = GFPGAN_WEIGHTS
MODEL_NAME = "GFPGANv1.4"


def gfpgan_arch() -> torch.nn.Module:
    """GFPGANv1Clean exactly as GFPGANer builds it for v1.4 (``arch='clean'``, ``channel_multiplier=2``)."""
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    return GFPGANv1Clean(
        out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
        num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True,
    )


def load_restorer(model_dir: Path, device: torch.device | str, *, batch: int = 10,
                  half: bool | None = None) -> FaceRestorer:
    """GFPGAN v1.4's network with its weights from ``model_dir``, behind a :class:`FaceRestorer`; an
    :class:`EngineError` naming the fix when the weights are missing."""
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise EngineError(f"Face restoration needs {WEIGHTS_FILE} in {model_dir}; run `photoenhance models fetch`.")
    net = gfpgan_arch()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state_dict_from_checkpoint(ckpt), strict=True)
    return FaceRestorer(net.requires_grad_(False).eval().to(device), device, batch=batch, half=half)


class GFPGANEngine:
    """Face restoration engine. Weights load in the constructor so a missing/bad file fails at startup.

    The GFPGAN passes are the ``restorer``'s (:mod:`enhancer.engines.face_restorer`): every face of a photo in
    one pass, with the faces of the other photos its slots hold when they come together; fp16 on CUDA. A
    worker's slots share one restorer (``registry``); an engine built alone makes its own, with passes of
    ``face_batch`` faces (default ``max_faces``). The stored StyleGAN noise is used instead of fresh random
    noise, so the same photo always gives the same result. No per-call state on the instance; the detector
    (RetinaFace) keeps some, so one job at a time per instance.
    """

    name = GFPGAN.name

    def __init__(
        self,
        model_dir: Path,
        device: torch.device | str = "cpu",
        *,
        background: RealESRGANEngine | None = None,
        detector: FaceDetector | None = None,
        restorer: FaceRestorer | None = None,
        max_faces: int = 10,
        min_face_size: int = 20,
        face_batch: int | None = None,
        half: bool | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.restorer = restorer or load_restorer(self.model_dir, self.device, batch=face_batch or max_faces,
                                                  half=half)
        self.background = background or RealESRGANEngine(self.model_dir, self.device)
        self.detector = detector or make_detector(self.model_dir, self.device)
        self.max_faces, self.min_face_size = max_faces, min_face_size

    def warm_up(self, rgb: np.ndarray, opts: EnhanceOptions) -> None:
        """A job on ``rgb`` (no face in the worker's tiny warm-up photo: detection and background run), then one
        GFPGAN pass on the shared restorer, once per worker (:meth:`FaceRestorer.warm_up`)."""
        self.enhance(rgb, opts, no_progress)
        self.restorer.warm_up()

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
        restored = self.restorer.restore([crop for _, crop in aligned], progress)
        background, tiles, bg_model = self.background.upscale(rgb, opts, progress)
        # Paste smallest first so that where faces overlap the biggest one wins.
        image = paste_faces(background, restored[::-1], [a for a, _ in aligned][::-1], opts.scale,
                            strength=opts.face_strength)
        return EngineResult(image=image, faces=n, tiles=tiles, engine=self.name, model=f"{MODEL_NAME}+{bg_model}")
