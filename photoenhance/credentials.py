"""``photoenhance credentials``: one credential per GPU host, minted by the operator, revocable at once.

    photoenhance credentials create enhancer NAME --out FILE   an env file (+ NAME.creds, ca.pem beside it)
    photoenhance credentials revoke NAME                       cut NAME off the live bus within seconds
    photoenhance credentials list                              who holds what

The env file is everything ``photoenhance enhancer --env-file FILE`` needs on another machine.
Revoking pushes the account (with the revocation) to the servers over the bus, as the system
account's user: the server closes that user's connections and refuses its reconnects, and no
other service restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import nats
from bus.connection import auth_options
from bus.permissions import ENHANCER, inbox_prefix
from bus.settings import NatsSettings, S3Settings, SettingsError

from .identity import SYSTEM_USER, Credential, Identity, IdentityError
from .s3_access import MinioAccess, S3Access, SeaweedAccess
from .servers import ADMIN_ENV_FILE, embedded_s3_admin

#: Written by ``photoenhance up`` (and compose's bootstrap): where this installation's servers are.
STATE_FILE = "endpoints.json"
#: Settings whose values are file names: in an env file they are relative to the file.
PATH_SETTINGS = ("NATS_CREDS", "NATS_CA")


def save_endpoints(identity: Identity, **endpoints: str) -> None:
    """Remember the servers' addresses, so credentials point remote hosts at them by default."""
    path = identity.directory / STATE_FILE
    current = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**current, **endpoints}, indent=2) + "\n")


def endpoints(identity: Identity) -> dict[str, str]:
    path = identity.directory / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def init(identity: Identity, nats_dir: Path, *, resolver_dir: Path, tls_dir: Path | None = None,
         enhancer: str | None = None, cluster_tls: bool = False) -> Path:
    """Write a server's ``nats-server.conf`` and ``auth.conf`` into ``nats_dir`` (compose's ``nats-init``);
    ``resolver_dir``/``tls_dir`` are paths as the server sees them. ``enhancer``: also keep a shared enhancer
    credential (compose's replicas) in the identity. ``cluster_tls``: mutual TLS on cluster routes (the
    nodes' flags name the cluster and its routes; no flag can turn route TLS on)."""
    extra = identity.cluster_config(tls_dir=tls_dir) if cluster_tls else ""
    config = identity.write_server_config(nats_dir, resolver_dir, tls_dir=tls_dir, extra=extra)
    if enhancer and (enhancer not in identity.credentials or not identity.creds_path(enhancer).exists()):
        identity.issue(enhancer, ENHANCER, keep=True)
    return config


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def storage_admin(identity: Identity) -> S3Access | None:
    """Where a GPU host's own S3 keys are made: the embedded SeaweedFS beside the identity (``make run``'s
    ``var/s3``), or the MinIO named by S3_ENDPOINT and its root S3_ACCESS_KEY/S3_SECRET_KEY when
    S3_SERVER=minio (compose). None: storage identities are not managed here."""
    embedded = identity.directory.parent / "s3"
    if (embedded / ADMIN_ENV_FILE).exists():
        return SeaweedAccess(embedded_s3_admin(embedded))
    if os.environ.get("S3_SERVER") == "minio":
        return MinioAccess(S3Settings.from_env())
    return None


def create(identity: Identity, role: str, name: str, out: Path, *, nats_url: str | None = None,
           storage: S3Access | None = None, s3_endpoint: str | None = None) -> Path:
    """Mint ``name``'s credential and write ``out`` (an env file), ``NAME.creds`` and ``ca.pem`` beside it.

    ``storage``: where to make the host's own S3 keys (limited to its role's scope), written into the file
    with ``s3_endpoint`` (the storage as that host reaches it)."""
    known = endpoints(identity)
    url = nats_url or known.get("nats_url")
    if not url:
        raise IdentityError("no NATS URL known: pass --nats-url tls://HOST:4222 (the address this host reaches)")
    out = out.resolve()
    creds_file = out.with_name(f"{name}.creds")
    ca_file = out.with_name("ca.pem")
    s3_env: dict[str, str] = {}
    if storage is not None:
        keys = storage.create(name, role)
        s3_env = {"S3_ENDPOINT": s3_endpoint or known.get("s3_endpoint") or storage.settings.endpoint,
                  **keys.env(), "S3_BUCKET": storage.settings.bucket}
    text = identity.issue(name, role, s3_access_key=s3_env.get("S3_ACCESS_KEY"))
    _write_private(creds_file, text)
    shutil.copyfile(identity.tls.ca, ca_file)
    issued = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# PhotoEnhanceAI {role} credential {name!r}, issued {issued}.",
             "# Secret: anyone holding this file and the .creds beside it can act as this worker.",
             f"NATS_URL={url}", f"NATS_CREDS={creds_file.name}", f"NATS_CA={ca_file.name}",
             f"NATS_INBOX_PREFIX={inbox_prefix(name)}"]
    if role == ENHANCER:
        lines.append(f"ENHANCER_ID={name}")
    lines += [f"{k}={v}" for k, v in s3_env.items()]
    _write_private(out, "\n".join(lines) + "\n")
    return out


def load_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, blank lines); file settings resolved relative to the file."""
    values: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SettingsError(f"{path}:{number}: expected KEY=value, got {raw!r}")
        key, value = key.strip(), value.strip().strip('"').strip("'")
        if (key in PATH_SETTINGS or key.endswith("_FILE")) and value and not Path(value).is_absolute():
            value = str(Path(path).resolve().parent / value)
        values[key] = value
    return values


async def push_account(identity: Identity, url: str) -> str:
    """Send the account (with its revocations) to the servers; they apply it to live connections."""
    settings = NatsSettings(url=url, creds=identity.creds_path(SYSTEM_USER), ca=identity.tls.ca)
    nc = await nats.connect(servers=settings.servers, **auth_options(settings), connect_timeout=5,
                            max_reconnect_attempts=2)
    try:
        reply = await nc.request("$SYS.REQ.CLAIMS.UPDATE", identity.account_jwt().encode(), timeout=5)
    finally:
        await nc.close()
    answer = json.loads(reply.data)
    if "error" in answer:
        raise IdentityError(f"the server refused the account update: {answer['error'].get('description')}")
    return str(answer.get("data", {}).get("message", "updated"))


def revoke(identity: Identity, name: str, *, nats_url: str | None = None,
           storage: S3Access | None = None) -> Credential:
    """Revoke ``name``, delete its S3 keys, and push the change to the running servers (if any are known)."""
    cred = identity.revoke(name)
    if storage is not None and cred.s3_access_key:
        storage.delete(name)
    url = nats_url or endpoints(identity).get("nats_url")
    if url:
        asyncio.run(push_account(identity, url))
    return cred


def table(identity: Identity) -> Iterator[str]:
    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"

    yield f"{'NAME':<24} {'ROLE':<9} {'STATE':<8} {'ISSUED (UTC)':<17} {'REVOKED (UTC)':<17} {'S3 KEY':<22} NKEY"
    for c in sorted(identity.credentials.values(), key=lambda c: (c.role, c.name)):
        yield (f"{c.name:<24} {c.role:<9} {'active' if c.active else 'revoked':<8} {when(c.issued_at):<17} "
               f"{when(c.revoked_at):<17} {c.s3_access_key or '-':<22} {c.public_key}")
