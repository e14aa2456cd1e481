"""The warp-cooperative leaf kernel (kernels/merkle_leaves.cuh) on the CPU launch emulator, through
the real launch code (sentry/hashing/cuda.py), against the CPU engine: every start alignment mod
16, lengths around message-block and leaf boundaries, leaf counts 1-300, empty items, one-block
grids, tiny windows; and the staging's hazards planted back into the source are caught."""
from __future__ import annotations

import random

import numpy as np
import pytest

from sentry.hashing import cpu, cuda
from sentry.hashing.params import HashParams


def device_items(cupy, datas, offsets):
    """Each item in its own allocation at the given byte offset, ending at the allocation's end
    (so the rounded-out 16-byte words of the kernel's reads meet the allocation's last granule)."""
    out = []
    for data, off in zip(datas, offsets):
        buf = cupy.empty(off + len(data), cupy.uint8)
        buf[off:].set(np.frombuffer(data, np.uint8))
        out.append(buf[off:])
    return out


def gpu_digests(cupy, items, params, window_leaves=cuda.WINDOW_LEAVES):
    gpu = cuda._Gpu(0)
    return cuda._digest(gpu, [a.nbytes for a in items], lambda i: (items[i], items[i].data.ptr), params, window_leaves)


def as_tuple(d):
    return d.size, d.root, d.chunks


def check(cupy, datas, offsets, params, **kw):
    got = gpu_digests(cupy, device_items(cupy, datas, offsets), params, **kw)
    assert [as_tuple(d) for d in got] == [as_tuple(cpu.digest_bytes(b, params)) for b in datas]


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


def test_grid_is_one_wave_from_the_occupancy_api(emu_cupy):
    emu_cupy.emu.sms, emu_cupy.emu.blocks_per_sm = 3, 2
    data = random.Random(4).randbytes(64 * 5000)
    check(emu_cupy, [data], [5], HashParams(leaf_size=64))
    grids = {grid[0] for name, grid, block in emu_cupy.emu.launches if name == "merkle_leaves"}
    assert grids == {6}  # 5000 leaves want 20 blocks of 256; 3 SMs x 2 blocks hold 6


@pytest.mark.parametrize("planted, why", [
    ("__pipeline_wait_prior(LEAF_STAGES - 1)", "__pipeline_wait_prior(LEAF_STAGES)"),  # reads before the copy lands
    ("(s + n + 15) >> 4", "(s + n + 3) >> 4"),  # drops the fifth word of unaligned blocks
])
def test_planted_staging_bugs_are_caught(emu_cupy, monkeypatch, planted, why):
    from sentry.hashing import kernel_source

    text = kernel_source.source("merkle.cu")
    assert planted in text
    monkeypatch.setattr(kernel_source, "source", lambda name: text.replace(planted, why))
    rng = random.Random(5)
    datas = [rng.randbytes(n) for n in (100, 4096, 5000)]
    with pytest.raises(AssertionError):
        check(emu_cupy, datas, [3, 0, 9], HashParams())
