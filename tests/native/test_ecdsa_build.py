"""The ECDSA headers build warning-free with g++ (the CPU tests load that build); nvcc and NVRTC
compile every kernel in tests/native/test_kernels_build.py. The signing
kernel's SASS passes tests/sass_ct.py, which must catch a secret table index and a secret branch
(runs where nvdisasm is installed)."""
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


SELECT_ROW = """        for (int i = 0; i < 8; i++) {
            uint32_t hit = ct_eq_u32(digit, (uint32_t)(i + 1));
            fe_cmov(q.x, table[8 * j + i].x, hit);
            fe_cmov(q.y, table[8 * j + i].y, hit);
        }"""


def _sass_checker():
    import sass_ct

    nvdisasm = sass_ct.find_nvdisasm()
    if nvdisasm is None or shutil.which("nvcc") is None:
        pytest.skip("needs nvcc and nvdisasm (pip install nvidia-cuda-nvdisasm)")
    return sass_ct, nvdisasm


def test_signing_sass_has_no_secret_dependent_branch_or_address():
    """tests/sass_ct.py on what nvcc makes of kernels/ecdsa.cu for sm_90."""
    sass_ct, nvdisasm = _sass_checker()
    assert sass_ct.check_sass(sass_ct.sass_of(KERNELS / "ecdsa.cu", KERNELS, nvdisasm)) == []


@pytest.mark.parametrize("leak", [
    "        q = table[8 * j + (digit & 7)];",  # the table entry read at the digit's index
    SELECT_ROW + "\n        if (negative) continue;",  # a branch on the digit's sign
], ids=["index", "branch"])
def test_the_sass_check_catches_a_leak(tmp_path, leak):
    sass_ct, nvdisasm = _sass_checker()
    for src in KERNELS.iterdir():
        if src.suffix in (".cu", ".cuh"):
            (tmp_path / src.name).write_text(src.read_text())
    point = tmp_path / "p256_point.cuh"
    assert SELECT_ROW in point.read_text()
    point.write_text(point.read_text().replace(SELECT_ROW, leak))
    problems = sass_ct.check_sass(sass_ct.sass_of(tmp_path / "ecdsa.cu", tmp_path, nvdisasm))
    assert any("scalar multiplication loop" in p for p in problems), problems
