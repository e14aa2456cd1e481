"""Work tables for the Merkle kernels of ``kernels/merkle.cu`` (numpy only, no GPU needed).

Items are cut into *segments* with the backends' block plan (``plan.plan``: aligned blocks of
at most ``block_leaves`` leaves, each returning its roots at the grain level), segments are packed
into *windows* of at most ``window_leaves`` node slots (one leaf launch each, so the node array
the kernels need is bounded whatever the item sizes), and each window gets the thread counts of
its tree levels above the ``FUSED_LEVELS`` the leaf kernel makes itself. A segment's slots start
at a multiple of its tree's size rounded up to a power of two, at most 256 (``slots``), so that
the leaf kernel's blocks of 256 slots hold whole subtrees; the gaps cost idle slots, no hashing.
The CUDA backend launches from these tables; the CPU tests run the same tables through the real
kernels on the CPU launch emulator, so the planning is tested where there is no GPU.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from . import merkle
from . import plan as item_plan
from .params import HashParams

__all__ = [
    "FUSED_LEVELS",
    "GRAIN",
    "HASH_LEN",
    "LEAF",
    "LEAVES",
    "OUT",
    "PTR",
    "SEG_COLS",
    "SIZE",
    "Segment",
    "Work",
    "assemble",
    "levels",
    "node_slots",
    "plan",
    "slots",
    "table",
    "window_tables",
    "windows",
]

# Columns of a segment table row (kernels/merkle.cuh SEG_*).
PTR, SIZE, LEAF, LEAVES, OUT, GRAIN, SEG_COLS = range(7)
HASH_LEN = item_plan.HASH_LEN
FUSED_LEVELS = 8  # tree levels merkle_leaves makes inside its blocks of 2^8 slots (kernels/merkle_leaves.cuh)


class Segment(NamedTuple):
    item: int  # index of the item it belongs to
    start: int  # byte offset inside the item
    size: int
    grain: int  # leaves per returned root (a power of two)
    out: int  # index of its first grain root in the call's grain array


class Work(NamedTuple):
    plans: list  # plan.Plan per item
    segments: list  # Segment, items in order, blocks in order
    grains: int  # grain roots in all


def plan(sizes: Sequence[int], params: HashParams, block_leaves: int) -> Work:
    """Cut items of these sizes into segments of at most ``block_leaves`` (a power of two) leaves."""
    plans, segments, out = [], [], 0
    for item, size in enumerate(sizes):
        p = item_plan.plan(size, params, block_leaves)
        plans.append(p)
        for start, length in p.blocks:
            segments.append(Segment(item, start, length, p.grain, out))
            out += -(-merkle.leaf_count(length, params.leaf_size) // p.grain)
    return Work(plans, segments, out)


def slots(counts: Sequence[int], start: int = 0) -> tuple:
    """(first slot of each segment of these leaf counts, end slot), laid out from ``start``: each
    aligned to min(next power of two >= its count, 2^FUSED_LEVELS)."""
    firsts, at = [], start
    for n in counts:
        align = min(1 << (n - 1).bit_length(), 1 << FUSED_LEVELS)
        at = -(-at // align) * align
        firsts.append(at)
        at += n
    return firsts, at


def windows(segments: Sequence[Segment], leaf_size: int, window_leaves: int) -> Iterator[tuple]:
    """(range, slots): consecutive runs of segments whose slots fit in ``window_leaves`` (each
    segment fits alone, at slot 0), and the slots each run spans."""
    lo, end = 0, 0
    for i, seg in enumerate(segments):
        n = merkle.leaf_count(seg.size, leaf_size)
        after = slots([n], end)[1]
        if after > window_leaves and i > lo:
            yield range(lo, i), end
            lo, after = i, n  # it opens the next window, at slot 0
        end = after
    if lo < len(segments):
        yield range(lo, len(segments)), end


def table(segments: Sequence[Segment], pointers: Sequence[int], leaf_size: int) -> np.ndarray:
    """The window's segment table: ``pointers[i]`` is the device address of segment i's first byte."""
    t = np.zeros((len(segments), SEG_COLS), np.int64)
    t[:, PTR] = np.array(pointers, np.uint64).view(np.int64)
    t[:, SIZE] = [s.size for s in segments]
    t[:, LEAVES] = (t[:, SIZE] + leaf_size - 1) // leaf_size
    t[:, LEAF] = slots(t[:, LEAVES].tolist())[0]
    t[:, OUT] = [s.out for s in segments]
    # A short last block may hold fewer leaves than a grain: its one grain root is its root, made
    # at its top level, ceil(log2 leaves).
    t[:, GRAIN] = np.minimum(_bit_length([s.grain for s in segments]) - 1, _bit_length(t[:, LEAVES] - 1))
    return t


def _bit_length(values) -> np.ndarray:
    """int.bit_length of each value (0 <= value < 2^53): frexp's exponent, exact for such ints."""
    return np.frexp(np.asarray(values, np.float64))[1]


def levels(leaves: np.ndarray, start: int = FUSED_LEVELS) -> tuple:
    """(firsts, counts): for each level l from ``start`` up to the tallest tree, row l - start of
    ``firsts`` is the first thread of every segment in the launch making level l+1
    (``sentry_level_threads``), and ``counts[l - start]`` that launch's thread count."""
    top = int(leaves.max() - 1).bit_length() if len(leaves) else 0  # ceil(log2(max leaves))
    nodes = ((leaves - 1) >> np.arange(start, max(top, start))[:, None]) + 1  # row: each segment's nodes
    threads = np.where(nodes >= 2, (nodes + 1) // 2, 0)
    firsts = np.zeros((len(threads), len(leaves)), np.int64)
    firsts[:, 1:] = np.cumsum(threads[:, :-1], axis=1)
    return firsts, threads.sum(axis=1).tolist()


def window_tables(work: Work, leaf_size: int, window_leaves: int, pointers) -> Iterator[tuple]:
    """(first segment, table, slots, firsts, counts) per window: what one run of the kernels needs.

    ``pointers(segments)`` gives the device addresses of a window's segments; whatever it creates
    for them (a contiguous copy of a strided tensor, say) must live until the window is launched.
    """
    for segs, end in windows(work.segments, leaf_size, window_leaves):
        chosen = work.segments[segs.start : segs.stop]
        t = table(chosen, pointers(chosen), leaf_size)
        yield (segs.start, t, end) + levels(t[:, LEAVES])


def node_slots(work: Work, leaf_size: int, window_leaves: int) -> int:
    """Slots of the node array that every window of ``work`` fits in."""
    return max((end for _, end in windows(work.segments, leaf_size, window_leaves)), default=0)


def assemble(work: Work, grains: bytes, roots: bytes) -> list:
    """Item digests from the kernels' grain roots (``work.grains`` of them) and segment roots."""
    bounds = [seg.out for seg in work.segments] + [work.grains]

    def block(s: int) -> bytes:
        return grains[bounds[s] * HASH_LEN : bounds[s + 1] * HASH_LEN]

    by_item: list = [[] for _ in work.plans]
    for s, seg in enumerate(work.segments):
        by_item[seg.item].append(s)
    out = []
    for p, segs in zip(work.plans, by_item):
        if len(segs) == 1:  # one block: its grain roots are the chunks, its root the item's
            s = segs[0]
            out.append(item_plan.ItemDigest(p.size, roots[s * HASH_LEN : (s + 1) * HASH_LEN], merkle.split_hashes(block(s))))
        else:  # empty, or several blocks: folded on the host as the CPU backend does
            out.append(item_plan.assemble(p, [block(s) for s in segs]))
    return out
