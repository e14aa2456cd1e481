"""`sentry image verify`: recompute an image's dm-verity tree and root, check the stored tree, and
name the first bad block and the file it belongs to.

Only the caller's root hash is trusted. The data area is the first hash_offset bytes (given, or
else the EROFS superblock's block count: said so in the result), as Modelwrap pins it; the salt is
the caller's, or else the verity superblock's (whose data block count must agree). A wrong salt or
offset cannot pass: the root covers the salt and every block.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ContentMismatch, InvalidBundle, Remedy, SentryError
from ..hashing import verity as engine
from . import verity
from .erofs import SB_OFFSET, Erofs

__all__ = ["GIVE_OFFSET", "Params", "owner_of", "verify_image"]

GIVE_OFFSET = Remedy("hash_offset", "BYTES", "where the tree starts")


@dataclass
class Params:
    hash_offset: int
    salt: bytes
    data_blocks: int
    tree_offset: int  # where the hash area starts
    offset_from_image: bool  # hash_offset was read from the (untrusted) EROFS superblock


def _params(image, size: int, hash_offset, salt, superblock: bool) -> Params:
    from_image = hash_offset is None
    if from_image:
        if size < SB_OFFSET + 40:
            raise SentryError("the image is too small to be an EROFS image", remedy=GIVE_OFFSET)
        hash_offset = struct.unpack("<I", image[SB_OFFSET + 36 : SB_OFFSET + 40])[0] * verity.BLOCK
    if hash_offset <= 0 or hash_offset % verity.BLOCK or hash_offset >= size:
        if from_image:  # the image's own size field is damaged: a failed verification, not a usage error
            raise InvalidBundle(f"the EROFS superblock's size ({hash_offset} bytes) does not locate a hash tree in "
                                f"the {size}-byte image: it is damaged, or the tree lies elsewhere", remedy=GIVE_OFFSET)
        raise SentryError(f"the hash offset {hash_offset} is not a positive multiple of 4096 inside the "
                          f"{size}-byte image")
    blocks = hash_offset // verity.BLOCK
    tree_offset = hash_offset
    if superblock:
        raw = image[hash_offset : hash_offset + verity.BLOCK]
        sb = verity.parse_superblock(raw)
        if raw != verity.superblock(sb.uuid, sb.salt, sb.data_blocks):  # stricter than veritysetup
            raise InvalidBundle("the verity superblock has bytes set where veritysetup writes zeros")
        if sb.data_blocks != blocks:
            raise InvalidBundle(f"the verity superblock says {sb.data_blocks} data blocks, the hash offset "
                                    f"{hash_offset} means {blocks}")
        salt = sb.salt if salt is None else salt
        tree_offset += verity.BLOCK
    elif salt is None:
        raise SentryError("without a superblock the salt must be given", remedy=Remedy("salt", "'00'", "(00 for privatemode)"))
    return Params(hash_offset, salt, blocks, tree_offset, from_image)


def _stored_levels(image, p: Params) -> list:
    """The stored tree's levels, bottom first, as :class:`verity.Tree` lays them out."""
    sizes = verity.level_sizes(p.data_blocks)
    end = p.tree_offset + sum(sizes)
    if end > len(image):
        raise InvalidBundle(f"the image ends inside its hash tree ({len(image)} of {end} bytes)")
    levels, at = [None] * len(sizes), p.tree_offset
    for i in range(len(sizes) - 1, -1, -1):
        levels[i] = image[at : at + sizes[i]]
        at += sizes[i]
    return levels


def owner_of(image, size: int, block: int) -> str:
    """The file a data block belongs to, as the image's (possibly damaged) metadata says."""
    try:
        return Erofs(lambda o, n: image[o : o + n], size).owner(block)
    except SentryError as exc:
        return f"unknown: {exc}"


def verify_image(path, root_hash: bytes, *, hash_offset=None, salt=None, superblock=True, device="cpu") -> dict:
    """A summary dict if ``path`` matches ``root_hash``; VerificationError naming the first bad
    block (and its file) otherwise."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise SentryError(f"cannot read {path}: {exc.strerror}") from None
    with f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
        size = os.fstat(f.fileno()).st_size
        p = _params(image, size, hash_offset, salt, superblock)
        stored = _stored_levels(image, p)
        level0 = engine.level(memoryview(image)[: p.hash_offset], p.salt, verity.BLOCK, device=device)
        tree = verity.tree_from_level0(level0, p.salt, device=device)
        summary = {"ok": True, "image": str(path), "root_hash": root_hash.hex(), "hash_offset": p.hash_offset,
                   "hash_offset_from_image": p.offset_from_image, "salt": p.salt.hex(), "data_blocks": p.data_blocks}
        if tree.root == root_hash and all(a == b for a, b in zip(tree.levels, stored)):
            return summary
        if tree.root != root_hash:
            want = verity.level0_of(stored, root_hash)
            bad = next((i for i in range(p.data_blocks) if level0[32 * i : 32 * i + 32] != want[32 * i : 32 * i + 32]), None)
            if bad is None or not _chains_to(stored, p.salt, root_hash):
                raise ContentMismatch(f"{path} does not match root hash {root_hash.hex()} (nor does its stored "
                                        "hash tree: wrong salt, hash offset or root, or a damaged tree)")
            raise ContentMismatch(f"{path}: data block {bad} (bytes {bad * verity.BLOCK}..{(bad + 1) * verity.BLOCK - 1}) "
                                    f"does not match its hash; it belongs to {owner_of(image, size, bad)}")
        level = next(i for i, (a, b) in enumerate(zip(tree.levels, stored)) if a != b)
        raise InvalidBundle(f"{path}: the data matches the root hash but the stored hash tree is damaged "
                                f"(level {level}); the kernel would refuse reads through it")


def _chains_to(levels: list, salt: bytes, root_hash: bytes) -> bool:
    """Whether a stored tree is consistent from its top down to level 0 under ``root_hash``."""
    import hashlib

    if not levels:  # one data block: its digest is the root, checked with the data
        return True
    if hashlib.sha256(salt + levels[-1]).digest() != root_hash:
        return False
    for lower, upper in zip(levels, levels[1:]):
        digests = engine.level(lower, salt, verity.BLOCK)
        if upper[: len(digests)] != digests or any(upper[len(digests):]):
            return False
    return True
