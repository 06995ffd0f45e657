"""Jobs by capability, without servers: the vocabulary, the subjects and consumers built from it, the
permissions that follow, the edge's routing from presence, and the message versions (a ``pe.v1`` job or
record is still read, its flat options gathered into the one nested value)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from nats.js.errors import APIError

from bus import BusUnavailable, capabilities, subjects
from bus.capabilities import FACES, UPSCALE
from bus.codec import SchemaError
from bus.permissions import EDGE, ENHANCER, for_role
from bus.schemas import EnhanceJob, EnhanceOptions, JobResult, TaskState
from edge import dispatch, options
from edge.errors import ApiError
from edge.settings import EdgeSettings

AUTO, WITH_FACES, PLAIN = EnhanceOptions(), EnhanceOptions(face_enhance=True), EnhanceOptions(face_enhance=False)


@pytest.mark.parametrize(("opts", "offered", "expected"), [
    (AUTO, {UPSCALE, FACES}, FACES), (AUTO, {UPSCALE}, UPSCALE), (AUTO, set(), UPSCALE),
    (WITH_FACES, {UPSCALE}, FACES), (WITH_FACES, {FACES}, FACES),
    (PLAIN, {UPSCALE, FACES}, UPSCALE),
])
def test_the_capability_a_job_needs(opts: EnhanceOptions, offered: set[str], expected: str) -> None:
    assert capabilities.needed(opts, offered) == expected


def test_subjects_and_consumers_per_capability() -> None:
    assert subjects.jobs_subject(FACES) == "pe.jobs.enhance.faces"
    assert subjects.jobs_consumer(UPSCALE) == "enhancers-upscale"
    assert subjects.job_capability("pe.jobs.enhance.faces") == FACES
    assert subjects.job_capability(subjects.LEGACY_JOBS_SUBJECT) is None  # decided from the job's options
    assert subjects.job_capability("pe.jobs.enhance.other") is None
    assert len(set(subjects.JOBS_CONSUMERS)) == len(capabilities.CAPABILITIES)
    assert subjects.LEGACY_JOBS_CONSUMER not in subjects.JOBS_CONSUMERS
    for bad in ("waifu", "faces.>", "*"):
        with pytest.raises(ValueError):
            subjects.jobs_subject(bad)


def test_consumers_split_the_stream_without_overlap() -> None:
    """A work-queue stream refuses consumers whose filters overlap; together they cover every job subject."""
    from bus.connection import jobs_consumer, jobs_stream
    from bus.settings import TaskSettings

    tasks = TaskSettings()
    filters = [f for c in capabilities.CAPABILITIES for f in jobs_consumer(tasks, c).filter_subjects or ()]
    assert sorted(filters) == sorted(jobs_stream(tasks).subjects or ())
    assert len(filters) == len(set(filters))
    # Jobs of pe.v1 edges land where every worker pulls.
    assert subjects.LEGACY_JOBS_SUBJECT in (jobs_consumer(tasks, capabilities.BASE).filter_subjects or ())


def test_permissions_follow_the_capabilities() -> None:
    edge, enhancer = for_role(EDGE, "edge"), for_role(ENHANCER, "gpu-1")
    assert edge is not None and enhancer is not None
    for capability in capabilities.CAPABILITIES:
        consumer = subjects.jobs_consumer(capability)
        assert subjects.jobs_subject(capability) in edge.publish
        assert f"$JS.API.CONSUMER.INFO.PE_JOBS.{consumer}" in edge.publish
        assert f"$JS.API.CONSUMER.MSG.NEXT.PE_JOBS.{consumer}" in enhancer.publish
        assert f"$JS.ACK.PE_JOBS.{consumer}.>" in enhancer.publish
        assert f"$JS.API.CONSUMER.MSG.NEXT.PE_JOBS.{consumer}" not in edge.publish
    assert subjects.LEGACY_JOBS_SUBJECT not in edge.publish  # the edge queues by capability only
    assert not any(s.startswith("pe.jobs") for s in enhancer.publish)  # a worker never queues a job
    assert not any("enhancer.describe" in s for s in (*enhancer.publish, *enhancer.subscribe))


# --- message versions ------------------------------------------------------------------------------
V1_JOB = {"type": "pe.v1.enhance_job", "task_id": "a" * 32, "input_key": "inputs/a/x.jpg", "input_name": "x.jpg",
          "scale": 2, "quality": "fast", "tile_size": 0, "face_enhance": True, "owner": "o", "submitted_at": 1.0}


def test_a_v1_job_is_read_with_its_options_nested() -> None:
    job = EnhanceJob.decode(msgpack.packb(V1_JOB))
    assert job.options == EnhanceOptions(scale=2, quality="fast", tile_size=0, face_enhance=True)
    assert (job.task_id, job.owner, job.submitted_at) == ("a" * 32, "o", 1.0)
    assert job.to_dict()["type"] == "pe.v2.enhance_job" and job.to_dict()["options"]["scale"] == 2
    # A v1 job without options gets the defaults, as v1 readers gave it.
    bare = {k: v for k, v in V1_JOB.items() if k in ("type", "task_id", "input_key", "input_name")}
    assert EnhanceJob.from_dict(bare).options == EnhanceOptions()


def test_a_v1_record_is_read_and_written_back_as_v2() -> None:
    v1 = {"type": "pe.v1.task", "task_id": "b" * 32, "status": "queued", "created_at": 1.0, "updated_at": 1.0,
          "input_key": "k", "input_name": "n", "scale": 2, "quality": "medium", "tile_size": 64,
          "face_enhance": False, "queue_seq": 7}
    state = TaskState.decode(msgpack.packb(v1))
    assert state.options == EnhanceOptions(scale=2, quality="medium", tile_size=64, face_enhance=False)
    assert state.capability is None and state.queue_seq == 7
    opts = state.options
    assert (opts.scale, opts.quality, opts.tile_size, opts.face_enhance) == (2, "medium", 64, False)
    again = TaskState.decode(state.encode())
    assert again == state and state.to_dict()["type"] == "pe.v2.task"
    assert "scale" not in state.to_dict()  # the options travel once, nested


def test_a_record_names_a_known_capability_only() -> None:
    with pytest.raises(SchemaError):
        TaskState.from_dict({"type": TaskState.TYPE, "task_id": "t", "status": "queued", "created_at": 0.0,
                             "updated_at": 0.0, "input_key": "k", "input_name": "n", "capability": "magic"})


def test_the_job_result_completes_the_record() -> None:
    state = TaskState(task_id="c" * 32, status="processing", created_at=1.0, updated_at=2.0, input_key="k",
                      input_name="n.jpg", options=EnhanceOptions(scale=2), capability=UPSCALE, attempts=1, worker="w")
    result = JobResult(output_key="outputs/c/n_enhanced.jpg", output_name="n_enhanced.jpg",
                       output_content_type="image/jpeg", output_size=10, output_width=8, output_height=6,
                       engine="e:m", faces=0, timings={"engine": 0.5})
    done = state.completed(result, at=5.0, processing_time=3.0)
    assert (done.status, done.stage, done.progress, done.finished_at, done.processing_time) == (
        "completed", "completed", 1.0, 5.0, 3.0)
    assert (done.output_key, done.output_width, done.engine, done.faces, done.timings) == (
        result.output_key, 8, "e:m", 0, {"engine": 0.5})
    assert (done.worker, done.attempts, done.options) == ("w", 1, state.options)


# --- the edge: options and routing --------------------------------------------------------------------
def test_the_edge_parses_into_the_one_definition() -> None:
    assert options.parse({}) == EnhanceOptions()
    assert options.parse({"scale": "2", "face_enhance": "AUTO"}, {"scale": "4", "quality_level": "Fast"}) == \
        EnhanceOptions(scale=2, quality="fast")
    with pytest.raises(ApiError) as refused:
        options.parse({"tile_size": True})
    assert refused.value.status == 422


def fleet(*rows: tuple[str, list[str]]) -> Any:
    """Edge resources whose registry view shows these (status, capabilities) enhancers."""
    servers = [{"status": status, "capabilities": caps} for status, caps in rows]
    return SimpleNamespace(registry=SimpleNamespace(servers=lambda: servers))


def test_the_edge_routes_by_what_healthy_workers_offer() -> None:
    both = fleet(("healthy", [UPSCALE]), ("healthy", [FACES, UPSCALE]))
    assert dispatch.offered_capabilities(both) == {FACES, UPSCALE}
    assert dispatch.route(both, AUTO) == FACES
    assert dispatch.route(both, WITH_FACES) == FACES
    assert dispatch.route(both, PLAIN) == UPSCALE
    plain_only = fleet(("healthy", [UPSCALE]), ("unhealthy", [FACES, UPSCALE]), ("left", [FACES, UPSCALE]))
    assert dispatch.route(plain_only, AUTO) == UPSCALE
    assert dispatch.route(plain_only, PLAIN) == UPSCALE
    with pytest.raises(ApiError) as refused:
        dispatch.route(plain_only, WITH_FACES)
    assert refused.value.status == 503 and "Face restoration is not available" in refused.value.message
    # The base capability is every worker's: whoever answers the ping serves it (the registry may lag).
    assert dispatch.route(fleet(), PLAIN) == UPSCALE


async def test_a_job_jetstream_refuses_is_undone_and_the_client_told_to_come_back() -> None:
    """Not "the queue is full" (the edge checks that before, and the stream has no message limit): a refusal
    during a fail-over is the bus being away (503 with Retry-After, ``edge.errors``), and no record is left."""
    records: dict[str, str] = {}

    async def create(state: TaskState) -> int:
        records[state.task_id] = state.status
        return 1

    async def delete(task_id: str) -> None:
        records.pop(task_id)

    async def publish(*args: Any, **kwargs: Any) -> None:
        raise APIError(code=500, err_code=10077, description="stream is offline")

    res = fleet(("healthy", [UPSCALE]))
    res.settings = EdgeSettings.from_env()
    res.tasks = SimpleNamespace(create=create, kv=SimpleNamespace(delete=delete))
    res.js = SimpleNamespace(publish=publish)
    with pytest.raises(BusUnavailable, match=r"JetStream refused the job .*stream is offline"):
        await dispatch.submit(res, task_id="t" * 32, input_key="inputs/t/p.jpg", input_name="p.jpg", input_size=10,
                              width=20, height=20, options=PLAIN)
    assert records == {}
