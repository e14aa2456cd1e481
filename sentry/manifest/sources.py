"""Build a manifest from what is on disk: a directory, a single file, .safetensors tensors."""
from __future__ import annotations

import fnmatch
import functools
import os
import re
from pathlib import Path

from ..errors import SentryError
from ..hashing.params import HashParams
from ..io.posix import FileSource
from .item import FILE, TENSOR, Item
from .manifest import Manifest
from .safetensors import InvalidSafetensors, read_tensor_ranges

# Version-control and cache entries never belong to a model; matched against any path component.
DEFAULT_IGNORES = (".git", ".github", ".gitattributes", ".gitignore", ".hg", ".svn", "__pycache__", ".DS_Store")


@functools.lru_cache(maxsize=64)
def _matchers(patterns: tuple):
    """(match any component, match a path prefix): each pattern kind folded into one regex, since
    a dataset directory asks this once per file (100k+ times)."""

    def one(pats):
        return re.compile("|".join(fnmatch.translate(p) for p in pats)).match if pats else None

    pats = [p.strip("/") for p in patterns]
    return one([p for p in pats if "/" not in p]), one([p for p in pats if "/" in p])


def is_ignored(relpath: str, patterns) -> bool:
    """True if a pattern matches the path, one of its parent directories, or (for a pattern
    without '/') any single component of it."""
    return _ignored(relpath, *_matchers(tuple(patterns)))


def _ignored(relpath: str, component, prefix) -> bool:
    parts = [p for p in relpath.split("/") if p]
    if component:
        for c in parts:
            if component(c):
                return True
    return bool(prefix) and any(prefix("/".join(parts[: i + 1])) for i in range(len(parts)))


def pattern_skipper(ignore=()):
    """Sentry's rule for what a directory listing leaves out: the defaults plus ``ignore``."""
    matchers = _matchers(DEFAULT_IGNORES + tuple(ignore))  # looked up once, not once per file
    return lambda relpath: _ignored(relpath, *matchers)


def list_files(root: Path, skip, allow_symlinks=False, exclude=()) -> list[tuple[str, str]]:
    """Every regular file under ``root`` as (POSIX relative name, path to read), sorted by name.

    ``skip(relative name)`` leaves out a file, or a directory with everything below it. Paths are
    str, spelt as ``str(Path)`` would: a Path per file costs several hundred bytes (and interns
    every name), which at millions of dataset samples is most of the memory a listing takes."""
    return list(iter_files(root, skip, allow_symlinks, exclude))


def iter_files(root: Path, skip, allow_symlinks=False, exclude=()):
    """:func:`list_files` as a generator: one directory's entries are held at a time (not the
    listing of millions of samples), and errors come as the walk reaches them. A file created
    under ``root`` during the walk may or may not be seen."""
    root = Path(root)
    real_root = root.resolve()
    excluded = {os.path.abspath(p) for p in exclude}
    excluded_names = {os.path.basename(p) for p in excluded}  # abspath() only for these names

    def walk(directory: Path, rel: str):
        try:
            # A directory sorts as its name + "/": then depth-first order is the code-point order of
            # the full names ("a-b" and "a.txt" before "a/x", since "-" and "." sort before "/").
            entries = sorted(os.scandir(directory), key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
        except OSError as exc:
            raise SentryError(f"cannot read directory {directory}: {exc.strerror}") from None
        base = str(directory)  # normalized by Path: joined to a name, it is str(directory / name)
        base = "" if base == "." else base if base.endswith("/") else base + "/"
        for entry in entries:
            name = entry.name
            if not name.isascii():  # ASCII is valid UTF-8: the common case needs no encoding
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise SentryError(f"{directory}: a file name is not valid UTF-8") from None
            relname = f"{rel}{name}"
            if skip(relname) or (name in excluded_names and os.path.abspath(entry.path) in excluded):
                continue
            # The entry's type from the directory listing itself (d_type), as lstat would give
            # it; no system call per file unless the file system does not say.
            if entry.is_symlink():
                yield relname, str(_symlink_target(Path(entry.path), relname, real_root, allow_symlinks))
            elif entry.is_dir(follow_symlinks=False):
                yield from walk(Path(entry.path), relname + "/")
            elif entry.is_file(follow_symlinks=False):
                yield relname, base + name
            else:
                raise SentryError(f"{Path(entry.path)} is not a regular file (device, socket or pipe)")

    return walk(root, "")


def _symlink_target(path: Path, relname: str, real_root: Path, allowed: bool) -> Path:
    if not allowed:
        raise SentryError(f"{path} is a symbolic link; pass --allow-symlinks to hash what it points to")
    target = path.resolve()
    if not target.is_relative_to(real_root):
        raise SentryError(f"{path} is a symbolic link that points outside {real_root}")
    if not target.is_file():
        raise SentryError(f"{path} is a symbolic link to something other than a regular file")
    return target


def _stamp(st) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def file_ranges(name: str, path: Path, strict: bool):
    """The file's identity stamp, and its whole-file range plus, for .safetensors, one range per tensor.

    ``strict`` (signing) turns an invalid safetensors header into an error; when verifying, the
    file's own item already shows the change, so its tensors are simply not found.
    """
    with FileSource(path, follow_symlinks=True) as src:
        stamp = (src.size, src.mtime_ns, src.ino, src.dev)
        specs = [(Item(FILE, name, src.size, b""), 0, src.size)]
        if name.endswith(".safetensors"):
            try:
                for t in read_tensor_ranges(src):
                    specs.append((Item(TENSOR, t.name, t.size, b"", (), t.dtype, t.shape, name), t.offset, t.size))
            except InvalidSafetensors:
                if strict:
                    raise
    return stamp, specs


def files_of(path: Path, skip, allow_symlinks=False, exclude=()) -> tuple[str, list[tuple[str, Path]]]:
    """("directory", its files as ``list_files`` gives them) or ("file", [(its name, path to read)])."""
    if path.is_dir():
        return "directory", list_files(path, skip, allow_symlinks, exclude)
    if path.is_file() or path.is_symlink():
        if path.is_symlink() and not allow_symlinks:
            raise SentryError(f"{path} is a symbolic link; pass --allow-symlinks to hash what it points to")
        return "file", [(path.name, path.resolve() if allow_symlinks else path)]
    if path.exists():
        raise SentryError(f"{path} is not a regular file or directory")
    raise SentryError(f"{path} does not exist")


def manifest_for_path(
    path, params: HashParams, *, artifact_type="model", ignore=(), allow_symlinks=False,
    exclude=(), strict=True, progress=None, device="auto",
) -> Manifest:
    from ..hashing import digest_ranges, FileRange

    path = Path(path)
    source, files = files_of(path, pattern_skipper(ignore), allow_symlinks, exclude)
    if not files and artifact_type == "model":
        raise SentryError(f"{path} holds no files to hash")

    specs, ranges, stamps = [], [], {}
    for name, real in files:
        stamps[real], file_specs = file_ranges(name, real, strict)
        for item, offset, size in file_specs:
            specs.append(item)
            ranges.append(FileRange(real, offset, size))
    if hasattr(progress, "set_total"):
        progress.set_total(sum(r.size for r in ranges))
    digests = digest_ranges(ranges, params, progress=progress, device=device)
    # The engine checks each file from its own open to its last block; this closes the gap since
    # the listing, when the tensor ranges were read from the header.
    for real, stamp in stamps.items():
        try:
            unchanged = _stamp(os.stat(real)) == stamp
        except OSError:
            unchanged = False
        if not unchanged:
            raise SentryError(f"{real} changed while it was being hashed")
    items = [
        Item(it.kind, it.name, d.size, d.root, d.chunks if len(d.chunks) > 1 else (), it.dtype, it.shape, it.file)
        for it, d in zip(specs, digests)
    ]
    return Manifest(params, items, artifact_type, source, tuple(ignore), allow_symlinks)
