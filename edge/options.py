"""Reading the enhancement options the way the original clients send them.

The original GPU server read ``tile_size``/``quality_level`` from the query string while its
gateway sent them as form fields, so they never took effect. We accept both (a form field
wins over the query string) and validate each with a clear message.

What they parse into is ``bus.schemas.EnhanceOptions``, the one definition of the options (and of their
defaults and limits) that the job, the task record and the worker's engines share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bus.schemas import EnhanceOptions

from .errors import ApiError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ApiError(422, f"{name} must be a whole number.")
    try:
        return int(raw)
    except (TypeError, ValueError) as e:
        raise ApiError(422, f"{name} must be a whole number, not {str(raw)[:40]!r}.") from e


def _bool(name: str, raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text == "auto":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ApiError(422, f"{name} must be true, false or auto, not {str(raw)[:40]!r}.")


def _quality(name: str, raw: Any) -> str:
    return str(raw).strip().lower()


#: Each option as the clients name it → (its field in ``EnhanceOptions``, how its text is read).
FIELDS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "scale": ("scale", _int),
    "quality_level": ("quality", _quality),
    "tile_size": ("tile_size", _int),
    "face_enhance": ("face_enhance", _bool),
}


def parse(*sources: Mapping[str, Any]) -> EnhanceOptions:
    """Options from the first source that names each one (pass form first, then query); an option no
    source names keeps ``EnhanceOptions``' default."""

    def pick(name: str) -> Any:
        for source in sources:
            value = source.get(name)
            if value not in (None, ""):
                return value
        return None

    given = {name: raw for name in FIELDS if (raw := pick(name)) is not None}
    try:
        return EnhanceOptions(**{FIELDS[name][0]: FIELDS[name][1](name, raw) for name, raw in given.items()})
    except ValueError as e:
        raise ApiError(422, f"{e}.") from e
