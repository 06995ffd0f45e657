"""Several enhancer processes from one ``photoenhance enhancer`` (``ENHANCER_PROCESSES``), for one GPU.

Why processes: one Python process keeps about four engine threads' worth of a GPU busy (the GIL); on an H200 three
processes of four slots did 10.3 photos/s where one did 6.45 (docs/performance.md). ``auto`` plans them from the
GPU's memory (``enhancer.slots``); on a CPU it is one, and the command is the worker itself, as before.

How: the memory is read in a short-lived process of its own (:func:`plan`), so that the supervisor never holds a
CUDA context (hundreds of megabytes of the card, for nothing). The supervisor then starts the workers, each a whole
enhancer with its slots fixed by the plan and an id of its own under the supervisor's (``<id>.<n>``: a credential
may write its own presence key and the keys under it). A worker that dies is started again, after a pause that
grows while it keeps dying; SIGTERM or SIGINT is passed on to every worker, which drains as it would alone, and
the supervisor leaves once they have.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bus.connection import REFUSED_EXIT

from . import weights
from .settings import EnhancerSettings

log = logging.getLogger(__name__)

#: A worker that ran this long before dying is started again at once; one that died sooner, after a pause that
#: doubles each time (1 s, 2 s, 4 s… at most :data:`LONGEST_PAUSE`).
STABLE_AFTER = 60.0
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0
#: Past the drain timeout, how long a worker has to leave before it is killed.
EXIT_GRACE = 30.0


def gpu_present(device: str) -> bool:
    """Whether ``ENHANCER_DEVICE`` may resolve to a GPU, from the device files alone (no CUDA call here)."""
    if device.startswith("cuda"):
        return True
    return device == "auto" and (Path("/dev/nvidiactl").exists() or any(Path("/dev").glob("nvidia[0-9]*")))


def plan(settings: EnhancerSettings) -> EnhancerSettings:
    """``settings`` with ``processes`` resolved (and ``concurrency``, where the GPU's memory decides it).

    Without a GPU, what was asked (``auto``: one); so too on a GPU when nothing is left to plan. Otherwise the plan
    comes from a short-lived process that loads torch, reads the GPU's memory and exits
    (``python -m enhancer.processes --plan``)."""
    asked, slots = settings.processes, settings.concurrency
    if not gpu_present(settings.device) or asked == 1 or (asked and slots):
        return replace(settings, processes=asked or 1)
    try:
        out = subprocess.run([sys.executable, "-m", "enhancer.processes", "--plan"], capture_output=True, text=True,
                             timeout=600, check=True, env={**os.environ, weights.ENSURED_ENV: "1"})
        planned = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        # One process then, which meets the same device on its own and says what is wrong with it, if anything.
        why = exc.stderr.strip().splitlines()[-1:] if isinstance(exc, subprocess.CalledProcessError) else [str(exc)]
        log.error("could not plan the enhancer processes (%s); running one", why[0] if why else exc)
        return replace(settings, processes=asked or 1)
    return replace(settings, processes=planned["processes"], concurrency=planned["concurrency"])


def _print_plan() -> None:
    from .engines import available_engines, pick_device

    settings = EnhancerSettings.from_env()
    device = pick_device(settings.device)
    engines = [settings.engine_override] if settings.engine_override else available_engines(settings.model_dir)
    resolved = settings.for_device(device, engines)
    print(json.dumps({"processes": resolved.processes, "concurrency": resolved.concurrency}))


@dataclass
class _Worker:
    """One worker process the supervisor keeps running."""

    worker_id: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    #: Before the next start, once it has died (0: at once).
    pause: float = 0.0
    restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "photoenhance", "enhancer"], env=self.env,
                                     stdin=subprocess.DEVNULL)
        self.started, self.restart_at = time.monotonic(), None
        log.info("enhancer %s started (pid %d)", self.worker_id, self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def supervise(settings: EnhancerSettings) -> int:
    """Run ``settings.processes`` workers of ``settings.concurrency`` slots until SIGTERM/SIGINT; 0 once they
    have drained and left. If the bus refuses their credential (one exits with :data:`REFUSED_EXIT`), the others
    are stopped too and the supervisor exits with that status."""
    count = settings.processes or 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    planned = {"ENHANCER_CONCURRENCY": str(settings.concurrency)} if settings.concurrency else {}
    workers = [_Worker(f"{settings.worker_id}.{n}", {
        **os.environ, **planned, "ENHANCER_ID": f"{settings.worker_id}.{n}", "ENHANCER_PROCESSES": "1",
        weights.ENSURED_ENV: "1"}) for n in range(1, count + 1)]
    log.info("running %d enhancer processes (slots each: %s)", count, settings.concurrency or "auto")
    for worker in workers:
        worker.start()
    refused = False
    while not stop.wait(0.2):
        now = time.monotonic()
        for worker in workers:
            if worker.alive:
                continue
            if worker.proc is not None and worker.proc.returncode == REFUSED_EXIT:
                # The bus refused the credential they all share: starting them again cannot help.
                log.error("enhancer %s: the bus refused this host's credential; stopping every process (a new "
                          "credential is an operator's to issue)", worker.worker_id)
                refused = True
                stop.set()
                break
            if worker.restart_at is None and worker.proc is not None:
                ran = now - worker.started
                worker.pause = 0.0 if ran >= STABLE_AFTER else min(max(2 * worker.pause, FIRST_PAUSE), LONGEST_PAUSE)
                worker.restart_at = now + worker.pause
                log.warning("enhancer %s exited with code %s after %.0f s; starting it again in %.0f s",
                            worker.worker_id, worker.proc.returncode, ran, worker.pause)
            elif worker.restart_at is not None and now >= worker.restart_at:
                worker.start()
    log.info("stopping %d enhancer processes (they finish the jobs they hold)", count)
    for worker in workers:
        if worker.alive and worker.proc is not None:
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.drain_timeout + EXIT_GRACE
    for worker in workers:
        if worker.proc is None:
            continue
        try:
            worker.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.error("enhancer %s did not leave in time; killing it", worker.worker_id)
            worker.proc.kill()
            worker.proc.wait()
    return REFUSED_EXIT if refused else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--plan"]:
        _print_plan()
    else:
        sys.exit("usage: python -m enhancer.processes --plan (photoenhance enhancer runs the processes)")
