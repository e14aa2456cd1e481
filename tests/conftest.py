"""Fixtures shared by the test modules."""
import pytest

from support import make_keys


@pytest.fixture
def keys(tmp_path):
    """A fresh P-256 key pair (private, public) as PEM files in the test's directory."""
    return make_keys(tmp_path)


@pytest.fixture(scope="session")
def emu_build_dir(tmp_path_factory):
    """Where the CUDA emulator's kernel libraries are built: $SENTRY_EMU_CACHE (kept between runs) or
    a directory of this session."""
    import os

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
