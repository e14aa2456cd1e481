#!/usr/bin/env bash
# Create .venv with Sentry and its test dependencies (idempotent; CPU-only, no CUDA downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first and pinned: 2.13.0 is the CPU build on local disk; an unpinned torch (or one pulled
# in by a dependency) would fetch several GB of CUDA packages.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
