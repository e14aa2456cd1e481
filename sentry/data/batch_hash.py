"""Roots of a batch of sample buffers: the one place a GPU Merkle backend plugs into the loaders.

``hash_batch(buffers, params, device)`` returns one ``(size, root)`` per buffer. On ``"cpu"`` each
host buffer is hashed by the CPU engine (the C accelerator releases the GIL, so samples of one
batch hash on several cores). ``"cuda"`` hashes device buffers with the CUDA engine's batch
function, ``sentry.hashing.digest_device_batch(buffers, params) -> [ItemDigest]``, once the CUDA
engine provides it; until then it is a clear error, and loaders hash on the CPU.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ..errors import SentryError
from ..hashing import cpu
from ..hashing.params import HashParams

# Below this many bytes a batch hashes on the calling thread: a pool costs more than it saves.
PARALLEL_BYTES = 1 << 20
_pool: ThreadPoolExecutor | None = None


def cuda_batch_hasher():
    """The CUDA engine's batch function, or None when this build has none."""
    from .. import hashing

    return getattr(hashing, "digest_device_batch", None)


def hash_batch(buffers, params: HashParams, device: str = "cpu") -> list[tuple[int, bytes]]:
    if device == "cuda":
        digest = cuda_batch_hasher()
        if digest is None:
            raise SentryError("hashing samples on the GPU requires the CUDA engine, which this build does not have")
        return [(d.size, d.root) for d in digest(buffers, params)]
    if device != "cpu":
        raise SentryError(f"unknown hashing device {device!r}: choose cpu or cuda")

    def one(buf):
        d = cpu.digest_bytes(buf, params, workers=1)
        return d.size, d.root

    if len(buffers) < 2 or sum(memoryview(b).nbytes for b in buffers) < PARALLEL_BYTES:
        return [one(b) for b in buffers]
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="sentry-batch")
    return list(_pool.map(one, buffers))
