"""Billing's ``nats.micro`` service: one endpoint per subject in ``routes`` (each a room's method), in the
``billing`` queue group.

``nats.micro`` runs an endpoint's handler inline, one request at a time per process; a sign-in or
a prepay waits on WeChat for up to seconds, so each request runs in its own task instead (tracked,
and awaited on shutdown). Refusals are micro service errors whose code is the HTTP status.

Shutting down loses no request: the endpoints' subscriptions are *drained* (the server sends no more,
and every request already on its way to this process is still handled), the requests in hand are
answered, and one still running after the drain timeout is answered 503 (try again) and abandoned.
A request sent once billing has stopped listening gets "no responders" at once, which the edge
answers 503 with ``Retry-After``. Every effect is a de-duplicated fact, so a retried request is
applied once (a reservation is keyed by its task, an order by its number).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from bus import __version__, subjects, texts
from bus.billing import (
    NotifyRequest,
    OpenidRequest,
    OrderCloseRequest,
    OrderQueryRequest,
    PayCreateRequest,
    RefundRequest,
    SessionRequest,
    StatsRequest,
    UseReleaseRequest,
    UseRequest,
)
from bus.codec import SchemaError
from bus.schemas import Message
from bus.texts import Said

from .errors import BillingError, NotifyRejected
from .rooms import Rooms

log = logging.getLogger(__name__)

#: A room's method: a request message in, a reply message out (or ``BillingError``).
Handler = Callable[[Any], Awaitable[Message]]


@dataclass(frozen=True)
class Route:
    """What answers one subject: the ``nats.micro`` endpoint's name, the request type and the handler."""

    name: str
    request: type[Message]
    handler: Handler


def routes(rooms: Rooms) -> dict[str, Route]:
    """The one table of what billing answers: subject → route."""
    return {
        subjects.BILLING_AUTH_OPENID: Route("auth_openid", OpenidRequest, rooms.sessions.sign_in),
        subjects.BILLING_PAY_CREATE: Route("pay_create", PayCreateRequest, rooms.orders.create),
        subjects.BILLING_PAY_NOTIFY: Route("pay_notify", NotifyRequest, rooms.orders.notify),
        subjects.BILLING_PAY_QUERY: Route("pay_query", OrderQueryRequest, rooms.orders.query),
        subjects.BILLING_PAY_ORDERS: Route("pay_orders", SessionRequest, rooms.accounts.orders),
        subjects.BILLING_PAY_STATS: Route("pay_stats", StatsRequest, rooms.accounts.stats),
        subjects.BILLING_ACCOUNT: Route("account", SessionRequest, rooms.accounts.account),
        subjects.BILLING_USE_RESERVE: Route("use_reserve", UseRequest, rooms.uses.reserve),
        subjects.BILLING_USE_RELEASE: Route("use_release", UseReleaseRequest, rooms.uses.release),
        subjects.BILLING_PAY_CLOSE: Route("pay_close", OrderCloseRequest, rooms.orders.close),
        subjects.BILLING_PAY_REFUND: Route("pay_refund", RefundRequest, rooms.refunds.refund),
        subjects.BILLING_PAY_REFUND_NOTIFY: Route("pay_refund_notify", NotifyRequest, rooms.refunds.notify),
    }


class Endpoints:
    """Starts the micro service; ``stop()`` stops taking requests and waits for those in flight."""

    def __init__(self, nc: Client, table: Mapping[str, Route]) -> None:
        self.nc = nc
        self.table = table
        self.service: Service | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.service = await add_service(
            self.nc, name=subjects.BILLING_SERVICE, version=__version__, queue_group=subjects.BILLING_QUEUE,
            description="PhotoEnhanceAI billing: WeChat sign-in and payments, credits ledger")
        for subject, route in self.table.items():
            await self.service.add_endpoint(name=route.name, subject=subject, handler=self._spawn(route))

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop taking requests without dropping one, answer those in hand; give up on any still running
        after ``timeout`` seconds (each is answered 503 first)."""
        service, self.service = self.service, None
        if service is not None:
            await _drain_endpoints(service)
            await service.stop()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            if pending:
                log.warning("%d billing request(s) still running after %.0f s; answering them 503",
                            len(pending), timeout)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, route: Route) -> Callable[[Request], Awaitable[None]]:
        async def handler(req: Request) -> None:
            task = asyncio.create_task(self._answer(req, route))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handler

    async def _answer(self, req: Request, route: Route) -> None:
        try:
            try:
                message = route.request.decode(req.data, subject=req.subject)
            except SchemaError as e:
                raise BillingError(400, texts.BILLING_MALFORMED(detail=str(e))) from e
            reply = await route.handler(message)
            await req.respond(reply.encode(), headers={subjects.TYPE_HEADER: reply.TYPE})
        except BillingError as e:
            if e.status >= 500 or isinstance(e, NotifyRejected):  # a forged notify is worth an operator's look
                log.warning("%s: %s (%s)", req.subject, e.message, e.status)
            await _refuse(req, e.status, e.said)
        except Exception:
            log.exception("%s failed", req.subject)
            await _refuse(req, 500, texts.BILLING_FAILED())
        except asyncio.CancelledError:  # shutting down past the drain timeout: hand the request back
            await _refuse(req, 503, texts.BILLING_RESTARTING())
            raise


async def _refuse(req: Request, status: int, said: Said) -> None:
    """A service error: the status as its code, the English as its description (one line) and what it says
    (``bus.texts``) as its body, which the edge words in the asker's language."""
    await req.respond_error(str(status), " ".join(str(said).split()), data=texts.pack(said))


async def _drain_endpoints(service: Service) -> None:
    """Drain each endpoint's subscription, so no request already sent to this process is dropped.

    ``Service.stop()`` *unsubscribes* its endpoints: requests the server had already sent, or that sat in
    the subscription's queue, are discarded and their callers wait out their timeout (the edge: 25 s, then
    504). Draining sends the unsubscribe, waits for the server's round trip and hands every message that
    arrived before it to the handler. nats.micro has no public way to do this, hence its attributes; if
    they change, ``Service.stop()`` alone still stops the service (and the shutdown test fails)."""
    endpoints = getattr(service, "_endpoints", None)
    if not isinstance(endpoints, list):
        return
    subs = [sub for sub in (getattr(e, "_subscription", None) for e in endpoints) if sub is not None]
    await asyncio.gather(*(sub.drain() for sub in subs))
    service._endpoints = []  # drained: Service.stop() must not unsubscribe them again
