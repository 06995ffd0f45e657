# One image for the edge, enhancer and billing services; compose.yaml picks the command
# (`photoenhance edge|enhancer|billing`).

# The web page, built with Node; only its static build (web/dist) goes into the image.
FROM node:20-slim AS page
WORKDIR /src
COPY web ./web
RUN cd web && npm ci --no-audit --no-fund && npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgl1/libglib2.0-0: OpenCV (pulled in by basicsr/facexlib); libvulkan1: the Vulkan loader.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libvulkan1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --user-group app

WORKDIR /app

# basicsr 1.4.2 only ships an sdist whose setup.py needs torch: install torch first and build
# basicsr against it, rather than letting pip fetch a second torch into an isolated build env.
RUN pip install "torch==2.14.1" "torchvision==0.29.1" setuptools wheel cython numpy \
    && pip install --no-build-isolation "basicsr==1.4.2"

# README.md is the `readme` in pyproject.toml: setuptools refuses to build without it.
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY edge ./edge
COPY enhancer ./enhancer
COPY billing ./billing
COPY photoenhance ./photoenhance
COPY --from=page /src/web/dist ./web/dist
COPY nats ./nats
RUN pip install . \
    && pip install --no-deps "facenet-pytorch==2.6.0"

# Mount points for the named volumes (billing DB, models). Created here so that a fresh named
# volume takes over this ownership and the non-root user can write to it.
RUN mkdir -p /data /models && chown app:app /data /models

USER app

CMD ["photoenhance", "--help"]
