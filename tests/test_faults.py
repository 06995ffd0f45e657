"""Faults in the infrastructure: NATS restarted mid-run, S3 unreachable for a while. Every accepted
task completes or is reported failed with a reason; the services recover on their own."""

from __future__ import annotations

import time

import httpx
import pytest

from .support import Stack, encode, finish, photo, submit, wait_until


def tiny(i: int) -> bytes:
    return encode(photo("chelsea", size=(20 + i, 16)))


@pytest.mark.timeout(600)
def test_nats_restarted_mid_run(own_stack: Stack) -> None:
    with httpx.Client(base_url=own_stack.url, timeout=30) as http:
        ids = [submit(http, tiny(i), f"{i}.jpg", scale="2", quality_level="fast") for i in range(8)]
        own_stack.nats.stop()  # SIGTERM; JetStream's file store keeps the queue and the task records
        own_stack.nats.start()  # same ports, same data, same credentials
        for task_id in ids:
            assert finish(http, task_id, timeout=180)["status"] == "completed", task_id
        # The services reconnected by themselves: a new task goes through end to end.
        late = submit(http, tiny(9), "late.jpg", scale="2", quality_level="fast")
        assert finish(http, late)["status"] == "completed"
    assert own_stack.edge is not None and own_stack.edge.alive and own_stack.enhancers[0].alive


@pytest.mark.timeout(600)
def test_storage_unreachable_for_a_while(own_stack: Stack) -> None:
    with httpx.Client(base_url=own_stack.url, timeout=30) as http:
        slow = encode(photo("coffee", size=(64, 64)))
        busy = submit(http, slow, "busy.jpg", tile_size="32", quality_level="high")  # busy while S3 goes away
        waiting = [submit(http, tiny(i), f"w{i}.jpg", scale="2", quality_level="fast") for i in range(3)]
        wait_until(lambda: http.get(f"/api/v1/status/{busy}").json()["status"] == "processing", 60, "busy")
        own_stack.s3.stop()
        try:
            # Uploads are refused clearly while storage is away, not accepted into a void.
            r = http.post("/api/v1/enhance", files={"file": ("x.jpg", tiny(1), "image/jpeg")})
            assert r.status_code == 503 and "Storage is unavailable" in r.json()["error"]
            assert r.headers["retry-after"]
            health = http.get("/api/v1/health")
            assert health.status_code == 503 and health.json()["storage"]["reachable"] is False
            # The worker finishes the model run, cannot store the result, and says it will retry.
            retrying = wait_until(lambda: (b := http.get(f"/api/v1/status/{busy}").json())["status"] == "queued"
                                  and "Retrying" in b["message"] and b, 120, "the worker to hit the outage")
            assert "storage" in retrying["message"].lower()
        finally:
            own_stack.s3.start()  # same ports and data
        # Nothing accepted is lost: each task completes, or fails with a reason a person can read.
        for task_id in [busy, *waiting]:
            status = finish(http, task_id, timeout=240)
            assert status["status"] == "completed" or "storage" in (status["error"] or "").lower(), status
        assert http.get(f"/api/v1/status/{busy}").json()["attempts"] >= 2
        assert http.get("/api/v1/health").json()["storage"]["reachable"] is True
        again = submit(http, tiny(5), "again.jpg", scale="2", quality_level="fast")
        assert finish(http, again)["status"] == "completed"


def test_sigterm_hands_back_a_job_that_outlasts_the_drain_timeout(own_stack: Stack) -> None:
    """Stopping an enhancer does not wait out a long job: past ENHANCER_DRAIN_TIMEOUT the job goes back
    to the queue at once, the process exits, and another enhancer finishes it."""
    first = own_stack.enhancers.pop()
    assert first.stop() == 0  # idle: a plain drain
    impatient = own_stack.start_enhancer("impatient", ENHANCER_DRAIN_TIMEOUT="1")
    with httpx.Client(base_url=own_stack.url, timeout=30) as http:
        # x4plus on 64² in 32-pixel tiles: several seconds on a CPU, well past the 1-second drain timeout.
        task_id = submit(http, encode(photo("chelsea", size=(64, 64)), quality=90), "long.jpg",
                         quality_level="high", tile_size="32", face_enhance="false")
        wait_until(lambda: http.get(f"/api/v1/status/{task_id}").json()["stage"] == "upscaling", 120,
                   "the long job to be on the engine")
        started = time.monotonic()
        assert impatient.stop(timeout=30) == 0
        assert time.monotonic() - started < 10, "SIGTERM waited for the job instead of handing it back"
        assert "handing them back to the queue" in impatient.log()
        assert http.get(f"/api/v1/status/{task_id}").json()["status"] != "completed"

        own_stack.start_enhancer("successor")
        final = finish(http, task_id)
        assert final["status"] == "completed" and final["attempts"] == 2, final
