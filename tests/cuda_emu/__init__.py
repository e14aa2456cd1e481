"""The CPU launch emulator for the CUDA kernels, behind a fake CuPy (see kernels/README.md).

``install(monkeypatch, build_dir)`` puts a fresh fake ``cupy`` in ``sys.modules`` (and makes
``import kvikio`` fail, so files go through pinned host buffers), and gives Sentry fresh caches
of what it keeps per CuPy: the availability probe and the compiled modules (sentry._gpu), the
Merkle kernels' table and the ECDSA module (reimported so that it binds the fake). Everything
comes back when the test ends.
"""
from __future__ import annotations

import functools
import sys

import sentry.crypto
from sentry import _gpu
from sentry.hashing import cuda

from . import fake_cupy


def install(monkeypatch, build_dir):
    cupy = fake_cupy.make(build_dir)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "kvikio", None)  # ImportError: the pinned-buffer file path
    monkeypatch.delitem(sys.modules, "sentry.crypto.cuda", raising=False)
    monkeypatch.delattr(sentry.crypto, "cuda", raising=False)
    isolate(monkeypatch)
    monkeypatch.setattr(cuda, "_kernels", _gpu.PerDevice(cuda._compile))
    return cupy


def isolate(monkeypatch) -> None:
    """Fresh sentry._gpu caches (probe, compiled modules) for a test that swaps CuPy: nothing built
    against the fake outlives the test, and nothing built before it is handed to the fake."""
    monkeypatch.setattr(_gpu, "_modules", {})
    monkeypatch.setattr(_gpu, "unavailable_reason", functools.lru_cache(maxsize=None)(_gpu.unavailable_reason.__wrapped__))


def clear_caches() -> None:
    """Forget what was compiled and probed under the current ``cupy`` (a planted kernel source)."""
    _gpu.clear_caches()
