"""Aligned blocks: a contiguous run of leaves cut into the perfect subtrees that RFC 9162's tree
has there, and blocks from anywhere folded back into the one root (docs/spec.md §1.3, §6.4).

A process that hashes leaves ``[start, end)`` of a longer list (a partition of a dataset's
records, say) cannot know the root, but it can give the roots of the largest aligned
power-of-two blocks inside its range; any set of such blocks that tiles ``[0, n)`` folds into
the root of all n leaves, whoever hashed them in whatever order.
"""
from __future__ import annotations

from ..errors import SentryError
from .merkle import StreamRoot, root_of_hashes

__all__ = ["blocks", "fold", "spans"]


def spans(start: int, end: int, max_leaves: int = 0) -> list[tuple[int, int]]:
    """(position, leaves) of the largest aligned power-of-two blocks that tile ``[start, end)``,
    none larger than ``max_leaves`` (a power of two; 0: no cap)."""
    out, p = [], start
    while p < end:
        size = p & -p if p else 1 << ((end - p).bit_length() - 1)  # the largest alignment of p
        while size > end - p or (max_leaves and size > max_leaves):
            size >>= 1
        out.append((p, size))
        p += size
    return out


def blocks(start: int, hashes, max_leaves: int = 0) -> list[tuple[int, int, bytes]]:
    """(position, leaves, root) of the aligned blocks of leaf ``hashes`` that sit at ``start``."""
    return [(p, n, root_of_hashes(hashes[p - start : p - start + n]))
            for p, n in spans(start, start + len(hashes), max_leaves)]


def fold(pieces) -> tuple[bytes, int]:
    """(root, leaves) of aligned blocks (position, leaves, root) given in any order, which must
    tile ``[0, n)`` exactly: a gap, an overlap or a misaligned block is an error, never a root."""
    stream = StreamRoot()
    for position, leaves, root in sorted(pieces, key=lambda b: b[0]):
        if position != stream.count:
            what = "a gap" if position > stream.count else "an overlap"
            raise SentryError(f"the blocks to fold leave {what} at leaf {stream.count}")
        if leaves < 1 or leaves & (leaves - 1) or position % leaves:
            raise SentryError(f"the block of {leaves} leaves at leaf {position} is not an aligned power of two")
        stream.add(root, leaves)
    return stream.root(), stream.count
