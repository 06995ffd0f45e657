"""Presence: the enhancer announces itself, heartbeats, and says goodbye in the ``pe-enhancers`` bucket.

The heartbeat runs on the event loop while inference runs in threads, so a busy worker keeps
beating: the registry never mistakes busy for dead. It says what the worker can do in the bus's
capability words (from the engine registry), which is how the edge knows where a job can go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from nats.js.kv import KeyValue

from bus import __version__
from bus.schemas import ALIVE, DRAINING, JOINED, LEFT, EnhancerPresence

from .engines.registry import capabilities_of, models_of, quality_models
from .throughput import Throughput

log = logging.getLogger(__name__)


def describe_device(device: object) -> tuple[str, int]:
    """Human name and memory (bytes) of the device; CPUs report cores instead of a GPU model."""
    try:
        import torch

        if getattr(device, "type", "") == "cuda":
            props = torch.cuda.get_device_properties(device)
            return props.name, int(props.total_memory)
    except Exception as e:  # a broken driver must not keep the worker off the bus
        log.warning("cannot describe device %s: %s", device, e)
    return f"CPU ({os.cpu_count()} cores)", 0


class Presence:
    """Builds and publishes this worker's heartbeat."""

    def __init__(self, kv: KeyValue, *, worker_id: str, heartbeat: float, device: object, engines: list[str],
                 capacity: int, counters: Callable[[], tuple[int, int, int]], model_dir: Path | None = None,
                 throughput: Throughput | None = None) -> None:
        self.kv = kv
        self.worker_id = worker_id
        self.heartbeat = heartbeat
        self.device = device
        self.engines = engines
        self.models = models_of(engines)
        self.capabilities = capabilities_of(engines)
        self.capacity = capacity
        self.counters = counters
        #: Where its weights are: which model each quality level runs is read from there at every beat, so
        #: weights fetched while the worker runs show at once (the engine picks them up at the next job).
        self.model_dir = model_dir
        #: The worker's measured pace (``enhancer.throughput``), from which the edge estimates waiting times.
        self.throughput = throughput if throughput is not None else Throughput()
        self.started_at = time.time()
        self.device_name, self.device_memory = describe_device(device)

    def snapshot(self, state: str) -> EnhancerPresence:
        in_flight, done, failed = self.counters()
        levels = quality_models(self.engines, self.model_dir) if self.model_dir is not None else {}
        job_seconds, per_megapixel = self.throughput.published()
        return EnhancerPresence(
            worker_id=self.worker_id, state=state, at=time.time(), started_at=self.started_at,
            heartbeat=self.heartbeat, host=socket.gethostname(), version=__version__, device=str(self.device),
            device_name=self.device_name, device_memory=self.device_memory, engines=list(self.engines),
            models=dict(self.models), capabilities=list(self.capabilities),
            quality_models={q: model for q, (model, _) in levels.items()},
            fallback_levels=[q for q, (_, fallback) in levels.items() if fallback], capacity=self.capacity,
            in_flight=in_flight,
            jobs_done=done, jobs_failed=failed, job_seconds=job_seconds, seconds_per_megapixel=per_megapixel)

    async def publish(self, state: str) -> None:
        try:
            await self.kv.put(self.worker_id, self.snapshot(state).encode())
        except Exception as e:  # a missed beat is survivable; three are what the registry counts
            log.warning("heartbeat not published: %s", e)

    async def run(self, stop: asyncio.Event, finished: asyncio.Event) -> None:
        """Beat until the worker has finished draining; 'draining' once ``stop`` is set, then 'left'."""
        await self.publish(JOINED)
        while not finished.is_set():
            try:
                await asyncio.wait_for(finished.wait(), self.heartbeat)
            except TimeoutError:
                await self.publish(DRAINING if stop.is_set() else ALIVE)
        await self.publish(LEFT)
