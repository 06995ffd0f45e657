#!/bin/bash
# One device-machine run of bench/compile.py: compiled vs eager Real-ESRGAN (general-x4v3, x4plus) on the GPU:
# PSNR against eager fp32 (the issue's bar: at least 45 dB), ms per 420² tile, s/MP, build time, peak memory.
#
# Nothing can be downloaded there. Carry what bench/gpu_run.sh carries (the model libraries as plain package
# folders and the ncnn x4plus weights): build it here with `bash bench/gpu_carry.sh gpu` (a few MiB), then
#   run(carry=[".whl"], command="bash bench/gpu_compile_run.sh", timeout_s=560)
# torch.compile needs only the machine's own torch and the triton it ships with. torch-tensorrt is NOT carried:
# it needs the TensorRT libraries (tensorrt-cu12/cu13-libs, wheels of the order of a gigabyte; not downloaded
# here to check), far over the 64 MiB that a carry may hold. The bench uses TensorRT only when the machine's own
# python already imports torch_tensorrt (env.txt says whether it does); otherwise torch.compile alone.
#
# Two runs on the same model folder: the first compiles from nothing (max-autotune: minutes for x4plus), the
# second finds the compiled kernels in MODEL_DIR/compiled and shows what a restart costs. Each model's figures
# are printed as soon as it is done, so a run cut short by its timeout still leaves the first model's.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/compile-bench-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/.whl/site:$PWD" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PY:-python3}
MODELS=${MODELS:-/tmp/bench-models}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  $PY -c 'import torch,sys;print(sys.version, torch.__version__, torch.version.cuda)'
  $PY -c 'import triton;print("triton", triton.__version__)' 2>&1 | tail -1
  $PY -c 'import torch_tensorrt,tensorrt;print("torch_tensorrt", torch_tensorrt.__version__, "tensorrt", tensorrt.__version__)' 2>&1 | tail -1
} 2>&1 | tee "$OUT/env.txt"
timeout "${COLD_TIMEOUT:-330}" $PY bench/compile.py --model-dir "$MODELS" --json "$OUT/compile-cold.json" "$@" 2>&1 \
  | tee "$OUT/compile-cold.txt"
timeout "${WARM_TIMEOUT:-150}" $PY bench/compile.py --model-dir "$MODELS" --no-photo --reps 5 \
  --json "$OUT/compile-warm.json" "$@" 2>&1 | tee "$OUT/compile-warm.txt"
ls -R "$MODELS/compiled" 2>/dev/null | head -40 > "$OUT/cache-listing.txt"
du -sh "$MODELS/compiled" 2>/dev/null | tee -a "$OUT/cache-listing.txt"
