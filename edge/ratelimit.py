"""Per-client rate limits on the costly and the sensitive routes: 429 with ``Retry-After``.

Token buckets keyed by client address (and, for signed-in mini-program users, by their session
token as well, so one user cannot spread over addresses). The buckets live in this edge's memory:
with several edge replicas each enforces its own share, which bounds abuse without a shared store.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from bus.settings import SettingsError
from bus.texts import render

from .texts import TOO_MANY_REQUESTS, scope_language


@dataclass(frozen=True)
class Limit:
    """``requests`` per ``seconds`` (parsed from ``"30/60"``)."""

    requests: int
    seconds: float

    @classmethod
    def parse(cls, name: str, text: str) -> Limit:
        try:
            requests, seconds = text.split("/")
            limit = cls(int(requests), float(seconds))
        except ValueError as e:
            raise SettingsError(f"{name} must look like 30/60 (requests per seconds), got {text!r}") from e
        if limit.requests < 1 or limit.seconds <= 0:
            raise SettingsError(f"{name} must allow at least 1 request in a positive number of seconds")
        return limit


@dataclass(frozen=True)
class Rule:
    name: str
    paths: tuple[str, ...]
    limit: Limit


class Buckets:
    """Token buckets, pruned so that a flood of addresses cannot grow memory without bound."""

    def __init__(self, max_keys: int = 50_000) -> None:
        self._state: dict[tuple[str, str], tuple[float, float]] = {}
        self._max_keys = max_keys

    def take(self, rule: Rule, key: str, now: float) -> float:
        """0 when allowed; otherwise the seconds until the next request would be."""
        rate = rule.limit.requests / rule.limit.seconds
        tokens, last = self._state.get((rule.name, key), (float(rule.limit.requests), now))
        tokens = min(float(rule.limit.requests), tokens + (now - last) * rate)
        if tokens >= 1:
            self._state[(rule.name, key)] = (tokens - 1, now)
            if len(self._state) > self._max_keys:
                self._prune()
            return 0.0
        self._state[(rule.name, key)] = (tokens, now)
        return (1 - tokens) / rate

    def _prune(self) -> None:
        # Drop the buckets idle for longest (they would be full again anyway).
        for key, _ in sorted(self._state.items(), key=lambda kv: kv[1][1])[: len(self._state) // 2]:
            del self._state[key]


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, rules: list[Rule]) -> None:
        self.app = app
        self.rules = rules
        self.buckets = Buckets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/")
        rule = next((r for r in self.rules if path in r.paths), None)
        if rule is None:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        keys = [f"ip:{client}"]
        for name, value in scope["headers"]:
            if name == b"authorization" and value:
                keys.append("user:" + hashlib.sha256(value).hexdigest()[:32])  # never the token itself
        now = time.monotonic()
        wait = max(self.buckets.take(rule, key, now) for key in keys)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        body = json.dumps({"error": render(TOO_MANY_REQUESTS(seconds=retry), scope_language(scope))}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry).encode())]})
        await send({"type": "http.response.body", "body": body})
