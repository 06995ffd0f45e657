"""Jobs routed by capability, on the real stack: two enhancers, one of them without face weights.

Every job that needs faces restored (``face_enhance=true``, and ``auto`` while a face-capable worker is on the
bus) waits in the faces queue, which only the worker with face weights pulls from: it completes there, on
its first attempt, and none fails — before, the worker without weights could claim such a job and fail it for
good. Plain jobs go to whichever worker is free. A job and a record of the previous message version
(``pe.v1``: options flat, the job on the one legacy subject) still run.

No GFPGAN weights can be downloaded here, so the face worker's model directory holds a GFPGAN checkpoint of
the real architecture with random weights (as in ``test_face_restoration_e2e.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import torch
from nats.aio.client import Client

import nats
from bus import subjects
from bus.capabilities import FACES, UPSCALE
from bus.schemas import TaskState
from bus.tasks import TaskStore, new_task_id
from enhancer.engines.gfpgan import WEIGHTS_FILE, gfpgan_arch

from .support import Stack, encode, finish, photo, private_stack, submit

PLAIN_WORKER, FACE_WORKER = "plain-worker", "face-worker"
SMALL = {"scale": "2", "quality_level": "fast", "tile_size": "0"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Stack]:
    """Edge + an enhancer with only the Real-ESRGAN weights + one whose model directory has GFPGAN's too."""
    root: Path = tmp_path_factory.mktemp("capabilities")
    faces = root / "face-models"
    faces.mkdir()
    torch.manual_seed(0)
    torch.save({"params_ema": gfpgan_arch().state_dict()}, faces / WEIGHTS_FILE)
    with private_stack(root, model_dir, PLAIN_WORKER) as stack:
        stack.start_enhancer(FACE_WORKER, MODEL_DIR=str(faces))
        yield stack


@pytest.fixture
def http(fleet: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.url, timeout=30) as client:
        yield client


@pytest.fixture
async def admin(fleet: Stack) -> AsyncIterator[Client]:
    nc = await nats.connect(**fleet.nats.connect_options("admin"))
    try:
        yield nc
    finally:
        await nc.close()


async def records(nc: Client, ids: list[str]) -> dict[str, TaskState]:
    store = TaskStore(await nc.jetstream().key_value(subjects.TASKS_BUCKET))
    found = {t: await store.get(t) for t in ids}
    assert all(found.values()), found
    return found  # type: ignore[return-value]


def test_the_fleet_says_what_it_can_do(http: httpx.Client) -> None:
    info = http.get("/api/v1/info").json()
    assert info["capabilities"] == [FACES, UPSCALE] and info["features"]["face_restoration"] is True
    workers = {e["id"]: e for e in info["enhancers"]}
    assert workers[PLAIN_WORKER]["capabilities"] == [UPSCALE]
    assert workers[FACE_WORKER]["capabilities"] == [FACES, UPSCALE]
    assert set(workers[FACE_WORKER]["models"]) == set(workers[FACE_WORKER]["engines"])


async def test_every_face_job_completes_on_the_worker_that_can_restore_faces(
        http: httpx.Client, admin: Client) -> None:
    data = encode(photo("coffee", size=(48, 48)), quality=90)
    with_faces = [await asyncio.to_thread(submit, http, data, f"face-{i}.jpg", face_enhance="true", **SMALL)
                  for i in range(4)]
    auto = [await asyncio.to_thread(submit, http, data, f"auto-{i}.jpg", face_enhance="auto", **SMALL)
            for i in range(2)]
    plain = [await asyncio.to_thread(submit, http, data, f"plain-{i}.jpg", face_enhance="false", **SMALL)
             for i in range(4)]
    statuses = {t: await asyncio.to_thread(finish, http, t) for t in with_faces + auto + plain}
    assert [s["status"] for s in statuses.values()] == ["completed"] * len(statuses), statuses
    done = await records(admin, list(statuses))

    for task_id in with_faces + auto:  # auto: a face-capable worker is on the bus, so faces
        record = done[task_id]
        assert record.capability == FACES
        # Claimed once, by the worker that can do it: never by the other one first.
        assert (record.worker, record.attempts) == (FACE_WORKER, 1), record
        assert record.engine is not None and record.engine.startswith("gfpgan:"), record.engine
        assert statuses[task_id]["output"]["engine"] == record.engine
    for task_id in plain:
        record = done[task_id]
        assert record.capability == UPSCALE and record.attempts == 1
        assert record.engine is not None and record.engine.startswith("realesrgan:"), record.engine
    # The face worker was busy with face jobs; the plain worker took plain ones meanwhile.
    assert any(done[t].worker == PLAIN_WORKER for t in plain)

    info = (await asyncio.to_thread(http.get, "/api/v1/info")).json()
    assert all(e["jobs_failed"] == 0 for e in info["enhancers"])
    assert info["queue"] == {"waiting": 0, "processing": 0}


async def test_a_v1_job_and_record_still_run(http: httpx.Client, admin: Client) -> None:
    """What a ``pe.v1`` edge left on the bus: a record with flat options, and its job on the legacy subject."""
    data = encode(photo("coffee", size=(40, 32)), quality=90)
    earlier = await asyncio.to_thread(submit, http, data, "earlier.jpg", face_enhance="false", **SMALL)
    assert (await asyncio.to_thread(finish, http, earlier))["status"] == "completed"
    input_key = (await records(admin, [earlier]))[earlier].input_key  # the bytes are in storage already

    task_id, now = new_task_id(), time.time()
    flat = {"scale": 2, "quality": "fast", "tile_size": 0, "face_enhance": False}
    kv = await admin.jetstream().key_value(subjects.TASKS_BUCKET)
    await kv.create(task_id, msgpack.packb({
        "type": "pe.v1.task", "task_id": task_id, "status": "queued", "created_at": now, "updated_at": now,
        "input_key": input_key, "input_name": "old.jpg", "input_size": len(data), "width": 40, "height": 32,
        "stage": "queued", "message": "Queued", **flat}))
    # The edge reads the old record...
    queued = (await asyncio.to_thread(http.get, f"/api/v1/status/{task_id}")).json()
    assert queued["status"] == "queued" and queued["queue_position"] is None
    assert queued["options"] == {"scale": 2, "quality_level": "fast", "tile_size": 0, "face_enhance": False,
                                 # options it predates: their defaults
                                 "face_strength": 0.7, "output_format": "auto", "output_quality": 92}

    # ...and a worker runs the old job from the legacy subject.
    job = {"type": "pe.v1.enhance_job", "task_id": task_id, "input_key": input_key, "input_name": "old.jpg",
           "submitted_at": now, **flat}
    await admin.jetstream().publish(subjects.LEGACY_JOBS_SUBJECT, msgpack.packb(job), headers={
        subjects.MSG_ID_HEADER: task_id, subjects.TYPE_HEADER: "pe.v1.enhance_job"})
    status = await asyncio.to_thread(finish, http, task_id)
    assert status["status"] == "completed", status
    assert (status["output"]["width"], status["output"]["height"]) == (80, 64)
    assert status["output"]["engine"].startswith("realesrgan:") and status["attempts"] == 1
    stored = msgpack.unpackb((await kv.get(task_id)).value)
    assert stored["type"] == TaskState.TYPE  # written back in the new version, with the later options' defaults
    assert stored["options"] == {**flat, "face_strength": 0.7, "output_format": "auto", "output_quality": 92}
    assert (await asyncio.to_thread(http.get, f"/api/v1/download/{task_id}")).status_code == 200
