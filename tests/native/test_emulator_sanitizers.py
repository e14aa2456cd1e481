"""The emulated kernels under sanitizers: an ASan+UBSan build and a ThreadSanitizer build of the
emulator and the kernels, each in a Python subprocess with the sanitizer's runtime preloaded
(tests/cuda_emu/sanitized.py runs the cases). Clean over the real Merkle and ECDSA kernels, and
each sanitizer shown to report the planted bug it is there for."""
from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
from cuda_emu import build
from cuda_emu.sanitized import WORKERS_ENV
from support import REPO

ROOT = REPO
SANITIZERS = {
    "asan": ("libasan.so", "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer",
             {"ASAN_OPTIONS": "detect_leaks=0"}),
    "tsan": ("libtsan.so", "-fsanitize=thread", {WORKERS_ENV: "4", "TSAN_OPTIONS": "exitcode=66"}),
}


@functools.cache
def runtime(sanitizer: str):
    """The sanitizer's runtime library, or why it cannot run here."""
    if build.compiler() is None:
        return None, "g++ not found"
    found = subprocess.run([build.compiler(), f"-print-file-name={SANITIZERS[sanitizer][0]}"],
                           capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found):
        return None, f"{SANITIZERS[sanitizer][0]} is not installed"
    probe = subprocess.run([sys.executable, "-c", "pass"], env={**os.environ, **SANITIZERS[sanitizer][2], "LD_PRELOAD": found},
                           capture_output=True, text=True)
    if probe.returncode:
        return None, f"Python does not start with {found} preloaded: {probe.stderr[-300:]}"
    return found, None


def run(sanitizer: str, case: str, build_dir) -> subprocess.CompletedProcess:
    lib, why = runtime(sanitizer)
    if lib is None:
        pytest.skip(why)
    _, flags, extra = SANITIZERS[sanitizer]
    env = {**os.environ, **extra, "LD_PRELOAD": lib, build.FLAGS_ENV: flags, "SENTRY_EMU_CACHE": str(build_dir),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-m", "cuda_emu.sanitized", case], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["merkle", "ecdsa"])
def test_asan_and_ubsan_are_clean_over_the_real_kernels(emu_build_dir, case):
    out = run("asan", case, emu_build_dir)
    assert out.returncode == 0 and "all equal" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "runtime error" not in out.stderr and "AddressSanitizer:" not in out.stderr.replace("WARNING: ASan", "")


def test_asan_reports_a_read_past_an_allocation(emu_build_dir):
    out = run("asan", "oob", emu_build_dir)
    assert out.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in out.stderr and "past_the_end" in out.stderr, out.stderr[-3000:]


def test_asan_reports_the_leaf_kernel_reading_a_word_past_an_item(emu_build_dir):
    """The leaf kernel reads only the aligned 16-byte words that hold an item's bytes (clean above,
    items ending anywhere in their allocations' last word); one word more and ASan reports it."""
    out = run("asan", "overread", emu_build_dir)
    assert out.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in out.stderr, out.stdout + out.stderr[-3000:]


def test_tsan_is_clean_over_merkle_blocks_on_four_os_threads(emu_build_dir):
    out = run("tsan", "merkle", emu_build_dir)
    assert out.returncode == 0 and "all equal" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "ThreadSanitizer" not in out.stderr


def test_tsan_reports_a_planted_cross_block_race(emu_build_dir):
    out = run("tsan", "race", emu_build_dir)
    assert out.returncode == 66
    assert "WARNING: ThreadSanitizer: data race" in out.stderr and " race " in out.stderr, out.stderr[-3000:]
