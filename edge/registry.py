"""The registry view: who is on the bus, built from the enhancers' heartbeats.

It watches the ``pe-enhancers`` bucket (the watch delivers the current state first, then every
change), so a new or restarted edge knows the fleet at once. Health is derived, never stored:
healthy while beats arrive, unhealthy after ``missed_beats`` missed beats, healthy again as soon
as they resume, forgotten after ``forget_after`` seconds of silence. A busy worker keeps beating
(inference runs off its event loop), so busy is never mistaken for dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from bus.codec import SchemaError
from bus.schemas import DRAINING, LEFT, EnhancerPresence

log = logging.getLogger(__name__)


@dataclass
class Seen:
    presence: EnhancerPresence
    at: float  # when the last beat was stored (server time)


class Registry:
    def __init__(self, kv: KeyValue, *, missed_beats: int = 3, forget_after: float = 300.0) -> None:
        self.kv = kv
        self.missed_beats = missed_beats
        self.forget_after = forget_after
        self._seen: dict[str, Seen] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Registry:
        watcher = await self.kv.watchall()
        self._task = asyncio.create_task(self._follow(watcher))
        try:
            await asyncio.wait_for(self._ready.wait(), 5)
        except TimeoutError:
            log.warning("registry: initial state not received within 5 s; continuing")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, watcher: Any) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial state
                    self._ready.set()
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
                    self._seen.pop(entry.key, None)
                    continue
                try:
                    presence = EnhancerPresence.decode(entry.value)
                except SchemaError as e:
                    log.warning("registry: ignoring a malformed heartbeat from %s: %s", entry.key, e)
                    continue
                stored = entry.created.timestamp() if entry.created else time.time()
                self._seen[entry.key] = Seen(presence, stored)
                if entry.delta == 0:
                    self._ready.set()
        finally:
            await watcher.stop()

    def status_of(self, seen: Seen, now: float) -> str:
        p = seen.presence
        if p.state == LEFT:
            return "left"
        if now - seen.at > self.missed_beats * p.heartbeat:
            return "unhealthy"
        return "draining" if p.state == DRAINING else "healthy"

    def servers(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every known enhancer with its derived status; the long silent are forgotten here."""
        now = time.time() if now is None else now
        for key in [k for k, s in self._seen.items() if now - s.at > self.forget_after]:
            del self._seen[key]
        rows = []
        for key, seen in sorted(self._seen.items()):
            p = seen.presence
            rows.append({
                "server_id": key, "status": self.status_of(seen, now),
                "is_healthy": self.status_of(seen, now) == "healthy",
                "host": p.host, "version": p.version, "device": p.device, "device_name": p.device_name,
                "device_memory": p.device_memory, "engines": p.engines, "models": p.models,
                "capabilities": p.capabilities, "quality_models": p.quality_models,
                "fallback_levels": p.fallback_levels,
                "capacity": p.capacity, "in_flight": p.in_flight, "jobs_done": p.jobs_done,
                "jobs_failed": p.jobs_failed, "job_seconds": p.job_seconds,
                "seconds_per_megapixel": p.seconds_per_megapixel, "uptime": round(max(0.0, now - p.started_at), 1),
                "last_seen": round(now - seen.at, 2), "heartbeat": p.heartbeat,
            })
        return rows

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """The original gateway's ``/webhook/servers`` shape."""
        servers = self.servers(now)
        healthy = sum(1 for s in servers if s["is_healthy"])
        return {"total_servers": len(servers), "healthy_servers": healthy,
                "unhealthy_servers": len(servers) - healthy, "servers": servers}
