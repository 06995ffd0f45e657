"""``photoenhance servers``: the fleet at a glance, from the edge's registry view."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from .client import unreachable

COLUMNS = ("server_id", "status", "device_name", "engines", "load", "done", "failed", "uptime", "seen")


def _token(token_file: str | None) -> str | None:
    if os.environ.get("ADMIN_TOKEN"):
        return os.environ["ADMIN_TOKEN"]
    for path in (token_file, os.environ.get("ADMIN_TOKEN_FILE"), "var/admin-token"):
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
    return None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render(stats: dict) -> str:
    rows = [COLUMNS]
    for s in stats["servers"]:
        rows.append((s["server_id"], s["status"], s["device_name"] or s["device"], ",".join(s["engines"]),
                     f"{s['in_flight']}/{s['capacity']}", str(s["jobs_done"]), str(s["jobs_failed"]),
                     _duration(s["uptime"]), f"{s['last_seen']:.1f}s ago"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    summary = (f"{stats['total_servers']} enhancer(s): {stats['healthy_servers']} healthy, "
               f"{stats['unhealthy_servers']} not healthy")
    return "\n".join([summary, "", *lines]) if stats["servers"] else summary


def show(server: str, *, watch: bool, interval: float, token_file: str | None) -> int:
    token = _token(token_file)
    if not token:
        print("no admin token: set ADMIN_TOKEN (or ADMIN_TOKEN_FILE; `photoenhance up` writes var/admin-token)",
              file=sys.stderr)
        return 2
    with httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        while True:
            try:
                r = c.get("/api/v1/servers")
            except httpx.TransportError as e:
                print(f"error: {unreachable(server.rstrip('/'), e)}", file=sys.stderr)
                return 2
            if r.status_code != 200:
                print(f"HTTP {r.status_code}: {r.json().get('error', r.text)}", file=sys.stderr)
                return 1
            text = render(r.json())
            if not watch:
                print(text)
                return 0
            print("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S ") + text, flush=True)
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                return 0
