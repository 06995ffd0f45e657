"""A corpus of broken and unusual images, generated here: each one gets a correct result or a 4xx
with a clear sentence, and no worker dies."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from .support import Stack, finish
from .support.corpus import CASES, Case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_and_unusual_images(case: Case, stack: Stack, http: httpx.Client) -> None:
    r = http.post("/api/v1/enhance?scale=2&quality_level=fast&tile_size=0",
                  files={"file": (case.filename, case.data(), case.ctype)})
    if case.status is not None:
        assert r.status_code == case.status, r.text
        message = r.json()["error"]
        assert len(message) > 20 and message.endswith("."), message
        return
    assert r.status_code == 200, r.text
    status = finish(http, r.json()["task_id"])
    assert status["status"] == "completed", status
    out = Image.open(io.BytesIO(http.get(f"/api/v1/download/{r.json()['task_id']}").content))
    assert (out.size, out.format) == (case.size, case.fmt)


def test_no_worker_died(stack: Stack) -> None:
    assert stack.enhancers and all(p.alive for p in stack.enhancers)
    assert "Traceback" not in stack.enhancers[0].log()
