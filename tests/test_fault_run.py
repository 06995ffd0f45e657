"""The combined fault run: real clients keep submitting real photos while the edge is restarted
(SIGTERM, start), an enhancer is killed mid-job (SIGKILL, start) and billing is restarted (SIGTERM,
start) — and afterwards nothing accepted is lost, nothing is done twice, and the credits add up.

On servers of its own (a nats-server, an S3 server, the WeChat stand-in), an edge, billing and two
enhancers, each a separate process with its own credentials. The clients behave like real ones:
signed-in mini-program users who bought credits, and anonymous web visitors, each uploading a photo
(``quality_level=fast``) and polling it until it is done; they retry on connection errors (the edge
restarting) and on 503/429 after the ``Retry-After`` the edge sends. Each fault is injected once
enough work has gone through since the previous one, while tasks are in flight.

At the end:
- every task the service accepted (200 with a ``task_id``) is ``completed``, or ``failed`` with a
  sentence in ``error`` (lost = 0); every task record on the bus is one a client was given (no
  task was accepted twice behind a client's back) and is finished;
- each completed task has exactly one ``completed`` fact on ``PE_EVENTS``, a failed one none;
- billing charged exactly the signed-in users' completed tasks (one use each: the day's free use,
  then credits), nothing for a failed task, holds nothing, and its ledger saw every fact.

The figures (inputs tried, faults injected, tasks accepted/completed/failed/lost) are printed and
written to ``fault-run.json`` in the test's directory. Measured on the 2-core development machine
(everything on it, CPU inference): see ``docs/security.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

import nats
from bus import subjects
from bus.schemas import COMPLETED, FAILED, TaskState
from bus.tasks import is_task_id
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from .billing.support import FREE_DAILY, BillingStack, running_billing
from .billing.wechat_standin import WeChatStandIn
from .support import completed_facts, encode, photo, wait_until

log = logging.getLogger(__name__)

pytestmark = pytest.mark.timeout(420)

FAST = {"quality_level": "fast", "scale": "2", "tile_size": "0"}
SIGNED_IN, ANONYMOUS = 3, 3
#: Completed tasks to wait for before each fault, and after the last one.
BETWEEN_FAULTS = 5
#: Credits each signed-in user buys (the premium package).
CREDITS = 100


@dataclass
class Figures:
    inputs_tried: int = 0  # distinct uploads (each retried until the service answered)
    requests: int = 0  # POST /api/v1/enhance requests sent, retries included
    answers: Counter[str] = field(default_factory=Counter)  # status of every enhance answer, or the error
    connection_errors: int = 0  # any request (status polls included) that met a closed or refused connection
    faults: list[str] = field(default_factory=list)
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    redelivered: int = 0  # completed tasks that took more than one attempt (the SIGKILLed worker's)
    charged: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        return json.dumps({**asdict(self), "answers": dict(self.answers)}, indent=1)


@dataclass
class Run:
    bs: BillingStack
    nc: Client
    figures: Figures = field(default_factory=Figures)
    #: task_id → (client name, openid or None for a visitor)
    tasks: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return self.bs.url

    def done_count(self) -> int:
        return sum(1 for s in self.finished.values() if s["status"] == COMPLETED)

    async def wait_done(self, count: int, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.done_count() < count:
            assert time.monotonic() < deadline, f"timed out waiting for {what} ({self.done_count()} done)"
            await asyncio.sleep(0.05)


@pytest.fixture
def fault_stack(tmp_path: Path, model_dir: Path) -> Iterator[tuple[BillingStack, WeChatStandIn]]:
    """Servers, an edge, billing and two enhancers of its own: this test breaks them on purpose."""
    wechat = WeChatStandIn().start()
    started = time.monotonic()
    try:
        with EmbeddedNats(tmp_path / "nats") as nats_server, EmbeddedS3(tmp_path / "s3") as s3, \
                running_billing(nats_server, s3, wechat, model_dir, tmp_path / "stack") as bs:
            bs.stack.start_enhancer("enhancer-1")
            bs.stack.start_enhancer("enhancer-2")
            print(f"\nfault run: servers and services started in {time.monotonic() - started:.1f} s")
            yield bs, wechat
    finally:
        wechat.stop()


# --- clients ----------------------------------------------------------------------------------------
async def request(http: httpx.AsyncClient, method: str, url: str, run: Run, *, counted: bool = False,
                  **kwargs: Any) -> httpx.Response:
    """One request as a real client makes it: again after a connection error (the edge restarting, a
    short pause), and again after 503/429 once the ``Retry-After`` it was given has passed."""
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"{method} {url}: no answer for 120 s"
        if counted:
            run.figures.requests += 1
        try:
            r = await http.request(method, url, **kwargs)
        except httpx.TransportError as e:
            run.figures.connection_errors += 1
            if counted:
                run.figures.answers[type(e).__name__] += 1
            await asyncio.sleep(0.25)
            continue
        if counted:
            run.figures.answers[str(r.status_code)] += 1
        if r.status_code in (429, 503) or (r.status_code == 409 and "retry-after" in r.headers):
            after = r.headers.get("retry-after")
            assert after and after.isdigit(), f"{r.status_code} without Retry-After: {r.text}"
            await asyncio.sleep(int(after))
            continue
        return r


def inputs(seed: int) -> Iterator[tuple[str, bytes]]:
    """Small real photos, a different crop and size each time."""
    rng = random.Random(seed)
    names = ("chelsea", "coffee", "astronaut", "rocket")
    i = 0
    while True:
        name = names[rng.randrange(len(names))]
        w, h = rng.randrange(24, 72), rng.randrange(24, 72)
        yield f"{name}-{seed}-{i}.jpg", encode(photo(name, size=(w, h)), quality=90)
        i += 1


async def client(run: Run, name: str, seed: int, auth: dict[str, str], openid: str | None) -> None:
    """Upload, follow the task to its end, upload the next one; until the run stops."""
    async with httpx.AsyncClient(base_url=run.url, timeout=30, headers=auth) as http:
        for filename, data in inputs(seed):
            if run.stop.is_set():
                return
            run.figures.inputs_tried += 1
            # One key per photo, sent again with every retry: a retry after a lost answer gets the same task.
            r = await request(http, "POST", "/api/v1/enhance", run, counted=True, data=FAST,
                              files={"file": (filename, data, "image/jpeg")},
                              headers={"Idempotency-Key": uuid.uuid4().hex})
            assert r.status_code == 200, f"{name}: {r.status_code} {r.text}"
            task_id = r.json()["task_id"]
            run.tasks[task_id] = (name, openid)
            while True:
                status = await request(http, "GET", f"/api/v1/status/{task_id}", run)
                assert status.status_code == 200, status.text
                body = status.json()
                if body["status"] in (COMPLETED, FAILED):
                    run.finished[task_id] = body
                    break
                await asyncio.sleep(0.1)


# --- faults -----------------------------------------------------------------------------------------
async def in_flight_on(run: Run, worker: str, timeout: float = 60) -> str:
    """A task that ``worker`` is processing right now (read from its record on the bus)."""
    kv = await run.nc.jetstream().key_value(subjects.TASKS_BUCKET)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task_id in [t for t in run.tasks if t not in run.finished]:
            try:
                state = TaskState.decode((await kv.get(task_id)).value)
            except Exception:
                continue
            if state.status == "processing" and state.worker == worker:
                return task_id
        await asyncio.sleep(0.02)
    raise AssertionError(f"{worker} was never seen processing a task")


async def faults(run: Run) -> None:
    stack, done = run.bs.stack, 0

    async def progress(what: str) -> None:
        nonlocal done
        done = run.done_count() + BETWEEN_FAULTS
        await run.wait_done(done, what)

    try:
        await progress("the load to get going")

        # 1. The edge: SIGTERM (uvicorn answers what it holds, then exits), then a fresh process.
        # uvicorn re-raises the signal once it has shut down, so the exit status is -SIGTERM, not 0.
        assert stack.edge is not None
        code = await asyncio.to_thread(stack.edge.stop)
        assert code in (0, -signal.SIGTERM), stack.edge.log()[-3000:]
        assert stack.edge.proc is not None
        assert f"Finished server process [{stack.edge.proc.pid}]" in stack.edge.log(), stack.edge.log()[-3000:]
        await asyncio.to_thread(stack.start_edge)
        run.figures.faults.append("edge: SIGTERM, then started again")
        await progress("work after the edge restart")

        # 2. An enhancer: SIGKILL while it holds a job; its job is redelivered after TASK_ACK_WAIT.
        victim = stack.enhancers[0]
        held = await in_flight_on(run, "enhancer-1")
        await asyncio.to_thread(victim.kill)
        stack.enhancers.remove(victim)
        run.figures.faults.append(f"enhancer-1: SIGKILL while processing {held[:8]}, then started again")
        await asyncio.to_thread(stack.start_enhancer, "enhancer-1")
        await progress("work after the enhancer restart")

        # 3. Billing: SIGTERM (answers what it holds, drains, exits 0), then started on the same ledger.
        await asyncio.to_thread(run.bs.stop_billing)
        await asyncio.to_thread(run.bs.start_billing)
        run.figures.faults.append("billing: SIGTERM, then started again")
        await progress("work after the billing restart")
    finally:
        run.stop.set()


# --- set-up -----------------------------------------------------------------------------------------
def signed_in_user(bs: BillingStack, wechat: WeChatStandIn, n: int) -> tuple[str, dict[str, str]]:
    """A mini-program user who signed in and bought the premium package (paid, notify delivered)."""
    openid = f"oFaultRun{n}{int(time.time() * 1000) % 10**8}"
    r = httpx.post(f"{bs.url}/api/wechat/auth/openid", json={"code": wechat.login_code(openid)}, timeout=30)
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['data']['token']}"}
    r = httpx.post(f"{bs.url}/api/wechat/pay/create", json={"product": "premium"}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    no = r.json()["data"]["out_trade_no"]
    assert wechat.post_notify(bs.notify_url, wechat.pay(no)).status_code == 204
    return openid, auth


def account(bs: BillingStack, auth: dict[str, str]) -> dict[str, Any]:
    r = httpx.get(f"{bs.url}/api/wechat/account", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def bus_records(nc: Client) -> dict[str, TaskState]:
    kv = await nc.jetstream().key_value(subjects.TASKS_BUCKET)
    try:
        keys = await kv.keys()
    except Exception:  # no keys at all
        return {}
    return {k: TaskState.decode((await kv.get(k)).value) for k in keys if is_task_id(k)}


async def failed_facts(nc: Client) -> Counter[str]:
    """'failed' facts per task on PE_EVENTS (read like ``completed_facts``)."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from bus.schemas import TaskEvent

    sub = await nc.jetstream().subscribe(subjects.task_event(FAILED), stream=subjects.EVENTS_STREAM,
                                         config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                                         ordered_consumer=True)
    counts: Counter[str] = Counter()
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                return counts
            counts[TaskEvent.decode(msg.data).task_id] += 1
    finally:
        await sub.unsubscribe()


# --- the run ----------------------------------------------------------------------------------------
async def test_fault_run_loses_nothing_and_charges_exactly(fault_stack: tuple[BillingStack, WeChatStandIn],
                                                          tmp_path: Path) -> None:
    bs, wechat = fault_stack
    users = [await asyncio.to_thread(signed_in_user, bs, wechat, n) for n in range(SIGNED_IN)]
    for _, auth in users:
        assert account(bs, auth)["credits"] == CREDITS
    server = bs.stack.nats
    nc = await nats.connect(**server.connect_options("admin"))
    run = Run(bs=bs, nc=nc)
    started = time.monotonic()

    try:
        clients = [client(run, f"user-{i}", i, auth, openid) for i, (openid, auth) in enumerate(users)]
        clients += [client(run, f"visitor-{i}", 100 + i, {}, None) for i in range(ANONYMOUS)]
        results = await asyncio.gather(faults(run), *clients, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        fig = run.figures
        fig.seconds = round(time.monotonic() - started, 1)

        # Nothing accepted is lost: every task finished, a failure says why in a sentence.
        fig.accepted = len(run.tasks)
        fig.completed = sum(1 for s in run.finished.values() if s["status"] == COMPLETED)
        fig.failed = sum(1 for s in run.finished.values() if s["status"] == FAILED)
        fig.lost = fig.accepted - fig.completed - fig.failed
        fig.redelivered = sum(1 for s in run.finished.values() if s["status"] == COMPLETED and s["attempts"] > 1)
        bad = {t: s["error"] for t, s in run.finished.items() if s["status"] == FAILED
               and not (s["error"] and len(s["error"]) > 20 and s["error"].rstrip().endswith("."))}
        assert not bad, f"failed without a clear reason: {bad}"
        records = await bus_records(nc)
        assert set(records) == set(run.tasks), {"unknown to any client": set(records) - set(run.tasks),
                                                "missing": set(run.tasks) - set(records)}
        assert all(r.status in (COMPLETED, FAILED) for r in records.values())

        # Done once: one 'completed' fact per completed task, none for a failed one.
        completed = {t for t, s in run.finished.items() if s["status"] == COMPLETED}
        facts = await completed_facts(nc)
        assert {t: facts.get(t, 0) for t in run.tasks} == {t: int(t in completed) for t in run.tasks}
        failures = await failed_facts(nc)
        assert all(failures[t] == (t not in completed) for t in run.tasks), failures

        # The credits add up: a signed-in user's completed tasks are charged, one use each, nothing else.
        def settled() -> bool:
            views = [account(bs, auth) for _, auth in users]
            return all(v["credits_reserved"] == 0 for v in views) and sum(len(v["uses"]) for v in views) == \
                sum(1 for t in completed if run.tasks[t][1] is not None)

        await asyncio.to_thread(wait_until, settled, 60, "billing to settle every signed-in task")
        for openid, auth in users:
            view = account(bs, auth)
            mine = {t for t in completed if run.tasks[t][1] == openid}
            assert {u["task_id"] for u in view["uses"]} == mine, openid
            credit_uses = sum(1 for u in view["uses"] if u["use"] == "credit")
            assert credit_uses == len(mine) - min(FREE_DAILY, len(mine))
            assert view["credits"] == CREDITS - credit_uses, view
            fig.charged += len(mine)
        with sqlite3.connect(bs.db_path) as db:
            ledger_done = dict(db.execute("SELECT kind, COUNT(*) FROM task_events GROUP BY kind").fetchall())
            charged_failed = db.execute("SELECT COUNT(*) FROM uses u JOIN task_events e ON e.task_id = u.task_id "
                                        "AND e.kind = ? WHERE u.status = 'charged'", (FAILED,)).fetchone()[0]
        assert ledger_done.get(COMPLETED, 0) == len(completed) and ledger_done.get(FAILED, 0) == fig.failed
        assert charged_failed == 0

        assert len(fig.faults) == 3 and fig.lost == 0
        assert bs.billing.alive and bs.stack.edge is not None and bs.stack.edge.alive
        assert all(p.alive for p in bs.stack.enhancers)
        print(f"\nfault run figures:\n{fig.table()}")
        log.warning("fault run figures: %s", fig.table())
        (tmp_path / "fault-run.json").write_text(fig.table())
    finally:
        await nc.close()
