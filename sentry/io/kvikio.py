"""File bytes straight into GPU memory with kvikio's CuFile: GPUDirect Storage where the system
has it, kvikio's compatibility mode (POSIX reads through a bounce buffer) otherwise.

:class:`DeviceFileSource` is a :class:`~sentry.io.posix.FileSource` (opened and checked: regular
file, no symlink unless allowed, unchanged at the end) that can also read byte ranges into device
buffers. Its CuFile is opened on ``/proc/self/fd/N`` of FileSource's own descriptor, so kvikio
reads the very file FileSource checked even if the path is swapped in between; the CuFile's
descriptor is compared with FileSource's as well. The CUDA backend hashes files through it
(``sentry.hashing.cuda.file_reader()`` says whether it is in use).

:class:`DeviceFileReader` streams one file through ``depth`` (at least two) device buffers: the
reads of the next blocks are in flight while the caller hashes the current one. The caller must
be done with a yielded block (its kernels synchronized) before asking for the next, because that
buffer is then refilled.

cuFile reads the settings in ``CUFILE_ENV_PATH_JSON``; Sentry points it at its documented
``cufile.json`` (installed with the package) unless it is already set. kvikio and CuPy are imported only here, when
a GPU path asks for them.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from .._optional import require
from ..errors import SentryError
from .posix import FileSource, read_error, short_read_error

__all__ = [
    "BLOCK_BYTES",
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "MIN_DEPTH",
    "DeviceFileReader",
    "DeviceFileSource",
    "PendingRead",
    "available",
    "configure_cufile",
    "gds_enabled",
]

CONFIG_ENV = "CUFILE_ENV_PATH_JSON"
# The repository's documented settings (cufile.json), used unless the environment already names a
# file: installed inside the package (setup.py copies it there), else at the top of a checkout.
_HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = next((p for p in (_HERE / "cufile.json", _HERE.parents[1] / "cufile.json") if p.is_file()),
                      _HERE / "cufile.json")
# Bytes per device buffer of DeviceFileReader, and per read of the CUDA backend's file path
# (several such reads fill one of its buffers); cufile.json's max_direct_io_size_kb is sized for it.
BLOCK_BYTES = 16 << 20
MIN_DEPTH = 2


def configure_cufile() -> str | None:
    """Point cuFile at Sentry's cufile.json unless CUFILE_ENV_PATH_JSON is set; the file in use."""
    if CONFIG_ENV not in os.environ and DEFAULT_CONFIG.is_file():
        os.environ[CONFIG_ENV] = str(DEFAULT_CONFIG)
    return os.environ.get(CONFIG_ENV)


def _kvikio():
    configure_cufile()  # before kvikio opens the cuFile driver
    cupy = require("cupy", "gpu", "reading files into GPU memory")
    return require("kvikio", "gpu", "reading files into GPU memory"), cupy


def available() -> bool:
    """True when kvikio and CuPy import, so files can be read straight into device memory."""
    try:
        _kvikio()
    except SentryError:
        return False
    return True


def gds_enabled() -> bool:
    """kvikio's process-wide default: True when it tries GPUDirect Storage for each file, False
    when every file is read in its compatibility mode. A file can still fall back to
    compatibility mode on its own: ``DeviceFileSource.gds`` says, per file."""
    kvikio, _ = _kvikio()
    return not kvikio.defaults.is_compat_mode_preferred()


class DeviceFileSource(FileSource):
    """A FileSource whose byte ranges kvikio can also read into device memory (``read_device``,
    ``start_read``); closing it closes both.

    ``gds`` says whether kvikio reads this file through GPUDirect Storage: its default is GDS and
    the file opens with O_DIRECT, which cuFile needs (kvikio falls back to compatibility mode for a
    file that does not, e.g. on tmpfs). kvikio's Python API (26.10) does not report its one other
    per-file fallback, cuFile refusing to register the file."""

    def __init__(self, path, *, follow_symlinks: bool = False):
        kvikio, _ = _kvikio()
        super().__init__(path, follow_symlinks=follow_symlinks)
        try:
            # kvikio opens by path (twice: with and without O_DIRECT); this path names the file
            # FileSource opened, whatever the original path points to by now.
            self._cufile = kvikio.CuFile(f"/proc/self/fd/{self.fileno()}", "r")
        except Exception as exc:  # kvikio raises RuntimeError subclasses with the driver's text
            self.close()
            raise SentryError(f"cannot open {self.path} for GPU reads: {exc}") from None
        st = os.fstat(self._cufile.fileno())
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            self.close()
            raise SentryError(f"{self.path} was opened for GPU reads as another file")

    @functools.cached_property
    def gds(self) -> bool:
        """Asked while the file is open; probed once, on demand: hashing never pays the extra open."""
        kvikio, _ = _kvikio()
        if kvikio.defaults.is_compat_mode_preferred():
            return False
        try:
            fd = os.open(f"/proc/self/fd/{self.fileno()}", os.O_RDONLY | os.O_DIRECT)
        except OSError:  # EINVAL where the file system has no direct I/O
            return False
        os.close(fd)
        return True

    def start_read(self, offset: int, buf) -> PendingRead:
        """Begin reading ``buf.nbytes`` bytes at ``offset`` into the device array ``buf``."""
        return PendingRead(self, offset, buf, self._cufile.pread(buf, buf.nbytes, offset))

    def read_device(self, offset: int, buf) -> None:
        """Fill the device array ``buf`` with the bytes at ``offset``; SentryError if the file ends first."""
        self.start_read(offset, buf).wait()

    def close(self) -> None:
        cufile = getattr(self, "_cufile", None)  # absent when FileSource's checks failed
        if cufile is not None:
            self._cufile = None
            cufile.close()
        super().close()


class PendingRead:
    """A read into the device array ``buf`` in flight; ``wait()`` returns once its bytes are there."""

    def __init__(self, src: DeviceFileSource, offset: int, buf, future):
        self.src, self.offset, self.buf, self._future = src, offset, buf, future

    def wait(self) -> None:
        try:
            got = self._future.get()
        except Exception as exc:  # kvikio's compatibility mode reports an early end as "EOF"
            raise read_error(self.src.path, exc) from None
        if got != self.buf.nbytes:
            raise short_read_error(self.src.path, self.offset, self.buf.nbytes, got)


class DeviceFileReader:
    """``blocks(offset, size)`` yields ``(offset, device uint8 array)`` for consecutive blocks."""

    def __init__(self, path, block_bytes: int = BLOCK_BYTES, depth: int = MIN_DEPTH, *, follow_symlinks=False):
        if depth < MIN_DEPTH:
            raise SentryError(f"at least {MIN_DEPTH} device buffers are needed to overlap reading and hashing")
        _, cupy = _kvikio()
        self.src = DeviceFileSource(path, follow_symlinks=follow_symlinks)
        self.size, self.block_bytes = self.src.size, block_bytes
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
            pending[k] = self.src.start_read(starts[k], self._buffers[k % depth][:n])

        try:
            for k in range(min(depth, len(starts))):
                issue(k)
            for k, start in enumerate(starts):
                read = pending.pop(k)
                read.wait()
                yield start, read.buf
                if k + depth < len(starts):
                    issue(k + depth)  # the caller is done with this buffer: refill it with a later block
        finally:
            # Stopped early (an error, or the caller left): no read may still write into the
            # buffers or use the file once this returns.
            for read in pending.values():
                with contextlib.suppress(SentryError):
                    read.wait()
        self.src.check_unchanged()

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> DeviceFileReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
