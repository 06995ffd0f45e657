"""Fixtures for billing: the WeChat stand-in, and an edge plus a real ``photoenhance billing`` process
(billing's own NATS credentials) on the session's nats-server and S3 server, configured to talk to
the stand-in exactly as to WeChat (``support.running_billing``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import ServiceProcess, Stack
from .support import BillingStack, running_billing
from .wechat_standin import WeChatStandIn


@pytest.fixture(scope="session")
def wechat() -> Iterator[WeChatStandIn]:
    standin = WeChatStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


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
