"""Billing settings, from the environment only (secrets also from ``NAME_FILE``).

WeChat is optional: without ``WECHAT_APPID`` billing still keeps the ledger, and its WeChat
endpoints answer 503 "not configured". Secrets are excluded from ``repr`` so no log line shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bus.settings import NatsSettings, SettingsError, env, env_float, env_int, env_secret

from .products import DEFAULT_PRODUCTS, Product, parse_products

PAY_API = "https://api.mch.weixin.qq.com"
LOGIN_API = "https://api.weixin.qq.com"


def _url(name: str, value: str) -> str:
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


@dataclass(frozen=True)
class WeChatSettings:
    """A merchant's WeChat Pay v3 and mini-program credentials."""

    appid: str
    mchid: str
    app_secret: str = field(repr=False)
    #: APIv3 key: 32 bytes, decrypts notify resources (AES-256-GCM).
    apiv3_key: str = field(repr=False)
    #: Merchant API private key (PEM) and its certificate's serial number: sign our requests.
    private_key: str = field(repr=False)
    cert_serial_no: str
    notify_url: str
    #: Public-key mode (微信支付公钥): verifies WeChat's signatures without downloading certificates.
    public_key: str | None = field(default=None, repr=False)
    public_key_id: str | None = None
    #: Certificate mode: where downloaded platform certificates are kept.
    cert_dir: str | None = None
    pay_api: str = PAY_API
    login_api: str = LOGIN_API
    #: Seconds each call to WeChat may take.
    timeout: float = 10.0
    #: Where WeChat sends refund notifies; by default ``notify_url`` with its last ``/notify`` made
    #: ``/refund-notify`` (the edge's ``/api/wechat/pay/refund-notify``).
    refund_notify_url: str | None = None

    def __post_init__(self) -> None:
        if len(self.apiv3_key.encode()) != 32:
            raise SettingsError("WECHAT_APIV3_KEY must be exactly 32 bytes")
        if (self.public_key is None) != (self.public_key_id is None):
            raise SettingsError("WECHAT_PAY_PUBLIC_KEY and WECHAT_PAY_PUBLIC_KEY_ID go together")
        if "BEGIN" not in self.private_key:
            raise SettingsError("WECHAT_PRIVATE_KEY must be a PEM private key (apiclient_key.pem)")
        for name in ("notify_url", "pay_api", "login_api"):
            object.__setattr__(self, name, _url(name, getattr(self, name)))
        if self.refund_notify_url is None:
            head, sep, tail = self.notify_url.rpartition("/notify")
            if not sep or tail:
                raise SettingsError("WECHAT_REFUND_NOTIFY_URL is required when WECHAT_NOTIFY_URL does not end "
                                    "in /notify")
            object.__setattr__(self, "refund_notify_url", f"{head}/refund-notify")
        object.__setattr__(self, "refund_notify_url", _url("refund_notify_url", str(self.refund_notify_url)))

    @classmethod
    def from_env(cls) -> WeChatSettings | None:
        appid = env("WECHAT_APPID")
        if appid is None:
            return None

        def required(name: str, secret: bool = False) -> str:
            value = env_secret(name) if secret else env(name)
            if not value:
                raise SettingsError(f"{name} is required when WECHAT_APPID is set")
            return value

        return cls(
            appid=appid,
            mchid=required("WECHAT_MCHID"),
            app_secret=required("WECHAT_APP_SECRET", secret=True),
            apiv3_key=required("WECHAT_APIV3_KEY", secret=True),
            private_key=required("WECHAT_PRIVATE_KEY", secret=True),
            cert_serial_no=required("WECHAT_CERT_SERIAL_NO"),
            notify_url=required("WECHAT_NOTIFY_URL"),
            public_key=env_secret("WECHAT_PAY_PUBLIC_KEY"),
            public_key_id=env("WECHAT_PAY_PUBLIC_KEY_ID"),
            cert_dir=env("WECHAT_CERT_DIR"),
            pay_api=env("WECHAT_PAY_API", PAY_API) or PAY_API,
            login_api=env("WECHAT_LOGIN_API", LOGIN_API) or LOGIN_API,
            timeout=env_float("WECHAT_TIMEOUT", 10.0),
            refund_notify_url=env("WECHAT_REFUND_NOTIFY_URL"),
        )


@dataclass(frozen=True)
class BillingSettings:
    nats: NatsSettings
    #: The SQLite ledger: a projection of the PE_EVENTS stream, rebuildable by replay.
    db_path: Path = Path("var/billing.sqlite3")
    wechat: WeChatSettings | None = None
    #: Signs our mini-program session tokens (required with WeChat).
    session_secret: str | None = field(default=None, repr=False)
    session_ttl: float = 7 * 24 * 3600.0
    products: tuple[Product, ...] = DEFAULT_PRODUCTS
    #: A notify whose timestamp is further than this from our clock is rejected (WeChat: 5 minutes).
    notify_window: float = 300.0
    #: Free enhancements per signed-in user per (China-time) day, before credits are used.
    free_daily: int = 3
    #: Enhancements per day for an anonymous web visitor (by address); 0: unlimited.
    anonymous_daily: int = 20
    #: A reservation whose task has not ended after this long stops holding a credit (its task was lost).
    reservation_hold: float = 24 * 3600.0
    #: On SIGTERM, seconds to finish the requests in hand (under the edge's 25 s wait for an answer);
    #: one still running then is answered 503 (try again) and abandoned.
    drain_timeout: float = 20.0
    #: Seconds between reconciler passes, and how long a pending order or refund waits for WeChat's notify
    #: before billing asks WeChat itself (a notify lost, or billing stopped halfway).
    reconcile_interval: float = 300.0
    #: Seconds an order may be paid (its ``time_expire`` at WeChat, which suggests more than a minute);
    #: the reconciler closes it after that. WeChat's prepay id lives two hours: no point in longer.
    order_expiry: float = 7200.0

    def __post_init__(self) -> None:
        if self.wechat is not None and (not self.session_secret or len(self.session_secret) < 16):
            raise SettingsError("BILLING_SESSION_SECRET (16 characters or more) is required with WeChat")
        if self.session_ttl <= 0 or self.notify_window <= 0:
            raise SettingsError("BILLING_SESSION_TTL and the notify window must be positive")
        if self.anonymous_daily < 0:
            raise SettingsError("BILLING_ANONYMOUS_DAILY must be 0 (unlimited) or more")
        if self.free_daily < 0 or self.reservation_hold <= 0:
            raise SettingsError("BILLING_FREE_DAILY must be 0 or more and BILLING_RESERVATION_HOLD positive")
        if self.drain_timeout <= 0:
            raise SettingsError("BILLING_DRAIN_TIMEOUT must be positive")
        if self.reconcile_interval <= 0 or not 0 < self.order_expiry <= 7200:
            raise SettingsError("BILLING_RECONCILE_INTERVAL must be positive and BILLING_ORDER_EXPIRY between 0 and "
                                "7200 seconds")

    def product(self, product_id: str) -> Product | None:
        return next((p for p in self.products if p.id == product_id), None)

    @classmethod
    def from_env(cls) -> BillingSettings:
        raw_products = env_secret("BILLING_PRODUCTS")
        return cls(
            nats=NatsSettings.from_env("billing"),
            db_path=Path(env("BILLING_DB", "var/billing.sqlite3") or "var/billing.sqlite3"),
            wechat=WeChatSettings.from_env(),
            session_secret=env_secret("BILLING_SESSION_SECRET"),
            session_ttl=float(env_int("BILLING_SESSION_TTL", 7 * 24 * 3600)),
            products=parse_products(raw_products) if raw_products else DEFAULT_PRODUCTS,
            free_daily=env_int("BILLING_FREE_DAILY", 3),
            anonymous_daily=env_int("BILLING_ANONYMOUS_DAILY", 20),
            reservation_hold=env_float("BILLING_RESERVATION_HOLD", 24 * 3600.0),
            drain_timeout=env_float("BILLING_DRAIN_TIMEOUT", 20.0),
            reconcile_interval=env_float("BILLING_RECONCILE_INTERVAL", 300.0),
            order_expiry=env_float("BILLING_ORDER_EXPIRY", 7200.0),
        )
