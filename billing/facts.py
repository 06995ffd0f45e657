"""Recording a billing fact: publish it to ``PE_EVENTS`` with its de-duplication id, then project it.

The stream is the truth and the ledger its projection. Publishing first means a fact is durable
before anything acts on it; applying right after (rather than waiting for the follower) lets the
caller read its own write. A publish that JetStream reports as a duplicate is not applied here:
the copy already stored is the fact, and whoever stored it (or the follower) applies it.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from bus import retrying, subjects
from bus.billing import BillingFact

from .ledger import Ledger

log = logging.getLogger(__name__)


class Facts:
    def __init__(self, js: JetStreamContext, ledger: Ledger) -> None:
        self.js = js
        self.ledger = ledger

    async def record(self, fact: BillingFact) -> bool:
        """True when this call stored the fact; False when the stream already held it."""
        headers = {subjects.MSG_ID_HEADER: fact.dedup_id, subjects.TYPE_HEADER: fact.TYPE}
        ack = await retrying(lambda: self.js.publish(fact.subject, fact.encode(), headers=headers),
                             what=f"fact {fact.dedup_id}")
        if ack.duplicate:
            log.info("fact %s was already recorded", fact.dedup_id)
            return False
        await self.ledger.apply_fact(fact, ack.seq)
        log.info("fact %s recorded (stream seq %s)", fact.dedup_id, ack.seq)
        return True
