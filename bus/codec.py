"""The one wire codec: msgpack, with errors that name the schema and subject."""

from __future__ import annotations

from typing import Any

import msgpack


class SchemaError(ValueError):
    """A message could not be encoded or decoded as the schema it claims to be."""

    def __init__(self, message: str, *, subject: str | None = None, type_: str | None = None) -> None:
        where = f" on {subject}" if subject else ""
        what = f" ({type_})" if type_ else ""
        super().__init__(f"{message}{what}{where}")
        self.subject = subject
        self.type = type_


def pack(payload: dict[str, Any]) -> bytes:
    """Encode a dict as msgpack."""
    try:
        return msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"cannot encode message: {e}", type_=payload.get("type")) from e


def unpack(data: bytes, *, subject: str | None = None) -> dict[str, Any]:
    """Decode msgpack bytes into a dict; anything else is a ``SchemaError``."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated exception types
        raise SchemaError(f"malformed msgpack: {e}", subject=subject) from e
    if not isinstance(value, dict):
        raise SchemaError(f"expected a map, got {type(value).__name__}", subject=subject)
    return value
