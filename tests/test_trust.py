"""A stolen credential does its role's job and nothing else: each role's real credential, over TLS,
tries what an attacker would on the bus, and every attempt is refused with the streams unchanged.

(Forged facts that a role *may* publish are refused by billing: tests/billing/test_stolen_credentials.py;
S3: test_s3_scope.py; presigned uploads: test_presigned.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

import nats
from bus import connection, subjects
from bus.billing import FACTS
from bus.connection import CredentialRefused, StoppedWhileConnecting, connect
from bus.permissions import BILLING, EDGE, ENHANCER
from bus.settings import NatsSettings
from photoenhance import credentials
from photoenhance.servers import EmbeddedNats, connect_options, free_port

from .support import Stack, forged_creds

STREAMS = (subjects.JOBS_STREAM, subjects.EVENTS_STREAM, f"KV_{subjects.TASKS_BUCKET}",
           f"KV_{subjects.ENHANCERS_BUCKET}")
CONSUMERS = (*((subjects.JOBS_STREAM, c) for c in subjects.JOBS_CONSUMERS),
             (subjects.EVENTS_STREAM, subjects.LEDGER_CONSUMER))
#: Each role's credential as the services use it, and a GPU host's own (minted like the CLI does).
ROLES = {EDGE: "edge", BILLING: "billing", ENHANCER: "gpu-thief"}


class Attacker:
    """A connection with one stolen credential that records what the server refused."""

    def __init__(self, nc: Client, refused: list[str]) -> None:
        self.nc = nc
        self.refused = refused

    async def was_refused(self, what: str) -> None:
        """The server answered ``what`` with a permissions violation (it does so asynchronously)."""
        await self.nc.flush()
        for _ in range(100):
            if any(what.lower() in r.lower() for r in self.refused):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not refused: {what} (refusals: {self.refused})")


async def _attacker(server: EmbeddedNats, role: str) -> Attacker:
    refused: list[str] = []

    async def on_error(e: Exception) -> None:
        if "permissions violation" in str(e).lower():
            refused.append(str(e))

    nc = await nats.connect(**server.connect_options(ROLES[role], role), error_cb=on_error, allow_reconnect=False)
    return Attacker(nc, refused)


@pytest.fixture
async def attackers(stack: Stack) -> AsyncIterator[dict[str, Attacker]]:
    made = {role: await _attacker(stack.nats, role) for role in ROLES}
    try:
        yield made
    finally:
        for a in made.values():
            await a.nc.close()


async def _streams(admin_nc: Client) -> dict[str, tuple[object, ...]]:
    """Each stream's creation time, and its (messages, first sequence) where only services write: a delete
    or a purge changes one of them. (Heartbeats move the presence bucket's first sequence on their own.)"""
    js = admin_nc.jetstream()
    out: dict[str, tuple[object, ...]] = {}
    for name in STREAMS:
        info = await js.stream_info(name)
        out[name] = (info.created,) if name == f"KV_{subjects.ENHANCERS_BUCKET}" else (
            info.created, info.state.messages, info.state.first_seq)
    for stream, consumer in CONSUMERS:
        out[f"{stream}/{consumer}"] = ((await js.consumer_info(stream, consumer)).created,)
    return out


DESTRUCTIVE = [
    *(f"$JS.API.STREAM.DELETE.{s}" for s in STREAMS),
    *(f"$JS.API.STREAM.PURGE.{s}" for s in STREAMS),
    *(f"$JS.API.CONSUMER.DELETE.{s}.{c}" for s, c in CONSUMERS),
    "$JS.API.STREAM.CREATE.STOLEN",
    f"$JS.API.STREAM.UPDATE.{subjects.EVENTS_STREAM}",
    f"$JS.API.STREAM.MSG.DELETE.{subjects.EVENTS_STREAM}",
]


@pytest.mark.parametrize("role", list(ROLES))
async def test_no_role_can_delete_purge_or_create_streams_and_consumers(
        attackers: dict[str, Attacker], admin_nc: Client, role: str) -> None:
    before = await _streams(admin_nc)
    attacker = attackers[role]
    body = json.dumps({"name": "STOLEN", "subjects": ["stolen.>"]}).encode()
    # All at once (each waits out its half second): refused, no JetStream answer ever comes.
    answers = await asyncio.gather(*(attacker.nc.request(api, body, timeout=0.5) for api in DESTRUCTIVE),
                                   return_exceptions=True)
    assert all(isinstance(a, nats.errors.TimeoutError) for a in answers), dict(zip(DESTRUCTIVE, answers, strict=True))
    for api in DESTRUCTIVE:
        await attacker.was_refused(api)
    assert await _streams(admin_nc) == before


OTHERS_TRAFFIC = {
    # Replies to other roles (sign-in answers carry session tokens), every request, every fact.
    EDGE: ["_INBOX.>", "_INBOX.billing.>", "_INBOX.gpu-thief.>", "pe.billing.>", "pe.events.>", "pe.jobs.>", ">"],
    BILLING: ["_INBOX.>", "_INBOX.edge.>", "pe.jobs.>", "pe.progress.>", "$KV.>", ">"],
    ENHANCER: ["_INBOX.>", "_INBOX.edge.>", "_INBOX.billing.>", "pe.billing.>", "pe.events.>", "$KV.>", ">"],
}


@pytest.mark.parametrize("role", list(ROLES))
async def test_no_role_can_read_another_roles_traffic(attackers: dict[str, Attacker], role: str) -> None:
    attacker = attackers[role]
    for subject in OTHERS_TRAFFIC[role]:
        await attacker.nc.subscribe(subject)
        await attacker.was_refused(f'subscription to "{subject}"')


@pytest.mark.parametrize("role", [EDGE, ENHANCER])
async def test_no_role_but_billing_can_read_or_publish_facts_by_jetstream(
        attackers: dict[str, Attacker], admin_nc: Client, role: str) -> None:
    before = await _streams(admin_nc)
    attacker = attackers[role]
    # A consumer on the facts stream would hand over every payment.
    api = f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}"
    with pytest.raises(nats.errors.TimeoutError):
        await attacker.nc.request(api, b"{}", timeout=0.5)
    await attacker.was_refused(api)
    for fact in FACTS.values():
        await attacker.nc.publish(subjects.billing_event(fact.KIND), b"forged")
        await attacker.was_refused(subjects.billing_event(fact.KIND))
    assert await _streams(admin_nc) == before


async def test_an_enhancer_cannot_queue_jobs_or_speak_for_another_worker(attackers: dict[str, Attacker],
                                                                         admin_nc: Client) -> None:
    before = await _streams(admin_nc)
    thief = attackers[ENHANCER]
    for subject in (*subjects.JOBS_SUBJECTS, f"$KV.{subjects.ENHANCERS_BUCKET}.enhancer-1",
                    f"$KV.{subjects.ENHANCERS_BUCKET}.gpu-thiefx", "$SRV.PING.billing", "pe.billing.pay.create",
                    subjects.task_event("credits_granted")):
        await thief.nc.publish(subject, b"forged")
        await thief.was_refused(subject)
    assert await _streams(admin_nc) == before


async def test_billing_and_the_edge_cannot_report_work_done(attackers: dict[str, Attacker]) -> None:
    for role in (EDGE, BILLING):
        for kind in ("completed", "failed"):
            await attackers[role].nc.publish(subjects.task_event(kind), b"forged")
            await attackers[role].was_refused(subjects.task_event(kind))


def _cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "photoenhance", *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_a_revoked_gpu_host_is_cut_off_at_once_and_cannot_come_back(stack: Stack, tmp_path: Path) -> None:
    identity = str(stack.nats.identity.directory)
    await asyncio.to_thread(_cli, "credentials", "create", "enhancer", "revoked-host", "--out",
                            str(tmp_path / "host.env"), "--identity", identity, "--nats-url", stack.nats.url)
    settings = credentials.load_env_file(tmp_path / "host.env")
    assert settings["ENHANCER_ID"] == "revoked-host" and Path(settings["NATS_CREDS"]).parent == tmp_path
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    # Connect exactly as `photoenhance enhancer --env-file` on the GPU host would.
    nc = await nats.connect(**connect_options(settings), closed_cb=on_closed, max_reconnect_attempts=3,
                            reconnect_time_wait=0.2)
    assert nc.is_connected
    await asyncio.to_thread(_cli, "credentials", "revoke", "revoked-host", "--identity", identity,
                            "--nats-url", stack.nats.url)
    await asyncio.wait_for(closed.wait(), 10)  # dropped by the server, and its reconnects refused
    # Starting again with it: refused, and the service gives up at once instead of retrying forever.
    host = NatsSettings(url=settings["NATS_URL"], creds=Path(settings["NATS_CREDS"]), ca=Path(settings["NATS_CA"]),
                        inbox_prefix=settings["NATS_INBOX_PREFIX"])
    with pytest.raises(CredentialRefused):
        async with asyncio.timeout(10), connect(host, "enhancer revoked-host"):
            pass
    listed = await asyncio.to_thread(_cli, "credentials", "list", "--identity", identity)
    assert any(line.split()[:3] == ["revoked-host", "enhancer", "revoked"] for line in listed.splitlines())
    # Nobody else was touched: the session's enhancer still beats and is listed healthy.
    info = (await asyncio.to_thread(httpx.get, f"{stack.url}/api/v1/info", timeout=10)).json()
    assert any(e["id"] == "enhancer-1" and e["status"] == "healthy" for e in info["enhancers"])


def _raw_hello(port: int, send: bytes) -> bytes:
    """What the server answers a client that speaks plain text on its client port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        info = s.recv(4096)
        s.sendall(send)
        rest = b""
        try:
            while chunk := s.recv(4096):
                rest += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return info + rest


def test_plain_text_clients_are_refused(nats_server: EmbeddedNats) -> None:
    answer = _raw_hello(nats_server.port, b'CONNECT {"verbose":false}\r\nPING\r\n')
    assert b'"tls_required":true' in answer
    assert b"PONG" not in answer


async def _refused(options: dict[str, object]) -> bool:
    """The server would not let a client with ``options`` in (nats-py may report it after ``connect``)."""
    try:
        nc = await nats.connect(**options, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
    except (nats.errors.Error, OSError):
        return True
    try:
        await nc.flush(timeout=3)
        return not nc.is_connected
    except (nats.errors.Error, OSError):
        return True
    finally:
        await nc.close()


async def test_a_client_without_a_credential_or_with_a_forged_one_is_refused(nats_server: EmbeddedNats,
                                                                            tmp_path: Path) -> None:
    options = nats_server.connect_options("admin")
    assert not await _refused(options)  # the real admin credential is let in
    assert await _refused({k: v for k, v in options.items() if k != "user_credentials"})
    # A user JWT signed by a key of its own, not by our account: the server trusts only our operator.
    assert await _refused({**options, "user_credentials": str(forged_creds(tmp_path))})


async def test_a_service_whose_credential_is_refused_gives_up_at_once_and_says_why(
        nats_server: EmbeddedNats, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Retrying a refused credential forever (it did, every half second, deaf to SIGTERM) helps nobody."""
    ca = nats_server.env_for("edge", "edge")["NATS_CA"]
    settings = NatsSettings(url=nats_server.url, creds=forged_creds(tmp_path), ca=Path(ca))
    with caplog.at_level(logging.WARNING, logger="bus.connection"), \
            pytest.raises(CredentialRefused, match="refused the credential of enhancer thief"):
        async with asyncio.timeout(10), connect(settings, "enhancer thief"):
            pass
    assert len(caplog.messages) <= connection.REFUSALS_TO_GIVE_UP, caplog.messages  # no retries in a loop


async def test_a_service_waiting_for_a_bus_that_is_down_stops_when_told() -> None:
    """A service started before NATS keeps trying to reach it, and SIGTERM (``stop``) still stops it."""
    nowhere = f"nats://127.0.0.1:{free_port()}"  # nobody listens there
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)  # after a failed attempt or two
    with pytest.raises(StoppedWhileConnecting):
        async with asyncio.timeout(10), connect(NatsSettings(url=nowhere), "billing", stop=stop):
            pass


def test_an_error_repeated_while_the_bus_is_down_is_logged_once_every_ten_seconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(connection.time, "monotonic", lambda: clock[0])
    repeats = connection._Repeats()
    said = []
    for _ in range(41):  # nats-py's retries, every half second, for 20 s
        said.append(repeats.say("[Errno 111] Connection refused"))
        clock[0] += 0.5
    assert [s for s in said if s] == ["[Errno 111] Connection refused",
                                     "[Errno 111] Connection refused (and 19 times more in 10 s)",
                                     "[Errno 111] Connection refused (and 19 times more in 10 s)"]
    assert repeats.say("nats: 'Authorization Violation'") == "nats: 'Authorization Violation'"  # news at once
