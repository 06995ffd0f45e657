# One image for the edge, enhancer and billing services and for compose's one-shots (nats-init,
# bootstrap); compose.yaml picks the command (`photoenhance edge|enhancer|billing|...`) and the user.

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

# `app` is the image's default user. compose.yaml runs each service as a user of its own (billing as
# `app`, which owns billing-data volumes made by earlier images), so that in the shared identity volume
# a service can read its own NATS credential and S3 keys and no other's (compose's nats-init and
# bootstrap hand each file to its user).
RUN useradd --create-home --uid 10001 --user-group app \
    && useradd --create-home --uid 10002 --user-group edge \
    && useradd --create-home --uid 10003 --user-group enhancer

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
# Editable: the code runs from /app, where it finds the files beside its packages (nats/nats-server.conf
# for `photoenhance credentials init`, web/dist for the edge); a plain install would look for them in
# site-packages and miss them.
RUN pip install -e . \
    && pip install --no-deps "facenet-pytorch==2.6.0"

# Mount points for the named volumes (billing DB, models). Created here so that a fresh named
# volume takes over this ownership and the service's user can write to it. (A models volume made by an
# earlier image belongs to `app`: the enhancer still reads it, and only cannot cache converted weights.)
RUN mkdir -p /data /models && chown app:app /data && chown enhancer:enhancer /models

USER app

CMD ["photoenhance", "--help"]
