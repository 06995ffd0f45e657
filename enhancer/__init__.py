"""The enhancer service: joins the bus, pulls jobs when it has a free slot, runs the models."""

from .service import main, serve
from .settings import EnhancerSettings

__all__ = ["EnhancerSettings", "main", "serve"]
