"""Fixtures for billing: the WeChat stand-in, and an edge plus a real ``photoenhance billing`` process
(billing's own NATS credentials) on the session's nats-server and S3 server, configured to talk to
the stand-in exactly as to WeChat."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..conftest import TEST_ENV
from ..support import ServiceProcess, Stack, wait_until
from .wechat_standin import WeChatStandIn

#: Free enhancements a day in these tests (the default is 3): one, so the quota runs out quickly.
FREE_DAILY = 1


@dataclass
class BillingStack:
    """An edge and a billing process; ``restart_billing`` keeps the same database and settings."""

    stack: Stack
    billing: ServiceProcess
    db_path: Path

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def notify_url(self) -> str:
        return f"{self.url}/api/wechat/pay/notify"

    def wait_ready(self) -> None:
        """Billing is on the bus once the edge's bridge gets an answer other than 503 (no responders)."""
        def answered() -> bool:
            assert self.billing.alive, f"billing exited:\n{self.billing.log()[-3000:]}"
            r = httpx.post(f"{self.url}/api/wechat/auth/openid", json={"code": "readiness-probe"}, timeout=10)
            return r.status_code != 503

        wait_until(answered, 60, "billing to answer on the bus")

    def stop_billing(self) -> None:
        assert self.billing.stop() == 0, self.billing.log()[-3000:]

    def start_billing(self) -> None:
        self.billing.start()
        self.wait_ready()


@pytest.fixture(scope="session")
def wechat() -> Iterator[WeChatStandIn]:
    standin = WeChatStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


@contextmanager
def running_billing(nats_server: EmbeddedNats, s3_server: EmbeddedS3, wechat: WeChatStandIn, model_dir: Path,
                    root: Path, **env: str) -> Iterator[BillingStack]:
    """An edge and a billing process (WeChat pointed at the stand-in) on the given servers."""
    # The session's model directory: Real-ESRGAN's converted weights are cached there once.
    stack = Stack(nats=nats_server, s3=s3_server, root=root, model_dir=model_dir, extra_env={**TEST_ENV, **env})
    db_path = root / "billing.sqlite3"
    billing: ServiceProcess | None = None
    try:
        stack.start_edge()
        billing_env = stack.env("billing", BILLING_DB=str(db_path), BILLING_SESSION_SECRET=secrets.token_hex(24),
                        BILLING_FREE_DAILY=str(FREE_DAILY),
                        **wechat.billing_env(root / "secrets", f"{stack.url}/api/wechat/pay/notify"))
        billing = ServiceProcess("billing", billing_env, root / "logs" / "billing.log").start()
        bs = BillingStack(stack=stack, billing=billing, db_path=db_path)
        bs.wait_ready()
        yield bs
    finally:
        if billing is not None:
            billing.stop()
        stack.stop()


@pytest.fixture(scope="session")
def billing_stack(nats_server: EmbeddedNats, s3_server: EmbeddedS3, wechat: WeChatStandIn, model_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[BillingStack]:
    with running_billing(nats_server, s3_server, wechat, model_dir, tmp_path_factory.mktemp("billing")) as bs:
        yield bs


@pytest.fixture(scope="session")
def billing_enhancer(stack: Stack, billing_stack: BillingStack) -> ServiceProcess:
    """The session's enhancer (no GFPGAN weights, like CI): it pulls from the one work queue on the bus,
    so it serves the billing stack's edge too, and the fleet stays the single worker other tests expect."""
    return stack.enhancers[0]
