"""Signing is constant-time in the private key and the digest: valgrind's memcheck, told that
both are undefined, reports any branch or memory index that depends on them (ctgrind). This is
the kernels' code built for the CPU; the control build, with one branch on the key added, must
be caught."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import ecdsa_vectors
import pytest
from p256_host import KERNELS
from support import TESTS

SOURCE = TESTS / "native" / "p256_ct.cpp"
VALGRIND = shutil.which("valgrind")
CXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(
    VALGRIND is None or CXX is None or not Path("/usr/include/valgrind/memcheck.h").exists(),
    reason="needs valgrind, its headers (valgrind/memcheck.h) and g++",
)


def _build(tmp_path: Path, *flags: str) -> Path:
    exe = tmp_path / ("p256_ct" + "".join(flags).replace("-D", "_"))
    subprocess.run([CXX, "-O2", "-g", "-std=c++17", *flags, f"-I{KERNELS}", "-o", str(exe), str(SOURCE)],
                   check=True)
    return exe


def _memcheck(exe: Path, priv: bytes, digest: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([VALGRIND, "-q", "--error-exitcode=99", str(exe), priv.hex(), digest.hex()],
                          capture_output=True, text=True, timeout=120)


def test_signing_has_no_secret_dependent_branch_or_index(tmp_path):
    exe = _build(tmp_path)
    for v in ecdsa_vectors.rfc6979():
        run = _memcheck(exe, v.d.to_bytes(32, "big"), v.digest)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == v.signature.hex()


def test_the_check_catches_a_secret_dependent_branch(tmp_path):
    exe = _build(tmp_path, "-DP256_CT_LEAK")
    v = ecdsa_vectors.rfc6979()[0]
    run = _memcheck(exe, v.d.to_bytes(32, "big"), v.digest)
    assert run.returncode == 99
    assert "depends on uninitialised value" in run.stderr
