"""The CPU launch emulator for the CUDA kernels, behind a fake CuPy (see kernels/README.md).

``install(monkeypatch, build_dir)`` puts a fresh fake ``cupy`` in ``sys.modules`` (and makes
``import kvikio`` fail, so files go through pinned host buffers), and resets what Sentry caches
per CuPy: the compiled Merkle module, the availability probe and the ECDSA module (reimported so
that it binds the fake). Everything comes back when the test ends.
"""
from __future__ import annotations

import sys

import sentry.crypto
from sentry.hashing import cuda, verity

from . import fake_cupy

_KERNELS, _PROBE = cuda._kernels, cuda.unavailable_reason  # the real ones, even while a test patches them
_VERITY = verity._kernel  # the dm-verity level kernel (kernels/verity.cu)


def install(monkeypatch, build_dir):
    cupy = fake_cupy.make(build_dir)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "kvikio", None)  # ImportError: the pinned-buffer file path
    monkeypatch.delitem(sys.modules, "sentry.crypto.cuda", raising=False)
    monkeypatch.delattr(sentry.crypto, "cuda", raising=False)
    clear_caches()
    return cupy


def clear_caches() -> None:
    """Forget what the Merkle backend cached under the previous ``cupy`` (call after a test, too)."""
    _KERNELS.clear()
    _VERITY.clear()
    _PROBE.cache_clear()
