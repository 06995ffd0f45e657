"""Connecting to NATS and declaring the JetStream resources, idempotently, at start-up.

Jobs wait in one work-queue stream, ``PE_JOBS``, on one subject per capability they need
(``pe.jobs.enhance.<capability>``), each with its own durable pull consumer: a worker pulls only from the
consumers of the capabilities it has, so a job is only ever claimed by a worker that can do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nats.aio.client import Client
from nats.errors import AuthorizationError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from . import capabilities, subjects
from .settings import NatsSettings, TaskSettings

log = logging.getLogger(__name__)

#: Seconds within which a repeated publish with the same ``Nats-Msg-Id`` is dropped as a duplicate.
EVENTS_DEDUP_WINDOW = 3600.0
JOBS_DEDUP_WINDOW = 600.0


class _QuietTlsEof(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when using ssl": nats-py's TLS transport
    logs it at every close of a TLS connection (nats-io/nats.py#574), so each service's clean shutdown printed
    warnings about nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("returning true from eof_received() has no effect when using ssl")


_ASYNCIO_LOG = logging.getLogger("asyncio")
if not any(isinstance(f, _QuietTlsEof) for f in _ASYNCIO_LOG.filters):
    _ASYNCIO_LOG.addFilter(_QuietTlsEof())


def auth_options(settings: NatsSettings) -> dict[str, Any]:
    """nats-py's keyword arguments for the credential, TLS and inbox prefix in ``settings``."""
    opts: dict[str, Any] = {"inbox_prefix": settings.inbox_prefix}
    if settings.creds is not None:
        opts["user_credentials"] = str(settings.creds)
    elif settings.nkey_seed is not None:
        opts["nkeys_seed_str"] = settings.nkey_seed
    elif settings.user is not None:
        opts |= {"user": settings.user, "password": settings.password}
    if settings.ca is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca))
        opts["tls"] = ctx
    return opts


#: Exit status of a service whose credential the bus refused (revoked, or not issued by this bus's operator):
#: EX_CONFIG of sysexits.h. Restarting it cannot help, so the enhancer's supervisor does not.
REFUSED_EXIT = 78
#: Refusals in a row while connecting after which the credential is taken as refused for good (as nats.go does):
#: one could be a server that has not loaded its accounts yet.
REFUSALS_TO_GIVE_UP = 2


class CredentialRefused(RuntimeError):
    """The bus refused this process's credential: nothing it does can work until an operator issues another."""


class StoppedWhileConnecting(Exception):
    """SIGTERM/SIGINT came before the bus answered (a service started while NATS is down): nothing to drain."""


class _Repeats:
    """Says a repeated error once every :attr:`every` seconds, with how often it came meanwhile: nats-py retries
    every half second while the bus is down, which logged two lines a second for as long as that lasted."""

    every = 10.0

    def __init__(self) -> None:
        self.text, self.said_at, self.unsaid = "", 0.0, 0

    def say(self, text: str) -> str | None:
        """``text`` to log now (with the count of its unlogged repeats), or None to stay quiet."""
        now = time.monotonic()
        if text == self.text and now - self.said_at < self.every:
            self.unsaid += 1
            return None
        said = f"{text} (and {self.unsaid} times more in {now - self.said_at:.0f} s)" \
            if text == self.text and self.unsaid else text
        self.text, self.said_at, self.unsaid = text, now, 0
        return said


def _is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()


@asynccontextmanager
async def connect(settings: NatsSettings, name: str, *, stop: asyncio.Event | None = None) -> AsyncIterator[Client]:
    """Connect with the service's own credentials; reconnect forever; drain on exit.

    While the bus cannot be reached it keeps trying (services may start before NATS), until ``stop`` is set
    (:class:`StoppedWhileConnecting`). A credential the bus refuses raises :class:`CredentialRefused`: at once
    when connecting, and on leaving the block when it was refused later (revoked: the process drains first)."""
    refusals = 0
    joined = leaving = dropped_for_good = False

    repeats = _Repeats()

    async def on_error(e: Exception) -> None:
        nonlocal refusals
        if (text := repeats.say(str(e) or type(e).__name__)) is not None:
            log.warning("nats error (%s): %s", name, text)
        if not joined and _is_refusal(e):
            refusals += 1

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):  # a deliberate close is not news
            log.warning("nats disconnected (%s); reconnecting", name)

    async def on_reconnect() -> None:
        log.info("nats reconnected (%s)", name)

    async def on_closed() -> None:
        # nats-py reconnects forever, except when the server refuses the credential: then nothing this
        # process does can work again, so it stops (SIGTERM: the usual drain) instead of retrying in vain.
        nonlocal dropped_for_good
        if joined and not leaving:
            dropped_for_good = True
            log.error("nats closed the connection (%s) for good: the server refused this credential "
                      "(revoked?); stopping", name)
            os.kill(os.getpid(), signal.SIGTERM)

    nc = Client()
    connecting = asyncio.create_task(nc.connect(
        servers=settings.servers,
        **auth_options(settings),
        name=name,
        connect_timeout=5,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        closed_cb=on_closed,
    ))
    # Until connected or closed for good. nats-py's connect may also return before the server has said yes (it
    # checks a JWT's account after the handshake, and a refusal then comes as a closed connection), and it retries a
    # refused credential forever; a refusal comes twice in a row before it counts (nats.go's rule).
    while not (connecting.done() and (nc.is_connected or nc.is_closed or connecting.exception())):
        if refusals >= REFUSALS_TO_GIVE_UP or (stop is not None and stop.is_set()):
            break
        await asyncio.sleep(0.05)
    if not nc.is_connected:
        leaving = True
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connecting
        with contextlib.suppress(Exception):
            await nc.close()
        if refusals >= REFUSALS_TO_GIVE_UP or _is_refusal(nc.last_error):
            raise CredentialRefused(f"the bus at {settings.url} refused the credential of {name} (revoked, or not "
                                    "issued by this bus's operator): ask an operator for a new one")
        if stop is not None and stop.is_set():
            raise StoppedWhileConnecting(f"{name} stopped before the bus at {settings.url} answered")
        connecting.result()  # what connecting raised
        raise ConnectionError(f"the bus at {settings.url} closed the connection of {name}: {nc.last_error}")
    joined = True
    try:
        yield nc
    finally:
        leaving = True
        if not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), 10)
            except Exception as e:  # a drain that fails must not hide the real exit reason
                log.warning("nats drain (%s) failed: %s", name, e)
                await nc.close()
    if dropped_for_good:
        raise CredentialRefused(f"the bus at {settings.url} dropped {name}: its credential was revoked")


def jobs_stream(tasks: TaskSettings) -> StreamConfig:
    return StreamConfig(
        name=subjects.JOBS_STREAM,
        description="Accepted enhancement jobs, each held until one enhancer acknowledges it",
        subjects=list(subjects.JOBS_SUBJECTS),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        # Not bounded here: the stream also holds jobs in progress. The edge bounds the *waiting* jobs
        # (QUEUE_LIMIT, 429) from the consumer's pending count before it accepts an upload.
        max_msgs=-1,
        max_age=tasks.retention_hours * 3600,
        duplicate_window=JOBS_DEDUP_WINDOW,
        num_replicas=tasks.replicas,
    )


def jobs_consumer(tasks: TaskSettings, capability: str) -> ConsumerConfig:
    """The consumer of the jobs that need ``capability``, shared by every worker that has it. The base
    capability's consumer (the one every worker pulls from) also takes the legacy subject's jobs."""
    filters = [subjects.jobs_subject(capability)]
    if capability == capabilities.BASE:
        filters.append(subjects.LEGACY_JOBS_SUBJECT)
    return ConsumerConfig(
        durable_name=subjects.jobs_consumer(capability),
        description=f"Jobs that need {capabilities.DESCRIPTIONS[capability]}, shared by the enhancers that can "
                    "do it; each pulls one job per free slot",
        filter_subjects=filters,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=tasks.ack_wait,
        # One delivery beyond the attempts is used to report the task failed.
        max_deliver=tasks.max_attempts + 1,
        max_ack_pending=-1,
    )


def events_stream(tasks: TaskSettings) -> StreamConfig:
    return StreamConfig(
        name=subjects.EVENTS_STREAM,
        description="Durable facts (task completed/failed, payments) that billing replays",
        subjects=[subjects.EVENTS_WILDCARD],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=EVENTS_DEDUP_WINDOW,
        num_replicas=tasks.replicas,
    )


def tasks_bucket(tasks: TaskSettings) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=subjects.TASKS_BUCKET,
        description="One record per task; expires with the task's images",
        history=1,
        ttl=tasks.retention_hours * 3600,
        storage=StorageType.FILE,
        replicas=tasks.replicas,
    )


def enhancers_bucket(tasks: TaskSettings) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=subjects.ENHANCERS_BUCKET,
        description="Enhancer heartbeats (JSON), one key per worker; the registry view watches it",
        history=1,
        ttl=24 * 3600,  # garbage collection only: the registry forgets silent workers much sooner
        storage=StorageType.FILE,
        replicas=tasks.replicas,
    )


async def _stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:  # exists with another configuration: bring it up to date
        await js.update_stream(config)


async def ensure_resources(js: JetStreamContext, tasks: TaskSettings) -> KeyValue:
    """Declare streams, the jobs consumers and the buckets (admin only: ``photoenhance bootstrap``); idempotent."""
    await _stream(js, jobs_stream(tasks))
    await _stream(js, events_stream(tasks))
    try:
        kv = await js.create_key_value(tasks_bucket(tasks))
    except BadRequestError:  # exists with another retention: change only that
        info = await js.stream_info(f"KV_{subjects.TASKS_BUCKET}")
        info.config.max_age = tasks.retention_hours * 3600
        await js.update_stream(info.config)
        kv = await js.key_value(subjects.TASKS_BUCKET)
    with contextlib.suppress(BadRequestError):  # exists: its settings are not ours to change at every start
        await js.create_key_value(enhancers_bucket(tasks))
    # A bus declared before jobs were routed by capability has one unfiltered consumer, which would overlap
    # the new ones (a work queue refuses that). Deleting a consumer leaves its jobs in the stream; the new
    # consumers start from the first job, so none is lost.
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(subjects.JOBS_STREAM, subjects.LEGACY_JOBS_CONSUMER)
    for capability in capabilities.CAPABILITIES:
        await js.add_consumer(subjects.JOBS_STREAM, jobs_consumer(tasks, capability))
    return kv


async def wait_for_resources(js: JetStreamContext, *, poll: float = 0.5) -> KeyValue:
    """Services start once bootstrap declared the resources; one started earlier waits until they exist."""
    while True:
        try:
            for consumer in subjects.JOBS_CONSUMERS:
                await js.consumer_info(subjects.JOBS_STREAM, consumer)
            await js.key_value(subjects.ENHANCERS_BUCKET)
            return await js.key_value(subjects.TASKS_BUCKET)
        except (NotFoundError, BucketNotFoundError):
            log.info("waiting for JetStream resources (has `photoenhance bootstrap` run?)")
            await asyncio.sleep(poll)
