"""The engine registry, without servers or models: what each engine needs and can do, which engines and
capabilities a worker has from the weights on its disk, and that nothing else names an engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bus.capabilities import CAPABILITIES, FACES, UPSCALE
from bus.schemas import EnhanceOptions
from bus.settings import NatsSettings, S3Settings, SettingsError, TaskSettings
from enhancer.engines import REGISTRY, available_engines, create_engine
from enhancer.engines.registry import (
    GFPGAN_WEIGHTS,
    capabilities_of,
    engines_by_capability,
    get,
    models_of,
)
from enhancer.presence import Presence
from enhancer.settings import EnhancerSettings

ROOT = Path(__file__).resolve().parents[2]


def test_every_engine_declares_what_it_can_do() -> None:
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.models
        assert spec.capabilities and spec.capabilities <= set(CAPABILITIES)
        assert spec.scales and spec.qualities
        assert all(need in REGISTRY for need in spec.needs)
        assert spec.supports(EnhanceOptions()) and spec.supports(EnhanceOptions(scale=2, quality="fast"))


def test_the_weights_on_disk_decide_the_engines_and_capabilities(tmp_path: Path) -> None:
    plain = available_engines(tmp_path)
    assert plain == [n for n, s in REGISTRY.items() if not s.weights and not s.benchmark_only]
    assert capabilities_of(plain) == [UPSCALE]
    assert set(engines_by_capability(plain)) == {UPSCALE}

    (tmp_path / GFPGAN_WEIGHTS).write_bytes(b"")  # present is enough to be chosen; loading checks it
    faces = available_engines(tmp_path)
    assert len(faces) == len(plain) + 1
    assert capabilities_of(faces) == [FACES, UPSCALE]  # the scarcer first: what the worker pulls first
    routes = engines_by_capability(faces)
    # A plain upscale runs on the plainest engine that can, never on the face engine.
    assert routes[UPSCALE] == engines_by_capability(plain)[UPSCALE]
    assert routes[FACES] != routes[UPSCALE] and FACES in get(routes[FACES]).capabilities
    assert set(models_of(faces)) == set(faces)


def test_benchmark_engines_only_by_name() -> None:
    bench = [n for n, s in REGISTRY.items() if s.benchmark_only]
    assert bench and not set(bench) & set(available_engines(ROOT))
    assert capabilities_of(bench) == list(CAPABILITIES)  # a stand-in serves whatever a job asks
    settings = dict(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings())
    assert EnhancerSettings(**settings, engine_override=bench[0]).engine_override == bench[0]  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="benchmark engine"):
        EnhancerSettings(**settings, engine_override=next(iter(REGISTRY)))  # type: ignore[arg-type]


def test_an_unknown_engine_is_refused_by_name() -> None:
    from enhancer.engines import EngineError

    with pytest.raises(EngineError, match="Unknown engine 'waifu2x'"):
        create_engine("waifu2x", ROOT, "cpu")


def test_presence_advertises_capabilities_and_models(tmp_path: Path) -> None:
    (tmp_path / GFPGAN_WEIGHTS).write_bytes(b"")
    engines = available_engines(tmp_path)
    presence = Presence(None, worker_id="w", heartbeat=1.0, device="cpu", engines=engines,  # type: ignore[arg-type]
                        capacity=2, counters=lambda: (1, 2, 3))
    beat = presence.snapshot("alive")
    assert beat.engines == engines and beat.capabilities == [FACES, UPSCALE]
    assert beat.models == {e: REGISTRY[e].models for e in engines}
    assert (beat.in_flight, beat.jobs_done, beat.jobs_failed) == (1, 2, 3)


def test_only_the_registry_names_an_engine() -> None:
    """No module of the services (nor bootstrap) writes an engine's name: they read the registry, or, at the
    edge, the capabilities the workers advertise. (The engines' own classes take their name from it too.)"""
    names = set(REGISTRY)
    registry = ROOT / "enhancer" / "engines" / "registry.py"
    offenders = []
    for package in ("enhancer", "edge", "billing", "bus", "photoenhance"):
        for path in (ROOT / package).rglob("*.py"):
            if path == registry:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in names:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders
