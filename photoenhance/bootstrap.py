"""``photoenhance bootstrap``: declare what the services use, with the admin identity, before they start.

Streams, the jobs consumers (one per capability a job may need, ``bus.connection``; the single consumer
of buses declared before that is removed, its jobs kept), billing's ledger consumer, the KV buckets and
the S3 bucket (with its expiry rules) are created here, not by the services: a service's credential
cannot create, delete or purge any of them, so a stolen one cannot either. Idempotent; ``photoenhance up``,
the test stacks and compose's ``bootstrap`` service run it at every start (a changed TASK_ACK_WAIT or
retention is applied).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from bus import ObjectStore, connect, ensure_resources, retrying, subjects
from bus.settings import NatsSettings, S3Settings, TaskSettings

from .credentials import load_env_file
from .s3_access import MinioAccess, S3Access, S3Keys, bootstrap_identities

log = logging.getLogger(__name__)


class BootstrapError(RuntimeError):
    """Bootstrap failed; the message carries its output."""


def ledger_consumer() -> ConsumerConfig:
    """Billing's durable follower of every fact, from the first (see ``billing.follower``)."""
    return ConsumerConfig(durable_name=subjects.LEDGER_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=30, filter_subject=subjects.EVENTS_WILDCARD,
                          description="billing's ledger: every fact, in order")


async def bootstrap(nats: NatsSettings, s3: S3Settings | None, tasks: TaskSettings) -> None:
    """Declare the bus's streams, consumers and buckets (``nats`` is the admin credential) and, given the
    storage's admin keys, the S3 bucket and its expiry rules."""
    async with connect(nats, "bootstrap") as nc:
        js = nc.jetstream()
        # A cluster that has just elected its JetStream leader may not have enabled the account yet.
        await retrying(lambda: ensure_resources(js, tasks), what="declare the JetStream resources", budget=60)
        try:
            await js.add_consumer(subjects.EVENTS_STREAM, ledger_consumer())
        except BadRequestError as e:  # an older ledger consumer with other settings: keep its position
            log.info("billing's ledger consumer kept as it is: %s", e.description)
    if s3 is not None:
        await ObjectStore(s3).ensure_bucket(tasks.retention_hours)
    log.info("bootstrap: streams, consumers and buckets are declared")


def run_bootstrap(env: Mapping[str, str], timeout: float = 60) -> None:
    """``photoenhance bootstrap`` as a child process with the admin's settings in ``env`` (as compose runs it)."""
    proc = subprocess.run([sys.executable, "-m", "photoenhance", "bootstrap"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BootstrapError(f"photoenhance bootstrap failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def storage_identities(access: S3Access, out_dir: Path) -> dict[str, Path]:
    """The roles' policies and users (compose: MinIO's), each role's keys written to ``out_dir/<role>.env``
    (0600) for its service's ``--env-file``. Keys already written are kept, so a rerun changes nothing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    known: dict[str, S3Keys] = {}
    for path in out_dir.glob("*.env"):
        values = load_env_file(path)
        known[path.stem] = S3Keys(values["S3_ACCESS_KEY"], values["S3_SECRET_KEY"])
    written = {}
    for role, keys in bootstrap_identities(access, known).items():
        path = out_dir / f"{role}.env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in keys.env().items()))
        written[role] = path
    return written


def main(s3_identities: Path | None = None) -> int:
    """Entry point of ``photoenhance bootstrap``: the admin's settings from the environment; with
    ``s3_identities`` (compose, MinIO) also the services' own S3 users, their keys written there."""
    s3 = S3Settings.from_env()
    asyncio.run(bootstrap(NatsSettings.from_env("admin"), s3, TaskSettings.from_env()))
    if s3_identities is not None:
        for role, path in storage_identities(MinioAccess(s3), s3_identities).items():
            log.info("bootstrap: %s's S3 keys in %s", role, path)
    return 0
