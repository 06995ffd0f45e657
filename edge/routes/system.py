"""Health and service information: the true state of the bus, storage and enhancers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from bus import __version__, subjects
from bus.schemas import QUALITIES, SCALES

from .. import dispatch
from ..deps import ResourcesDep
from ..images import SUPPORTED_TEXT
from ..resources import Resources

router = APIRouter(tags=["system"])

CHECK_TIMEOUT = 2.0


async def _check(coro: Any) -> tuple[bool, Any]:
    try:
        return True, await asyncio.wait_for(coro, CHECK_TIMEOUT)
    except Exception as e:
        return False, f"{type(e).__name__}: {e}"[:200]


async def _queue(res: Resources) -> dict[str, int]:
    info = await res.js.consumer_info(subjects.JOBS_STREAM, subjects.JOBS_CONSUMER)
    return {"waiting": info.num_pending or 0, "processing": info.num_ack_pending or 0}


async def health_report(res: Resources) -> tuple[int, dict[str, Any]]:
    (js_ok, queue), (s3_ok, s3_err), (_, present) = await asyncio.gather(
        _check(_queue(res)), _check(res.store.ping()), _check(dispatch.enhancers_present(res)))
    bus_ok = res.nc.is_connected and js_ok
    enhancers = present is True
    status = "healthy" if bus_ok and s3_ok and enhancers else ("degraded" if bus_ok and s3_ok else "unhealthy")
    body = {
        "status": status,
        "timestamp": time.time(),
        "version": __version__,
        "bus": {"connected": res.nc.is_connected, "jetstream": js_ok, **({} if js_ok else {"error": queue})},
        "storage": {"reachable": s3_ok, **({} if s3_ok else {"error": s3_err})},
        "enhancers": {"available": enhancers},
        "queue": queue if js_ok else None,
    }
    return (200 if status != "unhealthy" else 503), body


@router.get("/api/v1/health", summary="Health of the edge, the bus, storage and the enhancers")
async def health(res: ResourcesDep) -> JSONResponse:
    code, body = await health_report(res)
    return JSONResponse(body, status_code=code)


@router.get("/health", include_in_schema=False)
async def health_alias(res: ResourcesDep) -> JSONResponse:
    return await health(res)


@router.get("/api/v1/info", summary="What this service offers and who is serving it")
async def info(res: ResourcesDep) -> dict[str, Any]:
    # Public view of the fleet: no host names (operators get those from /api/v1/servers).
    enhancers = [{"id": r["server_id"], "status": r["status"], "version": r["version"], "device": r["device"],
                  "device_name": r["device_name"], "engines": r["engines"], "capacity": r["capacity"],
                  "in_flight": r["in_flight"], "jobs_done": r["jobs_done"], "jobs_failed": r["jobs_failed"]}
                 for r in res.registry.servers()]
    ok, queue = await _check(_queue(res))
    settings = res.settings
    return {
        "name": "PhotoEnhanceAI",
        "version": __version__,
        "description": "Photo enhancement: Real-ESRGAN super-resolution and GFPGAN face restoration on a NATS bus",
        "endpoints": {"enhance": "/api/v1/enhance", "status": "/api/v1/status/{task_id}",
                      "download": "/api/v1/download/{task_id}", "events": "/api/v1/events/{task_id}",
                      "cancel": "/api/v1/tasks/{task_id}/cancel", "health": "/api/v1/health", "info": "/api/v1/info",
                      "presigned_upload": "/api/v1/upload/presigned-url",
                      "process_uploaded": "/api/v1/single-process-uploaded-image"},
        "limits": {"max_upload_mb": settings.max_upload_bytes / (1024 * 1024),
                   "max_input_megapixels": settings.max_input_pixels / 1e6, "formats": SUPPORTED_TEXT,
                   "max_batch": settings.max_batch, "scales": list(SCALES), "quality_levels": list(QUALITIES),
                   "tile_size": "0 (whole image) or 32-2048", "retention_hours": settings.tasks.retention_hours},
        # What the page may offer: face restoration only when some healthy enhancer has GFPGAN's weights.
        "features": {"face_restoration": any("gfpgan" in e["engines"] for e in enhancers if e["status"] == "healthy")},
        "enhancers": enhancers,
        "queue": queue if ok else None,
    }
