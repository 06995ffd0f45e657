"""Test helpers: real test photos, and the local stack (``photoenhance.stack``) the tests run on."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from PIL import Image

from billing.follower import RefusedFact, read_fact
from bus import subjects
from bus.codec import unpack_any
from bus.schemas import TaskEvent
from photoenhance import nats_jwt
from photoenhance.servers import EmbeddedNats, EmbeddedS3
from photoenhance.stack import ROOT, ServiceProcess, Stack, wait_until

__all__ = ["ADMIN_TOKEN", "ROOT", "TEST_ENV", "ServiceProcess", "Stack", "completed_facts", "encode", "finish",
           "photo", "private_stack", "sharpness", "submit", "wait_until"]


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


# --- the test stack's settings and private stacks -------------------------------------------------
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

#: Settings that make the fault tests quick: a dead worker's job is redelivered after 4 s.
TEST_ENV = {"TASK_ACK_WAIT": "4", "MAX_UPLOAD_MB": "5", "MAX_INPUT_MEGAPIXELS": "4", "SYNC_TIMEOUT": "120",
            "ENHANCER_CONCURRENCY": "1", "ENHANCER_HEARTBEAT": "1", "ADMIN_TOKEN": ADMIN_TOKEN,
            # One process per enhancer, named as the test names it, on a GPU host too (tests/test_processes.py: more).
            "ENHANCER_PROCESSES": "1",
            # The suite starts about forty enhancers; each warm-up costs seconds of CPU. The session's own enhancer
            # and the warm-up tests (tests/test_enhancer_start.py, tests/enhancer/test_warm_up.py) turn it on.
            "ENHANCER_WARM_UP": "off",
            # Compiling (OpenVINO on a CPU) converts each model once per model folder, tens of seconds for x4plus;
            # tests/enhancer/test_compiled.py and test_openvino.py check that path. Test stacks run eager PyTorch.
            "ENHANCER_COMPILE": "off",
            # The suite sends bursts from one address; test_limits.py checks the limits themselves.
            "RATE_LIMIT_ENHANCE": "10000/60", "RATE_LIMIT_ACCOUNT": "10000/60",
            # Likewise for the visitors' daily quota (tests/billing/test_anonymous.py checks it)
            # and the open-connection limits (tests/test_neighbours.py checks them).
            "BILLING_ANONYMOUS_DAILY": "0",
            **{f"EDGE_{pool}{scope}": "10000" for pool in ("STREAMS", "DOWNLOADS", "READS", "UPLOADS")
               for scope in ("", "_PER_CLIENT")}}



@contextmanager
def private_stack(root: Path, model_dir: Path, enhancer: str) -> Iterator[Stack]:
    """Servers of its own plus the edge and one enhancer, so that breaking them disturbs no other test."""
    with EmbeddedNats(root / "nats") as nats_server, EmbeddedS3(root / "s3") as s3:
        s = Stack(nats=nats_server, s3=s3, root=root, model_dir=model_dir, extra_env=dict(TEST_ENV))
        try:
            s.start_edge()
            s.start_enhancer(enhancer)
            yield s
        finally:
            s.stop()



# --- HTTP: what a client of the API does ----------------------------------------------------------
def submit(http: httpx.Client, data: bytes, name: str, ctype: str = "image/jpeg", **params: str) -> str:
    r = http.post("/api/v1/enhance", files={"file": (name, data, ctype)}, data=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "queued" and body["message"] and body["created_at"] > 0
    return body["task_id"]


def finish(http: httpx.Client, task_id: str, timeout: float = 240) -> dict:
    def done() -> dict | None:
        body = http.get(f"/api/v1/status/{task_id}").json()
        return body if body["status"] in ("completed", "failed") else None

    return wait_until(done, timeout, f"task {task_id} to finish", interval=0.2)


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


def forged_creds(folder: Path) -> Path:
    """A ``.creds`` file whose user JWT an account key of its own signed, not our operator's account: what a
    thief without a real credential could make. The bus refuses it."""
    rogue_account, user = nats_jwt.KeyPair.create(nats_jwt.ACCOUNT), nats_jwt.KeyPair.create(nats_jwt.USER)
    forged = folder / "forged.creds"
    forged.write_text(nats_jwt.creds(nats_jwt.user_jwt(rogue_account, user.public, "thief", None), user.seed))
    return forged
