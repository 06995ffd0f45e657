"""Per-client rate limits: past the limit, 429 with Retry-After; other clients are unaffected."""

from __future__ import annotations

from pathlib import Path

import httpx

from .support import Stack, encode, photo


def test_enhance_rate_limit_per_client(stack: Stack, tmp_path: Path) -> None:
    strict = Stack(nats=stack.nats, s3=stack.s3, root=tmp_path, model_dir=stack.model_dir,
                   extra_env={**stack.extra_env, "RATE_LIMIT_ENHANCE": "3/60"})
    strict.start_edge()
    try:
        with httpx.Client(base_url=strict.url, timeout=30) as http:
            data = encode(photo(size=(16, 16)))
            codes = [http.post("/api/v1/enhance?scale=2&quality_level=fast",
                               files={"file": ("x.jpg", data, "image/jpeg")}).status_code for _ in range(3)]
            assert codes == [200, 200, 200]
            r = http.post("/api/v1/enhance", files={"file": ("x.jpg", data, "image/jpeg")})
            assert r.status_code == 429
            assert 1 <= int(r.headers["retry-after"]) <= 20
            assert "Too many requests" in r.json()["error"]
            # Reading is not limited: status and health still answer.
            assert http.get("/api/v1/health").status_code == 200
    finally:
        strict.stop()
