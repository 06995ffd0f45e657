"""The one wire codec: msgpack, with errors that name the schema and subject."""

from __future__ import annotations

import json
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


def pack_json(payload: dict[str, Any]) -> bytes:
    """JSON, for records operators read with the ``nats`` CLI (``nats kv get``)."""
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as e:
        raise SchemaError(f"cannot encode message: {e}", type_=payload.get("type")) from e


def unpack_any(data: bytes, *, subject: str | None = None) -> dict[str, Any]:
    """Decode either codec: a JSON object starts with ``{``, which is never a msgpack map."""
    if data[:1] == b"{":
        try:
            value = json.loads(data)
        except ValueError as e:
            raise SchemaError(f"malformed JSON: {e}", subject=subject) from e
        if not isinstance(value, dict):
            raise SchemaError("expected an object", subject=subject)
        return value
    return unpack(data, subject=subject)
