"""A dataset signed by many workers: each hashes one contiguous run of the sorted samples, and the
runs fold into exactly the dataset root of docs/spec.md §6.1, whatever the partitioning (§6.4).

Engine-agnostic: Ray, Dask, Spark or a loop call :func:`task` on each partition (its start index
in the sorted list and its sample items) and :func:`fold` on what came back. A worker returns its
sidecar lines and the roots of the aligned record blocks of its range, never "a partition root":
a root of partition roots would bake the partitioning into the signature.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import SentryError
from ..hashing import aligned
from ..hashing.merkle import leaf_hash
from .item import SAMPLE
from .sidecar import check_signable_name

__all__ = ["Part", "fold", "ranges", "task"]


@dataclass(frozen=True)
class Part:
    """What a partition contributes to the fold: where it sits, its bounds by name, its blocks."""

    start: int
    count: int
    first: str | None
    last: str | None
    blocks: tuple[tuple[int, int, bytes], ...]  # (position, records, root), aligned


def task(start: int, items, max_leaves: int = 0) -> tuple[list[bytes], Part]:
    """(sidecar lines, Part) of the sample ``items`` (sorted by name, each once) that sit at index
    ``start`` of the whole sorted list. ``max_leaves`` caps the blocks (sidecar parts: no block
    may straddle two of them)."""
    if start < 0:
        raise SentryError(f"a partition cannot start at {start}")
    lines, hashes, previous = [], [], None
    first = None
    for it in items:
        if it.kind != SAMPLE:
            raise SentryError(f"a dataset lists samples, not {it.label}")
        check_signable_name(it.name)
        if previous is not None and it.name <= previous:
            raise SentryError(f"the samples of a partition must be sorted by name, each once: {it.name[:80]!r} "
                              f"comes after {previous[:80]!r}")
        first = it.name if first is None else first
        previous = it.name
        record = it.record()
        lines.append(record + b"\n")
        hashes.append(leaf_hash(record))
    return lines, Part(start, len(hashes), first, previous, tuple(aligned.blocks(start, hashes, max_leaves)))


def fold(parts) -> tuple[bytes, int]:
    """(dataset root, samples) of the parts of one sorted list, given in any order: they must
    tile it (no gap, no overlap) and follow each other by name."""
    ordered = sorted((p for p in parts if p.count), key=lambda p: p.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.first <= a.last:
            raise SentryError(f"partitions overlap by name: {b.first[:80]!r} (at {b.start}) does not come after "
                              f"{a.last[:80]!r}")
    return aligned.fold(block for p in ordered for block in p.blocks)


def ranges(count: int, partitions: int) -> list[tuple[int, int]]:
    """(start, end) of ``partitions`` near-equal contiguous runs of ``count`` samples."""
    partitions = max(1, min(partitions, count))
    return [(count * i // partitions, count * (i + 1) // partitions) for i in range(partitions)]
