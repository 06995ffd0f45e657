"""The enhancer's Prometheus metrics, served on ``ENHANCER_METRICS_PORT`` (off when 0)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
JOBS = Counter("pe_enhancer_jobs", "Jobs finished by this worker", ["result"], registry=REGISTRY)
STAGE = Histogram("pe_enhancer_stage_seconds", "Time per stage of a job", ["stage"], registry=REGISTRY,
                  buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
IN_FLIGHT = Gauge("pe_enhancer_jobs_in_flight", "Jobs this worker holds now", registry=REGISTRY)
GPU_MEMORY = Gauge("pe_enhancer_gpu_memory_bytes", "GPU memory allocated by the models (peak since start)",
                   registry=REGISTRY)


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Start the scrape endpoint in a background thread (prometheus_client's own server)."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)


def record_gpu_memory(device: object) -> None:
    try:
        import torch

        if getattr(device, "type", "") == "cuda":
            GPU_MEMORY.set(torch.cuda.max_memory_allocated(device))
    except Exception:  # metrics never break a job
        pass
