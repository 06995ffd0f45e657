"""Prometheus metrics on the edge (``/metrics``) and on an enhancer (``ENHANCER_METRICS_PORT``)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from photoenhance.servers import EmbeddedNats, EmbeddedS3, free_port

from .support import TEST_ENV, Stack, encode, finish, photo, submit


def value(text: str, pattern: str) -> float:
    match = re.search(rf"^{pattern} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"no sample matching {pattern!r} in:\n{text[-2000:]}"
    return float(match.group(1))


def test_edge_and_enhancer_metrics(s3_server: EmbeddedS3, model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    with EmbeddedNats(tmp_path / "nats") as nats_server:
        stack = Stack(nats=nats_server, s3=s3_server, root=tmp_path, model_dir=model_dir, extra_env=dict(TEST_ENV))
        stack.start_edge()
        stack.start_enhancer("metered", ENHANCER_METRICS_PORT=str(port), ENHANCER_METRICS_HOST="127.0.0.1")
        try:
            with httpx.Client(base_url=stack.url, timeout=30) as http:
                task_id = submit(http, encode(photo(size=(24, 24))), "m.jpg", scale="2", quality_level="fast")
                assert finish(http, task_id)["status"] == "completed"
                http.get("/api/v1/status/" + "0" * 32)  # a 404, counted under its route template
                edge = http.get("/metrics")
            assert edge.status_code == 200 and edge.headers["content-type"].startswith("text/plain")
            text = edge.text
            assert value(text, r'pe_http_requests_total\{method="POST",route="/api/v1/enhance",status="200"\}') == 1
            assert value(text, r'pe_http_requests_total\{method="GET",route="/api/v1/status/\{task_id\}",'
                               r'status="404"\}') >= 1
            assert task_id not in text  # raw paths never become labels
            assert value(text, r'pe_enhancers\{status="healthy"\}') == 1
            assert value(text, r'pe_queue_jobs\{state="waiting"\}') == 0
            assert value(text, "pe_http_request_bytes_total") > 500

            worker = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert value(worker, r'pe_enhancer_jobs_total\{result="completed"\}') == 1
            assert value(worker, r'pe_enhancer_stage_seconds_count\{stage="engine"\}') == 1
            assert value(worker, "pe_enhancer_jobs_in_flight") == 0
        finally:
            stack.stop()
