"""How many slots (jobs at once, each with its own engines but one shared GFPGAN) a worker runs on a GPU, and how
many worker processes, from the GPU's memory.

Used when ``ENHANCER_CONCURRENCY`` or ``ENHANCER_PROCESSES`` is ``auto`` on CUDA; a CPU host runs one process of
one slot (one job's model already uses every core). Pure arithmetic plus one query of the device
(:func:`device_memory`), so it is testable anywhere.

Per-slot footprints are ESTIMATES, to be measured on a GPU run (``torch.cuda.max_memory_reserved`` per slot).
They assume the service's default 400-pixel tiles (420² with their padding) in fp16 and up to 10 faces per
photo; the peak live tensors of one forward pass were traced on the meta device (no GPU needed):

- Real-ESRGAN x4plus at 420²: 797 MiB. The 23 RRDB blocks at input resolution hold at most ~600 channels
  (the dense block's 192-channel concatenation, its four 32-channel outputs, the block and trunk inputs),
  ~200 MiB; the peak is after the two ×2 stages: ``conv_hr`` reads and writes 64 channels at 1680², 2 × 361 MB.
  x2plus peaks at 200 MiB (its body runs on a quarter of the pixels), general-x4v3 at 43 MiB. An engine loads
  all three (66 MiB of fp16 weights); the caching allocator keeps the largest peak reserved per slot (each slot
  has its own CUDA stream, so slots do not share freed blocks). With cuDNN workspaces and fragmentation
  (~1.5×): **1.5 GiB per slot** for Real-ESRGAN.
- GFPGAN v1.4, ten 512² faces in one batch under fp16 autocast: 2.6 GiB of activations (270 MiB per face),
  330 MiB of fp32 weights and ~165 MiB of their fp16 copies: **3.1 GiB once per process**, since the slots share
  one network and its passes run one at a time, at most ten faces each (``engines.face_restorer``); per slot,
  the detector on the photo and the faces' crops: **0.5 GiB** on top of its Real-ESRGAN background.
- Cross-check: docs/performance.md measured about 4 GB peak per process of 4 slots (light background model,
  ``tile_size=0`` on 1 MP, 0–3 faces per photo); the same arithmetic gives ~1.4 GiB per slot there, ~6 GiB
  per process: the estimates err on the safe side, by about 1.5×.

Past the footprint, the caps: one Python process keeps about four engine threads' worth of GPU busy (eight
threads did no better, docs/performance.md), and three such processes were the best measured on an H200.
A worker runs at most :data:`MAX_SLOTS_PER_PROCESS`; where memory fits more, ``ENHANCER_PROCESSES=auto`` runs
as many processes as fit, up to :data:`MAX_SLOTS_PER_GPU` slots in all (``enhancer.processes``). A job that
needs more than its slot's share (``tile_size=0`` on a large photo) still runs: the engines halve their tiles or
face batches after an out-of-memory error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .engines.registry import REGISTRY, EngineSpec

log = logging.getLogger(__name__)

GiB = 1 << 30

# Each engine's estimated peak per slot is its registry entry's ``slot_bytes`` (argued above).

#: Memory a process needs besides its slots: the CUDA context, cuBLAS/cuDNN handles, kernels loaded by a
#: compiler. Around 0.5–1 GiB; the larger figure, since a slot too many fails jobs and one too few only waits.
PROCESS_RESERVE_BYTES = 1 * GiB
#: Share of the card's total memory ever planned for: the rest absorbs fragmentation and other processes' growth.
HEADROOM = 0.9
#: Slots in one process: beyond four engine threads one Python process gets no more out of the GPU (measured).
MAX_SLOTS_PER_PROCESS = 4
#: Slots per GPU across processes worth suggesting: 3 processes × 4 slots was the best measured on an H200.
MAX_SLOTS_PER_GPU = 12
#: What ``auto`` falls back to on CUDA when the memory cannot be read (the figure before memory was considered).
UNKNOWN_MEMORY_SLOTS = 4


@dataclass(frozen=True)
class SlotPlan:
    """``slots`` for this process; ``fit`` slots would fit in memory; ``processes`` of up to
    ``MAX_SLOTS_PER_PROCESS`` slots would use the GPU (capped by ``MAX_SLOTS_PER_GPU``)."""

    slots: int
    fit: int
    processes: int


def slots_for(total_bytes: int, free_bytes: int, per_slot_bytes: int, *,
              reserve_bytes: int = PROCESS_RESERVE_BYTES, headroom: float = HEADROOM,
              max_per_process: int = MAX_SLOTS_PER_PROCESS, max_per_gpu: int = MAX_SLOTS_PER_GPU) -> SlotPlan:
    """Slots for one process on a GPU with ``free_bytes`` of ``total_bytes`` free, each process needing
    ``reserve_bytes`` besides its slots; never fewer than one (a card too small for one slot's estimate may still
    run small tiles: the engines shrink them on out-of-memory)."""
    if per_slot_bytes <= 0:
        raise ValueError("per_slot_bytes must be positive")
    budget = min(free_bytes, int(total_bytes * headroom))
    fit = max((budget - reserve_bytes) // per_slot_bytes, 0)
    slots = max(1, min(fit, max_per_process))
    full_processes = budget // (reserve_bytes + max_per_process * per_slot_bytes)
    processes = max(1, min(full_processes, math.ceil(max_per_gpu / max_per_process)))
    return SlotPlan(slots=slots, fit=fit, processes=processes)


def plan(total_bytes: int, free_bytes: int, engines: Iterable[str]) -> SlotPlan:
    """:func:`slots_for` a worker running ``engines``: per slot their ``slot_bytes``, per process the reserve
    plus what its slots share (GFPGAN's network and its pass)."""
    engines = list(engines)
    return slots_for(total_bytes, free_bytes, slot_bytes(engines),
                     reserve_bytes=PROCESS_RESERVE_BYTES + shared_bytes(engines))


def slot_bytes(engines: Iterable[str]) -> int:
    """Estimated peak bytes of one slot running ``engines`` (none named: every engine that serves people; an
    unknown name counts as the largest)."""
    return _footprint(engines, lambda spec: spec.slot_bytes)


def shared_bytes(engines: Iterable[str]) -> int:
    """Estimated bytes of what the slots of a worker running ``engines`` share, once per process (same rules)."""
    return _footprint(engines, lambda spec: spec.shared_bytes)


def _footprint(engines: Iterable[str], size: Callable[[EngineSpec], int]) -> int:
    names = list(engines) or [name for name, spec in REGISTRY.items() if not spec.benchmark_only]
    largest = max(size(spec) for spec in REGISTRY.values())
    return sum(size(REGISTRY[name]) if name in REGISTRY else largest for name in names)


def device_memory(device: Any) -> tuple[int, int] | None:
    """(free, total) bytes of a CUDA ``device``; None when they cannot be read (no CUDA here)."""
    try:
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
    except Exception as exc:  # no driver, no such device: the caller falls back to a fixed figure
        log.warning("cannot read the memory of %s (%s)", device, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    return int(free), int(total)


def auto_plan(device: Any, engines: Iterable[str], memory: tuple[int, int] | None = None, *,
              processes: int | None = None) -> SlotPlan:
    """``ENHANCER_CONCURRENCY`` and ``ENHANCER_PROCESSES`` on a CUDA ``device`` for workers running ``engines``:
    ``processes`` as asked, else as many as the memory holds (capped); each process's slots from its share of the
    memory. ``memory`` (free, total) is read from the device when not given. Logs the plan in one line."""
    memory = memory or device_memory(device)
    if memory is None:
        log.warning("GPU memory unknown: running %d slots", UNKNOWN_MEMORY_SLOTS)
        return SlotPlan(slots=UNKNOWN_MEMORY_SLOTS, fit=UNKNOWN_MEMORY_SLOTS, processes=processes or 1)
    free, total = memory
    engines = list(engines)
    count = processes or plan(total, free, engines).processes
    share = plan(total // count, free // count, engines)
    log.info("%s: %.1f of %.1f GiB free, ~%.1f GiB per slot and %.1f per process (%s, estimated): %d process(es) "
             "of %d slots", device, free / GiB, total / GiB, slot_bytes(engines) / GiB,
             (PROCESS_RESERVE_BYTES + shared_bytes(engines)) / GiB, "+".join(engines) or "all engines", count,
             share.slots)
    return SlotPlan(slots=share.slots, fit=share.fit, processes=count)
