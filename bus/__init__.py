"""The bus: the single definition of subjects, message schemas, connection settings and
JetStream resources shared by every PhotoEnhanceAI service.

Services depend on ``bus`` and never on each other.
"""

from . import capabilities, subjects
from .codec import SchemaError, pack, unpack
from .connection import connect, ensure_resources, wait_for_resources
from .retry import BusUnavailable, retrying
from .schemas import (
    COMPLETED,
    FAILED,
    PROCESSING,
    QUEUED,
    EnhanceJob,
    EnhanceOptions,
    JobResult,
    TaskEvent,
    TaskProgress,
    TaskState,
)
from .settings import NatsSettings, S3Settings, SettingsError, TaskSettings
from .storage import ObjectMissing, ObjectStore, StorageError
from .tasks import TaskStore, is_task_id, new_task_id

__version__ = "0.1.0"

__all__ = [
    "COMPLETED",
    "FAILED",
    "PROCESSING",
    "QUEUED",
    "BusUnavailable",
    "EnhanceJob",
    "EnhanceOptions",
    "JobResult",
    "NatsSettings",
    "ObjectMissing",
    "ObjectStore",
    "S3Settings",
    "SchemaError",
    "SettingsError",
    "StorageError",
    "TaskEvent",
    "TaskProgress",
    "TaskSettings",
    "TaskState",
    "TaskStore",
    "__version__",
    "capabilities",
    "connect",
    "ensure_resources",
    "is_task_id",
    "new_task_id",
    "pack",
    "retrying",
    "subjects",
    "unpack",
    "wait_for_resources",
]
