"""The CUDA backend's file path without a GPU: kvikio's and CuPy's stand-ins (``fake_gpu.py``), the
CPU backend in place of the kernels' runs, everything else (reader choice, kvikio opens and reads,
device buffers and where blocks go in them, the work tables, the file driver) as it runs on a GPU.
The same roots on a GPU: tests/gpu/test_cuda.py.
"""
from __future__ import annotations

import os

import fake_gpu
import numpy as np
import pytest
from gpu_inputs import BLOCK, ranges_of_every_size

from sentry.errors import SentryError
from sentry.hashing import cpu, cuda
from sentry.hashing.params import HashParams

BATCH = 4 * BLOCK  # small device buffers: runs of a few blocks, small-file tasks split into runs
LEAF = HashParams().leaf_size


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(cuda, "FILE_BLOCK_BYTES", BLOCK)
    monkeypatch.setattr(cuda, "FILE_BATCH_BYTES", BATCH)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def segments(cupy) -> list:
    return [seg for _, placed in cupy.runs for seg in placed]


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
    assert 1 <= len(cupy.allocations) <= cuda.FILE_WORKERS and set(cupy.allocations) == {BATCH}
    assert cupy.pinned == ([] if with_kvikio else cupy.allocations)
    for _, placed in cupy.runs:  # each block on its own leaf boundary of the buffer (fake_gpu checks it is inside)
        ends = [0] + [offset + size for offset, size in placed]
        assert all(offset % LEAF == 0 and offset >= end for (offset, _), end in zip(placed, ends))
    # several blocks per run: fewer runs than blocks, and some run as full as the buffer
    assert len(cupy.runs) < len(segments(cupy)) / 2
    assert max(sum(size for _, size in placed) for _, placed in cupy.runs) == BATCH
    if with_kvikio:  # every file kvikio read, it opened through FileSource's descriptor
        assert kv.opened and all(p.startswith("/proc/self/fd/") for p in kv.opened)
        assert kv.issued == kv.finished == len(segments(cupy))


def test_blocks_of_large_files_fill_each_run_across_files(monkeypatch, tmp_path, small_blocks):
    cupy, _ = fake_gpu.install(monkeypatch)
    monkeypatch.setattr(cuda, "FILE_WORKERS", 2)
    a, b = (write(tmp_path / name, os.urandom(6 * BLOCK)) for name in ("a.bin", "b.bin"))
    c = write(tmp_path / "c.bin", os.urandom(4 * BLOCK + 5))
    ranges = [cpu.FileRange(a), cpu.FileRange(b), cpu.FileRange(c)]
    assert cuda.digest_ranges(ranges) == cpu.digest_ranges(ranges)
    # 6 + 6 + 5 blocks, four to a buffer: a's first four, a's last two with b's first two, ...
    assert sorted([size for _, size in placed] for _, placed in cupy.runs) == [[5]] + [[BLOCK] * 4] * 4


def test_a_thousand_small_files_take_one_run_per_task(monkeypatch, tmp_path):
    cupy, _ = fake_gpu.install(monkeypatch)
    monkeypatch.setattr(cuda, "FILE_BATCH_BYTES", 1 << 20)
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 8193, 1000)
    ranges = [cpu.FileRange(write(tmp_path / f"{k}.bin", rng.integers(0, 256, n, np.uint8).tobytes()))
              for k, n in enumerate(sizes)]
    assert cuda.digest_ranges(ranges) == cpu.digest_ranges(ranges)
    # tasks of ceil(1000 / (4 * FILE_WORKERS)) = 63 files (at most 64: the descriptors they hold),
    # each read into one buffer and hashed in one run
    per_task = -(-1000 // (4 * cuda.FILE_WORKERS))
    assert len(cupy.runs) == -(-1000 // per_task) == 16
    assert sorted(len(placed) for _, placed in cupy.runs) == [1000 - 15 * per_task] + [per_task] * 15


def test_a_buffer_is_read_while_another_hashes(monkeypatch, tmp_path, small_blocks):
    """Each read is held back until the next one is issued: the last read of a run can only be
    issued by another reader thread while this one's buffer waits to be hashed, so every run but
    the last two is hashed with a read in flight. Read and hash in turn, and each would wait in
    vain, then hash alone."""
    cupy, kv = fake_gpu.install(monkeypatch)
    monkeypatch.setattr(cuda, "FILE_BATCH_BYTES", 2 * BLOCK)
    monkeypatch.setattr(cuda, "FILE_WORKERS", 2)
    blocks = 16
    f = write(tmp_path / "f.bin", os.urandom(blocks * BLOCK))
    kv.gate = blocks
    assert cuda.digest_ranges([cpu.FileRange(f)]) == cpu.digest_ranges([cpu.FileRange(f)])
    in_flight = [n for n, _ in cupy.runs]
    assert len(in_flight) == blocks // 2 and min(in_flight[:-2]) >= 1, in_flight


def small_files(tmp_path, n=10) -> list:
    return [cpu.FileRange(write(tmp_path / f"{k}.bin", os.urandom(5000 + k))) for k in range(n)]


def touching(monkeypatch, path):
    """The file at ``path`` is written to during every run of the kernels (so during its own)."""
    real = cuda._run
    times = iter(range(7, 10**6))

    def touch(*args):
        t = next(times)
        os.utime(path, ns=(t, t))
        return real(*args)

    monkeypatch.setattr(cuda, "_run", touch)


@pytest.mark.parametrize("with_kvikio", [True, False], ids=["kvikio", "pinned"])
def test_short_reads_and_changed_files_are_errors_and_every_file_is_closed(monkeypatch, tmp_path, small_blocks, with_kvikio):
    _, kv = fake_gpu.install(monkeypatch, with_kvikio=with_kvikio)
    f = write(tmp_path / "f.bin", os.urandom(4 * BLOCK))
    few = small_files(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    os.truncate(f, 3 * BLOCK + 5)  # shorter than the range asked for, once opened
    with pytest.raises(SentryError, match=r"too short for the range of 65536 bytes at offset 0"):
        cuda.digest_ranges([cpu.FileRange(f, 0, 4 * BLOCK)])
    if kv:
        kv.short = 1
        with pytest.raises(SentryError, match=r"f\.bin ended early: read short at byte \d+ of the \d+ bytes expected from offset \d+$"):
            cuda.digest_ranges([cpu.FileRange(f)])
        with pytest.raises(SentryError, match=r"/\d\.bin ended early"):  # whichever task fails first
            cuda.digest_ranges(few)
        assert kv.issued == kv.finished  # no read left writing into a buffer
        kv.short = 0

    real = cuda._run
    touching(monkeypatch, f)
    with pytest.raises(SentryError, match=r"f\.bin changed while it was being hashed"):
        cuda.digest_ranges([cpu.FileRange(f)])
    monkeypatch.setattr(cuda, "_run", real)
    touching(monkeypatch, few[3].path)  # one of a task's small files
    with pytest.raises(SentryError, match=r"/3\.bin changed while it was being hashed"):
        cuda.digest_ranges(few)
    assert len(os.listdir("/proc/self/fd")) == before


def test_symlinks_are_refused_unless_followed(monkeypatch, tmp_path, small_blocks):
    fake_gpu.install(monkeypatch)
    few = small_files(tmp_path)
    (tmp_path / "link").symlink_to(few[2].path)
    ranges = few + [cpu.FileRange(tmp_path / "link")]
    with pytest.raises(SentryError, match=r"link is a symbolic link; refusing to follow it"):
        cuda.digest_ranges(ranges)
    assert cuda.digest_ranges(ranges, follow_symlinks=True) == cpu.digest_ranges(ranges, follow_symlinks=True)
