"""Fixtures for the model-engine tests: real models on CPU, one converted-weights cache per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from enhancer.engines.realesrgan import RealESRGANEngine

from .photos import Recorder


@pytest.fixture(scope="session")
def engine_model_dir(model_dir: Path) -> Path:
    """The session's model folder (tests/conftest.py), which the test stacks' enhancers use too: the shipped
    Real-ESRGAN files are converted once per session, not once for the engines and again for the stacks."""
    return model_dir


@pytest.fixture(scope="session")
def sr_engine(engine_model_dir: Path) -> RealESRGANEngine:
    """Shared Real-ESRGAN engine (models convert once from the shipped ncnn files, then stay loaded)."""
    return RealESRGANEngine(engine_model_dir, "cpu")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
