"""Fixtures: a real ``nats-server`` with JetStream and a real S3 server on free loopback ports,
started once per session, with the edge and one enhancer as separate processes on top.

Nothing here is mocked: the services connect with their own role credentials, exactly as
``photoenhance up`` runs them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

import nats
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from .support import TEST_ENV, Stack, private_stack

# Tests never reach the internet: no `photoenhance up` or service they start fetches model weights (set before
# any starts, so every child process inherits it). tests/enhancer/test_models_fetch.py fetches from a local server.
os.environ["MODELS_FETCH"] = "off"


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
        s.start_enhancer("enhancer-1", ENHANCER_WARM_UP="on")  # as served: announced once warm
        yield s
    finally:
        s.stop()
    # Every flow the suite drove stayed within each role's permissions (bus/permissions.py).
    assert not s.permission_violations()


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


#: What makes a test slow: a real server (nats-server, S3, service processes) started for it.
_SERVER_FIXTURES = {"nats_server", "s3_server", "own_stack"}
_STARTS_SERVERS = ("EmbeddedNats(", "EmbeddedS3(", "EmbeddedNatsCluster(", "private_stack(", "running_billing(",
                   '"photoenhance", "up"')


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fast tests first: those that need no server run before every test that starts one, so a broken
    rule fails within seconds. (A stable sort: each group keeps its order, module fixtures included.)"""
    starts: dict[Path, bool] = {}

    def needs_servers(item: pytest.Item) -> bool:
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            return True
        path = Path(str(item.fspath))
        if path not in starts:
            starts[path] = any(s in path.read_text(errors="replace") for s in _STARTS_SERVERS)
        return starts[path]

    items.sort(key=needs_servers)
