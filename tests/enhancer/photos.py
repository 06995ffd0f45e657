"""Helpers for the engine tests: real photos from scikit-image, picture measures, a progress recorder, and a
wait for what other threads do."""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np


def shrink(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale a real photo the way a smaller camera image would look (area averaging)."""
    return np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two 8-bit images, in dB; inf when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def laplacian_var(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the luma: a standard sharpness (high-frequency energy) measure."""
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


class Recorder:
    """A Progress callback that keeps every call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.events.append((stage, done, total))

    def stage(self, name: str) -> list[tuple[int, int]]:
        return [(d, t) for s, d, t in self.events if s == name]


def until(done: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for a state that other threads bring about (``what`` names it when it never comes)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)
