"""Credits for enhancements: hold one use before a task is queued, give it back when it never was.

Every intake (``edge.intake``) reserves before it queues, and cancelling a waiting task gives its use
back (``routes/tasks.py``); billing settles a held use itself when the task completes or fails. Kept
apart from the WeChat routes so that no route imports another.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from bus import subjects
from bus.billing import UseReleaseRequest, UseReply, UseRequest

from . import texts
from .billing_client import ask
from .errors import ApiError
from .resources import Resources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Payer:
    """Who pays for an enhancement, as the request says: a mini-program session (the ``Authorization``
    header), else the caller's address (anonymous web use, metered per address)."""

    authorization: str | None
    client: str = ""


def visitor_id(client: str) -> str:
    """An anonymous visitor's key in billing: a hash of the address, never the address itself."""
    return hashlib.sha256(f"visitor:{client}".encode()).hexdigest()[:32]


async def reserve_use(res: Resources, payer: Payer, task_id: str) -> str | None:
    """Hold one use for ``task_id`` and return who pays for it (the user's openid, or ``anon:<hash>``).

    With a mini-program session, billing decides (401 bad session, 402 nothing left). Without one the
    request is anonymous web use, metered by a daily quota per address; if billing is not on the bus,
    anonymous use goes on unmetered (``None``) rather than stopping the web page."""
    if not payer.authorization:
        try:
            reply = await ask(res, subjects.BILLING_USE_RESERVE,
                              UseRequest(token="", task_id=task_id, client=visitor_id(payer.client)), UseReply)
        except ApiError as e:
            if e.status in (503, 504):
                log.warning("task %s: billing away; anonymous use not metered", task_id)
                return None
            raise
        return reply.openid
    try:
        reply = await ask(res, subjects.BILLING_USE_RESERVE, UseRequest(token=payer.authorization, task_id=task_id),
                          UseReply)
    except ApiError as e:
        if e.status in (503, 504):  # billing away: say what cannot be done, not "payments"
            raise ApiError(503, texts.USES_UNCHECKED(), headers={"Retry-After": "10"}, success=False) from e
        raise
    return reply.openid


async def release_use(res: Resources, openid: str | None, task_id: str, reason: str) -> None:
    """Give back a use whose task was never queued; on failure the use stays held until its hold expires."""
    if openid is None:
        return
    try:
        await ask(res, subjects.BILLING_USE_RELEASE, UseReleaseRequest(openid=openid, task_id=task_id, reason=reason),
                  UseReply)
    except ApiError as e:
        log.warning("task %s: could not release its reserved use: %s", task_id, e.message)
