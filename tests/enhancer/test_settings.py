"""The enhancer's "auto" settings: how many jobs a worker runs at once, and whether it prefetches,
follow the device it runs on (a GPU worker left at the CPU's defaults would use a fraction of the card)."""

from __future__ import annotations

import pytest
import torch

from bus.settings import SettingsError
from enhancer.settings import EnhancerSettings

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
H200 = (139 << 30, 140 << 30)  # (free, total) bytes: room for every slot a process runs (enhancer.slots)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ENHANCER_CONCURRENCY", "ENHANCER_PREFETCH"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_unset_means_four_jobs_with_prefetch_on_a_gpu_and_one_without_on_a_cpu(clean_env) -> None:
    settings = EnhancerSettings.from_env()
    gpu, cpu = settings.for_device(CUDA, memory=H200), settings.for_device(CPU)
    assert (gpu.concurrency, gpu.prefetch) == (4, 1)
    assert (cpu.concurrency, cpu.prefetch) == (1, 0)


@pytest.mark.parametrize("device", [CUDA, CPU])
def test_explicit_values_win_over_auto_on_any_device(clean_env, device: torch.device) -> None:
    clean_env.setenv("ENHANCER_CONCURRENCY", "2")
    clean_env.setenv("ENHANCER_PREFETCH", "0")
    resolved = EnhancerSettings.from_env().for_device(device)
    assert (resolved.concurrency, resolved.prefetch) == (2, 0)


def test_auto_spelled_out_is_the_default(clean_env) -> None:
    clean_env.setenv("ENHANCER_CONCURRENCY", " Auto ")
    assert EnhancerSettings.from_env().for_device(CUDA, memory=H200).concurrency == 4


@pytest.mark.parametrize(("raw", "message"), [("0", "at least 1"), ("four", "auto or a whole number")])
def test_a_bad_concurrency_is_refused_with_the_setting_named(clean_env, raw: str, message: str) -> None:
    clean_env.setenv("ENHANCER_CONCURRENCY", raw)
    with pytest.raises(SettingsError, match=f"ENHANCER_CONCURRENCY must be.*{message}"):
        EnhancerSettings.from_env()
