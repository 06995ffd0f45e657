"""Test helpers: real test photos, and the local stack (``photoenhance.stack``) the tests run on."""

from __future__ import annotations

import io

import numpy as np
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from PIL import Image

from billing.follower import RefusedFact, read_fact
from bus import subjects
from bus.codec import unpack_any
from bus.schemas import TaskEvent
from photoenhance.stack import ROOT, ServiceProcess, Stack, wait_until

__all__ = ["ROOT", "ServiceProcess", "Stack", "completed_facts", "encode", "photo", "sharpness", "wait_until"]


async def completed_facts(admin_nc: Client) -> dict[str, int]:
    """How many 'completed' facts billing would see, per task, reading PE_EVENTS from the start."""
    js = admin_nc.jetstream()
    sub = await js.subscribe(subjects.task_event("completed"), stream=subjects.EVENTS_STREAM,
                             config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL), ordered_consumer=True)
    counts: dict[str, int] = {}
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                break
            try:  # as billing reads them: a forged payload on this subject (test_stolen_credentials) is no fact
                fact = read_fact(msg.subject, unpack_any(msg.data, subject=msg.subject))
            except RefusedFact:
                continue
            assert isinstance(fact, TaskEvent)
            counts[fact.task_id] = counts.get(fact.task_id, 0) + 1
    finally:
        await sub.unsubscribe()
    return counts


# --- real photos -------------------------------------------------------------------------------
def photo(name: str = "chelsea", size: tuple[int, int] | None = None, box: tuple[int, int, int, int] | None = None
          ) -> Image.Image:
    """A real photograph from scikit-image (``chelsea`` is a cat, ``astronaut`` a face, ``coffee``...)."""
    from skimage import data

    img = Image.fromarray(getattr(data, name)())
    if box:
        img = img.crop(box)
    if size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def encode(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def sharpness(img: Image.Image) -> float:
    """Variance of the Laplacian of the luminance: higher is sharper."""
    g = np.asarray(img.convert("L"), dtype=np.float64)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())
