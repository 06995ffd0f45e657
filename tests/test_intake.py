"""The one intake (``edge/intake.py``), in process: no servers.

:func:`edge.intake.check` runs on real bytes with the real image checks. :func:`edge.intake.accept`
talks to three servers (the bus, storage, billing); here those collaborators are small fakes of the
functions it calls, because what is under test is the intake's own rule: hold a use only once the task
can be queued, give it back when the task was not queued, never once it was.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import KeyWrongLastSequenceError
from PIL import Image

from bus.schemas import QUEUED, EnhanceOptions, TaskState
from bus.storage import StorageError
from edge import credits, dispatch, intake
from edge.credits import Payer
from edge.errors import ApiError
from edge.settings import EdgeSettings

TASK = "a" * 32
OPTIONS = EnhanceOptions(scale=2, quality="fast", tile_size=0, face_enhance=None)
SIGNED_IN = Payer("Bearer s", "10.0.0.1")
SETTINGS = dataclasses.replace(EdgeSettings.from_env(), max_upload_bytes=64 * 1024, max_input_pixels=10_000)


def image(fmt: str = "PNG", size: tuple[int, int] = (20, 10)) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(out, fmt)  # noise: its pixel data cannot be tiny
    return out.getvalue()


CAT = image()


async def checked(data: bytes, filename: str | None = "photo.png") -> intake.Photo:
    return await intake.check(SimpleNamespace(settings=SETTINGS), io.BytesIO(data), len(data), filename)  # type: ignore[arg-type]


# --- check: real bytes, real checks --------------------------------------------------------------------
async def test_a_photo_passes_with_its_size_name_and_kind() -> None:
    data = image("PNG", (20, 10))
    photo = await checked(data, "C:\\Users\\me\\holiday photo.png")
    assert (photo.size, photo.name) == (len(data), "holiday photo.png")
    assert (photo.info.content_type, photo.info.width, photo.info.height) == ("image/png", 20, 10)
    assert photo.file.tell() == 0 and photo.file.read() == data  # ready to be stored from the start


async def test_a_nameless_photo_is_named_by_its_format() -> None:
    assert (await checked(image("JPEG"), None)).name == "image.jpeg"


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"", 400, "empty"),
    (b"x" * (64 * 1024 + 1), 413, "maximum size is 0.0625 MB"),
    (b"not an image at all", 400, "not an image"),
    (image("GIF"), 415, "GIF format are not supported"),
    (image("PNG", (200, 100)), 413, "megapixels"),
    (CAT[:len(CAT) // 2], 400, "damaged"),
])
async def test_what_is_refused_and_how(data: bytes, status: int, words: str) -> None:
    with pytest.raises(ApiError) as refused:
        await checked(data)
    assert refused.value.status == status and words in refused.value.message


# --- accept: the order of things, with the servers faked ------------------------------------------------
class World:
    """Fakes of what the intake calls, recording the order of the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.records: dict[str, TaskState] = {}
        self.stored: dict[str, bytes] = {}
        self.submitted: dict[str, Any] = {}
        self.released: list[tuple[str | None, str, str]] = []
        self.fail: dict[str, BaseException] = {}
        self.res = SimpleNamespace(settings=SETTINGS, store=SimpleNamespace(put_stream=self.put_stream),
                                   tasks=SimpleNamespace(get=self.get))

    def step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    async def require_enhancer(self, res: Any, options: EnhanceOptions | None = None) -> None:
        assert options == OPTIONS  # refused before anything is held when no enhancer can do what it needs
        self.step("enhancer")

    async def require_room(self, res: Any) -> None:
        self.step("room")

    async def reserve_use(self, res: Any, payer: Payer, task_id: str) -> str | None:
        self.step("reserve")
        return f"owner-of-{payer.authorization or payer.client}"

    async def release_use(self, res: Any, owner: str | None, task_id: str, reason: str) -> None:
        self.calls.append("release")
        self.released.append((owner, task_id, reason))

    async def put_stream(self, key: str, stream: io.BytesIO, size: int, content_type: str) -> None:
        self.step("store")
        self.stored[key] = stream.read(size)

    async def submit(self, res: Any, *, task_id: str, **job: Any) -> TaskState:
        self.step("submit")
        self.submitted = {"task_id": task_id, **job}
        state = TaskState(task_id=task_id, status=QUEUED, created_at=1.0, updated_at=1.0,
                          input_key=job["input_key"], input_name=job["input_name"], owner=job.get("owner"))
        self.records[task_id] = state
        return state

    async def get(self, task_id: str) -> TaskState | None:
        return self.records.get(task_id)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World()
    monkeypatch.setattr(dispatch, "require_enhancer", w.require_enhancer)
    monkeypatch.setattr(dispatch, "require_room", w.require_room)
    monkeypatch.setattr(dispatch, "submit", w.submit)
    monkeypatch.setattr(credits, "reserve_use", w.reserve_use)
    monkeypatch.setattr(credits, "release_use", w.release_use)
    yield w


async def accept(world: World, payer: Payer = SIGNED_IN) -> TaskState:
    photo = await checked(CAT, "cat.png")
    return await intake.accept(world.res, photo, OPTIONS, payer, task_id=TASK)  # type: ignore[arg-type]


async def test_a_photo_is_stored_and_queued_after_its_use_is_held(world: World) -> None:
    state = await accept(world)
    assert world.calls == ["enhancer", "room", "reserve", "store", "submit"]
    assert state is world.records[TASK] and not world.released
    [(key, data)] = world.stored.items()
    assert key.startswith(f"inputs/{TASK}/") and key.endswith("-cat.png") and data == CAT
    assert world.submitted == {"task_id": TASK, "input_key": key, "input_name": "cat.png", "input_size": len(data),
                               "width": 20, "height": 10, "options": OPTIONS, "owner": "owner-of-Bearer s"}


async def test_an_anonymous_payer_is_its_address(world: World) -> None:
    await accept(world, Payer(None, "10.0.0.9"))
    assert world.submitted["owner"] == "owner-of-10.0.0.9"


@pytest.mark.parametrize(("step", "status"), [("enhancer", 503), ("room", 429), ("reserve", 402)])
async def test_refused_before_anything_is_held_or_stored(world: World, step: str, status: int) -> None:
    world.fail[step] = ApiError(status, "no")
    with pytest.raises(ApiError):
        await accept(world)
    assert world.calls[-1] == step and not world.stored and not world.released and TASK not in world.records


@pytest.mark.parametrize("step", ["store", "submit"])
async def test_a_task_not_queued_gives_its_use_back(world: World, step: str) -> None:
    world.fail[step] = StorageError("storage away") if step == "store" else ApiError(429, "queue full")
    with pytest.raises((StorageError, ApiError)):
        await accept(world)
    assert world.calls[-2:] == [step, "release"]
    [(owner, task_id, reason)] = world.released
    assert (owner, task_id) == ("owner-of-Bearer s", TASK) and reason.startswith("not queued: ")


async def test_a_queued_task_keeps_its_use_whatever_fails_after(world: World) -> None:
    """A concurrent request with the same presigned file_key queued the task; this one then fails."""
    world.records[TASK] = TaskState(task_id=TASK, status=QUEUED, created_at=1.0, updated_at=1.0,
                                    input_key="inputs/x", input_name="cat.png", owner="owner-of-Bearer s")
    world.fail["submit"] = ApiError(503, "bus away")
    with pytest.raises(ApiError):
        await accept(world)
    assert not world.released


async def test_a_task_queued_first_by_a_concurrent_request_is_the_answer(world: World) -> None:
    earlier = TaskState(task_id=TASK, status=QUEUED, created_at=1.0, updated_at=1.0, input_key="inputs/x",
                        input_name="cat.png", owner="owner-of-Bearer s")
    world.records[TASK] = earlier
    world.fail["submit"] = KeyWrongLastSequenceError()
    assert await accept(world) is earlier
    assert not world.released
