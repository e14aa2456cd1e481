"""Backend choice (device auto / cpu / cuda) and the CPU side of the CUDA backend's plumbing."""
from __future__ import annotations

import pytest
import torch

import sentry.hashing as hashing
from sentry.errors import SentryError
from sentry.hashing import cpu, cuda
from sentry.hashing.params import HashParams

from support import run_cli


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: "no CUDA GPU is visible")
    monkeypatch.setattr(cuda, "available", lambda: False)


def test_available_is_a_bool_and_never_raises():
    assert cuda.available() in (True, False)
    assert (cuda.unavailable_reason() is None) == cuda.available()


def test_auto_falls_back_to_cpu_and_cuda_without_gpu_is_one_sentence(no_gpu):
    assert hashing.resolve_device("auto") == "cpu"
    assert hashing.resolve_device("cpu") == "cpu"
    with pytest.raises(SentryError, match=r"^cannot hash on CUDA: no CUDA GPU is visible; use --device cpu$"):
        hashing.resolve_device("cuda")
    with pytest.raises(SentryError, match="unknown device 'tpu'"):
        hashing.resolve_device("tpu")


def test_cli_device_cuda_without_gpu_exits_2(tmp_path):
    if cuda.available():
        pytest.skip("a GPU is usable here")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 5000)
    r = run_cli("hash", tmp_path / "m", "--device", "cuda")
    assert r.returncode == 2
    assert "cannot hash on CUDA" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_digest_tensors_batch_equals_one_by_one_with_progress(no_gpu):
    g = torch.Generator().manual_seed(0)
    named = [("a", torch.randn(1000, generator=g)), ("b", torch.randn(64, 33, generator=g).t()),
             ("c", torch.zeros(0)), ("d", torch.randn(3, generator=g).to(torch.bfloat16))]
    seen = []
    got = hashing.digest_tensors(named, HashParams(), progress=seen.append)
    assert got == [hashing.digest_tensor(n, t, HashParams(), device="cpu") for n, t in named]
    assert seen == [d.size for d in got]
    with pytest.raises(SentryError, match="cannot hash on CUDA"):
        hashing.digest_tensors(named, HashParams(), device="cuda")
    with pytest.raises(SentryError, match="unknown device"):
        hashing.digest_tensors(named, HashParams(), device="gpu")


def test_file_driver_with_another_block_hasher_and_block_size(tmp_path):
    """The CUDA backend reuses the CPU file driver with its own block hasher and block size."""
    data = bytes(range(256)) * 1000
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    calls = []

    def hash_block(src, offset, length, leaf_size, grain):
        calls.append(length)
        return cpu._hash_file_block(src, offset, length, leaf_size, grain)

    ranges = [cpu.FileRange(f), cpu.FileRange(f, 10, 70_000), cpu.FileRange(f, 5, 0)]
    want = cpu.digest_ranges(ranges, HashParams())
    assert cpu.digest_ranges(ranges, HashParams(), hash_block=hash_block, block_bytes=16384) == want
    assert max(calls) == 16384


def test_small_files_go_through_another_block_hasher(tmp_path):
    """Small files, hashed whole in batches, still use the backend's block hasher."""
    files = []
    for k in range(50):
        files.append(tmp_path / f"{k}.bin")
        files[-1].write_bytes(bytes([k]) * (k * 1000))
    calls = []

    def hash_block(src, offset, length, leaf_size, grain):
        calls.append(src.path)
        return cpu._hash_file_block(src, offset, length, leaf_size, grain)

    ranges = [cpu.FileRange(f) for f in files]
    assert cpu.digest_ranges(ranges, HashParams(), hash_block=hash_block) == cpu.digest_ranges(ranges, HashParams())
    assert sorted(calls) == sorted(str(f) for f in files[1:])  # the empty file needs no block
