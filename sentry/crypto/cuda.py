"""CUDA backend of the batch API: kernels/ecdsa.cu, compiled at run time with NVRTC (CuPy
RawModule; CuPy caches the binary per source, options and GPU architecture).

Same packed inputs and outputs as the CPU backend. Private keys are copied to the device only
for the signing launch, through a page-locked host buffer of our own that is zeroed and freed
at once, and overwritten with zeros on the device before that buffer is freed.
"""
from __future__ import annotations

import ctypes
from collections.abc import Sequence

import cupy as cp
import numpy as np

from sentry import _gpu

__all__ = ["TABLE_BYTES", "THREADS", "sign", "verify"]

THREADS = 128  # per block; each block also holds the 33 KB table in shared memory
TABLE_BYTES = 65 * 8 * 64


def _build(device: int) -> tuple[cp.RawModule, cp.ndarray]:
    """The compiled kernels and the fixed-base table on ``device``."""
    module = _gpu.raw_module("ecdsa.cu", device)
    with cp.cuda.Device(device):
        table = cp.empty(TABLE_BYTES, dtype=cp.uint8)
        module.get_function("p256_build_table")((1,), (65,), (table,))
        # Built on the caller's current stream, then read from any thread's stream: finish it
        # here, once, rather than make every later stream wait on this one.
        cp.cuda.get_current_stream().synchronize()
        return module, table


_modules = _gpu.PerDevice(_build)


def _module() -> tuple[cp.RawModule, cp.ndarray]:
    """The compiled kernels and the fixed-base table of the current device, built once."""
    return _modules.get(cp.cuda.Device().id)


def _device_bytes(data) -> cp.ndarray:
    return cp.asarray(np.frombuffer(data, dtype=np.uint8))


def _upload_secret(secret: bytearray) -> cp.ndarray:
    """A device copy of ``secret`` that leaves no copy on the host. Not ``cp.asarray``: it stages
    the bytes in a buffer of CuPy's pinned-memory pool, which is kept and reused, never wiped. Not
    from pageable memory either: the driver would stage it in buffers of its own. The bytes go from
    a page-locked buffer we allocate, and zero before freeing, straight into the device array."""
    size = len(secret)
    device = cp.empty(size, dtype=cp.uint8)
    staging = cp.cuda.runtime.hostAlloc(size, 0)
    try:
        ctypes.memmove(staging, (ctypes.c_char * size).from_buffer(secret), size)
        stream = cp.cuda.get_current_stream()
        device.data.copy_from_host_async(staging, size, stream)
        stream.synchronize()  # the copy has landed before its source is wiped
    finally:
        ctypes.memset(staging, 0, size)
        cp.cuda.runtime.freeHost(staging)
    return device


def _index(index: Sequence[int] | None):
    return None if index is None else cp.asarray(np.asarray(index, dtype=np.uint32))


def _grid(count: int) -> tuple[int]:
    return ((count + THREADS - 1) // THREADS,)


def sign(private: bytearray, index: Sequence[int] | None, digests: bytes) -> bytes:
    module, table = _module()
    count = len(digests) // 32
    keys = _upload_secret(private)
    try:
        out = cp.empty(64 * count, dtype=cp.uint8)
        module.get_function("p256_sign_batch")(
            _grid(count), (THREADS,),
            (keys, _index(index), _device_bytes(digests), table, out, np.uint32(count)))
        return out.get().tobytes()
    finally:
        keys.fill(0)
        cp.cuda.get_current_stream().synchronize()
        del keys


def verify(public: list[bytes], index: Sequence[int] | None, digests: bytes, signatures: bytes) -> list[bool]:
    module, table = _module()
    count = len(digests) // 32
    ok = cp.zeros(count, dtype=cp.uint8)
    module.get_function("p256_verify_batch")(
        _grid(count), (THREADS,),
        (_device_bytes(b"".join(public)), _index(index), _device_bytes(digests), _device_bytes(signatures),
         table, ok, np.uint32(count)))
    return [bool(v) for v in ok.get()]
