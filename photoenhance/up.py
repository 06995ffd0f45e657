"""``photoenhance up``: the whole service on one machine, on embedded defaults.

First fetches the model weights the model folder lacks (``enhancer.weights.ensure``: with a progress bar,
resumable, SHA-256 checked; at once when they are all there; a few seconds offline, then it says what is missing;
``MODELS_FETCH=off`` never downloads). Then starts a real ``nats-server`` (JetStream) and a real S3 server as
child processes unless ``NATS_URL`` / ``S3_ENDPOINT`` point elsewhere, then the edge, one enhancer and billing as
separate processes, each connecting with its own credentials. Ctrl-C (or SIGTERM) stops the
services first — the enhancer finishes the job it holds — then the servers.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from enhancer.weights import ENSURED_ENV

from .bootstrap import BootstrapError, run_bootstrap
from .credentials import save_endpoints
from .identity import Identity
from .servers import EmbeddedNats, EmbeddedS3, ServerError
from .stack import ServiceProcess, stop_all, wait_until

SERVICES = ("edge", "enhancer", "billing")


#: The credential of the enhancer that ``up`` runs (others join with ``photoenhance credentials create``).
LOCAL_ENHANCER = "local-enhancer"


def _service_env(nats: EmbeddedNats | None, s3: EmbeddedS3 | None, role: str, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    if nats is not None:
        name = LOCAL_ENHANCER if role == "enhancer" else role
        env.update(nats.env_for(name, role))
        if role == "enhancer":
            env.setdefault("ENHANCER_ID", LOCAL_ENHANCER)
    if role == "enhancer":
        env[ENSURED_ENV] = "1"  # `fetch_models` did it, and said what is missing: the enhancer need not again
    if s3 is not None:
        env.update(s3.env(role))
    env.setdefault("BILLING_DB", str(data_dir / "billing.sqlite3"))
    # On one's own machine the visitor is the owner: no daily quota unless asked for.
    env.setdefault("BILLING_ANONYMOUS_DAILY", "0")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_healthy(url: str, procs: list[ServiceProcess], timeout: float = 300) -> None:
    """Until the edge reports every part healthy, an enhancer included (loading torch takes a while)."""
    def healthy() -> bool:
        for p in procs:
            if not p.alive:
                raise ServerError(f"{p.role} exited with code {p.proc.returncode if p.proc else '?'} while starting")
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r).get("status") == "healthy"

    try:
        wait_until(healthy, timeout, f"the service at {url} to be healthy", interval=0.3)
    except AssertionError as e:
        raise ServerError(str(e)) from None


def admin_token(data_dir: Path) -> str:
    """ADMIN_TOKEN from the environment, else one kept in ``<data>/admin-token`` (mode 0600), never printed."""
    if os.environ.get("ADMIN_TOKEN"):
        return os.environ["ADMIN_TOKEN"]
    path = data_dir / "admin-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def fetch_models() -> None:
    """The weights the enhancer will use, before it starts (it picks its engines from what is there)."""
    from enhancer import weights

    from .cli import model_dir_of

    try:
        weights.ensure(model_dir_of())
    except KeyboardInterrupt:
        print("\nmodel download skipped; the next start resumes it", flush=True)


def run_all(*, port: int, data_dir: Path, host: str = "127.0.0.1") -> int:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = admin_token(data_dir)
    fetch_models()  # before the signal handlers: Ctrl-C here skips the download instead of stopping
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs: list[ServiceProcess] = []
    with ExitStack() as stack:
        nats = s3 = None
        if not os.environ.get("NATS_URL"):
            nats = stack.enter_context(EmbeddedNats(data_dir / "nats", identity=Identity.open(data_dir / "identity")))
            print(f"nats-server (JetStream) on {nats.url}, monitoring {nats.monitor_url}", flush=True)
            save_endpoints(nats.identity, nats_url=nats.url)
        if not os.environ.get("S3_ENDPOINT"):
            s3 = stack.enter_context(EmbeddedS3(data_dir / "s3"))
            print(f"S3 server on {s3.endpoint} (bucket {s3.bucket})", flush=True)
            if nats is not None:
                save_endpoints(nats.identity, s3_endpoint=s3.endpoint)
        try:
            run_bootstrap(_service_env(nats, s3, "admin", data_dir))
            for name in SERVICES:
                env = _service_env(nats, s3, name, data_dir)
                if name == "edge":
                    env |= {"EDGE_PORT": str(port), "EDGE_HOST": host, "ADMIN_TOKEN": token}
                procs.append(ServiceProcess(name, env, cwd=Path.cwd()).start())
            url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
            print("starting the edge, an enhancer and billing…", flush=True)
            _wait_healthy(f"{url}/api/v1/health", procs)
            print(f"\nPhotoEnhanceAI is running: open {url}/  (API docs: {url}/docs). Ctrl-C stops it.\n"
                  f"Admin token (for `photoenhance servers`): in {data_dir / 'admin-token'}\n", flush=True)
            while not stop["now"]:
                for p in procs:
                    if not p.alive:
                        print(f"{p.role} exited with code {p.proc.returncode if p.proc else '?'}; stopping",
                              file=sys.stderr)
                        stop["now"] = True
                time.sleep(0.5)
        except (ServerError, BootstrapError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            print("stopping…", flush=True)
            stop_all(procs)
    return 0
