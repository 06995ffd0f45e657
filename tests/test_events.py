"""What the web page relies on: a waiting task's place in line, cancelling it, and status plus live
progress pushed as server-sent events until the task ends."""

from __future__ import annotations

import json
import threading

import httpx

from .support import encode, finish, photo, submit, wait_until

TINY = encode(photo("coffee", size=(24, 16)), quality=90)


def read_events(base_url: str, task_id: str, into: list[tuple[str, dict]], timeout: float = 240) -> None:
    """Read ``/api/v1/events/<id>`` to its end, as a browser's EventSource would."""
    with httpx.Client(base_url=base_url, timeout=timeout) as client, \
            client.stream("GET", f"/api/v1/events/{task_id}") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event, data = "message", []
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                into.append((event, json.loads("\n".join(data))))
                event, data = "message", []


def idle_queue(http: httpx.Client) -> None:
    def idle() -> bool:
        queue = http.get("/api/v1/health").json()["queue"]
        return queue == {"waiting": 0, "processing": 0}

    wait_until(idle, 240, "the queue to empty")


def test_waiting_tasks_know_their_place_can_be_cancelled_and_are_never_run(http: httpx.Client) -> None:
    idle_queue(http)
    # The one enhancer slot is taken by a real x4plus job long enough to line two tasks up behind it.
    busy = submit(http, encode(photo("chelsea", size=(64, 64)), quality=90), "busy.jpg",
                  quality_level="high", tile_size="32", face_enhance="false")
    wait_until(lambda: http.get(f"/api/v1/status/{busy}").json()["status"] == "processing", 60,
               "the first task to start")
    second = submit(http, TINY, "second.jpg", quality_level="fast", face_enhance="false")
    third = submit(http, TINY, "third.jpg", quality_level="fast", face_enhance="false")

    assert http.get(f"/api/v1/status/{busy}").json()["queue_position"] is None
    assert http.get(f"/api/v1/status/{second}").json()["queue_position"] == 1
    assert http.get(f"/api/v1/status/{third}").json()["queue_position"] == 2

    r = http.post(f"/api/v1/tasks/{busy}/cancel")
    assert r.status_code == 409 and "processing" in r.json()["error"]
    r = http.post(f"/api/v1/tasks/{second}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed" and r.json()["stage"] == "cancelled" and "Cancelled" in r.json()["error"]
    assert http.post(f"/api/v1/tasks/{second}/cancel").status_code == 200  # asking twice is harmless

    assert finish(http, busy)["status"] == "completed"
    assert finish(http, third)["status"] == "completed"
    cancelled = http.get(f"/api/v1/status/{second}").json()
    assert cancelled["status"] == "failed" and cancelled["stage"] == "cancelled"
    assert cancelled["attempts"] == 0, "a cancelled task's job was run anyway"
    r = http.post(f"/api/v1/tasks/{third}/cancel")
    assert r.status_code == 409 and "completed" in r.json()["error"]
    idle_queue(http)  # the cancelled task's job left the queue too


def test_events_push_status_and_live_progress_and_end_with_the_task(http: httpx.Client, stack) -> None:
    idle_queue(http)
    busy = submit(http, encode(photo("chelsea", size=(64, 64)), quality=90), "busy.jpg",
                  quality_level="high", tile_size="32", face_enhance="false")
    wait_until(lambda: http.get(f"/api/v1/status/{busy}").json()["status"] == "processing", 60,
               "the first task to start")
    task_id = submit(http, encode(photo("astronaut", size=(96, 96)), quality=90), "astronaut.jpg",
                     quality_level="fast", tile_size="32", face_enhance="false")
    events: list[tuple[str, dict]] = []
    reader = threading.Thread(target=read_events, args=(stack.url, task_id, events))
    reader.start()
    reader.join(240)
    assert not reader.is_alive(), "the event stream did not end after the task finished"

    statuses = [body for kind, body in events if kind == "status"]
    progress = [body for kind, body in events if kind == "progress"]
    assert statuses[0]["status"] == "queued" and statuses[0]["queue_position"] == 1
    assert [s["status"] for s in statuses][-1] == "completed"
    assert statuses[-1]["output"]["width"] == 96 * 4 and statuses[-1]["result_url"].endswith(task_id)
    assert "processing" in [s["status"] for s in statuses]
    stages = [p["stage"] for p in progress]
    assert "upscaling" in stages and all(p["task_id"] == task_id for p in progress)
    tiles = [p for p in progress if p["stage"] == "upscaling"]
    assert len(tiles) >= 2 and tiles[-1]["progress"] > tiles[0]["progress"], "progress did not advance"
    assert finish(http, busy)["status"] == "completed"

    # A finished task's stream says so once and ends at once; an unknown one is a plain 404.
    again: list[tuple[str, dict]] = []
    read_events(stack.url, task_id, again, timeout=10)
    assert [kind for kind, _ in again] == ["status"] and again[0][1]["status"] == "completed"
    r = http.get("/api/v1/events/" + "0" * 32)
    assert r.status_code == 404 and "not found" in r.json()["error"]


def test_info_tells_the_page_its_limits_and_features(http: httpx.Client) -> None:
    info = http.get("/api/v1/info").json()
    assert info["limits"]["max_batch"] == 20 and info["limits"]["max_upload_mb"] == 5
    # The suite's enhancer has no GFPGAN weights (none can be downloaded), so the page must not offer it.
    assert info["features"] == {"face_restoration": False, "face_strength": 0.7}
    # Nor the photo models of fast and medium: it says which stand-in each of those levels runs.
    assert info["quality_models"] == {"fast": {"model": "realesr-animevideov3", "fallback": True},
                                      "medium": {"model": "RealESRGAN_x4plus", "fallback": True},
                                      "high": {"model": "RealESRGAN_x4plus", "fallback": False}}
