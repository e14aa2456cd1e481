"""A minimal read-only EROFS reader: the directory tree, each regular file's extents and bytes,
for uncompressed images (the flat-plain and flat-inline data layouts mkfs.erofs writes without -z).

The image is hostile input: every offset is checked against the image, names may not be empty,
'.', '..' or hold '/' or NUL, a directory reached twice (a loop) is refused, and the walk stops at
MAX_ENTRIES. Compressed and chunk-based files, and block sizes other than 4 KiB, are refused in one
sentence. Layout: fs/erofs/erofs_fs.h of Linux (superblock at byte 1024, 32-byte inode slots from
meta_blkaddr, 12-byte dirents at the head of each directory block).
"""
from __future__ import annotations

import posixpath
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SentryError

__all__ = [
    "BLOCK",
    "FLAT_INLINE",
    "FLAT_PLAIN",
    "MAGIC",
    "MAX_DIR_BYTES",
    "MAX_ENTRIES",
    "SB_OFFSET",
    "Erofs",
    "Inode",
]

BLOCK = 4096
MAGIC = 0xE0F5E1E2
SB_OFFSET = 1024
_SB = struct.Struct("<IIIBBHQQIIII16s16sI")
_COMPACT = struct.Struct("<HHHHIIIIHHI")  # 32 bytes
_EXTENDED = struct.Struct("<HHHHQIIIIQII")  # first 48 of 64 bytes
_DIRENT = struct.Struct("<QHBB")
FLAT_PLAIN, FLAT_INLINE = 0, 2
MAX_ENTRIES = 1_000_000
MAX_DIR_BYTES = 64 << 20


@dataclass(frozen=True)
class Inode:
    nid: int
    mode: int
    size: int
    extents: tuple  # (image offset, length) in file order


class Erofs:
    """The file system in an image read through ``read_at(offset, size) -> bytes`` (plain reads,
    or VerifiedImage's checked ones) of ``size`` bytes."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int):
        self._read, self.size = read_at, size
        raw = self.read(SB_OFFSET, _SB.size)
        (magic, _, _, blkszbits, _, self.root_nid, _, _, _, self.blocks, meta_blkaddr, _, self.uuid, _,
         self.incompat) = _SB.unpack(raw)
        if magic != MAGIC:
            raise SentryError("the image is not an EROFS file system (no EROFS superblock at byte 1024)")
        if blkszbits != 12:
            raise SentryError(f"the EROFS image has {1 << min(blkszbits, 63)}-byte blocks; Sentry reads 4096-byte ones")
        self.meta = meta_blkaddr * BLOCK

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise SentryError(f"the EROFS image points outside itself (bytes {offset}..{offset + size} of {self.size})")
        return self._read(offset, size)

    def inode(self, nid: int) -> Inode:
        at = self.meta + nid * 32
        fmt = struct.unpack("<H", self.read(at, 2))[0]
        if fmt & 1:
            _, xcount, mode, _, size, raw_blk, *_ = _EXTENDED.unpack(self.read(at, _EXTENDED.size))
            isize = 64
        else:
            _, xcount, mode, _, size, _, raw_blk, *_ = _COMPACT.unpack(self.read(at, _COMPACT.size))
            isize = 32
        layout = (fmt >> 1) & 7
        if layout not in (FLAT_PLAIN, FLAT_INLINE):
            raise SentryError(f"inode {nid} of the EROFS image is compressed or chunk-based (layout {layout}); "
                              "Sentry reads uncompressed images only")
        full = size // BLOCK if layout == FLAT_INLINE else -(-size // BLOCK)
        extents = [(raw_blk * BLOCK, min(size, full * BLOCK))] if full else []
        tail = size - full * BLOCK if layout == FLAT_INLINE else 0
        if tail:
            start = at + isize + (12 + 4 * (xcount - 1) if xcount else 0)
            if start // BLOCK != (start + tail - 1) // BLOCK:
                raise SentryError(f"inode {nid} of the EROFS image has an inline tail that crosses a block")
            extents.append((start, tail))
        if any(off + n > self.size for off, n in extents):
            raise SentryError(f"inode {nid} of the EROFS image points past the image's end")
        return Inode(nid, mode, size, tuple(extents))

    def read_file(self, inode: Inode) -> bytes:
        return b"".join(self.read(off, n) for off, n in inode.extents)

    def _entries(self, inode: Inode):
        if inode.size > MAX_DIR_BYTES:
            raise SentryError(f"a directory of the EROFS image is {inode.size} bytes, more than Sentry reads")
        data = self.read_file(inode)
        for base in range(0, len(data), BLOCK):
            blk = data[base : base + BLOCK]
            if len(blk) < _DIRENT.size:
                raise SentryError("a directory block of the EROFS image is truncated")
            first = _DIRENT.unpack_from(blk)[1]
            count = first // _DIRENT.size
            if first % _DIRENT.size or not 0 < first <= len(blk):
                raise SentryError("a directory block of the EROFS image is malformed")
            ents = [_DIRENT.unpack_from(blk, i * _DIRENT.size) for i in range(count)]
            for i, (nid, nameoff, _, _) in enumerate(ents):
                end = ents[i + 1][1] if i + 1 < count else len(blk)
                if not first <= nameoff <= end <= len(blk):
                    raise SentryError("a directory entry of the EROFS image has a bad name offset")
                name = blk[nameoff:end]
                yield (name.rstrip(b"\0") if i + 1 == count else name), nid

    def files(self) -> list:
        """(path, Inode) of every regular file, depth first in name order; directories are walked
        once each, links and devices are left out."""
        out, seen, stack, count = [], {self.root_nid}, [("", self.inode(self.root_nid))], 0
        while stack:
            prefix, d = stack.pop()
            children = []
            for raw, nid in self._entries(d):
                if raw in (b".", b".."):
                    continue
                count += 1
                if count > MAX_ENTRIES or not raw or b"/" in raw or b"\0" in raw:
                    raise SentryError("the EROFS image has a malformed or excessive directory entry")
                name = posixpath.join(prefix, raw.decode("utf-8", "surrogateescape"))
                node = self.inode(nid)
                if stat.S_ISDIR(node.mode):
                    if nid in seen:
                        raise SentryError(f"the EROFS image's directory {name} is reached twice (a loop)")
                    seen.add(nid)
                    children.append((name, node))
                elif stat.S_ISREG(node.mode):
                    out.append((name, node))
            stack.extend(reversed(children))
        return sorted(out, key=lambda f: f[0])

    def owner(self, block: int) -> str:
        """What image block ``block`` holds: a file's data, or EROFS metadata (superblock, inodes,
        directories), with the names of files whose inline tails share the block."""
        tails = []
        for name, node in self.files():
            for off, n in node.extents:
                if off // BLOCK <= block <= (off + n - 1) // BLOCK:
                    if off % BLOCK == 0:
                        return name
                    tails.append(name)
        return "EROFS metadata" + (f" (with the inline tails of {', '.join(tails)})" if tails else "")
