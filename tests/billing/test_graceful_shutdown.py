"""Billing stopped with SIGTERM under load: every request it was sent is answered or handed back
(none waits out its timeout), none is applied twice, and billing exits 0 within its drain timeout.

On a nats-server of its own, with its own edge and billing process. While orders are being created
through the edge (WeChat's prepay made slow, so several are in billing's hands) and reservations
are requested on the bus exactly as the edge sends them, billing gets SIGTERM:
- a request billing received is answered — the orders in hand get their prepay parameters;
- a request sent after it stopped listening gets "no responders" at once (the edge: 503 and
  ``Retry-After``), and sent again to the restarted billing, it is applied then, once;
- the ledger holds exactly the orders and reservations that were answered, one fact each;
- past ``BILLING_DRAIN_TIMEOUT`` a request still running is answered 503 and billing exits anyway.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats.errors
import pytest
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

import nats
from billing.endpoints import Endpoints, Route
from bus import subjects
from bus.billing import PayCreateRequest, UseReply, UseRequest
from bus.tasks import new_task_id
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import wait_until
from .support import BillingStack, running_billing, sign_in
from .wechat_standin import WeChatStandIn

pytestmark = pytest.mark.timeout(300)

#: How long the bus-level callers wait for an answer: a lost request shows up as a timeout.
ASK_TIMEOUT = 10.0
#: Callers reserving back to back on the bus, as many edges' uploads would.
RESERVERS = 40


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def own_billing(own_nats: EmbeddedNats, s3_server: EmbeddedS3, wechat: WeChatStandIn, model_dir: Path,
                tmp_path: Path) -> Iterator[BillingStack]:
    try:
        with running_billing(own_nats, s3_server, wechat, model_dir, tmp_path / "stack") as bs:
            yield bs
    finally:
        wechat.prepay_delay = 0.0  # the stand-in is the session's


async def ask(nc: Client, subject: str, message: UseRequest | PayCreateRequest) -> tuple[str, bytes]:
    """A request as the edge sends it: ('ok', data), ('refused', code), ('no responders', b'') or
    ('timeout', b'')."""
    try:
        msg = await nc.request(subject, message.encode(), timeout=ASK_TIMEOUT,
                               headers={subjects.TYPE_HEADER: message.TYPE})
    except nats.errors.NoRespondersError:
        return "no responders", b""
    except nats.errors.TimeoutError:
        return "timeout", b""
    if ERROR_CODE_HEADER in (msg.headers or {}):
        assert msg.headers is not None
        return "refused", f"{msg.headers[ERROR_CODE_HEADER]} {msg.headers.get(ERROR_HEADER)}".encode()
    return "ok", msg.data


def ledger(bs: BillingStack, sql: str) -> list[tuple]:
    with sqlite3.connect(bs.db_path) as db:
        return db.execute(sql).fetchall()


def reservation_facts(bs: BillingStack) -> Counter[str]:
    """``use_reserved`` facts in the ledger, per task."""
    rows = ledger(bs, "SELECT id FROM facts WHERE type = 'pe.v1.billing.use_reserved'")
    return Counter(fact_id.split(":", 1)[1] for (fact_id,) in rows)


def buy_unlimited(bs: BillingStack, wechat: WeChatStandIn, auth: dict[str, str]) -> None:
    r = httpx.post(f"{bs.url}/api/wechat/pay/create", json={"product": "unlimited"}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    no = r.json()["data"]["out_trade_no"]
    assert wechat.post_notify(bs.notify_url, wechat.pay(no)).status_code == 204


async def test_sigterm_under_load_answers_or_hands_back_every_request(own_billing: BillingStack,
                                                                      wechat: WeChatStandIn) -> None:
    bs = own_billing
    _, auth = sign_in(bs, wechat)
    await asyncio.to_thread(buy_unlimited, bs, wechat, auth)
    token = auth["Authorization"]
    server = bs.stack.nats
    nc = await nats.connect(**server.connect_options("edge"))
    wechat.prepay_delay = 1.0  # a slow WeChat: each order holds a billing request for a second
    outcomes: Counter[str] = Counter()
    reserved: dict[str, str] = {}  # task_id → outcome of its first request
    requests: dict[str, UseRequest] = {}
    orders: dict[str, int] = {}  # out_trade_no (answered 200) → 1; refusals counted in http_codes
    http_codes: Counter[int] = Counter()
    try:
        async def reserver(n: int) -> None:
            """Reserve for new tasks back to back until billing hands a request back."""
            while True:
                task_id = new_task_id()
                req = UseRequest(token=token if n % 2 else "", task_id=task_id, client=f"visitor-{n}")
                requests[task_id] = req
                outcome, data = await ask(nc, subjects.BILLING_USE_RESERVE, req)
                outcomes[outcome] += 1
                reserved[task_id] = outcome
                if outcome != "ok":
                    return
                assert UseReply.decode(data).task_id == task_id

        async def buyer() -> None:
            """Create orders one after the other through the edge until it answers 503."""
            async with httpx.AsyncClient(base_url=bs.url, timeout=30, headers=auth) as http:
                while True:
                    r = await http.post("/api/wechat/pay/create", json={"product": "basic"})
                    http_codes[r.status_code] += 1
                    if r.status_code != 200:
                        assert r.status_code == 503 and r.headers.get("retry-after"), (r.status_code, r.text)
                        return
                    orders[r.json()["data"]["out_trade_no"]] = 1

        load = [asyncio.create_task(reserver(n)) for n in range(RESERVERS)]
        load += [asyncio.create_task(buyer()) for _ in range(4)]

        # SIGTERM once the load is going and several orders are in billing's hands (waiting on WeChat).
        def busy() -> bool:
            return outcomes["ok"] >= 30 and len(wechat.calls) - calls_before >= 4

        calls_before = len(wechat.calls)
        await asyncio.to_thread(wait_until, busy, 60, "the load to get going")
        in_hand = len(wechat.calls) - calls_before - len(orders)
        assert bs.billing.proc is not None
        sent = time.monotonic()
        bs.billing.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(bs.billing.proc.wait, 60)
        exit_seconds = time.monotonic() - sent
        # Each caller goes on until a request of its own is handed back (or lost: a timeout).
        await asyncio.wait_for(asyncio.gather(*load), 40)  # the edge waits 25 s for billing

        log = bs.billing.log()
        print(f"\nbilling SIGTERM: {in_hand} order(s) in hand, exit {code} after {exit_seconds:.2f} s; "
              f"bus requests {dict(outcomes)}, HTTP pay/create {dict(http_codes)}")
        assert code == 0, log[-3000:]
        assert exit_seconds < 10, exit_seconds  # the orders in hand take ~1 s; the drain timeout is 20 s
        assert "billing stopped" in log and "Traceback" not in log, log[-3000:]
        assert "still running after" not in log

        # Nothing lost: no request waited out its timeout; each was answered or handed back.
        assert outcomes["timeout"] == 0, outcomes
        assert set(outcomes) <= {"ok", "no responders"}, outcomes
        assert set(http_codes) <= {200, 503} and http_codes[200] >= 4, http_codes

        # Nothing applied that was not answered, nothing twice: the ledger holds exactly the answered ones.
        ok = {t for t, o in reserved.items() if o == "ok"}
        handed_back = {t for t, o in reserved.items() if o == "no responders"}
        uses = [t for (t,) in ledger(bs, "SELECT task_id FROM uses WHERE status = 'reserved'")]
        assert sorted(uses) == sorted(ok)
        facts = reservation_facts(bs)
        assert set(facts) == ok and set(facts.values()) == {1}
        created = {no for (no,) in ledger(bs, "SELECT out_trade_no FROM orders WHERE product = 'basic'")}
        assert created == set(orders)
        prepaid = {no for (no,) in ledger(bs, "SELECT out_trade_no FROM orders WHERE prepay_id IS NOT NULL "
                                               "AND product = 'basic'")}
        assert prepaid == set(orders)  # every order in hand at SIGTERM was finished, not abandoned

        # The restarted billing takes the handed-back requests, once; a repeat of an answered one changes nothing.
        wechat.prepay_delay = 0.0
        await asyncio.to_thread(bs.start_billing)
        for task_id in sorted(handed_back)[:5] + sorted(ok)[:5]:  # the edge's retry: the same request
            outcome, data = await ask(nc, subjects.BILLING_USE_RESERVE, requests[task_id])
            assert outcome == "ok" and UseReply.decode(data).status == "reserved", (outcome, data)
        facts_after = reservation_facts(bs)
        assert set(facts_after.values()) == {1}
        assert len(facts_after) == len(facts) + len(sorted(handed_back)[:5])
    finally:
        await nc.close()


async def test_a_request_past_the_drain_timeout_is_answered_503(own_billing: BillingStack,
                                                                wechat: WeChatStandIn) -> None:
    bs = own_billing
    _, auth = sign_in(bs, wechat)
    bs.stop_billing()
    bs.billing.env["BILLING_DRAIN_TIMEOUT"] = "1"
    await asyncio.to_thread(bs.start_billing)
    server = bs.stack.nats
    nc = await nats.connect(**server.connect_options("edge"))
    wechat.prepay_delay = 5.0  # longer than the drain timeout
    try:
        calls = len(wechat.calls)
        pending = asyncio.create_task(ask(nc, subjects.BILLING_PAY_CREATE,
                                          PayCreateRequest(token=auth["Authorization"], product="basic")))
        await asyncio.to_thread(wait_until, lambda: len(wechat.calls) > calls, 30, "the prepay to reach WeChat")
        assert bs.billing.proc is not None
        sent = time.monotonic()
        bs.billing.proc.send_signal(signal.SIGTERM)
        outcome, data = await asyncio.wait_for(pending, ASK_TIMEOUT)
        answered = time.monotonic() - sent
        code = await asyncio.to_thread(bs.billing.proc.wait, 30)
        exited = time.monotonic() - sent
        print(f"\ndrain timeout 1 s: answered {outcome} {data!r} after {answered:.2f} s, exit {code} after "
              f"{exited:.2f} s")
        assert (outcome, data) == ("refused", b"503 Billing is restarting; please try again in a moment.")
        assert 0.9 < answered < 3 and exited < 5 and code == 0
        assert "1 billing request(s) still running after 1 s" in bs.billing.log()
    finally:
        await nc.close()
        wechat.prepay_delay = 0.0


async def echo(req: UseRequest) -> UseReply:
    """Stands in for ``Uses.reserve``: reserves whatever it is asked for."""
    return UseReply(openid="oEcho", task_id=req.task_id, use="free", status="reserved")


async def test_stop_answers_the_requests_already_on_their_way(own_nats: EmbeddedNats) -> None:
    """The race that ``nats.micro``'s own ``stop()`` loses: requests the server has already sent to billing
    (here: sitting in its socket while its event loop is busy) are answered, not dropped."""
    billing_nc = await nats.connect(**own_nats.connect_options("billing"))
    edge_nc = await nats.connect(**own_nats.connect_options("edge"))
    try:
        endpoints = Endpoints(billing_nc, {subjects.BILLING_USE_RESERVE: Route("use_reserve", UseRequest, echo)})
        await endpoints.start()
        asks = [asyncio.create_task(ask(edge_nc, subjects.BILLING_USE_RESERVE,
                                        UseRequest(token="", task_id=f"t{i}", client="c"))) for i in range(50)]
        await asyncio.sleep(0)  # the requests are written
        await edge_nc.flush()  # and the server has them: it sends them on to billing
        time.sleep(0.3)  # noqa: ASYNC251 - on purpose: billing's loop is busy, they wait in its socket
        await endpoints.stop(timeout=5)
        outcomes = Counter(outcome for outcome, _ in await asyncio.gather(*asks))
        assert outcomes == {"ok": 50}, outcomes
    finally:
        await edge_nc.close()
        await billing_nc.close()
