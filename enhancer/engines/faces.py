"""Face detection, alignment to the FFHQ template, and paste-back: what GFPGAN needs around it.

We do not construct facexlib's FaceRestoreHelper: its constructor downloads detection and parsing weights.
Detection uses facexlib's RetinaFace when its weights are on disk, else facenet-pytorch's MTCNN, whose
weights ship inside the wheel. Alignment and paste-back follow facexlib (5-point similarity transform;
eroded, blurred square mask) but work on the face's bounding region only instead of the whole output,
which matters at 16+ megapixels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

FACE_SIZE = 512
#: facexlib's 5-point FFHQ template for 512² crops (eyes, nose tip, mouth corners; RetinaFace order).
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    np.float32,
)
_BORDER_RGB = (132, 133, 135)  # facexlib's grey (135, 133, 132) is BGR
RETINAFACE_WEIGHTS = "detection_Resnet50_Final.pth"
DETECT_MAX_SIDE = 2048  # larger photos are detected on a downscaled copy: bounded time, same faces


@dataclass(frozen=True)
class Face:
    """A detection in input pixels: box (x1, y1, x2, y2), 5 landmarks (RetinaFace order), confidence."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """Shorter side of the box."""
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return min(x2 - x1, y2 - y1)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)

    def scaled(self, factor: float) -> Face:
        return Face(self.box * factor, self.landmarks * factor, self.score)


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


class MTCNNDetector:
    """facenet-pytorch MTCNN: P/R/O-nets ship in the wheel (2 MB), so no download is ever needed."""

    name = "mtcnn"

    def __init__(self, device: torch.device, min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN

        self._net = MTCNN(keep_all=True, min_face_size=min_face_size, device=device)
        self._min_side = min_face_size

    def detect(self, rgb: np.ndarray) -> list[Face]:
        if min(rgb.shape[:2]) < self._min_side:  # no face fits, and MTCNN's image pyramid would be empty
            return []
        boxes, probs, points = self._net.detect(rgb, landmarks=True)
        if boxes is None:
            return []
        # facenet-pytorch returns object arrays under numpy 2; go through lists to get real float arrays.
        boxes = np.asarray(boxes.tolist(), np.float32).reshape(-1, 4)
        points = np.asarray(points.tolist(), np.float32).reshape(-1, 5, 2)
        probs = np.asarray(probs.tolist(), np.float32).reshape(-1)
        return [Face(b, p, float(s)) for b, p, s in zip(boxes, points, probs, strict=True)]


class RetinaFaceDetector:
    """facexlib RetinaFace-ResNet50 (what the original service used), when its weights are in model_dir.

    facexlib keeps per-call scaling state on the network object: one detection at a time per instance.
    """

    name = "retinaface"

    def __init__(self, model_dir: Path, device: torch.device, conf_threshold: float = 0.97) -> None:
        from enhancer.engines import _compat

        _compat.install()  # must precede facexlib
        from facexlib.detection import init_detection_model

        if not (Path(model_dir) / RETINAFACE_WEIGHTS).is_file():  # facexlib would download it otherwise
            raise FileNotFoundError(Path(model_dir) / RETINAFACE_WEIGHTS)
        self._net = init_detection_model(
            "retinaface_resnet50", half=False, device=device, model_rootpath=str(model_dir)
        )
        self._conf = conf_threshold

    def detect(self, rgb: np.ndarray) -> list[Face]:
        with torch.inference_mode():
            dets = self._net.detect_faces(np.ascontiguousarray(rgb[:, :, ::-1]), self._conf)  # takes BGR
        return [Face(d[0:4].astype(np.float32), d[5:15].reshape(5, 2).astype(np.float32), float(d[4])) for d in dets]


def make_detector(model_dir: Path, device: torch.device) -> FaceDetector:
    """RetinaFace when its weights were fetched, otherwise MTCNN."""
    if (Path(model_dir) / RETINAFACE_WEIGHTS).is_file():
        return RetinaFaceDetector(model_dir, device)
    return MTCNNDetector(device)


def detect_faces(detector: FaceDetector, rgb: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> list[Face]:
    """Detect on a copy no larger than ``max_side``; coordinates come back in input pixels."""
    h, w = rgb.shape[:2]
    factor = max(h, w) / max_side
    if factor <= 1:
        return detector.detect(rgb)
    small = cv2.resize(rgb, (round(w / factor), round(h / factor)), interpolation=cv2.INTER_AREA)
    return [f.scaled(factor) for f in detector.detect(small)]


def select_faces(faces: list[Face], max_faces: int = 10, min_size: float = 20, min_eye_dist: float = 5) -> list[Face]:
    """Biggest first, at most ``max_faces``, none smaller than ``min_size`` px or with eyes < ``min_eye_dist``.

    A bad detector can report thousands of "faces"; each costs a GFPGAN pass, so the bound is what keeps
    one photo from occupying a worker for hours.
    """
    kept = [
        f for f in faces
        if np.isfinite(f.box).all() and np.isfinite(f.landmarks).all() and f.size >= min_size
        and float(np.linalg.norm(f.landmarks[0] - f.landmarks[1])) >= min_eye_dist
    ]
    kept.sort(key=lambda f: f.area, reverse=True)
    return kept[:max_faces]


def alignment(face: Face) -> np.ndarray | None:
    """2x3 similarity transform from input pixels to the 512² FFHQ crop (None for degenerate landmarks)."""
    affine, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32), FFHQ_TEMPLATE_512, method=cv2.LMEDS)
    if affine is None or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) < 1e-8:
        return None
    return affine


def warp_face(rgb: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The aligned 512² RGB crop GFPGAN expects; outside the photo is facexlib's neutral grey."""
    return cv2.warpAffine(
        rgb, affine, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT, borderValue=_BORDER_RGB
    )


def paste_faces(background: np.ndarray, faces: list[np.ndarray], affines: list[np.ndarray], scale: int, *,
                strength: float = 1.0) -> np.ndarray:
    """Blend restored 512² faces into ``background`` (the input upscaled by ``scale``), in place.

    ``strength`` (0–1) is how much of each restored face replaces the background's own face: the mask is
    scaled by it, so each pixel is ``strength × mask`` restored and the rest the background's. That is the
    blend of the restored and the original aligned crop in the face's 512² frame (``s·R + (1−s)·O`` pasted
    with the mask) computed where the pixels land: the same result without resampling the original face into
    the crop and back, so strength 0 gives back the background's pixels exactly.

    As facexlib's ``paste_faces_to_input_image`` without the parsing net: inverse affine scaled to the
    output, a square mask eroded by 2×scale px, then eroded and Gaussian-blurred by ~5% of the face size.
    The mask is made in the face's own 512² frame (where it does not depend on the photo, so it is
    cached) and warped with the face, instead of eroding and blurring megapixels of output; the blend
    is OpenCV's ``blendLinear`` on 8-bit pixels (5–7× faster at 4×). Pixels outside each face's mask keep
    the background's exact values, and a photo without faces is not touched at all. One difference from
    facexlib: where a face's square runs off the photo, the soft edge follows the square, not the photo's
    border (facexlib does not erode at the border, so it pastes such a face hard up to the edge).
    """
    h_up, w_up = background.shape[:2]
    for face, affine in zip(faces, affines, strict=True):
        inv = cv2.invertAffineTransform(affine) * scale
        if scale > 1:
            inv[:, 2] += 0.5 * scale  # facexlib's offset for pixel-centre alignment after upscaling
        roi = _footprint(inv, face.shape[0], w_up, h_up)
        if roi is None:
            continue
        x0, y0, x1, y1 = roi
        inv_roi = inv.copy()
        inv_roi[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        zoom = math.sqrt(abs(np.linalg.det(inv_roi[:, :2])))  # output pixels per face pixel
        mask, pad = _face_mask(face.shape[0], max(round(2 * scale / zoom), 1))
        padded = inv_roi.copy()
        padded[:, 2] -= inv_roi[:, :2] @ (pad, pad)  # the mask's frame has ``pad`` extra pixels each side
        soft = cv2.warpAffine(mask, padded, size)
        if strength < 1:
            soft *= strength
        if not soft.any():
            continue
        restored = cv2.warpAffine(face, inv_roi, size)
        region = np.ascontiguousarray(background[y0:y1, x0:x1])
        background[y0:y1, x0:x1] = cv2.blendLinear(restored, region, soft, 1.0 - soft)
    return background


def _footprint(inv: np.ndarray, face_size: int, w: int, h: int, margin: int = 4) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the warped face square in the output, with a margin, clipped."""
    corners = np.array([[0, 0], [face_size, 0], [0, face_size], [face_size, face_size]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    x0 = max(math.floor(pts[:, 0].min()) - margin, 0)
    y0 = max(math.floor(pts[:, 1].min()) - margin, 0)
    x1 = min(math.ceil(pts[:, 0].max()) + margin, w)
    y1 = min(math.ceil(pts[:, 1].max()) + margin, h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@functools.lru_cache(maxsize=32)
def _face_mask(face_size: int, erode: int) -> tuple[np.ndarray, int]:
    """(soft blend mask, padding) in the face's frame: facexlib's square mask eroded by ``erode`` px, then
    eroded and blurred by 1/20 of its side; zero-padded so that erosion also works at the square's edges.
    Read-only: shared by every paste with the same erosion."""
    w_edge = (face_size - erode) // 20
    pad = erode + 2 * w_edge + 2
    square = np.zeros((face_size + 2 * pad,) * 2, np.float32)
    square[pad : pad + face_size, pad : pad + face_size] = 1.0
    hard = cv2.erode(square, np.ones((erode, erode), np.uint8))
    center = cv2.erode(hard, np.ones((w_edge * 2, w_edge * 2), np.uint8)) if w_edge > 0 else hard
    soft = cv2.GaussianBlur(center, (w_edge * 2 + 1, w_edge * 2 + 1), 0)
    soft.flags.writeable = False
    return soft, pad
