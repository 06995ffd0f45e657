"""A job past its deadline is handed back, then failed with a sentence on its last attempt: never held
forever by the worker's ``in_progress()`` keep-alive. An engine step that overran cannot be killed: a tiled
one is stopped at its next tile; one stuck in a single call keeps its thread, and its slot takes no job
until that call returns, and a worker stopping meanwhile does not wait for it.

A real worker driven in-process (so the test can see its slots) on servers of its own, with genuinely
slow real jobs: Real-ESRGAN x4plus on a 96×96 photo on the CPU takes seconds (about four on two cores),
against a half-second deadline.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from bus import connect, subjects, wait_for_resources
from bus.schemas import FAILED, PROCESSING, QUEUED, EnhanceOptions, TaskProgress, TaskState
from bus.storage import ObjectStore, input_key
from bus.tasks import TaskStore, new_task_id
from edge import dispatch
from edge.resources import Resources, open_resources
from edge.settings import EdgeSettings
from enhancer.settings import EnhancerSettings
from enhancer.worker import Worker
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import TEST_ENV, Stack, encode, photo

SIZE = 96
#: The photo's 32-pixel tiles (a tiled job reports each).
TILES = ((SIZE + 31) // 32) ** 2
T = TypeVar("T")


@pytest.fixture
def servers(tmp_path: Path, model_dir: Path) -> Iterator[Stack]:
    """NATS, S3 and the bus's resources with no enhancer process: the test's worker is the only one."""
    with EmbeddedNats(tmp_path / "nats") as nats_server, EmbeddedS3(tmp_path / "s3") as s3:
        stack = Stack(nats=nats_server, s3=s3, root=tmp_path, model_dir=model_dir, extra_env=dict(TEST_ENV))
        try:
            stack.start_edge()  # declares the streams and buckets first
            yield stack
        finally:
            stack.stop()


def from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], read: type[T]) -> T:
    """A service's settings as it would read them from exactly ``env``."""
    with monkeypatch.context() as m:
        for name in [n for n in os.environ if n.startswith(("NATS_", "S3_", "ENHANCER_", "TASK_"))]:
            m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        return read.from_env()  # type: ignore[attr-defined]


@dataclass
class Run:
    """What happened to one slow job on a one-slot worker with ``TASK_MAX_ATTEMPTS=2``."""

    worker: Worker
    final: TaskState | None = None
    #: Every version of the task's record, in order.
    records: list[TaskState] = field(default_factory=list)
    #: Per pull the worker made: how many of its slots were retired at that moment.
    pulls: list[int] = field(default_factory=list)
    #: The live progress messages of the task.
    progress: list[str] = field(default_factory=list)
    #: Slots retired when the failure was recorded, i.e. the second attempt's engine step still ran.
    stuck_at_failure: int = 0
    #: Every version of the record of a quick job queued right behind the slow one (when there is one).
    behind: list[TaskState] = field(default_factory=list)


async def submit(res: Resources, size: int, options: EnhanceOptions) -> str:
    data = encode(photo("chelsea", size=(size, size)), quality=90)
    task_id = new_task_id()
    key = input_key(task_id, "photo.jpg")
    await res.store.put_bytes(key, data, "image/jpeg")
    await dispatch.submit(res, task_id=task_id, input_key=key, input_name="photo.jpg", input_size=len(data),
                          width=size, height=size, options=options)
    return task_id


async def run_slow_job(servers: Stack, monkeypatch: pytest.MonkeyPatch, tile_size: int, *,
                       prefetch: int = 0, behind: bool = False) -> Run:
    import torch

    cpu = torch.device("cpu")
    settings = from_env(monkeypatch, servers.env(
        "enhancer", "deadline-worker", ENHANCER_ID="deadline-worker", ENHANCER_JOB_DEADLINE="0.5",
        TASK_MAX_ATTEMPTS="2", ENHANCER_CONCURRENCY="1", ENHANCER_PREFETCH=str(prefetch),
        ENHANCER_WARM_UP="on"),  # the deadline is for the job alone, not the model loading
        EnhancerSettings).for_device(cpu)
    edge_settings = from_env(monkeypatch, servers.env("edge"), EdgeSettings)

    async with open_resources(edge_settings) as res, connect(settings.nats, "deadline-worker") as nc:
        task_id = await submit(res, SIZE, EnhanceOptions(scale=4, quality="high", tile_size=tile_size,
                                                          face_enhance=False))
        quick = await submit(res, 16, EnhanceOptions(scale=2, quality="fast", face_enhance=False)) if behind else None

        worker = Worker(settings, nc, TaskStore(await wait_for_resources(nc.jetstream())), ObjectStore(settings.s3),
                        device=cpu, engines=["realesrgan"])
        run = Run(worker=worker)
        pull = worker._fetch

        async def watched_pull(sub, stop):  # type: ignore[no-untyped-def]
            run.pulls.append(worker.stuck_slots)
            return await pull(sub, stop)

        worker._fetch = watched_pull  # type: ignore[method-assign]

        async def follow(task: str, into: list[TaskState]) -> None:
            async for state in res.tasks.watch(task):
                into.append(state)

        async def on_progress(msg) -> None:  # type: ignore[no-untyped-def]
            run.progress.append(TaskProgress.decode(msg.data).message)

        live = await res.nc.subscribe(subjects.progress(task_id), cb=on_progress)
        following = [asyncio.create_task(follow(task_id, run.records))]
        if quick is not None:
            following.append(asyncio.create_task(follow(quick, run.behind)))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            final = await dispatch.wait_final(res, task_id, timeout=240)
            assert final is not None, f"the task never ended: {run.records[-1:]}"
            run.final, run.stuck_at_failure = final, worker.stuck_slots
            stop.set()
            await asyncio.wait_for(running, 60)  # not waiting for an engine step that overran
        finally:
            stop.set()
            for task in following:
                task.cancel()
            await live.unsubscribe()
    return run


def assert_handed_back_then_failed(run: Run) -> None:
    # Failed on its last attempt, with a sentence a person understands.
    assert run.final is not None
    assert run.final.status == FAILED and run.final.attempts == 2, run.final
    assert run.final.error == ("Enhancing this photo took longer than the 0.5-second limit per attempt. "
                               "Gave up after 2 attempts."), run.final.error
    # Handed back after its first attempt (no keep-alive held it), and taken again.
    handed_back = [r for r in run.records if r.status == QUEUED and r.attempts == 1]
    assert handed_back, run.records
    assert handed_back[-1].message == ("Enhancing this photo took longer than the 0.5-second limit per attempt. "
                                       "Retrying (attempt 2 of 2).")


async def until_slots_return(worker: Worker) -> None:
    for _ in range(1200):
        if worker.stuck_slots == 0:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("the slot never came back after its engine step returned")


async def test_a_job_stuck_in_one_engine_call_is_given_up_and_its_slot_rests_until_the_call_returns(
        servers: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    run = await run_slow_job(servers, monkeypatch, tile_size=0)  # the whole photo in one call: nothing stops it
    assert_handed_back_then_failed(run)
    # The slot rested while the overrunning call ran: no pull then (the second attempt came after it).
    assert run.stuck_at_failure == 1, "the second attempt's engine call was not still running at its deadline"
    assert 1 not in run.pulls, f"the worker pulled a job while its only slot was retired: {run.pulls}"
    assert run.worker.handed_back == 1  # the stop did not wait for the call that still runs
    await until_slots_return(run.worker)  # the call does return in the end, and the slot with it


async def test_a_tiled_job_past_its_deadline_stops_at_its_next_tile(
        servers: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    run = await run_slow_job(servers, monkeypatch, tile_size=32)  # TILES tiles, each reported
    assert_handed_back_then_failed(run)
    await until_slots_return(run.worker)
    tiles = [m for m in run.progress if m.startswith("Upscaling tile")]
    # Run to their end, the two attempts would have reported 2 × TILES tiles.
    assert len(tiles) < TILES, f"the engine went on after its job was given up: {tiles}"
    # Nothing the given-up attempt reported late reached the record of the job back in the queue.
    back = next(i for i, r in enumerate(run.records) if r.status == QUEUED and r.attempts == 1)
    again = next(i for i, r in enumerate(run.records) if r.status == PROCESSING and r.attempts == 2)
    assert [r.stage for r in run.records[back:again]] == [QUEUED], run.records[back:again]


async def test_a_prefetched_job_behind_a_stuck_call_goes_back_to_the_queue_at_once(
        servers: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """With prefetch (the GPU default) a second job waits behind the slow one; when the slot is retired it
    is handed back for another worker rather than held behind a call that may never return, and the wait
    in line was not counted against its own deadline."""
    run = await run_slow_job(servers, monkeypatch, tile_size=0, prefetch=1, behind=True)
    assert_handed_back_then_failed(run)
    assert 1 not in run.pulls, f"the worker pulled a job while its only slot was retired: {run.pulls}"
    handed_back = [r for r in run.behind if r.status == QUEUED and r.attempts == 1]
    assert handed_back, run.behind
    assert handed_back[-1].message == ("This enhancer's engine was stuck on an earlier photo that overran its "
                                       "time limit. Retrying (attempt 2 of 2).")
    await until_slots_return(run.worker)


@pytest.mark.parametrize(("value", "cuda", "cpu"), [(None, 600.0, 7200.0), ("auto", 600.0, 7200.0),
                                                    ("90", 90.0, 90.0)])
def test_the_deadline_is_scaled_to_the_device_unless_given(
        monkeypatch: pytest.MonkeyPatch, value: str | None, cuda: float, cpu: float) -> None:
    import torch

    if value is None:
        monkeypatch.delenv("ENHANCER_JOB_DEADLINE", raising=False)
    else:
        monkeypatch.setenv("ENHANCER_JOB_DEADLINE", value)
    settings = EnhancerSettings.from_env()
    assert settings.for_device(torch.device("cuda")).job_deadline == cuda
    assert settings.for_device(torch.device("cpu")).job_deadline == cpu


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_deadline_that_is_not_a_positive_number_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from bus.settings import SettingsError

    monkeypatch.setenv("ENHANCER_JOB_DEADLINE", value)
    with pytest.raises(SettingsError, match="ENHANCER_JOB_DEADLINE"):
        EnhancerSettings.from_env()
