"""``Idempotency-Key`` on ``POST /api/v1/enhance``: a client that sends again after losing the answer
(a dropped connection, a restarted edge) gets the task it already has, not a second one — and a
signed-in user is not charged twice.

The key is scoped to the caller (their session, else their address) and hashed; the claim lives in
the task bucket next to the task records, so it expires with them. A claim whose request never got
as far as recording its task (the edge died meanwhile) is taken over after ``STALE_AFTER`` seconds.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import texts
from .errors import ApiError

HEADER = "Idempotency-Key"
_VALID = re.compile(r"[\x21-\x7e]{1,200}")
#: Seconds after which a claim that never led to a task record may be taken over.
STALE_AFTER = 120.0
#: Attempts at claiming before giving up (each lost only to a concurrent write of the same key).
_ROUNDS = 5


def claim_key(identity: str, key: str) -> str:
    if not _VALID.fullmatch(key):
        raise ApiError(400, texts.IDEMPOTENCY_KEY_BAD(header=HEADER))
    return "idem." + hashlib.sha256(f"{identity}\n{key}".encode()).hexdigest()


async def claim(kv: KeyValue, key: str, task_id: str, *, has_task: Callable[[str], Awaitable[bool]]) -> str | None:
    """Claim ``key`` for ``task_id``. Returns ``None`` when it is ours now, else the task id an earlier
    request with the same key claimed it for. ``has_task`` is asked only about a stale claim.

    Every write is conditional, so two requests racing for the key cannot both win: the loser looks
    again (the key may have been released, re-claimed or taken over in between)."""
    value = f"{task_id} {time.time():.3f}".encode()
    for _ in range(_ROUNDS):
        try:
            await kv.create(key, value)
            return None
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # released in between: try again
            continue
        earlier, _, at = (entry.value or b"").decode().partition(" ")
        if time.time() - float(at or 0) < STALE_AFTER or await has_task(earlier):
            return earlier
        try:
            await kv.update(key, value, last=entry.revision)  # the earlier request died before its task existed
            return None
        except KeyWrongLastSequenceError:  # another request took it over first
            continue
    raise ApiError(409, texts.IDEMPOTENCY_CONTENDED(header=HEADER), headers={"Retry-After": "2"})


async def release(kv: KeyValue, key: str) -> None:
    """Give the key back after a request that did not create its task (so a retry may)."""
    await kv.delete(key)
