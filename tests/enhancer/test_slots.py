"""How many slots ``ENHANCER_CONCURRENCY=auto`` gives a GPU worker, from the card's memory (``enhancer.slots``).

The expected figures follow from the estimates in ``enhancer/slots.py`` (per slot 1.5 GiB for Real-ESRGAN and
0.5 GiB more with GFPGAN; per process 1 GiB, and 3.1 GiB more for the GFPGAN network its slots share; 90 % of the
card): when a GPU run measures other footprints, those constants change and so do these figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bus.settings import SettingsError
from enhancer import processes, slots
from enhancer.engines.registry import REGISTRY
from enhancer.settings import EnhancerSettings

GiB = 1 << 30
FACES = ["realesrgan", "gfpgan"]
UPSCALE = ["realesrgan"]
#: Total memory as torch reports it for common cards; free memory at start is about 0.5 GiB less.
CARDS = {"H200 141 GB": 139.8, "H100/A100 80 GB": 79.1, "RTX 4090 24 GB": 23.6, "RTX 4080 16 GB": 15.7,
         "RTX 3070 8 GB": 7.8, "GTX 1650 4 GB": 3.8}


def plan(card: str, engines: list[str], used: float = 0.5) -> slots.SlotPlan:
    total = int(CARDS[card] * GiB)
    return slots.plan(total, total - int(used * GiB), engines)


@pytest.mark.parametrize(("card", "faces", "upscale"), [
    ("H200 141 GB", (4, 3), (4, 3)),  # (slots in this process, processes the GPU could take)
    ("H100/A100 80 GB", (4, 3), (4, 3)),
    ("RTX 4090 24 GB", (4, 1), (4, 3)),  # a second process with faces would load GFPGAN again: it does not fit
    ("RTX 4080 16 GB", (4, 1), (4, 2)),
    ("RTX 3070 8 GB", (1, 1), (4, 1)),
    ("GTX 1650 4 GB", (1, 1), (1, 1)),
])
def test_slots_and_processes_per_card(card: str, faces: tuple[int, int], upscale: tuple[int, int]) -> None:
    """Big cards are capped by compute (4 slots a process, 12 a GPU), small ones by memory."""
    got_faces, got_upscale = plan(card, FACES), plan(card, UPSCALE)
    assert (got_faces.slots, got_faces.processes) == faces
    assert (got_upscale.slots, got_upscale.processes) == upscale


def test_a_card_too_small_for_one_slot_still_runs_one() -> None:
    """The engines shrink tiles and face batches when memory runs out, so one slot is still worth running."""
    got = slots.slots_for(2 * GiB, 2 * GiB, slots.slot_bytes(FACES))
    assert (got.slots, got.fit, got.processes) == (1, 0, 1)


def test_memory_already_taken_by_another_process_is_not_counted_twice() -> None:
    """A second enhancer on a card the first one already fills gets what is left, not the card's size."""
    total = int(79.1 * GiB)
    assert slots.plan(total, total - int(68 * GiB), FACES).slots == 3  # 11 GiB free
    assert slots.plan(total, int(6 * GiB), FACES).slots == 1


def test_the_slots_share_gfpgan_so_its_network_counts_once_per_process() -> None:
    """Four slots with faces need four backgrounds and detectors but one GFPGAN: on a 16 GB card that is the
    difference between two slots (a GFPGAN per slot: 4 GiB each) and four."""
    assert slots.shared_bytes(FACES) == REGISTRY["gfpgan"].shared_bytes > 0 == slots.shared_bytes(UPSCALE)
    total, free = int(15.7 * GiB), int(15.2 * GiB)
    assert slots.plan(total, free, FACES).slots == 4
    each_its_own = slots.slot_bytes(FACES) + slots.shared_bytes(FACES)
    assert slots.slots_for(total, free, each_its_own).slots == 2


def test_each_engine_adds_its_footprint_and_an_unknown_one_counts_as_the_largest() -> None:
    assert slots.slot_bytes(FACES) == REGISTRY["realesrgan"].slot_bytes + REGISTRY["gfpgan"].slot_bytes
    assert slots.slot_bytes(["bench-resize"]) < slots.slot_bytes(UPSCALE) < slots.slot_bytes(FACES)
    assert slots.slot_bytes(["codeformer"]) == max(spec.slot_bytes for spec in REGISTRY.values())
    assert slots.slot_bytes([]) == slots.slot_bytes(FACES)  # engines not known yet: plan for the largest


def test_auto_concurrency_follows_the_gpus_memory_and_an_explicit_value_wins(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENHANCER_CONCURRENCY", raising=False)
    auto = EnhancerSettings.from_env()
    small = (int(15.2 * GiB), int(15.7 * GiB))  # a 16 GB card, as (free, total)
    assert auto.for_device(torch.device("cuda"), FACES, memory=small).concurrency == 4
    assert auto.for_device(torch.device("cuda"), UPSCALE, memory=small).concurrency == 4
    assert auto.for_device(torch.device("cpu"), FACES, memory=small).concurrency == 1  # a CPU: one job at a time
    monkeypatch.setenv("ENHANCER_CONCURRENCY", "3")
    assert EnhancerSettings.from_env().for_device(torch.device("cuda"), FACES, memory=small).concurrency == 3


@pytest.mark.parametrize(("card", "engines", "expected"), [
    ("H200 141 GB", FACES, (3, 4)),  # (processes, slots each): three processes, the most worth running
    ("RTX 4090 24 GB", FACES, (1, 4)),
    ("RTX 4080 16 GB", UPSCALE, (2, 4)),
    ("GTX 1650 4 GB", FACES, (1, 1)),
])
def test_auto_runs_as_many_processes_as_the_gpus_memory_holds(
        card: str, engines: list[str], expected: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENHANCER_CONCURRENCY", raising=False)
    monkeypatch.delenv("ENHANCER_PROCESSES", raising=False)
    total = int(CARDS[card] * GiB)
    got = EnhancerSettings.from_env().for_device(torch.device("cuda"), engines, memory=(total - GiB // 2, total))
    assert (got.processes, got.concurrency) == expected


def test_processes_asked_for_share_the_memory_and_a_cpu_runs_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENHANCER_CONCURRENCY", raising=False)
    monkeypatch.setenv("ENHANCER_PROCESSES", "2")
    small = (int(15.2 * GiB), int(15.7 * GiB))  # a 16 GB card: four face slots in one process (above)
    got = EnhancerSettings.from_env().for_device(torch.device("cuda"), FACES, memory=small)
    assert (got.processes, got.concurrency) == (2, 1)  # each process has half of the card: one face slot
    monkeypatch.delenv("ENHANCER_PROCESSES")
    assert EnhancerSettings.from_env().for_device(torch.device("cpu"), FACES).processes == 1
    for wrong in ("0", "many"):
        monkeypatch.setenv("ENHANCER_PROCESSES", wrong)
        with pytest.raises(SettingsError, match="ENHANCER_PROCESSES must be auto"):
            EnhancerSettings.from_env()


def test_one_process_needs_no_plan_and_a_host_without_a_gpu_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a host that may have a GPU pays for the planning process (it loads torch to read the card's memory)."""
    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("planned in a process of its own")

    monkeypatch.setattr(processes.subprocess, "run", no_probe)
    monkeypatch.delenv("ENHANCER_PROCESSES", raising=False)
    monkeypatch.setenv("ENHANCER_DEVICE", "cpu")
    assert processes.plan(EnhancerSettings.from_env()).processes == 1
    assert processes.gpu_present("cuda:1") and not processes.gpu_present("cpu")
    monkeypatch.setenv("ENHANCER_PROCESSES", "2")
    assert processes.plan(EnhancerSettings.from_env()).processes == 2  # asked for, on a CPU: nothing to read
    monkeypatch.setenv("ENHANCER_DEVICE", "cuda")
    monkeypatch.setenv("ENHANCER_CONCURRENCY", "3")
    both = processes.plan(EnhancerSettings.from_env())
    assert (both.processes, both.concurrency) == (2, 3)  # both given: nothing left to plan
    monkeypatch.setenv("ENHANCER_PROCESSES", "1")
    monkeypatch.delenv("ENHANCER_CONCURRENCY")
    assert processes.plan(EnhancerSettings.from_env()).processes == 1  # the worker itself reads the memory


def test_a_plan_that_cannot_be_made_runs_one_process_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    def broken(args: list[str], **kwargs: object) -> None:
        raise processes.subprocess.CalledProcessError(1, args, "", "RuntimeError: CUDA error: no kernel image\n")

    monkeypatch.setattr(processes.subprocess, "run", broken)
    monkeypatch.delenv("ENHANCER_PROCESSES", raising=False)
    monkeypatch.delenv("ENHANCER_CONCURRENCY", raising=False)
    monkeypatch.setenv("ENHANCER_DEVICE", "cuda")
    with caplog.at_level("ERROR", logger="enhancer.processes"):
        assert processes.plan(EnhancerSettings.from_env()).processes == 1
    assert "could not plan the enhancer processes (RuntimeError: CUDA error: no kernel image); running one" \
        in caplog.text


def test_the_planning_process_reads_the_device_and_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real planning process (torch loaded, device resolved), on this CPU standing in for a GPU host: asked
    for two processes, it plans two of the CPU's one slot each."""
    monkeypatch.setattr(processes, "gpu_present", lambda device: True)
    monkeypatch.setenv("ENHANCER_DEVICE", "cpu")
    monkeypatch.setenv("ENHANCER_ENGINE", "bench-resize")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("ENHANCER_PROCESSES", "2")
    monkeypatch.delenv("ENHANCER_CONCURRENCY", raising=False)
    planned = processes.plan(EnhancerSettings.from_env())
    assert (planned.processes, planned.concurrency) == (2, 1)
