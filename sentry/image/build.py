"""`sentry image build`: model directory -> EROFS image + dm-verity tree (+ signed statement).

The manifest is Sentry's usual one (per file, per tensor for .safetensors) of the source
directory. The verity tree is hashed from the image by Sentry's engine. With salt 00 (privatemode,
and plain by default) level 0 of a full block is exactly the RFC 9162 leaf hash of those 4 KiB,
and EROFS stores a file's full blocks block-aligned: so each file's RFC 9162 root is folded from
level 0 plus its tail leaf, with no second pass, and checked against the manifest's file items
(a .safetensors file's items are its tensors: its whole-file root is reported, not compared).
Other salts need a second pass for that, which is not made: the sources' stamps are checked
instead (they must not change from hashing to copying).
"""
from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SentryError
from ..hashing import merkle
from ..hashing import verity as engine
from ..manifest.item import FILE
from . import verity
from .erofs import Erofs
from .layouts import Layout
from .mkfs import make_erofs

__all__ = ["ImageResult", "file_roots_from_level0", "write_image"]


@dataclass
class ImageResult:
    path: Path
    layout: Layout
    root_hash: bytes
    hash_offset: int
    data_blocks: int
    image_sha256: str
    manifest_root: str
    mkfs: str
    outputs: list = field(default_factory=list)
    file_roots: dict = field(default_factory=dict)  # name -> RFC 9162 root, from level 0 (salt 00)

    def to_json(self) -> dict:
        out = {"image": str(self.path), "layout": self.layout.name, "root_hash": self.root_hash.hex(),
               "hash_offset": self.hash_offset, "salt": self.layout.salt.hex(), "data_blocks": self.data_blocks,
               "uuid": str(self.layout.uuid), "superblock": self.layout.superblock,
               "image_sha256": self.image_sha256, "manifest_root": self.manifest_root, "mkfs": self.mkfs,
               "outputs": [str(p) for p in self.outputs]}
        if self.layout.name == "modelwrap":
            out["reference"] = self.layout.reference(self.root_hash.hex(), self.hash_offset)
        return out

    def predicate(self, leaf_size: int) -> dict:
        """What a signature binds: the verity commitment, the image, the model's manifest root."""
        j = self.to_json()
        return {"verity": {k: j[k] for k in ("root_hash", "hash_offset", "salt", "data_blocks", "uuid", "superblock")}
                | {"format": 1, "hash": "sha256", "data_block_size": verity.BLOCK, "hash_block_size": verity.BLOCK},
                "layout": j["layout"], "image": {"sha256": j["image_sha256"], "mkfs": j["mkfs"]},
                "manifest": {"root": j["manifest_root"], "leaf_size": leaf_size}}


def file_roots_from_level0(fs: Erofs, level0: bytes, image) -> dict:
    """Each file's RFC 9162 root (4 KiB leaves) from the salt-00 level-0 digests of its full
    blocks, hashing only its last partial leaf (and any inline tail) anew."""
    roots = {}
    for name, node in fs.files():
        leaves = []
        for off, n in node.extents:
            full = n // verity.BLOCK if off % verity.BLOCK == 0 else 0
            first = off // verity.BLOCK
            leaves += [level0[32 * b : 32 * b + 32] for b in range(first, first + full)]
            rest = image[off + full * verity.BLOCK : off + n]
            if len(rest):
                if len(rest) > verity.BLOCK:
                    raise SentryError(f"{name} is stored unaligned in the image")  # mkfs.erofs never does this
                leaves.append(merkle.leaf_hash(rest))
        roots[name] = merkle.root_of_hashes(leaves)
    return roots


def _check_against_manifest(roots: dict, manifest) -> None:
    for it in manifest.items:
        if it.kind == FILE and roots.get(it.name) != it.root:
            raise SentryError(f"the image's {it.name} differs from the file hashed (it changed during the build?)")


def write_image(files, manifest, out: Path, layout: Layout, *, device="cpu", stamps=None) -> ImageResult:
    """Make the image of ``files`` at ``out`` (replacing it), its tree after it, and the side files."""
    from ..signing._files import write_atomic

    tmp = out.with_name(f".{out.name}.sentry-tmp")
    try:
        mkfs_version = make_erofs(files, tmp, layout.uuid)
        if stamps:
            stamps()
        with open(tmp, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0 or size % verity.BLOCK:
                raise SentryError(f"mkfs.erofs wrote {size} bytes, not whole 4 KiB blocks")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
                level0 = engine.level(image, layout.salt, verity.BLOCK, device=device)
                tree = verity.tree_from_level0(level0, layout.salt, device=device)
                roots = {}
                if layout.salt == b"\x00":
                    roots = file_roots_from_level0(Erofs(lambda o, n: image[o : o + n], size), level0, image)
                    _check_against_manifest(roots, manifest)
            f.seek(size)
            if layout.superblock:
                f.write(verity.superblock(layout.uuid, layout.salt, tree.data_blocks))
            f.write(tree.hash_area())
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sides = layout.side_outputs(out, tree.root.hex(), size)
    for path, data in sides.items():
        write_atomic(path, data)
    return ImageResult(out, layout, tree.root, size, tree.data_blocks, digest, manifest.root().hex(),
                       mkfs_version, [out, *sides], roots)
