"""ncnn → torch conversion of the shipped Real-ESRGAN weights, the conversion cache, and `models fetch`."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from enhancer import weights
from enhancer.weights import (
    CATALOGUE,
    WeightFile,
    WeightsError,
    animevideov3_arch,
    load_animevideov3,
    load_x4plus,
    ncnn_files,
    parse_ncnn_param,
    read_ncnn_weights,
    x4plus_arch,
)


def test_x4plus_param_file_describes_rrdbnet() -> None:
    param, _ = ncnn_files("REALESRGAN_X4PLUS_UP4X")
    convs = [layer for layer in parse_ncnn_param(param) if layer.type == "Convolution"]
    # 23 RRDB blocks x 3 dense blocks x 5 convs + conv_first, conv_body, conv_up1, conv_up2, conv_hr, conv_last
    assert len(convs) == 23 * 3 * 5 + 6


def test_x4plus_converts_loads_strictly_and_is_cached(model_dir: Path, monkeypatch) -> None:
    state = load_x4plus(model_dir)
    net = x4plus_arch()
    net.load_state_dict(state, strict=True)  # every key, every shape
    assert sum(v.numel() for v in state.values()) == pytest.approx(16.7e6, rel=0.01)
    assert all(torch.isfinite(v).all() for v in state.values())
    cache = model_dir / "RealESRGAN_x4plus.from-ncnn.pth"
    assert cache.is_file()

    # The second load reads the cache: the ncnn files are not touched again.
    monkeypatch.setattr(weights, "ncnn_files", lambda stem: pytest.fail("converted again instead of cached"))
    again = load_x4plus(model_dir)
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_animevideov3_converts_loads_strictly(tmp_path: Path) -> None:
    net = animevideov3_arch()
    net.load_state_dict(load_animevideov3(tmp_path), strict=True)
    assert (tmp_path / "realesr-animevideov3.from-ncnn.pth").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "realesr-animevideov3.from-ncnn.pth"
    cache.write_bytes(b"not a torch file")
    animevideov3_arch().load_state_dict(load_animevideov3(tmp_path), strict=True)
    torch.load(cache, weights_only=True)  # rewritten properly


def test_two_loaders_of_one_folder_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots of a worker, replicas on one volume, test workers: both find no cache, one converts, the other waits
    for it and reads what it saved."""
    missed = threading.Semaphore(0)
    read, convert = weights._read_cache, weights.ncnn_files
    conversions: list[str] = []

    def reading(cache: Path, *, quiet: bool = False) -> dict | None:
        state = read(cache, quiet=quiet)
        if state is None and not quiet:
            missed.release()
        return state

    def converting(stem: str) -> tuple[str, bytes]:
        conversions.append(stem)
        for _ in range(2):  # both loaders have looked and found nothing before the first one converts
            assert missed.acquire(timeout=10)
        return convert(stem)

    monkeypatch.setattr(weights, "_read_cache", reading)
    monkeypatch.setattr(weights, "ncnn_files", converting)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: load_animevideov3(tmp_path), range(2))
    assert len(conversions) == 1
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["realesr-animevideov3.from-ncnn.pth"]  # no lock file


def test_official_x4plus_checkpoint_wins(tmp_path: Path, model_dir: Path) -> None:
    state = load_x4plus(model_dir)
    marked = {k: v.clone() for k, v in state.items()}
    marked["conv_last.bias"].fill_(0.25)
    torch.save({"params_ema": marked, "params": {}}, tmp_path / "RealESRGAN_x4plus.pth")
    loaded = load_x4plus(tmp_path)
    assert torch.equal(loaded["conv_last.bias"], marked["conv_last.bias"])
    assert not (tmp_path / "RealESRGAN_x4plus.from-ncnn.pth").exists()


def test_truncated_bin_is_rejected() -> None:
    param, data = ncnn_files("REALESRGAN_ANIMAVIDEOV3_UP4X")
    with pytest.raises(WeightsError, match="shorter"):
        read_ncnn_weights(param, data[:-100])
    with pytest.raises(WeightsError, match="unread"):
        read_ncnn_weights(param, data + b"\0\0\0\0")


# ----------------------------------------------------------------------------------------------------------
# fetch: exercised through file:// URLs (urllib handles them like https), since nothing here can reach GitHub
# ----------------------------------------------------------------------------------------------------------


def _catalogue_with(monkeypatch, entry: WeightFile) -> None:
    monkeypatch.setattr(weights, "CATALOGUE", {entry.filename: entry})


def test_catalogue_has_the_official_files() -> None:
    assert CATALOGUE["GFPGANv1.4.pth"].sha256 == "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"
    assert CATALOGUE["RealESRGAN_x4plus.pth"].url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/")
    assert CATALOGUE["detection_Resnet50_Final.pth"].sha256 is None


def test_fetch_verifies_and_renames_atomically(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "upstream.bin"
    src.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest_dir = tmp_path / "models"
    seen: list[tuple[str, int, int | None]] = []

    _catalogue_with(monkeypatch, WeightFile("w.pth", src.as_uri(), good, "test"))
    [path] = weights.fetch(dest_dir, ["w.pth"], progress=lambda *a: seen.append(a))
    assert path.read_bytes() == src.read_bytes()
    assert seen[-1][1] == 7000
    assert sorted(p.name for p in dest_dir.iterdir()) == ["w.pth"]

    path.unlink()
    _catalogue_with(monkeypatch, WeightFile("w.pth", src.as_uri(), "0" * 64, "test"))
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        weights.fetch(dest_dir, ["w.pth"])
    assert list(dest_dir.iterdir()) == []  # nothing half-written or unverified is left


def test_fetch_without_published_hash_warns(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "det.pth"
    src.write_bytes(b"x")
    warnings: list[str] = []
    _catalogue_with(monkeypatch, WeightFile("det.pth", src.as_uri(), None, "test"))
    weights.fetch(tmp_path / "m", None, warn=warnings.append)
    assert (tmp_path / "m" / "det.pth").is_file()
    assert "without verification" in warnings[0]


def test_fetch_errors_are_clear(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(WeightsError, match="Unknown weights"):
        weights.fetch(tmp_path, ["nope.pth"])
    _catalogue_with(monkeypatch, WeightFile("w.pth", (tmp_path / "absent").as_uri(), None, "test"))
    with pytest.raises(WeightsError, match=r"Could not download w\.pth"):
        weights.fetch(tmp_path, ["w.pth"])
    assert list(tmp_path.iterdir()) == []
