"""Fixtures for the model-engine tests: real models on CPU, one converted-weights cache per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from enhancer.engines.realesrgan import RealESRGANEngine

from .photos import Recorder


@pytest.fixture(scope="session")
def sr_engine(model_dir: Path) -> RealESRGANEngine:
    """Shared Real-ESRGAN engine (models convert once from the shipped ncnn files, then stay loaded)."""
    return RealESRGANEngine(model_dir, "cpu")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
