"""GFPGAN's network, one per worker, restoring the faces of every photo the worker's slots hold.

Why one and not one per slot: on a GPU, GFPGAN at one or three faces leaves most of the card idle, and each slot's
copy held its own weights and its own ten-face peak. Here the slots hand their aligned faces in, and faces that
arrive while a pass runs go through the next pass together, up to ``batch`` faces ("natural" batching: a lone
photo never waits for company, a busy worker gets large batches). One pass at a time, so the process's GFPGAN
peak is one batch, not one per slot.

Each pass runs in the thread of a slot that handed faces in: the first whose faces are waiting while no pass
runs. It serves the waiting photos in arrival order until its own faces are done; a photo whose faces wait for
more than one batch is then served by its own thread. A pass that fails (out of memory for even one face, or
any error) fails every photo in it, with that error.

On OOM a pass is split in halves, down to one face; on CUDA it runs under fp16 autocast (``half``): the weights
stay fp32, convolutions run in fp16 and the reductions that overflow easily (the StyleGAN demodulation's sums
and rsqrt) stay in fp32. If a pass comes out NaN/inf or black, it is redone in fp32 and fp16 stays off.

:meth:`FaceRestorer.warm_up` runs one pass before the worker is announced, so the first photo with a face does
not pay GFPGAN's first-pass set-up (kernels loaded and chosen; on CUDA, fp16 checked) after "healthy" was said.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import torch

from bus import texts
from enhancer.engines._memory import SimulatedOOM, is_oom, release
from enhancer.engines.base import EngineError, Progress, no_progress, warm_up_picture

log = logging.getLogger(__name__)

#: The face a warm-up pass restores (GFPGAN takes aligned 512² faces only).
WARM_UP_FACE = warm_up_picture(512)


@dataclass(eq=False)
class _Photo:
    """One photo's aligned faces, handed in by its slot's thread, and what became of them."""

    crops: list[np.ndarray]
    faces: list[np.ndarray] | None = None
    error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self.faces is not None or self.error is not None


class FaceRestorer:
    """GFPGAN on aligned 512² RGB faces, for any number of threads at once (see the module's docstring)."""

    def __init__(self, net: torch.nn.Module, device: torch.device | str, *, batch: int = 10,
                 half: bool | None = None) -> None:
        self.net = net
        self.device = torch.device(device)
        #: Most faces in one pass (the engine's ``max_faces``: one photo's faces always fit in one).
        self.batch = max(batch, 1)
        #: fp16 autocast (default: on CUDA); turned off for good if it ever gives NaN/inf or black.
        self.half = self.device.type == "cuda" if half is None else half
        #: Test hook: raise a (simulated) OOM for any pass of more than this many faces.
        self.simulate_oom_batch_above: int | None = None
        self._changed = threading.Condition()
        self._waiting: list[_Photo] = []
        self._busy = False
        self._warming = threading.Lock()
        #: Passes run since it was built (the warm-up's included).
        self.passes = 0

    def restore(self, crops: list[np.ndarray], progress: Progress) -> list[np.ndarray]:
        """The restored faces of one photo, in order; ``("restoring", k, n)`` once they are (in this thread)."""
        if not crops:
            return []
        photo = _Photo(list(crops))
        with self._changed:
            self._waiting.append(photo)
            while self._busy and not photo.settled:
                self._changed.wait()
            serve = not photo.settled
            if serve:
                self._busy = True
        if serve:
            self._serve_until(photo)
        if photo.error is not None:
            raise photo.error
        assert photo.faces is not None
        for done in range(1, len(photo.faces) + 1):
            progress("restoring", done, len(photo.faces))
        return photo.faces

    def warm_up(self) -> None:
        """One pass of one face, unless a pass has already run: the slots that share this restorer all ask at
        start-up, the first runs it and the others wait for it. Raises what the pass raises (the engine is then
        left out, as for any engine that fails to start)."""
        with self._warming:
            if not self.passes:
                self.restore([WARM_UP_FACE], no_progress)

    def waiting(self) -> int:
        """Photos whose faces wait for a pass (for tests and the curious)."""
        with self._changed:
            return len(self._waiting)

    # --- the passes -----------------------------------------------------------------------------------
    def _serve_until(self, mine: _Photo) -> None:
        """Run passes over the waiting photos, oldest first, until ``mine`` is settled; then let a waiter serve."""
        try:
            while not mine.settled:
                with self._changed:
                    photos = self._next_pass()
                self._run(photos)
                with self._changed:
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()

    def _next_pass(self) -> list[_Photo]:
        """Whole photos from the front of the line, up to ``batch`` faces (at least one photo). Under the lock."""
        taken, faces = [], 0
        while self._waiting and (not taken or faces + len(self._waiting[0].crops) <= self.batch):
            photo = self._waiting.pop(0)
            taken.append(photo)
            faces += len(photo.crops)
        return taken

    def _run(self, photos: list[_Photo]) -> None:
        """One pass (split on OOM) over ``photos``' faces; each photo gets its faces, or the pass's error."""
        self.passes += 1
        try:
            restored = self._restore_all([crop for photo in photos for crop in photo.crops])
        except BaseException as exc:
            for photo in photos:
                photo.error = exc
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for photo in photos:
            photo.faces, start = restored[start : start + len(photo.crops)], start + len(photo.crops)

    def _restore_all(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Faces in chunks of ``batch``; a chunk that runs out of memory is halved, down to one face."""
        done: list[np.ndarray] = []
        size = self.batch
        while len(done) < len(crops):
            chunk = crops[len(done) : len(done) + size]
            try:
                done.extend(self._restore_chunk(chunk))
            except Exception as exc:
                if not is_oom(exc):
                    raise
                release(self.device)
                if len(chunk) == 1:
                    raise EngineError(texts.TASK_OUT_OF_GPU_MEMORY_FACES()) from None
                size = len(chunk) // 2  # the chunk may already be smaller than the batch size
                log.warning("Out of memory in GFPGAN; retrying with batches of %d faces", size)
        return done

    def _restore_chunk(self, chunk: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass in fp16 when enabled; in fp32 if fp16 is off or its output is unusable."""
        if self.half:
            out = self.forward(chunk, half=True)
            if out is not None:
                return out
            log.warning("GFPGAN in fp16 gave NaN/inf or black faces on %s; using fp32 from now on", self.device)
            self.half = False
        out = self.forward(chunk, half=False)
        assert out is not None  # only fp16 output is checked
        return out

    @torch.inference_mode()
    def forward(self, chunk: list[np.ndarray], *, half: bool) -> list[np.ndarray] | None:
        """Restored 512² RGB faces; ``None`` when ``half`` and the output is non-finite or black."""
        if self.simulate_oom_batch_above is not None and len(chunk) > self.simulate_oom_batch_above:
            raise SimulatedOOM(f"CUDA out of memory (simulated for a batch of {len(chunk)} faces)")
        x = torch.from_numpy(np.stack(chunk)).to(self.device).permute(0, 3, 1, 2).float().contiguous()
        x = x.div_(255.0).sub_(0.5).div_(0.5)  # RGB in [-1, 1], as GFPGAN was trained
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=half):
            y = self.net(x, return_rgb=False, randomize_noise=False)[0]
        y = y.float()
        if half and not bool(torch.isfinite(y).all()):
            return None
        y = y.clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)
        faces = list(y.permute(0, 2, 3, 1).cpu().numpy())
        if half and any(face.max() == 0 and crop.max() > 8 for face, crop in zip(faces, chunk, strict=True)):
            return None  # a black face from a visible one: fp16 underflow/overflow, not a picture
        return faces
