"""Following ``PE_EVENTS`` into the ledger: every fact, in stream order, from the first event.

A durable consumer keeps the position across restarts; ``replay`` rebuilds a ledger from an
ephemeral one. Both apply facts idempotently, so redeliveries and write-through copies are harmless.

Both read a fact through ``read_fact``, which takes the fact's kind from the *subject*, never from the
payload: NATS permissions let only billing publish ``pe.events.billing.>`` and only enhancers
``pe.events.task.>``, so the subject is what binds a fact to the role that emitted it. A message whose
payload is not the fact its subject names (a ``credits_granted`` on ``pe.events.task.completed``, a
task event on a billing subject, a kind that differs from the subject's) is refused: logged with its
stream sequence, acknowledged, never applied. Replay applies the same rule, so a forged fact already
in the stream stays inert.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import subjects
from bus.billing import FACTS, BillingFact, OrderPaid
from bus.codec import SchemaError, unpack_any
from bus.schemas import COMPLETED, FAILED, TaskEvent

from .ledger import Ledger

log = logging.getLogger(__name__)

#: Durable consumer of every fact (tasks and billing) that the ledger projects.
CONSUMER = subjects.LEDGER_CONSUMER


async def wait_for_stream(js: JetStreamContext, poll: float = 0.5) -> None:
    """The edge declares ``PE_EVENTS``; billing may start first."""
    while True:
        try:
            await js.stream_info(subjects.EVENTS_STREAM)
            return
        except nats.js.errors.NotFoundError:
            log.info("waiting for the %s stream", subjects.EVENTS_STREAM)
            await asyncio.sleep(poll)


#: ``pe.events.task.`` and ``pe.events.billing.``: what precedes a fact's kind in its subject.
_TASK_PREFIX = subjects.task_event(COMPLETED).removesuffix(COMPLETED)
_BILLING_PREFIX = subjects.billing_event(OrderPaid.KIND).removesuffix(OrderPaid.KIND)
#: The task facts a worker may emit.
TASK_KINDS = (COMPLETED, FAILED)
#: Billing facts by the kind their subject names.
BILLING_KINDS: dict[str, type[BillingFact]] = {cls.KIND: cls for cls in FACTS.values()}


class RefusedFact(Exception):
    """A message on ``PE_EVENTS`` that is not the fact its subject (and so its publisher's role) allows."""


def read_fact(subject: str, data: dict[str, Any]) -> TaskEvent | BillingFact:
    """The fact a stream message carries, decoded as the type its subject names; ``RefusedFact`` otherwise.

    Raises ``SchemaError`` for a payload of the right type that is malformed."""
    if subject.startswith(_TASK_PREFIX):
        kind = subject.removeprefix(_TASK_PREFIX)
        if kind not in TASK_KINDS:
            raise RefusedFact(f"{kind!r} is not a task fact billing knows")
        if data.get("type") != TaskEvent.TYPE:
            raise RefusedFact(f"a {data.get('type')!r} payload on a task subject")
        event = TaskEvent.from_dict(data, subject=subject)
        if event.kind != kind:
            raise RefusedFact(f"a {event.kind!r} task event on the {kind!r} subject")
        return event
    if subject.startswith(_BILLING_PREFIX):
        kind = subject.removeprefix(_BILLING_PREFIX)
        fact_type = BILLING_KINDS.get(kind)
        if fact_type is None:
            raise RefusedFact(f"{kind!r} is not a billing fact")
        if data.get("type") != fact_type.TYPE:
            raise RefusedFact(f"a {data.get('type')!r} payload on the {kind!r} subject")
        return fact_type.from_dict(data, subject=subject)
    raise RefusedFact("no fact is published on this subject")


async def apply_message(ledger: Ledger, msg: Msg) -> bool:
    """Apply one stream message; False when it was refused or malformed (logged, never fatal, never applied)."""
    seq = msg.metadata.sequence.stream
    try:
        fact = read_fact(msg.subject, unpack_any(msg.data, subject=msg.subject))
    except RefusedFact as e:
        log.error("refusing the message on %s (stream seq %s): %s", msg.subject, seq, e)
        return False
    except SchemaError as e:
        log.error("skipping a malformed event on %s (stream seq %s): %s", msg.subject, seq, e)
        return False
    if isinstance(fact, TaskEvent):
        await ledger.apply(fact, seq)
    else:
        await ledger.apply_fact(fact, seq)
    return True


async def follow(js: JetStreamContext, ledger: Ledger, stop: asyncio.Event,
                 caught_up: asyncio.Event | None = None) -> None:
    """Apply facts until ``stop`` is set, acknowledging each once it is in the ledger (a refused one too:
    it is never going to be applied). ``caught_up`` is set the first time nothing is left to read, so
    work that must see every fact already in the stream (the start-up reconcile) can wait for it."""
    sub = await js.pull_subscribe(
        subjects.EVENTS_WILDCARD, durable=CONSUMER, stream=subjects.EVENTS_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30,
                              description="billing's ledger: every fact, in order"))
    log.info("billing following %s", subjects.EVENTS_STREAM)
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(50, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                if caught_up is not None:
                    caught_up.set()
                continue
            for msg in msgs:
                await apply_message(ledger, msg)
                await msg.ack()
    finally:
        await sub.unsubscribe()
