"""FastAPI dependencies, named as types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .resources import Resources


def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def client_address(request: Request) -> str:
    """The caller's address: behind a trusted proxy (``EDGE_TRUSTED_PROXIES``) the client it names."""
    return request.client.host if request.client else ""
