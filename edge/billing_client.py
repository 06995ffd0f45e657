"""Asking billing over NATS request/reply: the one place where billing's answers become HTTP answers.

The edge holds no billing state or secret. Billing answers refusals as ``nats.micro`` service errors whose
code is the HTTP status, whose description is the English sentence and whose body is what it says
(``bus.texts``: the edge words it in each request's language); with no billing on the bus, NATS says so
in about a millisecond and the edge answers 503 at once. Used by the WeChat routes and by the credit
reservation (``edge.credits``), which is why it is a module of its own and not part of a route.
"""

from __future__ import annotations

from typing import TypeVar

import nats.errors
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from bus import subjects
from bus.codec import SchemaError
from bus.schemas import Message
from bus.texts import restore, unpack

from . import texts
from .errors import ApiError
from .resources import Resources

#: Seconds the edge waits for billing, which may itself wait on WeChat (10 s per call).
BILLING_TIMEOUT = 25.0

Reply = TypeVar("Reply", bound=Message)


async def ask(res: Resources, subject: str, message: Message, reply_type: type[Reply]) -> Reply:
    """One request to billing; its refusals become ``ApiError`` with billing's status and sentence."""
    try:
        msg = await res.nc.request(subject, message.encode(), timeout=BILLING_TIMEOUT,
                                   headers={subjects.TYPE_HEADER: message.TYPE})
    except nats.errors.NoRespondersError as e:
        raise ApiError(503, texts.PAYMENTS_UNAVAILABLE(), headers={"Retry-After": "10"}, success=False) from e
    except nats.errors.TimeoutError as e:
        raise ApiError(504, texts.BILLING_TIMEOUT(), success=False) from e
    headers = msg.headers or {}
    if ERROR_CODE_HEADER in headers:
        code = headers[ERROR_CODE_HEADER]
        status = int(code) if code.isdigit() and 400 <= int(code) < 600 else 502
        retry = {"Retry-After": "10"} if status == 503 else None  # billing is restarting: come back soon
        said = restore(unpack(msg.data), headers.get(ERROR_HEADER) or None)  # an older billing sends no body
        raise ApiError(status, said or texts.BILLING_REFUSED(), headers=retry, success=False)
    try:
        return reply_type.decode(msg.data, subject=subject)
    except SchemaError as e:
        raise ApiError(502, texts.BILLING_UNREADABLE(), success=False) from e
