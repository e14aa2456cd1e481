"""Samples inside files: the members of WebDataset tar shards and the row groups of Parquet files.

With ``members`` naming "tar" (or "parquet"), a dataset file ``shard.tar`` contributes itself (its
own root, as any file) and one sample per member, ``shard.tar/KEY.EXT``, whose bytes are the
member's byte range in the tar; ``data.parquet`` contributes itself and ``data.parquet/row-group-
000003`` per row group (docs/spec.md §6.6). Member names cannot collide with files: ``shard.tar``
is a file, so nothing on disk lies below it.
"""
from __future__ import annotations

from ..errors import InvalidInput, SentryError
from ..hashing import FileRange
from .item import MAX_NAME, SAMPLE, Item

__all__ = ["MEMBERS", "check_members", "file_samples", "hash_files", "sample_ranges"]

MEMBERS = ("tar", "parquet")


def check_members(members) -> tuple[str, ...]:
    members = tuple(sorted(set(members)))
    if any(m not in MEMBERS for m in members):
        raise InvalidInput(f"members are read from {' and '.join(MEMBERS)} files only, not {members}")
    return members


def sample_ranges(name: str, path, members, lenient: bool = False) -> list[tuple[str, FileRange]]:
    """(sample name, byte range) of the samples the dataset file ``name`` (at ``path``) holds.
    ``lenient`` (verifying): a shard that no longer parses holds just itself, whose changed root
    and missing members the comparison then reports, rather than an input error."""
    out = [(name, FileRange(path))]
    try:
        return out + _members(name, path, members)
    except SentryError:
        if lenient:
            return out
        raise


def _members(name: str, path, members) -> list[tuple[str, FileRange]]:
    out = []
    if "tar" in members and name.endswith(".tar"):
        from ..io.tar import members as tar_members

        out += [(f"{name}/{m.name}", FileRange(path, m.offset, m.size))
                for m in tar_members(path, MAX_NAME - len(name) - 1)]
    elif "parquet" in members and name.endswith(".parquet"):
        from ..io.parquet import row_groups

        out += [(f"{name}/row-group-{g.number:06d}", FileRange(path, g.offset, g.size)) for g in row_groups(path)]
    return out


def hash_files(files, params, members=(), device="cpu", lenient=False) -> list[Item]:
    """Sample items of dataset files ((name, path) pairs), members included, in no set order."""
    from ..hashing import digest_ranges

    named = [pair for name, path in files for pair in sample_ranges(name, path, members, lenient)]
    digests = digest_ranges([r for _, r in named], params, device=device)
    return [Item(SAMPLE, n, d.size, d.root) for (n, _), d in zip(named, digests)]


def file_samples(name: str, path, members=()):
    """(sample name, bytes) of each sample the dataset file ``name`` holds, read one at a time."""
    from ..io.posix import FileSource

    ranges = sample_ranges(name, path, members)
    with FileSource(path) as src:
        for sample, r in ranges:
            yield sample, src.read(r.offset, src.size - r.offset if r.size is None else r.size)
