"""How long will it take: every estimate checked against what really happens (README, "How long will it take?"),
and the quality level a fleet without a GPU gets by default.

In process: the worker's estimator on synthetic progress timelines, its moving averages, the edge's estimate for
a waiting task against a simulated queue, the default quality decided from the registry's view, ``/api/v1/info``.
On the real stack: one photo's estimate, read at 30-50 % of its tiles, against the time it really still took.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from bus import capabilities
from bus.schemas import ALIVE, COMPLETED, PROCESSING, QUEUED, EnhanceOptions, EnhancerPresence, TaskProgress, TaskState
from bus.settings import NatsSettings, S3Settings, TaskSettings
from bus.texts import EN, ZH
from edge import eta, options, texts
from edge.app import create_app
from edge.registry import Registry, Seen
from edge.settings import EdgeSettings
from enhancer.presence import Presence
from enhancer.progress import Remaining, Reporter
from enhancer.throughput import MIN_MEGAPIXELS, Throughput

from .support import encode, finish, photo, submit, wait_until
from .test_events import idle_queue, read_events


def within_twice(estimate: float | None, actual: float) -> bool:
    return estimate is not None and actual / 2 <= estimate <= actual * 2


# --- The worker's estimate, on synthetic timelines -------------------------------------------------------------
@dataclass
class Timeline:
    """A job's progress reports, (stage, done, total, at), and when it really ended."""

    reports: list[tuple[str, int, int, float]]
    end: float


def job(tile_seconds: list[float], *, started: float = 100.0, before: float = 0.4, startup: float = 0.0,
        tail: float = 0.5) -> Timeline:
    """Fetched and decoded within ``before`` s, then tiles taking ``tile_seconds`` each (the first ``startup`` s
    more), then encoding and storing the result in ``tail`` s."""
    t = started + before / 2
    reports = [("fetched", 0, 0, t)]
    t += before / 2
    reports.append(("decoded", 0, 0, t))
    t += startup
    for k, seconds in enumerate(tile_seconds, 1):
        t += seconds
        reports.append(("upscaling", k, len(tile_seconds), t))
    reports.append(("encoding", 0, 0, t + tail / 2))
    return Timeline(reports, t + tail)


def estimates(timeline: Timeline, started: float = 100.0,
              expected: float | None = None) -> list[tuple[str, int, int, float | None, float]]:
    """(stage, done, total, estimate, actual seconds left) right after each report."""
    remaining = Remaining(started, expected)
    rows = []
    for stage, done, total, at in timeline.reports:
        remaining.seen(stage, done, total, at)
        rows.append((stage, done, total, remaining.seconds(at), timeline.end - at))
    return rows


def grid_tile_seconds(width: int, height: int, tile: int, seconds_per_megapixel: float) -> list[float]:
    """Seconds per tile of a ``width``×``height`` photo cut row by row into ``tile``-pixel tiles (edge tiles are
    smaller, hence quicker), at a steady pace."""
    edges = lambda n: [min(tile, n - i) for i in range(0, n, tile)]  # noqa: E731
    return [h * w / 1e6 * seconds_per_megapixel for h in edges(height) for w in edges(width)]


def test_steady_tiles_are_estimated_from_their_own_pace() -> None:
    rows = estimates(job([4.0] * 10))
    for stage, done, total, estimate, actual in rows:
        if stage == "upscaling" and done < total:
            assert within_twice(estimate, actual), (done, estimate, actual)
    # From the second tile on, the pace is exact: only the result's encoding is not in it.
    assert [round(e, 6) for s, d, _, e, _ in rows if s == "upscaling" and d >= 2] == [4.0 * (10 - d) for d in
                                                                                      range(2, 11)]


def test_a_real_photos_tiles_at_a_third_to_a_half_are_within_twice_the_truth() -> None:
    """1 MP in 400-pixel tiles (9, the edge ones smaller), the first tile slower (first call), each ±25 %."""
    jitter = random.Random(14)
    for pace in (35.0, 100.0, 400.0):  # seconds per megapixel: fast, medium and high on two cores
        tiles = [s * jitter.uniform(0.75, 1.25) for s in grid_tile_seconds(1024, 1024, 400, pace)]
        timeline = job(tiles, startup=0.1 * tiles[0], tail=0.02 * sum(tiles))
        checked = [(d, e, a) for s, d, t, e, a in estimates(timeline) if s == "upscaling" and 0.3 <= d / t <= 0.5]
        assert checked and all(within_twice(e, a) for _, e, a in checked), (pace, checked)


def test_before_the_engine_reports_the_expected_time_counts_down() -> None:
    rows = estimates(job([5.0] * 4), expected=22.0)
    fetched, decoded = rows[0], rows[1]
    assert fetched[3] == pytest.approx(22.0 - 0.2) and decoded[3] == pytest.approx(22.0 - 0.4)
    assert within_twice(decoded[3], decoded[4])
    # Nothing measured on this worker yet: it cannot tell until the first tile is done.
    assert [e for s, _, _, e, _ in estimates(job([5.0] * 4)) if s != "upscaling"][:2] == [None, None]
    # Past what was expected, outside a stage it can measure: it does not pretend.
    late = Remaining(0.0, expected=10.0)
    late.seen("decoded", 0, 0, 12.0)
    assert late.seconds(12.0) is None


def test_a_stage_started_over_is_measured_afresh() -> None:
    """After an out-of-memory the engine redoes the image in smaller tiles: the old pace says nothing."""
    r = Remaining(0.0)
    r.seen("decoded", 0, 0, 1.0)
    r.seen("upscaling", 1, 4, 11.0)
    r.seen("upscaling", 1, 16, 12.0)  # started over: 16 tiles of a quarter the size
    r.seen("upscaling", 2, 16, 14.5)
    assert r.seconds(14.5) == pytest.approx(2.5 * 14)


def test_faces_then_the_upscaling_still_to_come() -> None:
    r = Remaining(0.0, expected=60.0)
    r.seen("faces_detected", 2, 0, 3.0)
    r.seen("restoring", 1, 2, 8.0)
    assert r.seconds(8.0) == pytest.approx(52.0)  # the whole job expected, less its time so far
    quick = Remaining(0.0, expected=9.0)
    quick.seen("restoring", 1, 4, 8.0)
    assert quick.seconds(8.0) == pytest.approx(24.0)  # the faces alone outlast what was expected
    assert Remaining(0.0).seconds(1.0) is None


async def test_the_reporter_sends_its_estimate_with_progress_and_into_the_record() -> None:
    published: list[TaskProgress] = []
    recorded: list[float | None] = []

    class Bus:
        async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
            published.append(TaskProgress.decode(data, subject=subject))

    async def record(stage: str, progress: float, text: Any, eta_seconds: float | None) -> None:
        recorded.append(eta_seconds)

    reporter = Reporter(Bus(), "a" * 32, record, min_interval=0)
    await reporter.report("fetched")
    reporter.remaining.expected = 100.0
    await reporter.report("decoded")
    assert published[0].eta_seconds is None and recorded[0] is None
    assert 99 <= published[1].eta_seconds <= 100 and recorded[1] == published[1].eta_seconds  # type: ignore[operator]


# --- The worker's moving averages --------------------------------------------------------------------------------
def test_throughput_is_a_moving_average_per_quality_level() -> None:
    t = Throughput()
    assert t.expected("fast", 1.0) is None and t.published() == (None, {})
    t.add("fast", 1.0, 30.0)
    t.add("high", 0.5, 200.0)
    assert t.expected("fast", 2.0) == pytest.approx(60.0) and t.expected("high", 1.0) == pytest.approx(400.0)
    t.add("fast", 1.0, 40.0)
    assert 30.0 < t.per_megapixel["fast"] < 40.0  # moves towards the newest, does not jump to it
    job_seconds = t.job_seconds
    t.add("fast", MIN_MEGAPIXELS / 10, 2.0)  # a thumbnail: mostly fixed costs
    assert t.per_megapixel["fast"] < 40.0 and t.job_seconds != job_seconds  # counted as a job, not per megapixel
    job_seconds, per_megapixel = t.published()
    assert job_seconds == round(t.job_seconds or 0, 3) and set(per_megapixel) == {"fast", "high"}


def test_the_heartbeat_carries_the_throughput_to_the_edges_registry() -> None:
    t = Throughput()
    t.add("fast", 1.0, 30.0)
    beat = Presence(None, worker_id="w", heartbeat=1.0, device="cpu", engines=["realesrgan"],  # type: ignore[arg-type]
                    capacity=1, counters=lambda: (0, 1, 0), throughput=t).snapshot(ALIVE)
    assert (beat.job_seconds, beat.seconds_per_megapixel) == (30.0, {"fast": 30.0})
    again = EnhancerPresence.decode(beat.encode())  # JSON in the bucket
    [seen] = registry_of(again, now=time.time()).servers()
    assert (seen["job_seconds"], seen["seconds_per_megapixel"]) == (30.0, {"fast": 30.0})
    # A beat from an enhancer from before: nothing measured, so no estimate (never an error).
    old = {k: v for k, v in again.to_dict().items() if k not in ("job_seconds", "seconds_per_megapixel")}
    assert EnhancerPresence.from_dict(old).job_seconds is None


# --- The edge's estimate for a waiting task, against a simulated queue ----------------------------------------
def row(worker: str, *, job_seconds: float | None, capacity: int = 1, rates: dict[str, float] | None = None,
        status: str = "healthy", device: str = "cpu", caps: tuple[str, ...] = (capabilities.BASE,)) -> dict[str, Any]:
    return {"server_id": worker, "status": status, "device": device, "capabilities": list(caps),
            "capacity": capacity, "job_seconds": job_seconds, "seconds_per_megapixel": rates or {}}


def waiting_task(quality: str = "fast", width: int = 1000, height: int = 1000) -> TaskState:
    return TaskState(task_id="b" * 32, status=QUEUED, created_at=0.0, updated_at=0.0, input_key="k", input_name="x",
                     width=width, height=height, options=EnhanceOptions(quality=quality),
                     capability=capabilities.BASE, queue_seq=9)


def simulated_wait(workers: list[tuple[int, float]], position: int, own: float, running_left: float) -> float:
    """When a task at ``position`` really ends: workers (capacity, seconds a job) with every slot busy with a job
    ``running_left`` of its time from done; FIFO, each job to the slot free first; ``own``: its own job's share of
    a typical one's time."""
    slots = [(running_left * seconds, seconds) for capacity, seconds in workers for _ in range(capacity)]
    for _ in range(position - 1):  # the jobs ahead
        i = min(range(len(slots)), key=lambda k: slots[k][0])
        slots[i] = (slots[i][0] + slots[i][1], slots[i][1])
    i = min(range(len(slots)), key=lambda k: slots[k][0])
    return slots[i][0] + own * slots[i][1]


@pytest.mark.parametrize("workers", [[(1, 10.0)], [(2, 10.0)], [(1, 10.0), (2, 30.0)], [(2, 20.0), (1, 12.0)],
                                     [(4, 300.0), (4, 200.0), (1, 150.0)]])
@pytest.mark.parametrize("position", [1, 2, 5, 12])
@pytest.mark.parametrize("running_left", [0.1, 0.5, 1.0])
def test_a_waiting_tasks_estimate_is_within_twice_the_simulated_truth(
        workers: list[tuple[int, float]], position: int, running_left: float) -> None:
    rows = [row(f"w{i}", job_seconds=seconds, capacity=capacity, rates={"fast": seconds})  # 1 MP jobs
            for i, (capacity, seconds) in enumerate(workers)]
    estimate = eta.estimate(rows, waiting_task(), position)
    assert within_twice(estimate, simulated_wait(workers, position, 1.0, running_left)), estimate


def test_a_waiting_tasks_own_run_is_from_its_size_and_quality() -> None:
    rows = [row("w", job_seconds=20.0, rates={"fast": 35.0, "high": 400.0})]
    assert eta.estimate(rows, waiting_task("high"), 1) == 10 + 400
    assert eta.estimate(rows, waiting_task("fast", 500, 500), 1) == 10 + 9  # 0.25 MP, rounded up
    # A level nobody has measured yet: an average job.
    assert eta.estimate(rows, waiting_task("medium"), 3) == 50 + 20
    # Too large for the result's limits, so shrunk first: it is the shrunk photo the engine enlarges.
    assert eta.estimate(rows, waiting_task("high", 2000, 2000).replace(output_scale=2.0), 1) == 10 + 400


def test_no_estimate_without_measurements_and_only_from_those_who_serve_the_queue() -> None:
    assert eta.estimate([], waiting_task(), 1) is None
    assert eta.estimate([row("new", job_seconds=None)], waiting_task(), 1) is None
    others = [row("sick", job_seconds=1.0, status="unhealthy"),
              row("faces", job_seconds=1.0, caps=(capabilities.FACES,)),
              row("ok", job_seconds=10.0, rates={"fast": 10.0})]
    assert eta.estimate(others, waiting_task(), 2) == 15 + 10
    assert eta.estimate(others, waiting_task(), None) is None  # not queued any more


def test_a_running_tasks_estimate_counts_down_from_when_it_was_made() -> None:
    running = waiting_task().replace(status=PROCESSING, updated_at=1000.0, eta_seconds=30.0)
    assert eta.estimate([], running, None, now=1012.0) == 18
    assert eta.estimate([], running, None, now=1100.0) == 1  # overdue: not done yet, so about a second
    assert eta.estimate([], running.replace(eta_seconds=None), None, now=1012.0) is None
    assert eta.estimate([], running.replace(status=COMPLETED), None, now=1012.0) is None
    assert eta.counted_down(12.5, 100.0, 102.0) == 11 and eta.counted_down(None, 0, 1) is None


# --- The default quality level, from the fleet -------------------------------------------------------------------
def test_a_fleet_without_a_gpu_defaults_to_fast_and_any_gpu_to_high() -> None:
    cpu, gpu = row("c", job_seconds=None), row("g", job_seconds=None, device="cuda:0")
    assert options.default_quality([cpu]) == ("fast", texts.DEFAULT_QUALITY_CPU())
    assert options.default_quality([cpu, row("c2", job_seconds=None)])[0] == "fast"
    assert options.default_quality([cpu, gpu]) == ("high", texts.DEFAULT_QUALITY_GPU())
    assert options.default_quality([cpu, {**gpu, "status": "unhealthy"}])[0] == "fast"  # only who serves counts
    assert options.default_quality([{**gpu, "status": "left"}]) == ("high", texts.DEFAULT_QUALITY_NO_ENHANCER())


def test_the_default_applies_only_when_the_client_names_no_level() -> None:
    cpu, gpu = [row("c", job_seconds=None)], [row("g", job_seconds=None, device="cuda")]
    for form, query, fleet, quality in [({}, {}, cpu, "fast"), ({"quality_level": ""}, {}, cpu, "fast"),
                                        ({}, {}, gpu, "high"), ({"quality_level": "high"}, {}, cpu, "high"),
                                        ({}, {"quality_level": "medium"}, cpu, "medium")]:
        parsed = options.parse(form, query)
        assert options.with_fleet_default(parsed, fleet, form, query).quality == quality, (form, query, fleet)


def registry_of(*presences: EnhancerPresence, now: float) -> Registry:
    registry = Registry(kv=None, missed_beats=3, forget_after=300)  # type: ignore[arg-type]
    registry._seen.update({p.worker_id: Seen(p, at=now) for p in presences})
    return registry


def presence(worker: str, device: str) -> EnhancerPresence:
    return EnhancerPresence(worker_id=worker, state=ALIVE, at=time.time(), started_at=time.time() - 60,
                            heartbeat=5.0, device=device, capabilities=[capabilities.BASE], job_seconds=12.0,
                            seconds_per_megapixel={"fast": 35.0})


async def test_info_says_which_default_applies_and_why_in_the_readers_language() -> None:
    config = EdgeSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings())
    app = create_app(config)
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        for fleet, quality, reason in [([presence("cpu-1", "cpu"), presence("cpu-2", "cpu")], "fast",
                                        texts.DEFAULT_QUALITY_CPU),
                                       ([presence("cpu-1", "cpu"), presence("gpu-1", "cuda:0")], "high",
                                        texts.DEFAULT_QUALITY_GPU)]:
            app.state.resources = SimpleNamespace(settings=config, registry=registry_of(*fleet, now=time.time()))
            for language, headers in [(EN, {}), (ZH, {"Accept-Language": "zh-CN"})]:
                r = await client.get("/api/v1/info", headers=headers)
                assert r.status_code == 200, r.text
                body = r.json()
                assert (body["default_quality"], body["default_quality_reason"]) == (
                    quality, reason().render(language))


# --- On the real stack: an estimate against the time it really took --------------------------------------------
@pytest.mark.timeout(600)
def test_a_photos_estimate_at_a_third_to_a_half_of_its_tiles_is_within_twice_the_time_really_left(
        http: httpx.Client, stack: Any) -> None:
    """The stack's one enhancer runs on a CPU: a photo sent without a quality level runs at fast, and the record
    says so. 16 tiles of several hundred milliseconds each: the estimate is read once 30-50 % of them are done
    (polled, never slept for), then compared with when the task really ended."""
    idle_queue(http)
    info = http.get("/api/v1/info").json()
    assert info["default_quality"] == "fast" and "CPU" in info["default_quality_reason"]
    data = encode(photo("astronaut", size=(640, 640)), quality=90)
    task_id = submit(http, data, "eta.jpg", tile_size="160", face_enhance="false")
    events: list[tuple[str, dict]] = []
    reader = threading.Thread(target=read_events, args=(stack.url, task_id, events))
    reader.start()

    def a_third_to_a_half_done() -> tuple[dict, float] | None:
        read_at = time.time()
        body = http.get(f"/api/v1/status/{task_id}").json()
        if body["status"] not in (QUEUED, PROCESSING):
            return body, read_at  # ended: said below
        tiles = (body["progress"] - 0.35) / 0.55 if body["stage"] == "upscaling" else 0.0
        return (body, read_at) if 0.3 <= tiles <= 0.5 and body["eta_seconds"] is not None else None

    body, read_at = wait_until(a_third_to_a_half_done, 300, "30-50 % of the tiles to be done", interval=0.05)
    assert body["status"] == PROCESSING, f"ended before 30-50 % of its tiles were seen: {body}"
    final = finish(http, task_id)
    reader.join(60)
    assert final["status"] == COMPLETED, final
    assert final["options"]["quality_level"] == "fast"  # the default used, as the record keeps it
    actual = final["updated_at"] - read_at  # the completed record's time: when the worker finished
    assert within_twice(body["eta_seconds"], actual), (body["eta_seconds"], actual, body["message"])
    assert final["eta_seconds"] is None
    # The event stream carries it too: on the live tiles and on the status while processing.
    tiles = [p for kind, p in events if kind == "progress" and p["stage"] == "upscaling"]
    assert tiles and all(p["eta_seconds"] is not None for p in tiles[1:]), tiles
    assert any(s["eta_seconds"] for kind, s in events if kind == "status" and s["status"] == PROCESSING)
