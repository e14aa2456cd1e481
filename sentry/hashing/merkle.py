"""RFC 9162 §2.1.1 Merkle Tree Hash with SHA-256: the plain reference every backend must match
(only ``root_of_hashes`` runs in C when the extension is built; tests hold it to the Python).

An item's bytes are cut into consecutive leaves of ``leaf_size`` bytes (the last one shorter);
leaf = SHA-256(0x00 || leaf bytes), node = SHA-256(0x01 || left || right), and a list of n > 1
leaves splits at the largest power of two strictly below n. The empty item hashes to SHA-256("").

Because the split point of n leaves is always a multiple of any power-of-two block size smaller
than n, the root of aligned blocks of 2^k leaves combine with the very same rule
(:func:`root_of_hashes`). Backends use that to hash blocks in parallel and fold them afterwards.
"""
from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "StreamRoot",
    "chunk_leaves",
    "largest_power_of_two_below",
    "leaf_count",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_of_hashes",
    "split_hashes",
]

try:
    from ._cmerkle import root_of_hashes as _c_root_of_hashes
except ImportError:  # pragma: no cover - no compiler: the Python reference below
    _c_root_of_hashes = None

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data) -> bytes:
    h = hashlib.sha256(b"\x00")
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash over already-hashed subtrees (leaf hashes or aligned block roots).

    In C when the extension is built (``_cmerkle.root_of_hashes``, the same tree, 5x faster on 16
    hashes than the recursion below): verifying folds every signed item's chunk roots and every
    manifest's record hashes."""
    if _c_root_of_hashes is not None:
        return _c_root_of_hashes(b"".join(hashes))
    return _py_root_of_hashes(hashes)


def largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly less than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _py_root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """The reference: RFC 9162's recursive split, as written."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = largest_power_of_two_below(n)
    return node_hash(_py_root_of_hashes(hashes[:k]), _py_root_of_hashes(hashes[k:]))


_UNPACKED_MAX = 4096  # params.MAX_MAX_CHUNKS: the most chunk roots an item of Sentry's has


@functools.lru_cache(maxsize=64)
def _hashes_layout(count: int) -> struct.Struct:
    return struct.Struct("32s" * count)


def split_hashes(joined: bytes) -> tuple:
    """The 32-byte hashes of their concatenation. Up to an item's chunk roots' worth, by one struct
    unpack (5x faster than slicing 16 out one by one); more, from a hostile manifest say, by slices,
    so that no layout of millions of fields is built and cached."""
    count = len(joined) // 32
    if count > _UNPACKED_MAX:
        return tuple(joined[i : i + 32] for i in range(0, len(joined), 32))
    return _hashes_layout(count).unpack(joined)


class StreamRoot:
    """:func:`root_of_hashes` of hashes that arrive one at a time, in O(log n) memory: the roots
    of the perfect subtrees so far (sizes strictly decreasing powers of two), merged as they pair
    up; RFC 9162's split at the largest power of two makes the final fold right to left."""

    def __init__(self):
        self._subtrees: list[tuple[bytes, int]] = []
        self.count = 0

    def add(self, h: bytes, leaves: int = 1) -> None:
        """Append ``h``: a leaf hash, or the root of an aligned perfect subtree of ``leaves`` (a
        power of two dividing ``count``; the caller checks), or, last of all, of a shorter block
        (spec §1.3: aligned block roots fold with the same rule)."""
        size = leaves
        while self._subtrees and self._subtrees[-1][1] == size:
            h, size = node_hash(self._subtrees.pop()[0], h), size * 2
        self._subtrees.append((h, size))
        self.count += leaves

    def root(self) -> bytes:
        if not self._subtrees:
            return EMPTY_ROOT
        h = self._subtrees[-1][0]
        for left, _ in reversed(self._subtrees[:-1]):
            h = node_hash(left, h)
        return h


def leaf_count(size: int, leaf_size: int) -> int:
    return -(-size // leaf_size)


def merkle_root(data, leaf_size: int = 4096) -> bytes:
    """Reference root of ``data`` (bytes-like); small and obviously correct, not fast."""
    view = memoryview(data).cast("B")
    if len(view) == 0:
        return EMPTY_ROOT
    return _py_root_of_hashes(
        [leaf_hash(view[i : i + leaf_size]) for i in range(0, len(view), leaf_size)]
    )


def chunk_leaves(n_leaves: int, max_chunks: int) -> int:
    """Leaves per recorded chunk: the smallest power of two giving at most ``max_chunks`` chunks.

    Manifests record the roots of these aligned chunks so a verifier can say where a changed
    item first differs; with few leaves a chunk is one leaf and the offset is exact.
    """
    # ceil(n / c) <= max_chunks exactly when c >= ceil(n / max_chunks): the next power of two up.
    return 1 << (max(1, -(-n_leaves // max_chunks)) - 1).bit_length()
