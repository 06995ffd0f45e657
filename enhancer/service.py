"""The enhancer process: a ``nats.micro`` service on the bus plus the job loop.

The micro service makes every worker visible (``nats micro ls|info enhancer``, with its engines and
capabilities in the metadata) and is how the edge tells at once whether any enhancer is there
(``$SRV.PING.enhancer``); it has no endpoints. The jobs arrive through the JetStream work queue (see
``worker.py`` for why), from the consumers of the capabilities this worker's engines have; its load and
counters are in its presence (``presence.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from contextlib import AsyncExitStack

import nats.errors
from nats.micro import add_service

from bus import __version__, connect, subjects, wait_for_resources
from bus.runtime import run_until_signal
from bus.storage import ObjectStore
from bus.tasks import TaskStore

from . import metrics, processes, weights
from .engines import available_engines, pick_device
from .engines.registry import capabilities_of, quality_models
from .presence import Presence
from .settings import EnhancerSettings
from .worker import Worker

log = logging.getLogger(__name__)


async def serve(settings: EnhancerSettings, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set, then drain: finish held jobs, take no new ones, leave the bus.
    Returns how many jobs were handed back unfinished (their engine threads may still be running)."""
    device = pick_device(settings.device)
    engines = [settings.engine_override] if settings.engine_override else available_engines(settings.model_dir)
    # "auto" concurrency (from the GPU's memory and what these engines need) and prefetch, now the device is known.
    settings = settings.for_device(device, engines)
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    metrics.serve(settings.metrics_port, settings.metrics_host)
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(settings.nats, f"enhancer {settings.worker_id}", stop=stop))
        kv = await wait_for_resources(nc.jetstream())
        store = ObjectStore(settings.s3)
        worker = Worker(settings, nc, TaskStore(kv), store, device=device, engines=engines)
        # Every slot loads its engines and runs them once before the worker is announced (presence, micro
        # service) or pulls a job: "healthy" means ready, and the first job is as quick as the next. An engine
        # that failed is left out of all that follows; none left fails the start (Worker.warm_up).
        engines = await worker.warm_up()
        js = nc.jetstream()
        presence = Presence(await js.key_value(subjects.ENHANCERS_BUCKET), worker_id=settings.worker_id,
                            heartbeat=settings.heartbeat, device=device, engines=engines,
                            capacity=settings.concurrency,
                            counters=lambda: (worker.counters.in_flight, worker.counters.done, worker.counters.failed),
                            model_dir=settings.model_dir, throughput=worker.throughput)
        service = await add_service(
            nc, name=subjects.ENHANCER_SERVICE, version=__version__,
            description=f"PhotoEnhanceAI enhancer ({', '.join(engines)})",
            metadata={"worker_id": settings.worker_id, "device": str(device), "engines": ",".join(engines),
                      "capabilities": ",".join(capabilities_of(engines)), "capacity": str(settings.concurrency)},
            queue_group=subjects.ENHANCER_QUEUE,
        )
        levels = quality_models(engines, settings.model_dir)
        log.info("enhancer %s ready on %s with engines %s (%s)%s", settings.worker_id, device, engines,
                 ", ".join(worker.capabilities),
                 "; quality levels: " + ", ".join(f"{q} {m}{' (fallback)' * fb}" for q, (m, fb) in levels.items())
                 if levels else "")
        finished = asyncio.Event()
        beating = asyncio.create_task(presence.run(stop, finished))
        try:
            await worker.run(stop)
        finally:
            finished.set()
            await beating
            with contextlib.suppress(nats.errors.ConnectionClosedError):  # cut off by the server: nothing to stop
                await service.stop()
    return worker.handed_back


def main() -> None:
    """Entry point of ``photoenhance enhancer``: SIGTERM/SIGINT drain and exit.

    First the weights: the enhancer picks its engines from what is in ``MODEL_DIR``, so what it lacks is fetched
    before it joins the bus (``weights.ensure``: at once when all is there, a few seconds offline; ``MODELS_FETCH=off``
    never downloads), on a GPU host of its own or in compose. Skipped when whoever started it did that already
    (``photoenhance up``, the test and benchmark stacks: ``weights.ENSURED_ENV``).
    """
    settings = EnhancerSettings.from_env()
    if not os.environ.get(weights.ENSURED_ENV):
        weights.ensure(settings.model_dir)
    # Several processes on a GPU (ENHANCER_PROCESSES): this one then only supervises them (enhancer.processes).
    settings = processes.plan(settings)
    if (settings.processes or 1) > 1:
        sys.exit(processes.supervise(settings))
    leave(run_until_signal(lambda stop: serve(settings, stop)))


def leave(code: int = 0) -> None:
    """Exit at once with ``code``: drained and off the bus, the process has nothing left to tear down. The
    interpreter's own teardown takes most of a second with PyTorch loaded, and would wait for the thread of an
    engine still computing a handed-back job, which cannot be interrupted (that job is already back in the queue)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
