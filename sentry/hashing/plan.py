"""How an item is cut into aligned blocks of leaves, and how the blocks' roots fold into its digest.

Shared by every backend (``cpu.py``, ``gpu_plan.py`` + ``cuda.py``): they differ in how they hash
a block, never in where blocks start or how their roots combine, which is what keeps their roots
identical. Pure arithmetic on sizes and hashes; nothing here reads a byte of an item.

Why blocks fold with the same rule: MTH(D[0:n]) splits at k, the largest power of two below n.
If blocks hold B = 2^b leaves (the last one possibly fewer) and n > B, then k >= B and, both being
powers of two, B divides k: the split never falls inside a block, and in block units it is again
the largest power of two below ceil(n/B). By induction, MTH of the leaves equals
``merkle.root_of_hashes`` over the block roots. The same argument lets aligned chunk roots fold
into the item root, and aligned sub-chunk block roots fold into a chunk root.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from . import merkle
from .params import HashParams

__all__ = [
    "EMPTY_DIGEST",
    "HASH_LEN",
    "FileRange",
    "ItemDigest",
    "Plan",
    "assemble",
    "assemble_one",
    "block_leaves",
    "grouped",
    "one_block_grain",
    "plan",
]

HASH_LEN = 32


@dataclass(frozen=True, slots=True)  # slots: one per file of a dataset
class ItemDigest:
    """An item's size, Merkle root, and the roots of its aligned chunks.

    ``chunks`` are the roots of consecutive chunks of ``merkle.chunk_leaves(n_leaves, max_chunks)``
    leaves (the last may be shorter): ``()`` for the empty item, ``(root,)`` for a one-leaf item.
    When non-empty, ``root == merkle.root_of_hashes(chunks)``.
    """

    size: int
    root: bytes
    chunks: tuple


EMPTY_DIGEST = ItemDigest(0, merkle.EMPTY_ROOT, ())


class FileRange(NamedTuple):
    """``size`` bytes of the file at ``path`` from ``offset``; ``size=None``: to the end of the
    file as it is when opened."""

    path: str | os.PathLike
    offset: int = 0
    size: int | None = None


def block_leaves(params: HashParams, block_bytes: int) -> int:
    """Leaves per work block of about ``block_bytes``: a power of two, at least one leaf."""
    leaves = max(1, int(block_bytes) // params.leaf_size)
    return 1 << (leaves.bit_length() - 1)


class Plan(NamedTuple):
    size: int
    chunk_leaves: int  # leaves per recorded chunk
    grain: int  # leaves per root a block returns: min(chunk_leaves, block leaves)
    blocks: list  # [(start, length)] relative to the item start


def plan(size: int, params: HashParams, leaves_per_block: int) -> Plan:
    """The blocks of ``leaves_per_block`` leaves (a power of two) an item of ``size`` bytes is cut into."""
    n_leaves = merkle.leaf_count(size, params.leaf_size)
    c = merkle.chunk_leaves(n_leaves, params.max_chunks)
    step = leaves_per_block * params.leaf_size
    blocks = [(s, min(step, size - s)) for s in range(0, size, step)]
    return Plan(size, c, min(c, leaves_per_block), blocks)


def assemble(item: Plan, block_results: Iterable[bytes]) -> ItemDigest:
    """Fold the blocks' grain roots (each block's concatenated) into chunk roots, and those into
    the item root."""
    if item.size == 0:
        return EMPTY_DIGEST
    grains = merkle.split_hashes(b"".join(block_results))
    per_chunk = item.chunk_leaves // item.grain  # >1 only when a chunk spans several blocks
    chunks = tuple(
        merkle.root_of_hashes(grains[i : i + per_chunk]) for i in range(0, len(grains), per_chunk)
    )
    return ItemDigest(item.size, merkle.root_of_hashes(chunks), chunks)


# An item of at most one block needs no plan: its block's grain roots are its chunk roots (the
# chunk size, a power of two, never exceeds the block's, since the block holds all its leaves).
def one_block_grain(size: int, params: HashParams) -> int:
    return merkle.chunk_leaves(merkle.leaf_count(size, params.leaf_size), params.max_chunks)


def assemble_one(size: int, roots: bytes) -> ItemDigest:
    """The digest of a one-block item from its block's grain roots (``one_block_grain``)."""
    chunks = merkle.split_hashes(roots)
    return ItemDigest(size, merkle.root_of_hashes(chunks), chunks)


def grouped(items, size: Callable, limit: int | None) -> Generator[list, None, None]:
    """Consecutive items in lists whose ``size`` adds up to at most ``limit`` (an item over it goes
    alone); ``limit`` None: one item per list, handed on as soon as it comes."""
    if limit is None:
        for item in items:
            yield [item]
        return
    group: list = []
    used = 0
    for item in items:
        n = size(item)
        if group and used + n > limit:
            yield group
            group, used = [], 0
        group.append(item)
        used += n
    if group:
        yield group
