"""Task records in the ``pe-tasks`` KV bucket, written with compare-and-set.

The record, not any process, is the truth about a task: an edge restarted mid-task, or a
second edge, reads the same record; an enhancer moves it forward with ``update(last=rev)`` so
two writers can never silently overwrite each other.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import subjects
from .codec import SchemaError
from .retry import retrying
from .schemas import TaskState

_HEX = set("0123456789abcdef")


def new_task_id() -> str:
    """128 random bits, hex: unguessable, and a valid KV key and subject token."""
    return secrets.token_hex(16)


def is_task_id(value: str) -> bool:
    return len(value) == 32 and set(value) <= _HEX


class TaskConflict(RuntimeError):
    """A compare-and-set update kept losing against other writers."""


class TaskStore:
    """Typed access to the task bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def create(self, state: TaskState) -> int:
        """Create the record and return its revision; a retry after a lost answer finds it already
        there, which is success."""
        revision = 0

        async def once() -> None:
            nonlocal revision
            try:
                revision = await self.kv.create(state.task_id, state.encode())
            except KeyWrongLastSequenceError:
                found = None if revision else await self.entry(state.task_id)
                if found is None or found[0] != state:
                    raise
                revision = found[1]

        await retrying(once, what=f"task {state.task_id}: create record")
        return revision

    async def replace_if_unchanged(self, state: TaskState, revision: int) -> bool:
        """Write ``state`` only if the record is still at ``revision`` (nobody wrote since)."""
        try:
            await retrying(lambda: self.kv.update(state.task_id, state.encode(), last=revision),
                           what=f"task {state.task_id}: update record")
            return True
        except KeyWrongLastSequenceError:
            return False

    async def entry(self, task_id: str) -> tuple[TaskState, int] | None:
        try:
            entry = await retrying(lambda: self.kv.get(task_id), what=f"task {task_id}: read record")
        except KeyNotFoundError:
            return None
        if entry.value is None:  # expired (nats-py may return an empty entry instead of raising)
            return None
        return TaskState.decode(entry.value, subject=f"$KV.{subjects.TASKS_BUCKET}.{task_id}"), entry.revision

    async def purge(self, task_id: str) -> None:
        """Remove the record now, with its history (a person deleting their photo: nothing of it is kept)."""
        await retrying(lambda: self.kv.purge(task_id), what=f"task {task_id}: purge record")

    async def get(self, task_id: str) -> TaskState | None:
        found = await self.entry(task_id)
        return found[0] if found else None

    async def update(
        self, task_id: str, change: Callable[[TaskState], TaskState | None], *, attempts: int = 20
    ) -> TaskState | None:
        """Apply ``change`` to the current record and write it only if nobody wrote in between.

        ``change`` returns ``None`` to leave the record as it is. Returns the record written
        (or left), ``None`` when the task does not exist (expired).
        """
        for _ in range(attempts):
            found = await self.entry(task_id)
            if found is None:
                return None
            current, revision = found
            new = change(current)
            if new is None:
                return current
            try:
                await retrying(lambda: self.kv.update(task_id, new.encode(), last=revision),  # noqa: B023
                               what=f"task {task_id}: update record")
                return new
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
        raise TaskConflict(f"task {task_id}: record kept changing under {attempts} update attempts")

    async def watch(self, task_id: str) -> AsyncIterator[TaskState]:
        """Yield the record now and after every change (used to wait for a task to finish)."""
        watcher = await self.kv.watch(task_id)
        try:
            async for entry in watcher:
                if entry is None or entry.value is None:
                    continue
                try:
                    yield TaskState.decode(entry.value)
                except SchemaError:
                    continue
        finally:
            await watcher.stop()
