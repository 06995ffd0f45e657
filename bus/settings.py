"""Connection settings shared by every service, read from the environment only.

Secrets come from ``NAME`` or from the file named by ``NAME_FILE`` (Docker/Kubernetes secrets),
never from a command line, and are kept out of ``repr`` so they cannot reach a log line.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is missing or malformed; raised at start-up, not on the first message."""


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    raw = env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from e


def env_float(name: str, default: float) -> float:
    raw = env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from e


def env_switch(name: str, default: bool) -> bool:
    """An on/off setting: on/true/yes/1 or off/false/no/0 (any case); anything else is refused at start-up."""
    raw = env(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in ("on", "true", "yes", "1"):
        return True
    if word in ("off", "false", "no", "0"):
        return False
    raise SettingsError(f"{name} must be on or off, got {raw[:20]!r}")


def env_secret(name: str) -> str | None:
    """``NAME`` or the contents of the file ``NAME_FILE`` (trailing newline stripped)."""
    value = env(name)
    if value is not None:
        return value
    path = env(f"{name}_FILE")
    if path is None:
        return None
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as e:
        raise SettingsError(f"{name}_FILE points to an unreadable file: {e.strerror}") from e


@dataclass(frozen=True)
class NatsSettings:
    """How a service reaches NATS, with the credential of its own role.

    The credential is one of NATS's standard forms: a ``.creds`` file (``NATS_CREDS``: user JWT + nkey
    seed, what ``photoenhance credentials create`` writes), an nkey seed (``NATS_NKEY_SEED``), or a user
    and password. ``NATS_CA`` is the CA that signed the server's certificate (TLS is then required);
    ``NATS_INBOX_PREFIX`` the reply subjects this credential alone may subscribe to.
    """

    url: str = "nats://127.0.0.1:4222"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    creds: Path | None = None
    nkey_seed: str | None = field(default=None, repr=False)
    ca: Path | None = None
    inbox_prefix: str = "_INBOX"
    #: Seconds a request to another service may take before we give up (never nats-py's 0.5 s default).
    request_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("creds", "ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise SettingsError(f"NATS_{name.upper()} points to {path}, which is not a readable file")

    @property
    def servers(self) -> list[str]:
        """``NATS_URL`` may list several servers of a cluster, comma-separated."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def credential_name(self) -> str | None:
        """The name in the ``.creds`` file's user JWT (``photoenhance credentials create … NAME``)."""
        if self.creds is None:
            return None
        lines = Path(self.creds).read_text().splitlines()
        try:
            payload = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1].split(".")[1]
            return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["name"])
        except (ValueError, IndexError, KeyError) as e:
            raise SettingsError(f"NATS_CREDS ({self.creds}) is not a NATS .creds file") from e

    @classmethod
    def from_env(cls, role: str) -> NatsSettings:
        creds, ca = env("NATS_CREDS"), env("NATS_CA")
        return cls(
            url=env("NATS_URL", cls.url) or cls.url,
            user=None if creds else env("NATS_USER", role),
            password=env_secret("NATS_PASSWORD"),
            creds=Path(creds) if creds else None,
            nkey_seed=env_secret("NATS_NKEY_SEED"),
            ca=Path(ca) if ca else None,
            inbox_prefix=env("NATS_INBOX_PREFIX", cls.inbox_prefix) or cls.inbox_prefix,
            request_timeout=env_float("NATS_REQUEST_TIMEOUT", cls.request_timeout),
        )


@dataclass(frozen=True)
class S3Settings:
    """Where images live. Any S3 server works (MinIO in production, SeaweedFS embedded)."""

    endpoint: str = "http://127.0.0.1:8333"
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    bucket: str = "photoenhance"
    region: str = "us-east-1"
    #: Endpoint put into presigned URLs handed to clients (defaults to ``endpoint``).
    public_endpoint: str | None = None
    #: Seconds to connect, and to wait for the next bytes of an answer: a hung S3 fails a call, never a worker.
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Retries of a failed connection or a 5xx answer (with back-off) before the call fails.
    retries: int = 3
    #: Largest image object read into memory (MAX_UPLOAD_MB, as the edge accepts); larger is refused unread.
    max_input_bytes: int = 50 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("endpoint", "public_endpoint"):
            value = getattr(self, name)
            if value is not None and urlsplit(value).scheme not in ("http", "https"):
                raise SettingsError(f"S3 {name} must be an http(s) URL, got {value!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise SettingsError("S3_CONNECT_TIMEOUT and S3_READ_TIMEOUT must be positive")
        if not 0 <= self.retries <= 10:
            raise SettingsError("S3_RETRIES must be between 0 and 10")

    @classmethod
    def from_env(cls) -> S3Settings:
        return cls(
            endpoint=env("S3_ENDPOINT", cls.endpoint) or cls.endpoint,
            access_key=env_secret("S3_ACCESS_KEY"),
            secret_key=env_secret("S3_SECRET_KEY"),
            bucket=env("S3_BUCKET", cls.bucket) or cls.bucket,
            region=env("S3_REGION", cls.region) or cls.region,
            public_endpoint=env("S3_PUBLIC_ENDPOINT"),
            connect_timeout=env_float("S3_CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=env_float("S3_READ_TIMEOUT", cls.read_timeout),
            retries=env_int("S3_RETRIES", cls.retries),
            max_input_bytes=int(env_float("MAX_UPLOAD_MB", 50) * 1024 * 1024),
        )


@dataclass(frozen=True)
class TaskSettings:
    """How long tasks and their images are kept, and how often a job may be retried."""

    #: Task records (KV TTL) and images (S3 lifecycle) expire after this many hours.
    retention_hours: float = 24.0
    #: A job whose worker disappeared is redelivered after this many seconds without a sign of life.
    ack_wait: float = 30.0
    #: Attempts before a task is reported failed (one more delivery is used to report it).
    max_attempts: int = 3
    #: Jobs that may wait for a free enhancer; past it the edge answers 429 with Retry-After.
    queue_limit: int = 1000
    #: JetStream replicas of streams and buckets (3 on a 3-node cluster).
    replicas: int = 1

    def __post_init__(self) -> None:
        if self.retention_hours <= 0:
            raise SettingsError("RETENTION_HOURS must be positive")
        if self.max_attempts < 1:
            raise SettingsError("TASK_MAX_ATTEMPTS must be at least 1")
        if self.ack_wait < 2:
            raise SettingsError("TASK_ACK_WAIT must be at least 2 seconds")
        if self.queue_limit < 1:
            raise SettingsError("QUEUE_LIMIT must be at least 1")
        if self.replicas not in (1, 3, 5):
            raise SettingsError("NATS_REPLICAS must be 1, 3 or 5")

    @classmethod
    def from_env(cls) -> TaskSettings:
        return cls(
            retention_hours=env_float("RETENTION_HOURS", cls.retention_hours),
            ack_wait=env_float("TASK_ACK_WAIT", cls.ack_wait),
            max_attempts=env_int("TASK_MAX_ATTEMPTS", cls.max_attempts),
            queue_limit=env_int("QUEUE_LIMIT", cls.queue_limit),
            replicas=env_int("NATS_REPLICAS", cls.replicas),
        )
