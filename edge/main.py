"""Entry point of ``photoenhance edge``."""

from __future__ import annotations

import uvicorn

from .app import create_app
from .settings import EdgeSettings


def main() -> None:
    settings = EdgeSettings.from_env()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, proxy_headers=True,
                timeout_graceful_shutdown=30, log_level="info")
