"""The job loop: pull a job only when a slot can take it, run it as a pipeline, report it.

Why a JetStream pull consumer and not a plain queue group: NATS gives a queue-group message
to a random member, busy or not. Here a worker asks for the next job (``fetch(1)``) only when
one of its slots can take it, so work goes to free capacity by construction; an unacknowledged job
is redelivered to another worker after ``ack_wait`` when its worker dies; and ``in_progress()``
keeps a long job from being redelivered while its worker is alive.

Why a consumer per capability: a job waits on the subject of the capability it needs (``bus.capabilities``),
and a worker pulls only from the consumers of the capabilities its engines have (the engine registry says
which), so a job that needs faces restored is never claimed by a worker that cannot restore them. A worker
with several capabilities takes a job already waiting for the scarcer one first (see :meth:`Worker._next_job`).

Why a pipeline: a job is fetch (S3) → decode → engine → encode → store (S3). Only the engine
needs the slot's model; the rest is I/O or codec work. Done in one thread, the model sits idle
during all of it (on a GPU that is a large share: encoding a 16 MP JPEG takes about as long
as restoring the faces). So each job runs its stages where they belong:

- fetch and decode on the event loop and a shared codec pool, *before* the job waits for the engine;
- the engine alone on the slot's thread (one model instance, one job at a time);
- encode and store on the codec pool and the event loop, *after* the engine is released.

A slot admits ``1 + prefetch`` jobs at a time, counted from the fetch until the job's engine
step ends (see :class:`Slot`). With ``prefetch = 1`` the next job is pulled, fetched and decoded
while the engine runs, and starts the moment the engine is free; with ``prefetch = 0`` the next job
is pulled when the engine is released (it still overlaps the previous job's encode and store).
Either way a prefetched job is an ordinary delivery: the worker claims its record, keeps it alive
with ``in_progress()`` from the moment it is pulled, and acknowledges it only when it is done, so a
worker that dies holding it leaves it to be redelivered after ``ack_wait`` like any other job.
Holding at most one job per slot that is not running is the price: another worker that falls
idle meanwhile cannot take it. That costs at most one job's engine time at the tail of a burst,
which is small for GPU jobs (about a second) and large for CPU model jobs (a minute of x4plus),
which is why ``ENHANCER_PREFETCH=auto`` turns it on for CUDA devices only.

Why a deadline: ``in_progress()`` tells JetStream the worker is alive, not that the job advances, so a job
whose engine hangs would be held forever. Each attempt therefore has ``job_deadline`` seconds (its wait for
the engine behind an earlier job not counted); past it the keep-alive stops and the job is handed back
(``nak``: another worker may try, which counts an attempt) or, on its last attempt, failed with a sentence.
A thread cannot be killed, so the engine step is stopped as far as Python allows: its progress callback
raises from then on, which ends a tiled or face-by-face job at its next tile or face. A step stuck inside
one call keeps its thread and its model, and its slot is *retired* until it returns (see
:meth:`Slot.retire`): no new job is pulled for it, rather than queued behind a thread that may never end or
given a second model instance that might not fit beside the first. A worker whose slots are all retired
pulls nothing and its jobs go to the other workers; it reports how many in :attr:`Worker.stuck_slots`,
and on shutdown it leaves without waiting for such a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import nats.errors
import numpy as np
from nats.aio.msg import Msg

from bus import output_size, retrying, subjects, texts
from bus.capabilities import needed
from bus.schemas import COMPLETED, FAILED, PROCESSING, QUEUED, EnhanceJob, JobResult, TaskEvent, TaskState
from bus.storage import ObjectMissing, ObjectStore, ObjectTooLarge, StorageError, display_name, output_key
from bus.tasks import TaskStore
from bus.texts import Said, said_of, stored

from . import metrics
from .engines import Engine, EngineError, EnhanceOptions, Shared, create_engine, use_own_cuda_stream
from .engines.base import no_progress, warm_up_picture
from .engines.registry import REGISTRY, engines_by_capability, get, quality_models
from .imaging import ImageError, decode, encode, shrink, upscale_alpha
from .progress import Reporter
from .settings import EnhancerSettings
from .throughput import Throughput

log = logging.getLogger(__name__)

#: Seconds one pull waits for a job (a worker with one consumer; several share it, see ``Worker._next_job``).
FETCH_WAIT = 1.0
#: Seconds a pull that only asks whether a job is already waiting lasts: long enough for the server's answer.
PROBE_WAIT = 0.1
#: What each slot's engines run once before the worker takes jobs (:meth:`Worker.warm_up`): a 32×32 picture,
#: small enough to cost nothing.
WARM_UP_PHOTO = warm_up_picture(32)


class PermanentFailure(Exception):
    """The task cannot succeed however often it is retried; raised with what the user is told (a ``Said`` of
    ``bus.texts``, which the edge words in each reader's language)."""


class Transient(Exception):
    """The task may succeed later (storage down...): retry with back-off."""


class DeadlineExceeded(Transient):
    """The attempt took longer than ``job_deadline``: handed back, or failed on the last attempt."""


class SlotRetired(Transient):
    """The job's slot was retired while the job waited for it (its engine overran an earlier job's deadline)."""


class Abandoned(Exception):
    """Raised into an engine step, through its progress callback, once its job has been given up."""


class _Progress:
    """The engine's progress callback, which stops the engine once the job is given up.

    Engines let an exception from the callback propagate (``engines.base.Progress``), so a job past its
    deadline ends at its next tile or face instead of running to its end for nobody. ``abandoned`` also
    stops the attempt's record writes, so a late report cannot write over a job that is back in the queue.
    """

    def __init__(self) -> None:
        self.reporter: Reporter | None = None
        self.abandoned = False

    def __call__(self, stage: str, done: int = 0, total: int = 0) -> None:
        if self.abandoned:
            raise Abandoned("the job was given up")
        if self.reporter is not None:
            self.reporter(stage, done, total)


def warm_up_jobs(name: str, model_dir: Path) -> list[EnhanceOptions]:
    """What engine ``name`` runs when it warms up: a job at each quality level that runs a model of its own
    with the weights in ``model_dir`` (``registry.quality_models``: fast, medium and high may share one while
    their weights are missing), so that every model it can run is loaded; one job when it names no models, or
    when it builds on an engine that warms them (GFPGAN's background is the slot's Real-ESRGAN)."""
    spec = get(name)
    levels = {} if spec.needs else quality_models([name], model_dir)
    jobs: list[EnhanceOptions] = []
    seen: set[str] = set()
    for quality in spec.qualities if levels else spec.qualities[:1]:
        model = levels.get(quality, ("", False))[0]
        if model not in seen:
            seen.add(model)
            jobs.append(EnhanceOptions(scale=max(spec.scales), quality=quality))
    return jobs


class Slot:
    """One model instance and the one thread it runs on: a model serves one job at a time.

    ``admissions`` is how many jobs the slot may hold between pulling them and the end of their
    engine step: the one on the engine plus ``prefetch`` prepared ones waiting for it.
    """

    def __init__(self, index: int, settings: EnhancerSettings, device: Any, *, prefetch: int,
                 shared: Shared) -> None:
        self.index = index
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{index}",
                                           initializer=use_own_cuda_stream, initargs=(device,))
        self.admissions = 1 + prefetch
        #: Ends when the job admitted last is done with the engine (see :class:`Admission`).
        self.last_turn: asyncio.Future[None] | None = None
        self._settings = settings
        self._device = device
        self._shared = shared
        self._engines: dict[str, Engine] = {}
        #: The engine step that overran its job's deadline and still runs; the slot is retired until it returns.
        self.stuck: Future[Any] | None = None
        #: Admissions given back while retired, returned to the free queue when the slot recovers.
        self._parked = 0

    def give_back(self, free: asyncio.Queue[Slot]) -> None:
        """Return one admission: to the free queue, or parked while the slot is retired."""
        if self.stuck is not None:
            self._parked += 1
        else:
            free.put_nowait(self)

    def retire(self, step: Future[Any], free: asyncio.Queue[Slot]) -> None:
        """Take no job for this slot until ``step``, an engine call whose job was given up, returns.

        Why not a fresh thread and model instead: the stuck call still holds the model (and its device
        memory); a second instance might not fit, and a thread that never returns would leak one per hang.
        """
        loop = asyncio.get_running_loop()
        self.stuck = step

        def returned(_: Future[Any]) -> None:  # in the engine's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: the worker has stopped anyway
                loop.call_soon_threadsafe(self._recover, step, free)

        step.add_done_callback(returned)

    def _recover(self, step: Future[Any], free: asyncio.Queue[Slot]) -> None:
        if self.stuck is not step:
            return
        self.stuck = None
        log.warning("slot %d: the overrunning engine step has returned; the slot takes jobs again", self.index)
        for _ in range(self._parked):
            free.put_nowait(self)
        self._parked = 0

    def engine(self, name: str) -> Engine:
        """Built on first use, in the slot's thread (called from inside the executor): by :meth:`warm_up`,
        before the worker takes any job."""
        if name not in self._engines:
            # The engines it builds on are this slot's own (GFPGAN's background upsampler is the slot's
            # Real-ESRGAN): one copy of their weights per slot. What slots share is in ``shared``.
            needs = {dependency: self.engine(dependency) for dependency in get(name).needs}
            self._engines[name] = create_engine(name, self._settings.model_dir, self._device, needs=needs,
                                                max_faces=self._settings.max_faces, compile=self._settings.compile,
                                                shared=self._shared)
        return self._engines[name]

    def warm_up(self, names: Iterable[str]) -> dict[str, float | Exception]:
        """Build each of ``names`` and run it on :data:`WARM_UP_PHOTO` (:func:`warm_up_jobs`), in the slot's
        thread; per engine, the seconds that took or what it raised. An engine that failed is dropped."""
        outcome: dict[str, float | Exception] = {}
        for name in names:
            started = time.perf_counter()
            try:
                engine = self.engine(name)
                # An engine may warm up its own way (the benchmark engine: without its simulated job time).
                warm = getattr(engine, "warm_up", None) or partial(engine.enhance, progress=no_progress)
                for options in warm_up_jobs(name, self._settings.model_dir):
                    warm(WARM_UP_PHOTO, options)
            except Exception as exc:  # whatever it is, the worker must not offer this engine
                self._engines.pop(name, None)
                outcome[name] = exc
            else:
                outcome[name] = time.perf_counter() - started
        return outcome

    def drop(self, names: Iterable[str]) -> None:
        """Forget the instances of ``names`` (engines the worker does not offer), freeing their memory."""
        for name in names:
            self._engines.pop(name, None)

    def close(self, *, wait: bool = True) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=True)


class Admission:
    """A slot's permission for one job, from its pull to the end of its engine step.

    Jobs take the slot's engine in the order they were admitted: the job pulled first runs first,
    even when the next one's download happened to finish sooner. :meth:`release` (idempotent) ends
    the job's turn and gives the permission back, whether the engine step ran or the job ended early.
    """

    def __init__(self, slot: Slot, free: asyncio.Queue[Slot]) -> None:
        self.slot = slot
        self._free = free
        self._held = True
        self._before = slot.last_turn
        self._loop = asyncio.get_running_loop()
        self._turn: asyncio.Future[None] = self._loop.create_future()
        slot.last_turn = self._turn
        self._waited = 0.0
        self._waiting_since: float | None = None

    @property
    def waited(self) -> float:
        """Seconds spent waiting for earlier jobs' engine steps, so far: not counted against the deadline."""
        ongoing = 0.0 if self._waiting_since is None else self._loop.time() - self._waiting_since
        return self._waited + ongoing

    async def my_turn(self) -> None:
        """Wait until every job admitted to this slot before this one is done with the engine."""
        if self._before is not None and not self._before.done():
            self._waiting_since = self._loop.time()
            try:
                await asyncio.wait({self._before})  # not ``await``: a cancelled waiter must not cancel the turn
            finally:
                self._waited += self._loop.time() - self._waiting_since
                self._waiting_since = None

    def retire(self, step: Future[Any]) -> None:
        """The job was given up while its engine step still runs: retire the slot, then release."""
        self.slot.retire(step, self._free)
        self.release()

    def release(self) -> None:
        if not self._turn.done():
            self._turn.set_result(None)
        if self._held:
            self._held = False
            self.slot.give_back(self._free)


@dataclass
class Counters:
    in_flight: int = 0
    done: int = 0
    failed: int = 0


class Worker:
    """Runs jobs from the consumers of its capabilities with ``settings.concurrency`` slots.

    ``settings`` must already be resolved for ``device`` (:meth:`EnhancerSettings.for_device`); ``engines``
    are the registry's engines this worker can run (``ENHANCER_ENGINE``: that benchmark engine alone).
    """

    def __init__(
        self,
        settings: EnhancerSettings,
        nc,
        tasks: TaskStore,
        store: ObjectStore,
        *,
        device: Any,
        engines: list[str],
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.tasks = tasks
        self.store = store
        self.engines = engines
        #: The engine that serves each capability here; its keys, scarcest first, are what this worker pulls.
        self.routes = engines_by_capability(engines)
        self.capabilities = list(self.routes)
        #: Set once :meth:`warm_up` has run: every slot's engines are loaded and have run once.
        self.warmed = False
        self.device = device
        self.counters = Counters()
        #: How long its jobs take (moving averages, published in its presence): the estimates of time left.
        self.throughput = Throughput()
        self.prefetch: int = settings.prefetch  # type: ignore[assignment]  # resolved by for_device
        #: One entry per admission a slot has free. Filled round-robin, so that with several slots every
        #: engine gets a job before any slot prefetches a second one.
        self._slots: asyncio.Queue[Slot] = asyncio.Queue()
        # One GFPGAN network for every slot (engines.face_restorer): the faces of the photos they hold share passes.
        self._shared = Shared()
        self._all_slots = [Slot(i, settings, device, prefetch=self.prefetch, shared=self._shared)
                           for i in range(settings.concurrency)]
        for _ in range(1 + self.prefetch):
            for slot in self._all_slots:
                self._slots.put_nowait(slot)
        #: Decode and encode run here, off the engines' threads (one decode and one encode per slot at most).
        self._codec = ThreadPoolExecutor(2 * len(self._all_slots), thread_name_prefix="codec")
        self._running: set[asyncio.Task[None]] = set()
        #: Jobs given back to the queue while their engine still ran: at shutdown (see ``run``), or earlier
        #: past their deadline with the step still running when the worker stopped.
        self.handed_back = 0

    @property
    def stuck_slots(self) -> int:
        """Slots retired because an engine step overran its job's deadline and has not returned (degraded)."""
        return sum(slot.stuck is not None for slot in self._all_slots)

    # --- start-up ------------------------------------------------------------------------
    async def warm_up(self) -> list[str]:
        """Load every slot's engines and run each once on a tiny photo, before the worker is announced or pulls
        a job; returns the engines that did (what the worker then offers: :attr:`engines`, :attr:`capabilities`).

        Loading weights, converting them, and the first inference on a GPU (CUDA context, kernel selection) take
        seconds; done lazily, they fell on the first job after every start, reported "healthy" meanwhile. The
        slots warm up at once, each in its own thread (on its own CUDA stream), so the event loop stays free.

        An engine that fails on any slot (damaged weights, no memory for another copy) is left out, said in the
        log with its error: the worker still serves what its other engines can, and offers only what every slot
        can run (any slot may be given any job it pulls). With no engine left it fails fast (:class:`EngineError`):
        a worker that can do nothing must not join, and the exit shows in its supervisor.
        """
        if not self.settings.warm_up:  # ENHANCER_WARM_UP=off: each engine is built by its first job instead
            self.warmed = True
            log.info("worker %s: warm-up off (ENHANCER_WARM_UP=off): engines load on their first job",
                     self.settings.worker_id)
            return list(self.engines)
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        names = sorted(self.engines, key=list(REGISTRY).index)  # those others build on first
        outcomes = await asyncio.gather(*(loop.run_in_executor(slot.executor, slot.warm_up, names)
                                          for slot in self._all_slots))
        failed: dict[str, Exception] = {}
        slowest: dict[str, float] = {}
        for slot, outcome in zip(self._all_slots, outcomes, strict=True):
            for name, result in outcome.items():
                if isinstance(result, Exception):
                    if name not in failed:
                        log.error("worker %s: engine %s failed to start on slot %d; it is left out of what this "
                                  "worker offers: %s", self.settings.worker_id, name, slot.index, result,
                                  exc_info=result)
                    failed.setdefault(name, result)
                else:
                    slowest[name] = max(slowest.get(name, 0.0), result)
        working = [name for name in self.engines if name not in failed]
        if not working:
            reasons = "; ".join(f"{n}: {e}" for n, e in failed.items())
            raise EngineError(f"No engine could start: {reasons}")
        for slot in self._all_slots:
            slot.drop(failed)
        self._shared.drop(failed)
        self.engines = working
        self.routes = engines_by_capability(working)
        self.capabilities = list(self.routes)
        self.warmed = True
        log.info("worker %s: engines loaded and warmed up on %d slot(s) in %.1f s (%s)", self.settings.worker_id,
                 len(self._all_slots), time.perf_counter() - began,
                 ", ".join(f"{n} {slowest[n]:.1f} s" for n in names if n in slowest))
        return working

    # --- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Fetch while not stopped; then let the jobs in hand finish (drain) and return. Warms the engines up
        first unless :meth:`warm_up` has run."""
        if not self.warmed:
            await self.warm_up()
        subs = [await self.js.pull_subscribe_bind(durable=subjects.jobs_consumer(c), stream=subjects.JOBS_STREAM)
                for c in self.capabilities]
        log.info("worker %s: taking jobs that need %s with %d slot(s), prefetching %d job(s) per slot",
                 self.settings.worker_id, " or ".join(self.capabilities), len(self._all_slots), self.prefetch)
        try:
            while not stop.is_set():
                slot = await self._next_slot(stop)
                if slot is None:
                    break
                msg = await self._next_job(subs, stop)
                if msg is None:
                    self._slots.put_nowait(slot)
                    continue
                task = asyncio.create_task(self._run_job(msg, Admission(slot, self._slots)))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            # Taking nothing new from here on; finish what we hold, within the drain timeout.
            late: set[asyncio.Task[None]] = set()
            if self._running:
                log.info("worker %s: draining %d job(s) (at most %.0f s)", self.settings.worker_id,
                         len(self._running), self.settings.drain_timeout)
                _, late = await asyncio.wait(set(self._running), timeout=self.settings.drain_timeout)
            overran = self.stuck_slots  # steps of jobs given up past their deadline (before any shutdown cancel)
            if overran:
                log.warning("worker %s: leaving %d engine step(s) that overran their job's deadline still running",
                            self.settings.worker_id, overran)
            if late:
                log.warning("worker %s: %d job(s) still running after %.0f s; handing them back to the queue",
                            self.settings.worker_id, len(late), self.settings.drain_timeout)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            self.handed_back = len(late) + overran
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except Exception as e:  # connection may already be gone
                    log.debug("unsubscribe failed: %s", e)
            for slot in self._all_slots:  # an engine still busy with a handed-back job is not waited for
                slot.close(wait=not self.handed_back)
            self._codec.shutdown(wait=not self.handed_back, cancel_futures=True)

    async def _next_slot(self, stop: asyncio.Event) -> Slot | None:
        getter = asyncio.ensure_future(self._slots.get())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter in done:
            slot = getter.result()
            if stop.is_set():
                self._slots.put_nowait(slot)
                return None
            return slot
        getter.cancel()
        return None

    async def _next_job(self, subs: list[Any], stop: asyncio.Event) -> Msg | None:
        """One job for one free slot from the consumers ``subs`` (scarcest capability first), or ``None``.

        With one consumer it is one pull that waits up to ``FETCH_WAIT``. With several, a job already waiting
        on any of them is taken first, in their order (a short pull on each): a worker that can restore faces
        takes a waiting face job before a plain one, yet never idles while a plain one waits. Only when none
        waits does it linger on each in turn, sharing ``FETCH_WAIT``.
        """
        if len(subs) == 1:
            return await self._fetch(subs[0], stop)
        for wait in (PROBE_WAIT, FETCH_WAIT / len(subs)):
            for sub in subs:
                if stop.is_set():
                    return None
                msg = await self._fetch(sub, stop, wait)
                if msg is not None:
                    return msg
        return None

    async def _fetch(self, sub: Any, stop: asyncio.Event, wait: float = FETCH_WAIT) -> Msg | None:
        try:
            msgs = await sub.fetch(1, timeout=wait)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as e:
            log.warning("fetch: %s; retrying", e)
            await asyncio.sleep(0.5)
            return None
        except Exception as e:
            if stop.is_set():
                return None
            log.warning("fetch failed: %s; retrying", e)
            await asyncio.sleep(0.5)
            return None
        return msgs[0] if msgs else None

    # --- one job -----------------------------------------------------------------------------
    async def _run_job(self, msg: Msg, admission: Admission) -> None:
        self.counters.in_flight += 1
        metrics.IN_FLIGHT.inc()
        # From the moment it is pulled, prefetched or not: a job waiting for the engine must not be
        # redelivered to another worker while this one is alive.
        keepalive = asyncio.create_task(self._keepalive(msg))
        try:
            await self._handle(msg, admission)
        except Exception:  # nothing may kill the worker; the message will be redelivered
            log.exception("unexpected error while handling a job; it will be redelivered")
            await _quietly(msg.nak(delay=2))
        except asyncio.CancelledError:  # stopping past the drain timeout: another worker takes it now
            await _quietly(msg.nak())
            raise
        finally:
            keepalive.cancel()
            self.counters.in_flight -= 1
            metrics.IN_FLIGHT.dec()
            admission.release()  # if the job ended before its engine step did

    async def _keepalive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive)
            await _quietly(msg.in_progress())

    async def _handle(self, msg: Msg, admission: Admission) -> None:
        try:
            job = EnhanceJob.decode(msg.data, subject=msg.subject)
        except Exception as e:
            log.error("rejecting a malformed job message: %s", e)
            await msg.term()
            return
        attempt = msg.metadata.num_delivered
        state = await self.tasks.get(job.task_id)
        if state is None:
            log.warning("task %s: no record (expired?); dropping its job", job.task_id)
            await msg.term()
            return
        if state.final:  # finished before a redelivery: never do it (or bill it) twice
            await msg.ack()
            return
        if attempt > self.settings.tasks.max_attempts:
            await self._fail(job, attempt, texts.TASK_WORKER_KEPT_STOPPING(attempts=attempt - 1))
            await msg.ack()
            return

        started = time.time()
        claimed = await self.tasks.update(job.task_id, lambda s: None if s.final else s.replace(
            status=PROCESSING, stage=PROCESSING, **stored(message=texts.TASK_PROCESSING(), error=None),
            attempts=attempt, worker=self.settings.worker_id, started_at=started, updated_at=started, progress=0.01,
            eta_seconds=None))
        if claimed is None or claimed.final:
            await msg.ack()
            return

        # The subject says what the job needs; a job on the legacy subject says it with its options alone.
        capability = subjects.job_capability(msg.subject) or needed(job.options, self.capabilities)
        try:
            result = await self._enhance_in_time(job, capability, admission, attempt)
        except PermanentFailure as e:
            await self._fail(job, attempt, said_of(e))
            await msg.ack()
            return
        except Transient as e:
            if attempt >= self.settings.tasks.max_attempts:
                await self._fail(job, attempt, texts.TASK_GAVE_UP(reason=said_of(e), attempts=attempt))
                await msg.ack()
            else:
                await self._record(job.task_id, attempt, status=QUEUED, stage=QUEUED, **stored(
                    message=texts.TASK_RETRYING(reason=said_of(e), attempt=attempt + 1,
                                                attempts=self.settings.tasks.max_attempts)))
                # A job that never reached its retired slot may run elsewhere at once; others back off.
                await msg.nak(delay=0 if isinstance(e, SlotRetired) else min(2.0**attempt, 30.0))
            return

        await self._complete(job, attempt, started, result)
        await msg.ack()

    async def _enhance_in_time(self, job: EnhanceJob, capability: str, admission: Admission,
                               attempt: int) -> JobResult:
        """:meth:`_enhance`, given up (cancelled) once it has run ``job_deadline`` seconds of its own."""
        loop = asyncio.get_running_loop()
        limit: float = self.settings.job_deadline  # type: ignore[assignment]  # resolved by for_device
        engine_progress = _Progress()
        work = asyncio.ensure_future(self._enhance(job, capability, admission, attempt, engine_progress))
        begun = loop.time()
        try:
            while (left := begun + admission.waited + limit - loop.time()) > 0:
                done, _ = await asyncio.wait({work}, timeout=left)
                if done:
                    return work.result()
        finally:
            if not work.done():  # past the deadline, or this job is being cancelled (shutdown)
                engine_progress.abandoned = True
                work.cancel()
                await asyncio.wait({work})  # its clean-up: retire the slot if the engine step still runs
        if not work.cancelled():  # it ended on its own just as it was being given up
            return work.result()
        log.warning("task %s: attempt %d took longer than %g s; giving it up", job.task_id, attempt, limit)
        raise DeadlineExceeded(texts.TASK_DEADLINE(seconds=limit))

    async def _enhance(self, job: EnhanceJob, capability: str, admission: Admission, attempt: int,
                       engine_progress: _Progress) -> JobResult:
        """fetch → decode → [engine] → encode → store; only the engine step uses the slot's thread.

        ``engine_progress`` is the engine's progress callback; once it is abandoned, the attempt's
        progress no longer reaches the record."""
        loop = asyncio.get_running_loop()
        slot = admission.slot
        timings: dict[str, float] = {}

        async def record(stage: str, progress: float, text: Said, eta: float | None) -> None:
            await self._record(job.task_id, attempt, unless=lambda: engine_progress.abandoned, stage=stage,
                               progress=progress, eta_seconds=eta, **stored(message=text))

        reporter = engine_progress.reporter = Reporter(self.nc, job.task_id, record)
        t = time.perf_counter()
        try:
            data = await self.store.get_bytes(job.input_key, max_bytes=self.store.settings.max_input_bytes)
        except ObjectTooLarge as e:
            raise PermanentFailure(texts.TASK_INPUT_TOO_LARGE(mb=self.store.settings.max_input_bytes / 1e6)) from e
        except ObjectMissing as e:
            raise PermanentFailure(texts.TASK_INPUT_MISSING()) from e
        except StorageError as e:
            raise Transient(texts.TASK_STORAGE_DOWN()) from e
        timings["fetch"] = time.perf_counter() - t
        await reporter.report("fetched")

        engine_name = self._engine_for(capability, job)

        t = time.perf_counter()
        with _as_failure(job, "decoding"):
            decoded = await loop.run_in_executor(
                self._codec, partial(decode, data, max_pixels=self.settings.max_input_pixels))
        # The result is kept under the output limits by shrinking the photo first, so that nothing larger than
        # the result is ever made (the edge planned the same from the same size: bus.output_size).
        planned = self._output_plan(job, *decoded.size)
        with _as_failure(job, "decoding"):
            engine_input = await loop.run_in_executor(self._codec, shrink, decoded.rgb, planned.input_size)
        timings["decode"] = time.perf_counter() - t
        # What this worker's recent jobs at this quality say the whole job takes, until the engine's steps tell.
        reporter.remaining.expected = self.throughput.expected(job.options.quality, _megapixels(engine_input))
        await reporter.report("decoded")

        ready = time.perf_counter()
        await admission.my_turn()
        if slot.stuck is not None:
            raise SlotRetired(texts.TASK_SLOT_STUCK())

        def run_engine() -> Any:
            start = time.perf_counter()
            timings["wait"] = start - ready  # a prefetched job waits here for the previous one's engine
            engine = slot.engine(engine_name)
            result = engine.enhance(engine_input, job.options, engine_progress)
            timings["engine"] = time.perf_counter() - start
            return result

        step = slot.executor.submit(run_engine)
        try:
            with _as_failure(job, f"engine {engine_name}"):
                result = await asyncio.wrap_future(step)
        finally:
            if step.done():
                admission.release()  # the engine is free: the slot may pull its next job while this one is stored
            else:  # given up (deadline, shutdown) while the step runs: it cannot be killed, only told to stop
                admission.retire(step)

        await reporter.report("encoding")

        def encode_result() -> tuple[bytes, str, str, int, int]:
            h, w = result.image.shape[:2]
            alpha = upscale_alpha(decoded.alpha, (w, h)) if decoded.alpha is not None else None
            body, ctype, ext = encode(result.image, alpha, decoded.icc, decoded.source_format,
                                      output_format=job.options.output_format, quality=job.options.output_quality)
            return body, ctype, ext, w, h

        t = time.perf_counter()
        with _as_failure(job, "encoding"):
            body, ctype, ext, width, height = await loop.run_in_executor(self._codec, encode_result)
        timings["encode"] = time.perf_counter() - t

        stem = PurePosixPath(display_name(job.input_name)).stem or "image"
        name = f"{stem}_enhanced.{ext}"
        key = output_key(job.task_id, name)
        t = time.perf_counter()
        try:
            await self.store.put_bytes(key, body, ctype)
        except StorageError as e:
            raise Transient(texts.TASK_RESULT_NOT_STORED()) from e
        timings["store"] = time.perf_counter() - t
        await reporter.report("stored")
        await reporter.flush()
        return JobResult(output_key=key, output_name=name, output_content_type=ctype, output_size=len(body),
                         output_width=width, output_height=height, engine=f"{result.engine}:{result.model}",
                         faces=result.faces, timings={k: round(v, 4) for k, v in timings.items()},
                         output_scale=planned.scale if planned.reduced else None, notice=planned.notice)

    def _output_plan(self, job: EnhanceJob, width: int, height: int) -> output_size.OutputPlan:
        """The result's scale and size under the smaller of this worker's limit and the edge's (in the job)."""
        limit = min(self.settings.max_output_pixels, job.max_output_pixels or self.settings.max_output_pixels)
        try:
            return output_size.plan(width, height, job.options.scale, job.options.output_format, max_pixels=limit)
        except output_size.ResultTooLarge as e:
            raise PermanentFailure(said_of(e)) from e

    def _engine_for(self, capability: str, job: EnhanceJob) -> str:
        """The engine that serves ``capability`` here, for the scale and quality ``job`` asks.

        A worker pulls only the jobs of its capabilities, so a missing one means a job from the legacy subject
        (every worker pulls it) that asks for faces of a worker without face weights: failed with a sentence,
        as such a job always was.
        """
        name = self.routes.get(capability)
        if name is None:
            weights = sorted({w for spec in REGISTRY.values() if capability in spec.capabilities for w in spec.weights})
            raise PermanentFailure(texts.TASK_CAPABILITY_MISSING(
                capability=texts.capability_name(capability, title=True), weights=", ".join(weights) or "none"))
        spec = get(name)
        if not spec.supports(job.options):
            raise PermanentFailure(texts.TASK_ENGINE_CANNOT(engine=name, scale=job.options.scale,
                                                            quality=job.options.quality))
        return name

    # --- recording -------------------------------------------------------------------------------
    async def _record(self, task_id: str, attempt: int, *, unless: Callable[[], bool] = lambda: False,
                      then: Callable[[TaskState], TaskState] | None = None, **changes: Any) -> TaskState | None:
        """Write the record unless it is final or a later attempt owns it: ``changes``, or what ``then`` makes
        of it."""
        now = time.time()

        def change(s: TaskState) -> TaskState | None:
            if s.final or s.attempts > attempt or unless():
                return None
            return then(s) if then is not None else s.replace(updated_at=now, **changes)

        return await self.tasks.update(task_id, change)

    async def _publish_event(self, event: TaskEvent) -> None:
        await retrying(lambda: self.js.publish(subjects.task_event(event.kind), event.encode(), headers={
            subjects.MSG_ID_HEADER: event.dedup_id, subjects.TYPE_HEADER: TaskEvent.TYPE}),
            what=f"task {event.task_id}: publish {event.kind}", budget=30)

    async def _complete(self, job: EnhanceJob, attempt: int, started: float, result: JobResult) -> None:
        now = time.time()
        processing_time = round(now - started, 3)
        # The fact first (de-duplicated), then the record: a crash in between re-runs the job,
        # and the repeated fact is dropped by JetStream, so billing sees it once.
        await self._publish_event(TaskEvent(task_id=job.task_id, kind=COMPLETED, at=now, owner=job.owner,
                                            engine=result.engine, processing_time=processing_time))
        await self._record(job.task_id, attempt, then=lambda s: s.completed(result, at=now,
                                                                           processing_time=processing_time))
        self.counters.done += 1
        # The job's own time (a prefetched job's wait for the engine is the previous job's), per megapixel the engine
        # enlarged (×scale, always: a photo too large for the result's limits is shrunk first, bus.output_size).
        self.throughput.add(job.options.quality,
                            result.output_width * result.output_height / job.options.scale**2 / 1e6,
                            sum(seconds for stage, seconds in result.timings.items() if stage != "wait"))
        metrics.JOBS.labels("completed").inc()
        for stage, seconds in result.timings.items():
            metrics.STAGE.labels(stage).observe(seconds)
        metrics.record_gpu_memory(self.device)
        log.info("task %s: completed in %.2fs by %s (%s)", job.task_id, processing_time, result.engine,
                 result.timings)

    async def _fail(self, job: EnhanceJob, attempt: int, reason: Said) -> None:
        now = time.time()
        await self._publish_event(TaskEvent(task_id=job.task_id, kind=FAILED, at=now, owner=job.owner,
                                            error=str(reason)))
        await self.tasks.update(job.task_id, lambda s: None if s.final else s.replace(
            status=FAILED, stage=FAILED, **stored(message=texts.TASK_FAILED(), error=reason), finished_at=now,
            updated_at=now, attempts=max(s.attempts, attempt)))
        self.counters.failed += 1
        metrics.JOBS.labels("failed").inc()
        log.warning("task %s: failed: %s", job.task_id, reason)


@contextmanager
def _as_failure(job: EnhanceJob, step: str) -> Iterator[None]:
    """Errors of decode, engine and encode are permanent: the same input fails the same way again."""
    try:
        yield
    except (ImageError, EngineError) as e:
        raise PermanentFailure(said_of(e)) from e
    except Exception as e:
        log.exception("task %s: %s failed", job.task_id, step)
        raise PermanentFailure(texts.TASK_INTERNAL_ERROR(kind=type(e).__name__)) from e


def _megapixels(rgb: np.ndarray) -> float:
    return rgb.shape[0] * rgb.shape[1] / 1e6


async def _quietly(coro: Any) -> None:
    try:
        await coro
    except Exception as e:
        log.debug("ignored: %s", e)
