"""What the edge holds open while it runs: the NATS connection, the task bucket, the bucket of images."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext

from bus import ObjectStore, StorageError, TaskStore, connect, subjects, wait_for_resources

from .registry import Registry
from .settings import EdgeSettings

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: EdgeSettings
    nc: Client
    js: JetStreamContext
    tasks: TaskStore
    store: ObjectStore
    registry: Registry


@asynccontextmanager
async def open_resources(settings: EdgeSettings) -> AsyncIterator[Resources]:
    """Connect, wait for the streams, buckets and S3 bucket that bootstrap declares, and close on exit."""
    async with connect(settings.nats, "edge") as nc:
        js = nc.jetstream()
        kv = await wait_for_resources(js)
        store = ObjectStore(settings.s3)
        for attempt in range(30):
            try:
                await store.ping()
                break
            except StorageError as e:
                if attempt == 29:
                    raise
                log.warning("object storage not ready (%s); retrying", e)
                await asyncio.sleep(1)
        registry = Registry(await js.key_value(subjects.ENHANCERS_BUCKET), missed_beats=settings.missed_beats,
                            forget_after=settings.forget_after)
        async with registry:
            yield Resources(settings=settings, nc=nc, js=js, tasks=TaskStore(kv), store=store, registry=registry)
