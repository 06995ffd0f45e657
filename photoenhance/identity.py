"""The operator's trust root on disk: who may join the bus, with which permissions, and who was cut off.

NATS decentralized auth (the NATS docs' recommended setup): an operator key signs one account
(``PHOTOENHANCE``, JetStream on) and a system account; the account key signs one user JWT per
credential, carrying that role's permissions (``bus.permissions``). The server trusts the operator
and learns accounts from its built-in resolver, so minting a credential never touches the server, and
revoking one is an account update pushed over the bus: the server drops that user within a second.

Layout of the directory (secrets 0600): ``operator.nk``, ``account.nk``, ``system.nk`` (seeds),
``registry.json`` (every credential issued: name, role, public key, when, revoked), ``creds/<name>.creds``
(service credentials kept here), ``tls/`` (see ``photoenhance.tls``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bus import permissions
from bus.permissions import ADMIN, ROLES

from . import nats_jwt, tls
from .nats_jwt import KeyPair

#: The server's configuration; it includes the ``auth.conf`` written beside it (``write_server_config``).
NATS_CONFIG = Path(__file__).resolve().parent.parent / "nats" / "nats-server.conf"
ACCOUNT_NAME = "PHOTOENHANCE"
SYSTEM_ACCOUNT_NAME = "SYS"
#: The system-account user that pushes account updates (revocations) to the servers.
SYSTEM_USER = "sys"
#: Credentials every installation has; enhancers get one each (``photoenhance credentials create``).
SERVICE_CREDENTIALS = {"edge": "edge", "billing": "billing", "admin": ADMIN}


class IdentityError(RuntimeError):
    """A credential cannot be issued or revoked; the message says why."""


@dataclass
class Credential:
    """One issued credential, as ``photoenhance credentials list`` shows it (no secret in here)."""

    name: str
    role: str
    public_key: str
    issued_at: float
    revoked_at: float | None = None
    s3_access_key: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@dataclass
class Identity:
    directory: Path
    operator: KeyPair = field(repr=False)
    account: KeyPair = field(repr=False)
    system: KeyPair = field(repr=False)
    tls: tls.TlsFiles
    credentials: dict[str, Credential] = field(default_factory=dict)

    # --- loading ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, *, tls_hosts: list[str] | tuple[str, ...] = ()) -> Identity:
        """Load the trust root, creating what is missing (first start): keys, CA, service credentials."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        keys = {}
        for name, kind in (("operator", nats_jwt.OPERATOR), ("account", nats_jwt.ACCOUNT),
                           ("system", nats_jwt.ACCOUNT)):
            path = directory / f"{name}.nk"
            if not path.exists():
                _write_secret(path, KeyPair.create(kind).seed + "\n")
            keys[name] = KeyPair.from_seed(path.read_text())
        registry = directory / "registry.json"
        creds = {}
        if registry.exists():
            creds = {c["name"]: Credential(**c) for c in json.loads(registry.read_text())["credentials"]}
        identity = cls(directory, keys["operator"], keys["account"], keys["system"],
                       tls.ensure(directory / "tls", tls_hosts), creds)
        for name, role in SERVICE_CREDENTIALS.items():
            if name not in identity.credentials or not (directory / "creds" / f"{name}.creds").exists():
                identity.issue(name, role, keep=True)
        if not (directory / "creds" / f"{SYSTEM_USER}.creds").exists():
            user = KeyPair.create(nats_jwt.USER)
            jwt = nats_jwt.user_jwt(identity.system, user.public, SYSTEM_USER, None)
            _write_secret(identity.creds_path(SYSTEM_USER), nats_jwt.creds(jwt, user.seed))
        return identity

    def _save(self) -> None:
        data = {"credentials": [asdict(c) for c in sorted(self.credentials.values(), key=lambda c: c.issued_at)]}
        tmp = self.directory / "registry.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.directory / "registry.json")

    def creds_path(self, name: str) -> Path:
        return self.directory / "creds" / f"{name}.creds"

    # --- credentials --------------------------------------------------------------------------------
    def issue(self, name: str, role: str, *, keep: bool = False, s3_access_key: str | None = None) -> str:
        """A new ``.creds`` text for ``name`` with ``role``'s permissions; ``keep`` also stores it here."""
        if role not in ROLES:
            raise IdentityError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        existing = self.credentials.get(name)
        if existing is not None and existing.active and not keep:
            raise IdentityError(f"a credential named {name!r} is already active: revoke it first, or pick a new name")
        perms = permissions.for_role(role, name)  # also checks the name is one subject token
        user = KeyPair.create(nats_jwt.USER)
        text = nats_jwt.creds(nats_jwt.user_jwt(self.account, user.public, name, perms), user.seed)
        self.credentials[name] = Credential(name=name, role=role, public_key=user.public, issued_at=time.time(),
                                            s3_access_key=s3_access_key)
        self._save()
        if keep:
            _write_secret(self.creds_path(name), text)
        return text

    def revoke(self, name: str) -> Credential:
        """Mark ``name`` revoked; the caller pushes ``account_jwt()`` to the servers (``push_account``)."""
        cred = self.credentials.get(name)
        if cred is None:
            raise IdentityError(f"no credential named {name!r} (see `photoenhance credentials list`)")
        if cred.active:
            cred.revoked_at = time.time()
            self._save()
        return cred

    def revocations(self) -> dict[str, int]:
        # A revocation covers user JWTs issued at or before its time: ceil, so the last second is covered.
        return {c.public_key: int(c.revoked_at) + 1 for c in self.credentials.values() if c.revoked_at is not None}

    # --- JWTs and the server's configuration ---------------------------------------------------------
    def account_jwt(self) -> str:
        return nats_jwt.account_jwt(self.operator, self.account.public, ACCOUNT_NAME, jetstream=True,
                                    revocations=self.revocations())

    def server_config(self, resolver_dir: Path, *, tls_dir: Path | None = None) -> str:
        """The trust part of ``nats-server.conf`` (included by it as ``auth.conf``): operator, accounts,
        resolver, TLS. ``tls_dir``: where the server will see ``tls/`` (a container path), if not here."""
        files = self.tls if tls_dir is None else tls.TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem",
                                                               tls_dir / "server-key.pem")
        system_jwt = nats_jwt.account_jwt(self.operator, self.system.public, SYSTEM_ACCOUNT_NAME, jetstream=False)
        operator = nats_jwt.operator_jwt(self.operator, "photoenhance", self.system.public)
        return (
            "# Generated by photoenhance (photoenhance/identity.py); rewritten at every start.\n"
            f'operator: "{operator}"\n'
            f"system_account: {self.system.public}\n"
            "resolver {\n  type: full\n"
            f'  dir: "{resolver_dir}"\n'
            "  allow_delete: false\n  interval: \"2m\"\n  timeout: \"3s\"\n}\n"
            "resolver_preload {\n"
            f'  {self.account.public}: "{self.account_jwt()}"\n'
            f'  {self.system.public}: "{system_jwt}"\n'
            "}\n"
            "tls {\n"
            f'  cert_file: "{files.cert}"\n  key_file: "{files.key}"\n  ca_file: "{files.ca}"\n  timeout: 5\n'
            "}\n"
        )

    def cluster_config(self, *, tls_dir: Path | None = None, name: str | None = None, listen: str | None = None,
                       routes: list[str] | tuple[str, ...] = ()) -> str:
        """A ``cluster {}`` block with mutual TLS on routes (name, listen and routes may come from flags)."""
        tls_dir = tls_dir or self.tls.ca.parent
        lines = ["cluster {"]
        lines += [f"  name: {name}"] if name else []
        lines += [f"  listen: {listen}"] if listen else []
        if routes:
            lines += ["  routes: [", *(f"    {r}" for r in routes), "  ]"]
        lines += ["  tls {", f'    cert_file: "{tls_dir / "server.pem"}"',
                  f'    key_file: "{tls_dir / "server-key.pem"}"', f'    ca_file: "{tls_dir / "ca.pem"}"',
                  "    verify: true", "    timeout: 5", "  }", "}"]
        return "\n".join(lines) + "\n"

    def write_server_config(self, nats_dir: Path, resolver_dir: Path, *, tls_dir: Path | None = None,
                            extra: str = "") -> Path:
        """``nats_dir/nats-server.conf`` (ours) and its ``auth.conf`` (``server_config`` + ``extra``)."""
        nats_dir.mkdir(parents=True, exist_ok=True)
        (nats_dir / "auth.conf").write_text(self.server_config(resolver_dir, tls_dir=tls_dir) + extra)
        config = nats_dir / "nats-server.conf"
        config.write_text(NATS_CONFIG.read_text())
        return config

    def client_env(self, name: str, url: str) -> dict[str, str]:
        """Settings a service reads to connect as ``name`` (a credential kept in this directory)."""
        return {"NATS_URL": url, "NATS_CREDS": str(self.creds_path(name)), "NATS_CA": str(self.tls.ca),
                "NATS_INBOX_PREFIX": permissions.inbox_prefix(name) if name != SYSTEM_USER else "_INBOX"}

