"""Edge settings, from the environment only."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from bus.output_size import DEFAULT_MAX_OUTPUT_PIXELS
from bus.settings import (
    NatsSettings,
    S3Settings,
    SettingsError,
    TaskSettings,
    env,
    env_float,
    env_int,
    env_secret,
)

from .connections import ConnectionLimits

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@dataclass(frozen=True)
class EdgeSettings:
    nats: NatsSettings
    s3: S3Settings
    tasks: TaskSettings
    host: str = "127.0.0.1"
    port: int = 8000
    #: Largest upload accepted, in bytes (413 beyond; enforced while the body streams in).
    max_upload_bytes: int = 50 * 1024 * 1024
    #: Largest image accepted, in pixels (decompression bombs are refused before decoding).
    max_input_pixels: int = 20_000_000
    #: Largest result made, in pixels: a larger one is made at the largest scale that fits (``bus.output_size``).
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS
    #: Seconds the synchronous presigned flow waits for a result before answering "still processing".
    sync_timeout: float = 300.0
    #: Lifetime of presigned result URLs, in seconds.
    presign_seconds: int = 3600
    #: Lifetime of presigned upload URLs, in seconds: minutes, so a leaked URL is soon worthless.
    upload_url_seconds: int = 300
    #: Staging uploads (``uploads/``) never processed are deleted this many seconds after they were written,
    #: by a janitor that looks every ``staging_sweep_seconds`` (S3 lifecycle rules count whole days).
    staging_max_age: float = 1800.0
    staging_sweep_seconds: float = 300.0
    #: Operator token for admin routes (Authorization: Bearer ...); admin routes are off without one.
    admin_token: str | None = field(default=None, repr=False)
    #: Origins allowed by CORS (comma-separated in CORS_ORIGINS); empty: same-origin only.
    cors_origins: tuple[str, ...] = ()
    #: Addresses (IPs or CIDR networks, comma-separated in EDGE_TRUSTED_PROXIES) of the reverse proxies in
    #: front of the edge: only a request arriving from one of them may name its client in X-Forwarded-For
    #: (the rightmost address no trusted proxy added). Empty: the header is ignored, as anyone can forge it.
    trusted_proxies: tuple[str, ...] = ()
    #: Most photos the web page sends in one batch (each is its own task; this only guides the page).
    max_batch: int = 20
    #: Directory of the web page (its build, ``dist/``, is served at ``/``).
    web_dir: Path = WEB_DIR
    #: Heartbeats an enhancer may miss before the registry calls it unhealthy.
    missed_beats: int = 3
    #: Seconds of silence after which the registry forgets an enhancer.
    forget_after: float = 300.0
    #: Per client (address, and session when signed in): enhancement requests, "requests/seconds".
    rate_enhance: str = "30/60"
    #: Per client: sign-in and payment requests.
    rate_account: str = "10/60"
    #: What clients may hold open at once (streams, downloads, reads, uploads) and slow-client timeouts.
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"EDGE_PORT must be a TCP port, got {self.port}")
        if self.max_upload_bytes < 1024:
            raise SettingsError("MAX_UPLOAD_MB is too small")
        if self.max_output_pixels < 1:
            raise SettingsError("MAX_OUTPUT_MEGAPIXELS must be positive")
        if not 1 <= self.max_batch <= 1000:
            raise SettingsError(f"WEB_MAX_BATCH must be between 1 and 1000, got {self.max_batch}")
        if not 10 <= self.upload_url_seconds <= 3600:
            raise SettingsError("PRESIGN_UPLOAD_SECONDS must be between 10 and 3600")
        if self.staging_max_age <= 0 or self.staging_sweep_seconds <= 0:
            raise SettingsError("STAGING_MAX_AGE and STAGING_SWEEP_SECONDS must be positive")
        if "*" in self.cors_origins:
            raise SettingsError("CORS_ORIGINS must list origins; '*' is not allowed")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as e:
                raise SettingsError(f"EDGE_TRUSTED_PROXIES must list IP addresses or networks, not {proxy!r}") from e

    @classmethod
    def from_env(cls) -> EdgeSettings:
        origins = tuple(o.strip() for o in (env("CORS_ORIGINS", "") or "").split(",") if o.strip())
        return cls(
            nats=NatsSettings.from_env("edge"),
            s3=S3Settings.from_env(),
            tasks=TaskSettings.from_env(),
            host=env("EDGE_HOST", "127.0.0.1") or "127.0.0.1",
            port=env_int("EDGE_PORT", env_int("PORT", 8000)),
            max_upload_bytes=int(env_float("MAX_UPLOAD_MB", 50) * 1024 * 1024),
            max_input_pixels=int(env_float("MAX_INPUT_MEGAPIXELS", 20) * 1_000_000),
            max_output_pixels=int(env_float("MAX_OUTPUT_MEGAPIXELS", DEFAULT_MAX_OUTPUT_PIXELS / 1e6) * 1_000_000),
            sync_timeout=env_float("SYNC_TIMEOUT", 300.0),
            presign_seconds=env_int("PRESIGN_SECONDS", 3600),
            upload_url_seconds=env_int("PRESIGN_UPLOAD_SECONDS", 300),
            staging_max_age=env_float("STAGING_MAX_AGE", 1800.0),
            staging_sweep_seconds=env_float("STAGING_SWEEP_SECONDS", 300.0),
            admin_token=env_secret("ADMIN_TOKEN"),
            cors_origins=origins,
            trusted_proxies=tuple(p.strip() for p in (env("EDGE_TRUSTED_PROXIES", "") or "").split(",") if p.strip()),
            max_batch=env_int("WEB_MAX_BATCH", 20),
            web_dir=Path(env("WEB_DIR", str(WEB_DIR)) or WEB_DIR),
            missed_beats=env_int("REGISTRY_MISSED_BEATS", 3),
            forget_after=env_float("REGISTRY_FORGET_AFTER", 300.0),
            rate_enhance=env("RATE_LIMIT_ENHANCE", "30/60") or "30/60",
            rate_account=env("RATE_LIMIT_ACCOUNT", "10/60") or "10/60",
            connections=ConnectionLimits.from_env(),
        )
