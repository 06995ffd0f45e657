#!/bin/bash
# One device-machine run of bench/gpu.py: the model libraries travel as plain package folders in .whl/site
# (pure Python, plus the two ncnn Real-ESRGAN weight files), the machine's own torch does the rest.
# Build .whl/site here first with `bash bench/gpu_carry.sh gpu`, then carry it: run(carry=[".whl"]).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/.whl/site:$PWD" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PY:-python3}
{ nvidia-smi; $PY -c 'import torch,sys;print(sys.version, torch.__version__, torch.version.cuda)'
  $PY -c 'import numpy,cv2,skimage,PIL,torchvision;print("numpy",numpy.__version__,"cv2",cv2.__version__,"torchvision",torchvision.__version__)'
} 2>&1 | tee "$OUT/env.txt"
timeout ${BENCH_TIMEOUT:-380} $PY bench/gpu.py --model-dir /tmp/bench-models --budget ${BUDGET:-250} \
  --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.txt"
