"""The billing process: follows ``PE_EVENTS`` with a durable consumer and keeps the ledger."""

from __future__ import annotations

import asyncio
import logging
import signal

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import connect, subjects
from bus.codec import SchemaError
from bus.schemas import TaskEvent

from .ledger import Ledger
from .settings import BillingSettings

log = logging.getLogger(__name__)

CONSUMER = "billing"


async def serve(settings: BillingSettings, stop: asyncio.Event) -> None:
    ledger = await Ledger.open(settings.db_path)
    try:
        async with connect(settings.nats, "billing") as nc:
            js = nc.jetstream()
            while True:
                try:
                    await js.stream_info(subjects.EVENTS_STREAM)
                    break
                except nats.js.errors.NotFoundError:
                    log.info("waiting for the %s stream", subjects.EVENTS_STREAM)
                    await asyncio.sleep(0.5)
            sub = await js.pull_subscribe(
                subjects.TASK_EVENTS_WILDCARD, durable=CONSUMER, stream=subjects.EVENTS_STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30))
            log.info("billing following %s", subjects.EVENTS_STREAM)
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(50, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for msg in msgs:
                    try:
                        event = TaskEvent.decode(msg.data, subject=msg.subject)
                    except SchemaError as e:
                        log.error("dropping a malformed event: %s", e)
                        await msg.term()
                        continue
                    await ledger.apply(event, msg.metadata.sequence.stream)
                    await msg.ack()
            await sub.unsubscribe()
    finally:
        await ledger.close()


def main() -> None:
    settings = BillingSettings.from_env()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(run())
