"""The bus contract: schemas reject malformed messages, and NATS permissions hold per role."""

from __future__ import annotations

import asyncio

import msgpack
import nats.errors
import pytest

import nats
from bus import subjects
from bus.codec import SchemaError
from bus.schemas import EnhanceJob, TaskEvent, TaskState
from photoenhance.servers import EmbeddedNats


def test_job_round_trips_and_ignores_unknown_fields() -> None:
    job = EnhanceJob(task_id="a" * 32, input_key="inputs/x/y.jpg", input_name="y.jpg", scale=2)
    assert EnhanceJob.decode(job.encode()) == job
    newer = {**job.to_dict(), "priority": 5}
    assert EnhanceJob.from_dict(newer) == job


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"type": "pe.v1.enhance_job"}),
    msgpack.packb({"type": "pe.v9.other", "task_id": "a"}),
    msgpack.packb({"type": "pe.v1.enhance_job", "task_id": 5, "input_key": "k", "input_name": "n"}),
    msgpack.packb({"type": "pe.v1.enhance_job", "task_id": "t", "input_key": "k", "input_name": "n", "scale": 3}),
    msgpack.packb({"type": "pe.v1.enhance_job", "task_id": "t", "input_key": "k", "input_name": "n",
                   "tile_size": True}),
])
def test_malformed_messages_are_schema_errors(payload: bytes) -> None:
    with pytest.raises(SchemaError):
        EnhanceJob.decode(payload, subject=subjects.JOBS_SUBJECT)


def test_task_state_rejects_unknown_status() -> None:
    with pytest.raises(SchemaError):
        TaskState.from_dict({"type": TaskState.TYPE, "task_id": "t", "status": "exploded", "created_at": 0.0,
                             "updated_at": 0.0, "input_key": "k", "input_name": "n"})


def test_subject_builders_refuse_injection() -> None:
    assert subjects.progress("ab12") == "pe.progress.ab12"
    for bad in ("a.b", "a*", ">", "a b", ""):
        with pytest.raises(ValueError):
            subjects.progress(bad)


async def test_no_credentials_no_connection(nats_server: EmbeddedNats) -> None:
    with pytest.raises((nats.errors.NoServersError, nats.errors.Error, OSError)):
        await nats.connect(nats_server.url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
    with pytest.raises((nats.errors.NoServersError, nats.errors.Error, OSError)):
        await nats.connect(nats_server.url, user="enhancer", password="wrong", allow_reconnect=False,
                           connect_timeout=2, max_reconnect_attempts=0)


async def _violations(nats_server: EmbeddedNats, role: str, action) -> list[str]:
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    nc = await nats.connect(nats_server.url, user=role, password=nats_server.passwords[role], error_cb=on_error)
    try:
        await action(nc)
        await nc.flush()
        await asyncio.sleep(0.2)  # the server reports violations asynchronously
    finally:
        await nc.close()
    return [e for e in errors if "permissions violation" in e.lower()]


@pytest.mark.parametrize(("role", "subject"), [
    ("enhancer", subjects.JOBS_SUBJECT),              # an enhancer cannot inject jobs
    ("enhancer", "pe.events.billing.order_paid"),     # ... nor forge billing facts
    ("edge", subjects.task_event("completed")),       # the edge cannot claim work was done
    ("billing", subjects.JOBS_SUBJECT),
])
async def test_roles_cannot_publish_outside_their_permissions(nats_server: EmbeddedNats, role: str,
                                                              subject: str) -> None:
    bad = await _violations(nats_server, role, lambda nc: nc.publish(subject, TaskEvent(
        task_id="x", kind="completed", at=0).encode()))
    assert bad and subject in bad[0]


async def test_enhancer_cannot_read_other_streams(nats_server: EmbeddedNats) -> None:
    bad = await _violations(nats_server, "enhancer", lambda nc: nc.subscribe("pe.events.>"))
    assert bad and "pe.events.>" in bad[0]
