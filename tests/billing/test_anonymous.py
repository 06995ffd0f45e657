"""Anonymous web use has its own daily quota per address, kept by billing like a user's free uses."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import encode, finish, photo, wait_until
from .support import BillingStack, running_billing
from .wechat_standin import WeChatStandIn


def use_status(db_path: Path, task_id: str) -> str | None:
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT status FROM uses WHERE task_id = ?", (task_id,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def visitors_limited(s3_server: EmbeddedS3, wechat: WeChatStandIn, model_dir: Path,
                     tmp_path: Path) -> Iterator[BillingStack]:
    with EmbeddedNats(tmp_path / "nats") as own_nats, running_billing(
            own_nats, s3_server, wechat, model_dir, tmp_path / "stack", BILLING_ANONYMOUS_DAILY="2") as bs:
        # This worker reads inputs of 4 KB at most (the edge takes 5 MB): a larger photo fails at the worker.
        bs.stack.start_enhancer("visitor-worker", MAX_UPLOAD_MB=str(4 / 1024))
        yield bs


def test_visitor_quota_is_enforced_and_a_failure_gives_the_use_back(visitors_limited: BillingStack) -> None:
    stack = visitors_limited.stack
    data = encode(photo(size=(16, 16)))
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        def post(**params: str) -> httpx.Response:
            return http.post("/api/v1/enhance", params={"scale": "2", "quality_level": "fast", **params},
                             files={"file": ("v.jpg", data, "image/jpeg")})

        # A task that fails at the worker (its input is larger than the worker reads) costs nothing.
        noisy = encode(Image.fromarray(np.random.default_rng(7).integers(0, 255, (96, 96, 3), dtype=np.uint8)))
        assert len(noisy) > 4096 >= len(data)
        failed = http.post("/api/v1/enhance", params={"scale": "2", "quality_level": "fast"},
                           files={"file": ("big.jpg", noisy, "image/jpeg")})
        assert failed.status_code == 200
        status = finish(http, failed.json()["task_id"])
        assert status["status"] == "failed" and "larger than this worker accepts" in status["error"]
        wait_until(lambda: use_status(visitors_limited.db_path, failed.json()["task_id"]) == "released", 30,
                   "billing to give the failed task's use back")
        ok = [post() for _ in range(2)]
        assert [r.status_code for r in ok] == [200, 200]
        for r in ok:
            assert finish(http, r.json()["task_id"])["status"] == "completed"
            assert use_status(visitors_limited.db_path, r.json()["task_id"]) in ("reserved", "charged")
        refused = post()
        assert refused.status_code == 402
        assert "free enhancements for visitors are used up" in refused.json()["error"]
