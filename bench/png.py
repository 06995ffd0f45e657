"""Benchmark the PNG encoder of results (``enhancer.imaging.encode_png``) against Pillow's, which it replaced.

    python bench/png.py             # 2048² photo-like results, 5 runs each (about a minute on two cores)
    python bench/png.py --runs 3 --size 1024

For each image and encoder: the median wall time, the median CPU time of the process (all threads: what the
encode costs a busy machine), and the file's bytes against Pillow's. Every output is decoded again and
checked against the pixels. The images are scikit-image photographs made into 2048² results: the astronaut
upscaled bicubic (smooth, as the issue measured), the same upscaled Lanczos and sharpened (crisper, like a
super-resolution result), a mosaic of four photos with sensor noise (the hardest to compress), and the
astronaut with a gradient alpha (RGBA). Pillow's figures are with an sRGB profile embedded, like ours.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
import zlib
from collections.abc import Callable

import cv2
import numpy as np
import skimage.data
from PIL import Image, ImageCms

from enhancer import imaging


def images(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    astronaut = skimage.data.astronaut()
    smooth = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_CUBIC)
    lanczos = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_LANCZOS4)
    sharp = cv2.addWeighted(lanczos, 1.8, cv2.GaussianBlur(lanczos, (0, 0), 2), -0.8, 0)
    half = size // 2
    tiles = [cv2.resize(p, (half, half), interpolation=cv2.INTER_AREA)
             for p in (skimage.data.chelsea(), skimage.data.coffee(), astronaut, skimage.data.rocket())]
    mosaic = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])]).astype(np.int16)
    noisy = np.clip(mosaic + rng.normal(0, 2, mosaic.shape).round(), 0, 255).astype(np.uint8)
    alpha = np.tile(np.linspace(0, 255, size).astype(np.uint8), (size, 1))
    return {"astronaut, bicubic": smooth, "astronaut, Lanczos + sharpened": sharp,
            "four photos + noise": noisy, "astronaut, RGBA": np.dstack([smooth, alpha])}


def pillow(pixels: np.ndarray, icc: bytes) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=6, icc_profile=icc)
    return buf.getvalue()


def opencv(pixels: np.ndarray, icc: bytes) -> bytes:
    order = cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
    return cv2.imencode(".png", cv2.cvtColor(pixels, order))[1].tobytes()  # its default: level 1, RLE; no ICC


def ours(threads: int | None, deflate: object | None = None) -> Callable[[np.ndarray, bytes], bytes]:
    def encode(pixels: np.ndarray, icc: bytes) -> bytes:
        saved = imaging._png_threads, imaging._png_pool, imaging._deflate, imaging.PNG_LEVEL
        if threads is not None:
            imaging._png_threads, imaging._png_pool = (lambda: threads), None
        if deflate is not None:
            imaging._deflate, imaging.PNG_LEVEL = deflate, 6
        try:
            return imaging.encode_png(pixels, icc)
        finally:
            imaging._png_threads, imaging._png_pool, imaging._deflate, imaging.PNG_LEVEL = saved
    return encode


def measure(fn: Callable[[np.ndarray, bytes], bytes], pixels: np.ndarray, icc: bytes, runs: int
            ) -> tuple[float, float, bytes]:
    walls, cpus = [], []
    body = b""
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        body = fn(pixels, icc)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    threads = imaging._png_threads()
    deflate = "zlib-ng" if imaging._deflate is not zlib else "zlib (zlib-ng missing)"
    encoders = {"Pillow, level 6 (before)": pillow,
                f"ours: {deflate} {imaging.PNG_LEVEL}, {threads} thread(s)": ours(None),
                f"ours: {deflate} {imaging.PNG_LEVEL}, 1 thread": ours(1),
                f"ours: zlib 6, {threads} thread(s)": ours(None, zlib),
                "OpenCV default (level 1, RLE; no ICC)": opencv}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.size}² results, median of {args.runs} runs, {usable} usable core(s), load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| image | encoder | wall ms | CPU ms | bytes | vs Pillow |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for name, pixels in images(args.size).items():
        base = 0
        for label, fn in encoders.items():
            wall, cpu, body = measure(fn, pixels, icc, args.runs)
            back = np.asarray(Image.open(io.BytesIO(body)))
            assert np.array_equal(back, pixels), f"{label} changed the pixels of {name}"
            base = base or len(body)
            print(f"| {name} | {label} | {wall * 1000:.0f} | {cpu * 1000:.0f} | {len(body):,} | "
                  f"{len(body) / base:.3f} |", flush=True)


if __name__ == "__main__":
    main()
