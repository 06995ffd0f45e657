"""A worker loads its engines and runs each once before it takes a job: the first job after a start is no slower
than the next, and a worker is announced (``serve``: after :meth:`Worker.warm_up`) only with what has run.

A real worker in-process with real engines (the benchmark resize engine; Real-ESRGAN on the CPU with the
weights the shipped files convert to), on a stand-in for its bus connection that records what the worker
asks of it: no server is needed to see the order of things.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from bus import subjects
from bus.capabilities import UPSCALE
from bus.schemas import QUALITIES, EnhanceOptions
from bus.settings import NatsSettings, S3Settings, SettingsError, TaskSettings
from enhancer.engines import EngineError, bench_resize
from enhancer.engines.bench_resize import BenchResizeEngine
from enhancer.engines.realesrgan import RealESRGANEngine
from enhancer.engines.registry import quality_models
from enhancer.settings import EnhancerSettings
from enhancer.worker import WARM_UP_PHOTO, Worker, warm_up_jobs


class Bus:
    """What the worker's loop asks of JetStream, with each slot's engine instances at that moment. The first
    pull stops the worker."""

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.stop = asyncio.Event()
        #: (what was asked, {slot index: names of the engines built on it}), in order.
        self.calls: list[tuple[str, dict[int, list[str]]]] = []

    def _seen(self, what: str) -> None:
        assert self.worker is not None
        self.calls.append((what, {s.index: sorted(s._engines) for s in self.worker._all_slots}))

    def jetstream(self) -> Bus:
        return self

    async def pull_subscribe_bind(self, durable: str, stream: str) -> Bus:
        self._seen(f"subscribe {durable}")
        return self

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        self._seen("fetch")
        self.stop.set()
        raise nats.errors.TimeoutError

    async def unsubscribe(self) -> None:
        pass


def worker(bus: Bus, engines: list[str], model_dir: Path, *, slots: int = 1, warm_up: bool = True) -> Worker:
    settings = EnhancerSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings(), model_dir=model_dir,
                                concurrency=slots, worker_id="warm-worker", warm_up=warm_up,
                                compile="off").for_device("cpu")  # eager, as on the test stacks (TEST_ENV)
    bus.worker = Worker(settings, bus, None, None, device="cpu", engines=engines)  # type: ignore[arg-type]
    return bus.worker


async def test_every_slot_runs_its_engine_before_the_first_pull_and_the_loop_stays_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[str, str, tuple[int, ...]]] = []
    warm_up = BenchResizeEngine.warm_up

    def recorded(self: BenchResizeEngine, rgb, opts):  # type: ignore[no-untyped-def]
        runs.append((threading.current_thread().name, opts.quality, rgb.shape))
        time.sleep(0.3)  # the warm-up call takes a moment: seen from the loop
        return warm_up(self, rgb, opts)

    monkeypatch.setattr(BenchResizeEngine, "warm_up", recorded)
    bus = Bus()
    w = worker(bus, ["bench-resize"], tmp_path, slots=2)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.wait_for(w.run(bus.stop), 30)
    finally:
        ticker.cancel()

    assert w.warmed and w.engines == ["bench-resize"]
    # Built on both slots before the worker subscribed or pulled anything.
    assert bus.calls and all(slots == {0: ["bench-resize"], 1: ["bench-resize"]} for _, slots in bus.calls)
    assert bus.calls[-1][0] == "fetch"
    # Each slot ran it once (it has no models of its own), in the slot's thread, on the tiny warm-up photo.
    assert sorted(thread.rsplit("_", 1)[0] for thread, _, _ in runs) == ["engine-0", "engine-1"]
    assert {shape for _, _, shape in runs} == {WARM_UP_PHOTO.shape}
    assert ticks >= 5, "the event loop was blocked during the warm-up"


async def test_with_warm_up_off_the_worker_pulls_at_once_and_the_first_job_builds_its_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENHANCER_WARM_UP=off (test stacks): nothing is built or run before the first pull."""
    monkeypatch.setenv("ENHANCER_WARM_UP", "off")
    assert EnhancerSettings.from_env().warm_up is False
    bus = Bus()
    w = worker(bus, ["bench-resize"], tmp_path, warm_up=False)
    await asyncio.wait_for(w.run(bus.stop), 30)
    assert w.warmed and w.engines == ["bench-resize"]
    assert bus.calls[-1][0] == "fetch" and all(slots == {0: []} for _, slots in bus.calls)  # built by a job instead
    assert isinstance(w._all_slots[0].engine("bench-resize"), BenchResizeEngine)


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_warm_up_setting_that_is_neither_on_nor_off_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENHANCER_WARM_UP", value)
    with pytest.raises(SettingsError, match="ENHANCER_WARM_UP must be on or off"):
        EnhancerSettings.from_env()


async def test_an_engine_that_fails_to_start_is_left_out_and_the_others_serve(
        model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Real-ESRGAN starts (weights converted from the shipped files); GFPGAN cannot (no GFPGANv1.4.pth):
    the worker offers upscaling alone, and says why."""
    bus = Bus()
    w = worker(bus, ["realesrgan", "gfpgan"], model_dir)
    with caplog.at_level(logging.INFO, logger="enhancer.worker"):
        assert await w.warm_up() == ["realesrgan"]
    assert w.engines == ["realesrgan"] and w.capabilities == [UPSCALE]
    slot = w._all_slots[0]
    assert list(slot._engines) == ["realesrgan"]
    real = slot._engines["realesrgan"]
    assert isinstance(real, RealESRGANEngine) and real._models  # its models loaded and run
    failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert "engine gfpgan failed to start on slot 0; it is left out" in failure.getMessage()
    assert "GFPGANv1.4.pth" in failure.getMessage()
    assert any("warmed up" in r.getMessage() and "realesrgan" in r.getMessage() for r in caplog.records)

    await asyncio.wait_for(w.run(bus.stop), 30)  # no second warm-up; pulls upscaling jobs only
    assert [what for what, _ in bus.calls] == [f"subscribe {subjects.jobs_consumer(UPSCALE)}", "fetch"]
    assert all(slots == {0: ["realesrgan"]} for _, slots in bus.calls)


async def test_a_worker_whose_engines_all_fail_does_not_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, rgb, opts):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(BenchResizeEngine, "warm_up", broken)
    bus = Bus()
    w = worker(bus, ["bench-resize"], tmp_path)
    with pytest.raises(EngineError, match="No engine could start: bench-resize: CUDA error"):
        await w.run(bus.stop)
    assert bus.calls == []  # never subscribed, never pulled


def test_the_warm_up_runs_each_model_once(model_dir: Path) -> None:
    """Real-ESRGAN: one job per model its quality levels run here (levels share a stand-in while their own
    weights are missing); GFPGAN: one, its models are its Real-ESRGAN's; the benchmark engine: one."""
    levels = quality_models(["realesrgan"], model_dir)
    jobs = warm_up_jobs("realesrgan", model_dir)
    assert sorted(levels[o.quality][0] for o in jobs) == sorted({model for model, _ in levels.values()})
    assert {o.quality for o in jobs} <= set(QUALITIES) and {o.scale for o in jobs} == {4}
    assert len(warm_up_jobs("gfpgan", model_dir)) == len(warm_up_jobs("bench-resize", model_dir)) == 1


async def test_the_benchmark_engines_simulated_job_time_is_not_spent_warming_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BENCH_ENGINE_DELAY stands for a model's time per job; a worker's start-up run is not a job."""
    monkeypatch.setenv("BENCH_ENGINE_DELAY", "60")
    slept: list[float] = []
    monkeypatch.setattr(bench_resize.time, "sleep", slept.append)
    w = worker(Bus(), ["bench-resize"], tmp_path)
    assert await w.warm_up() == ["bench-resize"]
    assert slept == []
    w._all_slots[0]._engines["bench-resize"].enhance(WARM_UP_PHOTO, EnhanceOptions(), lambda *a: None)
    assert slept == [60.0]  # a job does wait
