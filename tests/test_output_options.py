"""The person's choice of output format and quality (one definition, ``bus.schemas.EnhanceOptions``, parsed at
the edge, carried by the job), and the size limit on results (``bus.output_size``): a ×4 that would be too large
is made at the largest scale that fits, and the task says so. No server: the end-to-end test is in
``tests/test_enhance_e2e.py``."""

from __future__ import annotations

import dataclasses
import math
import random
from types import SimpleNamespace

import msgpack
import pytest

from bus.output_size import DEFAULT_MAX_OUTPUT_PIXELS, MAX_SIDE, ResultTooLarge, plan
from bus.schemas import OUTPUT_FORMATS, EnhanceJob, EnhanceOptions, JobResult, TaskState
from bus.texts import ZH
from edge import options
from edge.errors import ApiError
from edge.settings import EdgeSettings
from edge.views import task_status
from enhancer.settings import EnhancerSettings


# --- the option --------------------------------------------------------------------------------------------
def test_defaults_keep_the_service_as_it_was() -> None:
    opts = EnhanceOptions()
    assert (opts.output_format, opts.output_quality) == ("auto", 92)
    assert OUTPUT_FORMATS == ("auto", "jpeg", "png", "webp", "avif")


@pytest.mark.parametrize(("given", "message"), [
    ({"output_format": "gif"}, "output_format must be one of auto, jpeg, png, webp, avif, not 'gif'"),
    ({"output_quality": 0}, "output_quality must be a whole number from 1 to 100, not 0"),
    ({"output_quality": 101}, "output_quality must be a whole number from 1 to 100, not 101"),
    ({"output_quality": True}, "output_quality must be a whole number from 1 to 100, not True"),
])
def test_bad_values_are_refused_with_a_sentence(given: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnhanceOptions(**given)


def test_the_edge_reads_them_from_the_form_or_the_query_string() -> None:
    assert options.parse({"output_format": "WebP", "output_quality": "80"}) == \
        EnhanceOptions(output_format="webp", output_quality=80)
    assert options.parse({}, {"output_format": ".jpg", "output_quality": 70}) == \
        EnhanceOptions(output_format="jpeg", output_quality=70)
    assert options.parse({"output_format": "png"}, {"output_format": "avif"}).output_format == "png"  # form wins
    for bad, words in (({"output_format": "bmp"}, "output_format must be one of"),
                       ({"output_quality": "high"}, "output_quality must be a whole number, not 'high'"),
                       ({"output_quality": "0"}, "from 1 to 100")):
        with pytest.raises(ApiError) as refused:
            options.parse(bad)
        assert refused.value.status == 422 and words in str(refused.value.message), refused.value.message


def test_jobs_and_records_written_before_the_option_still_read() -> None:
    v1 = {"type": "pe.v1.enhance_job", "task_id": "a" * 32, "input_key": "inputs/a/x.jpg", "input_name": "x.jpg",
          "scale": 2, "quality": "fast", "tile_size": 0, "face_enhance": True}
    job = EnhanceJob.decode(msgpack.packb(v1))
    assert (job.options.output_format, job.options.output_quality, job.max_output_pixels) == ("auto", 92, 0)
    v2 = {"type": "pe.v2.enhance_job", "task_id": "a" * 32, "input_key": "k", "input_name": "x.jpg",
          "options": {"scale": 4, "quality": "high", "tile_size": 400, "face_enhance": None}}
    assert EnhanceJob.decode(msgpack.packb(v2)).options == EnhanceOptions()
    record = {"type": "pe.v2.task", "task_id": "b" * 32, "status": "queued", "created_at": 1.0, "updated_at": 1.0,
              "input_key": "k", "input_name": "n", "options": {"scale": 4}}
    state = TaskState.decode(msgpack.packb(record))
    assert (state.output_scale, state.notice, state.options.output_format) == (None, None, "auto")


def test_the_choice_travels_in_the_job_and_a_bad_one_is_refused_at_the_boundary() -> None:
    job = EnhanceJob(task_id="c" * 32, input_key="k", input_name="x.jpg", max_output_pixels=10_000_000,
                     options=EnhanceOptions(output_format="avif", output_quality=60))
    again = EnhanceJob.decode(job.encode())
    assert again == job and again.options.output_format == "avif" and again.max_output_pixels == 10_000_000
    forged = {**job.to_dict(), "options": {**dataclasses.asdict(job.options), "output_format": "exe"}}
    with pytest.raises(Exception, match="output_format must be one of"):
        EnhanceJob.decode(msgpack.packb(forged))


def test_the_record_keeps_the_scale_the_worker_made_and_why() -> None:
    planned = plan(1000, 800, 4, max_pixels=8_000_000)
    state = TaskState(task_id="d" * 32, status="processing", created_at=1.0, updated_at=1.0, input_key="k",
                      input_name="n.jpg", output_scale=3.2, notice="Enlarged ×3.2 instead of ×4 to …")
    result = JobResult(output_key="o", output_name="n_enhanced.webp", output_content_type="image/webp",
                       output_size=1, output_width=3160, output_height=2528, engine="e:m", faces=0,
                       output_scale=planned.scale, notice=planned.notice)
    done = TaskState.decode(state.completed(result, at=2.0, processing_time=1.0).encode())
    assert done.output_scale == 3.16
    assert done.notice == "Enlarged ×3.16 instead of ×4 to stay under the 8-megapixel limit on results."
    assert task_status(done, language=ZH).notice == "为不超过结果 8 百万像素的上限，放大了 ×3.16，而不是 ×4。"
    assert (task_status(done).output_scale, task_status(done).options.scale) == (3.16, 4)
    plain = state.completed(dataclasses.replace(result, output_scale=None, notice=None), at=2.0, processing_time=1.0)
    assert (plain.notice, plain.notice_text, task_status(plain).output_scale) == (None, None, 4.0)


# --- the size limit on results ------------------------------------------------------------------------------
def test_a_result_that_fits_is_made_as_asked() -> None:
    p = plan(2000, 2000, 4)  # exactly 64 MP
    assert (p.scale, p.input_size, p.size, p.notice, p.reduced) == (4.0, (2000, 2000), (8000, 8000), None, False)


def test_a_x4_of_a_phone_photo_is_made_at_the_largest_scale_that_fits() -> None:
    p = plan(4032, 3024, 4)  # a 12 MP phone photo: ×4 would be 195 MP
    assert p.scale == 2.29 and p.reduced
    assert p.size == (p.input_size[0] * 4, p.input_size[1] * 4) == (9232, 6924)  # the engine makes the result
    assert p.size[0] * p.size[1] <= DEFAULT_MAX_OUTPUT_PIXELS
    assert str(p.notice) == "Enlarged ×2.29 instead of ×4 to stay under the 64-megapixel limit on results."
    assert p.notice is not None and p.notice.render(ZH) == "为不超过结果 64 百万像素的上限，放大了 ×2.29，而不是 ×4。"
    assert plan(4032, 3024, 2).notice is None  # ×2 fits: 48.8 MP
    assert str(plan(5472, 3648, 2).notice) == \
        "Enlarged ×1.79 instead of ×2 to stay under the 64-megapixel limit on results."
    assert plan(100, 60, 4, max_pixels=50_000).size == (288, 172)  # the limit is a setting


def test_the_format_s_own_limit_counts_too() -> None:
    p = plan(4200, 2, 4, "webp")
    assert (p.scale, p.size) == (3.9, (16380, 8))  # 2 pixels stay 2: the shape is kept
    assert str(p.notice) == \
        "Enlarged ×3.9 instead of ×4 to stay within the 16383-pixel width and height that WebP allows."
    assert plan(4200, 2, 4, "jpeg").scale == 4.0
    with pytest.raises(ResultTooLarge, match=r"A WebP image can be at most 16383 pixels wide or tall, and this photo "
                                             r"is 20000 pixels wide; choose another output format\."):
        plan(20000, 100, 2, "webp")
    with pytest.raises(ResultTooLarge, match=r"This photo \(300×300 pixels\) is larger than the 0.05-megapixel"):
        plan(300, 300, 2, max_pixels=50_000)


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
def test_every_plan_fits_and_is_the_largest_that_does(output_format: str) -> None:
    rng = random.Random(7)
    side = MAX_SIDE[output_format]
    for _ in range(3000):
        width = rng.choice([rng.randint(1, 64), rng.randint(1, 20_000)])
        height = rng.randint(1, max(1, min(20_000, 20_000_000 // width)))
        scale = rng.choice([2, 4])
        limit = rng.choice([DEFAULT_MAX_OUTPUT_PIXELS, 20_000_000, 1_000_000])
        try:
            p = plan(width, height, scale, output_format, max_pixels=limit)
        except ResultTooLarge:
            assert width * height > limit or max(width, height) > side
            continue
        w, h = p.size
        assert w * h <= limit and max(w, h) <= side, (width, height, scale, p)
        assert (w, h) == (p.input_size[0] * scale, p.input_size[1] * scale)
        if p.reduced:
            assert 1 <= p.scale < scale and f"×{p.scale:g} instead of ×{scale}" in str(p.notice)
            bigger = p.scale + 0.01  # the next step up would not fit
            assert width * height * bigger**2 > limit or max(width, height) * bigger > side
            assert abs(w / width - p.scale) <= scale / width + 0.01  # close to the scale it says
        else:
            assert (p.scale, p.size) == (scale, (width * scale, height * scale))


def test_the_limit_is_a_setting_on_both_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EdgeSettings.from_env().max_output_pixels == DEFAULT_MAX_OUTPUT_PIXELS == 64_000_000
    monkeypatch.setenv("MAX_OUTPUT_MEGAPIXELS", "32")
    assert EdgeSettings.from_env().max_output_pixels == 32_000_000
    assert EnhancerSettings.from_env().max_output_pixels == 32_000_000
    assert math.isclose(plan(4000, 3000, 4, max_pixels=32_000_000).scale, 1.63)


def test_the_worker_keeps_to_the_smaller_of_its_own_limit_and_the_edges() -> None:
    """A job from an older edge (no limit in it) or an edge with a larger one cannot make a worker exceed its own."""
    from enhancer.worker import PermanentFailure, Worker

    worker = SimpleNamespace(settings=SimpleNamespace(max_output_pixels=32_000_000))

    def planned(edge_limit: int, width: int, height: int, output_format: str = "auto") -> float:
        job = EnhanceJob(task_id="e" * 32, input_key="k", input_name="x.jpg", max_output_pixels=edge_limit,
                         options=EnhanceOptions(scale=4, output_format=output_format))
        return Worker._output_plan(worker, job, width, height).scale  # type: ignore[arg-type]

    assert planned(0, 4000, 3000) == 1.63  # no limit in the job: the worker's own (32 MP)
    assert planned(DEFAULT_MAX_OUTPUT_PIXELS, 4000, 3000) == 1.63  # the edge's is larger: still the worker's
    assert planned(8_000_000, 2000, 1500) == 1.63  # the edge's is smaller: the edge's
    assert planned(0, 1000, 750) == 4.0
    with pytest.raises(PermanentFailure, match="A WebP image can be at most 16383 pixels"):
        planned(0, 17000, 2, "webp")
