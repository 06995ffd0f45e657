"""Model engines, declared in one registry (:mod:`enhancer.engines.registry`): what each needs, can do and
how it is built.

Importing this package is cheap (no torch); torch and the model libraries load in :func:`create_engine`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from enhancer.engines.base import Engine, EngineError, EngineResult, EnhanceOptions, Progress
from enhancer.engines.registry import REGISTRY, BuildContext, EngineSpec, Shared, available_engines, get

if TYPE_CHECKING:
    import torch

__all__ = [
    "REGISTRY",
    "Engine",
    "EngineError",
    "EngineResult",
    "EngineSpec",
    "EnhanceOptions",
    "Progress",
    "Shared",
    "available_engines",
    "create_engine",
    "get",
    "pick_device",
    "use_own_cuda_stream",
]


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


def create_engine(
    name: str, model_dir: Path, device: torch.device | str, *, needs: Mapping[str, Engine] | None = None,
    max_faces: int = 10, compile: str = "off", shared: Shared | None = None,
) -> Engine:
    """Build engine ``name`` of the registry; one that loads weights does so now (fails early).

    ``needs``: engines it builds on (its spec's ``needs``), already built, to share instead of loading its own.
    ``compile``: ``ENHANCER_COMPILE`` (``registry.COMPILE_MODES``), for the engines that compile their networks.
    ``shared``: what the other slots of the worker share with this one (none given: nothing is shared).
    """
    spec = get(name)
    _limit_cpu_threads()
    return spec.build(BuildContext(Path(model_dir), device, max_faces=max_faces, needs=dict(needs or {}),
                                   compile=compile, shared=shared or Shared()))


def _limit_cpu_threads() -> None:
    """torch sizes its CPU pool from the host's cores; in a container limited by affinity that oversubscribes."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)
