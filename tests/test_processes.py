"""One ``photoenhance enhancer`` runs several worker processes (``ENHANCER_PROCESSES``; ``auto`` on a GPU host),
restarts one that dies, and drains them all on SIGTERM: on its own stack's real bus.

The processes here run the benchmark engine on the CPU (forced: ``auto`` on a CPU is one process); what ``auto``
plans on a GPU is arithmetic, tested in tests/enhancer/test_slots.py.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from bus.connection import REFUSED_EXIT
from photoenhance.stack import ServiceProcess, wait_until

from .support import Stack, forged_creds


def workers_of(pid: int) -> set[int]:
    """The enhancer processes that ``pid`` started and that still run."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children if b"photoenhance\0enhancer" in _cmdline(int(c))}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def healthy(stack: Stack) -> set[str]:
    return {worker for worker, status in stack.enhancer_statuses().items() if status == "healthy"}


def statuses(stack: Stack, *ids: str) -> list[str | None]:
    listed = stack.enhancer_statuses()
    return [listed.get(i) for i in ids]


def test_one_command_runs_two_workers_restarts_one_that_dies_and_drains_both_on_sigterm(own_stack: Stack) -> None:
    env = own_stack.env("enhancer", "multi", ENHANCER_ID="multi", ENHANCER_PROCESSES="2",
                        ENHANCER_ENGINE="bench-resize", ENHANCER_DEVICE="cpu", ENHANCER_DRAIN_TIMEOUT="5")
    supervisor = ServiceProcess("enhancer", env, own_stack.root / "logs" / "multi.log").start()
    assert supervisor.proc is not None
    try:
        wait_until(lambda: {"multi.1", "multi.2"} <= healthy(own_stack), 90, "both workers to join the bus")
        first = workers_of(supervisor.proc.pid)
        assert len(first) == 2, supervisor.log()[-3000:]

        killed = min(first)
        [name] = re.findall(rf"enhancer (multi\.\d) started \(pid {killed}\)", supervisor.log())
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: len(workers_of(supervisor.proc.pid) - first) == 1, 60, "the dead worker to be started again")
        # Ready again: its log says so a second time (the registry may still list the dead one's last beat).
        wait_until(lambda: supervisor.log().count(f"enhancer {name} ready on") == 2, 90, f"{name} to be ready again")
        assert f"enhancer {name} exited with code -9" in supervisor.log() and "starting it again" in supervisor.log()
        now = workers_of(supervisor.proc.pid)

        assert supervisor.stop(signal.SIGTERM, timeout=60) == 0
        assert not any(_cmdline(pid) for pid in now), "a worker outlived its supervisor"
        # Each left the bus as a drained worker does (presence "left"), rather than going silent.
        wait_until(lambda: statuses(own_stack, "multi.1", "multi.2") == ["left", "left"], 30,
                   "both workers to leave the bus")
    finally:
        supervisor.kill()


def test_when_the_bus_refuses_the_credential_every_worker_stops_and_none_is_started_again(
        own_stack: Stack, tmp_path: Path) -> None:
    """A revoked (here: forged) credential is refused to every worker alike: restarting them would retry it
    forever, so the supervisor stops them all and exits with the status that says so."""
    env = own_stack.env("enhancer", "refused", ENHANCER_ID="refused", ENHANCER_PROCESSES="2",
                        ENHANCER_ENGINE="bench-resize", ENHANCER_DEVICE="cpu", ENHANCER_WARM_UP="off")
    env["NATS_CREDS"] = str(forged_creds(tmp_path))
    supervisor = ServiceProcess("enhancer", env, own_stack.root / "logs" / "refused.log").start()
    assert supervisor.proc is not None
    try:
        assert supervisor.proc.wait(60) == REFUSED_EXIT, supervisor.log()[-3000:]
        log = supervisor.log()
        assert "the bus refused this host's credential; stopping every process" in log
        assert "refused the credential of enhancer" in log and "starting it again" not in log
    finally:
        supervisor.kill()
