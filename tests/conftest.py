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
import torch
from nats.aio.client import Client

import nats
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from .support import TEST_ENV, Stack, private_stack

# Tests never reach the internet: no `photoenhance up` or service they start fetches model weights (set before
# any starts, so every child process inherits it). tests/enhancer/test_models_fetch.py fetches from a local server.
os.environ["MODELS_FETCH"] = "off"


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` (``make test``), each worker and every service it starts compute on their share of the
    cores (at least one thread): with N workers each using every core, PyTorch's threads wait at each layer for one
    another while the other workers' threads hold the cores. Measured with two workers on two cores: 9 min 22 s so,
    7 min 50 s with a share each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the service processes the tests start
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's model folder, where the shipped Real-ESRGAN files are converted to PyTorch weights by whatever
    loads them first. With ``pytest -n`` (``make test``) the workers share it: each model is converted once
    (``enhancer.weights`` converts one at a time per folder; the others wait and read)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "models"
    folder.mkdir(exist_ok=True)
    return folder


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


#: The modules that take longest (seconds, one after another on the 2-core machine). `make test` runs pytest-xdist
#: workers, each given a whole module at a time as it frees up: the long ones go out first so that all end together
#: instead of one running a long module alone at the end. A module missing here only costs time, never a check.
_LONGEST = {"test_faults.py": 64, "test_pipeline_overlap.py": 42, "test_deadline.py": 40, "test_fleet.py": 39,
            "test_fault_run.py": 39, "test_up.py": 32, "test_resilience.py": 25, "test_memory_bound.py": 24,
            "test_browser.py": 23, "test_cluster.py": 23, "test_capability_routing.py": 21,
            "test_face_restoration_e2e.py": 21, "test_anonymous.py": 18, "test_enhancer_start.py": 17,
            "test_processes.py": 40, "test_credits.py": 14, "test_graceful_shutdown.py": 14,
            "test_reconciler_service.py": 10, "test_hostile_corpus.py": 10, "test_trust.py": 10, "test_fuzz.py": 9,
            "test_metrics.py": 9}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fast tests first: those that need no server run before every test that starts one, so a broken
    rule fails within seconds; then the server tests, longest modules first (``_LONGEST``). (A stable sort:
    each module keeps its order, module fixtures included.)"""
    starts: dict[Path, bool] = {}

    def needs_servers(item: pytest.Item) -> bool:
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            return True
        path = item.path
        if path not in starts:
            starts[path] = any(s in path.read_text(errors="replace") for s in _STARTS_SERVERS)
        return starts[path]

    def order(item: pytest.Item) -> tuple[bool, int]:
        slow = needs_servers(item)
        return slow, -_LONGEST.get(item.path.name, 0) if slow else 0

    items.sort(key=order)
