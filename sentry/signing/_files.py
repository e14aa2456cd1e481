"""Write a file whole or not at all: a temporary file in the same directory, then a rename."""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sentry.errors import SentryError

__all__ = ["commit", "write_atomic", "write_temp"]


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def write_temp(path: Path, data, mode: int) -> Path:
    """Write ``data`` (bytes, or an iterable of bytes written as it yields them: a sidecar of
    millions of lines need not be held whole) to a new temporary file beside ``path``, created
    with ``mode``; an exception on the way removes it.

    The file is created with ``mode`` in the same system call (O_CREAT|O_EXCL), so a 0o600
    file is never readable by others, not even for a moment. Returns the temporary path.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    tmp = _temp_path(path)
    try:
        fd = os.open(tmp, flags, mode)
    except FileNotFoundError:
        raise SentryError(f"cannot write {path}: its directory does not exist") from None
    except OSError as exc:
        raise SentryError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise SentryError(f"cannot write {path}: {exc.strerror}") from None
        raise
    return tmp


def commit(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Move the temporary file into place; without ``overwrite``, never replace a file."""
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target exists, atomically: no check-then-write race.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise SentryError(
                    f"{path} already exists; refusing to overwrite it"
                ) from None
            except OSError:
                # File systems without hard links: fall back to a check, then a rename.
                if os.path.lexists(path):
                    raise SentryError(f"{path} already exists; refusing to overwrite it") from None
                os.replace(tmp, path)
    except OSError as exc:
        raise SentryError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | os.PathLike, data, *, mode: int = 0o666,
                 overwrite: bool = True) -> None:
    """Write ``data`` (bytes or an iterable of bytes) to ``path`` whole or not at all (``mode``
    is filtered by the umask)."""
    path = Path(path)
    tmp = write_temp(path, data, mode)
    commit(tmp, path, overwrite=overwrite)
