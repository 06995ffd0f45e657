"""Anonymous web use has its own daily quota per address, kept by billing like a user's free uses."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import encode, photo, wait_until
from ..test_enhance_e2e import finish
from .conftest import BillingStack, running_billing
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
        bs.stack.start_enhancer("visitor-worker")
        yield bs


def test_visitor_quota_is_enforced_and_a_failure_gives_the_use_back(visitors_limited: BillingStack) -> None:
    stack = visitors_limited.stack
    data = encode(photo(size=(16, 16)))
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        def post(**params: str) -> httpx.Response:
            return http.post("/api/v1/enhance", params={"scale": "2", "quality_level": "fast", **params},
                             files={"file": ("v.jpg", data, "image/jpeg")})

        # A failed task (face restoration asked of a fleet without GFPGAN weights) costs nothing.
        failed = post(face_enhance="true")
        assert failed.status_code == 200
        assert finish(http, failed.json()["task_id"])["status"] == "failed"
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
