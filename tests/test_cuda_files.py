"""The CUDA backend's file path without a GPU: kvikio's and CuPy's stand-ins (``fake_gpu.py``), the
CPU backend in place of the kernels, everything else (reader choice, kvikio opens and reads, device
buffers, the file driver) as it runs on a GPU. The same roots on a GPU: tests/test_cuda.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fake_gpu
from sentry.errors import SentryError
from sentry.hashing import cpu, cuda
from sentry.hashing.params import HashParams

BLOCK = 16384  # small device buffers, so that files span several blocks


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(cuda, "FILE_BLOCK_BYTES", BLOCK)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def ranges_of_every_size(tmp_path) -> list:
    rng = np.random.default_rng(0)
    ranges = []
    for n in (0, 1, 4095, 4096, 4097, 3 * BLOCK + 17, 5 * BLOCK):
        f = write(tmp_path / f"{n}.bin", rng.integers(0, 256, n, np.uint8).tobytes())
        ranges += [cpu.FileRange(f), cpu.FileRange(f, n // 3, n - n // 3)]
    small = tmp_path / "small"
    small.mkdir()
    for k in range(150):  # many small files, hashed whole in batches
        ranges.append(cpu.FileRange(write(small / f"{k}.bin", rng.integers(0, 256, int(rng.integers(0, 9000)), np.uint8).tobytes())))
    return ranges


def test_the_reader_is_kvikio_when_it_imports_else_pinned_buffers(monkeypatch):
    fake_gpu.install(monkeypatch)
    assert cuda.file_reader() == "kvikio"
    fake_gpu.install(monkeypatch, with_kvikio=False)
    assert cuda.file_reader() == "pinned"


@pytest.mark.parametrize("with_kvikio", [True, False], ids=["kvikio", "pinned"])
def test_both_readers_give_the_cpu_roots_in_bounded_device_memory(monkeypatch, tmp_path, small_blocks, with_kvikio):
    cupy, kv = fake_gpu.install(monkeypatch, with_kvikio=with_kvikio)
    ranges = ranges_of_every_size(tmp_path)
    seen = []
    got = cuda.digest_ranges(ranges, HashParams(), progress=seen.append)
    assert got == cpu.digest_ranges(ranges, HashParams())
    assert sum(seen) == sum(d.size for d in got)
    # one device buffer (and pinned buffer without kvikio) per reader thread, whatever the files
    assert 1 <= len(cupy.allocations) <= cuda.FILE_WORKERS and set(cupy.allocations) == {BLOCK}
    assert cupy.pinned == ([] if with_kvikio else cupy.allocations)
    assert max(n for _, n in cupy.hashed) == BLOCK
    if with_kvikio:  # every file kvikio read, it opened through FileSource's descriptor
        assert kv.opened and all(p.startswith("/proc/self/fd/") for p in kv.opened)
        assert kv.issued == kv.finished == len(cupy.hashed)


def test_a_block_is_read_while_another_hashes(monkeypatch, tmp_path, small_blocks):
    """Each read is held back until the next one is issued: it can only be issued by another reader
    thread while this one's block waits to be hashed, so every block but the last two is hashed
    with a read in flight. Read and hash in turn, and each would wait in vain, then hash alone."""
    cupy, kv = fake_gpu.install(monkeypatch)
    blocks = 8
    f = write(tmp_path / "f.bin", os.urandom(blocks * BLOCK))
    kv.gate = blocks
    monkeypatch.setattr(cuda, "FILE_WORKERS", 2)
    assert cuda.digest_ranges([cpu.FileRange(f)]) == cpu.digest_ranges([cpu.FileRange(f)])
    in_flight = [n for n, _ in cupy.hashed]
    assert len(in_flight) == blocks and min(in_flight[:-2]) >= 1, in_flight


@pytest.mark.parametrize("with_kvikio", [True, False], ids=["kvikio", "pinned"])
def test_short_reads_and_changed_files_are_errors_and_every_file_is_closed(monkeypatch, tmp_path, small_blocks, with_kvikio):
    _, kv = fake_gpu.install(monkeypatch, with_kvikio=with_kvikio)
    f = write(tmp_path / "f.bin", os.urandom(4 * BLOCK))
    before = len(os.listdir("/proc/self/fd"))
    os.truncate(f, 3 * BLOCK + 5)  # shorter than the range asked for, once opened
    with pytest.raises(SentryError, match=r"too short for the range of 65536 bytes at offset 0"):
        cuda.digest_ranges([cpu.FileRange(f, 0, 4 * BLOCK)])
    if kv:
        kv.short = 1
        with pytest.raises(SentryError, match=r"f\.bin ended early: read short at byte \d+ of the \d+ bytes expected from offset \d+$"):
            cuda.digest_ranges([cpu.FileRange(f)])
        kv.short = 0

    touched = []

    def touch_once(*args):  # the file is written to while its first block hashes
        if not touched:
            touched.append(os.utime(f, ns=(7, 7)))
        return real(*args)

    real = cuda._hash_on_device
    monkeypatch.setattr(cuda, "_hash_on_device", touch_once)
    with pytest.raises(SentryError, match=r"f\.bin changed while it was being hashed"):
        cuda.digest_ranges([cpu.FileRange(f)])
    assert len(os.listdir("/proc/self/fd")) == before
