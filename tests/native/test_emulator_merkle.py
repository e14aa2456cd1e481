"""The real Merkle kernels (kernels/merkle.cu), every block and thread, on the CPU launch emulator,
driven by the real launch code of sentry/hashing/cuda.py through the fake CuPy (tests/cuda_emu):
roots and chunk roots against the CPU engine."""
from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest
import torch
from cuda_emu import fake_cupy, fake_torch
from gpu_inputs import BLOCK, device_copy, ranges_of_every_size

from sentry import hashing
from sentry.hashing import cpu, cuda, gpu_plan
from sentry.hashing.params import HashParams

LEAF = 4096
rng = np.random.default_rng(12)


def gpu_digests(cupy, items: list, params=HashParams(), window_leaves=cuda.WINDOW_LEAVES, offset=0) -> list:
    """``cuda._digest`` (plan, windows, tables, launches, assembly) over device copies of ``items``."""
    arrays = [device_copy(cupy, d, offset) for d in items]
    return cuda._digest(cuda._Gpu(0), [len(d) for d in items], lambda i: (arrays[i], arrays[i].data.ptr),
                        params, window_leaves)


def cpu_digests(items: list, params=HashParams()) -> list:
    return [cpu.digest_bytes(d, params) for d in items]


def random_items(sizes) -> list:
    return [rng.integers(0, 256, n, np.uint8).tobytes() for n in sizes]


BOUNDARY_SIZES = sorted({1, 2, 55, 56, 63, 64, 65, 4095, 4096, 4097}
                        | {k * LEAF + d for k in (2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33) for d in (-5, -1, 0, 1)
                           if k * LEAF + d <= 33 * LEAF - 5})


@pytest.mark.parametrize("offset", range(8))
def test_sizes_around_leaf_boundaries_at_every_alignment(emu_cupy, offset):
    items = random_items(BOUNDARY_SIZES)
    assert gpu_digests(emu_cupy, items, offset=offset) == cpu_digests(items)


def test_one_item_per_call_through_digest_device_buffer(emu_cupy):
    for data in random_items((1, 4097, 17 * LEAF + 3, 33 * LEAF - 5)):
        assert cuda.digest_device_buffer(device_copy(emu_cupy, data, 3)) == cpu.digest_bytes(data)


def test_every_leaf_count_from_1_to_300(emu_cupy):
    params = HashParams(leaf_size=64)
    items = random_items([n * 64 - (n % 3) * 7 for n in range(1, 301)])
    assert gpu_digests(emu_cupy, items, params) == cpu_digests(items, params)
    for data in items[::23]:  # and alone, where a tree is the whole launch
        assert cuda.digest_device_buffer(device_copy(emu_cupy, data), params) == cpu.digest_bytes(data, params)


@pytest.mark.parametrize("blocks_per_sm, sms", [(1, 1), (2, 1), (3, 1), (1, 7), (16, 1), (16, 132)],
                         ids=lambda v: str(v))
def test_grid_caps(emu_cupy, blocks_per_sm, sms):
    emu_cupy.emu.sms, emu_cupy.emu.blocks_per_sm = sms, blocks_per_sm  # the grid cap: one wave
    params = HashParams(leaf_size=64)
    items = random_items([3000 * 64 - 1, 100, 64 * 513])
    assert gpu_digests(emu_cupy, items, params) == cpu_digests(items, params)
    cap = blocks_per_sm * sms
    grids = [grid[0] for _, grid, _ in emu_cupy.emu.launches]
    slots = gpu_plan.slots([3000, 2, 513])[1]  # the leaf launch: 3515 leaves in 3585 aligned slots
    assert max(grids) == min(cap, -(-slots // cuda.THREADS))


def test_a_batch_of_400_items_with_empty_ones(emu_cupy):
    sizes = [int(n) if i % 9 else 0 for i, n in enumerate(rng.integers(0, 3 * LEAF, 400))]
    items = random_items(sizes)
    assert gpu_digests(emu_cupy, items, offset=1) == cpu_digests(items)
    assert gpu_digests(emu_cupy, [b"", b"", b""]) == cpu_digests([b"", b"", b""])


def test_a_model_of_400_tensors_with_empty_ones(emu_cupy, monkeypatch):
    """digest_tensors over 400 tensors of one device, as a model's: one run of the kernels."""
    fake_torch.install(monkeypatch, emu_cupy)
    dtypes = (torch.float32, torch.bfloat16, torch.int8, torch.float64)
    host = [torch.from_numpy(rng.integers(0, 256, int(n), np.uint8)).view(dtypes[i % 4])[i % 3 :] if i % 11 else
            torch.empty(0, dtype=dtypes[i % 4]) for i, n in enumerate(rng.integers(8, 2 * LEAF, 400) // 8 * 8)]
    got = cuda.digest_tensors([fake_torch.to_cuda(emu_cupy, t) for t in host])
    assert got == [cpu.digest_bytes(fake_torch.host_bytes(t)) for t in host]
    assert [name for name, _, _ in emu_cupy.emu.launches].count("merkle_leaves") == 1


WINDOW_ITEMS = [1, 4096, 4097, 9 * LEAF + 1, 40 * LEAF - 3, 0, 2 * LEAF, 100 * LEAF + 5]


@pytest.mark.parametrize("window_leaves", [1 << k for k in range(22)])
def test_windows_from_one_leaf_to_2_21_and_items_larger_than_a_window(emu_cupy, window_leaves):
    items = random_items(WINDOW_ITEMS)
    assert gpu_digests(emu_cupy, items, window_leaves=window_leaves) == cpu_digests(items)


@pytest.mark.parametrize("params", [HashParams(64, 1), HashParams(128, 3), HashParams(1024, 4096),
                                    HashParams(65536, 16), HashParams(4096, 1), HashParams(4096, 5)],
                         ids=lambda p: f"{p.leaf_size}-{p.max_chunks}")
def test_other_hash_params(emu_cupy, params):
    items = random_items([1, params.leaf_size - 1, params.leaf_size * 37 + 5, 300_000, 0])
    got = gpu_digests(emu_cupy, items, params, window_leaves=64, offset=2)
    assert got == cpu_digests(items, params)
    assert all(len(d.chunks) <= params.max_chunks for d in got)


def test_digest_tensors_with_strided_and_unaligned_views(emu_cupy, monkeypatch):
    fake_torch.install(monkeypatch, emu_cupy)
    base = torch.from_numpy(rng.integers(-(2**15), 2**15, 3 * 50_000, np.int16)).view(torch.bfloat16)
    tensors = [base[1:20_001],  # starts 2 bytes into its storage
               base.reshape(3, -1)[:, ::3],  # strided: copied to a contiguous tensor first
               base.reshape(-1, 3).t(),
               base[:0],
               torch.arange(5 * LEAF, dtype=torch.float64)[7:]]
    got = cuda.digest_tensors([fake_torch.to_cuda(emu_cupy, t) for t in tensors])
    assert got == [cpu.digest_bytes(fake_torch.host_bytes(t)) for t in tensors]


def test_digest_device_buffer_of_a_strided_array(emu_cupy):
    data = rng.integers(0, 256, 3 * 9000, np.uint8)
    strided = emu_cupy.asarray(data.reshape(3, 9000))[:, 5::2]
    assert not strided.flags.c_contiguous
    assert cuda.digest_device_buffer(strided) == cpu.digest_bytes(data.reshape(3, 9000)[:, 5::2].tobytes())


def test_files_through_pinned_buffers_and_the_real_kernels(emu_cupy, monkeypatch, tmp_path):
    monkeypatch.setattr(cuda, "FILE_BLOCK_BYTES", BLOCK)
    assert cuda.file_reader() == "pinned"
    ranges = ranges_of_every_size(tmp_path)
    assert cuda.digest_ranges(ranges, HashParams()) == cpu.digest_ranges(ranges, HashParams())
    params = HashParams(leaf_size=64, max_chunks=7)
    assert cuda.digest_ranges(ranges, params) == cpu.digest_ranges(ranges, params)


def test_an_item_past_4_gib(emu_cupy):
    """Byte offsets past 2^32 inside one segment (a window holds 8 GiB of 4 KiB leaves): the item is
    a sparse mapping, zero pages but for random first and last MiBs, so a leaf read at its offset
    mod 2^32 hashes other bytes. Blocks run on 2 OS threads (about 10 s on 2 cores)."""
    emu_cupy.emu.workers = 2
    size = (4 << 30) + 5 * LEAF + 3
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Python 3.12 names Linux's flag
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | noreserve)
    buf[: 1 << 20], buf[-(1 << 20) :] = rng.bytes(1 << 20), rng.bytes(1 << 20)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert cuda._digest(cuda._Gpu(0), [size], lambda i: (buf, address), HashParams()) == [cpu.digest_bytes(buf)]


def test_the_engine_front_picks_the_emulated_gpu_for_gpu_tensors(emu_cupy, monkeypatch, tmp_path):
    """sentry.hashing's 'auto' finds CuPy and a device: GPU tensors go to the kernels, host tensors
    to the CPU backend, files to the CUDA file path."""
    fake_torch.install(monkeypatch, emu_cupy)
    host = [torch.arange(n, dtype=torch.int32) for n in (3, 5000, 0)]
    named = [("gpu0", fake_torch.to_cuda(emu_cupy, host[0])), ("cpu", host[1]), ("gpu2", fake_torch.to_cuda(emu_cupy, host[2]))]
    assert hashing.resolve_device("auto") == "cuda"
    assert hashing.digest_tensors(named, HashParams()) == [cpu.digest_bytes(fake_torch.host_bytes(t)) for t in host]
    assert [name for name, _, _ in emu_cupy.emu.launches].count("merkle_leaves") == 1  # both GPU tensors, one run
    f = tmp_path / "f.bin"
    f.write_bytes(rng.bytes(3 * LEAF + 1))
    assert hashing.digest_ranges([cpu.FileRange(f)], HashParams()) == cpu.digest_ranges([cpu.FileRange(f)], HashParams())
    assert [name for name, _, _ in emu_cupy.emu.launches].count("merkle_leaves") == 2


def test_a_planted_lone_node_error_changes_the_roots(emu_cupy, monkeypatch):
    """The level kernel carries a segment's lone last node up unchanged; hashing it with the slot
    after it instead must give roots that differ from the CPU engine's."""
    from sentry import _gpu

    text = _gpu.source("merkle.cu")
    carry = "if (2 * j + 1 < m) sha256_node("
    assert carry in text, "merkle.cu's lone-node carry changed: plant the bug in the new code"
    monkeypatch.setattr(_gpu, "source", lambda name: text.replace(carry, "if (2 * j + 1 <= m) sha256_node("))
    items = random_items([3 * LEAF, 4 * LEAF, 5 * LEAF + 1])
    got, want = gpu_digests(emu_cupy, items), cpu_digests(items)
    assert got[1] == want[1]  # a power of two: no lone node anywhere
    assert got[0].root != want[0].root and got[2].root != want[2].root


def test_a_u32_where_the_kernel_takes_a_u64_is_refused(emu_cupy):
    kernel, _ = cuda._kernels.get(0)["merkle_roots"]
    nodes, roots = emu_cupy.zeros(64, emu_cupy.uint8), emu_cupy.zeros(32, emu_cupy.uint8)
    with pytest.raises(fake_cupy.EmulatorError, match="merkle_roots refused: argument 2 is 4 bytes, the parameter 8"):
        kernel((1,), (32,), (None, np.uint32(0), np.uint32(nodes.data.ptr & 0xFFFFFFFF), roots))


@pytest.mark.parametrize("order, workers", [(0, 1), (99, 1), (12345, 3)], ids=["in-order", "shuffled", "3-os-threads"])
def test_block_and_thread_order_do_not_matter(emu_cupy, order, workers):
    emu_cupy.emu.sms, emu_cupy.emu.blocks_per_sm, emu_cupy.emu.order, emu_cupy.emu.workers = 5, 1, order, workers
    params = HashParams(leaf_size=64)
    items = random_items([5000 * 64 - 3, 1, 64 * 700, 0, 333])
    assert gpu_digests(emu_cupy, items, params, offset=1) == cpu_digests(items, params)
