"""nvcc compiles every CUDA source in kernels/ for sm_90 (Hopper), with no GPU needed.

Also compiled: the single text the CUDA backend hands NVRTC (includes inlined). ptxas must keep
every kernel free of spills, and the Merkle kernels free of stack frames too (the SHA-256 state and
schedule stay in registers; the ECDSA kernels keep local arrays and call arguments on the stack).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sentry.hashing import kernel_source

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
REGISTER_ONLY = {"merkle.cu", "sha256_rate.cu"}


def nvcc_cubin(src: Path, out: Path) -> str:
    proc = subprocess.run(
        [NVCC, "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-o", str(out), str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    return proc.stderr


@pytest.mark.parametrize("src", sorted(KERNELS.glob("*.cu")), ids=lambda p: p.name)
def test_nvcc_compiles_for_sm90(src, tmp_path):
    report = nvcc_cubin(src, tmp_path / (src.stem + ".cubin"))
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert frames, report
    assert all(f[1:] == ("0", "0") for f in frames), report
    if src.name in REGISTER_ONLY:
        assert all(f[0] == "0" for f in frames), report


def test_runtime_source_compiles(tmp_path):
    """The text NVRTC gets at run time is self-contained and compiles to the same kernels."""
    text = kernel_source.source("merkle.cu")
    assert '#include "' not in text
    src = tmp_path / "merkle_rtc.cu"
    src.write_text(text)
    report = nvcc_cubin(src, tmp_path / "merkle_rtc.cubin")
    assert report.count("Compiling entry function") == 3, report
