"""The bus contract: schemas reject malformed messages (permissions per role: test_trust.py)."""

from __future__ import annotations

import msgpack
import pytest

from bus import capabilities, subjects
from bus.codec import SchemaError
from bus.schemas import EnhanceJob, EnhanceOptions, TaskState


def test_job_round_trips_and_ignores_unknown_fields() -> None:
    job = EnhanceJob(task_id="a" * 32, input_key="inputs/x/y.jpg", input_name="y.jpg", options=EnhanceOptions(scale=2))
    assert EnhanceJob.decode(job.encode()) == job
    newer = {**job.to_dict(), "priority": 5}
    assert EnhanceJob.from_dict(newer) == job


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"type": "pe.v1.enhance_job"}),
    msgpack.packb({"type": "pe.v9.other", "task_id": "a"}),
    msgpack.packb({"type": "pe.v1.enhance_job", "task_id": 5, "input_key": "k", "input_name": "n"}),
    msgpack.packb({"type": "pe.v1.enhance_job", "task_id": "t", "input_key": "k", "input_name": "n", "scale": 3}),
    msgpack.packb({"type": "pe.v1.enhance_job", "task_id": "t", "input_key": "k", "input_name": "n",
                   "tile_size": True}),
    msgpack.packb({"type": "pe.v2.enhance_job", "task_id": "t", "input_key": "k", "input_name": "n",
                   "options": {"scale": 3}}),
    msgpack.packb({"type": "pe.v2.enhance_job", "task_id": "t", "input_key": "k", "input_name": "n",
                   "options": {"tile_size": "400"}}),
    msgpack.packb({"type": "pe.v2.enhance_job", "task_id": "t", "input_key": "k", "input_name": "n",
                   "options": [4, "high"]}),
])
def test_malformed_messages_are_schema_errors(payload: bytes) -> None:
    with pytest.raises(SchemaError):
        EnhanceJob.decode(payload, subject=subjects.jobs_subject(capabilities.UPSCALE))


def test_task_state_rejects_unknown_status() -> None:
    with pytest.raises(SchemaError):
        TaskState.from_dict({"type": TaskState.TYPE, "task_id": "t", "status": "exploded", "created_at": 0.0,
                             "updated_at": 0.0, "input_key": "k", "input_name": "n"})


def test_subject_builders_refuse_injection() -> None:
    assert subjects.progress("ab12") == "pe.progress.ab12"
    for bad in ("a.b", "a*", ">", "a b", ""):
        with pytest.raises(ValueError):
            subjects.progress(bad)
