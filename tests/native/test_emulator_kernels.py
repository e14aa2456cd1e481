"""The Merkle kernels (kernels/merkle.cu) on the CPU launch emulator, launched by the CUDA backend's
own driver (sentry/hashing/cuda.py), against hashlib, the shared vectors and the CPU engine: what
the redesigned leaf kernel (merkle_leaves.cuh: warp-cooperative, staged, any alignment, levels 1-8
fused) adds to tests/native/test_emulator_merkle.py. Every start alignment mod 16, lengths around
message-block and leaf boundaries, leaf counts 1-300 with chunk levels below and above the fused
ones, views into one buffer; the staging's and the fusion's hazards, planted back, are caught."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from gpu_inputs import device_copy
from merkle_vectors import VECTORS, expected, vec_id, vector_data

from sentry.hashing import cpu, cuda
from sentry.hashing.params import HashParams


def device_items(cupy, datas, offsets):
    """Each item in its own allocation at the given byte offset, ending at the allocation's end
    (so the rounded-out 16-byte words of the kernel's reads meet the allocation's last granule)."""
    return [device_copy(cupy, data, off) for data, off in zip(datas, offsets)]


def gpu_digests(cupy, items, params, window_leaves=cuda.WINDOW_LEAVES):
    gpu = cuda._Gpu(0)
    return cuda._digest(gpu, [a.nbytes for a in items], lambda i: (items[i], items[i].data.ptr), params, window_leaves)


def as_tuple(d):
    return d.size, d.root, d.chunks


def check(cupy, datas, offsets, params, **kw):
    got = gpu_digests(cupy, device_items(cupy, datas, offsets), params, **kw)
    assert [as_tuple(d) for d in got] == [as_tuple(cpu.digest_bytes(b, params)) for b in datas]


def test_leaf_hash_matches_hashlib_at_every_length_and_alignment(emu_cupy):
    """One-leaf items: the root is SHA-256(0x00 || bytes), by hashlib."""
    rng = random.Random(0)
    datas = [rng.randbytes(n) for n in list(range(1, 300)) + [4095, 4096, 4097, 8191, 8192, 9000]]
    for off in (0, 1, 2, 3, 4, 8, 15):
        items = device_items(emu_cupy, datas, [off] * len(datas))
        got = gpu_digests(emu_cupy, items, HashParams(leaf_size=16384))
        assert [d.root for d in got] == [hashlib.sha256(b"\x00" + b).digest() for b in datas], off


def test_every_alignment_and_length_around_block_and_leaf_ends(emu_cupy):
    """Message-block edges (54/55 bytes: the length's own block; 63/64/65), leaf edges (4095-4097),
    at start offsets 0..15, all in one launch per offset."""
    rng = random.Random(1)
    lengths = [1, 2, 3, 15, 16, 17, 53, 54, 55, 56, 62, 63, 64, 65, 118, 119, 127, 128, 129, 4095, 4096, 4097,
               2 * 4096 + 54, 3 * 4096 - 1]
    datas = [rng.randbytes(n) for n in lengths]
    for off in range(16):
        check(emu_cupy, datas, [off] * len(datas), HashParams())


def test_leaf_counts_1_to_300_chunks_and_mixed_alignments(emu_cupy):
    rng = random.Random(2)
    datas = [rng.randbytes(64 * n - rng.randrange(64)) for n in range(1, 301)]
    offsets = [rng.randrange(16) for _ in datas]
    for max_chunks in (1, 3, 16):
        check(emu_cupy, datas, offsets, HashParams(leaf_size=64, max_chunks=max_chunks))


def test_many_items_with_empty_ones_one_block_grid_and_tiny_windows(emu_cupy):
    """One resident block (the grid-stride loop does every warp) and windows down to one leaf."""
    emu_cupy.emu.sms, emu_cupy.emu.blocks_per_sm = 1, 1
    rng = random.Random(3)
    datas = [rng.randbytes(rng.choice([0, 0, 1, rng.randrange(1, 700), rng.randrange(1, 3000)])) for _ in range(120)]
    offsets = [rng.randrange(16) for _ in datas]
    params = HashParams(leaf_size=64, max_chunks=4)
    for window in (1 << 21, 64, 1):
        check(emu_cupy, datas, offsets, params, window_leaves=window)
    assert {grid for name, grid, _ in emu_cupy.emu.launches if name == "merkle_leaves"} == {(1, 1, 1)}


@pytest.mark.parametrize("planted, why", [
    ("__pipeline_wait_prior(LEAF_STAGES - 1)", "__pipeline_wait_prior(LEAF_STAGES)"),  # reads before the copy lands
    ("(s + n + 15) >> 4", "(s + n + 3) >> 4"),  # drops the fifth word of unaligned blocks
    ("__syncthreads(); /* level l - 1 is complete */", ""),  # a fused level reads nodes not made yet
])
def test_planted_staging_and_fusion_bugs_are_caught(emu_cupy, monkeypatch, planted, why):
    from sentry import _gpu

    text = _gpu.source("merkle.cu")
    assert planted in text
    monkeypatch.setattr(_gpu, "source", lambda name: text.replace(planted, why))
    rng = random.Random(5)
    datas = [rng.randbytes(n) for n in (100, 4096, 5000, 64 * 700)]
    with pytest.raises(AssertionError):
        check(emu_cupy, datas, [3, 0, 9, 0], HashParams(leaf_size=64))


def test_fused_levels_need_the_aligned_layout(emu_cupy, monkeypatch):
    """Packed back to back (as before the fusion), segments' subtrees cross the leaf kernel's blocks
    of 256 slots and the fused levels pair the wrong nodes: the layout is what makes them right."""
    from sentry.hashing import gpu_plan

    def packed(counts, start=0):
        firsts = (start + np.concatenate([[0], np.cumsum(counts[:-1])])).tolist() if len(counts) else []
        return firsts, start + sum(counts)

    rng = random.Random(9)
    datas = [rng.randbytes(64 * n) for n in (3, 300, 5, 260)]
    check(emu_cupy, datas, [0] * 4, HashParams(leaf_size=64))
    monkeypatch.setattr(gpu_plan, "slots", packed)
    with pytest.raises(AssertionError):
        check(emu_cupy, datas, [0] * 4, HashParams(leaf_size=64))


@pytest.mark.parametrize("vec", VECTORS, ids=vec_id)
def test_vectors(emu_cupy, vec):
    params = HashParams(vec["leaf_size"], vec["max_chunks"])
    data = vector_data(vec)
    assert as_tuple(gpu_digests(emu_cupy, device_items(emu_cupy, [data], [0]), params)[0]) == expected(vec)


def test_all_vectors_in_one_batch_and_tiny_windows(emu_cupy):
    """Every 4 KiB-leaf vector in one call, then with windows of 4 and 1 leaves, so items span
    several segments and windows and fold on the host."""
    vecs = [v for v in VECTORS if v["leaf_size"] == 4096 and v["max_chunks"] == 16]
    datas = [vector_data(v) for v in vecs]
    items = device_items(emu_cupy, datas, [0] * len(datas))
    for window in (1 << 21, 4, 1):
        got = gpu_digests(emu_cupy, items, HashParams(), window_leaves=window)
        assert [as_tuple(d) for d in got] == [expected(v) for v in vecs], window


def test_random_batches_of_views_into_one_buffer(emu_cupy):
    """Many overlapping items per call, at any address inside one allocation, shuffled."""
    rng = random.Random(7)
    arena = emu_cupy.empty(3 << 20, emu_cupy.uint8)
    host = np.frombuffer(rng.randbytes(3 << 20), np.uint8)
    arena.set(host)
    for _ in range(3):
        spans = []
        for _ in range(rng.randrange(1, 200)):
            n = rng.choice([0, 1, 2, rng.randrange(1, 9000), rng.randrange(1, 300_000)])
            start = rng.randrange(0, len(host) - n)
            spans.append((start, n))
        items = [arena[a : a + n] for a, n in spans]
        params = HashParams(max_chunks=rng.choice([1, 4, 16, 4096]))
        got = gpu_digests(emu_cupy, items, params, window_leaves=rng.choice([64, 1 << 21]))
        assert [as_tuple(d) for d in got] == [as_tuple(cpu.digest_bytes(host[a : a + n].tobytes(), params))
                                              for a, n in spans]


@pytest.mark.slow
def test_tens_of_megabytes(emu_cupy):
    data = np.random.default_rng(8).integers(0, 256, (24 << 20) + 12345, np.uint8).tobytes()
    want = as_tuple(cpu.digest_bytes(data, HashParams()))
    items = device_items(emu_cupy, [data], [7])
    assert as_tuple(gpu_digests(emu_cupy, items, HashParams())[0]) == want
    assert as_tuple(gpu_digests(emu_cupy, items, HashParams(), window_leaves=1024)[0]) == want
