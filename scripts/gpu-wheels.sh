#!/usr/bin/env bash
# gpu-wheels: on the development machine, fetch the wheels scripts/gpu-check.sh installs on the GPU
# machine (which reaches no registry), into DEST (default .whl, git-ignored), for `run`'s carry.
#
#   scripts/gpu-wheels.sh [DEST]
#
# Only what the GPU tests and benchmarks import and the GPU image lacks (it has torch, cupy-cuda13x
# 14.2, numpy, safetensors, pytest, scipy, scikit-learn, pillow, six, packaging, cuda-pathfinder,
# cuda-toolkit and nvidia-cufile): kvikio-cu13 and libkvikio-cu13 of one release (kvikio pins
# libkvikio 26.10.*, libkvikio pins rapids-logger 0.3.*; kvikio wants cupy >= 14.0.1, != 14.1.0),
# cryptography with cffi and pycparser, ecdsa, pymerkle with cachetools (tests/unit/hashing/test_merkle.py,
# imported by tests/gpu/test_cuda.py), and cryptography-vectors cut to the NIST ECDSA files that
# tests/ecdsa_vectors.py reads (the whole wheel is 56 MB). Not sigstore (no GPU test needs it), not
# DALI (~590 MB with its codecs: its GPU loader tests are left out of the check).
# Measured 2026-12-04: 12 MiB of wheels (du -sh .whl), so the repository and the wheels travel in
# one call (64 MiB at most).
set -euo pipefail
dest=${1:-.whl}
root=$(cd "$(dirname "$0")/.." && pwd)
fetch=${DEVICE_WHEELS:-$root/../shared/tools/device-wheels}
pins=(kvikio-cu13==26.10.0 libkvikio-cu13==26.10.0 rapids-logger==0.3.0
      cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 ecdsa==0.19.2
      pymerkle==7.0.0 cachetools==7.2.1 cryptography-vectors==50.0.2)
mkdir -p "$dest"
rm -f "$dest"/*.whl  # one version of each: two stop pip's whole install
"$fetch" "$dest" "${pins[@]}"
python3 "$root/scripts/trim_wheel.py" "$dest"/cryptography_vectors-*.whl \
  cryptography_vectors/__init__.py cryptography_vectors/__about__.py \
  cryptography_vectors/asymmetric/ECDSA/FIPS_186-3/
ls -l "$dest"
du -sh "$dest"
