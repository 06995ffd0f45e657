"""Local stacks of real servers and service processes, for tests and benchmarks.

A ``Stack`` is what ``photoenhance up`` runs, made controllable: the edge and each enhancer are
separate ``photoenhance <role>`` processes on top of embedded (or given) NATS and S3 servers, and
can be stopped, killed or restarted one by one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from enhancer.weights import ENSURED_ENV

from .bootstrap import run_bootstrap
from .servers import EmbeddedNats, EmbeddedS3, free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" +
                         (f" (last error: {last_error!r})" if last_error else ""))


def stop_all(processes: list[ServiceProcess], timeout: float = 60) -> None:
    """SIGTERM every process at once (each drains in parallel), then wait for all of them."""
    for p in processes:
        if p.alive:
            assert p.proc is not None
            p.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        if p.proc is not None:
            p.wait(max(0.1, deadline - time.monotonic()))


@dataclass
class ServiceProcess:
    """One ``photoenhance <role>`` process with its own credentials; its output goes to ``log_path``, or
    to the parent's terminal when there is none (``photoenhance up``)."""

    role: str
    env: dict[str, str]
    log_path: Path | None = None
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        args = [sys.executable, "-m", "photoenhance", self.role]
        if self.log_path is None:
            self.proc = subprocess.Popen(args, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if not self.alive:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        """The exit code, killing the process if it is not gone within ``timeout`` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Stack:
    """Real NATS + real S3 + service processes, as ``photoenhance up`` runs them."""

    nats: EmbeddedNats
    s3: EmbeddedS3
    root: Path
    model_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    edge: ServiceProcess | None = None
    edge_port: int = 0
    enhancers: list[ServiceProcess] = field(default_factory=list)

    def env(self, role: str, name: str | None = None, **extra: str) -> dict[str, str]:
        """Settings of a ``role`` process connecting with credential ``name`` (the role's own by default)."""
        return {**self.nats.env_for(name or role, role), **self.s3.env(role), "MODEL_DIR": str(self.model_dir),
                # The caller prepares the model folder (tests, benchmarks): its enhancers never fetch weights.
                "LOG_LEVEL": "INFO", ENSURED_ENV: "1", **self.extra_env, **extra}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    def bootstrap(self, **extra: str) -> None:
        """What ``photoenhance up`` and compose run before the services: streams, consumers, buckets (admin)."""
        run_bootstrap(self.env("admin", **extra))

    def start_edge(self, **extra: str) -> ServiceProcess:
        self.edge_port = self.edge_port or free_port()
        self.bootstrap(**extra)
        env = self.env("edge", EDGE_PORT=str(self.edge_port), **extra)
        self.edge = ServiceProcess("edge", env, self.root / "logs" / "edge.log").start()

        def ready() -> bool:
            assert self.edge and self.edge.alive, f"edge exited:\n{self.edge.log()[-3000:]}"
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code in (200, 503)

        wait_until(ready, 60, "the edge to answer")
        return self.edge

    def start_enhancer(self, name: str | None = None, *, timeout: float = 90, **extra: str) -> ServiceProcess:
        """Start an enhancer and wait (up to ``timeout`` seconds: its warm-up and any model compile) until it is
        listed healthy."""
        name = name or f"enhancer-{len(self.enhancers) + 1}"
        proc = ServiceProcess("enhancer", self.env("enhancer", name, ENHANCER_ID=name, **extra),
                              self.root / "logs" / f"{name}.log").start()
        self.enhancers.append(proc)

        def listed() -> bool:
            assert proc.alive, f"{name} exited:\n{proc.log()[-3000:]}"
            # Its own id, or one of its processes' (ENHANCER_PROCESSES: <name>.1, <name>.2...).
            return any(status == "healthy" and (worker == name or worker.rpartition(".")[0] == name)
                       for worker, status in self.enhancer_statuses().items())

        wait_until(listed, timeout, f"{name} to join the bus")
        return proc

    def enhancer_statuses(self) -> dict[str, str]:
        """Each worker the edge's registry lists, by id, with its status (healthy, unhealthy, left)."""
        info = httpx.get(f"{self.url}/api/v1/info", timeout=10).json()
        return {e["id"]: e["status"] for e in info["enhancers"]}

    def permission_violations(self) -> list[str]:
        """Lines where a service was refused by the bus: its credential lacks something its code does."""
        logs = (self.root / "logs").glob("*.log")
        return [line for log in logs for line in log.read_text(errors="replace").splitlines()
                if "permissions violation" in line.lower()]

    def stop(self) -> None:
        stop_all([*self.enhancers, *([self.edge] if self.edge else [])])
