"""Health and service information: the true state of the bus, storage and enhancers.

What the fleet can do is read from the enhancers' presence, in the bus's capability words
(``bus.capabilities``): the edge names no engine, it only repeats what each worker says it runs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bus import __version__, capabilities
from bus.schemas import DEFAULT_FACE_STRENGTH, OUTPUT_FORMATS, QUALITIES, SCALES
from bus.texts import DEFAULT, render

from .. import dispatch, options
from ..deps import ResourcesDep
from ..images import SUPPORTED_TEXT
from ..resources import Resources
from ..texts import LanguageDep

router = APIRouter(tags=["system"])

CHECK_TIMEOUT = 2.0


# --- answers ---------------------------------------------------------------------------------------
class QueueDepth(BaseModel):
    """Jobs on the work queue, every capability's together."""

    waiting: int = Field(description="Not yet handed to an enhancer")
    processing: int = Field(description="Held by an enhancer (running, or fetched to run next)")


class BusHealth(BaseModel):
    connected: bool
    jetstream: bool
    error: str | None = Field(default=None, description="Only when JetStream did not answer")


class StorageHealth(BaseModel):
    reachable: bool
    error: str | None = Field(default=None, description="Only when storage did not answer")


class EnhancersHealth(BaseModel):
    available: bool = Field(description="Some enhancer answered on the bus just now")


class Health(BaseModel):
    """``GET /api/v1/health``: 200 while the edge can serve (``healthy``, or ``degraded`` with no enhancer),
    503 when it cannot (``unhealthy``: the bus or storage is away)."""

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: float
    version: str
    bus: BusHealth
    storage: StorageHealth
    enhancers: EnhancersHealth
    queue: QueueDepth | None = Field(description="null when JetStream did not answer")


class Limits(BaseModel):
    max_upload_mb: float
    max_input_megapixels: float
    max_output_megapixels: float = Field(description="Larger results are made at the largest scale that fits")
    formats: str
    output_formats: list[str] = Field(description="Values of the output_format option")
    max_batch: int = Field(description="Photos the web page sends in one batch")
    scales: list[int]
    quality_levels: list[str]
    tile_size: str
    retention_hours: float = Field(description="Hours results and records are kept")


class Features(BaseModel):
    """What the page may offer."""

    face_restoration: bool = Field(description="Some healthy enhancer can restore faces")
    face_strength: float = Field(description="The default face_strength: how much of a restored face replaces the "
                                             "photo's own, from 0 (the original face) to 1 (fully restored)")


class QualityModel(BaseModel):
    """The super-resolution model a quality level runs on this fleet."""

    model: str = Field(description="Its name, e.g. realesr-general-x4v3 (enhancers that differ: ' / '-joined)")
    fallback: bool = Field(description="A stand-in while the level's own weights are missing (on some enhancer): "
                                       "fast's is the anime model realesr-animevideov3, medium's RealESRGAN_x4plus")


class Enhancer(BaseModel):
    """One enhancer as its presence says (no host name: that is for operators, ``/api/v1/servers``)."""

    id: str
    status: Literal["healthy", "unhealthy", "draining", "left"]
    version: str
    device: str
    device_name: str
    engines: list[str]
    models: dict[str, str] = Field(description="What each engine runs")
    capabilities: list[str] = Field(description=f"What it can do: {', '.join(capabilities.CAPABILITIES)}")
    quality_models: dict[str, str] = Field(description="The super-resolution model it runs for each quality level")
    fallback_levels: list[str] = Field(description="Levels it runs with a stand-in model (their weights are missing)")
    capacity: int = Field(description="Jobs it runs at once")
    in_flight: int
    jobs_done: int
    jobs_failed: int


class Info(BaseModel):
    """``GET /api/v1/info``: limits, formats, what the fleet can do and who is serving."""

    name: str
    version: str
    description: str
    endpoints: dict[str, str]
    limits: Limits
    features: Features
    capabilities: list[str] = Field(description="What the healthy enhancers can do together")
    default_quality: Literal["fast", "medium", "high"] = Field(
        description="The quality level a request that sends no quality_level gets: high, or fast where every healthy "
                    "enhancer runs on a CPU (high quality takes many minutes per photo there)")
    default_quality_reason: str = Field(description="Why that level, in a sentence in the request's language")
    quality_models: dict[str, QualityModel] = Field(
        description="Which model each quality level (fast, medium, high) runs on the healthy enhancers")
    enhancers: list[Enhancer]
    queue: QueueDepth | None = Field(description="null when JetStream did not answer")


# --- routes ----------------------------------------------------------------------------------------
def fleet_quality_models(rows: list[dict[str, Any]]) -> dict[str, QualityModel]:
    """What each quality level runs on the healthy enhancers among ``rows`` (the registry's view), as their
    presence says: the model (several, ' / '-joined, where they differ) and whether any runs a stand-in."""
    healthy = [r for r in rows if r["status"] == "healthy"]
    levels = {}
    for quality in QUALITIES:
        models = sorted({m for r in healthy if (m := r.get("quality_models", {}).get(quality))})
        if models:
            levels[quality] = QualityModel(model=" / ".join(models), fallback=any(
                quality in r.get("fallback_levels", ()) for r in healthy))
    return levels


async def _check(coro: Any) -> tuple[bool, Any]:
    try:
        return True, await asyncio.wait_for(coro, CHECK_TIMEOUT)
    except Exception as e:
        return False, f"{type(e).__name__}: {e}"[:200]


async def _queue(res: Resources) -> QueueDepth:
    depth = await dispatch.queue_depth(res)
    return QueueDepth(waiting=depth.waiting, processing=depth.processing)


async def health_report(res: Resources) -> tuple[int, Health]:
    (js_ok, queue), (s3_ok, s3_err), (_, present) = await asyncio.gather(
        _check(_queue(res)), _check(res.store.ping()), _check(dispatch.enhancers_present(res)))
    bus_ok = res.nc.is_connected and js_ok
    enhancers = present is True
    status = "healthy" if bus_ok and s3_ok and enhancers else ("degraded" if bus_ok and s3_ok else "unhealthy")
    body = Health(
        status=status, timestamp=time.time(), version=__version__,
        bus=BusHealth(connected=res.nc.is_connected, jetstream=js_ok, **({} if js_ok else {"error": queue})),
        storage=StorageHealth(reachable=s3_ok, **({} if s3_ok else {"error": s3_err})),
        enhancers=EnhancersHealth(available=enhancers),
        queue=queue if js_ok else None,
    )
    return (200 if status != "unhealthy" else 503), body


@router.get("/api/v1/health", summary="Health of the edge, the bus, storage and the enhancers",
            response_model=Health, responses={503: {"model": Health, "description": "The edge cannot serve"}})
async def health(res: ResourcesDep) -> JSONResponse:
    code, body = await health_report(res)
    # Unset keys (an ``error`` where all is well) are left out, as the clients have always read them.
    return JSONResponse(body.model_dump(mode="json", exclude_unset=True), status_code=code)


@router.get("/health", include_in_schema=False)
async def health_alias(res: ResourcesDep) -> JSONResponse:
    return await health(res)


@router.get("/api/v1/info", summary="What this service offers and who is serving it", response_model=Info)
async def info(res: ResourcesDep, language: LanguageDep = DEFAULT) -> Info:
    # Public view of the fleet: no host names (operators get those from /api/v1/servers).
    rows = res.registry.servers()
    enhancers = [Enhancer(id=r["server_id"], status=r["status"], version=r["version"], device=r["device"],
                          device_name=r["device_name"], engines=r["engines"], models=r["models"],
                          capabilities=r.get("capabilities", []), quality_models=r.get("quality_models", {}),
                          fallback_levels=r.get("fallback_levels", []), capacity=r["capacity"],
                          in_flight=r["in_flight"], jobs_done=r["jobs_done"], jobs_failed=r["jobs_failed"])
                 for r in rows]
    offered = dispatch.offered_capabilities(res)
    default_quality, default_reason = options.default_quality(rows)
    ok, queue = await _check(_queue(res))
    settings = res.settings
    return Info(
        name="PhotoEnhanceAI",
        version=__version__,
        description="Photo enhancement: super-resolution and face restoration by enhancers on a NATS bus",
        endpoints={"enhance": "/api/v1/enhance", "status": "/api/v1/status/{task_id}",
                   "download": "/api/v1/download/{task_id}", "events": "/api/v1/events/{task_id}",
                   "cancel": "/api/v1/tasks/{task_id}/cancel", "delete": "/api/v1/tasks/{task_id}",
                   "health": "/api/v1/health", "info": "/api/v1/info",
                   "presigned_upload": "/api/v1/upload/presigned-url",
                   "process_uploaded": "/api/v1/single-process-uploaded-image"},
        limits=Limits(max_upload_mb=settings.max_upload_bytes / (1024 * 1024),
                      max_input_megapixels=settings.max_input_pixels / 1e6, formats=SUPPORTED_TEXT,
                      max_output_megapixels=settings.max_output_pixels / 1e6, output_formats=list(OUTPUT_FORMATS),
                      max_batch=settings.max_batch, scales=list(SCALES), quality_levels=list(QUALITIES),
                      tile_size="0 (whole image) or 32-2048", retention_hours=settings.tasks.retention_hours),
        # What the page may offer: face restoration only when some healthy enhancer can restore faces.
        features=Features(face_restoration=capabilities.FACES in offered, face_strength=DEFAULT_FACE_STRENGTH),
        capabilities=[c for c in capabilities.CAPABILITIES if c in offered],
        default_quality=default_quality,
        default_quality_reason=render(default_reason, language),
        quality_models=fleet_quality_models(rows),
        enhancers=enhancers,
        queue=queue if ok else None,
    )
