"""Where signing may write: never over a key, the artifact, or a file that is not an earlier output.

``sign`` writes a signature bundle (and, for a dataset, a sample list), ``sign-samples`` a
provenance file. Each is written to a temporary file and renamed into place (``_files``), so a
symbolic link at the output path is replaced, never written through; these rules decide, before
anything is hashed, whether the path may be written at all (docs/spec.md §8). A path is judged
where it is written (its directory resolved) and, for a symbolic link, also where the link points.
"""
from __future__ import annotations

import os
import stat

from ..errors import Remedy, SentryError
from ..io.posix import FileSource

__all__ = ["ITEMS", "PROVENANCE", "SIDECAR", "SIGNATURE", "check_outputs", "replaceable"]

SIGNATURE = "the signature"
SIDECAR = "the sample list"
PROVENANCE = "the provenance file"
ITEMS = "the item list"  # a model manifest too large for its bundle (docs/spec.md §2.2)
# What an earlier output of each kind is: the one thing that kind may replace without --force.
_EARLIER = {SIGNATURE: "a Sentry or model_signing signature bundle", SIDECAR: "a Sentry sample list",
            PROVENANCE: "a Sentry provenance file", ITEMS: "a Sentry item list"}
_HEAD_BYTES = 1 << 16  # holds a sample list's first record or a provenance header


def check_outputs(outputs, *, artifact=None, keep=None, force: bool = False) -> None:
    """SentryError (one sentence) unless every ``(kind, path)`` of ``outputs`` may be written.

    Never: into a missing directory, over a file of ``keep`` (path -> what it is, e.g. ``"the
    signing key"``), over the ``artifact`` (a path; None for a model in memory), over another of
    ``outputs``, over a directory or anything but a regular file, or over an existing file inside
    the artifact directory that is not an earlier output of its kind. Over any other existing file
    that is not an earlier output of its kind (a bundle for a signature...), only with ``force``."""
    root = os.path.realpath(artifact) if artifact is not None else None
    taken: list[tuple[str, str]] = []
    for kind, path in outputs:
        path = os.fspath(path)
        places = _places(path)

        def refuse(why: str, remedy: Remedy | None = None) -> SentryError:
            return SentryError(f"refusing to write {kind} to {path}: {why}", remedy=remedy)  # noqa: B023

        if not os.path.isdir(os.path.dirname(places[0])):
            raise refuse("its directory does not exist")
        for kept, what in (keep or {}).items():
            if _same(path, places, kept):
                raise refuse(f"it is {what}")
        if root is not None and _same(path, places, root):
            raise refuse("it is the artifact being signed")
        for other_kind, other in taken:
            if _same(path, places, other):
                raise refuse(f"{other_kind} goes there")
        exists, st = replaceable(kind, path)
        earlier = st is not None and _is_earlier(kind, path, st.st_size)
        # Resolved, or as the walk sees it (through a directory link that --allow-symlinks follows).
        inside = root is not None and os.path.isdir(root) and (
            any(_under(p, root) for p in places) or _under(os.path.abspath(path), os.path.abspath(artifact)))
        if exists and inside and not (earlier and st.st_size):  # an empty file there may be a sample
            raise refuse(f"it is a file inside the artifact being signed, not {_EARLIER[kind]}")
        if exists and not earlier and not force:
            raise refuse(f"it exists and is not {_EARLIER[kind]}", Remedy("force", purpose="to replace it"))
        taken.append((kind, path))


def _places(path: str) -> tuple[str, ...]:
    """Where writing ``path`` lands (its directory resolved) and where it points if it is a link."""
    path = os.path.abspath(path)
    at = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return (at, os.path.realpath(at))


def _same(path: str, places: tuple[str, ...], other) -> bool:
    """Whether writing ``path`` would land on ``other`` or on what it is (same inode: hard links)."""
    if os.path.realpath(other) in places:
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # either does not exist (yet)
        return False


def _under(place: str, root: str) -> bool:
    return place.startswith(root.rstrip(os.sep) + os.sep)


def replaceable(what: str, path) -> tuple:
    """(whether anything is at ``path``, its stat following links or None: a dangling link);
    SentryError if it is a directory or anything but a regular file, which no output replaces."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return os.path.lexists(path), None
    except OSError:  # a link loop, a directory we may not search: something is there
        return True, None
    if not stat.S_ISREG(st.st_mode):
        why = "it is a directory" if stat.S_ISDIR(st.st_mode) else "it is not a regular file"
        raise SentryError(f"refusing to write {what} to {path}: {why}")
    return True, st


def _is_earlier(kind: str, path: str, size: int) -> bool:
    """Whether ``path`` holds what an earlier run wrote for ``kind``: a bundle (of a Sentry or
    model_signing statement), a sample list, a provenance file; read capped, never trusted."""
    from ..hashing.merkle import StreamRoot
    from ..manifest.claim import CLAIM_TYPES
    from ..manifest.sidecar import item_records, records
    from . import provenance
    from .bundle import read_bundle
    from .statement import parse_statement

    if size == 0:  # the sample list of an empty dataset; nothing else is empty
        return kind == SIDECAR
    try:
        if kind == SIGNATURE:
            return parse_statement(read_bundle(path).payload).predicate_type in CLAIM_TYPES
        with FileSource(path, follow_symlinks=True) as src:
            first, newline, _ = src.read(0, min(src.size, _HEAD_BYTES)).partition(b"\n")
        if not newline:
            return False
        if kind == SIDECAR:
            next(records([first], path, StreamRoot()))
        elif kind == ITEMS:
            next(item_records([first], path))
        else:
            provenance.parse([first], path)
        return True
    except SentryError:  # unreadable or not of its kind (VerificationError is one too)
        return False
