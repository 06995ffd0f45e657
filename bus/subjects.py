"""Every NATS name the system uses: subjects, streams, consumers, buckets, queue groups.

No other module writes a subject string; services import these names (or the builders)
so that the permissions in ``nats/nats-server.conf`` and the code cannot drift apart.
"""

from __future__ import annotations

import re

from .capabilities import CAPABILITIES, check

#: Prefix shared by all application subjects.
PREFIX = "pe"

# --- Enhancer service (nats.micro) --------------------------------------------------------
#: Name under which every enhancer registers with ``nats.micro`` (``nats micro ls`` shows it).
ENHANCER_SERVICE = "enhancer"
#: Queue group of the enhancer's ``nats.micro`` service (it has no endpoints: discovery only).
ENHANCER_QUEUE = "enhancer"
#: ``nats.micro`` discovery subject that every running enhancer answers.
ENHANCER_PING = f"$SRV.PING.{ENHANCER_SERVICE}"

# --- Work queue (JetStream) ---------------------------------------------------------------
#: Work-queue stream holding accepted jobs until one enhancer acknowledges them.
JOBS_STREAM = "PE_JOBS"
#: Where jobs go: one subject per capability under it (:func:`jobs_subject`), all in ``JOBS_STREAM``.
JOBS_PREFIX = f"{PREFIX}.jobs.enhance"
#: The one subject of every job before jobs were routed by capability (``pe.v1`` edges publish there). Still in
#: the stream and served by the consumer of the capability every worker has, so those jobs run too.
LEGACY_JOBS_SUBJECT = JOBS_PREFIX
#: The unfiltered consumer every enhancer shared before: a work-queue stream allows no consumer that overlaps
#: the per-capability ones, so bootstrap deletes it (its jobs stay in the stream for the new consumers).
LEGACY_JOBS_CONSUMER = "enhancers"


def jobs_subject(capability: str) -> str:
    """Subject of the jobs that need ``capability``, e.g. ``pe.jobs.enhance.faces``."""
    return f"{JOBS_PREFIX}.{check(capability)}"


def jobs_consumer(capability: str) -> str:
    """Durable pull consumer of the jobs that need ``capability``; shared by every worker that has it, each
    fetching only when it has a free slot."""
    return f"enhancers-{check(capability)}"


def job_capability(subject: str) -> str | None:
    """The capability a job published on ``subject`` needs; ``None`` for the legacy subject (decide from
    the job's options) or any other subject."""
    capability = subject.removeprefix(f"{JOBS_PREFIX}.")
    return capability if capability != subject and capability in CAPABILITIES else None


#: Every job subject of the stream (per capability, and the legacy one).
JOBS_SUBJECTS: tuple[str, ...] = (*(jobs_subject(c) for c in CAPABILITIES), LEGACY_JOBS_SUBJECT)
#: Every jobs consumer, in the order of :data:`bus.capabilities.CAPABILITIES`.
JOBS_CONSUMERS: tuple[str, ...] = tuple(jobs_consumer(c) for c in CAPABILITIES)

# --- Facts (JetStream) --------------------------------------------------------------------
#: Stream of durable facts other services replay (billing): task completed/failed, ...
EVENTS_STREAM = "PE_EVENTS"
EVENTS_WILDCARD = f"{PREFIX}.events.>"
#: Billing's durable consumer of every fact, from which its ledger is projected.
LEDGER_CONSUMER = "billing-ledger"

# --- Task state (JetStream KV) ------------------------------------------------------------
#: KV bucket holding one record per task; the single source of truth for its status.
TASKS_BUCKET = "pe-tasks"

# --- Presence (JetStream KV) ---------------------------------------------------------------
#: KV bucket of enhancer heartbeats, one key per worker id; the registry view watches it.
ENHANCERS_BUCKET = "pe-enhancers"

# --- Live progress (core NATS, not persisted) -----------------------------------------------
PROGRESS_WILDCARD = f"{PREFIX}.progress.>"

#: Header naming a message's schema, so ``nats sub`` users can tell what a payload is.
TYPE_HEADER = "Pe-Type"
#: JetStream de-duplication header.
MSG_ID_HEADER = "Nats-Msg-Id"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _token(value: str) -> str:
    """Refuse values that would change a subject's shape (dots, wildcards, spaces)."""
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


def task_event(kind: str) -> str:
    """Subject of a task fact, e.g. ``pe.events.task.completed``."""
    return f"{PREFIX}.events.task.{_token(kind)}"


def progress(task_id: str) -> str:
    """Subject on which an enhancer announces the live progress of one task."""
    return f"{PREFIX}.progress.{_token(task_id)}"


# --- Billing service (nats.micro) ---------------------------------------------------------
#: Name under which billing registers with ``nats.micro``; the edge bridges ``/api/wechat/*`` to it.
BILLING_SERVICE = "billing"
#: Queue group of billing's request/reply endpoints.
BILLING_QUEUE = "billing"
#: Request/reply endpoints of billing, one per bridged route (billing's role may subscribe ``pe.billing.>``).
BILLING_AUTH_OPENID = f"{PREFIX}.billing.auth.openid"
BILLING_PAY_CREATE = f"{PREFIX}.billing.pay.create"
BILLING_PAY_NOTIFY = f"{PREFIX}.billing.pay.notify"
BILLING_PAY_QUERY = f"{PREFIX}.billing.pay.query"
#: Billing facts (orders, payments, credits) on ``PE_EVENTS``; only the billing role may publish them.
BILLING_EVENTS_WILDCARD = f"{PREFIX}.events.billing.>"


def billing_event(kind: str) -> str:
    """Subject of a billing fact, e.g. ``pe.events.billing.order_paid``."""
    return f"{PREFIX}.events.billing.{_token(kind)}"


# --- Billing: uses, account, orders, stats (appended; same ``pe.billing.>`` permissions) -----------
#: Reserve one use for a mini-program user's task before it is queued (402 when none is left).
BILLING_USE_RESERVE = f"{PREFIX}.billing.use.reserve"
#: Give back a reserved use whose task could not be queued.
BILLING_USE_RELEASE = f"{PREFIX}.billing.use.release"
BILLING_ACCOUNT = f"{PREFIX}.billing.account"
BILLING_PAY_ORDERS = f"{PREFIX}.billing.pay.orders"
BILLING_PAY_STATS = f"{PREFIX}.billing.pay.stats"

# --- Billing: close, refund, refund notify (appended; same ``pe.billing.>`` permissions) -----------
#: The owner closes a pending order (WeChat stops accepting payment for it).
BILLING_PAY_CLOSE = f"{PREFIX}.billing.pay.close"
#: An operator refunds a paid order (the edge checks the admin token).
BILLING_PAY_REFUND = f"{PREFIX}.billing.pay.refund"
#: WeChat's refund notify, headers and raw body as received.
BILLING_PAY_REFUND_NOTIFY = f"{PREFIX}.billing.pay.refund_notify"
