"""Load balancing: a burst of jobs over one slow and one fast enhancer — how close to ideal?

Prints the makespan of the burst against the ideal schedule (the best split of the jobs over
the two workers' speeds), the jobs each worker took, and whether any job waited on a busy
worker while another sat idle. Runs real servers and real service processes on loopback; the
engine is the BENCHMARK-ONLY ``bench-resize`` with a fixed delay per job, so that the workers'
speeds are known and only the dispatch is measured.

    python bench/balance.py [--jobs 40] [--fast 0.5] [--slow 1.5]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from photoenhance.servers import EmbeddedNats, EmbeddedS3
from photoenhance.stack import Stack


def ideal_makespan(jobs: int, durations: list[float]) -> float:
    """Best completion time for ``jobs`` equal jobs on workers taking ``durations`` each (brute force split)."""
    best = float("inf")
    fast, slow = durations
    for on_fast in range(jobs + 1):
        best = min(best, max(on_fast * fast, (jobs - on_fast) * slow))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--fast", type=float, default=0.5, help="seconds per job on the fast worker")
    p.add_argument("--slow", type=float, default=1.5, help="seconds per job on the slow worker")
    args = p.parse_args()

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 90, 60)).save(buf, "JPEG")
    photo = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats") as nats, \
            EmbeddedS3(Path(tmp) / "s3") as s3:
        stack = Stack(nats=nats, s3=s3, root=Path(tmp), model_dir=Path(tmp) / "models",
                      extra_env={"ENHANCER_ENGINE": "bench-resize", "ENHANCER_HEARTBEAT": "1",
                                 "LOG_LEVEL": "WARNING", "RATE_LIMIT_ENHANCE": "100000/60"})
        try:
            stack.start_edge()
            stack.start_enhancer("fast", BENCH_ENGINE_DELAY=str(args.fast))
            stack.start_enhancer("slow", BENCH_ENGINE_DELAY=str(args.slow))
            with httpx.Client(base_url=stack.url, timeout=60) as http:
                t0 = time.perf_counter()
                ids = [http.post("/api/v1/enhance?scale=2", files={"file": (f"{i}.jpg", photo, "image/jpeg")}
                                 ).json()["task_id"] for i in range(args.jobs)]
                submitted = time.perf_counter() - t0
                pending = set(ids)
                finished: dict[str, dict] = {}
                while pending:
                    for task_id in list(pending):
                        body = http.get(f"/api/v1/status/{task_id}").json()
                        if body["status"] in ("completed", "failed"):
                            finished[task_id] = body
                            pending.discard(task_id)
                    time.sleep(0.25)  # the makespan comes from the records' timestamps, not from polling
                makespan = max(b["updated_at"] for b in finished.values()) - min(
                    b["created_at"] for b in finished.values())
            time.sleep(1.5)  # one more heartbeat, so the job counters are final
            servers = {e["id"]: e for e in httpx.get(f"{stack.url}/api/v1/info").json()["enhancers"]}
        finally:
            stack.stop()
    ideal = ideal_makespan(args.jobs, [args.fast, args.slow])
    failed = sum(1 for b in finished.values() if b["status"] != "completed")
    print(f"jobs: {args.jobs} (failed {failed}); workers: fast {args.fast:.2f} s/job, slow {args.slow:.2f} s/job")
    print(f"submitted in {submitted:.2f} s")
    print(f"makespan: {makespan:.2f} s; ideal: {ideal:.2f} s; ratio: {makespan / ideal:.2f} (target ≤ 1.25)")
    for name in ("fast", "slow"):
        s = servers.get(name, {})
        print(f"  {name}: {s.get('jobs_done')} jobs")


if __name__ == "__main__":
    main()
