"""Enhancer settings, from the environment only."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bus.output_size import DEFAULT_MAX_OUTPUT_PIXELS
from bus.settings import NatsSettings, S3Settings, SettingsError, TaskSettings, env, env_float, env_int, env_switch

from . import slots
from .engines.registry import COMPILE_MODES, benchmark_engines

DEFAULT_MODEL_DIR = Path(os.path.expanduser("~/.cache/photoenhance/models"))


@dataclass(frozen=True)
class EnhancerSettings:
    nats: NatsSettings
    s3: S3Settings
    tasks: TaskSettings
    #: Where weights live (GFPGANv1.4.pth, RetinaFace) and where converted Real-ESRGAN weights are cached.
    model_dir: Path = DEFAULT_MODEL_DIR
    #: Jobs this worker runs at once; each has its own thread and models, but GFPGAN's network is shared (the faces
    #: of the photos the slots hold go through it together, ``engines.face_restorer``). None: "auto", which on CUDA is
    #: as many as the GPU's free memory holds, at most 4 (one Python process keeps about four engine threads'
    #: worth of GPU busy; ``enhancer.slots``), and 1 on CPU, where one job's model already uses every core.
    #: ``ENHANCER_CONCURRENCY=auto|N``.
    concurrency: int | None = None
    #: Enhancer processes that ``photoenhance enhancer`` runs (``enhancer.processes``: one supervisor restarts any that
    #: dies); each is a worker of ``concurrency`` slots. None: "auto", which on CUDA is as many as the GPU's memory
    #: holds at four slots each, at most three (``enhancer.slots``; one Python process keeps about four engine
    #: threads busy), and 1 on a CPU. ``ENHANCER_PROCESSES=auto|N``.
    processes: int | None = None
    #: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    #: Compile the networks (``enhancer.engines.compiled``): "auto" (CUDA: TensorRT when it imports, else
    #: torch.compile; a CPU: OpenVINO), "off", "torch", "tensorrt" or "openvino" (CPU only); eager PyTorch whenever
    #: compiling fails.
    #: ``ENHANCER_COMPILE``.
    compile: str = "auto"
    #: Load every engine and run it once before joining the bus (``Worker.warm_up``), so "healthy" means ready.
    #: ``ENHANCER_WARM_UP=off`` joins in about a second and lets each model's first job pay its loading (seconds):
    #: for stacks started and stopped all the time (the test suite starts dozens), never for serving people.
    warm_up: bool = True
    #: Largest input accepted, in pixels (the edge checks too; this protects the worker).
    max_input_pixels: int = 20_000_000
    #: Largest result made, in pixels (the edge's limit, when the job carries a smaller one, wins): a larger one
    #: is made at the largest scale that fits, by shrinking the photo before the engine (``bus.output_size``).
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS
    #: Most faces restored per photo (biggest first); bounds the work of a garbage detection.
    max_faces: int = 10
    #: Name shown in ``nats micro ls`` and the registry.
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    #: Seconds between "still working" signals to JetStream (must be well under ack_wait).
    keepalive: float = 0.0
    #: Seconds between presence heartbeats (the registry marks a worker unhealthy after 3 missed).
    heartbeat: float = 5.0
    #: Jobs each slot pulls, fetches and decodes while its engine is busy (0 or 1); None: "auto", which is 1 on
    #: CUDA and 0 on CPU (see ``worker.py`` for the trade-off). ``ENHANCER_PREFETCH=auto|0|1``.
    prefetch: int | None = None
    #: On SIGTERM, seconds to finish the jobs in hand; a job still running then is handed back to the
    #: queue (another worker takes it at once) and the process leaves without waiting for its engine.
    drain_timeout: float = 30.0
    #: Seconds one attempt at a job may take (its wait for the engine behind an earlier job not counted); past
    #: it the job is handed back to the queue, or failed on its last attempt. None: "auto", which is 600 on
    #: CUDA and 7200 on a CPU (a 20-megapixel ×4 job takes about 90 minutes on two cores): it bounds jobs that
    #: would otherwise be held forever, not legitimate ones. ``ENHANCER_JOB_DEADLINE=auto|seconds``.
    job_deadline: float | None = None
    #: Benchmarks only: run every job on this benchmark engine (``benchmark_only`` in the registry), whatever
    #: the job asks. ``ENHANCER_ENGINE``.
    engine_override: str | None = None
    #: Port of the Prometheus ``/metrics`` endpoint (0: off) and the address it binds.
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"

    def for_device(self, device: Any, engines: Iterable[str] = (), *,
                   memory: tuple[int, int] | None = None) -> EnhancerSettings:
        """These settings with every "auto" resolved for ``device`` (a ``torch.device``), for a worker running
        ``engines`` (none named: the largest); ``memory``: the GPU's (free, total) bytes, read when not given."""
        cuda = getattr(device, "type", str(device)) == "cuda"
        if cuda and (self.concurrency is None or self.processes is None):
            planned = slots.auto_plan(device, engines, memory, processes=self.processes)
            concurrency, processes = self.concurrency or planned.slots, self.processes or planned.processes
        else:
            concurrency, processes = self.concurrency or 1, self.processes or 1
        return replace(self, concurrency=concurrency, processes=processes,
                       prefetch=(1 if cuda else 0) if self.prefetch is None else self.prefetch,
                       job_deadline=self.job_deadline or (600.0 if cuda else 7200.0))

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise SettingsError("ENHANCER_CONCURRENCY must be auto or at least 1")
        if self.processes is not None and self.processes < 1:
            raise SettingsError("ENHANCER_PROCESSES must be auto or at least 1")
        if self.max_input_pixels < 1:
            raise SettingsError("MAX_INPUT_MEGAPIXELS must be positive")
        if self.max_output_pixels < 1:
            raise SettingsError("MAX_OUTPUT_MEGAPIXELS must be positive")
        if self.engine_override is not None and self.engine_override not in benchmark_engines():
            raise SettingsError(f"ENHANCER_ENGINE may only name a benchmark engine: {', '.join(benchmark_engines())}")
        if self.compile not in COMPILE_MODES:
            raise SettingsError(f"ENHANCER_COMPILE must be one of {', '.join(COMPILE_MODES)}")
        if self.prefetch not in (None, 0, 1):
            raise SettingsError("ENHANCER_PREFETCH must be auto, 0 or 1")
        if self.drain_timeout <= 0:
            raise SettingsError("ENHANCER_DRAIN_TIMEOUT must be positive")
        if self.job_deadline is not None and self.job_deadline <= 0:
            raise SettingsError("ENHANCER_JOB_DEADLINE must be auto or a positive number of seconds")
        if self.heartbeat <= 0:
            raise SettingsError("ENHANCER_HEARTBEAT must be positive")
        if self.keepalive <= 0:
            object.__setattr__(self, "keepalive", max(1.0, self.tasks.ack_wait / 3))

    @classmethod
    def from_env(cls) -> EnhancerSettings:
        nats = NatsSettings.from_env("enhancer")
        return cls(
            nats=nats,
            s3=S3Settings.from_env(),
            tasks=TaskSettings.from_env(),
            model_dir=Path(env("MODEL_DIR", str(DEFAULT_MODEL_DIR)) or DEFAULT_MODEL_DIR).expanduser(),
            concurrency=_auto_int("ENHANCER_CONCURRENCY"),
            processes=_auto_int("ENHANCER_PROCESSES"),
            device=env("ENHANCER_DEVICE", "auto") or "auto",
            compile=(env("ENHANCER_COMPILE", "auto") or "auto").strip().lower(),
            warm_up=env_switch("ENHANCER_WARM_UP", True),
            max_input_pixels=int(env_float("MAX_INPUT_MEGAPIXELS", 20.0) * 1_000_000),
            max_output_pixels=int(env_float("MAX_OUTPUT_MEGAPIXELS", DEFAULT_MAX_OUTPUT_PIXELS / 1e6) * 1_000_000),
            max_faces=env_int("ENHANCER_MAX_FACES", 10),
            worker_id=worker_id(env("ENHANCER_ID"), nats.credential_name),
            heartbeat=env_float("ENHANCER_HEARTBEAT", 5.0),
            prefetch=_auto_int("ENHANCER_PREFETCH"),
            drain_timeout=env_float("ENHANCER_DRAIN_TIMEOUT", 30.0),
            job_deadline=_auto_seconds("ENHANCER_JOB_DEADLINE"),
            engine_override=env("ENHANCER_ENGINE"),
            metrics_port=env_int("ENHANCER_METRICS_PORT", 0),
            metrics_host=env("ENHANCER_METRICS_HOST", "0.0.0.0") or "0.0.0.0",
        )


def worker_id(given: str | None, credential: str | None) -> str:
    """The worker's id, which is also its presence key: a credential may write only its own name's key (or
    keys under it, for replicas sharing one credential), so the id is the credential's name or under it."""
    own = given or f"{socket.gethostname()}-{os.getpid()}"
    if credential is None or own == credential or own.startswith(f"{credential}."):
        return own
    return f"{credential}.{own}"


def _auto_int(name: str) -> int | None:
    """``auto`` (or unset) is None, resolved once the device is known; otherwise a whole number."""
    text = (env(name, "auto") or "auto").strip().lower()
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be auto or a whole number, not {text[:20]!r}") from None


def _auto_seconds(name: str) -> float | None:
    """``auto`` (or unset) is None, resolved once the device is known; otherwise seconds."""
    text = (env(name, "auto") or "auto").strip().lower()
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{name} must be auto or a number of seconds, not {text[:20]!r}") from None
