"""What each role may do on the bus: the one definition that every credential is minted from.

Built from the names in ``subjects`` so the code and the permissions cannot drift apart. Each list
is what the role's code calls and nothing more; in particular no role but ``admin`` may delete or
purge a stream, a consumer or a bucket, create a stream, or read another role's replies:
each credential has its own inbox prefix (``_INBOX.<name>``) and may subscribe only under it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import subjects as s
from .capabilities import CAPABILITIES

EDGE, ENHANCER, BILLING, ADMIN = "edge", "enhancer", "billing", "admin"
ROLES = (EDGE, ENHANCER, BILLING, ADMIN)

_API = "$JS.API"
_TASKS = f"KV_{s.TASKS_BUCKET}"
_ENHANCERS = f"KV_{s.ENHANCERS_BUCKET}"
#: Looking up each jobs consumer (queue depth, a queued task's place; a worker's start-up check).
_JOBS_INFO = tuple(f"{_API}.CONSUMER.INFO.{s.JOBS_STREAM}.{c}" for c in s.JOBS_CONSUMERS)


@dataclass(frozen=True)
class Permissions:
    """Subjects one credential may publish and subscribe to; ``responses``: it may answer the requests it
    received (the reply subject is allowed once, for one message) without a right to publish to inboxes."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = False


def inbox_prefix(name: str) -> str:
    """Reply subjects of one credential: nobody else may subscribe under them."""
    return f"_INBOX.{s._token(name)}"


def _kv_read(stream: str) -> tuple[str, ...]:
    """Get and watch one KV bucket: lookup, direct/stream gets, ordered push consumers and their flow control."""
    return (f"{_API}.STREAM.INFO.{stream}", f"{_API}.STREAM.MSG.GET.{stream}", f"{_API}.DIRECT.GET.{stream}",
            f"{_API}.DIRECT.GET.{stream}.>", f"{_API}.CONSUMER.CREATE.{stream}", f"{_API}.CONSUMER.CREATE.{stream}.>",
            f"{_API}.CONSUMER.INFO.{stream}.*", f"$JS.FC.{stream}.>")


def _micro(service: str) -> tuple[str, ...]:
    """``nats micro`` discovery subjects a service answers (``$SRV.PING``, ``$SRV.INFO.<service>``, ...)."""
    return ("$SRV.*", f"$SRV.*.{service}", f"$SRV.*.{service}.>")


def for_role(role: str, name: str) -> Permissions | None:
    """The permissions of credential ``name`` of ``role``; ``None`` (everything) for ``admin``."""
    inbox = f"{inbox_prefix(name)}.>"
    if role == EDGE:
        return Permissions(
            publish=(
                # Jobs on the subject of the capability they need (never the legacy subject).
                *(s.jobs_subject(c) for c in CAPABILITIES), f"$KV.{s.TASKS_BUCKET}.>", f"{_API}.INFO",
                f"{_API}.STREAM.INFO.{s.JOBS_STREAM}", *_JOBS_INFO,
                *_kv_read(_TASKS), *_kv_read(_ENHANCERS),
                "pe.billing.>",  # requests to billing (the edge bridges /api/wechat/*)
                "$SRV.PING", "$SRV.INFO", "$SRV.STATS", *(f"$SRV.{v}.{svc}" for v in ("PING", "INFO", "STATS")
                                                          for svc in (s.ENHANCER_SERVICE, s.BILLING_SERVICE)),
            ),
            subscribe=(inbox, s.PROGRESS_WILDCARD),
        )
    if role == ENHANCER:
        return Permissions(
            publish=(
                f"{_API}.INFO", f"{_API}.STREAM.INFO.{s.JOBS_STREAM}", *_JOBS_INFO,
                # Pull and acknowledge jobs from the consumers (a worker binds only those of its capabilities).
                *(f"{_API}.CONSUMER.MSG.NEXT.{s.JOBS_STREAM}.{c}" for c in s.JOBS_CONSUMERS),
                *(f"$JS.ACK.{s.JOBS_STREAM}.{c}.>" for c in s.JOBS_CONSUMERS),
                f"{_API}.STREAM.INFO.{_TASKS}", f"{_API}.STREAM.MSG.GET.{_TASKS}", f"{_API}.DIRECT.GET.{_TASKS}",
                f"{_API}.DIRECT.GET.{_TASKS}.>", f"$KV.{s.TASKS_BUCKET}.>",
                # Its own presence key only (or keys under it, for replicas that share one credential).
                f"{_API}.STREAM.INFO.{_ENHANCERS}", f"$KV.{s.ENHANCERS_BUCKET}.{s._token(name)}",
                f"$KV.{s.ENHANCERS_BUCKET}.{name}.>",
                # Task facts of the two kinds a worker reports; never a billing fact.
                s.task_event("completed"), s.task_event("failed"),
                s.PROGRESS_WILDCARD,
            ),
            subscribe=(inbox, *_micro(s.ENHANCER_SERVICE)),
            responses=True,
        )
    if role == BILLING:
        ledger = s.LEDGER_CONSUMER
        return Permissions(
            publish=(
                f"{_API}.INFO", f"{_API}.STREAM.INFO.{s.EVENTS_STREAM}",
                # Its durable follower, and the ephemeral consumers of a replay (which expire on their own).
                f"{_API}.CONSUMER.CREATE.{s.EVENTS_STREAM}", f"{_API}.CONSUMER.CREATE.{s.EVENTS_STREAM}.>",
                f"{_API}.CONSUMER.DURABLE.CREATE.{s.EVENTS_STREAM}.{ledger}",
                f"{_API}.CONSUMER.INFO.{s.EVENTS_STREAM}.*", f"{_API}.CONSUMER.MSG.NEXT.{s.EVENTS_STREAM}.*",
                f"$JS.ACK.{s.EVENTS_STREAM}.>",
                s.BILLING_EVENTS_WILDCARD,
            ),
            subscribe=(inbox, f"{s.PREFIX}.billing.>", *_micro(s.BILLING_SERVICE)),
            responses=True,
        )
    if role == ADMIN:
        return None
    raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
