"""The CPU launch emulator for the CUDA kernels, behind a fake CuPy (see kernels/README.md).

``install(monkeypatch, build_dir)`` puts a fresh fake ``cupy`` in ``sys.modules`` (and makes
``import kvikio`` fail, so files go through pinned host buffers), and resets what Sentry caches
per CuPy: the compiled Merkle module, the availability probe and the ECDSA module (reimported so
that it binds the fake). Everything comes back when the test ends.
"""
from __future__ import annotations

import sys

from . import build, fake_cupy

__all__ = ["install", "build", "fake_cupy"]


def install(monkeypatch, build_dir):
    import sentry.crypto

    cupy = fake_cupy.make(build_dir)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "kvikio", None)  # ImportError: the pinned-buffer file path
    monkeypatch.delitem(sys.modules, "sentry.crypto.cuda", raising=False)
    monkeypatch.delattr(sentry.crypto, "cuda", raising=False)
    clear_caches()
    return cupy


def clear_caches() -> None:
    """Forget what the Merkle backend cached under the previous ``cupy`` (call after a test, too)."""
    from sentry.hashing import cuda

    cuda._module.cache_clear()
    cuda.unavailable_reason.cache_clear()
