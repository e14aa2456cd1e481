"""The ECDSA headers build warning-free with g++ (the CPU tests load that build) and ecdsa.cu
compiles with NVRTC; nvcc compiles every kernel in tests/test_kernels_build.py."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from p256_host import HARNESS, KERNELS

def test_headers_build_without_warnings_in_gxx():
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ is not installed")
    run = subprocess.run([cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                          "-fsyntax-only", f"-I{KERNELS}", str(HARNESS)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def _nvrtc():
    import ctypes
    import ctypes.util

    for name in (ctypes.util.find_library("nvrtc"), "libnvrtc.so.13", "libnvrtc.so"):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    pytest.skip("NVRTC (libnvrtc) is not installed")


def test_nvrtc_compiles_ecdsa_for_sm90():
    """The run-time path (CuPy RawModule): NVRTC, whose headers lack <stdint.h>."""
    import ctypes

    lib = _nvrtc()
    prog = ctypes.c_void_p()
    source = (KERNELS / "ecdsa.cu").read_bytes()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, b"ecdsa.cu", 0, None, None) == 0
    options = [b"-std=c++17", f"-I{KERNELS}".encode(), b"--gpu-architecture=sm_90"]
    rc = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert rc == 0, log.value.decode(errors="replace")
