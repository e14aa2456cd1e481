"""Compiles kernel source text, as handed to ``cupy.RawModule``, into a host library with g++.

The text is compiled as it is, after ``#include "cuda_emu.h"`` (tests/native/cuda_emu.h) and
followed by a registration line for every ``extern "C" __global__ void NAME(`` in it, which records
each kernel's parameter sizes for the launcher, and linked with the emulator's runtime
(tests/native/cuda_emu_runtime.cpp, compiled once per set of flags). Objects and libraries are
cached under the build directory by a hash of their sources and flags, and written atomically
(reader threads may compile the same module at once).
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
HEADER, RUNTIME = NATIVE / "cuda_emu.h", NATIVE / "cuda_emu_runtime.cpp"
FLAGS = ("-O2", "-g0", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing",
         "-Wall", "-Wno-unused-function", "-Wno-unused-variable", "-Werror")
FLAGS_ENV = "SENTRY_EMU_FLAGS"  # extra g++ flags, e.g. -fsanitize=address,undefined (tests/native/test_emulator_sanitizers.py)
# extern "C" then qualifiers (one of them __global__; __launch_bounds__(...) before or after void) then NAME(
_KERNEL = re.compile(r'extern\s+"C"\s+((?:__\w+__(?:\([^)]*\))?\s+)+)void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')
_lock = threading.Lock()
_loaded: dict = {}


def compiler():
    """The g++ to build with, or None."""
    return shutil.which("g++")


def kernel_names(code: str) -> list:
    return [name for qualifiers, name in _KERNEL.findall(code) if "__global__" in qualifiers]


def flags() -> tuple:
    return FLAGS + tuple(os.environ.get(FLAGS_ENV, "").split())


def load(code: str, build_dir: Path) -> ctypes.CDLL:
    """The library of ``code``, compiled once per text, header and flags."""
    text = f'#include "cuda_emu.h"\n#line 1 "kernel"\n{code}\n' + "".join(
        f"EMU_REGISTER({name})\n" for name in kernel_names(code))
    build_dir = Path(build_dir)
    with _lock:
        runtime = _compile(RUNTIME.read_text(), build_dir, ".o", ["-c"])
        key = _key(text, runtime.name)
        if key not in _loaded:
            _loaded[key] = _library(ctypes.CDLL(str(_compile(text, build_dir, ".so", ["-shared", str(runtime)]))))
        return _loaded[key]


def _key(text: str, *more: str) -> str:
    return hashlib.sha256("\0".join((text, HEADER.read_text(), *flags(), *more)).encode()).hexdigest()[:24]


def _compile(text: str, build_dir: Path, suffix: str, args: list) -> Path:
    """``text`` compiled with ``args`` (and the flags) into build_dir, unless it is there already."""
    out = build_dir / f"emu-{_key(text, *args)}{suffix}"
    if out.exists():
        return out
    gxx = compiler()
    if gxx is None:
        raise RuntimeError("the CUDA emulator needs g++")
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        src, obj = Path(tmp) / "source.cpp", Path(tmp) / f"out{suffix}"
        src.write_text(text)
        run = subprocess.run([gxx, *flags(), f"-I{NATIVE}", f"-I{NATIVE / 'emu_include'}", "-o", str(obj), str(src), *args], capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"g++ failed:\n{run.stderr[-4000:]}")
        os.replace(obj, out)
    return out


def _library(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.emu_launch.restype = ctypes.c_int
    lib.emu_launch.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                               ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), ctypes.c_int,
                               ctypes.c_int, ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_size_t]
    lib.emu_stack_high_water.restype = ctypes.c_size_t
    return lib
