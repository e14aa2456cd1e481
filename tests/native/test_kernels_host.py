"""The CUDA kernels' per-thread code, built for the host with g++, against the CPU backend.

tests/host/kernels_host.cpp includes kernels/merkle.cuh (and so kernels/sha256.cuh) unchanged: node
hashes and the level plan's thread counts. The kernels themselves, as launched by the CUDA
backend's own driver, run on the CPU launch emulator (tests/native/test_emulator_kernels.py).
"""
from __future__ import annotations

import ctypes
import random
import shutil
import subprocess

import numpy as np
import pytest
from support import REPO

from sentry.hashing import gpu_plan, merkle

ROOT = REPO
H = 32


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    out = tmp_path_factory.mktemp("kernels") / "kernels_host.so"
    subprocess.run(
        [gxx, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing", "-shared", "-fPIC",
         f"-I{ROOT / 'kernels'}", "-o", str(out), str(ROOT / "tests/host/kernels_host.cpp")],
        check=True, capture_output=True,
    )
    lib = ctypes.CDLL(str(out))
    p, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
    lib.host_node_hash.argtypes = [p, p, p]
    lib.host_level_threads.argtypes = [u64, u32]
    lib.host_level_threads.restype = u64
    return lib


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def test_node_hash_matches_reference(lib):
    rng = random.Random(2)
    for _ in range(50):
        left, right = rng.randbytes(H), rng.randbytes(H)
        out = np.zeros(H, np.uint8)
        lib.host_node_hash(left, right, ptr(out))
        assert out.tobytes() == merkle.node_hash(left, right)


def test_level_thread_counts(lib):
    for leaves in range(1, 70):
        for level in range(8):
            m = -(-leaves // (1 << level))
            assert lib.host_level_threads(leaves, level) == (-(-m // 2) if m >= 2 else 0)
    firsts, counts = gpu_plan.levels(np.array(range(1, 70), np.int64), start=0)
    assert len(counts) == 7  # levels 0..6 make levels 1..7 of 69 leaves
    for level, n in enumerate(counts):
        assert n == sum(lib.host_level_threads(k, level) for k in range(1, 70))
