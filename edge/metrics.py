"""``GET /metrics`` in Prometheus' text format: requests by route and status, latency, bytes in
and out, queue depth and the fleet's health (the last two read live at scrape time)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import dispatch
from .deps import ResourcesDep

REGISTRY = CollectorRegistry()
REQUESTS = Counter("pe_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("pe_http_request_duration_seconds", "Time to answer, by route", ["route"], registry=REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
BYTES_IN = Counter("pe_http_request_bytes", "Request body bytes received", registry=REGISTRY)
BYTES_OUT = Counter("pe_http_response_bytes", "Response body bytes sent", registry=REGISTRY)
QUEUE = Gauge("pe_queue_jobs", "Jobs on the work queue", ["state"], registry=REGISTRY)
ENHANCERS = Gauge("pe_enhancers", "Enhancers known to the registry", ["status"], registry=REGISTRY)

router = APIRouter(tags=["system"])


class MetricsMiddleware:
    """Counts every request under its route *template* (``/api/v1/status/{task_id}``), never the raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def counting_receive() -> Message:
            message = await receive()
            BYTES_IN.inc(len(message.get("body", b"")))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                BYTES_OUT.inc(len(message.get("body", b"")))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or ("web" if status < 400 else "unmatched")
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - start)


@router.get("/metrics", include_in_schema=False)
async def metrics(res: ResourcesDep) -> Response:
    try:
        depth = await dispatch.queue_depth(res)  # every capability's queue together
        QUEUE.labels("waiting").set(depth.waiting)
        QUEUE.labels("processing").set(depth.processing)
    except Exception:  # a scrape during a bus outage still answers, with the last values
        pass
    counts: dict[str, int] = {"healthy": 0, "unhealthy": 0, "draining": 0, "left": 0}
    for server in res.registry.servers():
        counts[server["status"]] = counts.get(server["status"], 0) + 1
    for status, n in counts.items():
        ENHANCERS.labels(status).set(n)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
