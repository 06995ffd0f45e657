"""Nothing accepted is lost: the edge restarted mid-task, a worker drained by SIGTERM, a worker
killed by SIGKILL mid-job (its job is redelivered and finished once), a poison message."""

from __future__ import annotations

import asyncio
import signal

import httpx
from nats.aio.client import Client

from bus import capabilities, subjects
from bus.schemas import TaskEvent

from .support import Stack, completed_facts, encode, finish, photo, submit, wait_until

#: x4plus on 4 tiles: seconds on 2 CPU cores, long enough to act in the middle of it.
SLOW = {"tile_size": "32", "quality_level": "high"}


def slow_photo() -> bytes:
    return encode(photo("coffee", size=(64, 64)))


def wait_processing(http: httpx.Client, task_id: str) -> None:
    wait_until(lambda: http.get(f"/api/v1/status/{task_id}").json()["status"] == "processing", 60,
               f"task {task_id} to be processing")


def test_edge_restarted_mid_task(stack: Stack, http: httpx.Client) -> None:
    task_id = submit(http, slow_photo(), "restart.jpg", **SLOW)
    wait_processing(http, task_id)
    assert stack.edge is not None
    assert stack.edge.stop(signal.SIGKILL) is not None
    stack.start_edge()  # same port, fresh process: no task state carried over in memory
    with httpx.Client(base_url=stack.url, timeout=30) as fresh:
        status = finish(fresh, task_id)
        assert status["status"] == "completed"
        r = fresh.get(f"/api/v1/download/{task_id}")
        assert r.status_code == 200 and len(r.content) == status["output"]["size"]


async def test_sigterm_drains_and_sigkill_is_recovered(stack: Stack, admin_nc: Client) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        first = stack.enhancers[0]

        # SIGTERM while holding a job: the worker finishes it, takes nothing new, leaves, exits 0.
        r = await http.post("/api/v1/enhance", params=SLOW, files={"file": ("a.jpg", slow_photo(), "image/jpeg")})
        held = r.json()["task_id"]
        await asyncio.to_thread(wait_processing, httpx.Client(base_url=stack.url), held)
        code = await asyncio.to_thread(first.stop, signal.SIGTERM, 240)
        assert code == 0, first.log()[-2000:]
        status = (await http.get(f"/api/v1/status/{held}")).json()
        assert status["status"] == "completed" and status["attempts"] == 1
        assert "draining 1 job(s)" in first.log()

        # No worker left on the bus: the edge says so at once instead of queueing into the void.
        r = await http.post("/api/v1/enhance", files={"file": ("b.jpg", slow_photo(), "image/jpeg")})
        assert r.status_code == 503 and "No enhancer is available" in r.json()["error"]
        assert r.headers["retry-after"]

        # SIGKILL mid-job: the job comes back after ack_wait and another worker finishes it, once.
        crashy = await asyncio.to_thread(stack.start_enhancer, "crashy")
        r = await http.post("/api/v1/enhance", params=SLOW, files={"file": ("c.jpg", slow_photo(), "image/jpeg")})
        lost = r.json()["task_id"]
        await asyncio.to_thread(wait_processing, httpx.Client(base_url=stack.url), lost)
        await asyncio.to_thread(crashy.kill)
        stack.enhancers.remove(crashy)
        stack.enhancers.remove(first)
        await asyncio.to_thread(stack.start_enhancer, "enhancer-1")
        status = await asyncio.to_thread(finish, httpx.Client(base_url=stack.url, timeout=30), lost)
        assert status["status"] == "completed", status
        assert status["attempts"] == 2
        facts = await completed_facts(admin_nc)
        assert facts[lost] == 1 and facts[held] == 1


async def test_poison_job_does_not_kill_the_worker(stack: Stack, admin_nc: Client) -> None:
    js = admin_nc.jetstream()
    plain = subjects.jobs_subject(capabilities.UPSCALE)
    await js.publish(plain, b"\xc1 not msgpack", headers={subjects.MSG_ID_HEADER: "poison-1"})
    await js.publish(plain, TaskEvent(task_id="x", kind="completed", at=0).encode(),
                     headers={subjects.MSG_ID_HEADER: "poison-2"})
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        r = await http.post("/api/v1/enhance?quality_level=fast&scale=2",
                            files={"file": ("ok.jpg", encode(photo(size=(32, 32))), "image/jpeg")})
        status = await asyncio.to_thread(finish, httpx.Client(base_url=stack.url, timeout=30), r.json()["task_id"])
    assert status["status"] == "completed"
    assert all(p.alive for p in stack.enhancers)
    assert "rejecting a malformed job message" in stack.enhancers[0].log()
