"""Runs one case of the emulated kernels, for a sanitizer build in a subprocess:

    SENTRY_EMU_FLAGS="-fsanitize=address,undefined" LD_PRELOAD=libasan.so python -m cuda_emu.sanitized merkle

(tests/native/test_emulator_sanitizers.py sets the environment). Prints what it compared; exits 1 on a
mismatch, and the sanitizer itself reports and exits non-zero on what it finds.
Cases: ``merkle`` and ``ecdsa`` (the real kernels against the CPU engine and backend), and the planted
bugs ``oob`` (a read one byte past an allocation), ``overread`` (the leaf kernel staging one 16-byte
word too many) and ``race`` (blocks writing one word unsynchronized).
"""
from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest

import cuda_emu

WORKERS_ENV = "SENTRY_EMU_WORKERS"  # OS threads running blocks (the TSan runs use several)
PLANTED = """
#include <stdint.h>
extern "C" __global__ void past_the_end(const uint8_t *in, uint32_t n, uint8_t *out) {
    out[0] = in[n];  // one byte past the allocation
}
extern "C" __global__ void race(uint32_t *word) {
    if (threadIdx.x == 0) *word += blockIdx.x;  // every block, no atomic
}
"""


def merkle(cupy) -> int:
    from sentry.hashing import cpu, cuda
    from sentry.hashing.params import HashParams

    rng = np.random.default_rng(7)
    items = [rng.integers(0, 256, n, np.uint8).tobytes() for n in (1, 63, 4095, 4096, 4097, 9 * 4096 - 5, 0, 33 * 4096 - 5)]
    compared = 0
    for offset, window, params in ((0, 1 << 21, HashParams()), (3, 4, HashParams()), (5, 512, HashParams(64, 7))):
        arrays = []
        for d in items:
            buf = cupy.empty(offset + len(d), cupy.uint8)
            buf[offset:].set(np.frombuffer(d, np.uint8))
            arrays.append(buf[offset:])
        got = cuda._digest(cuda._Gpu(0), [len(d) for d in items], lambda i: (arrays[i], arrays[i].data.ptr), params, window)  # noqa: B023
        if got != [cpu.digest_bytes(d, params) for d in items]:
            return 0
        compared += len(items)
    return compared


def overread(cupy) -> int:
    """The leaf kernel planted to stage one 16-byte word more than a block's bytes need: for a
    16-byte-aligned item of 4096 bytes that word lies past its allocation, which ASan reports."""
    from sentry import _gpu
    from sentry.hashing import cpu, cuda

    text = _gpu.source("merkle.cu").replace("(s + n + 15) >> 4", "(s + n + 16) >> 4")
    data = np.random.default_rng(8).integers(0, 256, 4096, np.uint8)
    buf = cupy.empty(4096, cupy.uint8)
    buf.set(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_gpu, "source", lambda name: text)
        cuda_emu.clear_caches()
        try:
            return int(cuda.digest_device_buffer(buf) == cpu.digest_bytes(data.tobytes()))
        finally:
            cuda_emu.clear_caches()  # the planted build stays out of later cases


def ecdsa(cupy) -> int:
    from sentry.crypto import batch_sign, batch_verify

    keys = [hashlib.sha256(b"key %d" % i).digest() for i in range(3)]
    digests = [hashlib.sha256(b"%d" % i).digest() for i in range(5)]
    index = [0, 1, 2, 1, 0]
    sigs = batch_sign(keys, digests, key_index=index, device="cuda")
    if sigs != batch_sign(keys, digests, key_index=index, device="cpu"):
        return 0
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = [ec.derive_private_key(int.from_bytes(k, "big"), ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint) for k in keys]
    sigs[2] = sigs[2][:10] + bytes([sigs[2][10] ^ 1]) + sigs[2][11:]
    ok = batch_verify(public, digests, sigs, key_index=index, device="cuda")
    return len(digests) if ok == [True, True, False, True, True] else 0


def planted(cupy, name: str) -> int:
    module = cupy.RawModule(code=PLANTED)
    if name == "oob":
        data = cupy.zeros(112, cupy.uint8)  # whole 16-byte words: the emulator's allocation granule
        module.get_function("past_the_end")((1,), (1,), (data, np.uint32(112), cupy.zeros(1, cupy.uint8)))
    else:
        module.get_function("race")((64,), (32,), (cupy.zeros(1, cupy.uint32),))
    return 1


def main(case: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        cupy = cuda_emu.install(mp, os.environ["SENTRY_EMU_CACHE"])
        cupy.emu.workers = int(os.environ.get(WORKERS_ENV, "1"))
        cupy.emu.order = 12345  # shuffled
        compared = {"merkle": merkle, "ecdsa": ecdsa, "overread": overread}.get(case, lambda c: planted(c, case))(cupy)
    print(f"{case}: {compared} compared, all equal" if compared else f"{case}: MISMATCH")
    return 0 if compared else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
