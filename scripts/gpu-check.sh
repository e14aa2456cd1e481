#!/usr/bin/env bash
# gpu-check: the one command a session lent a GPU runs first (docs/gpu-runbook.md). From the
# repository root of a fresh GPU machine (H200/H100, CUDA 13, Python 3.12 with torch, CuPy, numpy,
# safetensors, pytest; no internet):
#
#   OUT=/some/empty/dir bash scripts/gpu-check.sh
#
# 1. installs the wheels carried in .whl/ (made here by scripts/gpu-wheels.sh: kvikio-cu13 with
#    its libkvikio-cu13 and rapids-logger, cryptography, cffi, pycparser, ecdsa, pymerkle,
#    cachetools, a cut-down cryptography-vectors; 10.4 MiB measured 2026-12-04) into /tmp only;
# 2. records the environment (scripts/gpu_env.py: nvidia-smi, versions, file read modes, one
#    `python3 -m sentry hash --device cuda`): no usable GPU fails the check;
# 3. runs first what the CPU emulator cannot cover: the ECDSA kernels' PTX carry chains and
#    __CUDA_ARCH__ paths, the Merkle kernels as NVRTC compiles them, real streams (torch's current
#    stream, the file reader threads' own streams), kvikio/GDS; then the other `gpu` tests; a
#    `gpu` test that skips fails (SENTRY_REQUIRE_GPU=1, tests/conftest.py);
# 4. runs bench/gpu_merkle.py and bench/ecdsa.py with --quick;
# 5. writes $OUT/summary.txt: GPU, date, each step's status, seconds and command.
#
# Every step has its own timeout, and all of them together stay inside BUDGET seconds (8 minutes
# less a margin); a step that fails does not stop the next. Exit status 0 only if every step passed.
# $OUT gets 5 files (the device tool brings back 8 at most): summary.txt, env.txt, steps.log,
# gpu_merkle.json, ecdsa.json.
#
# SENTRY_GPU_CHECK_DRY=1: install the wheels and record the environment as above, but only list
# the other steps (status "dry"); tests/package/test_gpu_check.py runs it so on a machine without a GPU.
set -uo pipefail

OUT=${OUT:?set OUT to the folder for the logs and results}
WHEELS=${SENTRY_GPU_CHECK_WHEELS:-.whl}
SITE=${SENTRY_GPU_CHECK_SITE:-/tmp/site}
BUDGET=${SENTRY_GPU_CHECK_BUDGET:-470}
DRY=${SENTRY_GPU_CHECK_DRY:-}
PYTEST=(python3 -m pytest -q -rs -p no:cacheprovider --basetemp=/tmp/gpu-check-pytest)

case $SITE in
  /tmp/*) ;;
  *) echo "gpu-check: SENTRY_GPU_CHECK_SITE must be under /tmp (got $SITE): it installs nothing elsewhere" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 SENTRY_REQUIRE_GPU=1 PIP_DISABLE_PIP_VERSION_CHECK=1
log=$OUT/steps.log rows=() failed=0
: >"$log"

# step NAME LIMIT_S COMMAND...: run COMMAND under `timeout`, its output appended to steps.log
# (env.txt for the environment), and add a row to the summary.
step() {
  local name=$1 limit=$2 start=$SECONDS rc status dest=$log cmd
  shift 2
  cmd=$(printf '%q ' "$@")
  [ "$name" = env ] && dest=$OUT/env.txt
  local left=$((BUDGET - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  printf '\n===== %s (timeout %ss): %s\n' "$name" "$limit" "$cmd" | tee -a "$dest"
  if [ -n "$DRY" ] && [ "$name" != wheels ] && [ "$name" != env ]; then
    status=dry
  elif [ "$limit" -lt 10 ]; then
    status=no-time failed=$((failed + 1))
  else
    timeout -k 10 "$limit" "$@" >>"$dest" 2>&1
    rc=$?
    case $rc in
      0) status=ok ;;
      124 | 137) status=TIMEOUT failed=$((failed + 1)) ;;
      *) status="FAIL($rc)" failed=$((failed + 1)) ;;
    esac
  fi
  echo "----- $name: $status in $((SECONDS - start)) s" | tee -a "$dest"
  rows+=("$(printf '%-13s %-9s %5s %5s  %s' "$name" "$status" "$((SECONDS - start))" "$limit" "$cmd")")
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
compgen -G "$WHEELS/*.whl" >/dev/null ||
  echo "no wheels in $WHEELS: run scripts/gpu-wheels.sh on the development machine and carry .whl" | tee -a "$log"
step wheels 30 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$WHEELS"/*.whl
step env 40 python3 scripts/gpu_env.py
# What the emulator cannot run, first.
step ecdsa-ptx 60 "${PYTEST[@]}" -m "gpu and not slow" tests/gpu/test_ecdsa_gpu.py
step merkle-nvrtc 75 "${PYTEST[@]}" tests/gpu/test_cuda.py -k "not files_on_cuda and not cli_on_cuda and not current_stream"
step streams 60 "${PYTEST[@]}" tests/gpu/test_cuda.py -k "files_on_cuda or cli_on_cuda or current_stream"
step kvikio 30 "${PYTEST[@]}" -m gpu tests/gpu/test_io_kvikio.py
# The other gpu tests. Not run: tests/unit/data/test_loaders.py (DALI's GPU loader: DALI's wheels, ~590 MB,
# are not carried) and the million-signature batch of tests/gpu/test_ecdsa_gpu.py (slow).
step gpu-rest 40 "${PYTEST[@]}" -m "gpu and not slow" tests/unit/crypto/test_crypto.py tests/unit/signing/test_provenance.py
step bench-merkle 90 python3 bench/gpu_merkle.py --quick --out "$OUT/gpu_merkle.json"
step bench-ecdsa 45 python3 bench/ecdsa.py --quick --out "$OUT/ecdsa.json"

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
{
  echo "Sentry GPU check, started $started, finished $(date -u +%Y-%m-%dT%H:%M:%SZ)${DRY:+ (dry run: only wheels and env ran)}"
  echo "GPU: ${gpu:-none (nvidia-smi gave no GPU name)}"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "not run: tests/unit/data/test_loaders.py gpu tests (DALI wheels not carried), tests/gpu/test_ecdsa_gpu.py slow batch"
  printf '%-13s %-9s %5s %5s  %s\n' step status s limit command
  printf '%s\n' "${rows[@]}"
  if [ "$failed" -eq 0 ]; then echo "result: PASS"; else echo "result: FAIL ($failed of ${#rows[@]} steps)"; fi
} >"$OUT/summary.txt"
cat "$OUT/summary.txt"
[ "$failed" -eq 0 ]
