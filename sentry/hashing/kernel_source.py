"""The CUDA sources of ``kernels/``, as one text for NVRTC.

They are found inside the package (``sentry/hashing/kernels/``, copied there when a wheel is
built: see setup.py) or, in a source checkout or editable install, in ``kernels/`` at the top of
the repository. Local ``#include "x.cuh"`` lines are inlined, so the text handed to NVRTC is
the whole program: CuPy's on-disk cache is keyed by that text, and a changed header can never
reuse a stale binary. :class:`PerDevice` keeps what is built from them once per GPU.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

from ..errors import SentryError

_HERE = Path(__file__).resolve().parent
_DIRS = (_HERE / "kernels", _HERE.parents[1] / "kernels")
_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)
_ONCE = re.compile(r"^#pragma once\s*$", re.M)
# What every kernel is compiled with at run time (CuPy adds the GPU's architecture).
NVRTC_OPTIONS = ("-std=c++17",)


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


class PerDevice:
    """``build(device_id)`` done once per device, however many threads ask at once: the file
    reader threads all want the kernels at their first block, and neither a dict nor
    ``functools.lru_cache`` stops two first calls from compiling (and loading) twice."""

    def __init__(self, build):
        self._build, self._lock, self._built = build, threading.Lock(), {}

    def get(self, device_id: int):
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
