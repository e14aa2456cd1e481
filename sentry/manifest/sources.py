"""Build a manifest from what is on disk: a directory, a single file, .safetensors tensors."""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Literal

from ..errors import Remedy, SentryError
from ..hashing.params import HashParams
from ..io.posix import FileSource, path_too_long_error
from .ignore import DEFAULT_IGNORES, IgnoreRules
from .item import FILE, TENSOR, Item
from .manifest import Manifest
from .safetensors import InvalidSafetensors, read_tensor_ranges

__all__ = [
    "FOLLOW_LINKS",
    "file_ranges",
    "files_of",
    "hf_blobs",
    "iter_files",
    "list_files",
    "manifest_for_path",
    "stamp",
]

log = logging.getLogger(__name__)
FOLLOW_LINKS = Remedy("allow_symlinks", purpose="to hash what it points to")


def list_files(root: Path, skip, allow_symlinks=False, exclude=()) -> list[tuple[str, Path]]:
    """Every regular file under ``root`` as (POSIX relative name, path to read), sorted by name.

    ``skip(relative name, is_dir)`` (an :class:`IgnoreRules`) leaves out a file, or a directory
    with everything below it. Paths are str, spelt as ``str(Path)`` would: a Path per file costs
    several hundred bytes (and interns every name), which at millions of dataset samples is most
    of the memory a listing takes."""
    return list(iter_files(root, skip, allow_symlinks, exclude))


def iter_files(root: Path, skip, allow_symlinks=False, exclude=()):
    """:func:`list_files` as a generator: one sorted listing per directory on the way down is
    held at a time (not the listing of millions of samples), and errors come as the walk reaches
    them. The walk keeps its own stack, so any depth works. A file created under ``root`` during
    the walk may or may not be seen."""
    root = Path(root)
    real_root = root.resolve()
    blobs = hf_blobs(root)
    excluded = {os.path.abspath(p) for p in exclude}
    excluded_names = {os.path.basename(p) for p in excluded}  # abspath() only for these names

    def listing(directory: str, rel: str):
        try:
            # A directory sorts as its name + "/": then depth-first order is the code-point order of
            # the full names ("a-b" and "a.txt" before "a/x", since "-" and "." sort before "/").
            entries = sorted(os.scandir(directory), key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise path_too_long_error(directory) from None
            raise SentryError(f"cannot read directory {directory}: {exc.strerror}") from None
        base = "" if directory == "." else directory if directory.endswith("/") else directory + "/"
        return base, rel, iter(entries)

    def walk():
        stack = [listing(str(root), "")]  # str(Path): normalized, so base + name is str(directory / name)
        while stack:
            base, rel, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            name = entry.name
            if not name.isascii():  # ASCII is valid UTF-8: the common case needs no encoding
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise SentryError(f"{base or '.'}: a file name is not valid UTF-8") from None
            relname = f"{rel}{name}"
            # The entry's type from the directory listing itself (d_type), as lstat would give
            # it; no system call per file unless the file system does not say.
            is_dir = entry.is_dir(follow_symlinks=False)
            if (name in excluded_names and os.path.abspath(entry.path) in excluded) or skip(relname, is_dir):
                continue
            if entry.is_symlink():
                yield relname, str(_symlink_target(Path(entry.path), real_root, allow_symlinks, blobs))
            elif is_dir:
                stack.append(listing(base + name, relname + "/"))
            elif entry.is_file(follow_symlinks=False):
                yield relname, base + name
            else:
                raise SentryError(f"{Path(entry.path)} is not a regular file (device, socket or pipe)")

    return walk()


def hf_blobs(path: Path) -> Path | None:
    """The resolved ``blobs`` directory of the Hugging Face cache repository whose snapshot
    (``models--org--name/snapshots/REV``, also ``datasets--``) is or holds the directory
    ``path``, else None. A snapshot's files are symbolic links into its repository's ``blobs``,
    which are followed (those only) without ``--allow-symlinks``."""
    path = Path(os.path.abspath(path))
    for snapshot in (path, *path.parents):
        repo = snapshot.parent.parent
        if snapshot.parent.name == "snapshots" and repo.name.startswith(("models--", "datasets--")):
            blobs = repo / "blobs"  # itself a link, it could lead anywhere
            return blobs.resolve() if blobs.is_dir() and not blobs.is_symlink() and snapshot.is_dir() else None
    return None


def _symlink_target(path: Path, real_root: Path, allowed: bool, blobs: Path | None = None) -> Path:
    target = path.resolve()
    if blobs is not None and target.parent == blobs and target.is_file():
        return target  # a Hugging Face snapshot's file, stored in its own repository's blobs
    if not allowed:
        raise SentryError(f"{path} is a symbolic link", remedy=FOLLOW_LINKS)
    if not target.is_relative_to(real_root):
        raise SentryError(f"{path} is a symbolic link that points outside {real_root}")
    if not target.is_file():
        raise SentryError(f"{path} is a symbolic link to something other than a regular file")
    return target


def stamp(st) -> tuple:
    """What identifies a file's contents cheaply (from ``os.stat``): a change of it means the file changed."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def file_ranges(name: str, path: Path, strict: bool):
    """The file's identity stamp, and its whole-file range plus, for .safetensors, one range per tensor.

    ``strict`` (signing) turns an invalid safetensors header into an error; when verifying, the
    file's own item already shows the change, so its tensors are simply not found.
    """
    with FileSource(path, follow_symlinks=True) as src:
        before = (src.size, src.mtime_ns, src.ino, src.dev)
        specs = [(Item(FILE, name, src.size, b""), 0, src.size)]
        if name.endswith(".safetensors"):
            try:
                for t in read_tensor_ranges(src):
                    specs.append((Item(TENSOR, t.name, t.size, b"", (), t.dtype, t.shape, name), t.offset, t.size))
            except InvalidSafetensors:
                if strict:
                    raise
    return before, specs


def files_of(path: Path, skip, allow_symlinks=False, exclude=()) -> tuple[Literal["directory", "file"], list[tuple[str, Path]]]:
    """("directory", its files as ``list_files`` gives them) or ("file", [(its name, path to read)])."""
    if path.is_dir():
        return "directory", list_files(path, skip, allow_symlinks, exclude)
    if path.is_file() or path.is_symlink():
        if path.is_symlink():  # named by the user: followed wherever it points, when allowed
            target, blobs = path.resolve(), hf_blobs(path.parent)
            if not (allow_symlinks or (blobs is not None and target.parent == blobs)):
                raise SentryError(f"{path} is a symbolic link", remedy=FOLLOW_LINKS)
            return "file", [(path.name, target)]
        return "file", [(path.name, path)]
    if path.exists():
        raise SentryError(f"{path} is not a regular file or directory")
    raise SentryError(f"{path} does not exist")


def manifest_for_path(
    path, params: HashParams, *, artifact_type="model", ignore=(), default_ignores=DEFAULT_IGNORES,
    allow_symlinks=False, exclude=(), strict=True, progress=None, device="auto", ignored=None, signed_roots=None,
) -> Manifest:
    """The manifest of a directory or file; ``ignored`` (a list), if given, receives the paths
    that the ignore rules left out. A DCP checkpoint's ``.metadata`` (a pickle) whose name is in
    ``signed_roots`` (file name -> root, from a verified signature) is parsed only if its bytes
    have that root."""
    from ..hashing import FileRange, digest_ranges

    path = Path(path)
    source, files = files_of(path, IgnoreRules(ignore, default_ignores, ignored), allow_symlinks, exclude)
    if not files and artifact_type == "model":
        raise SentryError(f"{path} holds no files to hash")

    specs, ranges, stamps = [], [], {}
    for name, real in files:
        stamps[real], file_specs = file_ranges(name, real, strict)
        for item, offset, size in file_specs:
            specs.append(item)
            ranges.append(FileRange(real, offset, size))
    log.debug("%s: %d files, %d items (%d ranges to hash)", path, len(files), len(specs), len(ranges))
    if hasattr(progress, "set_total"):
        progress.set_total(sum(r.size or 0 for r in ranges))  # file_ranges gives every size
    digests = digest_ranges(ranges, params, progress=progress, device=device)
    # The engine checks each file from its own open to its last block; this closes the gap since
    # the listing, when the tensor ranges were read from the header.
    for real, before in stamps.items():
        try:
            unchanged = stamp(os.stat(real)) == before
        except OSError:
            unchanged = False
        if not unchanged:
            raise SentryError(f"{real} changed while it was being hashed")
    items = [
        Item(it.kind, it.name, d.size, d.root, d.chunks if len(d.chunks) > 1 else (), it.dtype, it.shape, it.file)
        for it, d in zip(specs, digests)
    ]
    items += _dcp_tensors(files, params, signed_roots or {})
    return Manifest(params, items, artifact_type, source, tuple(ignore), allow_symlinks, tuple(default_ignores))


def _dcp_tensors(files, params: HashParams, signed_roots: dict) -> list[Item]:
    """The tensor items of every DCP checkpoint (a ``.metadata`` file and its ``.distcp`` files)."""
    from .dcp import METADATA, dcp_items, is_metadata

    items: list[Item] = []
    for name, real in files:
        if is_metadata(name):
            found = dcp_items(Path(real).parent, name[: -len(METADATA)], params, signed_roots.get(name))
            items += found or []
    return items
