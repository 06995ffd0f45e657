"""Reading the enhancement options the way the original clients send them.

The original GPU server read ``tile_size``/``quality_level`` from the query string while its
gateway sent them as form fields, so they never took effect. We accept both (a form field
wins over the query string) and validate each with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.schemas import EnhanceOptions

from .errors import ApiError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _int(name: str, raw: Any, default: int) -> int:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        raise ApiError(422, f"{name} must be a whole number.")
    try:
        return int(raw)
    except (TypeError, ValueError) as e:
        raise ApiError(422, f"{name} must be a whole number, not {str(raw)[:40]!r}.") from e


def _bool(name: str, raw: Any) -> bool | None:
    if raw is None or raw == "" or raw == "auto":
        return None
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ApiError(422, f"{name} must be true, false or auto, not {str(raw)[:40]!r}.")


def parse(*sources: Mapping[str, Any]) -> EnhanceOptions:
    """Options from the first source that names each one (pass form first, then query)."""

    def pick(name: str) -> Any:
        for source in sources:
            value = source.get(name)
            if value not in (None, ""):
                return value
        return None

    quality = pick("quality_level")
    try:
        return EnhanceOptions(
            scale=_int("scale", pick("scale"), 4),
            quality=str(quality).strip().lower() if quality is not None else "high",
            tile_size=_int("tile_size", pick("tile_size"), 400),
            face_enhance=_bool("face_enhance", pick("face_enhance")),
        )
    except ValueError as e:
        raise ApiError(422, f"{e}.") from e
