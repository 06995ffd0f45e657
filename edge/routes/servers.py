"""The fleet as the registry view sees it (operators only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..auth import AdminDep
from ..deps import ResourcesDep

router = APIRouter(tags=["fleet"])


@router.get("/api/v1/servers", summary="Every enhancer on the bus, with health and load (admin token)")
async def servers(res: ResourcesDep, _: AdminDep) -> dict[str, Any]:
    return res.registry.stats()


@router.get("/webhook/servers", summary="The original gateway's shape of the same view (admin token)")
async def webhook_servers(res: ResourcesDep, _: AdminDep) -> dict[str, Any]:
    return {"success": True, "data": res.registry.stats()}
