"""Backend choice (device auto / cpu / cuda) and the CPU side of the CUDA backend's plumbing."""
from __future__ import annotations

import sys
import types

import pytest
import torch
from support import run_cli

import sentry.hashing as hashing
from sentry import _gpu
from sentry.errors import InvalidInput, SentryError
from sentry.hashing import cpu
from sentry.hashing.params import HashParams


@pytest.fixture
def no_gpu(monkeypatch):
    """CuPy installed (an empty stand-in), no GPU usable."""
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.setattr(_gpu, "unavailable_reason", lambda: "no CUDA GPU is visible")


def test_available_is_a_bool_and_never_raises():
    assert _gpu.available() in (True, False)
    assert (_gpu.unavailable_reason() is None) == _gpu.available()


def test_auto_falls_back_to_cpu_and_cuda_without_gpu_is_one_sentence(no_gpu):
    assert hashing.resolve_device("auto") == "cpu"
    assert hashing.resolve_device("cpu") == "cpu"
    with pytest.raises(SentryError, match=r"^hashing on CUDA needs a usable GPU: no CUDA GPU is visible; pass device='cpu'$"):
        hashing.resolve_device("cuda")


@pytest.mark.parametrize("device", ["tpu", "gpu", "CUDA", ""])
def test_an_unknown_device_is_invalid_input_naming_the_choices(device):
    from sentry.crypto import batch_sign

    for choose in (hashing.resolve_device, lambda d: batch_sign(b"\x01" * 32, [bytes(32)], device=d)):
        with pytest.raises(InvalidInput, match=rf"^unknown device {device!r}: choose one of auto, cpu, cuda$"):
            choose(device)


def test_cli_device_cuda_without_gpu_exits_2(tmp_path):
    if _gpu.available():
        pytest.skip("a GPU is usable here")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 5000)
    r = run_cli("hash", tmp_path / "m", "--device", "cuda")
    assert r.returncode == 2
    # without CuPy: the extra that installs it; with CuPy and no GPU: why, and --device cpu
    assert "hashing on CUDA needs " in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_digest_tensors_batch_equals_one_by_one_with_progress(no_gpu):
    g = torch.Generator().manual_seed(0)
    named = [("a", torch.randn(1000, generator=g)), ("b", torch.randn(64, 33, generator=g).t()),
             ("c", torch.zeros(0)), ("d", torch.randn(3, generator=g).to(torch.bfloat16))]
    seen = []
    got = hashing.digest_tensors(named, HashParams(), progress=seen.append)
    assert got == [hashing.digest_tensor(n, t, HashParams(), device="cpu") for n, t in named]
    assert seen == [d.size for d in got]
    with pytest.raises(SentryError, match="hashing on CUDA needs a usable GPU"):
        hashing.digest_tensors(named, HashParams(), device="cuda")
    with pytest.raises(SentryError, match="unknown device"):
        hashing.digest_tensors(named, HashParams(), device="gpu")


def test_file_driver_with_another_block_hasher_and_block_size(tmp_path):
    """The CUDA backend reuses the CPU file driver with its own block hasher and block size."""
    data = bytes(range(256)) * 1000
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    calls = []

    def hash_blocks(blocks, leaf_size):
        calls.extend(length for _, _, length, _ in blocks)
        return cpu._hash_file_blocks(blocks, leaf_size)

    ranges = [cpu.FileRange(f), cpu.FileRange(f, 10, 70_000), cpu.FileRange(f, 5, 0)]
    want = cpu.digest_ranges(ranges, HashParams())
    assert cpu.digest_ranges(ranges, HashParams(), hash_blocks=hash_blocks, block_bytes=16384) == want
    assert max(calls) == 16384


def test_small_files_go_through_another_block_hasher(tmp_path):
    """Small files, hashed whole in batches, still use the backend's block hasher."""
    files = []
    for k in range(50):
        files.append(tmp_path / f"{k}.bin")
        files[-1].write_bytes(bytes([k]) * (k * 1000))
    calls = []

    def hash_blocks(blocks, leaf_size):
        calls.extend(src.path for src, _, _, _ in blocks)
        return cpu._hash_file_blocks(blocks, leaf_size)

    ranges = [cpu.FileRange(f) for f in files]
    want = cpu.digest_ranges(ranges, HashParams())
    assert cpu.digest_ranges(ranges, HashParams(), hash_blocks=hash_blocks) == want
    assert sorted(calls) == sorted(str(f) for f in files[1:])  # the empty file needs no block


def test_a_batching_block_hasher_gets_blocks_across_files_and_a_task_of_small_files_at_once(tmp_path):
    """With ``batch_bytes`` the driver hands over consecutive blocks of the pipeline, across files,
    up to that many bytes counted in whole leaves, and each task of small files in one call."""
    leaf, block, batch = 4096, 16384, 4 * 16384
    big = [tmp_path / f"big{k}.bin" for k in range(3)]
    for k, f in enumerate(big):
        f.write_bytes(bytes([k + 1]) * (5 * block + 100 * k + 1))
    small = [tmp_path / f"small{k}.bin" for k in range(40)]
    for k, f in enumerate(small):
        f.write_bytes(bytes([k]) * (100 * k + 1))
    # big files with their sizes given go straight to the pipeline; the small ones are tasks of 5
    ranges = [cpu.FileRange(f, 0, f.stat().st_size) for f in big] + [cpu.FileRange(f) for f in small]
    ranges.append(cpu.FileRange(big[0], 7, 3 * block))
    calls = []

    def hash_blocks(blocks, leaf_size):
        calls.append([(src.path, length) for src, _, length, _ in blocks])
        return cpu._hash_file_blocks(blocks, leaf_size)

    seen = []
    got = cpu.digest_ranges(ranges, HashParams(), seen.append, 2, hash_blocks=hash_blocks, block_bytes=block,
                            batch_bytes=batch)
    assert got == cpu.digest_ranges(ranges, HashParams())
    assert sum(seen) == sum(d.size for d in got)
    small_calls = [c for c in calls if all("small" in p for p, _ in c)]
    per_task = -(-len(small) // (4 * 2))  # SMALL_FILES_PER_TASK or fewer, so that all workers get some
    assert [len(c) for c in small_calls] == [per_task] * (len(small) // per_task)
    pipeline = [c for c in calls if c not in small_calls]
    assert all(sum(-(-n // leaf) * leaf for _, n in c) <= batch for c in pipeline)
    assert len(pipeline) < sum(map(len, pipeline)) and any(len({p for p, _ in c}) > 1 for c in pipeline)


def test_dm_verity_levels_take_the_same_devices():
    from sentry.hashing import verity

    data = bytes(range(256)) * 40
    if not _gpu.available():
        assert verity.level(data, b"salt", device="auto") == verity.py_level(data, b"salt", 4096)
    with pytest.raises(InvalidInput, match=r"^unknown device 'gpu': choose one of auto, cpu, cuda$"):
        verity.level(data, b"salt", device="gpu")
