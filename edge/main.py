"""Entry point of ``photoenhance edge``."""

from __future__ import annotations

import uvicorn

from .app import create_app
from .settings import EdgeSettings


def main() -> None:
    settings = EdgeSettings.from_env()
    # Keep-alive longer than clients' idle reuse (httpx, browsers): the server must not close a
    # connection just as a client sends on it. (uvicorn re-raises SIGTERM after draining: exit 143.)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, proxy_headers=True,
                timeout_graceful_shutdown=30, timeout_keep_alive=75, log_level="info")
