"""Fixtures and hooks shared by the test modules."""
import os

import pytest
from import_guard import layout_errors
from support import TESTS, make_keys


def pytest_sessionstart(session):
    """Stop before collecting when a test module imports another or two share a name (import_guard.py)."""
    errors = layout_errors(TESTS)
    if errors:
        pytest.exit("tests/ breaks its layout rules (tests/README.md):\n  " + "\n  ".join(errors), returncode=4)


@pytest.fixture
def keys(tmp_path):
    """A fresh P-256 key pair (private, public) as PEM files in the test's directory."""
    return make_keys(tmp_path)


@pytest.fixture(scope="session")
def emu_build_dir(tmp_path_factory):
    """Where the CUDA emulator's kernel libraries are built: $SENTRY_EMU_CACHE (kept between runs) or
    a directory of this session."""
    from cuda_emu import build

    if build.compiler() is None:
        pytest.skip("the CUDA emulator needs g++")
    return os.environ.get("SENTRY_EMU_CACHE") or tmp_path_factory.mktemp("emu")


@pytest.fixture
def emu_cupy(monkeypatch, emu_build_dir):
    """A fake CuPy whose kernels run on the CPU launch emulator (tests/cuda_emu)."""
    import cuda_emu

    yield cuda_emu.install(monkeypatch, emu_build_dir)
    cuda_emu.clear_caches()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With SENTRY_REQUIRE_GPU=1 (scripts/gpu-check.sh sets it), a ``gpu`` test that skips (no GPU,
    no kvikio, torch without CUDA) fails instead: on the GPU machine a skip would hide a gap."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SENTRY_REQUIRE_GPU") == "1" and item.get_closest_marker("gpu"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"gpu test skipped under SENTRY_REQUIRE_GPU=1: {reason}"
