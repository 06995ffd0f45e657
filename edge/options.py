"""Reading the enhancement options the way the original clients send them.

The original GPU server read ``tile_size``/``quality_level`` from the query string while its
gateway sent them as form fields, so they never took effect. We accept both (a form field
wins over the query string) and validate each with a clear message.

What they parse into is ``bus.schemas.EnhanceOptions``, the one definition of the options (and of their
defaults and limits) that the job, the task record and the worker's engines share. One default depends on the
fleet: the quality level (:func:`default_quality`), which the edge decides from the enhancers' presence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bus.schemas import EnhanceOptions
from bus.texts import Said, said_of

from . import texts
from .errors import ApiError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ApiError(422, texts.OPTION_WHOLE_NUMBER(name=name))
    try:
        return int(raw)
    except (TypeError, ValueError) as e:
        raise ApiError(422, texts.OPTION_WHOLE_NUMBER_NOT(name=name, value=str(raw)[:40])) from e


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
    raise ApiError(422, texts.OPTION_TRUE_FALSE_AUTO(name=name, value=str(raw)[:40]))


def _number(name: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ApiError(422, texts.OPTION_NUMBER_NOT(name=name, value=str(raw)[:40]))
    try:
        return float(raw)
    except (TypeError, ValueError) as e:
        raise ApiError(422, texts.OPTION_NUMBER_NOT(name=name, value=str(raw)[:40])) from e


def _quality(name: str, raw: Any) -> str:
    return str(raw).strip().lower()


def _format(name: str, raw: Any) -> str:
    text = str(raw).strip().lower().removeprefix(".")
    return "jpeg" if text == "jpg" else text


#: Each option as the clients name it → (its field in ``EnhanceOptions``, how its text is read).
FIELDS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "scale": ("scale", _int),
    "quality_level": ("quality", _quality),
    "tile_size": ("tile_size", _int),
    "face_enhance": ("face_enhance", _bool),
    "face_strength": ("face_strength", _number),
    "output_format": ("output_format", _format),
    "output_quality": ("output_quality", _int),
}


#: The quality level a fleet without a GPU gets when the client names none: on two CPU cores fast enlarges 1 MP ×4 in
#: about 32 s, medium in 80 s, high (x4plus) in 7 minutes or more (docs/performance.md, "CPU: seconds per level").
CPU_DEFAULT_QUALITY = "fast"


def on_cpu(device: str) -> bool:
    """Whether an enhancer's presence ``device`` (a torch device: ``cpu``, ``cuda:0``, ``mps``) is a CPU."""
    return device.split(":", 1)[0].strip().lower() == "cpu"


def default_quality(rows: Iterable[Mapping[str, Any]]) -> tuple[str, Said]:
    """The quality level a request that names none gets, given the fleet (the registry's rows), and why.

    ``fast`` when every healthy enhancer runs on a CPU; else ``EnhanceOptions``' own default (``high``), which a
    GPU runs in seconds. A client that asks for a level always gets it.
    """
    healthy = [r for r in rows if r.get("status") == "healthy"]
    if not healthy:
        return EnhanceOptions.quality, texts.DEFAULT_QUALITY_NO_ENHANCER()
    if all(on_cpu(str(r.get("device", ""))) for r in healthy):
        return CPU_DEFAULT_QUALITY, texts.DEFAULT_QUALITY_CPU()
    return EnhanceOptions.quality, texts.DEFAULT_QUALITY_GPU()


def _pick(sources: tuple[Mapping[str, Any], ...], name: str) -> Any:
    for source in sources:
        value = source.get(name)
        if value not in (None, ""):
            return value
    return None


def with_fleet_default(options: EnhanceOptions, rows: Iterable[Mapping[str, Any]],
                       *sources: Mapping[str, Any]) -> EnhanceOptions:
    """``options`` (parsed from ``sources``) at the fleet's default quality level (:func:`default_quality`) when no
    source names one: what the job runs and the task record shows."""
    if _pick(sources, "quality_level") is not None:
        return options
    return dataclasses.replace(options, quality=default_quality(rows)[0])


def parse(*sources: Mapping[str, Any]) -> EnhanceOptions:
    """Options from the first source that names each one (pass form first, then query); an option no
    source names keeps ``EnhanceOptions``' default (the quality level's is the fleet's: :func:`with_fleet_default`)."""
    given = {name: raw for name in FIELDS if (raw := _pick(sources, name)) is not None}
    try:
        return EnhanceOptions(**{FIELDS[name][0]: FIELDS[name][1](name, raw) for name, raw in given.items()})
    except ValueError as e:  # EnhanceOptions' own checks say what is wrong (``bus.texts``)
        raise ApiError(422, texts.OPTION_INVALID(problem=said_of(e))) from e
