"""The face-restoration strength option, ``face_strength``: one definition (``bus.schemas.EnhanceOptions``),
parsed at the edge from the form, the query string or the mini-program's JSON, carried by the job and the task
record, and shown in the task's status. No server; the engine's blend is tested in
``tests/enhancer/test_engine_gfpgan.py``."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from bus.schemas import DEFAULT_FACE_STRENGTH, EnhanceJob, EnhanceOptions, TaskState
from bus.texts import ZH
from edge import options
from edge.errors import ApiError
from edge.routes.presigned import ProcessRequest
from edge.views import task_status


def test_default_is_documented_and_the_ends_are_allowed() -> None:
    assert EnhanceOptions().face_strength == DEFAULT_FACE_STRENGTH == 0.7
    assert EnhanceOptions(face_strength=0).face_strength == 0
    assert EnhanceOptions(face_strength=1).face_strength == 1


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), float("inf"), True, "0.5", None])
def test_out_of_range_values_are_refused_with_a_clear_sentence(value: object) -> None:
    with pytest.raises(ValueError, match=r"face_strength must be a number from 0 \(the original face\) to 1 "
                                         r"\(fully restored\), not"):
        EnhanceOptions(face_strength=value)  # type: ignore[arg-type]


def test_the_edge_reads_it_from_the_form_or_the_query_string() -> None:
    assert options.parse({"face_strength": "0.25"}).face_strength == 0.25
    assert options.parse({}, {"face_strength": "1"}).face_strength == 1.0
    assert options.parse({"face_strength": "0"}, {"face_strength": "1"}).face_strength == 0.0  # form wins
    assert options.parse({}).face_strength == DEFAULT_FACE_STRENGTH


@pytest.mark.parametrize(("raw", "english", "chinese"), [
    ("strong", "face_strength must be a number, not 'strong'.", "face_strength 必须是数字，不能是 'strong'。"),
    ("1.5", "face_strength must be a number from 0 (the original face) to 1 (fully restored), not 1.5.",
     "face_strength 只能是 0（保留原来的脸）到 1（完全修复）之间的数，不能是 1.5。"),
    ("nan", "from 0 (the original face) to 1 (fully restored), not nan.", "不能是 nan。"),
])
def test_bad_values_get_a_422_in_the_readers_language(raw: str, english: str, chinese: str) -> None:
    with pytest.raises(ApiError) as refused:
        options.parse({"face_strength": raw})
    assert refused.value.status == 422
    assert english in refused.value.message
    assert chinese in refused.value.said.render(ZH)


def test_the_mini_programs_json_carries_it() -> None:
    """``/api/v1/single-process-uploaded-image`` (the presigned flow) takes it as a number or a string."""
    for given in (0.4, "0.4"):
        body = ProcessRequest.model_validate({"file_key": "k", "face_strength": given})
        assert options.parse({"face_strength": body.face_strength}).face_strength == 0.4


def test_it_travels_in_the_job_and_the_record_and_the_status_shows_it() -> None:
    job = EnhanceJob(task_id="a" * 32, input_key="k", input_name="x.jpg", options=EnhanceOptions(face_strength=0.3))
    assert EnhanceJob.decode(job.encode()).options.face_strength == 0.3
    forged = {**job.to_dict(), "options": {**dataclasses.asdict(job.options), "face_strength": 3}}
    with pytest.raises(Exception, match="face_strength must be a number from 0"):
        EnhanceJob.decode(msgpack.packb(forged))
    state = TaskState(task_id="b" * 32, status="queued", created_at=1.0, updated_at=1.0, input_key="k",
                      input_name="x.jpg", options=EnhanceOptions(face_strength=0.3))
    assert task_status(TaskState.decode(state.encode())).options.face_strength == 0.3


def test_jobs_and_records_written_before_the_option_get_the_default() -> None:
    v1 = {"type": "pe.v1.enhance_job", "task_id": "a" * 32, "input_key": "k", "input_name": "x.jpg",
          "scale": 2, "quality": "fast", "tile_size": 0, "face_enhance": True}
    assert EnhanceJob.decode(msgpack.packb(v1)).options.face_strength == DEFAULT_FACE_STRENGTH
    record = {"type": "pe.v2.task", "task_id": "b" * 32, "status": "queued", "created_at": 1.0, "updated_at": 1.0,
              "input_key": "k", "input_name": "n", "options": {"scale": 4}}
    assert TaskState.decode(msgpack.packb(record)).options.face_strength == DEFAULT_FACE_STRENGTH
