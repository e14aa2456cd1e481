"""One level of a dm-verity (format 1) hash tree: SHA-256(salt || block) for each block of a
buffer, the last block zero-padded. The tree, its layout and root are sentry.image.verity's.

Backends, which agree bit for bit (tests/unit/image/test_image_verity.py, tests/native/test_emulator_verity.py):
``_cmerkle.verity_level`` in C, threads over slices of the buffer with the GIL released; the
pure-Python ``py_level`` below when the extension is not built; and the CUDA kernel
``kernels/verity.cu`` (one thread per block) for ``device="cuda"``.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from .. import _gpu
from ..errors import SentryError

__all__ = ["MAX_SALT", "SLICE_BYTES", "THREADS", "level", "py_level"]

try:
    from ._cmerkle import verity_level as _c_level
except ImportError:  # pragma: no cover - no compiler: the Python reference below
    _c_level = None

MAX_SALT = 256  # veritysetup's limit (the superblock's salt field)
SLICE_BYTES = 16 << 20  # work unit per thread; never changes a digest


def py_level(buf, salt: bytes, block_size: int) -> bytes:
    """The reference: hashlib over each block, the last one zero-padded."""
    view = memoryview(buf).cast("B")
    out = []
    for i in range(0, len(view), block_size):
        h = hashlib.sha256(salt)
        h.update(view[i : i + block_size])
        h.update(bytes(block_size - len(view[i : i + block_size])))
        out.append(h.digest())
    return b"".join(out)


def _check(salt: bytes, block_size: int) -> None:
    if len(salt) > MAX_SALT:
        raise SentryError(f"a dm-verity salt is at most {MAX_SALT} bytes, this one has {len(salt)}")
    if block_size <= 0 or block_size & (block_size - 1):
        raise SentryError(f"the block size must be a power of two, not {block_size}")


def level(buf, salt: bytes, block_size: int = 4096, *, device: str = "cpu") -> bytes:
    """Concatenated 32-byte digests SHA-256(salt || block) of ``buf``'s blocks (``b""`` if empty).
    ``device``: "cpu", "cuda" or "auto" (CUDA when a GPU is usable)."""
    _check(salt, block_size)
    if _gpu.resolve_device(device, "building a dm-verity tree") == "cuda":
        return _cuda_level(buf, salt, block_size)
    view = memoryview(buf).cast("B")
    if _c_level is None:
        return py_level(view, salt, block_size)
    step = max(block_size, SLICE_BYTES // block_size * block_size)
    if len(view) <= step:
        return _c_level(view, salt, block_size)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        parts = pool.map(lambda i: _c_level(view[i : i + step], salt, block_size), range(0, len(view), step))
        return b"".join(parts)


THREADS = 128  # kernels/verity.cu's launch bounds


def _cuda_level(buf, salt: bytes, block_size: int) -> bytes:
    """The level on the current GPU: the buffer is copied in whole blocks (zero-padded), one
    thread hashes each block. Awaits a GPU run; the CPU launch emulator runs it in the tests."""
    import cupy
    import numpy as np

    host = np.frombuffer(memoryview(buf).cast("B"), np.uint8)
    n_blocks = -(-host.size // block_size)
    if n_blocks == 0:
        return b""
    data = cupy.zeros(n_blocks * block_size, cupy.uint8)
    data[: host.size].set(host)
    salt_dev = cupy.zeros(max(len(salt), 1), cupy.uint8)
    if salt:
        salt_dev.set(np.frombuffer(salt, np.uint8))
    out = cupy.zeros(32 * n_blocks, cupy.uint8)
    fn = _gpu.raw_module("verity.cu", cupy.cuda.Device().id).get_function("verity_level")
    fn((-(-n_blocks // THREADS),), (THREADS,),
       (data, np.uint64(n_blocks), np.uint32(block_size), salt_dev, np.uint32(len(salt)), out))
    return cupy.asnumpy(out).tobytes()
