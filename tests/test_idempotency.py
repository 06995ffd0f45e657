"""``Idempotency-Key``: sending the same upload again (the answer was lost) gives the same task, once."""

from __future__ import annotations

import uuid

import httpx
from nats.aio.client import Client

from .support import completed_facts, encode, photo
from .test_enhance_e2e import finish

PHOTO = encode(photo("coffee", size=(32, 24)), quality=90)


def post(http: httpx.Client, key: str, data: bytes = PHOTO) -> httpx.Response:
    return http.post("/api/v1/enhance", files={"file": ("coffee.jpg", data, "image/jpeg")},
                     data={"quality_level": "fast", "face_enhance": "false"}, headers={"Idempotency-Key": key})


async def test_the_same_key_gives_the_same_task_which_runs_once(http: httpx.Client, admin_nc: Client) -> None:
    key = str(uuid.uuid4())
    first = post(http, key)
    assert first.status_code == 200, first.text
    again = post(http, key)
    assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"]
    other = post(http, str(uuid.uuid4()))
    assert other.status_code == 200 and other.json()["task_id"] != first.json()["task_id"]

    task_id = first.json()["task_id"]
    assert finish(http, task_id)["status"] == "completed"
    finish(http, other.json()["task_id"])
    late = post(http, key)  # even after it finished
    assert late.json()["task_id"] == task_id and late.json()["status"] == "completed"
    assert (await completed_facts(admin_nc)).get(task_id) == 1


def test_a_refused_request_does_not_hold_its_key(http: httpx.Client) -> None:
    key = str(uuid.uuid4())
    refused = post(http, key, b"not a photo at all")
    assert refused.status_code == 400
    accepted = post(http, key)
    assert accepted.status_code == 200, accepted.text


def test_a_key_must_be_sane(http: httpx.Client) -> None:
    r = post(http, "x" * 201)
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]
