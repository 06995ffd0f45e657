"""Out-of-memory recognition and recovery, shared by the engines.

Upstream GFPGAN and Real-ESRGAN catch these errors and carry on with a wrong image; we instead free what we
can and let the caller retry with smaller work units, or fail with a sentence a person understands.
"""

from __future__ import annotations

import gc

import torch

_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")


class SimulatedOOM(torch.OutOfMemoryError):
    """Raised by test hooks to exercise the recovery path on machines without a GPU."""


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator failing (halving the work helps there too)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT)


def release(device: torch.device) -> None:
    """Drop unreachable tensors and hand cached CUDA blocks back before a retry."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
