"""The enhancer pipelines its jobs: the next job is fetched and decoded while the engine runs, and a
prefetched job is still an ordinary delivery (kept alive while held, redelivered if its worker dies).

The engine is the benchmark-only ``bench-resize`` with a fixed delay, so the engine's duration is known;
it announces its start ("upscaling" 0/1) and end (1/1) on the bus. Every claim below is read from the
progress events' timestamps and the task records, never from how long the test slept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

import nats
from bus import subjects
from bus.schemas import TaskProgress, TaskState
from bus.tasks import TaskStore
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from .support import TEST_ENV, Stack, completed_facts, encode, finish, photo, wait_until

DELAY = 1.5  # seconds each job spends in the engine


@pytest.fixture
def own_stack(s3_server: EmbeddedS3, model_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    """An edge on a bus of its own (so the session's real-model enhancer takes none of these jobs)."""
    with EmbeddedNats(tmp_path / "nats") as nats_server:
        stack = Stack(nats=nats_server, s3=s3_server, root=tmp_path, model_dir=model_dir,
                      extra_env={**TEST_ENV, "ENHANCER_ENGINE": "bench-resize", "BENCH_ENGINE_DELAY": str(DELAY)})
        try:
            stack.start_edge()
            yield stack
        finally:
            stack.stop()


@pytest.fixture
async def bus(own_stack: Stack) -> AsyncIterator[Client]:
    nc = await nats.connect(**own_stack.nats.connect_options("admin"))
    try:
        yield nc
    finally:
        await nc.close()


class Timeline:
    """Progress events per task: when each stage was announced (wall clock, from the event)."""

    def __init__(self) -> None:
        self.events: list[TaskProgress] = []

    async def on_msg(self, msg) -> None:
        self.events.append(TaskProgress.decode(msg.data))

    def at(self, task_id: str, stage: str, *, last: bool = False) -> float:
        times = [e.at for e in self.events if e.task_id == task_id and e.stage == stage]
        assert times, f"no {stage!r} event for {task_id}: {[(e.task_id[:6], e.stage) for e in self.events]}"
        return times[-1] if last else times[0]

    def engine(self, task_id: str) -> tuple[float, float]:
        """(start, end) of the task's engine step: bench-resize reports 0/1 first and 1/1 when done."""
        return self.at(task_id, "upscaling"), self.at(task_id, "upscaling", last=True)


async def post_all(stack: Stack, n: int, tag: str) -> list[str]:
    """Submit ``n`` small photos at once; returns their task ids in submission order."""
    data = encode(photo("chelsea", size=(64, 48)))
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        ids = []
        for i in range(n):
            r = await http.post("/api/v1/enhance?scale=2", files={"file": (f"{tag}{i}.jpg", data, "image/jpeg")})
            assert r.status_code == 200, r.text
            ids.append(r.json()["task_id"])
        return ids


async def records(nc: Client, ids: list[str]) -> list[TaskState]:
    store = TaskStore(await nc.jetstream().key_value(subjects.TASKS_BUCKET))
    return [await store.get(t) for t in ids]  # type: ignore[misc]


async def run_jobs(stack: Stack, nc: Client, n: int, tag: str) -> tuple[list[str], Timeline]:
    timeline = Timeline()
    sub = await nc.subscribe(subjects.PROGRESS_WILDCARD, cb=timeline.on_msg)
    try:
        ids = await post_all(stack, n, tag)
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            for task_id in ids:
                assert (await asyncio.to_thread(finish, http, task_id, 120))["status"] == "completed"
        await nc.flush()
    finally:
        await sub.unsubscribe()
    return ids, timeline


async def test_next_job_is_prepared_while_the_engine_runs(own_stack: Stack, bus: Client) -> None:
    """One slot, prefetch 1: job k+1 is fetched and decoded before job k's engine ends, then starts on the
    engine the moment it is free — and the engine still runs one job at a time."""
    await asyncio.to_thread(own_stack.start_enhancer, "piped", ENHANCER_PREFETCH="1")
    ids, timeline = await run_jobs(own_stack, bus, 3, "piped")
    for a, b in pairwise(ids):
        a_start, a_end = timeline.engine(a)
        b_start, b_end = timeline.engine(b)
        assert a_end - a_start >= DELAY * 0.95 and b_end - b_start >= DELAY * 0.95
        assert timeline.at(b, "fetched") < timeline.at(b, "decoded") < a_end, "not prepared during the engine"
        assert b_start >= a_end, "two jobs on one engine at once"
        assert b_start - a_end < 0.5 * DELAY, "the prepared job did not start as soon as the engine was free"
    done = await records(bus, ids)
    assert all(r.worker == "piped" and r.attempts == 1 for r in done)
    assert all(r.timings["wait"] > 0.5 * DELAY for r in done[1:]), [r.timings for r in done]
    assert timeline.at(ids[0], "encoding") >= timeline.engine(ids[0])[1]


async def test_without_prefetch_the_next_job_is_pulled_when_the_engine_is_free(own_stack: Stack, bus: Client) -> None:
    """The control (and ``ENHANCER_PREFETCH=0`` honoured): no job is held while the engine is busy."""
    await asyncio.to_thread(own_stack.start_enhancer, "unpiped", ENHANCER_PREFETCH="0")
    ids, timeline = await run_jobs(own_stack, bus, 2, "unpiped")
    assert timeline.at(ids[1], "fetched") > timeline.engine(ids[0])[1]


@pytest.mark.timeout(240)
async def test_prefetched_job_is_kept_alive_and_redelivered_when_its_worker_dies(
        own_stack: Stack, bus: Client) -> None:
    slow = await asyncio.to_thread(own_stack.start_enhancer, "holder", ENHANCER_PREFETCH="1",
                                   BENCH_ENGINE_DELAY="60")
    timeline = Timeline()
    sub = await bus.subscribe(subjects.PROGRESS_WILDCARD, cb=timeline.on_msg)
    try:
        running, waiting = await post_all(own_stack, 2, "held")
        await asyncio.to_thread(wait_until, lambda: any(
            e.task_id == waiting and e.stage == "decoded" for e in timeline.events), 30, "the prefetch")
        # An idle worker joins. The prefetched job stays with its holder past several ack_waits (4 s):
        # in_progress() keeps it, so it is neither redelivered nor done twice.
        await asyncio.to_thread(own_stack.start_enhancer, "rescuer", ENHANCER_PREFETCH="1", BENCH_ENGINE_DELAY="0")
        await asyncio.sleep(2 * float(TEST_ENV["TASK_ACK_WAIT"]))
        infos = [await bus.jetstream().consumer_info(subjects.JOBS_STREAM, c) for c in subjects.JOBS_CONSUMERS]
        assert sum(i.num_ack_pending for i in infos) == 2 and sum(i.num_redelivered for i in infos) == 0
        held = await records(bus, [running, waiting])
        assert [(r.worker, r.attempts, r.status) for r in held] == [("holder", 1, "processing")] * 2

        # The holder dies with one job on its engine and one prefetched: both come back and finish once.
        await asyncio.to_thread(slow.kill)
        own_stack.enhancers.remove(slow)
        with httpx.Client(base_url=own_stack.url, timeout=30) as http:
            for task_id in (running, waiting):
                assert (await asyncio.to_thread(finish, http, task_id, 120))["status"] == "completed"
    finally:
        await sub.unsubscribe()
    done = await records(bus, [running, waiting])
    assert [(r.worker, r.attempts) for r in done] == [("rescuer", 2)] * 2
    facts = await completed_facts(bus)
    assert facts.get(running) == 1 and facts.get(waiting) == 1
