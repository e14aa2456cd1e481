"""An item's digest from pieces hashed apart: byte ranges held by different ranks or files.

A holder of the bytes ``[start, end)`` of an item of ``size`` bytes hashes the leaves wholly
inside its range as aligned power-of-two blocks (capped at the chunk size of docs/spec.md §1.4,
so every chunk root comes out of the same fold) and keeps the bytes of at most two partial edge
leaves. Whoever holds every range's pieces folds them into exactly the item's root and chunk
roots (§1.3: every aligned block inside the item is a node of its RFC 9162 tree), whatever the
ranges were: O(log n) hashes per range plus two partial leaves.
"""
from __future__ import annotations

from typing import NamedTuple

from ..errors import ContentMismatch, SentryError
from . import aligned, merkle
from .params import HashParams

__all__ = ["Pieces", "RangePlan", "Region", "plan_range"]


class Region(NamedTuple):
    """Leaves ``[lo, hi)`` of the item, hashed as consecutive aligned units of ``unit`` leaves."""

    lo: int
    hi: int
    unit: int

    def params(self, leaf_size: int) -> HashParams:
        """Parameters whose chunk roots over this region's bytes are its units' roots."""
        return HashParams(leaf_size, -(-(self.hi - self.lo) // self.unit))


class RangePlan(NamedTuple):
    regions: list  # [Region]: whole leaves of the range, in order
    edges: list  # [(start, end)]: byte ranges of partial leaves (at most two)


_MAX_UNITS = 4096  # HashParams' max_chunks bound: a region of more units is cut in two


def plan_range(size: int, start: int, end: int, params: HashParams) -> RangePlan:
    """How the holder of bytes ``[start, end)`` of an item hashes them (see the module doc)."""
    if not 0 <= start <= end <= size:
        raise SentryError(f"byte range [{start}, {end}) lies outside an item of {size} bytes")
    ls = params.leaf_size
    n = merkle.leaf_count(size, ls)
    cap = merkle.chunk_leaves(n, params.max_chunks) if n else 1
    first = -(-start // ls)  # first leaf starting inside the range
    last = n if end == size else end // ls  # leaves [first, last) end inside it too
    if start == end:
        return RangePlan([], [])
    if first >= last:  # no whole leaf: the range lies inside one leaf or straddles a boundary
        cut = first * ls
        return RangePlan([], [(a, b) for a, b in ((start, min(cut, end)), (max(cut, start), end)) if a < b])
    edges = [(start, first * ls)] if start < first * ls else []
    if last * ls < end:
        edges.append((last * ls, end))
    return RangePlan(_regions(first, last, cap), edges)


def _regions(lo: int, hi: int, cap: int) -> list:
    """Leaves [lo, hi) as aligned power-of-two blocks of at most ``cap`` (``aligned.spans``), equal
    neighbours grouped: growing sizes up to a chunk boundary, whole chunks, then shrinking sizes."""
    regions: list = []
    for pos, unit in aligned.spans(lo, hi, cap):
        if regions and regions[-1].unit == unit and regions[-1].hi == pos and (pos - regions[-1].lo) // unit < _MAX_UNITS:
            regions[-1] = regions[-1]._replace(hi=pos + unit)
        else:
            regions.append(Region(pos, pos + unit, unit))
    return regions


class Pieces:
    """What the holders of an item's ranges hashed, gathered to be folded: block roots by leaf
    range, partial leaves' bytes by offset. The same piece twice (replicas) must agree."""

    def __init__(self, name: str, size: int, params: HashParams):
        self.name, self.size, self.params = name, size, params
        self.blocks: dict = {}  # (lo, hi) leaves -> root
        self.partial: dict = {}  # leaf index -> {(start, end): bytes}

    def add_block(self, lo: int, hi: int, root: bytes) -> None:
        if self.blocks.setdefault((lo, hi), root) != root:
            raise ContentMismatch(f"tensor {self.name!r}: two holders of leaves {lo}..{hi - 1} hold different bytes")

    def add_region(self, region: Region, unit_roots) -> None:
        for i, root in enumerate(unit_roots):
            lo = region.lo + i * region.unit
            self.add_block(lo, min(lo + region.unit, region.hi), root)

    def add_bytes(self, start: int, data: bytes) -> None:
        span = (start, start + len(data))
        leaf = start // self.params.leaf_size
        if self.partial.setdefault(leaf, {}).setdefault(span, bytes(data)) != data:
            raise ContentMismatch(f"tensor {self.name!r}: two holders of bytes {span[0]}..{span[1] - 1} hold different bytes")

    def fold(self):
        """The item's :class:`~sentry.hashing.plan.ItemDigest` (size, root, chunk roots)."""
        from .plan import ItemDigest

        ls = self.params.leaf_size
        for leaf, spans in self.partial.items():
            self.add_block(leaf, leaf + 1, merkle.leaf_hash(self._leaf_bytes(leaf, spans)))
        n = merkle.leaf_count(self.size, ls)
        if n == 0:
            return ItemDigest(0, merkle.EMPTY_ROOT, ())
        c = merkle.chunk_leaves(n, self.params.max_chunks)
        chunks = tuple(self._root(lo, min(lo + c, n)) for lo in range(0, n, c))
        return ItemDigest(self.size, merkle.root_of_hashes(chunks), chunks)

    def _leaf_bytes(self, leaf: int, spans: dict) -> bytes:
        ls = self.params.leaf_size
        pos, end, out = leaf * ls, min((leaf + 1) * ls, self.size), []
        for (s, e), data in sorted(spans.items()):
            if s != pos:
                break
            out.append(data)
            pos = e
        if pos != end:
            raise SentryError(f"tensor {self.name!r}: the pieces gathered do not cover bytes {leaf * ls}..{end - 1} exactly")
        return b"".join(out)

    def _root(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi) (a node of the item's tree) from the gathered blocks."""
        root = self.blocks.get((lo, hi))
        if root is not None:
            return root
        if hi - lo == 1:
            ls = self.params.leaf_size
            raise SentryError(f"tensor {self.name!r}: no rank holds bytes {lo * ls}..{min(hi * ls, self.size) - 1}")
        k = merkle.largest_power_of_two_below(hi - lo)
        return merkle.node_hash(self._root(lo, lo + k), self._root(lo + k, hi))
