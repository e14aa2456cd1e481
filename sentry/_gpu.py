"""The layer every CUDA backend stands on: whether a GPU is usable, the kernel sources, their
compiled modules (once per GPU), and the choice of device.

- ``unavailable_reason()`` / ``available()``: CuPy imports and sees a GPU; probed once.
- ``source(name)``: ``kernels/name`` with its local ``#include "x.cuh"`` lines inlined, so the text
  handed to NVRTC is the whole program: CuPy's on-disk cache is keyed by that text, and a changed
  header can never reuse a stale binary. The sources are found inside the package
  (``sentry/hashing/kernels/``, copied there when a wheel is built: see setup.py) or, in a source
  checkout or editable install, in ``kernels/`` at the top of the repository.
- ``raw_module(name, device_id)``: ``source(name)`` compiled by NVRTC (CuPy RawModule) and loaded
  on that GPU, once per GPU however many threads ask at once (:class:`PerDevice`).
- ``resolve_device(device, purpose)``: "auto", "cpu" or "cuda" to the backend that runs.

CuPy is imported only when a GPU is asked about: ``import sentry`` needs neither CuPy nor NumPy.
"""
from __future__ import annotations

import functools
import re
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from ._optional import installed, require
from .errors import InvalidInput, Remedy, SentryError

__all__ = ["DEVICES", "NVRTC_OPTIONS", "PerDevice", "available", "clear_caches", "kernel_dir", "raw_module",
           "resolve_device", "source", "unavailable_reason"]

DEVICES = ("auto", "cpu", "cuda")
Backend = Literal["cpu", "cuda"]
# What every kernel is compiled with at run time (CuPy adds the GPU's architecture).
NVRTC_OPTIONS = ("-std=c++17",)

_PACKAGE = Path(__file__).resolve().parent
_DIRS = (_PACKAGE / "hashing" / "kernels", _PACKAGE.parent / "kernels")
_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)
_ONCE = re.compile(r"^#pragma once\s*$", re.M)


# -- probe ---------------------------------------------------------------------------------------------
@functools.cache
def unavailable_reason() -> str | None:
    """Why no CUDA backend can run here (None when they can). Never raises; probed once."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
        return "no CUDA GPU is visible"
    except ImportError:
        return "CuPy is not installed (pip install 'sentry-artifacts[gpu]')"
    except Exception as exc:  # no driver, driver too old, device busy, ...
        return f"no usable CUDA GPU ({type(exc).__name__}: {exc})"


def available() -> bool:
    return unavailable_reason() is None


# -- device choice -------------------------------------------------------------------------------------
def resolve_device(device: str, purpose: str = "hashing") -> Backend:
    """The backend that runs ``purpose`` ("hashing", "batch ECDSA"): "auto" is CUDA when CuPy sees a
    GPU, else the CPU. "cuda" without NumPy or CuPy is MissingDependency (naming the extra), and
    without a usable GPU an error that says why, with the remedy device='cpu'."""
    if device not in DEVICES:
        raise InvalidInput(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu" or (device == "auto" and not installed("cupy")):
        return "cpu"  # without CuPy, 'auto' need not import it (nor NumPy) to know
    if device == "cuda":
        require("numpy", "gpu", f"{purpose} on CUDA")
    reason = unavailable_reason()
    if reason is None:
        return "cuda"
    if device == "auto":
        return "cpu"
    require("cupy", "gpu", f"{purpose} on CUDA")  # not installed, or broken: that is the sentence
    raise SentryError(f"{purpose} on CUDA needs a usable GPU: {reason}", remedy=Remedy("device", "'cpu'"))


# -- kernel sources ------------------------------------------------------------------------------------
def kernel_dir() -> Path:
    for d in _DIRS:
        if (d / "merkle.cu").is_file():
            return d
    raise SentryError("the CUDA kernel sources (kernels/merkle.cu) are missing from this installation")


def source(name: str) -> str:
    """``name`` with its local includes inlined, each once (as their #pragma once asks)."""
    d, seen = kernel_dir(), set()

    def expand(file: str) -> str:
        if file in seen:
            return ""
        seen.add(file)
        text = _ONCE.sub("", (d / file).read_text())
        return _INCLUDE.sub(lambda m: expand(m.group(1)), text)

    return expand(name)


# -- per-device caches ---------------------------------------------------------------------------------
T = TypeVar("T")
_CACHES: weakref.WeakSet[PerDevice[Any]] = weakref.WeakSet()  # every cache, for clear_caches()


class PerDevice(Generic[T]):
    """``build(device_id)`` done once per device, however many threads ask at once: the file
    reader threads all want the kernels at their first block, and neither a dict nor
    ``functools.lru_cache`` stops two first calls from compiling (and loading) twice."""

    def __init__(self, build: Callable[[int], T]):
        self._build, self._lock = build, threading.Lock()
        self._built: dict[int, T] = {}
        _CACHES.add(self)

    def get(self, device_id: int) -> T:
        try:
            return self._built[device_id]
        except KeyError:
            with self._lock:  # one build at a time; later callers find it done
                if device_id not in self._built:
                    self._built[device_id] = self._build(device_id)
                return self._built[device_id]

    def clear(self) -> None:
        """Forget every build (tests that swap CuPy or the kernel source)."""
        with self._lock:
            self._built.clear()


def _compile(name: str, device_id: int) -> Any:  # a cupy.RawModule
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=source(name), options=NVRTC_OPTIONS)


_modules: dict[str, PerDevice[Any]] = {}  # source name -> its RawModule per device
_modules_lock = threading.Lock()


def raw_module(name: str, device_id: int) -> Any:
    """The CuPy RawModule of ``kernels/name`` on GPU ``device_id``, compiled on first use (CuPy
    also caches the binary on disk, per source text, options and architecture)."""
    with _modules_lock:
        cache = _modules.get(name)
        if cache is None:
            cache = _modules[name] = PerDevice(functools.partial(_compile, name))
    return cache.get(device_id)


def clear_caches() -> None:
    """Forget the probe and everything built per device (tests that swap CuPy or a kernel source)."""
    unavailable_reason.cache_clear()
    for cache in list(_CACHES):
        cache.clear()
