"""Every CUDA source in kernels/ compiles for Hopper (sm_90) with nvcc, as CI checks; the
headers also build warning-free with g++ (the CPU tests load that build)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from p256_host import HARNESS, KERNELS

SOURCES = sorted(KERNELS.glob("*.cu"))


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_nvcc_compiles_for_sm90(source, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path / (source.stem + ".cubin")
    run = subprocess.run([nvcc, "-arch=sm_90", "-cubin", "-o", str(out), str(source)],
                         cwd=KERNELS, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 0


def test_headers_build_without_warnings_in_gxx():
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ is not installed")
    run = subprocess.run([cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                          "-fsyntax-only", f"-I{KERNELS}", str(HARNESS)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
