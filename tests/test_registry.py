"""The registry's rules of health, on explicit clocks (the live behaviour is in test_fleet.py)."""

from __future__ import annotations

from bus.schemas import ALIVE, DRAINING, LEFT, EnhancerPresence
from edge.registry import Registry, Seen


def beat(worker: str, state: str = ALIVE, heartbeat: float = 5.0) -> EnhancerPresence:
    return EnhancerPresence(worker_id=worker, state=state, at=1000.0, started_at=900.0, heartbeat=heartbeat)


def registry_with(**seen: Seen) -> Registry:
    registry = Registry(kv=None, missed_beats=3, forget_after=300)  # type: ignore[arg-type]
    registry._seen.update(seen)
    return registry


def test_health_follows_the_beats_not_the_load() -> None:
    busy = EnhancerPresence(worker_id="a", state=ALIVE, at=1000.0, started_at=900.0, heartbeat=5.0,
                            capacity=1, in_flight=1)
    r = registry_with(a=Seen(busy, at=1000.0))
    assert r.servers(now=1014.9)[0]["status"] == "healthy"  # within 3 beats, however busy
    assert r.servers(now=1015.1)[0]["status"] == "unhealthy"  # 3 beats missed
    r._seen["a"] = Seen(busy, at=1016.0)  # beats resume
    assert r.servers(now=1016.5)[0]["status"] == "healthy"


def test_draining_left_and_forgotten() -> None:
    r = registry_with(d=Seen(beat("d", DRAINING), 1000.0), g=Seen(beat("g", LEFT), 1000.0),
                      old=Seen(beat("old"), 600.0))
    rows = {row["server_id"]: row for row in r.servers(now=1001.0)}
    assert rows["d"]["status"] == "draining" and not rows["d"]["is_healthy"]
    assert rows["g"]["status"] == "left"
    assert "old" not in rows  # silent for more than forget_after
    stats = r.stats(now=1001.0)
    assert (stats["total_servers"], stats["healthy_servers"], stats["unhealthy_servers"]) == (2, 0, 2)
