"""The CUDA kernels' per-thread code, built for the host with g++, against hashlib and the CPU backend.

tests/host/kernels_host.cpp includes kernels/merkle.cuh (and so kernels/sha256.cuh) unchanged and
runs each launch's threads in a loop. The CUDA backend's own driver (``cuda._digest``: work plan,
windows, tables, launches, assembly) runs over it through a host stand-in for the GPU, so only
the CuPy calls themselves are left for the GPU tests (tests/test_cuda.py).
"""
from __future__ import annotations

import ctypes
import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sentry.hashing import cpu, cuda, gpu_plan, merkle
from sentry.hashing.params import HashParams

from test_merkle import VECTORS, expected, vec_id, vector_data

ROOT = Path(__file__).resolve().parents[1]
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
    lib.host_leaf_hash.argtypes = [p, u64, p]
    lib.host_node_hash.argtypes = [p, p, p]
    lib.host_leaves.argtypes = [p, u32, u32, u64, p, p]
    lib.host_level.argtypes = [p, u32, p, u32, u64, p, p]
    lib.host_roots.argtypes = [p, u32, p, p]
    lib.host_level_threads.argtypes = [u64, u32]
    lib.host_level_threads.restype = u64
    return lib


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def host_leaf(lib, data: np.ndarray) -> bytes:
    out = np.zeros(H, np.uint8)
    lib.host_leaf_hash(ptr(data), len(data), ptr(out))
    return out.tobytes()


class HostGpu:
    """``cuda._Gpu`` over host memory and the g++ build of the kernels: the CUDA backend's own
    driver (``cuda._digest``: plan, windows, tables, launches, assembly) runs here unchanged."""

    def __init__(self, lib):
        self.lib = lib

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def empty(self, nbytes):
        a = np.full(max(nbytes, H), 0xA5, np.uint8)  # poisoned: results must overwrite it
        return a, ptr(a)

    def upload(self, array):
        owner, p = self.empty(array.nbytes)
        ctypes.memmove(p, ptr(np.ascontiguousarray(array)), array.nbytes)
        return owner, p

    def download(self, p, nbytes):
        return ctypes.string_at(p, nbytes)

    def launch(self, name, threads, *args):
        if threads:
            getattr(self.lib, name.replace("merkle_", "host_"))(*map(int, args))


def host_digests(lib, buffers, params=HashParams(), window_leaves=1 << 21):
    buffers = [np.frombuffer(b, np.uint8) if isinstance(b, bytes) else b for b in buffers]
    return cuda._digest(HostGpu(lib), [len(b) for b in buffers], lambda i: (buffers[i], ptr(buffers[i])),
                        params, window_leaves)


def as_tuple(d):
    return d.size, d.root, d.chunks


# -- SHA-256 -----------------------------------------------------------------------------------------
def test_leaf_hash_matches_hashlib_at_every_length_and_alignment(lib):
    rng = random.Random(1)
    raw = np.frombuffer(rng.randbytes(9000), np.uint8)
    lengths = list(range(0, 300)) + [4095, 4096, 4097, 8191, 8192, 8999 - 16]
    for n in lengths:
        for misalign in (0, 1, 2, 3, 4, 8, 15):  # 16-byte, 4-byte and byte loads
            data = raw[misalign : misalign + n]
            assert host_leaf(lib, data) == hashlib.sha256(b"\x00" + data.tobytes()).digest(), (n, misalign)


def test_node_hash_matches_reference(lib):
    rng = random.Random(2)
    for _ in range(50):
        left, right = rng.randbytes(H), rng.randbytes(H)
        out = np.zeros(H, np.uint8)
        lib.host_node_hash(left, right, ptr(out))
        assert out.tobytes() == merkle.node_hash(left, right)


# -- the tree -------------------------------------------------------------------------------------------
def test_level_thread_counts(lib):
    for leaves in range(1, 70):
        for level in range(8):
            m = -(-leaves // (1 << level))
            assert lib.host_level_threads(leaves, level) == (-(-m // 2) if m >= 2 else 0)
    firsts, counts = gpu_plan.levels(np.array(range(1, 70), np.int64))
    for level, n in enumerate(counts):
        assert n == sum(lib.host_level_threads(k, level) for k in range(1, 70))


def test_split_rule_for_every_leaf_count_up_to_300(lib):
    """The level-by-level reduction is RFC 9162's MTH for n = 1..300 leaves (64-byte leaves), with
    every chunk level (max_chunks 1, 3, 16) and all 300 items in one window."""
    params_list = [HashParams(leaf_size=64, max_chunks=m) for m in (1, 3, 16)]
    rng = random.Random(3)
    buffers = [rng.randbytes(64 * n - rng.randrange(64)) for n in range(1, 301)]
    for params in params_list:
        got = host_digests(lib, buffers, params)
        for data, d in zip(buffers, got):
            leaves = [merkle.leaf_hash(data[i : i + 64]) for i in range(0, len(data), 64)]
            assert d.root == merkle.root_of_hashes(leaves), len(leaves)
            assert as_tuple(d) == as_tuple(cpu.digest_bytes(data, params)), len(leaves)


@pytest.mark.parametrize("vec", VECTORS, ids=vec_id)
def test_vectors(lib, vec):
    params = HashParams(vec["leaf_size"], vec["max_chunks"])
    assert as_tuple(host_digests(lib, [vector_data(vec)], params)[0]) == expected(vec)


def test_all_vectors_in_one_batch_and_tiny_windows(lib):
    """Every 4 KiB-leaf vector in one call, then again with windows of 1, 2 and 4 leaves, so items
    span several segments and windows and fold on the host."""
    vecs = [v for v in VECTORS if v["leaf_size"] == 4096 and v["max_chunks"] == 16]
    data = [vector_data(v) for v in vecs]
    for window in (1 << 21, 4, 2, 1):
        got = host_digests(lib, data, window_leaves=window)
        assert [as_tuple(d) for d in got] == [expected(v) for v in vecs], window


def sizes_around_boundaries(leaf_size: int) -> list:
    sizes = {0, 1, 2, 63, 64, 65}
    for k in range(0, 14):
        for base in (1 << k, leaf_size << k):
            sizes.update((base - 1, base, base + 1))
    return sorted(s for s in sizes if s >= 0)


@pytest.mark.parametrize("leaf_size", [64, 4096])
def test_property_sizes_around_powers_of_two_and_leaves(lib, leaf_size):
    params = HashParams(leaf_size=leaf_size)
    rng = random.Random(leaf_size)
    buffers = [rng.randbytes(n) for n in sizes_around_boundaries(leaf_size)]
    got = host_digests(lib, buffers, params)
    assert [as_tuple(d) for d in got] == [as_tuple(cpu.digest_bytes(b, params)) for b in buffers]


def test_random_batches_with_unaligned_views(lib):
    """Many items per call, starting at odd addresses (bf16-like views), in shuffled order."""
    rng = random.Random(5)
    arena = np.frombuffer(rng.randbytes(3 << 20), np.uint8)
    for _ in range(3):
        items = []
        for _ in range(rng.randrange(1, 200)):
            n = rng.choice([0, 1, 2, rng.randrange(1, 9000), rng.randrange(1, 300_000)])
            start = rng.randrange(0, len(arena) - n)
            items.append(arena[start : start + n])
        params = HashParams(max_chunks=rng.choice([1, 4, 16, 4096]))
        got = host_digests(lib, items, params, window_leaves=rng.choice([64, 1 << 21]))
        assert [as_tuple(d) for d in got] == [as_tuple(cpu.digest_bytes(b.tobytes(), params)) for b in items]


@pytest.mark.slow
def test_tens_of_megabytes(lib):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 256, (24 << 20) + 12345, np.uint8)
    params = HashParams()
    want = as_tuple(cpu.digest_bytes(data, params))
    assert as_tuple(host_digests(lib, [data], params)[0]) == want
    assert as_tuple(host_digests(lib, [data], params, window_leaves=1024)[0]) == want
