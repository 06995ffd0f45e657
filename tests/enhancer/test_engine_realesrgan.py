"""Real-ESRGAN engine on the real pretrained weights (converted from the shipped ncnn files), on CPU."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from enhancer.engines import EngineError, EngineResult, EnhanceOptions, available_engines, create_engine, pick_device
from enhancer.engines.realesrgan import RealESRGANEngine

from .photos import Recorder, laplacian_var, psnr, shrink


@pytest.mark.parametrize(
    "kwargs", [{"scale": 3}, {"quality": "ultra"}, {"tile_size": 16}, {"tile_size": 4096}, {"tile_size": -1}]
)
def test_options_are_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EnhanceOptions(**kwargs)


def test_factory(model_dir: Path) -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type in {"cpu", "cuda"}
    assert available_engines(model_dir) == ["realesrgan"]  # no GFPGANv1.4.pth here
    assert create_engine("realesrgan", model_dir, "cpu").name == "realesrgan"
    with pytest.raises(EngineError, match=r"GFPGANv1\.4\.pth"):
        create_engine("gfpgan", model_dir, "cpu")
    with pytest.raises(EngineError, match="Unknown engine"):
        create_engine("waifu2x", model_dir, "cpu")


ORIGINAL = skimage.data.astronaut()[64:320, 160:416]  # 256² of a real photo
SMALL = shrink(ORIGINAL, 64, 64)  # what a 4x smaller camera would have captured


@pytest.fixture(scope="module")
def x4plus_whole(sr_engine: RealESRGANEngine) -> tuple[EngineResult, Recorder]:
    """One untiled x4plus pass, shared: on 2 CPU cores each pass costs seconds."""
    recorder = Recorder()
    return sr_engine.enhance(SMALL, EnhanceOptions(quality="high", tile_size=0), recorder), recorder


def test_x4plus_restores_detail_like_a_real_sr_model(x4plus_whole: tuple[EngineResult, Recorder]) -> None:
    """x4plus on a 64² photo must add real detail (compared with bicubic), not noise or a colour cast."""
    result, recorder = x4plus_whole
    sr = result.image
    assert sr.shape == (256, 256, 3) and sr.dtype == np.uint8
    assert (result.model, result.engine, result.tiles) == ("RealESRGAN_x4plus", "realesrgan", 1)
    assert recorder.events == [("upscaling", 1, 1)]

    bicubic = cv2.resize(SMALL, (256, 256), interpolation=cv2.INTER_CUBIC)
    # Sharper than bicubic by a wide margin (measured ~30x), yet not sharper than the real photo (noise would be).
    assert laplacian_var(sr) > 5 * laplacian_var(bicubic)
    assert laplacian_var(sr) < 2 * laplacian_var(ORIGINAL)
    # Same picture and colours: shrinking the result gives back the input; it stays near the bicubic image.
    back = shrink(sr, 64, 64).astype(np.float64)
    assert np.abs(back - SMALL).mean() < 8
    assert np.abs(back.mean(axis=(0, 1)) - SMALL.mean(axis=(0, 1))).max() < 3
    assert np.abs(sr.astype(np.float64) - bicubic).mean() < 14


def test_tiled_x4plus_matches_untiled(sr_engine: RealESRGANEngine, x4plus_whole: tuple[EngineResult, Recorder]) -> None:
    """Seams: each tile gets 10 px of real context (as upstream), so tiling barely changes the result.

    With tiles as small as 32 px (a seam every 128 output px) the difference measured mean 1.3, p99 10 levels.
    """
    whole = x4plus_whole[0].image.astype(np.float64)
    tiled = sr_engine.enhance(SMALL, EnhanceOptions(quality="high", tile_size=32), lambda *a: None)
    assert tiled.tiles == 4
    diff = np.abs(tiled.image - whole)
    assert diff.mean() < 2.5
    assert np.percentile(diff, 99) <= 16
    assert psnr(tiled.image, whole) > 32


def test_fast_quality_uses_animevideov3(sr_engine: RealESRGANEngine, recorder: Recorder) -> None:
    small = shrink(skimage.data.chelsea(), 90, 60)
    result = sr_engine.enhance(small, EnhanceOptions(quality="fast", tile_size=0), recorder)
    assert result.model == "realesr-animevideov3"
    assert result.image.shape == (240, 360, 3)
    assert laplacian_var(result.image) > 2 * laplacian_var(cv2.resize(small, (360, 240), interpolation=cv2.INTER_CUBIC))


def test_tile_size_is_honoured(sr_engine: RealESRGANEngine, recorder: Recorder) -> None:
    photo = shrink(skimage.data.coffee(), 150, 100)
    result = sr_engine.enhance(photo, EnhanceOptions(quality="fast", tile_size=32), recorder)
    expected = 4 * 5  # ceil(100 / 32) rows x ceil(150 / 32) columns
    assert result.tiles == expected
    assert recorder.stage("upscaling") == [(k, expected) for k in range(1, expected + 1)]
    untiled = sr_engine.enhance(photo, EnhanceOptions(quality="fast", tile_size=0), lambda *a: None)
    assert np.abs(result.image.astype(int) - untiled.image).max() <= 8


def test_tile_padding_is_what_hides_seams(model_dir: Path) -> None:
    photo = shrink(skimage.data.coffee()[:, 100:500], 96, 96)
    opts = EnhanceOptions(quality="fast", tile_size=48)
    padded = RealESRGANEngine(model_dir, "cpu")
    unpadded = RealESRGANEngine(model_dir, "cpu", tile_pad=0)
    whole = padded.enhance(photo, EnhanceOptions(quality="fast", tile_size=0), lambda *a: None).image.astype(int)
    seam_padded = np.abs(padded.enhance(photo, opts, lambda *a: None).image - whole).max()
    seam_unpadded = np.abs(unpadded.enhance(photo, opts, lambda *a: None).image - whole).max()
    assert seam_padded <= 4 < seam_unpadded


def test_scale_2_is_exactly_twice(sr_engine: RealESRGANEngine) -> None:
    photo = shrink(skimage.data.coffee(), 61, 45)  # odd sizes
    two = sr_engine.enhance(photo, EnhanceOptions(scale=2, quality="fast", tile_size=0), lambda *a: None).image
    four = sr_engine.enhance(photo, EnhanceOptions(scale=4, quality="fast", tile_size=0), lambda *a: None).image
    assert two.shape == (90, 122, 3)
    assert np.array_equal(two, cv2.resize(four, (122, 90), interpolation=cv2.INTER_AREA))


def test_out_of_memory_halves_the_tile_and_redoes_the_image(sr_engine: RealESRGANEngine, recorder: Recorder) -> None:
    """OOM injected on tiles larger than 64 px: whole-image (96 px) fails, 64-px tiles succeed, correctly."""
    photo = shrink(skimage.data.astronaut(), 96, 96)
    engine = RealESRGANEngine(sr_engine.model_dir, "cpu")
    engine.simulate_oom_above = 64
    result = engine.enhance(photo, EnhanceOptions(quality="fast", tile_size=0), recorder)
    assert result.tiles == 4  # 96 px → 64-px tiles: 2 x 2
    assert recorder.stage("upscaling") == [(1, 4), (2, 4), (3, 4), (4, 4)]
    reference = sr_engine.enhance(photo, EnhanceOptions(quality="fast", tile_size=64), lambda *a: None)
    assert np.array_equal(result.image, reference.image)


def test_out_of_memory_at_the_smallest_tile_is_an_engine_error(sr_engine: RealESRGANEngine) -> None:
    photo = shrink(skimage.data.astronaut(), 96, 96)
    engine = RealESRGANEngine(sr_engine.model_dir, "cpu")
    engine.simulate_oom_above = 50
    with pytest.raises(EngineError, match="Not enough GPU memory to process this image, even with 64-pixel tiles"):
        engine.enhance(photo, EnhanceOptions(quality="fast", tile_size=400), lambda *a: None)


def test_other_errors_are_not_mistaken_for_oom(sr_engine: RealESRGANEngine) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        sr_engine.enhance(np.zeros((8, 8), np.uint8), EnhanceOptions(), lambda *a: None)


@pytest.mark.parametrize(("quality", "tile"), [("fast", 0), ("fast", 48), ("high", 0)])
def test_channels_last_layout_gives_the_same_picture(
    sr_engine: RealESRGANEngine, quality: str, tile: int
) -> None:
    """The NHWC layout used on CUDA (forced here on the CPU) changes how tensors sit in memory, not the
    picture: same size, same pixels up to float rounding, tiles and both models included."""
    photo = shrink(skimage.data.astronaut(), 72, 56)
    nhwc = RealESRGANEngine(sr_engine.model_dir, "cpu", channels_last=True)
    opts = EnhanceOptions(quality=quality, tile_size=tile)
    got = nhwc.enhance(photo, opts, lambda *a: None).image
    want = sr_engine.enhance(photo, opts, lambda *a: None).image
    assert not sr_engine.channels_last and got.shape == want.shape == (224, 288, 3)
    assert np.abs(got.astype(int) - want).max() <= 1
    kernels = [p for net in nhwc._models.values() for p in net.parameters() if p.ndim == 4]
    assert kernels and all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)


def test_gpu_defaults_are_half_precision_and_nhwc(model_dir: Path) -> None:
    """On CUDA the engine defaults to the fast path (fp16, NHWC); on a CPU to neither."""
    gpu, cpu = RealESRGANEngine(model_dir, "cuda"), RealESRGANEngine(model_dir, "cpu")
    assert (gpu.half, gpu.channels_last, cpu.half, cpu.channels_last) == (True, True, False, False)
