"""One GFPGAN network for a worker's slots: faces handed in while a pass runs go through the next pass together.

The passes' bookkeeping (who waits, what goes in which pass, whose faces come back to whom, errors) is checked
here on a stand-in network that returns its input, so each face comes back as exactly the crop that went in
and a crossed wire shows; tests/enhancer/test_engine_gfpgan.py runs the real GFPGANv1Clean through it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
import torch

from enhancer.engines import EngineError
from enhancer.engines.base import no_progress
from enhancer.engines.face_restorer import FaceRestorer

from .photos import Recorder, until


class Echo(torch.nn.Module):
    """Gives each face back as it came; the first pass waits for ``release`` (a pass that keeps the line busy)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.release = threading.Event()
        self.passes: list[int] = []
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor]:
        self.passes.append(x.shape[0])
        if len(self.passes) == 1:
            assert self.release.wait(30)
        if len(self.passes) == self.fail_at:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
        return (x,)


def faces(*values: int) -> list[np.ndarray]:
    """Tiny distinct "faces" (the restorer does not care about their size)."""
    return [np.full((4, 4, 3), v, np.uint8) for v in values]


def behind_a_busy_pass(restorer: FaceRestorer, net: Echo, photos: list[list[np.ndarray]],
                       progress: list[Recorder] | None = None) -> list[Future[list[np.ndarray]]]:
    """Hand ``photos`` in, one thread each, while a first photo's pass runs; let that pass end once all wait."""
    pool = ThreadPoolExecutor(1 + len(photos))
    first = pool.submit(restorer.restore, faces(0), no_progress)
    until(lambda: len(net.passes) == 1, "the first pass started")
    handed = []
    for i, photo in enumerate(photos):
        handed.append(pool.submit(restorer.restore, photo, progress[i] if progress else no_progress))
        until(lambda n=i + 1: restorer.waiting() == n, f"photo {i + 1} waits")
    net.release.set()
    pool.shutdown(wait=True)
    assert all(f.exception() is None for f in (first, *handed))
    return handed


def test_photos_held_at_once_share_a_pass_and_each_gets_its_own_faces_back() -> None:
    net = Echo()
    restorer = FaceRestorer(net, "cpu", batch=10)
    recorders = [Recorder(), Recorder()]
    one, two = behind_a_busy_pass(restorer, net, [faces(1, 2, 3), faces(4, 5)], recorders)
    assert net.passes == [1, 5]  # the lone first photo did not wait for company; the next two went together
    assert [f[0, 0, 0] for f in one.result()] == [1, 2, 3]
    assert [f[0, 0, 0] for f in two.result()] == [4, 5]
    assert [r.stage("restoring") for r in recorders] == [[(1, 3), (2, 3), (3, 3)], [(1, 2), (2, 2)]]


def test_a_pass_takes_whole_photos_in_arrival_order_up_to_the_batch() -> None:
    net = Echo()
    restorer = FaceRestorer(net, "cpu", batch=4)
    got = behind_a_busy_pass(restorer, net, [faces(1, 2), faces(3, 4, 5), faces(6), faces(7, 8, 9, 10, 11, 12)])
    # 2 faces, then 3+1 (4), then the 6-face photo alone, in passes of at most 4.
    assert net.passes == [1, 2, 4, 4, 2]
    assert [[f[0, 0, 0] for f in g.result()] for g in got] == [[1, 2], [3, 4, 5], [6], [7, 8, 9, 10, 11, 12]]


def test_a_failed_pass_fails_the_photos_in_it_and_the_next_pass_runs() -> None:
    net = Echo(fail_at=2)
    restorer = FaceRestorer(net, "cpu", batch=3)
    pool = ThreadPoolExecutor(4)
    first = pool.submit(restorer.restore, faces(0), no_progress)
    until(lambda: len(net.passes) == 1, "the first pass started")
    in_failed = [pool.submit(restorer.restore, photo, no_progress) for photo in (faces(1), faces(2, 3))]
    until(lambda: restorer.waiting() == 2, "two photos wait")
    after = pool.submit(restorer.restore, faces(4), no_progress)
    until(lambda: restorer.waiting() == 3, "a third photo waits")
    net.release.set()
    pool.shutdown(wait=True)
    assert net.passes == [1, 3, 1]
    assert [f[0, 0, 0] for f in first.result()] == [0]
    for failed in in_failed:
        with pytest.raises(RuntimeError, match="CUDNN_STATUS_INTERNAL_ERROR"):
            failed.result()
    assert [f[0, 0, 0] for f in after.result()] == [4]
    assert restorer.restore(faces(5), no_progress)[0][0, 0, 0] == 5  # nobody left holding the line


def test_out_of_memory_halves_a_shared_pass_and_every_photo_still_gets_its_faces() -> None:
    net = Echo()
    restorer = FaceRestorer(net, "cpu", batch=4)
    restorer.simulate_oom_batch_above = 2  # raised before the network runs: the passes below are those that fit
    one, two = behind_a_busy_pass(restorer, net, [faces(1, 2), faces(3, 4)])
    assert net.passes == [1, 2, 2]
    assert [[f[0, 0, 0] for f in g.result()] for g in (one, two)] == [[1, 2], [3, 4]]
    restorer.simulate_oom_batch_above = 0
    with pytest.raises(EngineError, match="Not enough GPU memory to restore the faces"):
        restorer.restore(faces(5), no_progress)


def test_a_photo_without_faces_never_waits() -> None:
    net = Echo()
    restorer = FaceRestorer(net, "cpu")
    assert restorer.restore([], no_progress) == [] and net.passes == []


def test_warming_up_runs_one_pass_however_many_slots_ask_at_once() -> None:
    """The slots sharing a restorer all warm it at start-up: one pass of one 512² face, the others wait for it."""
    net = Echo()
    restorer = FaceRestorer(net, "cpu")
    pool = ThreadPoolExecutor(3)
    asked = [pool.submit(restorer.warm_up) for _ in range(3)]
    until(lambda: len(net.passes) == 1, "the warm-up pass started")
    net.release.set()
    pool.shutdown(wait=True)
    assert all(f.exception() is None for f in asked)
    assert net.passes == [1] and restorer.passes == 1
    restorer.warm_up()  # warm already
    assert net.passes == [1]
