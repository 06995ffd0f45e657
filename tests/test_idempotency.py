"""``Idempotency-Key``: sending the same upload again (the answer was lost) gives the same task, once."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from bus import subjects
from edge import idempotency

from .support import Stack, completed_facts, encode, finish, photo

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


class HandsChangeWhileRead:
    """The real task bucket, except that once, just before our read of the key, its holder releases it and
    a third request claims it: the moment in which a claim used to fail with a server error."""

    def __init__(self, kv: KeyValue, rival: bytes) -> None:
        self.kv, self.rival = kv, rival

    async def create(self, key: str, value: bytes) -> int:
        return await self.kv.create(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        return await self.kv.update(key, value, last=last)

    async def get(self, key: str) -> Any:
        if self.rival:
            rival, self.rival = self.rival, b""
            await self.kv.delete(key)  # the holder gives the key back...
            await self.kv.create(key, rival)  # ...and another request claims it before we look
            raise KeyNotFoundError
        return await self.kv.get(key)


async def test_a_key_that_changes_hands_while_it_is_read_goes_to_its_new_holder(stack: Stack, admin_nc: Client) -> None:
    kv = await admin_nc.jetstream().key_value(subjects.TASKS_BUCKET)
    key = idempotency.claim_key("198.51.100.7", str(uuid.uuid4()))
    await kv.create(key, f"{'a' * 32} {time.time():.3f}".encode())
    racy = HandsChangeWhileRead(kv, f"{'c' * 32} {time.time():.3f}".encode())

    async def has_task(_: str) -> bool:
        return True

    assert await idempotency.claim(racy, key, "b" * 32, has_task=has_task) == "c" * 32  # type: ignore[arg-type]
