"""Tensor items of a torch.distributed.checkpoint (DCP) directory: ``.metadata`` + ``*.distcp``.

A DCP checkpoint stores each tensor as chunks (one per saving rank's shard), each a torch.save'd
tensor at a byte range of a ``.distcp`` file, and indexes them in ``.metadata``, a pickle. The
tensor's root is computed chunk by chunk (``hashing.pieces``: a row-block chunk is one byte range
of the tensor; any other chunk layout is assembled in memory first), so it equals the root of the
same tensor in memory whatever world size saved it (docs/spec.md §11.2).

Nothing here unpickles with the plain Unpickler: ``.metadata`` goes through an allowlist of DCP's
metadata classes (when a signature covers the file, its root is checked before even that), and a
chunk is read with ``torch.load(weights_only=True)``, PyTorch's own loader for untrusted
checkpoints, which admits tensors and plain containers only.
"""
from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path, PurePosixPath

from ..errors import SentryError, UnsupportedFormat
from ..hashing.params import HashParams
from .dtypes import torch_dtype_name
from .item import TENSOR, Item

__all__ = ["METADATA", "dcp_items", "is_metadata", "read_metadata", "tensor_digest"]

METADATA = ".metadata"
_DCP_CLASSES = {
    "torch.distributed.checkpoint.metadata": {"Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                                              "ChunkStorageMetadata", "TensorProperties", "MetadataIndex",
                                              "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
}


class _MetadataUnpickler(pickle.Unpickler):
    """Admits DCP's metadata classes, torch dtypes and a checkpoint path (as a pure path, which
    touches no file system); anything else in the pickle is an error, never called."""

    def find_class(self, module, name):
        import torch

        if name in _DCP_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "pathlib" and name in ("PosixPath", "PurePosixPath"):
            return PurePosixPath
        raise SentryError(f"{METADATA} refers to {module}.{name}, which a DCP checkpoint's metadata never holds")


def read_metadata(path: Path, data: bytes):
    """The checked ``Metadata`` in ``data``, the bytes of a DCP directory's ``.metadata`` file."""
    import torch
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, TensorStorageMetadata

    try:
        md = _MetadataUnpickler(io.BytesIO(data)).load()
    except SentryError:
        raise
    except Exception as exc:  # a truncated or garbled pickle: what the unpickler says, in one line
        raise SentryError(f"{path} is not a DCP checkpoint's metadata: {type(exc).__name__}: {exc}") from None
    if not isinstance(md, Metadata) or not isinstance(md.state_dict_metadata, dict) or not isinstance(md.storage_data, dict):
        raise SentryError(f"{path} is not a DCP checkpoint's metadata")
    for fqn, entry in md.state_dict_metadata.items():
        if not isinstance(fqn, str) or not isinstance(entry, (TensorStorageMetadata, BytesStorageMetadata)):
            raise SentryError(f"{path}: entry {fqn!r} is neither a tensor nor bytes")
        if isinstance(entry, TensorStorageMetadata) and not (
            isinstance(entry.properties.dtype, torch.dtype) and _shape(entry.size) is not None
            and all(_shape(c.offsets) is not None and _shape(c.sizes) is not None for c in entry.chunks)
        ):
            raise SentryError(f"{path}: tensor {fqn!r} has a malformed size or chunk list")
    return md


def _shape(value):
    """``value`` as a tuple of non-negative ints, or None."""
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        return None
    return tuple(value)


class _Chunks:
    """Where each chunk of each tensor lies: (fqn, offsets) -> (file name, offset, length)."""

    def __init__(self, directory: Path, md):
        from torch.distributed.checkpoint.metadata import MetadataIndex

        self.directory, self.where = directory, {}
        self.files_with_bytes: set[str] = set()
        for index, info in md.storage_data.items():
            if not isinstance(index, MetadataIndex) or not isinstance(index.fqn, str):
                raise SentryError(f"{directory / METADATA}: a storage entry has a malformed index")
            name = getattr(info, "relative_path", None)
            if not (isinstance(name, str) and name and "/" not in name and name not in (".", "..")
                    and type(info.offset) is int and type(info.length) is int and info.offset >= 0 and info.length >= 0):
                raise SentryError(f"{directory / METADATA}: a storage entry is malformed or names a file outside the checkpoint")
            if getattr(info, "transform_descriptors", None):
                raise UnsupportedFormat(f"{directory / METADATA}: {index.fqn!r} is stored with transforms "
                                  f"{list(info.transform_descriptors)} (compression), which Sentry does not read")
            self.where[(index.fqn, _shape(index.offset))] = (name, info.offset, info.length)

    def load(self, fqn: str, chunk, dtype):
        """The chunk's tensor, read from its byte range and checked against the metadata."""
        import torch

        try:
            name, offset, length = self.where[(fqn, _shape(chunk.offsets))]
        except KeyError:
            raise SentryError(f"{self.directory / METADATA} lists a chunk of {fqn!r} at {list(chunk.offsets)} "
                              f"without saying where it is stored") from None
        path = self.directory / name
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise SentryError(f"{path} ends before the chunk of {fqn!r} that {METADATA} places there")
        try:
            t = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SentryError(f"{path}: the chunk of {fqn!r} is not a saved tensor: {type(exc).__name__}: {exc}") from None
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or tuple(t.shape) != _shape(chunk.sizes):
            raise SentryError(f"{path}: the chunk of {fqn!r} is not the {dtype} tensor of shape "
                              f"{list(chunk.sizes)} that {METADATA} says")
        return name, t


def tensor_digest(fqn: str, entry, chunks: _Chunks, params: HashParams):
    """(digest, files read) of one tensor, from its chunks."""
    from ..hashing.cpu import digest_bytes
    from ..hashing.pieces import Pieces, plan_range
    from ..hashing.tensor import cpu_tensor_bytes

    shape, dtype = _shape(entry.size), entry.properties.dtype
    row_blocks = len(shape) > 0 and all(_shape(c.sizes)[1:] == shape[1:] and not any(c.offsets[1:]) for c in entry.chunks)
    files: set[str] = set()
    if not row_blocks:  # e.g. column shards: assembled in memory, then hashed as one tensor
        full, filled = _assemble(fqn, shape, dtype, entry, chunks, files)
        if not filled:
            raise SentryError(f"{chunks.directory / METADATA}: the chunks of {fqn!r} do not cover the tensor exactly")
        return digest_bytes(cpu_tensor_bytes(fqn, full), params), files
    row = math.prod(shape[1:]) * dtype.itemsize
    pieces = Pieces(fqn, shape[0] * row, params)
    ls = params.leaf_size
    for c in entry.chunks:
        name, t = chunks.load(fqn, c, dtype)
        files.add(name)
        data, start = cpu_tensor_bytes(fqn, t), c.offsets[0] * row
        plan = plan_range(pieces.size, start, start + len(data), params)
        for r in plan.regions:
            pieces.add_region(r, digest_bytes(data[r.lo * ls - start: min(r.hi * ls, pieces.size) - start], r.params(ls)).chunks)
        for s, e in plan.edges:
            pieces.add_bytes(s, data[s - start: e - start].tobytes())
    return pieces.fold(), files


def _assemble(fqn, shape, dtype, entry, chunks, files):
    import torch

    stored = sum(chunks.where.get((fqn, _shape(c.offsets)), ("", 0, 0))[2] for c in entry.chunks)
    if math.prod(shape) * dtype.itemsize > stored:  # a hostile size must not cost its memory
        raise SentryError(f"{chunks.directory / METADATA}: tensor {fqn!r} is larger than the bytes stored for it")
    full = torch.empty(shape, dtype=dtype)
    seen = torch.zeros(shape, dtype=torch.int32)
    for c in entry.chunks:
        name, t = chunks.load(fqn, c, dtype)
        files.add(name)
        where = tuple(slice(o, o + s) for o, s in zip(c.offsets, c.sizes))
        if any(o + s > n for o, s, n in zip(c.offsets, c.sizes, shape)):
            raise SentryError(f"{chunks.directory / METADATA}: a chunk of {fqn!r} lies outside the tensor")
        full[where] = t
        seen[where] += 1
    return full, bool((seen == 1).all())


def dcp_items(directory: Path, prefix: str, params: HashParams, signed_root: bytes | None = None):
    """One tensor item per tensor of the DCP checkpoint in ``directory`` (``prefix``: its path in
    the artifact, '' or ending in '/'), each recording the metadata file as its ``file``; its
    ``extra['covers']`` names the files its verification covers (a file that also holds a bytes
    entry, pickled objects Sentry does not check, is not covered). With ``signed_root`` (the
    metadata file's root in the signature), None when the file's bytes have another root: they
    are then never unpickled, and the file's own item shows the change."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from ..hashing.cpu import digest_bytes

    data = (directory / METADATA).read_bytes()  # hashed and parsed from this one read
    if signed_root is not None and digest_bytes(data, params).root != signed_root:
        return None
    md = read_metadata(directory / METADATA, data)
    chunks = _Chunks(directory, md)
    with_bytes = {name for (fqn, _), (name, _, _) in chunks.where.items()
                  if not isinstance(md.state_dict_metadata.get(fqn), TensorStorageMetadata)}
    items = []
    for fqn, entry in sorted(md.state_dict_metadata.items()):
        if not isinstance(entry, TensorStorageMetadata):
            continue
        dtype = torch_dtype_name(entry.properties.dtype)
        if dtype is None:
            raise SentryError(f"{directory / METADATA}: tensor {fqn!r} has dtype {entry.properties.dtype}, which safetensors cannot store")
        digest, files = tensor_digest(fqn, entry, chunks, params)
        covers = [prefix + f for f in sorted(files - with_bytes)] + ([] if with_bytes else [prefix + METADATA])
        items.append(Item(TENSOR, fqn, digest.size, digest.root, digest.chunks if len(digest.chunks) > 1 else (),
                          dtype, _shape(entry.size), prefix + METADATA, {"covers": covers}))
    return items


def is_metadata(name: str) -> bool:
    return os.path.basename(name) == METADATA
