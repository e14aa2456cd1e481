"""The dm-verity hash tree, format 1 (the kernel's and veritysetup's), and its superblock.

Data blocks of 4 KiB: level 0 holds SHA-256(salt || block) of each (the last block zero-padded);
each level is stored in 4 KiB hash blocks of 128 digests, the last one zero-padded, and the next
level hashes those blocks the same way, until one digest is left: the root (= SHA-256(salt || the
one-block top level); for a one-block image no level is stored and the root is the block's digest).
On disk the hash area holds the levels top first (the one-block level, then down to level 0),
after an optional 4 KiB superblock. Every byte is pinned against `veritysetup format`
in tests/unit/image/test_image_verity.py.
"""
from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass

from ..errors import InvalidBundle, Remedy, SentryError, UnsupportedFormat
from ..hashing import verity as engine

__all__ = [
    "BLOCK",
    "DIGEST",
    "PER_BLOCK",
    "SIGNATURE",
    "Superblock",
    "Tree",
    "build_tree",
    "hash_area_size",
    "level0_of",
    "level_sizes",
    "parse_superblock",
    "superblock",
    "tree_from_level0",
]

BLOCK = 4096  # data and hash block size (the only one Sentry writes or reads)
DIGEST = 32
PER_BLOCK = BLOCK // DIGEST  # 128 digests per hash block
SIGNATURE = b"verity\0\0"
# struct verity_sb (cryptsetup lib/verity/verity.h): 512 bytes, the rest of the block zeros.
_SB = struct.Struct("<8sII16s32sIIQH6s256s168s")


@dataclass(frozen=True)
class Tree:
    levels: tuple  # bytes per level, bottom (level 0) first, each padded to whole hash blocks
    root: bytes
    data_blocks: int

    def hash_area(self) -> bytes:
        """The tree as veritysetup stores it: top level first."""
        return b"".join(reversed(self.levels))

    def level_offsets(self) -> list:
        """Byte offset of each level (bottom first) inside :meth:`hash_area`."""
        offsets, at = [0] * len(self.levels), 0
        for i in range(len(self.levels) - 1, -1, -1):
            offsets[i] = at
            at += len(self.levels[i])
        return offsets


def _pad(digests: bytes) -> bytes:
    return digests + bytes(-len(digests) % BLOCK)


def tree_from_level0(level0: bytes, salt: bytes, *, device: str = "cpu") -> Tree:
    """The whole tree over data blocks whose level-0 digests are ``level0``."""
    if not level0:
        raise SentryError("a dm-verity tree needs at least one data block")
    levels, digests = [], level0
    while len(digests) > DIGEST:  # one data block: no stored level, the root is its digest
        levels.append(_pad(digests))
        digests = engine.level(levels[-1], salt, BLOCK, device=device)
    return Tree(tuple(levels), digests, len(level0) // DIGEST)


def build_tree(data, salt: bytes, *, device: str = "cpu") -> Tree:
    """The tree of ``data`` (bytes-like: the image; a partial last block is zero-padded)."""
    return tree_from_level0(engine.level(data, salt, BLOCK, device=device), salt, device=device)


def superblock(uuid: uuidlib.UUID, salt: bytes, data_blocks: int) -> bytes:
    """The 4 KiB verity superblock veritysetup writes at the hash offset (sha256, format 1)."""
    raw = _SB.pack(SIGNATURE, 1, 1, uuid.bytes, b"sha256", BLOCK, BLOCK, data_blocks, len(salt), b"",
                   salt, b"")
    return raw + bytes(BLOCK - len(raw))


@dataclass(frozen=True)
class Superblock:
    uuid: uuidlib.UUID
    salt: bytes
    data_blocks: int


def parse_superblock(raw: bytes) -> Superblock:
    """A verity superblock read from an untrusted image: only what Sentry writes is accepted
    (format 1, sha256, 4 KiB blocks); anything else fails verification, in one sentence."""
    if len(raw) < _SB.size or raw[:8] != SIGNATURE:
        raise InvalidBundle("no dm-verity superblock at the hash offset (is it the right one?)",
                            remedy=Remedy("superblock", "False", "and the salt for a tree without one"))
    _sig, version, hash_type, uid, alg, dbs, hbs, blocks, salt_size, _, salt, _ = _SB.unpack_from(raw)
    if version != 1 or hash_type != 1 or alg.rstrip(b"\0") != b"sha256" or dbs != BLOCK or hbs != BLOCK:
        raise UnsupportedFormat("the dm-verity superblock is not format 1 with sha256 and 4096-byte blocks, "
                                "the only kind Sentry checks")
    if salt_size > engine.MAX_SALT or blocks == 0:
        raise InvalidBundle("the dm-verity superblock is malformed (salt size or data block count)")
    return Superblock(uuidlib.UUID(bytes=uid), salt[:salt_size], blocks)


def hash_area_size(data_blocks: int) -> int:
    """Bytes of the tree (no superblock) for ``data_blocks`` data blocks."""
    return sum(level_sizes(data_blocks))


def level_sizes(data_blocks: int) -> list:
    """Bytes of each stored level, bottom first (none for one data block)."""
    sizes, n = [], data_blocks
    while n > 1:
        n = -(-n // PER_BLOCK)
        sizes.append(n * BLOCK)
    return sizes


def level0_of(levels, root: bytes) -> bytes:
    """The level-0 digests a stored tree holds (the root itself for a one-block image)."""
    return levels[0] if levels else root
