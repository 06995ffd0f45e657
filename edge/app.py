"""The edge: the only HTTP surface. It bridges HTTP to the bus and holds no task state itself."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, Mount
from starlette.types import Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from bus import __version__

from . import errors, staging
from .connections import ConnectionLimitMiddleware
from .limits import BodyLimitMiddleware
from .metrics import MetricsMiddleware
from .metrics import router as metrics_router
from .ratelimit import Limit, RateLimitMiddleware, Rule
from .resources import open_resources
from .routes import enhance, events, presigned, servers, system, tasks, wechat
from .settings import EdgeSettings

log = logging.getLogger(__name__)


def web_root(web_dir: Path) -> Path | None:
    """The built page (``web/dist``, or ``web_dir`` itself when it holds an ``index.html``)."""
    for root in (web_dir / "dist", web_dir):
        if (root / "index.html").is_file():
            return root
    log.warning("no built web page under %s (run `make web`); serving the API only", web_dir)
    return None


class WebMount(Mount):
    """The page at ``/``, which must not swallow ``/api/...``: an API path with the wrong method
    answers 405 and an unknown one a JSON 404, not the page's 404."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("path", "").startswith("/api/"):
            return Match.NONE, {}
        return super().matches(scope)


def create_app(settings: EdgeSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources, staging.janitor(resources):
            app.state.resources = resources
            yield

    app = FastAPI(title="PhotoEnhanceAI", version=__version__, lifespan=lifespan,
                  description="Upload a photo, get it back larger and sharper (Real-ESRGAN, GFPGAN).")
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes,
                       body_timeout=settings.connections.body_timeout)
    # Inside the rate limits (a request refused there takes no place), outside the body (an upload's place
    # is held while its body streams in).
    app.add_middleware(ConnectionLimitMiddleware, limits=settings.connections)
    app.add_middleware(RateLimitMiddleware, rules=[
        Rule("enhance", ("/api/v1/enhance", "/api/v1/single-process-uploaded-image", "/api/v1/upload/presigned-url"),
             Limit.parse("RATE_LIMIT_ENHANCE", settings.rate_enhance)),
        Rule("account", ("/api/wechat/auth/openid", "/api/wechat/pay/create"),
             Limit.parse("RATE_LIMIT_ACCOUNT", settings.rate_account)),
    ])
    app.add_middleware(MetricsMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=True,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    if settings.trusted_proxies:  # outermost: rate limits, connection limits and quotas see the real client
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    for module in (enhance, tasks, events, presigned, system, servers, wechat):
        app.include_router(module.router)
    app.include_router(metrics_router)
    root = web_root(settings.web_dir)
    if root is not None:
        app.router.routes.append(WebMount("/", app=StaticFiles(directory=root, html=True), name="web"))
    return app
