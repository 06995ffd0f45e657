"""The whole path through HTTP: upload → NATS → enhancer (real model) → S3 → status → download."""

from __future__ import annotations

import asyncio
import io
import re
import time

import httpx
import numpy as np
import pytest
from minio import Minio
from nats.aio.client import Client
from PIL import Image

from bus import subjects
from bus.schemas import TaskProgress

from .support import encode, finish, photo, sharpness, submit
from .support.camera import as_p3, camera_exif, colourful, display_p3, identifying_metadata, patch_centres, seen


def test_real_photo_is_enhanced_by_the_high_quality_model(http: httpx.Client) -> None:
    """A real photo (scikit-image's cat) comes back 4× larger and measurably sharper than bicubic. (High quality
    asked for: this CPU-only stack's default is fast, tests/test_eta.py.)"""
    original = photo("chelsea", size=(80, 56))
    task_id = submit(http, encode(original, quality=92), "cat photo.jpg", quality_level="high")
    status = finish(http, task_id)
    assert status["status"] == "completed", status
    assert status["progress"] == 1.0
    assert status["result_url"] == status["download_url"] == f"/api/v1/download/{task_id}"
    assert status["processing_time"] > 0
    assert status["output"]["engine"].startswith("realesrgan:RealESRGAN_x4plus")

    r = http.get(f"/api/v1/download/{task_id}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-disposition"].startswith('attachment; filename="cat photo_enhanced.jpg"')
    result = Image.open(io.BytesIO(r.content))
    assert result.format == "JPEG" and result.size == (320, 224)

    decoded = Image.open(io.BytesIO(encode(original, quality=92))).convert("RGB")
    bicubic = decoded.resize((320, 224), Image.Resampling.BICUBIC)
    assert sharpness(result) > 1.5 * sharpness(bicubic), (sharpness(result), sharpness(bicubic))
    # Still the same picture: downscaled back, it matches the input closely.
    back = result.convert("RGB").resize(decoded.size, Image.Resampling.BOX)
    diff = np.abs(np.asarray(back, np.float64) - np.asarray(decoded, np.float64)).mean()
    assert diff < 12, diff


def test_png_with_alpha_stays_png_at_scale_2(http: httpx.Client) -> None:
    img = photo("coffee", size=(48, 40)).convert("RGBA")
    alpha = Image.linear_gradient("L").resize(img.size)
    img.putalpha(alpha)
    task_id = submit(http, encode(img, "PNG"), "cup.png", "image/png", scale="2", quality_level="fast")
    assert finish(http, task_id)["status"] == "completed"
    r = http.get(f"/api/v1/download/{task_id}")
    assert r.headers["content-type"] == "image/png"
    assert 'filename="cup_enhanced.png"' in r.headers["content-disposition"]
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (96, 80) and out.mode == "RGBA"
    # The transparency gradient survived: top rows transparent, bottom rows opaque.
    a = out.getchannel("A")
    assert a.getpixel((48, 2)) < 30 and a.getpixel((48, 77)) > 225


def multi_picture_jpeg(primary: Image.Image, other: Image.Image) -> bytes:
    """A multi-picture JPEG, as many phones save their photos (Pillow reads it as "MPO")."""
    buf = io.BytesIO()
    primary.save(buf, "MPO", save_all=True, append_images=[other])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    return buf.getvalue()


def test_a_phones_multi_picture_jpeg_is_enhanced_from_its_primary_picture(http: httpx.Client) -> None:
    cat = photo("chelsea", size=(40, 30))
    data = multi_picture_jpeg(cat, Image.new("RGB", (40, 30), (0, 0, 255)))
    task_id = submit(http, data, "IMG_0001.JPG", scale="2", quality_level="fast", tile_size="0")
    assert finish(http, task_id)["status"] == "completed"
    r = http.get(f"/api/v1/download/{task_id}")
    out = Image.open(io.BytesIO(r.content))
    assert r.headers["content-type"] == "image/jpeg" and out.size == (80, 60)
    # The photo, not the second picture (solid blue): the result looks like the cat, scaled.
    diff = np.abs(np.asarray(out.resize((40, 30)), dtype=float) - np.asarray(cat, dtype=float)).mean()
    assert diff < 20, diff


def test_the_person_chooses_the_output_format_and_gets_an_upright_clean_photo(http: httpx.Client) -> None:
    """A phone photo (stored sideways with EXIF orientation 6, a GPS position, a serial number, maker notes and a
    Display P3 profile) asked as WebP at quality 80: the download is a WebP named .webp, upright, in the colours
    of its profile, and without any of the identifying metadata."""
    picture = colourful((64, 48))
    data = encode(picture, "JPEG", quality=95, exif=camera_exif(6), icc_profile=display_p3())
    task_id = submit(http, data, "IMG_0042.JPG", scale="2", quality_level="fast", tile_size="0",
                     output_format="webp", output_quality="80")
    status = finish(http, task_id)
    assert status["status"] == "completed", status
    assert (status["options"]["output_format"], status["options"]["output_quality"]) == ("webp", 80)
    assert (status["output_scale"], status["notice"]) == (2.0, None)
    assert (status["output"]["content_type"], status["output"]["filename"]) == ("image/webp", "IMG_0042_enhanced.webp")

    r = http.get(f"/api/v1/download/{task_id}")
    assert r.headers["content-type"] == "image/webp"
    assert 'filename="IMG_0042_enhanced.webp"' in r.headers["content-disposition"]
    out = Image.open(io.BytesIO(r.content))
    assert out.format == "WEBP" and out.size == (96, 128)  # upright: 48×64, ×2
    assert out.info.get("icc_profile") == display_p3()
    assert identifying_metadata(r.content) == []
    upright = picture.transpose(Image.Transpose.ROTATE_270)
    shown = seen(out.resize(upright.size, Image.Resampling.BOX))
    expected = as_p3(upright)
    assert np.abs(shown - expected).mean() < 12
    as_srgb = np.asarray(upright, np.int16)  # what a lost (or ignored) profile would show
    for x, y in patch_centres(picture.size):  # the strong colours, where the profile shows
        u, v = picture.size[1] - 1 - y, x
        right, wrong = np.abs(shown[v, u] - expected[v, u]), np.abs(shown[v, u] - as_srgb[v, u])
        assert right.max() <= 24 and right.sum() < wrong.sum(), (shown[v, u], expected[v, u], as_srgb[v, u])


def test_a_result_too_large_for_its_format_is_made_at_the_largest_scale_that_fits(http: httpx.Client) -> None:
    """×4 of a 4200-pixel-wide strip as WebP would be 16800 pixels wide, past WebP's 16383: the task says at once
    that it will be made at ×3.9, and it is, by the same rule on the worker (bus/output_size.py)."""
    strip = photo("coffee", size=(4200, 2))
    r = http.post("/api/v1/enhance?output_format=webp&quality_level=fast&tile_size=0",
                  files={"file": ("strip.png", encode(strip, "PNG"), "image/png")})
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    queued = http.get(f"/api/v1/status/{task_id}").json()
    notice = "Enlarged ×3.9 instead of ×4 to stay within the 16383-pixel width and height that WebP allows."
    assert (queued["output_scale"], queued["notice"]) == (3.9, notice)
    zh = http.get(f"/api/v1/status/{task_id}", headers={"Accept-Language": "zh-CN"}).json()["notice"]
    assert zh == "WebP 图片的宽和高最多 16383 像素，因此放大了 ×3.9，而不是 ×4。"
    status = finish(http, task_id)
    assert status["status"] == "completed", status
    assert (status["output_scale"], status["notice"]) == (3.9, notice)
    assert (status["output"]["width"], status["output"]["height"]) == (16380, 8)
    out = Image.open(io.BytesIO(http.get(f"/api/v1/download/{task_id}").content))
    assert (out.format, out.size) == ("WEBP", (16380, 8))

    wider = http.post("/api/v1/enhance?output_format=webp&scale=2",
                      files={"file": ("wide.png", encode(photo("coffee", size=(17000, 2)), "PNG"), "image/png")})
    assert wider.status_code == 422
    assert wider.json()["error"] == ("A WebP image can be at most 16383 pixels wide or tall, and this photo is "
                                     "17000 pixels wide; choose another output format.")


def test_deleting_a_task_removes_its_photo_result_and_record_at_once(http: httpx.Client, stack) -> None:
    task_id = submit(http, encode(photo(size=(24, 24))), "private.jpg", scale="2", quality_level="fast")
    assert finish(http, task_id)["status"] == "completed"
    root = Minio(stack.s3.endpoint.removeprefix("http://"), access_key=stack.s3.access_key,
                 secret_key=stack.s3.secret_key, secure=False, region="us-east-1")

    def stored() -> list[str]:
        return [o.object_name for prefix in ("inputs", "outputs")
                for o in root.list_objects(stack.s3.bucket, prefix=f"{prefix}/{task_id}/", recursive=True)]

    assert len(stored()) == 2  # the photo and its result
    r = http.delete(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200 and r.json() == {"success": True, "task_id": task_id, "deleted": True}
    assert stored() == []
    assert http.get(f"/api/v1/status/{task_id}").status_code == 404
    assert http.get(f"/api/v1/download/{task_id}").status_code == 404
    again = http.delete(f"/api/v1/tasks/{task_id}")
    assert again.status_code == 404 and again.json()["error"].startswith("Task not found")
    assert http.delete("/api/v1/tasks/not-a-task-id").status_code == 400


def test_options_from_the_query_string_take_effect(http: httpx.Client) -> None:
    """The original ignored these; here tile_size, quality and scale from the query are honoured."""
    r = http.post("/api/v1/enhance?scale=2&quality_level=fast&tile_size=64",
                  files={"file": ("x.jpg", encode(photo(size=(40, 30))), "image/jpeg")})
    status = finish(http, r.json()["task_id"])
    assert status["options"] == {"scale": 2, "quality_level": "fast", "tile_size": 64, "face_enhance": None,
                                 "face_strength": 0.7, "output_format": "auto", "output_quality": 92}
    assert (status["output"]["width"], status["output"]["height"]) == (80, 60)
    assert status["output"]["engine"].endswith("realesr-animevideov3")


async def test_progress_reports_the_real_stages(http: httpx.Client, admin_nc: Client) -> None:
    """Every stage is announced on the bus, and tiles are counted as tile_size really cuts them."""
    events: list[TaskProgress] = []

    async def on_progress(msg) -> None:
        events.append(TaskProgress.decode(msg.data))

    sub = await admin_nc.subscribe(subjects.PROGRESS_WILDCARD, cb=on_progress)
    try:
        r = await asyncio.to_thread(http.post, "/api/v1/enhance?tile_size=32&quality_level=fast",
                                    files={"file": ("p.jpg", encode(photo(size=(96, 64))), "image/jpeg")})
        task_id = r.json()["task_id"]
        status = await asyncio.to_thread(finish, http, task_id)
        await admin_nc.flush()
    finally:
        await sub.unsubscribe()
    assert status["status"] == "completed"
    mine = [e for e in events if e.task_id == task_id]
    stages = [e.stage for e in mine]
    for stage in ("fetched", "decoded", "upscaling", "encoding", "stored"):
        assert stage in stages, stages
    assert stages.index("fetched") < stages.index("upscaling") < stages.index("encoding") < stages.index("stored")
    tiles = [e.message for e in mine if e.stage == "upscaling"]
    assert tiles[-1] == "Upscaling tile 6/6", tiles  # 96×64 in 32-pixel tiles: 3 × 2
    progress = [e.progress for e in mine]
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] < 1


def test_status_and_download_of_unknown_or_malformed_ids(http: httpx.Client) -> None:
    r = http.get("/api/v1/status/" + "0" * 32)
    assert r.status_code == 404 and "not found" in r.json()["error"].lower()
    r = http.get("/api/v1/status/not-a-task")
    assert r.status_code == 400 and "task id" in r.json()["error"]
    r = http.get("/api/v1/download/../../etc/passwd")
    assert r.status_code in (400, 404)
    assert http.get("/api/v1/download/" + "f" * 32).status_code == 404


def test_download_before_completion_is_refused(http: httpx.Client) -> None:
    task_id = submit(http, encode(photo(size=(64, 64))), "slow.jpg", tile_size="32", quality_level="high")
    r = http.get(f"/api/v1/download/{task_id}")  # 6 tiles of x4plus on CPU: seconds away from done
    assert r.status_code == 400
    assert r.json()["error"] in ("Task not completed. Current status: queued",
                                 "Task not completed. Current status: processing")
    assert finish(http, task_id)["status"] == "completed"


def test_health_and_info_tell_the_truth(http: httpx.Client) -> None:
    t = time.perf_counter()
    health = http.get("/api/v1/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy"
    assert body["bus"] == {"connected": True, "jetstream": True}
    assert body["storage"] == {"reachable": True}
    assert body["enhancers"]["available"] is True
    assert time.perf_counter() - t < 2
    info = http.get("/api/v1/info").json()
    assert [e["id"] for e in info["enhancers"]] == ["enhancer-1"]
    assert info["enhancers"][0]["engines"] == ["realesrgan"]
    assert info["limits"]["max_upload_mb"] == 5


@pytest.mark.parametrize("path", ["/", "/index.html"])
def test_web_page_is_served(http: httpx.Client, path: str) -> None:
    """The built page (web/dist) and every asset it loads; the browser tests (tests/web) drive it."""
    r = http.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<title>PhotoEnhanceAI" in r.text
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', r.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), assets
    for asset in assets:
        assert http.get(asset).status_code == 200, asset


async def test_results_and_records_expire_after_the_retention(stack, admin_nc: Client) -> None:
    """Outputs expire: an S3 lifecycle rule on every image prefix, and a TTL on the task bucket."""

    s3 = stack.s3
    client = Minio(s3.endpoint.removeprefix("http://"), access_key=s3.access_key, secret_key=s3.secret_key,
                   secure=False, region="us-east-1")
    rules = (await asyncio.to_thread(client.get_bucket_lifecycle, s3.bucket)).rules
    assert {r.rule_filter.prefix: r.expiration.days for r in rules} == {"inputs/": 1, "outputs/": 1, "uploads/": 1}
    kv = await admin_nc.jetstream().key_value(subjects.TASKS_BUCKET)
    status = await kv.status()
    assert status.ttl == 24 * 3600


def test_face_restoration_required_but_not_installed_is_refused_at_once(http: httpx.Client) -> None:
    """face_enhance=true on a fleet where no enhancer can restore faces: 503 with a reason, before anything is
    stored or queued (no task that could only wait, or be failed by a worker that cannot do it); not a silent
    fallback. Without it (auto) the same photo is upscaled."""
    data = encode(photo("astronaut", size=(32, 32)))
    r = http.post("/api/v1/enhance", files={"file": ("face.jpg", data, "image/jpeg")}, data={"face_enhance": "true"})
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert "Face restoration is not available" in error and "models fetch" in error
    assert http.get("/api/v1/info").json()["capabilities"] == ["upscale"]
    status = finish(http, submit(http, data, "face.jpg", scale="2", quality_level="fast", face_enhance="auto"))
    assert status["status"] == "completed" and status["output"]["engine"].startswith("realesrgan:")
