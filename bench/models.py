"""Benchmark the model engines on this machine: seconds per photo and peak memory.

    python bench/models.py --quick          # 256² only, fast/high, tiles 0 and 256 (a few minutes on CPU)
    python bench/models.py                  # everything: 256² and 1 MP, all qualities, tiles 0/256/512
    python bench/models.py --compile auto   # as the service runs them (ENHANCER_COMPILE; default here: off, eager)

Each case runs in a fresh subprocess so that its peak memory (ru_maxrss, and on CUDA
torch.cuda.max_memory_allocated) is its own; model loading and one small warm-up run are not timed.
GFPGAN uses random weights when GFPGANv1.4.pth is not in the model folder: its timing is then
representative (same architecture and arithmetic) but its faces are meaningless, and the output says so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"256": (256, 256), "1mp": (1024, 1024)}


def _photo(size: str):
    """scikit-image's astronaut (a real photo with one face), resized to the case's input size."""
    import cv2
    import skimage.data

    w, h = SIZES[size]
    src = skimage.data.astronaut()
    interp = cv2.INTER_AREA if w <= src.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(src, (w, h), interpolation=interp)


def run_case(engine_name: str, quality: str, size: str, tile: int, model_dir: Path, device_pref: str,
             compile: str = "off") -> dict:
    """One measurement, in this process. Returns a JSON-able row."""
    import torch

    from enhancer.engines import EnhanceOptions, create_engine, pick_device
    from enhancer.engines.gfpgan import GFPGANEngine, gfpgan_arch
    from enhancer.engines.realesrgan import RealESRGANEngine

    device = pick_device(device_pref)
    note = ""
    if engine_name == "gfpgan" and not (model_dir / "GFPGANv1.4.pth").is_file():
        with tempfile.TemporaryDirectory(prefix="bench-gfpgan-") as scratch:  # 348 MB: do not leave it behind
            torch.save({"params_ema": gfpgan_arch().state_dict()}, Path(scratch) / "GFPGANv1.4.pth")
            engine = GFPGANEngine(Path(scratch), device,
                                  background=RealESRGANEngine(model_dir, device, compile=compile))
        note = "random GFPGAN weights (no GFPGANv1.4.pth): timing only"
    else:
        engine = create_engine(engine_name, model_dir, device, compile=compile)
    opts = EnhanceOptions(scale=4, quality=quality, tile_size=tile)
    photo = _photo(size)
    engine.enhance(photo[:64, :64].copy(), opts, lambda *a: None)  # load models, first-call overheads
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = engine.enhance(photo, opts, lambda *a: None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return {
        "engine": engine_name,
        "quality": quality,
        "input": f"{photo.shape[1]}x{photo.shape[0]}",
        "tile": tile,
        "tiles": result.tiles,
        "faces": result.faces,
        "model": result.model,
        "seconds": round(seconds, 2),
        # CPU time of all its threads: on a machine shared with other work, cpu_seconds / threads is what the
        # case would take alone (wall seconds grow with the load, CPU seconds hardly).
        "cpu_seconds": round(cpu_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compile": compile,
        "note": note,
    }


def _pythonpath() -> str:
    """The repo root first, keeping whatever the caller had (so `python bench/models.py` works uninstalled)."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def _cases(args: argparse.Namespace) -> list[tuple[str, str, str, int]]:
    if args.quick:
        return [(e, q, "256", t) for e, q, t in itertools.product(["realesrgan"], ["fast", "high"], [0, 256])] + [
            ("gfpgan", "fast", "256", 0)
        ]
    return list(itertools.product(args.engines, args.qualities, args.sizes, args.tiles))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small subset (256² input)")
    parser.add_argument("--engines", nargs="+", default=["realesrgan", "gfpgan"])
    parser.add_argument("--qualities", nargs="+", default=["fast", "medium", "high"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--tiles", nargs="+", type=int, default=[0, 256, 512])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", default="off", help="ENHANCER_COMPILE for the Real-ESRGAN models (auto: what "
                        "the service runs; default off, eager PyTorch, as the earlier figures were made)")
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("MODEL_DIR", "~/.cache/photoenhance/models")).expanduser())
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print its JSON row
    args = parser.parse_args(argv)

    if args.case:
        engine, quality, size, tile = args.case.split(",")
        print(json.dumps(run_case(engine, quality, size, int(tile), args.model_dir, args.device, args.compile)))
        return 0

    print(f"model dir {args.model_dir}; each case in a fresh process; load + warm-up not timed", flush=True)
    header = f"{'engine':<10} {'quality':<7} {'input':>9} {'tile':>4} {'tiles':>5} {'faces':>5} " \
             f"{'s/photo':>8} {'cpu s':>8} {'rss MB':>7} {'cuda MB':>7}  model / note"
    print(header, flush=True)
    failed = 0
    for engine, quality, size, tile in _cases(args):
        proc = subprocess.run(
            [sys.executable, __file__, "--case", f"{engine},{quality},{size},{tile}",
             "--model-dir", str(args.model_dir), "--device", args.device, "--compile", args.compile],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
        if proc.returncode != 0:
            failed += 1
            print(f"{engine:<10} {quality:<7} {size:>9} {tile:>4}  FAILED: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        cuda = "-" if r["peak_cuda_mb"] is None else r["peak_cuda_mb"]
        print(f"{r['engine']:<10} {r['quality']:<7} {r['input']:>9} {r['tile']:>4} {r['tiles']:>5} {r['faces']:>5} "
              f"{r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f} {r['peak_rss_mb']:>7} {cuda:>7}  "
              f"{r['model']} on {r['device']} "
              f"({r['threads']} threads, compile {r['compile']}) {r['note']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
