"""Fixtures for the model-engine tests: real models on CPU, one converted-weights cache per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from enhancer.engines.realesrgan import RealESRGANEngine

from .photos import Recorder


@pytest.fixture(scope="session")
def engine_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-models")


@pytest.fixture(scope="session")
def sr_engine(engine_model_dir: Path) -> RealESRGANEngine:
    """Shared Real-ESRGAN engine (models convert once from the shipped ncnn files, then stay loaded)."""
    return RealESRGANEngine(engine_model_dir, "cpu")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
