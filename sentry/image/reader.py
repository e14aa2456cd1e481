"""Verify-on-read without dm-verity privileges: every 4 KiB block read from the image is checked
against the hash tree before a byte of it is used, as the kernel does for a `veritysetup open`ed
device. For containers and CI, which cannot map device-mapper targets.

On open the stored tree is checked once from the root down (a 128th of the data); each data
block is then hashed when first read and compared with its level-0 digest, so a tampered block
raises VerificationError at that block, naming it. The EROFS metadata is read through the same
checked path, so the directory walk never sees unverified bytes.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from ..errors import ContentMismatch, InvalidBundle, SentryError
from . import verity
from .erofs import Erofs
from .verify import _chains_to, _params, _stored_levels

__all__ = ["VerifiedImage"]


class VerifiedImage:
    """An image opened against a trusted root hash (parameters as for ``verify_image``)."""

    def __init__(self, path, root_hash: bytes, *, hash_offset=None, salt=None, superblock=True):
        self.path = Path(path)
        try:
            self._f = open(self.path, "rb")
        except OSError as exc:
            raise SentryError(f"cannot read {self.path}: {exc.strerror}") from None
        size = os.fstat(self._f.fileno()).st_size
        head = self._pread(0, min(size, 2 * verity.BLOCK))
        window = _Window(self, head, size)
        p = _params(window, size, hash_offset, salt, superblock)
        levels = [bytes(level) for level in _stored_levels(window, p)]
        if not _chains_to(levels, p.salt, root_hash):
            self.close()
            raise InvalidBundle(f"{self.path}: the stored hash tree does not match root hash {root_hash.hex()}")
        self.params, self._level0, self.size = p, verity.level0_of(levels, root_hash), p.hash_offset
        self.fs = Erofs(self.read, self.size)

    def _pread(self, offset: int, size: int) -> bytes:
        return os.pread(self._f.fileno(), size, offset)

    def block(self, i: int) -> bytes:
        """Data block ``i``, checked against the tree."""
        if not 0 <= i < self.params.data_blocks:
            raise SentryError(f"block {i} is outside the image's {self.params.data_blocks} data blocks")
        data = self._pread(i * verity.BLOCK, verity.BLOCK)
        if hashlib.sha256(self.params.salt + data).digest() != self._level0[32 * i : 32 * i + 32]:
            raise ContentMismatch(f"{self.path}: data block {i} does not match the hash tree (tampered or "
                                    "damaged); nothing of it was used")
        return data

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` of the data area, every block they touch checked."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise SentryError(f"bytes {offset}..{offset + size} are outside the image's data area")
        if size == 0:
            return b""
        first, last = offset // verity.BLOCK, (offset + size - 1) // verity.BLOCK
        data = b"".join(self.block(i) for i in range(first, last + 1))
        start = offset - first * verity.BLOCK
        return data[start : start + size]

    def files(self) -> list:
        return [name for name, _ in self.fs.files()]

    def read_file(self, name: str) -> bytes:
        for path, node in self.fs.files():
            if path == name:
                return self.fs.read_file(node)
        raise SentryError(f"{name} is not a file in {self.path}")

    def open_file(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.read_file(name))

    def load_safetensors(self, name: str) -> dict:
        """The tensors of a .safetensors file in the image (by safetensors' own parser, from
        verified bytes only)."""
        from safetensors.torch import load

        return load(self.read_file(name))

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Window:
    """Slicing over the file, for the parameter and tree parsing shared with ``verify``: those
    bytes are either compared with the root (the tree) or only located (the superblocks)."""

    def __init__(self, image: VerifiedImage, head: bytes, size: int):
        self._image, self._head, self._size = image, head, size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(self._size)
        if stop <= len(self._head):
            return self._head[start:stop]
        return self._image._pread(start, stop - start)
