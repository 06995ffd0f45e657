"""The edge service: FastAPI over the bus (HTTP ⇄ NATS), compatible with the original clients."""

from .app import create_app
from .main import main
from .settings import EdgeSettings

__all__ = ["EdgeSettings", "create_app", "main"]
