"""The whole path, HTTP to HTTP, with a BENCHMARK-ONLY engine that just resizes.

Every task goes: HTTP upload → edge validates and puts the photo in S3 → job on the NATS work queue →
enhancer fetches it from S3, decodes, runs the engine, encodes, stores the result in S3, writes the
record → client sees ``completed`` on ``/status`` → client downloads the result. The servers are real
(``nats-server`` and the S3 server of ``photoenhance.servers``) and so are the services (the edge and
N enhancers as processes, ``photoenhance.stack``). Only the engine is a stand-in: ``bench-resize``
(Lanczos ×scale, no model), so that what is left is the service's own cost.

Printed per photo size and configuration (N enhancers, prefetch on/off):

- tasks/s with ``clients-per-enhancer × N`` clients each doing upload → poll → download in a loop;
- p50/p99 of every stage: client-side ``upload`` (POST until its answer), ``queue`` (record created →
  claimed by a worker), the enhancer's own ``fetch``/``decode``/``wait``/``engine``/``encode``/``store``
  (the ``timings`` each worker records, also exported on its ``/metrics`` as ``pe_enhancer_stage_seconds``),
  ``bookkeeping`` (claimed → finished minus those stages: record writes, progress, the completed fact),
  ``notice`` (finished → the client's poll saw it), ``download``, and ``total`` (POST → download done);
- how fast the edge answers ``/health`` and ``/status`` meanwhile (p50/p99, probed every 100 ms);
- the overhead against the same decode + resize + encode done in-process: a sequential run (one client,
  one enhancer) gives ``service time / in-process time`` per photo, and the throughput runs give
  ``in-process photos/s on one thread / service tasks/s``.

    python bench/pipeline.py                               # quick: 100 KB and 5 MB photos, 1/2/4 enhancers
    python bench/pipeline.py --tasks 40,10 --enhancers 1,2 --prefetch 0,1 --sizes 100k,5m
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enhancer.engines.base import EnhanceOptions
from enhancer.engines.bench_resize import BenchResizeEngine
from enhancer.imaging import decode, encode
from photoenhance.servers import EmbeddedNats, EmbeddedS3
from photoenhance.stack import ServiceProcess, Stack

LABEL = ("ENGINE: bench-resize — a BENCHMARK-ONLY stand-in (Lanczos resize, no model). These figures are the "
         "service's own overhead, not enhancement speed.")
#: Service settings for a load test: no rate limits or quotas, a deep queue, big photos, quick heartbeats.
LOAD_ENV = {"ENHANCER_HEARTBEAT": "1", "LOG_LEVEL": "WARNING", "RATE_LIMIT_ENHANCE": "1000000/60",
            "RATE_LIMIT_ACCOUNT": "1000000/60", "BILLING_ANONYMOUS_DAILY": "0", "QUEUE_LIMIT": "10000",
            "MAX_UPLOAD_MB": "64", "MAX_INPUT_MEGAPIXELS": "60",
            # One process per enhancer started (the benches count processes; bench/service.py --processes: more).
            "ENHANCER_PROCESSES": "1",
            # Results as large as asked, as the in-process comparison makes them (no bus.output_size cap).
            "MAX_OUTPUT_MEGAPIXELS": "100000"}
ENHANCER_STAGES = ("fetch", "decode", "wait", "engine", "encode", "store")
STAGES = ("upload", "queue", *ENHANCER_STAGES, "bookkeeping", "notice", "download", "total")


# --- photos ------------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    text = text.strip().lower()
    units = {"k": 1000, "m": 1000_000}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def make_photo(target: int, seed: int = 0) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of about ``target`` bytes (±5 %) that looks like a photo: four scikit-image photographs
    in a 2×2 mosaic, resized, with sensor noise, at quality 95 — about 0.4–0.6 byte per pixel, as phone
    photos are (5 MB ≈ 12 MP). The pixel count is searched for until the byte size fits."""
    import skimage.data

    tiles = [cv2.resize(getattr(skimage.data, n)(), (512, 384), interpolation=cv2.INTER_AREA)
             for n in ("astronaut", "chelsea", "coffee", "rocket")]
    mosaic = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)  # 1024×768
    noise = np.random.default_rng(seed)

    def jpeg(width: int) -> bytes:
        height = width * 3 // 4
        img = cv2.resize(mosaic, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        img += noise.normal(0, 6.0, img.shape).astype(np.float32)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
        return buf.getvalue()

    # Bytes grow about with the pixel count: rescale the width by sqrt(target / bytes) until within 5 %.
    width, best = 1024, b""
    for _ in range(8):
        data = jpeg(width)
        if not best or abs(len(data) - target) < abs(len(best) - target):
            best = data
        if abs(len(data) - target) <= 0.05 * target:
            break
        width = max(int(width * (target / len(data)) ** 0.5), 16)
    size = Image.open(io.BytesIO(best)).size
    return best, size


# --- the in-process reference --------------------------------------------------------------------------
def in_process(data: bytes, scale: int, reps: int) -> float:
    """Median seconds of decode + bench-resize + encode in this process, on one thread."""
    engine = BenchResizeEngine()
    opts = EnhanceOptions(scale=scale)
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        decoded = decode(data, max_pixels=100_000_000)
        result = engine.enhance(decoded.rgb, opts, lambda *a: None)
        encode(result.image, None, decoded.icc, decoded.source_format)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])  # the first one warms the codecs up


# --- the service ----------------------------------------------------------------------------------------
@dataclass
class Task:
    task_id: str
    t_post: float  # wall clock (time.time), comparable with the records' timestamps
    t_posted: float
    t_seen: float = 0.0
    t_downloaded: float = 0.0
    status: str = ""
    record: dict = field(default_factory=dict)


def one_task(http: httpx.Client, photo: bytes, name: str, query: str, poll: float) -> Task:
    t0 = time.time()
    r = http.post(f"/api/v1/enhance?{query}", files={"file": (name, photo, "image/jpeg")})
    r.raise_for_status()
    task = Task(r.json()["task_id"], t0, time.time())
    while True:
        body = http.get(f"/api/v1/status/{task.task_id}").json()
        if body["status"] in ("completed", "failed"):
            task.t_seen, task.status = time.time(), body["status"]
            break
        time.sleep(poll)
    if task.status == "completed":
        d = http.get(f"/api/v1/download/{task.task_id}")
        d.raise_for_status()
    task.t_downloaded = time.time()
    return task


def probe_edge(url: str, done: list[Task], stop: threading.Event, every: float = 0.1) -> dict[str, list[float]]:
    """While the load runs: how long ``/health`` and a task's ``/status`` take to answer (seconds)."""
    seen: dict[str, list[float]] = {"health": [], "status": []}
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.wait(every):
            for name, path in (("health", "/health"), ("status", f"/api/v1/status/{done[0].task_id}" if done else "")):
                if path:
                    t = time.perf_counter()
                    http.get(path)
                    seen[name].append(time.perf_counter() - t)
    return seen


def run_load(url: str, photos: list[bytes], *, tasks: int, clients: int, query: str, poll: float,
             probes: dict[str, list[float]] | None = None) -> tuple[list[Task], float]:
    """``clients`` threads, each with its own HTTP connection, run upload → poll → download until ``tasks``
    tasks are done (task i uploads ``photos[i % len(photos)]`` with the options in ``query``). Returns the
    tasks and the wall time from the first POST to the last download. With ``probes``, the edge's
    ``/health`` and ``/status`` latencies meanwhile are added to it."""
    counter = iter(range(tasks))
    lock = threading.Lock()
    done: list[Task] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                task = one_task(http, photos[i % len(photos)], f"bench-{i}.jpg", query, poll)
                with lock:
                    done.append(task)

    t0 = time.time()
    stop = threading.Event()
    with ThreadPoolExecutor(clients + 1) as pool:
        probe = pool.submit(probe_edge, url, done, stop) if probes is not None else None
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
        stop.set()
        if probe is not None:
            for name, values in probe.result().items():
                probes.setdefault(name, []).extend(values)
    return done, time.time() - t0


async def _read_records(nats: EmbeddedNats, ids: list[str]) -> dict[str, dict]:
    import nats as nats_client
    from bus import subjects
    from bus.tasks import TaskStore

    nc = await nats_client.connect(**nats.connect_options("admin"))
    try:
        store = TaskStore(await nc.jetstream().key_value(subjects.TASKS_BUCKET))
        out = {}
        for task_id in ids:
            state = await store.get(task_id)
            if state is not None:
                out[task_id] = {"created_at": state.created_at, "started_at": state.started_at,
                                "finished_at": state.finished_at, "timings": dict(state.timings),
                                "engine": state.engine, "faces": state.faces}
        return out
    finally:
        await nc.close()


def stage_times(task: Task) -> dict[str, float]:
    """Seconds per stage of one completed task (see the module docstring for what each one covers)."""
    rec = task.record
    t = rec["timings"]
    s = {"upload": task.t_posted - task.t_post, "queue": rec["started_at"] - rec["created_at"]}
    for name in ENHANCER_STAGES:
        s[name] = t.get(name, 0.0)
    processing = rec["finished_at"] - rec["started_at"]
    s["bookkeeping"] = max(processing - sum(t.get(n, 0.0) for n in ENHANCER_STAGES), 0.0)
    s["notice"] = max(task.t_seen - rec["finished_at"], 0.0)
    s["download"] = task.t_downloaded - task.t_seen
    s["total"] = task.t_downloaded - task.t_post
    return s


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


@dataclass
class Row:
    label: str
    tasks_per_s: float
    stages: dict[str, list[float]]
    failed: int
    probes: dict[str, list[float]] = field(default_factory=dict)
    faces: list[int] = field(default_factory=list)  # faces restored per completed task


def measure(stack: Stack, nats: EmbeddedNats, label: str, photos: list[bytes], *, tasks: int, clients: int,
            query: str, poll: float, engine: str = "bench-resize") -> Row:
    """Run the load and read back every task's record: stage times of the completed ones, and how many
    failed. ``engine``: what each record's engine must start with (so a misconfigured run cannot pass)."""
    probes: dict[str, list[float]] = {}
    done, wall = run_load(stack.url, photos, tasks=tasks, clients=clients, query=query, poll=poll, probes=probes)
    records = asyncio.run(_read_records(nats, [t.task_id for t in done]))
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    row_faces: list[int] = []
    failed = 0
    for task in done:
        task.record = records.get(task.task_id, {})
        if task.status != "completed" or not task.record.get("finished_at"):
            failed += 1
            continue
        assert task.record["engine"].startswith(engine), task.record["engine"]
        row_faces.append(task.record.get("faces") or 0)
        for name, seconds in stage_times(task).items():
            stages[name].append(seconds)
    return Row(label, len(done) / wall, stages, failed, probes, row_faces)


# --- printing -------------------------------------------------------------------------------------------
def ms(x: float) -> str:
    return f"{x * 1000:8.1f}"


def print_rows(rows: list[Row]) -> None:
    head = f"  {'config':<22} {'tasks/s':>7} │ " + " ".join(f"{s[:11]:>16}" for s in STAGES)
    print(head)
    print(f"  {'':<22} {'':>7} │ " + " ".join(f"{'p50     p99 ms':>16}" for _ in STAGES))
    for r in rows:
        cells = " ".join(f"{ms(pct(r.stages[s], .5))}{ms(pct(r.stages[s], .99))}" for s in STAGES)
        bad = f"  ({r.failed} failed)" if r.failed else ""
        print(f"  {r.label:<22} {r.tasks_per_s:7.2f} │ {cells}{bad}")


# --- main -----------------------------------------------------------------------------------------------
class Fleet:
    """The enhancers of the stack, restarted when the wanted prefetch setting changes."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.prefetch: str | None = None

    def ensure(self, n: int, prefetch: str) -> None:
        if prefetch != self.prefetch:
            for p in self.stack.enhancers:
                p.stop()
            self.stack.enhancers.clear()
            self.prefetch = prefetch
        while len(self.stack.enhancers) > n:
            p: ServiceProcess = self.stack.enhancers.pop()
            p.stop()
        while len(self.stack.enhancers) < n:
            self.stack.start_enhancer(f"bench-{prefetch}-{len(self.stack.enhancers) + 1}", ENHANCER_PREFETCH=prefetch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100k,5m", help="photo sizes in bytes (k/m suffixes), comma-separated")
    p.add_argument("--tasks", default="24,6", help="tasks per configuration, per size (one number: all sizes)")
    p.add_argument("--enhancers", default="1,2,4", help="enhancer counts to run, comma-separated")
    p.add_argument("--prefetch", default="1",
                   help="ENHANCER_PREFETCH values to compare, comma-separated (0: off, 1: one job per slot)")
    p.add_argument("--clients-per-enhancer", type=int, default=2, help="concurrent clients per enhancer")
    p.add_argument("--sequential", type=int, default=5,
                   help="tasks run one at a time on one enhancer for the service/in-process ratio (0: skip)")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4))
    p.add_argument("--delay", type=float, default=0.0, help="BENCH_ENGINE_DELAY: seconds added to every job")
    p.add_argument("--poll", type=float, default=0.05, help="seconds between a client's status polls")
    p.add_argument("--reps", type=int, default=5, help="in-process repetitions per photo")
    args = p.parse_args()

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    counts = [int(x) for x in args.tasks.split(",")]
    counts = counts * len(sizes) if len(counts) == 1 else counts
    fleet_sizes = [int(x) for x in args.enhancers.split(",")]
    modes = [m.strip() for m in args.prefetch.split(",")]

    print(LABEL)
    print(f"scale ×{args.scale}; extra engine delay {args.delay} s; clients per enhancer "
          f"{args.clients_per_enhancer}; status polled every {args.poll * 1000:.0f} ms")
    photos = []
    for size in sizes:
        data, (w, h) = make_photo(size)
        ref = in_process(data, args.scale, args.reps) + args.delay
        photos.append((size, data, ref))
        print(f"photo ≈{size / 1000:.0f} KB: {len(data) / 1000:.0f} KB JPEG, {w}×{h} ({w * h / 1e6:.1f} MP); "
              f"in-process decode+resize+encode{' + delay' if args.delay else ''}: {ref * 1000:.1f} ms "
              f"({1 / ref:.2f} photos/s on one thread)")

    env = {**LOAD_ENV, "ENHANCER_ENGINE": "bench-resize", "BENCH_ENGINE_DELAY": str(args.delay)}
    query = f"scale={args.scale}"
    results: dict[int, list[Row]] = {size: [] for size in sizes}
    sequential: dict[tuple[int, str], Row] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats") as nats, \
            EmbeddedS3(Path(tmp) / "s3") as s3:
        stack = Stack(nats=nats, s3=s3, root=Path(tmp), model_dir=Path(tmp) / "models", extra_env=env)
        fleet = Fleet(stack)
        try:
            stack.start_edge()
            for mode in modes:
                for n in fleet_sizes:
                    fleet.ensure(n, mode)
                    for (size, data, _), count in zip(photos, counts, strict=True):
                        # Untimed warm-up: connections, codecs, the first S3 buckets writes.
                        run_load(stack.url, [data], tasks=n, clients=n, query=query, poll=args.poll)
                        if n == 1 and args.sequential:
                            sequential[(size, mode)] = measure(
                                stack, nats, f"sequential, prefetch {mode}", [data], tasks=args.sequential,
                                clients=1, query=query, poll=args.poll)
                        row = measure(stack, nats, f"{n} enh, prefetch {mode}", [data], tasks=count,
                                      clients=n * args.clients_per_enhancer, query=query, poll=args.poll)
                        results[size].append(row)
                        print(f"  done: {len(data) / 1000:.0f} KB, {row.label}: {row.tasks_per_s:.2f} tasks/s",
                              flush=True)
        finally:
            stack.stop()

    for size, data, ref in photos:
        print()
        print(f"=== photo {len(data) / 1000:.0f} KB (in-process {ref * 1000:.1f} ms/photo = {1 / ref:.2f} photos/s "
              f"on one thread) — {LABEL.split(' — ')[0]}")
        rows = [sequential[(size, m)] for m in modes if (size, m) in sequential] + results[size]
        print_rows(rows)
        for mode in modes:
            seq = sequential.get((size, mode))
            if seq and seq.stages["total"]:
                total = pct(seq.stages["total"], .5)
                print(f"  prefetch {mode}, one task at a time: total p50 {total * 1000:.1f} ms = "
                      f"{total / ref:.2f}× the in-process time; service overhead "
                      f"(total − in-process work) {(total - ref) * 1000:.1f} ms = {(total - ref) / total:.0%} "
                      f"of the total")
        for row in results[size]:
            print(f"  {row.label}: {row.tasks_per_s:.2f} tasks/s = {row.tasks_per_s * ref:.2f}× "
                  f"the in-process rate on one thread")
        for row in results[size]:
            answers = ", ".join(f"{name} p50 {ms(pct(v, .5)).strip()} / p99 {ms(pct(v, .99)).strip()} ms"
                                for name, v in row.probes.items() if v)
            print(f"  edge under that load ({row.label}): {answers}")


if __name__ == "__main__":
    main()
