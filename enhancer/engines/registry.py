"""The engine registry: every engine, what it needs, what it can do and how it is built, in one place.

The worker, its presence and the enhancer's service read this registry; no other module spells an engine's
name. What an engine can do is said in the bus's capability words (``bus.capabilities``): the worker
advertises the capabilities of the engines it can run and pulls only the jobs that need them, and the edge
routes jobs by capability without knowing any engine. Adding an engine is adding an :class:`EngineSpec` here.

Importing this module is cheap (no torch): each engine's module is imported by its builder.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bus.capabilities import CAPABILITIES, FACES, UPSCALE
from bus.schemas import QUALITIES, SCALES, EnhanceOptions

from .base import Engine, EngineError

#: GFPGAN v1.4's checkpoint in ``MODEL_DIR`` (``photoenhance models fetch`` puts it there).
GFPGAN_WEIGHTS = "GFPGANv1.4.pth"
#: ``ENHANCER_COMPILE``: auto is TensorRT when it imports, else torch.compile, on CUDA, and OpenVINO on a CPU; see
#: ``enhancer.engines.compiled``.
COMPILE_MODES = ("auto", "off", "torch", "tensorrt", "openvino")


T = TypeVar("T")


class Shared:
    """What the slots of one worker share (one process, one device): each item is built once, by the first slot
    that asks for it, while the others wait (slots build their engines in their own threads, at once). Items are
    keyed by the name of the engine that uses them, so that an engine the worker leaves out frees its share."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def get(self, key: str, build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._items:
                self._items[key] = build()
            return self._items[key]

    def drop(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)


@dataclass(frozen=True)
class BuildContext:
    """What a builder gets: where weights are, the device, and the engines it builds on, already built."""

    model_dir: Path
    device: Any  # torch.device or its name
    #: Most faces restored per photo (engines that restore faces).
    max_faces: int = 10
    #: The engines named in the spec's ``needs``, by name: shared with the slot, loaded once.
    needs: Mapping[str, Engine] = field(default_factory=dict)
    #: One of :data:`COMPILE_MODES` (``ENHANCER_COMPILE``); off unless the service's settings say otherwise.
    compile: str = "off"
    #: What the worker's slots share (GFPGAN's network); a fresh one shares nothing.
    shared: Shared = field(default_factory=Shared)


@dataclass(frozen=True)
class EngineSpec:
    """One engine as the rest of the enhancer sees it."""

    name: str
    #: The models it runs, for operators comparing workers (presence, ``/api/v1/servers``).
    models: str
    #: What it can do, in the bus's words (``bus.capabilities``).
    capabilities: frozenset[str]
    #: Builds an instance; called in the slot's thread, may load weights (and fail with :class:`EngineError`).
    build: Callable[[BuildContext], Engine]
    #: Files that must be in ``MODEL_DIR`` for it to run (none: its weights ship with the package).
    weights: tuple[str, ...] = ()
    #: Output scales and quality levels it serves.
    scales: tuple[int, ...] = SCALES
    qualities: tuple[str, ...] = QUALITIES
    #: Engines it builds on (built first and handed over in :attr:`BuildContext.needs`).
    needs: tuple[str, ...] = ()
    #: Never chosen from the weights on disk; only when ``ENHANCER_ENGINE`` names it (benchmarks).
    benchmark_only: bool = False
    #: Estimated device memory one slot's instance needs at its peak, beside the engines it builds on
    #: (``enhancer.slots`` argues the figures; ``ENHANCER_CONCURRENCY=auto`` on CUDA divides the GPU by them).
    slot_bytes: int = 0
    #: Estimated device memory of what the worker's slots share of it (:class:`Shared`), once per process.
    shared_bytes: int = 0

    def __post_init__(self) -> None:
        unknown = self.capabilities - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"engine {self.name}: unknown capabilities {sorted(unknown)}")

    def installed(self, model_dir: Path) -> bool:
        """Its weights are in ``model_dir`` (and so are those of the engines it needs)."""
        return all((Path(model_dir) / w).is_file() for w in self.weights) and all(
            get(n).installed(model_dir) for n in self.needs)

    def supports(self, options: EnhanceOptions) -> bool:
        """It serves the scale and quality level ``options`` ask for."""
        return options.scale in self.scales and options.quality in self.qualities


def _realesrgan(ctx: BuildContext) -> Engine:
    from .realesrgan import RealESRGANEngine

    return RealESRGANEngine(ctx.model_dir, ctx.device, compile=ctx.compile)


def _gfpgan(ctx: BuildContext) -> Engine:
    from .gfpgan import GFPGANEngine, load_restorer

    # One GFPGAN network for all the worker's slots, whose photos' faces share its passes; the background
    # upsampler is the slot's own Real-ESRGAN engine (one copy of those weights per slot, tiles on its own thread).
    restorer = ctx.shared.get(GFPGAN.name, lambda: load_restorer(ctx.model_dir, ctx.device, batch=ctx.max_faces))
    return GFPGANEngine(ctx.model_dir, ctx.device, background=ctx.needs.get(REALESRGAN.name),  # type: ignore[arg-type]
                        restorer=restorer, max_faces=ctx.max_faces)


def _bench_resize(ctx: BuildContext) -> Engine:
    from .bench_resize import BenchResizeEngine

    return BenchResizeEngine(float(os.environ.get("BENCH_ENGINE_DELAY", "0") or 0))


REALESRGAN = EngineSpec(
    name="realesrgan", models="Real-ESRGAN: realesr-general-x4v3 (fast), RealESRGAN_x2plus (medium), "
                              "RealESRGAN_x4plus (high); see quality_models for what runs here",
    capabilities=frozenset({UPSCALE}), build=_realesrgan, slot_bytes=int(1.5 * 2**30))
GFPGAN = EngineSpec(
    name="gfpgan", models="GFPGANv1.4 + RealESRGAN background", capabilities=frozenset({FACES}),
    build=_gfpgan, weights=(GFPGAN_WEIGHTS,), needs=(REALESRGAN.name,), slot_bytes=int(0.5 * 2**30),
    shared_bytes=int(3.1 * 2**30))
#: A stand-in for every engine (Lanczos resize), so benchmarks measure the service rather than a model.
BENCH_RESIZE = EngineSpec(
    name="bench-resize", models="lanczos (benchmark only)", capabilities=frozenset(CAPABILITIES),
    build=_bench_resize, benchmark_only=True, slot_bytes=64 << 20)  # holds no model

#: Every engine, by name, in order of preference: for a capability, the first engine that has it serves it.
REGISTRY: dict[str, EngineSpec] = {spec.name: spec for spec in (REALESRGAN, GFPGAN, BENCH_RESIZE)}


def get(name: str) -> EngineSpec:
    """The spec of engine ``name``; an :class:`EngineError` naming the choices when there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        choices = ", ".join(n for n, s in REGISTRY.items() if not s.benchmark_only)
        raise EngineError(f"Unknown engine {name!r}; available: {choices}") from None


def benchmark_engines() -> list[str]:
    """Engines that only ``ENHANCER_ENGINE`` can choose."""
    return [name for name, spec in REGISTRY.items() if spec.benchmark_only]


def available_engines(model_dir: Path) -> list[str]:
    """Engines that can run with the weights in ``model_dir``, in registry order."""
    return [name for name, spec in REGISTRY.items() if not spec.benchmark_only and spec.installed(model_dir)]


def capabilities_of(engines: Iterable[str]) -> list[str]:
    """What a worker with ``engines`` can do, in the order of ``bus.capabilities.CAPABILITIES``."""
    offered = set().union(*(get(e).capabilities for e in engines))
    return [c for c in CAPABILITIES if c in offered]


def engines_by_capability(engines: Iterable[str]) -> dict[str, str]:
    """For each capability a worker with ``engines`` has, the engine that serves it (the first in registry
    order: the plainest engine that can, so a plain upscale never pays for face detection)."""
    names = list(engines)
    serving: dict[str, str] = {}
    for name in sorted(names, key=list(REGISTRY).index):
        for capability in get(name).capabilities:
            serving.setdefault(capability, name)
    return {c: serving[c] for c in CAPABILITIES if c in serving}


def models_of(engines: Iterable[str]) -> dict[str, str]:
    """What each of ``engines`` runs, for presence."""
    return {e: get(e).models for e in engines}


def quality_models(engines: Iterable[str], model_dir: Path) -> dict[str, tuple[str, bool]]:
    """For a worker with ``engines``: each quality level's super-resolution model with the weights in
    ``model_dir``, and whether it is a stand-in (``enhancer.weights.model_for``). Real-ESRGAN runs every level,
    also under GFPGAN (its background); a worker without it (a benchmark engine) names none."""
    from enhancer import weights

    if not {REALESRGAN.name, GFPGAN.name} & set(engines):
        return {}
    return weights.quality_models(model_dir)
