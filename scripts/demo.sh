#!/usr/bin/env bash
# Set up .venv, then run Sentry end to end on a small built-in example:
# keygen, sign, verify, tamper with one weight, verify again (which must fail).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sentry=.venv/bin/sentry
run() { echo "\$ sentry $*"; "$sentry" "$@"; }

.venv/bin/python scripts/make_example_model.py "$work/model"
run keygen "$work/signing-key.pem"
run sign "$work/model" --key "$work/signing-key.pem"
run verify "$work/model" --public-key "$work/signing-key.pub.pem"
echo "# flipping one bit of one weight in model.safetensors ..."
.venv/bin/python - "$work/model/model.safetensors" <<'PY'
import sys
path = sys.argv[1]
with open(path, "r+b") as f:
    f.seek(-100, 2)
    b = f.read(1)[0]
    f.seek(-100, 2)
    f.write(bytes([b ^ 1]))
PY
if run verify "$work/model" --public-key "$work/signing-key.pub.pem"; then
    echo "demo FAILED: the tampered model verified" >&2
    exit 1
fi
echo "demo OK: the untouched model verified, the tampered one was refused (exit code 1)"
