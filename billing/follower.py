"""Following ``PE_EVENTS`` into the ledger: every fact, in stream order, from the first event.

A durable consumer keeps the position across restarts; ``replay`` rebuilds a ledger from an
ephemeral one. Both apply facts idempotently, so redeliveries and write-through copies are harmless.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import subjects
from bus.billing import FACTS
from bus.codec import SchemaError, unpack_any
from bus.schemas import TaskEvent

from .ledger import Ledger

log = logging.getLogger(__name__)

#: Durable consumer of every fact (tasks and billing) that the ledger projects.
CONSUMER = "billing-ledger"


async def wait_for_stream(js: JetStreamContext, poll: float = 0.5) -> None:
    """The edge declares ``PE_EVENTS``; billing may start first."""
    while True:
        try:
            await js.stream_info(subjects.EVENTS_STREAM)
            return
        except nats.js.errors.NotFoundError:
            log.info("waiting for the %s stream", subjects.EVENTS_STREAM)
            await asyncio.sleep(poll)


async def apply_message(ledger: Ledger, msg: Msg) -> None:
    """Apply one stream message; a malformed one is logged and skipped, never fatal."""
    seq = msg.metadata.sequence.stream
    try:
        data = unpack_any(msg.data, subject=msg.subject)
        fact_type = FACTS.get(str(data.get("type")))
        if fact_type is not None:
            await ledger.apply_fact(fact_type.from_dict(data, subject=msg.subject), seq)
        elif data.get("type") == TaskEvent.TYPE:
            await ledger.apply(TaskEvent.from_dict(data, subject=msg.subject), seq)
        else:
            log.warning("skipping an event of unknown type %r (seq %s)", data.get("type"), seq)
    except SchemaError as e:
        log.error("skipping a malformed event (seq %s): %s", seq, e)


async def follow(js: JetStreamContext, ledger: Ledger, stop: asyncio.Event) -> None:
    """Apply facts until ``stop`` is set, acknowledging each once it is in the ledger."""
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
                continue
            for msg in msgs:
                await apply_message(ledger, msg)
                await msg.ack()
    finally:
        await sub.unsubscribe()
