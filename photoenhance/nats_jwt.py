"""NATS decentralized auth, the small part we need: nkeys, operator/account/user JWTs, ``.creds`` files.

The format is nats-io/jwt v2's (header ``{"typ":"JWT","alg":"ed25519-nkey"}``, claims with a ``nats``
object, ed25519 signatures over ``header.payload``), signed with nats-io's own ``nkeys`` package. It is
written here because the only Python JWT library for NATS on PyPI calls itself untested and pins old
dependencies; what the server checks is small and fixed: issuer, subject, signature, type, limits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nkeys

from bus.permissions import Permissions

OPERATOR, ACCOUNT, USER = "operator", "account", "user"
_PREFIX = {OPERATOR: nkeys.PREFIX_BYTE_OPERATOR, ACCOUNT: nkeys.PREFIX_BYTE_ACCOUNT, USER: nkeys.PREFIX_BYTE_USER}
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}

#: JetStream and connection limits of an account: unlimited (the server's own limits still apply).
UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
             "leaf": -1}
JETSTREAM_UNLIMITED = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1, "max_ack_pending": -1,
                       "mem_max_stream_bytes": -1, "disk_max_stream_bytes": -1, "max_bytes_required": False}


@dataclass(frozen=True)
class KeyPair:
    """An nkey: ``seed`` is the secret (``S…``), ``public`` names it (``O…``, ``A…``, ``U…``)."""

    seed: str
    public: str

    @classmethod
    def create(cls, kind: str) -> KeyPair:
        return cls.from_seed(nkeys.encode_seed(os.urandom(32), _PREFIX[kind]).decode())

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        kp = nkeys.from_seed(seed.strip().encode())
        return cls(seed=seed.strip(), public=kp.public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(self.seed.encode()).sign(data)

    def __repr__(self) -> str:  # the seed never reaches a log line
        return f"KeyPair(public={self.public!r})"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(claims: dict[str, Any], signer: KeyPair) -> str:
    """Sign ``claims`` (``iss`` is set to the signer) as a NATS JWT."""
    body = {**claims, "iss": signer.public, "iat": int(claims.get("iat") or time.time())}
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()).decode()
    signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def operator_jwt(operator: KeyPair, name: str, system_account: str) -> str:
    return encode({"sub": operator.public, "name": name,
                   "nats": {"system_account": system_account, "type": OPERATOR, "version": 2}}, operator)


def account_jwt(operator: KeyPair, account: str, name: str, *, jetstream: bool,
                revocations: dict[str, int] | None = None) -> str:
    limits = {**UNLIMITED, **(JETSTREAM_UNLIMITED if jetstream else {})}
    nats: dict[str, Any] = {"limits": limits, "default_permissions": {"pub": {}, "sub": {}},
                            "type": ACCOUNT, "version": 2}
    if revocations:
        nats["revocations"] = revocations
    return encode({"sub": account, "name": name, "nats": nats}, operator)


def user_jwt(account: KeyPair, user: str, name: str, permissions: Permissions | None) -> str:
    nats: dict[str, Any] = {"subs": -1, "data": -1, "payload": -1, "type": USER, "version": 2}
    if permissions is not None:
        nats |= {"pub": {"allow": list(permissions.publish)}, "sub": {"allow": list(permissions.subscribe)}}
        if permissions.responses:
            nats["resp"] = {"max": 1, "ttl": 0}
    return encode({"sub": user, "name": name, "nats": nats}, account)


def creds(jwt: str, seed: str) -> str:
    """A ``.creds`` file, as ``nsc`` writes it and every NATS client (and the ``nats`` CLI) reads it."""
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")
