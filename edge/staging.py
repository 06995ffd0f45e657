"""Staging objects of presigned uploads (``uploads/<token>/<name>``): what a URL may store, which
task it becomes, and the janitor that deletes what is never processed.

The size a URL was issued for is part of its key (``<random>-<size in hex>``), and the key is part of
the URL's signature, so a client cannot claim a larger bound than it was given. A staging object is
only ever read once: its checked bytes are copied to the task's own ``inputs/`` key and it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bus.storage import ObjectStore, StorageError, upload_key

from .resources import Resources

log = logging.getLogger(__name__)

PREFIX = "uploads/"
_KEY = re.compile(r"^uploads/(?P<token>[A-Za-z0-9_-]{20,64})/[A-Za-z0-9._-]{1,120}$")
_SIZED = re.compile(r"^[0-9a-f]{32}-(?P<bound>[0-9a-f]{1,12})$")


@dataclass(frozen=True)
class Staged:
    """A staging key issued by this service."""

    key: str
    token: str
    #: Most bytes the object may hold: the size the URL was issued for, else the upload limit.
    bound: int

    @property
    def task_id(self) -> str:
        """The one task this upload can become: a second request for the same key finds it taken."""
        return hashlib.sha256(f"photoenhance-staging:{self.token}".encode()).hexdigest()[:32]


def new_key(filename: str, bound: int) -> str:
    """A fresh, unguessable staging key that records ``bound``."""
    return upload_key(f"{secrets.token_hex(16)}-{bound:x}", filename)


def parse(key: str, max_upload: int) -> Staged | None:
    """The staging key's parts, or ``None`` for a key this service did not issue. A key from before
    sizes were recorded (no bound in it) is held to the upload limit."""
    m = _KEY.match(key)
    if not m:
        return None
    token = m["token"]
    sized = _SIZED.match(token)
    bound = min(int(sized["bound"], 16), max_upload) if sized else max_upload
    return Staged(key=key, token=token, bound=bound)


async def sweep(store: ObjectStore, *, max_age: float, max_upload: int, now: dt.datetime | None = None) -> int:
    """Delete staging objects older than ``max_age`` seconds, and at once any larger than their key
    allows (or than the upload limit); returns how many were deleted."""
    now = now or dt.datetime.now(dt.UTC)
    removed = 0
    for obj in await store.list(PREFIX):
        staged = parse(obj.key, max_upload)
        oversized = obj.size > (staged.bound if staged else max_upload)
        stale = obj.modified is None or (now - obj.modified).total_seconds() > max_age
        if oversized or stale:
            try:
                await store.remove(obj.key)
                removed += 1
            except StorageError as e:
                log.warning("staging janitor: could not delete %s: %s", obj.key, e)
    return removed


@contextlib.asynccontextmanager
async def janitor(res: Resources) -> AsyncIterator[None]:
    """Sweep the staging prefix every ``STAGING_SWEEP_SECONDS`` while the edge runs (every edge replica
    may; deleting twice is harmless), so an upload never processed is gone within
    ``STAGING_MAX_AGE + STAGING_SWEEP_SECONDS`` (30 + 5 minutes by default)."""
    s = res.settings

    async def run() -> None:
        while True:
            try:
                removed = await sweep(res.store, max_age=s.staging_max_age, max_upload=s.max_upload_bytes)
                if removed:
                    log.info("staging janitor: deleted %d upload(s) never processed", removed)
            except StorageError as e:
                log.warning("staging janitor: storage unavailable (%s); trying again later", e)
            await asyncio.sleep(s.staging_sweep_seconds)

    task = asyncio.create_task(run(), name="staging-janitor")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
