"""One hashed item of a manifest: a file, a tensor (from a file or from memory), or a dataset sample."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from .._json import describe
from ..errors import InvalidBundle
from ..hashing.merkle import root_of_hashes, split_hashes
from .dtypes import ELEMENT_SIZE

__all__ = ["FILE", "MAX_ITEMS", "MAX_NAME", "PLAIN_JSON_CHARS", "SAMPLE", "TENSOR", "Item", "ItemKind", "is_valid_name"]

ItemKind = Literal["file", "tensor", "sample"]
FILE: Final = "file"
TENSOR: Final = "tensor"
SAMPLE: Final = "sample"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Limits a verifier enforces, so a signer checks them too (Manifest.check_signable, sidecar.Writer).
MAX_NAME = 4096
MAX_ITEMS = 10_000_000  # items of a manifest, samples of a dataset
# Printable ASCII but '"' and '\\': the characters json.dumps (ensure_ascii) writes as they are.
PLAIN_JSON_CHARS = r'[ !#-\[\]-~]*'
_PLAIN_NAME = re.compile(PLAIN_JSON_CHARS)


# slots: no per-item __dict__; a dataset holds millions of these.
@dataclass(frozen=True, slots=True)
class Item:
    kind: ItemKind
    name: str  # POSIX path relative to the artifact (or dataset) root, or the state_dict key
    size: int
    root: bytes
    chunks: tuple[bytes, ...] = ()  # roots of aligned chunks (see docs/spec.md); () when one chunk
    dtype: str | None = None  # tensors only
    shape: tuple[int, ...] | None = None  # tensors only
    file: str | None = None  # for a tensor read from a file: that file's name
    # Not signed; e.g. the live tensor. None rather than a dict per item: most items carry nothing.
    extra: dict | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity inside one manifest: kind, origin file, name."""
        return (self.kind, self.file or "", self.name)

    @property
    def label(self) -> str:
        if self.kind == TENSOR and self.file:
            return f"tensor {self.name} (in {self.file})"
        return f"{self.kind} {self.name}"

    def to_json(self) -> dict:
        obj = {"kind": self.kind, "name": self.name, "size": self.size, "root": self.root.hex()}
        if len(self.chunks) > 1:
            obj["chunks"] = [c.hex() for c in self.chunks]
        if self.kind == TENSOR:
            obj["dtype"] = self.dtype
            obj["shape"] = list(self.shape or ())
            if self.file:
                obj["file"] = self.file
        return obj

    def record(self) -> bytes:
        """Canonical bytes of the item: the leaf that the manifest root commits to."""
        if type(self.size) is int and _PLAIN_NAME.fullmatch(self.name):
            # What json.dumps below writes, a few times faster: once per sample of a dataset, once
            # per file or tensor of a model each time its manifest root is taken.
            if self.kind in (SAMPLE, FILE) and len(self.chunks) <= 1:
                return f'{{"kind":"{self.kind}","name":"{self.name}","root":"{self.root.hex()}","size":{self.size}}}'.encode()
            if self.kind == TENSOR and self._plain_tensor():
                return self._tensor_record().encode()
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def _plain_tensor(self) -> bool:
        """Whether json.dumps writes the tensor fields as Python spells them: plain strings, ints
        that are exactly int (a bool is a number to Python, not to JSON)."""
        return (type(self.dtype) is str and _PLAIN_NAME.fullmatch(self.dtype) is not None
                and (not self.file or (type(self.file) is str and _PLAIN_NAME.fullmatch(self.file) is not None))
                and type(self.shape) is tuple and all(type(d) is int for d in self.shape))

    def _tensor_record(self) -> str:
        """The record of a tensor whose fields are plain, keys in sorted order."""
        chunks = '"chunks":["' + '","'.join(c.hex() for c in self.chunks) + '"],' if len(self.chunks) > 1 else ""
        file = f'"file":"{self.file}",' if self.file else ""
        shape = ",".join(map(str, self.shape or ()))
        return (f'{{{chunks}"dtype":"{self.dtype}",{file}"kind":"tensor","name":"{self.name}",'
                f'"root":"{self.root.hex()}","shape":[{shape}],"size":{self.size}}}')

    @classmethod
    def from_json(cls, obj) -> Item:
        """Parse an item from a signed (but otherwise untrusted) manifest, checking every field."""

        def bad(why):
            return InvalidBundle(f"the signed manifest has an invalid item: {why}")

        if not isinstance(obj, dict):
            raise bad("not an object")
        kind, name, size = obj.get("kind"), obj.get("name"), obj.get("size")
        if kind not in (FILE, TENSOR):  # samples are read from a sidecar (manifest/sidecar.py)
            raise bad(f"unknown kind {describe(kind)}")
        if not is_valid_name(name):
            raise bad(f"the name {describe(name)} is not a string of 1 to {MAX_NAME} characters")
        name = describe(name)  # for messages from here on
        if type(size) is not int or size < 0:
            raise bad(f"{name} has no valid size")
        root = _hashes([obj.get("root")], bad, name)[0]
        chunks = _hashes(_list(obj.get("chunks", []), bad, name), bad, name)
        if chunks and root_of_hashes(chunks) != root:
            raise bad(f"{name} has chunk roots that do not combine to its root")
        if kind == FILE:
            if set(obj) - {"kind", "name", "size", "root", "chunks"}:
                raise bad(f"{name} has unexpected fields")
            return cls(FILE, obj["name"], size, root, chunks)
        dtype, shape, file = obj.get("dtype"), obj.get("shape"), obj.get("file")
        if not isinstance(dtype, str) or dtype not in ELEMENT_SIZE:
            raise bad(f"{name} has an unknown dtype {describe(dtype)}")
        shape = _list(shape, bad, name)
        if not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"{name} has an invalid shape")
        if file is not None and not is_valid_name(file):
            raise bad(f"{name} has an invalid file")
        return cls(TENSOR, obj["name"], size, root, chunks, dtype, tuple(shape), file)


def is_valid_name(name) -> bool:
    """A name a manifest may hold: a string of 1 to MAX_NAME characters."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME


def _hashes(values: list, bad, name) -> tuple:
    """The 32-byte values of strings of 64 lowercase hex digits, decoded all at once and checked
    by encoding them back: a big tensor's item lists 17, and per string a regex and a fromhex
    cost three times as much."""
    try:
        joined = "".join(values)
        raw = bytes.fromhex(joined)
    except (TypeError, ValueError):  # not strings, or not hex
        raw = None
    # Encoding back refuses upper case and spaces, which fromhex lets through.
    if raw is None or raw.hex() != joined or set(map(len, values)) - {64}:
        raise bad(f"{name} has a root that is not 64 lowercase hex digits")
    return split_hashes(raw)


def _list(value, bad, name) -> list:
    if not isinstance(value, list):
        raise bad(f"{name} has a field that should be a list")
    return value
