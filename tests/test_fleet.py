"""Many enhancers, one bus: the registry view, health from heartbeats, edge replicas,
back-pressure, and 50 jobs that all finish exactly once while a worker is killed and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from bus import subjects
from photoenhance.servers import EmbeddedNats

from .support import ADMIN_TOKEN, ROOT, TEST_ENV, Stack, completed_facts, encode, finish, photo, submit, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def server(http: httpx.Client, name: str) -> dict | None:
    rows = http.get("/api/v1/servers", headers=ADMIN).json()["servers"]
    return next((r for r in rows if r["server_id"] == name), None)


def test_servers_view_needs_the_admin_token_in_the_header(http: httpx.Client) -> None:
    assert http.get("/api/v1/servers").status_code == 401
    assert http.get("/api/v1/servers", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get(f"/api/v1/servers?token={ADMIN_TOKEN}").status_code == 401  # never a secret in the URL
    assert http.get("/webhook/servers", params={"secret": ADMIN_TOKEN}).status_code == 401
    body = http.get("/webhook/servers", headers=ADMIN).json()
    assert body["success"] is True
    data = body["data"]
    assert data["total_servers"] == data["healthy_servers"] + data["unhealthy_servers"] >= 1
    row = next(s for s in data["servers"] if s["server_id"] == "enhancer-1")
    assert row["is_healthy"] and row["status"] == "healthy"
    assert row["device"] == "cpu" and row["device_name"].startswith("CPU (")
    assert row["engines"] == ["realesrgan"] and "RealESRGAN_x4plus" in row["models"]["realesrgan"]
    assert row["capabilities"] == ["upscale"]  # what the edge routes by: no face weights, no face jobs
    assert row["capacity"] == 1 and row["uptime"] > 0 and row["last_seen"] < 3
    assert "ip" not in row and "port" not in row  # joining the bus is the registration


def test_a_busy_worker_stays_healthy(stack: Stack, http: httpx.Client) -> None:
    task_id = submit(http, encode(photo("coffee", size=(96, 96))), "busy.jpg", tile_size="32", quality_level="high")
    wait_until(lambda: http.get(f"/api/v1/status/{task_id}").json()["status"] == "processing", 60, "processing")
    loaded = wait_until(lambda: (r := server(http, "enhancer-1")) and r["in_flight"] == 1 and r, 10,
                        "the heartbeat to show the job in flight")
    assert loaded["status"] == "healthy"
    time.sleep(0)  # the job runs on: sample health across several beats while it does
    for _ in range(3):
        wait_until(lambda: server(http, "enhancer-1")["last_seen"] < 1.5, 5, "a fresh beat")
        assert server(http, "enhancer-1")["status"] == "healthy"
    assert finish(http, task_id)["status"] == "completed"


def test_silent_worker_turns_unhealthy_then_healthy_again(stack: Stack, http: httpx.Client) -> None:
    frozen = stack.start_enhancer("frozen")
    try:
        assert frozen.proc is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)  # no beats, as if its host hung
        wait_until(lambda: server(http, "frozen")["status"] == "unhealthy", 15, "3 missed beats to count")
        os.kill(frozen.proc.pid, signal.SIGCONT)
        wait_until(lambda: server(http, "frozen")["status"] == "healthy", 10, "beats to resume")
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
        frozen.stop()
        stack.enhancers.remove(frozen)
    # A worker that leaves says so.
    wait_until(lambda: server(http, "frozen")["status"] == "left", 10, "the goodbye")


def test_servers_cli_prints_a_table(stack: Stack) -> None:
    done = subprocess.run([sys.executable, "-m", "photoenhance", "servers", "--server", stack.url], cwd=ROOT,
                          env={**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "healthy" in lines[0]
    assert lines[2].split()[:2] == ["server_id", "status"]
    assert any(line.split()[:2] == ["enhancer-1", "healthy"] for line in lines)
    refused = subprocess.run([sys.executable, "-m", "photoenhance", "servers", "--server", stack.url], cwd=ROOT,
                             env={**os.environ, "ADMIN_TOKEN": "nope"}, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "admin token is wrong" in refused.stderr


def test_two_edges_serve_the_same_tasks(stack: Stack, http: httpx.Client, tmp_path: Path) -> None:
    """Task state lives in JetStream, so any edge replica answers for any task."""
    second = Stack(nats=stack.nats, s3=stack.s3, root=tmp_path, model_dir=stack.model_dir,
                   extra_env=dict(stack.extra_env))
    second.start_edge()
    try:
        task_id = submit(http, encode(photo(size=(32, 24))), "replica.jpg", scale="2", quality_level="fast")
        with httpx.Client(base_url=second.url, timeout=30) as other:
            status = finish(other, task_id)
            assert status["status"] == "completed"
            assert other.get(f"/api/v1/download/{task_id}").content == http.get(f"/api/v1/download/{task_id}").content
    finally:
        second.stop()


def test_back_pressure_429_when_every_worker_is_busy(stack: Stack, tmp_path: Path) -> None:
    """A bus of its own with a queue of 2: one job running, two waiting, the fourth is told to come back."""
    with EmbeddedNats(tmp_path / "nats") as nats_server:
        small = Stack(nats=nats_server, s3=stack.s3, root=tmp_path, model_dir=stack.model_dir,
                      extra_env={**TEST_ENV, "QUEUE_LIMIT": "2"})
        small.start_edge()
        small.start_enhancer("lonely")
        try:
            with httpx.Client(base_url=small.url, timeout=30) as http:
                # One job on the engine for seconds (x4plus in small tiles), then two quick ones waiting.
                slow, quick = encode(photo("coffee", size=(64, 64))), encode(photo("coffee", size=(16, 16)))
                first = submit(http, slow, "1.jpg", tile_size="32", quality_level="high")
                wait_until(lambda: http.get(f"/api/v1/status/{first}").json()["status"] == "processing", 60,
                           "the first job to start")
                queued = [submit(http, quick, f"{i}.jpg", scale="2", quality_level="fast") for i in (2, 3)]
                r = http.post("/api/v1/enhance", files={"file": ("4.jpg", quick, "image/jpeg")})
                assert r.status_code == 429, r.text
                assert int(r.headers["retry-after"]) > 0
                assert "busy" in r.json()["error"] and "2 photos are already waiting" in r.json()["error"]
                for task_id in [first, *queued]:
                    assert finish(http, task_id)["status"] == "completed"
        finally:
            small.stop()


@pytest.mark.timeout(600)
async def test_fifty_jobs_finish_exactly_once_with_a_worker_killed_and_restarted(
        stack: Stack, admin_nc: Client) -> None:
    extra = await asyncio.to_thread(stack.start_enhancer, "killable")
    tiny = [encode(photo("chelsea", size=(16 + i % 5, 16))) for i in range(50)]
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http:
        async def post(i: int) -> str:
            r = await http.post("/api/v1/enhance?scale=2&quality_level=fast",
                                files={"file": (f"{i}.jpg", tiny[i], "image/jpeg")})
            assert r.status_code == 200, r.text
            return r.json()["task_id"]

        ids = [await post(i) for i in range(50)]

        async def statuses() -> list[str]:
            return [(await http.get(f"/api/v1/status/{t}")).json()["status"] for t in ids]

        deadline = time.monotonic() + 120
        while (await statuses()).count("completed") < 10:
            assert time.monotonic() < deadline, "jobs are not being processed"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(extra.kill)  # mid-run, probably mid-job
        stack.enhancers.remove(extra)
        restarted = await asyncio.to_thread(stack.start_enhancer, "killable")
        deadline = time.monotonic() + 300
        while (states := await statuses()).count("completed") < 50:
            assert "failed" not in states, states
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.3)
    counts = await completed_facts(admin_nc)
    assert all(counts.get(t) == 1 for t in ids), {t: counts.get(t) for t in ids if counts.get(t) != 1}
    restarted.stop()
    stack.enhancers.remove(restarted)


async def test_malformed_heartbeats_are_ignored(stack: Stack, admin_nc: Client) -> None:
    """Garbage in the presence bucket is logged and skipped; the registry keeps serving."""
    kv = await admin_nc.jetstream().key_value(subjects.ENHANCERS_BUCKET)
    await kv.put("garbage-1", b"\xc1\xc1 not msgpack")
    await kv.put("garbage-2", b'{"type": "pe.v1.enhancer_presence", "worker_id": 5}')
    async with httpx.AsyncClient(base_url=stack.url, headers=ADMIN, timeout=10) as http:
        r = await http.get("/api/v1/servers")
        assert r.status_code == 200
        ids = {s["server_id"] for s in r.json()["servers"]}
        assert "enhancer-1" in ids and not ids & {"garbage-1", "garbage-2"}
    await kv.delete("garbage-1")
    await kv.delete("garbage-2")
