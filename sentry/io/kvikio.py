"""File bytes straight into GPU memory with kvikio's CuFile: GPUDirect Storage where the system
has it, kvikio's compatibility mode (POSIX reads through a bounce buffer) otherwise.

:class:`DeviceFileReader` streams one file through ``depth`` (at least two) device buffers: the
reads of the next blocks are in flight while the caller hashes the current one. The caller must
be done with a yielded block (its kernels synchronized) before asking for the next, because that
buffer is then refilled. The file is opened and checked by :class:`~sentry.io.posix.FileSource`
first (regular file, no symlink unless allowed) and must be unchanged after its last block.
kvikio and CuPy are imported only here, when a GPU path asks for them.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import SentryError
from .posix import FileSource

CONFIG_ENV = "CUFILE_ENV_PATH_JSON"
# The repository's documented settings; used unless the environment already names a file.
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "cufile.json"
MIN_DEPTH = 2


def configure_cufile() -> str | None:
    """Point cuFile at Sentry's cufile.json unless CUFILE_ENV_PATH_JSON is set; the file in use."""
    if CONFIG_ENV not in os.environ and DEFAULT_CONFIG.is_file():
        os.environ[CONFIG_ENV] = str(DEFAULT_CONFIG)
    return os.environ.get(CONFIG_ENV)


def _kvikio():
    configure_cufile()  # before kvikio opens the cuFile driver
    try:
        import cupy
        import kvikio
    except ImportError:
        raise SentryError("reading files into GPU memory needs kvikio and CuPy: pip install 'sentry-artifacts[gpu]'") from None
    return kvikio, cupy


def gds_enabled() -> bool:
    """True when reads go through GPUDirect Storage, False in kvikio's compatibility mode."""
    kvikio, _ = _kvikio()
    return not kvikio.defaults.is_compat_mode_preferred()


class DeviceFileReader:
    """``blocks(offset, size)`` yields ``(offset, device uint8 array)`` for consecutive blocks."""

    def __init__(self, path, block_bytes: int = 16 << 20, depth: int = MIN_DEPTH, *, follow_symlinks=False):
        if depth < MIN_DEPTH:
            raise SentryError(f"at least {MIN_DEPTH} device buffers are needed to overlap reading and hashing")
        kvikio, cupy = _kvikio()
        self.src = FileSource(path, follow_symlinks=follow_symlinks)
        self.size, self.block_bytes = self.src.size, block_bytes
        try:
            self._file = kvikio.CuFile(self.src.path, "r")
        except Exception as exc:  # kvikio raises RuntimeError subclasses with driver text
            self.src.close()
            raise SentryError(f"cannot open {self.src.path} for GPU reads: {exc}") from None
        self._buffers = [cupy.empty(block_bytes, dtype=cupy.uint8) for _ in range(depth)]

    def blocks(self, offset: int = 0, size: int | None = None):
        size = self.size - offset if size is None else size
        if offset < 0 or size < 0 or offset + size > self.size:
            raise SentryError(f"{self.src.path} is {self.size} bytes, too short for {size} bytes at offset {offset}")
        starts = list(range(offset, offset + size, self.block_bytes))
        depth = len(self._buffers)
        pending = {}

        def issue(k):
            n = min(self.block_bytes, offset + size - starts[k])
            buf = self._buffers[k % depth][:n]
            pending[k] = (buf, self._file.pread(buf, n, starts[k]))

        for k in range(min(depth, len(starts))):
            issue(k)
        for k, start in enumerate(starts):
            buf, future = pending.pop(k)
            got = future.get()
            if got != len(buf):
                raise SentryError(f"{self.src.path} ended early: read {got} of {len(buf)} bytes at offset {start}")
            yield start, buf
            if k + depth < len(starts):
                issue(k + depth)  # the caller is done with this buffer: refill it with a later block
        self.src.check_unchanged()

    def close(self) -> None:
        self._file.close()
        self.src.close()

    def __enter__(self) -> "DeviceFileReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
