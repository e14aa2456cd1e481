"""Inputs shared by the GPU backends' tests (fakes, emulator, GPU): files of every size as ranges,
and bytes copied into device memory."""
from __future__ import annotations

import numpy as np

from sentry.hashing import cpu

BLOCK = 16384  # small blocks, so that files span several


def ranges_of_every_size(tmp_path, small_files: int = 150) -> list:
    """Whole files and middle thirds around leaf and block sizes, then ``small_files`` small files
    (hashed whole in batches), written under ``tmp_path``."""
    rng = np.random.default_rng(0)
    ranges = []
    for n in (0, 1, 4095, 4096, 4097, 3 * BLOCK + 17, 5 * BLOCK):
        f = tmp_path / f"{n}.bin"
        f.write_bytes(rng.integers(0, 256, n, np.uint8).tobytes())
        ranges += [cpu.FileRange(f), cpu.FileRange(f, n // 3, n - n // 3)]
    small = tmp_path / "small"
    small.mkdir()
    for k in range(small_files):
        f = small / f"{k}.bin"
        f.write_bytes(rng.integers(0, 256, int(rng.integers(0, 9000)), np.uint8).tobytes())
        ranges.append(cpu.FileRange(f))
    return ranges


def device_copy(cupy, data: bytes, offset: int = 0):
    """``data`` in device memory, ``offset`` bytes into an allocation that ends where it ends."""
    buf = cupy.empty(offset + len(data), cupy.uint8)
    buf[offset:].set(np.frombuffer(data, np.uint8))
    return buf[offset:]
