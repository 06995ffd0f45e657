"""Rebuilding the ledger from the first event of ``PE_EVENTS``: the proof that it is a projection.

Run it with billing stopped (``python -m billing replay``). It projects every fact into a fresh file
next to the ledger and only then replaces the ledger, so an interrupted replay leaves the old one
intact. Facts are read through ``apply_message``, as the follower reads them: a message refused live
(a forged fact, a kind that is not its subject's) is refused again. Orders' ``prepay_id`` is not a
fact and is not restored (a pending order's client asks again).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import connect, subjects

from .follower import apply_message, wait_for_stream
from .ledger import Ledger
from .settings import BillingSettings

log = logging.getLogger(__name__)


def _remove(db: Path) -> None:
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)


async def replay(settings: BillingSettings, *, batch: int = 500) -> int:
    """Replace the ledger by one rebuilt from every fact in the stream; returns how many were read."""
    fresh = settings.db_path.with_name(settings.db_path.name + ".replay")
    _remove(fresh)
    ledger = await Ledger.open(fresh)
    count = 0
    try:
        async with connect(settings.nats, "billing replay") as nc:
            js = nc.jetstream()
            await wait_for_stream(js)
            last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                                    inactive_threshold=60, description="billing ledger replay")
            # Ephemeral: the server removes it once it is idle (billing's credential may not delete consumers).
            sub = await js.pull_subscribe(subjects.EVENTS_WILDCARD, stream=subjects.EVENTS_STREAM, config=config)
            try:
                seq = 0
                while seq < last:
                    try:
                        msgs = await sub.fetch(batch, timeout=5)
                    except nats.errors.TimeoutError:
                        pending = (await sub.consumer_info()).num_pending
                        if pending:
                            continue
                        break  # the stream's tail was removed (limits): nothing more to read
                    for msg in msgs:
                        await apply_message(ledger, msg)
                        seq = msg.metadata.sequence.stream
                        count += 1
            finally:
                await sub.unsubscribe()
    finally:
        await ledger.close()
    _remove(settings.db_path)
    fresh.rename(settings.db_path)
    log.info("ledger rebuilt from %d events into %s", count, settings.db_path)
    return count
