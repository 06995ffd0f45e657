"""HTTP errors: every failure answers ``{"error": "<a sentence a person understands>"}``.

This is the original gateway's error shape, which the web page and the mini-program read. The sentence is a
catalogue entry (``edge/texts.py``, ``bus/texts.py``) put into words in the request's language
(``edge.texts.request_language``): Chinese for a request that asks for it, English otherwise.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus.retry import TRANSIENT, BusUnavailable
from bus.storage import ObjectMissing, StorageError
from bus.texts import Said, Text, render, verbatim

from . import texts
from .texts import request_language

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An expected failure with its status code and what the user is told: a catalogue entry with its values
    (``texts.TASK_NOT_FOUND(hours=24)``), put into words in each request's language. A plain string is said
    as it is in every language (words from elsewhere: an older billing's refusal). ``message`` is the English,
    for logs."""

    def __init__(self, status: int, message: Said | str, *, headers: dict[str, str] | None = None,
                 **extra: object) -> None:
        self.said = message if isinstance(message, Said) else verbatim(message)
        super().__init__(str(self.said))
        self.status = status
        self.message = str(self.said)
        self.headers = headers
        self.extra = extra


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, extra: dict[str, object] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, **(extra or {})}, status_code=status, headers=headers)


_STARLETTE_MESSAGES = {404: texts.NO_SUCH_ENDPOINT, 405: texts.METHOD_NOT_ALLOWED}

#: Pydantic's validation problems by type, their English exactly as pydantic words them (one worded
#: otherwise, say a plural or a number written differently, is shown in pydantic's English instead).
_PROBLEMS = {
    "missing": Text("http.invalid.missing", en="Field required", zh="缺少此项"),
    "int_parsing": Text("http.invalid.int_parsing",
                        en="Input should be a valid integer, unable to parse string as an integer", zh="应为整数"),
    "int_type": Text("http.invalid.int_type", en="Input should be a valid integer", zh="应为整数"),
    "int_from_float": Text("http.invalid.int_from_float",
                           en="Input should be a valid integer, got a number with a fractional part",
                           zh="应为整数，不能有小数"),
    "float_parsing": Text("http.invalid.float_parsing",
                          en="Input should be a valid number, unable to parse string as a number", zh="应为数字"),
    "float_type": Text("http.invalid.float_type", en="Input should be a valid number", zh="应为数字"),
    "bool_parsing": Text("http.invalid.bool_parsing", en="Input should be a valid boolean, unable to interpret input",
                         zh="应为 true 或 false"),
    "bool_type": Text("http.invalid.bool_type", en="Input should be a valid boolean", zh="应为 true 或 false"),
    "string_type": Text("http.invalid.string_type", en="Input should be a valid string", zh="应为字符串"),
    "string_too_short": Text("http.invalid.string_too_short", en="String should have at least {min_length} characters",
                             zh="至少需要 {min_length} 个字符"),
    "string_too_long": Text("http.invalid.string_too_long", en="String should have at most {max_length} characters",
                            zh="最多 {max_length} 个字符"),
    "string_pattern_mismatch": Text("http.invalid.pattern", en="String should match pattern '{pattern}'",
                                    zh="格式不对（应符合 '{pattern}'）"),
    "greater_than": Text("http.invalid.gt", en="Input should be greater than {gt:g}", zh="应大于 {gt:g}"),
    "greater_than_equal": Text("http.invalid.ge", en="Input should be greater than or equal to {ge:g}",
                               zh="应大于或等于 {ge:g}"),
    "less_than": Text("http.invalid.lt", en="Input should be less than {lt:g}", zh="应小于 {lt:g}"),
    "less_than_equal": Text("http.invalid.le", en="Input should be less than or equal to {le:g}",
                            zh="应小于或等于 {le:g}"),
    "literal_error": Text("http.invalid.literal", en="Input should be {expected}", zh="应为 {expected}"),
    "json_invalid": Text("http.invalid.json", en="JSON decode error", zh="JSON 格式错误"),
    "model_attributes_type": Text("http.invalid.object",
                                  en="Input should be a valid dictionary or object to extract fields from",
                                  zh="应为 JSON 对象"),
    "extra_forbidden": Text("http.invalid.extra", en="Extra inputs are not permitted", zh="不允许多余的字段"),
}


def _problem(err: dict) -> Said:
    msg = str(err.get("msg", "invalid"))
    text = _PROBLEMS.get(str(err.get("type")))
    if text is not None:
        said = text(**{str(k): v for k, v in (err.get("ctx") or {}).items()})
        try:
            if said.render() == msg:
                return said
        except (KeyError, ValueError, IndexError, TypeError):
            pass
    return verbatim(msg)


def _describe(errors: list[dict]) -> Said:
    parts: list[Said] = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(texts.INVALID_AT(where=where, problem=_problem(err)) if where else _problem(err))
    problems = parts[-1] if parts else verbatim("invalid")
    for part in reversed(parts[:-1]):
        problems = texts.INVALID_MORE(first=part, rest=problems)
    return texts.INVALID_REQUEST(problems=problems)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, render(exc.said, request_language(request)), exc.headers, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, render(_describe(list(exc.errors())), request_language(request)))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        said: Said | None = getattr(exc, "said", None)  # the body limits' (``edge/limits.py``)
        if said is None:
            known = _STARLETTE_MESSAGES.get(exc.status_code)
            said = known() if known is not None else verbatim(str(exc.detail))
        return error_response(exc.status_code, render(said, request_language(request)), getattr(exc, "headers", None))

    async def on_bus_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("bus unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, render(texts.BUS_DOWN(), request_language(request)), {"Retry-After": "5"})

    for kind in (BusUnavailable, *TRANSIENT):
        app.add_exception_handler(kind, on_bus_down)

    @app.exception_handler(StorageError)
    async def on_storage_down(request: Request, exc: StorageError) -> JSONResponse:
        if isinstance(exc, ObjectMissing):  # a route that expects a missing object catches it itself
            log.error("object missing on %s %s: %s", request.method, request.url.path, exc)
            return error_response(404, render(texts.FILE_GONE(), request_language(request)))
        log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, render(texts.STORAGE_DOWN(), request_language(request)), {"Retry-After": "10"})

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        # Only what ContainCrashes could not answer gets here (an error in a middleware outside it). The server
        # closes the connection after an error that reached it (uvicorn does): say so, or a proxy (Caddy) keeps the
        # connection for the next request, which then meets the reset and is answered 502.
        return crashed(request, {"Connection": "close"})

    app.add_middleware(ContainCrashes)


def crashed(request: Request, headers: dict[str, str] | None = None) -> JSONResponse:
    """The 500 of an unexpected error (logged with its traceback): a sentence, never the error itself."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, render(texts.INTERNAL_ERROR(), request_language(request)), headers)


class ContainCrashes:
    """An unexpected error in a route becomes its 500 here, inside the app, so the server sees a finished response.

    Why: an error that reaches uvicorn makes it close the connection at once, even while the request's body is still
    arriving; the closed socket then answers that data with a reset, and a proxy in front (Caddy) could lose the 500
    it was reading: its client got a response cut off after its headers. Answered here, the connection lives on.
    After the response has started nothing can be said any more: the error goes on to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            await crashed(Request(scope))(scope, receive, send)
