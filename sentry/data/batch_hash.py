"""Roots of a batch of sample buffers, on the CPU or, for samples already on a GPU, the CUDA engine.

``hash_batch(buffers, params, device)`` returns one ``(size, root)`` per buffer. ``"cpu"``: each
host buffer is hashed by the CPU engine (the C accelerator releases the GIL, so the samples of a
large batch hash on several cores). ``"cuda"``: device buffers (anything with ``__dlpack__``:
CuPy arrays, DALI GPU tensors, torch tensors) are hashed in place by the CUDA engine, the whole
batch in one run of its kernels (``sentry.hashing.digest_tensors``).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .. import _gpu
from ..errors import InvalidInput
from ..hashing import cpu
from ..hashing.params import HashParams

__all__ = ["PARALLEL_BYTES", "cuda_available", "hash_batch"]

# Below this many bytes a batch hashes on the calling thread: a pool costs more than it saves.
PARALLEL_BYTES = 1 << 20
_pool: ThreadPoolExecutor | None = None


def cuda_available() -> bool:
    """True when the CUDA engine can hash device buffers here."""
    return _gpu.available()


def hash_batch(buffers, params: HashParams, device: str = "cpu") -> list[tuple[int, bytes]]:
    if device == "cuda":
        from .._optional import require

        torch = require("torch", "torch", "hashing samples on a GPU")

        from ..hashing import digest_tensors

        tensors = [(f"sample {i}", torch.from_dlpack(b).reshape(-1).view(torch.uint8)) for i, b in enumerate(buffers)]
        return [(d.size, d.root) for d in digest_tensors(tensors, params, device="cuda")]
    if device != "cpu":
        raise InvalidInput(f"unknown hashing device {device!r}: choose cpu or cuda")

    def one(buf):
        d = cpu.digest_bytes(buf, params, workers=1)
        return d.size, d.root

    if len(buffers) < 2 or sum(memoryview(b).nbytes for b in buffers) < PARALLEL_BYTES:
        return [one(b) for b in buffers]
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="sentry-batch")
    return list(_pool.map(one, buffers))
