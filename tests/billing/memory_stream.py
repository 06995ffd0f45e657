"""``PE_EVENTS`` in memory, for billing tests that need no NATS server: what billing publishes is kept as real
``nats`` messages (subject, payload, headers, stream sequence in the JetStream reply subject), de-duplicated
by ``Nats-Msg-Id`` as JetStream does, and can be replayed through the same ``apply_message`` that billing's
follower and ``photoenhance billing replay`` use.

``crash_before`` makes the next publish of a fact kind raise ``Crash``: billing stops between two facts,
as a process killed at that moment would (the facts before it are stored and applied, nothing after).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import PubAck

from billing.follower import apply_message
from billing.ledger import Ledger
from bus import subjects
from bus.schemas import Message, TaskEvent


class Crash(BaseException):
    """Billing stopped here (a BaseException, so no ``except Exception`` in billing swallows it)."""


def stream_msg(seq: int, subject: str, data: bytes, headers: dict[str, str] | None = None) -> Msg:
    """A message as a JetStream consumer delivers it: its reply subject carries the stream sequence."""
    reply = f"$JS.ACK.{subjects.EVENTS_STREAM}.test.1.{seq}.{seq}.{time.time_ns()}.0"
    return Msg(None, subject=subject, reply=reply, data=data, headers=headers)  # type: ignore[arg-type]


class MemoryStream:
    """Stands in for billing's ``JetStreamContext``: ``publish`` only."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []
        self._ids: dict[str, int] = {}
        self.crash_before: str | None = None

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                      **_: Any) -> PubAck:
        msg_id = (headers or {}).get(subjects.MSG_ID_HEADER)
        if msg_id is not None and msg_id in self._ids:
            return PubAck(stream=subjects.EVENTS_STREAM, seq=self._ids[msg_id], duplicate=True)
        if self.crash_before is not None and subject == subjects.billing_event(self.crash_before):
            self.crash_before = None
            raise Crash(f"billing stopped before recording {subject}")
        seq = len(self.messages) + 1
        self.messages.append(stream_msg(seq, subject, payload, headers))
        if msg_id is not None:
            self._ids[msg_id] = seq
        return PubAck(stream=subjects.EVENTS_STREAM, seq=seq)

    def put(self, subject: str, message: Message) -> Msg:
        """Anyone with publish rights on ``subject`` stores ``message`` (no de-duplication id)."""
        msg = stream_msg(len(self.messages) + 1, subject, message.encode())
        self.messages.append(msg)
        return msg

    def task_event(self, event: TaskEvent) -> Msg:
        """What an enhancer publishes for a task that ended."""
        return self.put(subjects.task_event(event.kind), event)

    def kinds(self) -> list[str]:
        """The kinds of the billing facts stored, in stream order."""
        prefix = subjects.billing_event("x").removesuffix("x")
        return [m.subject.removeprefix(prefix) for m in self.messages if m.subject.startswith(prefix)]


async def replayed(messages: list[Msg], db: Path) -> dict[str, Any]:
    """The snapshot of a ledger rebuilt from ``messages`` into a fresh file, as ``billing replay`` does."""
    ledger = await Ledger.open(db)
    try:
        for msg in messages:
            await apply_message(ledger, msg)
        return await ledger.snapshot()
    finally:
        await ledger.close()
