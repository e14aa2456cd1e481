"""The dm-verity level kernel (kernels/verity.cu), every block and thread, on the CPU launch
emulator through the fake CuPy (tests/cuda_emu), driven by sentry/hashing/verity.py's launch code:
bit for bit the C level and hashlib, for salts of 0, 1, 32 and 256 bytes, partial last blocks and
more blocks than one thread block holds; and whole trees equal `veritysetup format`'s (through
tests/unit/image/test_image_verity.py's pinning of the CPU tree). Its GPU run awaits a GPU."""
from __future__ import annotations

import hashlib
import os

import pytest

from sentry.hashing import verity as engine
from sentry.image import verity

B = 4096


@pytest.mark.parametrize("salt", [b"", b"\x00", os.urandom(32), os.urandom(256)], ids=["empty", "00", "32", "256"])
def test_kernel_level_equals_c_and_hashlib(emu_cupy, salt):
    data = os.urandom(engine.THREADS * B + 3 * B + 100)  # two thread blocks, a partial last block
    want = engine.level(data, salt)
    padded = data + bytes(-len(data) % B)
    assert want == b"".join(hashlib.sha256(salt + padded[i : i + B]).digest() for i in range(0, len(padded), B))
    assert engine.level(data, salt, device="cuda") == want
    assert [(name, grid) for name, grid, _ in emu_cupy.emu.launches] == [("verity_level", (2, 1, 1))]


def test_kernel_tree_equals_cpu_tree(emu_cupy):
    data = os.urandom(130 * B + 1)  # two levels stored, the upper from the kernel too
    assert verity.build_tree(data, b"\x01", device="cuda") == verity.build_tree(data, b"\x01")
    assert engine.level(b"", b"\x01", device="cuda") == b""
