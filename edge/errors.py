"""HTTP errors: every failure answers ``{"error": "<a sentence a person understands>"}``.

This is the original gateway's error shape, which the web page and the mini-program read.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bus.retry import TRANSIENT, BusUnavailable
from bus.storage import ObjectMissing, StorageError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An expected failure with its status code and a message for the user."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, extra: dict[str, object] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers=headers)


_STARLETTE_MESSAGES = {
    404: "There is no such API endpoint.",
    405: "This HTTP method is not allowed here.",
}


def _describe(errors: list[dict]) -> str:
    parts = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "Invalid request — " + "; ".join(parts) + "."


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _describe(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) and exc.status_code not in _STARLETTE_MESSAGES \
            else _STARLETTE_MESSAGES.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    async def on_bus_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("bus unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "The service's message bus is briefly unavailable; please retry in a few seconds.",
                              {"Retry-After": "5"})

    for kind in (BusUnavailable, *TRANSIENT):
        app.add_exception_handler(kind, on_bus_down)

    @app.exception_handler(StorageError)
    async def on_storage_down(request: Request, exc: StorageError) -> JSONResponse:
        if isinstance(exc, ObjectMissing):  # a route that expects a missing object catches it itself
            log.error("object missing on %s %s: %s", request.method, request.url.path, exc)
            return error_response(404, "The file is no longer available.")
        log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "Storage is unavailable right now; please try again in a moment.",
                              {"Retry-After": "10"})

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal server error; the operators can find the details in the edge's log.")
