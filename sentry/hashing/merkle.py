"""RFC 9162 §2.1.1 Merkle Tree Hash with SHA-256: the plain reference every backend must match.

An item's bytes are cut into consecutive leaves of ``leaf_size`` bytes (the last one shorter);
leaf = SHA-256(0x00 || leaf bytes), node = SHA-256(0x01 || left || right), and a list of n > 1
leaves splits at the largest power of two strictly below n. The empty item hashes to SHA-256("").

Because the split point of n leaves is always a multiple of any power-of-two block size smaller
than n, the root of aligned blocks of 2^k leaves combine with the very same rule
(:func:`root_of_hashes`). Backends use that to hash blocks in parallel and fold them afterwards.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data) -> bytes:
    h = hashlib.sha256(b"\x00")
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly less than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash over already-hashed subtrees (leaf hashes or aligned block roots)."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = largest_power_of_two_below(n)
    return node_hash(root_of_hashes(hashes[:k]), root_of_hashes(hashes[k:]))


class StreamRoot:
    """:func:`root_of_hashes` of hashes that arrive one at a time, in O(log n) memory: the roots
    of the perfect subtrees so far (sizes strictly decreasing powers of two), merged as they pair
    up; RFC 9162's split at the largest power of two makes the final fold right to left."""

    def __init__(self):
        self._subtrees: list[tuple[bytes, int]] = []
        self.count = 0

    def add(self, h: bytes) -> None:
        size = 1
        while self._subtrees and self._subtrees[-1][1] == size:
            h, size = node_hash(self._subtrees.pop()[0], h), size * 2
        self._subtrees.append((h, size))
        self.count += 1

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
    return root_of_hashes(
        [leaf_hash(view[i : i + leaf_size]) for i in range(0, len(view), leaf_size)]
    )


def chunk_leaves(n_leaves: int, max_chunks: int) -> int:
    """Leaves per recorded chunk: the smallest power of two giving at most ``max_chunks`` chunks.

    Manifests record the roots of these aligned chunks so a verifier can say where a changed
    item first differs; with few leaves a chunk is one leaf and the offset is exact.
    """
    c = 1
    while -(-n_leaves // c) > max_chunks:
        c <<= 1
    return c
