"""Fixtures: a real ``nats-server`` with JetStream and a real S3 server on free loopback ports,
started once per session, with the edge and one enhancer as separate processes on top.

Nothing here is mocked: the services connect with their own role credentials, exactly as
``photoenhance up`` runs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

import nats
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from .support import Stack

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

#: Settings that make the fault tests quick: a dead worker's job is redelivered after 4 s.
TEST_ENV = {"TASK_ACK_WAIT": "4", "MAX_UPLOAD_MB": "5", "MAX_INPUT_MEGAPIXELS": "4", "SYNC_TIMEOUT": "120",
            "ENHANCER_CONCURRENCY": "1", "ENHANCER_HEARTBEAT": "1", "ADMIN_TOKEN": ADMIN_TOKEN,
            # The suite sends bursts from one address; test_limits.py checks the limits themselves.
            "RATE_LIMIT_ENHANCE": "10000/60", "RATE_LIMIT_ACCOUNT": "10000/60",
            # Likewise for the visitors' daily quota (tests/billing/test_anonymous.py checks it)
            # and the open-connection limits (tests/test_neighbours.py checks them).
            "BILLING_ANONYMOUS_DAILY": "0",
            **{f"EDGE_{pool}{scope}": "10000" for pool in ("STREAMS", "DOWNLOADS", "READS", "UPLOADS")
               for scope in ("", "_PER_CLIENT")}}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    with EmbeddedS3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def stack(nats_server: EmbeddedNats, s3_server: EmbeddedS3, model_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Edge + one enhancer on the session's servers."""
    s = Stack(nats=nats_server, s3=s3_server, root=tmp_path_factory.mktemp("stack"), model_dir=model_dir,
              extra_env=dict(TEST_ENV))
    try:
        s.start_edge()
        s.start_enhancer("enhancer-1")
        yield s
    finally:
        s.stop()
    # Every flow the suite drove stayed within each role's permissions (bus/permissions.py).
    assert not s.permission_violations()


@contextmanager
def private_stack(root: Path, model_dir: Path, enhancer: str) -> Iterator[Stack]:
    """Servers of its own plus the edge and one enhancer, so that breaking them disturbs no other test."""
    with EmbeddedNats(root / "nats") as nats_server, EmbeddedS3(root / "s3") as s3:
        s = Stack(nats=nats_server, s3=s3, root=root, model_dir=model_dir, extra_env=dict(TEST_ENV))
        try:
            s.start_edge()
            s.start_enhancer(enhancer)
            yield s
        finally:
            s.stop()


@pytest.fixture
def own_stack(tmp_path: Path, model_dir: Path) -> Iterator[Stack]:
    with private_stack(tmp_path, model_dir, "own-worker") as s:
        yield s


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        yield client


@pytest.fixture
async def admin_nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """An operator connection (like the ``nats`` CLI's), for watching what travels on the bus."""
    nc = await nats.connect(**nats_server.connect_options("admin"))
    try:
        yield nc
    finally:
        await nc.close()
