"""Scale past one machine: a 3-node NATS cluster (JetStream replicas 3) on loopback loses a node
during a run of jobs; no job is lost and the services reconnect on their own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from photoenhance.servers import EmbeddedNatsCluster, EmbeddedS3

from .support import TEST_ENV, Stack, encode, finish, photo, submit, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedNatsCluster]:
    with EmbeddedNatsCluster(tmp_path / "cluster") as c:
        yield c


def submit_retrying(http: httpx.Client, data: bytes, name: str, deadline: float = 90) -> str:
    """Submit as a well-behaved client does: on 503, wait for Retry-After and try again."""
    end = time.monotonic() + deadline
    while True:
        r = http.post("/api/v1/enhance?scale=2&quality_level=fast", files={"file": (name, data, "image/jpeg")})
        if r.status_code != 503 or time.monotonic() > end:
            assert r.status_code == 200, r.text
            return r.json()["task_id"]
        assert int(r.headers["retry-after"]) > 0
        time.sleep(1)  # a client honouring Retry-After, shortened for the test


@pytest.mark.timeout(600)
def test_a_node_stops_mid_run_and_nothing_is_lost(cluster: EmbeddedNatsCluster, s3_server: EmbeddedS3,
                                                  model_dir: Path, tmp_path: Path) -> None:
    stack = Stack(nats=cluster, s3=s3_server, root=tmp_path, model_dir=model_dir,  # type: ignore[arg-type]
                  extra_env=dict(TEST_ENV))
    stack.start_edge()
    stack.start_enhancer("cluster-worker")
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            jpeg = [encode(photo("chelsea", size=(20 + i, 20))) for i in range(12)]
            ids = [submit(http, data, f"{i}.jpg", scale="2", quality_level="fast") for i, data in enumerate(jpeg[:8])]
            wait_until(lambda: http.get(f"/api/v1/status/{ids[1]}").json()["status"] == "completed", 120,
                       "the run to get going")

            # The node the services most likely talk to (the first URL) goes away mid-run.
            cluster.nodes[0].kill()

            # Accepted tasks finish; new ones are accepted and finish too: clients reconnected by themselves.
            # While JetStream elects new leaders the edge may answer 503 with Retry-After; a client retries.
            ids += [submit_retrying(http, data, f"late{i}.jpg") for i, data in enumerate(jpeg[8:])]
            for task_id in ids:
                assert finish(http, task_id, timeout=180)["status"] == "completed", task_id
            assert http.get(f"/api/v1/download/{ids[-1]}").status_code == 200
            health = http.get("/api/v1/health").json()
            assert health["bus"] == {"connected": True, "jetstream": True}
        assert stack.edge is not None and stack.edge.alive and stack.enhancers[0].alive
    finally:
        stack.stop()
