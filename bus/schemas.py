"""Message schemas: one frozen dataclass per message, msgpack on the wire, versioned by ``type``.

Decoders ignore unknown fields (so producers may add fields with defaults) and check the
types of the fields they know, nested values included, so a malformed message is rejected at the
boundary with a ``SchemaError`` instead of failing somewhere deep inside a handler. A breaking change
gets a new ``type`` (``pe.v2....``) and an upgrade of the old shape (``Message.UPGRADES``), so readers
of the new version still read what the old one wrote: jobs queued and records kept before the change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from . import capabilities, texts
from .codec import SchemaError, pack, pack_json, unpack_any

QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
STATUSES = (QUEUED, PROCESSING, COMPLETED, FAILED)
FINAL_STATUSES = (COMPLETED, FAILED)
QUALITIES = ("fast", "medium", "high")
DEFAULT_FACE_STRENGTH = 0.7
#: What a result is written as: ``auto`` keeps PNG (and anything with transparency) PNG, else JPEG.
OUTPUT_FORMATS = ("auto", "jpeg", "png", "webp", "avif")
SCALES = (2, 4)


def _accepts(tp: Any, value: Any) -> bool:
    """Whether ``value`` fits the (simple) annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    if tp is Any:
        return True
    if dataclasses.is_dataclass(tp):  # a nested value travels as a map
        return isinstance(value, dict | tp)
    return isinstance(value, tp)


def _build(cls: type[Any], data: Mapping[str, Any], *, subject: str | None, type_: str) -> Any:
    """An instance of the dataclass ``cls`` from ``data``: unknown keys ignored, known ones type-checked,
    nested dataclasses built from their maps the same way."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"missing field {f.name!r}", subject=subject, type_=type_)
            continue
        value = data[f.name]
        if not _accepts(hints[f.name], value):
            raise SchemaError(f"field {f.name!r} has the wrong type ({type(value).__name__})", subject=subject,
                              type_=type_)
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
            value = _build(hints[f.name], value, subject=subject, type_=type_)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise SchemaError(str(e), subject=subject, type_=type_) from e


@dataclass(frozen=True)
class Message:
    """Base of every bus message."""

    TYPE: ClassVar[str] = ""
    #: Encode as JSON instead of msgpack (records operators read with the ``nats`` CLI).
    JSON: ClassVar[bool] = False
    #: Older types of this message, each with the function that turns its map into this type's map.
    UPGRADES: ClassVar[Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **dataclasses.asdict(self)}

    def encode(self) -> bytes:
        return pack_json(self.to_dict()) if self.JSON else pack(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, subject: str | None = None) -> Self:
        upgrade = cls.UPGRADES.get(data.get("type"))  # type: ignore[arg-type]
        if upgrade is not None:
            data = {**upgrade(data), "type": cls.TYPE}
        if data.get("type") != cls.TYPE:
            raise SchemaError(f"expected message type {cls.TYPE!r}, got {data.get('type')!r}", subject=subject)
        return typing.cast(Self, _build(cls, data, subject=subject, type_=cls.TYPE))

    @classmethod
    def decode(cls, data: bytes, *, subject: str | None = None) -> Self:
        return cls.from_dict(unpack_any(data, subject=subject), subject=subject)


@dataclass(frozen=True)
class EnhanceOptions:
    """What the user asked for: the one definition the edge parses into, the job and the task record carry
    (as one nested value), and the worker and its engines read.

    ``tile_size`` is the tile edge in *input* pixels; 0 runs the whole image. ``face_enhance`` chooses the
    capability the job is routed by (``bus.capabilities.needed``); engines do not read it.
    """

    scale: int = 4
    quality: str = "high"  # "fast" | "medium" | "high"
    tile_size: int = 400
    #: None ("auto"): restore faces when a worker on the bus can; True: require it; False: never.
    face_enhance: bool | None = None
    #: How much of the restored face replaces the photo's own (0: the original face, 1: fully restored); faces
    #: are blended this much where they are pasted. 0.7 keeps the photo's skin texture and likeness while still
    #: repairing blur (README, "Face restoration strength").
    face_strength: float = DEFAULT_FACE_STRENGTH
    #: The result's file format (``OUTPUT_FORMATS``) and, for JPEG, WebP and AVIF, its quality (1–100).
    output_format: str = "auto"
    output_quality: int = 92

    def __post_init__(self) -> None:
        if not _accepts(int, self.scale) or self.scale not in SCALES:
            raise ValueError(texts.OPTION_SCALE(value=self.scale))
        if self.quality not in QUALITIES:
            raise ValueError(texts.OPTION_QUALITY(value=self.quality))
        if not _accepts(int, self.tile_size) or not (self.tile_size == 0 or 32 <= self.tile_size <= 2048):
            raise ValueError(texts.OPTION_TILE_SIZE(value=self.tile_size))
        if not _accepts(bool | None, self.face_enhance):
            raise ValueError(texts.OPTION_FACE_ENHANCE(value=self.face_enhance))
        if not _accepts(float, self.face_strength) or not 0 <= self.face_strength <= 1:
            raise ValueError(texts.OPTION_FACE_STRENGTH(value=self.face_strength))
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(texts.OPTION_OUTPUT_FORMAT(value=self.output_format))
        if not _accepts(int, self.output_quality) or not 1 <= self.output_quality <= 100:
            raise ValueError(texts.OPTION_OUTPUT_QUALITY(value=self.output_quality))


#: The option fields of a ``pe.v1`` job or record, which kept them flat beside the others.
_FLAT_OPTIONS = tuple(f.name for f in dataclasses.fields(EnhanceOptions))


def _nest_options(data: dict[str, Any]) -> dict[str, Any]:
    """A ``pe.v1`` job's or record's map with its flat option fields gathered into ``options``."""
    flat = {k: v for k, v in data.items() if k not in _FLAT_OPTIONS}
    return {**flat, "options": {k: data[k] for k in _FLAT_OPTIONS if k in data}}


@dataclass(frozen=True)
class EnhanceJob(Message):
    """A unit of work on the ``PE_JOBS`` work queue. Images travel through S3; only keys travel here.

    Published on the subject of the capability it needs (``bus.subjects.jobs_subject``): the subject, not
    the job, is what routes it. ``pe.v1.enhance_job`` (options flat) is still read.
    """

    TYPE: ClassVar[str] = "pe.v2.enhance_job"
    UPGRADES: ClassVar[Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
        "pe.v1.enhance_job": _nest_options}

    task_id: str
    input_key: str
    input_name: str
    options: EnhanceOptions = field(default_factory=EnhanceOptions)
    owner: str | None = None
    submitted_at: float = 0.0
    #: The edge's limit on the result's pixels (``bus.output_size``); 0: none given (the worker's own applies).
    max_output_pixels: int = 0


@dataclass(frozen=True)
class JobResult:
    """What a worker made of a job, handed to :meth:`TaskState.completed` (the record keeps it flat)."""

    output_key: str
    output_name: str
    output_content_type: str
    output_size: int
    output_width: int
    output_height: int
    #: ``<engine>:<model>``, e.g. ``gfpgan:GFPGANv1.4+realesr-animevideov3``.
    engine: str
    faces: int
    #: Seconds per stage (fetch, decode, wait, engine, encode, store).
    timings: dict[str, float] = field(default_factory=dict)
    #: The scale the result was made at when less than the one asked (``bus.output_size``), and why.
    output_scale: float | None = None
    notice: texts.Said | None = None


@dataclass(frozen=True)
class TaskState(Message):
    """The record of one task in the ``pe-tasks`` KV bucket.

    The edge creates it (``queued``); the enhancer that holds the job moves it through
    ``processing`` to ``completed`` or ``failed`` with compare-and-set writes.
    """

    TYPE: ClassVar[str] = "pe.v2.task"
    UPGRADES: ClassVar[Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {"pe.v1.task": _nest_options}

    task_id: str
    status: str
    created_at: float
    updated_at: float
    input_key: str
    input_name: str
    input_size: int = 0
    width: int = 0
    height: int = 0
    options: EnhanceOptions = field(default_factory=EnhanceOptions)
    owner: str | None = None
    #: The capability its job was routed by (which queue it waits in); None: a ``pe.v1`` task, whose job
    #: went to the legacy subject (served with the base capability's queue).
    capability: str | None = None
    #: The job's sequence in the work-queue stream: how the edge tells a queued task its place.
    queue_seq: int | None = None
    stage: str = QUEUED
    message: str = ""
    progress: float = 0.0
    attempts: int = 0
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    processing_time: float | None = None
    output_key: str | None = None
    output_name: str | None = None
    output_content_type: str | None = None
    output_size: int | None = None
    output_width: int | None = None
    output_height: int | None = None
    engine: str | None = None
    faces: int | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: What ``message`` and ``error`` say, as ``bus.texts`` catalogue keys and values (``texts.stored``), so the
    #: edge can put them in each reader's language; ``message`` and ``error`` are their English. None: a
    #: record from before, or words from outside the catalogue (the English is shown).
    message_text: dict[str, Any] | None = None
    error_text: dict[str, Any] | None = None
    #: The scale the result is made at when less than ``options.scale`` (to stay under the limits of
    #: ``bus.output_size``), and the sentence that tells the person (its English, and as ``message_text``);
    #: None when it is made as asked.
    output_scale: float | None = None
    notice: str | None = None
    notice_text: dict[str, Any] | None = None
    #: While processing: the worker's estimate of the seconds still needed, as of ``updated_at`` (readers count it
    #: down from there); None when it cannot tell yet (``enhancer.progress.Remaining``).
    eta_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown task status {self.status!r}")
        if self.capability is not None:
            capabilities.check(self.capability)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def replace(self, **changes: Any) -> TaskState:
        return dataclasses.replace(self, **changes)

    def completed(self, result: JobResult, *, at: float, processing_time: float) -> TaskState:
        """This record once its job is done: ``completed``, with what the worker made."""
        return dataclasses.replace(
            self, status=COMPLETED, stage=COMPLETED, progress=1.0, **texts.stored(message=texts.TASK_COMPLETED()),
            updated_at=at,
            finished_at=at, processing_time=processing_time, output_key=result.output_key,
            output_name=result.output_name, output_content_type=result.output_content_type,
            output_size=result.output_size, output_width=result.output_width, output_height=result.output_height,
            engine=result.engine, faces=result.faces, timings=dict(result.timings), output_scale=result.output_scale,
            **texts.stored(notice=result.notice))


@dataclass(frozen=True)
class TaskProgress(Message):
    """Live progress of a task (core NATS, not persisted): what a progress bar shows."""

    TYPE: ClassVar[str] = "pe.v1.task_progress"

    task_id: str
    stage: str
    progress: float
    message: str = ""
    at: float = 0.0
    #: What ``message`` says, as catalogue key and values (``bus.texts``); ``message`` is its English.
    message_text: dict[str, Any] | None = None
    #: The worker's estimate of the seconds still needed, as of ``at``; None when it cannot tell yet.
    eta_seconds: float | None = None


@dataclass(frozen=True)
class TaskEvent(Message):
    """A durable fact about a task on ``PE_EVENTS``; billing builds its ledger from these."""

    TYPE: ClassVar[str] = "pe.v1.task_event"

    task_id: str
    kind: str  # "completed" | "failed"
    at: float
    owner: str | None = None
    engine: str | None = None
    processing_time: float | None = None
    error: str | None = None

    @property
    def dedup_id(self) -> str:
        """One fact per task and kind, however often a worker retries publishing it."""
        return f"{self.task_id}:{self.kind}"


JOINED, ALIVE, DRAINING, LEFT = "joined", "alive", "draining", "left"


@dataclass(frozen=True)
class EnhancerPresence(Message):
    """An enhancer's heartbeat, kept in the ``pe-enhancers`` KV bucket under its id.

    Joining the bus with enhancer credentials *is* the registration: no IP address, port or
    secret is exchanged. JSON, so ``nats kv get pe-enhancers <id>`` is readable.
    """

    TYPE: ClassVar[str] = "pe.v1.enhancer_presence"
    JSON: ClassVar[bool] = True

    worker_id: str
    state: str  # joined | alive | draining | left
    at: float
    started_at: float
    heartbeat: float
    host: str = ""
    version: str = ""
    device: str = "cpu"
    device_name: str = ""
    device_memory: int = 0
    engines: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    #: What its engines can do (``bus.capabilities``): the edge routes jobs by these, never by engine names.
    capabilities: list[str] = field(default_factory=list)
    #: The super-resolution model it runs for each quality level (``enhancer.weights.model_for``), and the levels
    #: whose model is a stand-in while that level's own weights are missing on this worker.
    quality_models: dict[str, str] = field(default_factory=dict)
    fallback_levels: list[str] = field(default_factory=list)
    capacity: int = 1
    in_flight: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    #: Its recent throughput (``enhancer.throughput``): a moving average of the seconds a job takes it (from its
    #: fetch to its store, whatever the job asked; None before its first job), and per quality level, of the seconds
    #: a job takes per megapixel of the photo it enlarges. How the edge tells a waiting task how long it will take.
    job_seconds: float | None = None
    seconds_per_megapixel: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in (JOINED, ALIVE, DRAINING, LEFT):
            raise ValueError(f"unknown enhancer state {self.state!r}")
        if self.heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
