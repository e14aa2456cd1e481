"""Helpers shared by the tests: keys, small models, byte flips, running the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from sentry.signing import write_keypair


def make_keys(tmp: Path, name: str = "key"):
    private, public = tmp / f"{name}.pem", tmp / f"{name}.pub.pem"
    write_keypair(private, public)
    return private, public


def other_public_key(tmp: Path) -> Path:
    return make_keys(tmp, "other")[1]


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def save_tensors(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def tensor_offset(path: Path, name: str) -> tuple[int, int]:
    """Absolute (offset, size) of a tensor's bytes in a safetensors file, read independently."""
    import json
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + begin, end - begin


def verification_fails(verify, *args, **kw):
    """Call ``verify`` expecting a VerificationError with a failing report; return the report."""
    import pytest

    from sentry import VerificationError

    with pytest.raises(VerificationError) as exc:
        verify(*args, **kw)
    assert exc.value.report is not None and not exc.value.report.ok
    return exc.value.report


def run_cli(*args, cwd=None, env=None):
    """Run `python -m sentry.cli ...` in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sentry.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )
