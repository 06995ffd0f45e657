"""Bootstrap on a bus declared before jobs were routed by capability: the one unfiltered consumer goes (a
work queue refuses consumers that overlap it), the per-capability consumers come, and the jobs that were
waiting stay, now in the queue every worker pulls from."""

from __future__ import annotations

from pathlib import Path

import msgpack
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

import nats
from bus import capabilities, ensure_resources, subjects
from bus.settings import TaskSettings
from photoenhance.servers import EmbeddedNats


async def test_bootstrap_moves_an_old_bus_to_consumers_per_capability(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        nc = await nats.connect(**server.connect_options("admin"))
        try:
            js = nc.jetstream()
            # The previous shape: one subject, one consumer shared by every enhancer, one job waiting.
            await js.add_stream(StreamConfig(name=subjects.JOBS_STREAM, subjects=[subjects.LEGACY_JOBS_SUBJECT],
                                             retention=RetentionPolicy.WORK_QUEUE))
            await js.add_consumer(subjects.JOBS_STREAM, ConsumerConfig(
                durable_name=subjects.LEGACY_JOBS_CONSUMER, ack_policy=AckPolicy.EXPLICIT))
            await js.publish(subjects.LEGACY_JOBS_SUBJECT, msgpack.packb({"type": "pe.v1.enhance_job"}))

            for _ in range(2):  # idempotent: every start runs it
                await ensure_resources(js, TaskSettings())

            try:
                await js.consumer_info(subjects.JOBS_STREAM, subjects.LEGACY_JOBS_CONSUMER)
                raise AssertionError("the old consumer is still there")
            except NotFoundError:
                pass
            waiting = {c: (await js.consumer_info(subjects.JOBS_STREAM, subjects.jobs_consumer(c))).num_pending
                       for c in capabilities.CAPABILITIES}
            assert waiting == {capabilities.FACES: 0, capabilities.UPSCALE: 1}  # the old job, kept
            assert sorted((await js.stream_info(subjects.JOBS_STREAM)).config.subjects or []) == sorted(
                subjects.JOBS_SUBJECTS)
        finally:
            await nc.close()
