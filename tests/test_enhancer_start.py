"""An enhancer is announced only once its engines are ready: every slot has loaded its engines and run them
(``Worker.warm_up``) before its presence is written, its micro service registered or a job pulled. Before,
"healthy" came first and the first job after every start paid for the loading (about 6 s on a GPU).

On a stack of its own (``own_stack``): an enhancer process (Real-ESRGAN), and a second enhancer run here
in-process (the benchmark engine, two slots) whose presence, micro service and pulls are watched.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from bus.schemas import JOINED
from enhancer import service
from enhancer.presence import Presence
from enhancer.settings import EnhancerSettings
from enhancer.worker import Worker

from .support import Stack


def enhancer_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> EnhancerSettings:
    """The settings an enhancer process would read from exactly ``env``."""
    with monkeypatch.context() as m:
        for name in [n for n in os.environ if n.startswith(("NATS_", "S3_", "ENHANCER_", "TASK_"))]:
            m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        return EnhancerSettings.from_env()


async def test_an_enhancer_is_announced_once_its_engines_have_run(own_stack: Stack,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # An enhancer process as served (the test stacks turn warm-up off): listed healthy (start_enhancer waited for
    # that) after its warm-up.
    log = own_stack.start_enhancer("warm-process", ENHANCER_WARM_UP="on").log()
    warmed, ready, taking = (log.find(s) for s in ("engines loaded and warmed up", " ready on ", "taking jobs"))
    assert 0 <= warmed < ready < taking, log[-3000:]

    # One in-process, watched.
    settings = enhancer_settings(monkeypatch, own_stack.env(
        "enhancer", "warm-worker", ENHANCER_ID="warm-worker", ENHANCER_ENGINE="bench-resize",
        ENHANCER_CONCURRENCY="2", ENHANCER_DEVICE="cpu", ENHANCER_WARM_UP="on"))
    stop = asyncio.Event()
    workers: list[Worker] = []
    #: (what happened, whether the worker had warmed up, each slot's engines then), in order.
    seen: list[tuple[str, bool, list[list[str]]]] = []

    def note(what: str) -> None:
        w = workers[0]
        seen.append((what, w.warmed, [sorted(slot._engines) for slot in w._all_slots]))

    class Watched(Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            workers.append(self)

        async def _fetch(self, sub: Any, stop: asyncio.Event, wait: float = 0.2) -> Any:
            note("pull")
            stop.set()  # one pull is enough
            return await super()._fetch(sub, stop, wait)

    publish, add_service = Presence.publish, service.add_service

    async def published(self: Presence, state: str) -> None:
        note(f"presence {state}")
        await publish(self, state)

    async def added(*args: Any, **kwargs: Any) -> Any:
        note("micro service")
        return await add_service(*args, **kwargs)

    monkeypatch.setattr(service, "Worker", Watched)
    monkeypatch.setattr(Presence, "publish", published)
    monkeypatch.setattr(service, "add_service", added)
    assert await asyncio.wait_for(service.serve(settings, stop), 120) == 0

    events = [what for what, _, _ in seen]
    assert events[0] == "micro service" and {f"presence {JOINED}", "pull"} <= set(events), events
    # At each, the engines of both slots had been built and had run.
    assert all(warm and engines == [["bench-resize"], ["bench-resize"]] for _, warm, engines in seen), seen
