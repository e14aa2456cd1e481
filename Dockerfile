# One CPU image for the three pipeline agents (agents/): sentry_dataset, sentry_trainer,
# sentry_inferencer. docker-compose.yml runs them; compose.gpu.yaml adds a GPU.
# Keys are never part of the image: compose passes them in as secrets at run time.
#
# BASE_IMAGE: any Debian-like image with python3 (>= 3.10) and its venv module. CI swaps in a
# local debootstrapped base (scripts/compose-ci.sh) because it cannot pull from a registry.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# torch from the CPU wheel index: PyPI's Linux torch pulls several GB of CUDA libraries.
# compose.gpu.yaml builds a CUDA image instead: a CUDA torch index and the `gpu` extra.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG SENTRY_EXTRAS=torch
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/sentry \
    PATH=/opt/sentry/bin:$PATH

RUN python3 -m venv /opt/sentry \
 && pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

WORKDIR /app
COPY pyproject.toml setup.py README.md LICENSE cufile.json ./
COPY sentry/ sentry/
COPY kernels/ kernels/
# No compiler here: the optional C accelerator is skipped and the hashlib path gives the same roots.
RUN pip install ".[$SENTRY_EXTRAS]" safetensors scikit-learn pillow
COPY agents/ agents/

# An unprivileged user; the volumes' mount points are created (and so owned) by it, so fresh
# named volumes are writable by the agents.
RUN useradd --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sentry \
 && mkdir -p /data/datasets /data/checkpoints \
 && chown sentry:sentry /data/datasets /data/checkpoints
USER 10001
