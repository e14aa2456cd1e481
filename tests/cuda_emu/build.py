"""Compiles kernel source text, as handed to ``cupy.RawModule``, into a host library with g++.

The text is compiled as it is, after ``#include "cuda_emu.h"`` (tests/native/cuda_emu.h) and
followed by a registration line for every ``extern "C" __global__ void NAME(`` in it, which records
each kernel's parameter sizes for the launcher. Libraries are cached under the build directory by
a hash of the text, the header and the flags, and written atomically (reader threads may compile
the same module at once).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[1] / "native"
HEADER = NATIVE / "cuda_emu.h"
FLAGS = ("-O2", "-g0", "-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-strict-aliasing",
         "-Wall", "-Wno-unused-function", "-Wno-unused-variable", "-Werror")
FLAGS_ENV = "SENTRY_EMU_FLAGS"  # extra g++ flags, e.g. -fsanitize=address,undefined (tests/test_emulator_sanitizers.py)
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')
_lock = threading.Lock()
_loaded: dict = {}


def compiler():
    """The g++ to build with, or None."""
    return shutil.which("g++")


def kernel_names(code: str) -> list:
    return _KERNEL.findall(code)


def flags() -> tuple:
    return FLAGS + tuple(os.environ.get(FLAGS_ENV, "").split())


def load(code: str, build_dir: Path) -> ctypes.CDLL:
    """The library of ``code``, compiled once per text, header and flags."""
    text = f'#include "cuda_emu.h"\n#line 1 "kernel"\n{code}\n' + "".join(
        f"EMU_REGISTER({name})\n" for name in kernel_names(code))
    key = hashlib.sha256("\0".join((text, HEADER.read_text(), *flags())).encode()).hexdigest()[:24]
    with _lock:
        if key not in _loaded:
            _loaded[key] = _library(ctypes.CDLL(str(_compile(text, Path(build_dir) / f"emu-{key}.so"))))
        return _loaded[key]


def _compile(text: str, out: Path) -> Path:
    if out.exists():
        return out
    gxx = compiler()
    if gxx is None:
        raise RuntimeError("the CUDA emulator needs g++")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src, lib = Path(tmp) / "kernel.cpp", Path(tmp) / "kernel.so"
        src.write_text(text)
        run = subprocess.run([gxx, *flags(), f"-I{NATIVE}", "-o", str(lib), str(src)], capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"g++ failed on the kernel source:\n{run.stderr[-4000:]}")
        os.replace(lib, out)
    return out


def _library(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.emu_launch.restype = ctypes.c_int
    lib.emu_launch.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                               ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), ctypes.c_int,
                               ctypes.c_int, ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_size_t]
    lib.emu_stack_high_water.restype = ctypes.c_size_t
    return lib
