"""nvcc compiles every CUDA source in kernels/ for sm_90 (Hopper), with no GPU needed.

Also compiled: the single text each CUDA backend hands NVRTC (includes inlined), by nvcc and by
NVRTC itself with the backends' options (the run-time path; NVRTC lacks the system headers). ptxas must keep
every kernel free of spills, and the Merkle kernels free of stack frames too (the SHA-256 state and
schedule stay in registers; the ECDSA kernels keep local arrays and call arguments on the stack).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import REPO

from sentry import _gpu

KERNELS = REPO / "kernels"
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
REGISTER_ONLY = {"merkle.cu", "sha256_rate.cu"}


def nvcc_cubin(src: Path, out: Path, arch: str = "sm_90") -> str:
    proc = subprocess.run(
        [NVCC, f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-o", str(out), str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    return proc.stderr


@needs_nvcc
@pytest.mark.parametrize("src", sorted(KERNELS.glob("*.cu")), ids=lambda p: p.name)
def test_nvcc_compiles_for_sm90(src, tmp_path):
    report = nvcc_cubin(src, tmp_path / (src.stem + ".cubin"))
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert frames, report
    assert all(f[1:] == ("0", "0") for f in frames), report
    if src.name in REGISTER_ONLY:
        assert all(f[0] == "0" for f in frames), report


@needs_nvcc
def test_merkle_kernels_fit_four_blocks_per_sm(tmp_path):
    """The launch bounds hold without spills: at most 64 registers per thread, and shared memory for
    4 blocks per H100/H200 SM (228 KiB, 1 KiB of it reserved per block), so 32 of 64 warps stay
    resident to hide the memory latency (bench/merkle_sass.py prints the full report)."""
    report = nvcc_cubin(KERNELS / "merkle.cu", tmp_path / "merkle.cubin")
    used = dict(re.findall(r"Compiling entry function '(\w+)'.*?Used (\d+) registers", report, re.S))
    assert set(used) == {"merkle_leaves", "merkle_level", "merkle_roots"}, report
    assert all(int(n) <= 64 for n in used.values()), report
    smem = [int(n) for n in re.findall(r"(\d+) bytes smem", report)]
    assert smem and 4 * (max(smem) + 1024) <= 228 * 1024, report


@needs_nvcc
def test_merkle_compiles_without_cp_async_for_turing(tmp_path):
    """Before sm_80 the leaf kernel stages with plain loads (merkle_leaves.cuh); sm_90 builds never
    compile that path, so it is built here for sm_75, without spills."""
    report = nvcc_cubin(KERNELS / "merkle.cu", tmp_path / "merkle75.cubin", "sm_75")
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert len(frames) == 3 and all(f == ("0", "0", "0") for f in frames), report


@needs_nvcc
def test_runtime_source_compiles(tmp_path):
    """The text NVRTC gets at run time is self-contained and compiles to the same kernels."""
    text = _gpu.source("merkle.cu")
    assert '#include "' not in text
    src = tmp_path / "merkle_rtc.cu"
    src.write_text(text)
    report = nvcc_cubin(src, tmp_path / "merkle_rtc.cubin")
    assert report.count("Compiling entry function") == 3, report


@needs_nvcc
def test_verity_runtime_source_compiles(tmp_path):
    """kernels/verity.cu as NVRTC gets it (sha256_stream.cuh and sha256.cuh inlined): one kernel."""
    src = tmp_path / "verity_rtc.cu"
    src.write_text(_gpu.source("verity.cu"))
    report = nvcc_cubin(src, tmp_path / "verity_rtc.cubin")
    assert re.findall(r"Compiling entry function '(\w+)'", report) == ["verity_level"], report

def _nvrtc():
    import ctypes
    import ctypes.util

    from support import nvidia_wheel_file

    builtins = nvidia_wheel_file("cu*/lib/libnvrtc-builtins.so.*")
    if builtins is not None:  # NVRTC dlopens it by name; the wheel's directory is on no search path
        ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
    for name in (ctypes.util.find_library("nvrtc"), nvidia_wheel_file("cu*/lib/libnvrtc.so.*"), "libnvrtc.so.13"):
        if name:
            try:
                return ctypes.CDLL(str(name))
            except OSError:
                continue
    pytest.skip("NVRTC (libnvrtc) is not installed: pip install nvidia-cuda-nvrtc")


@pytest.mark.parametrize("name, kernels", [("merkle.cu", 3), ("ecdsa.cu", 3)])
def test_nvrtc_compiles_the_runtime_source_for_sm90(name, kernels):
    """What CuPy's RawModule does on a GPU, minus the GPU: NVRTC on _gpu.source(name)."""
    import ctypes

    lib = _nvrtc()
    prog = ctypes.c_void_p()
    text = _gpu.source(name).encode()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), text, name.encode(), 0, None, None) == 0
    options = [o.encode() for o in _gpu.NVRTC_OPTIONS] + [b"--gpu-architecture=sm_90"]
    try:
        rc = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        assert rc == 0, log.value.decode(errors="replace")
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        assert lib.nvrtcGetCUBIN(prog, cubin) == 0
        assert cubin.raw[:4] == b"\x7fELF" and cubin.raw.count(b".text.") >= kernels
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))

