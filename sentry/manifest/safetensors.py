"""Locate each tensor's byte range in a .safetensors file from its header, without loading it.

Format: 8-byte little-endian header length N, N bytes of JSON, then the data section; each
tensor names its dtype, shape and [begin, end) offsets within the data section. The header
comes from a file we do not trust, so every field is checked before it is used.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .._json import StrictJSONError, describe, loads_strict
from ..errors import SentryError
from ..io.posix import FileSource
from .dtypes import ELEMENT_SIZE

__all__ = ["MAX_HEADER_BYTES", "InvalidSafetensors", "TensorRange", "read_tensor_ranges"]

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit


@dataclass(frozen=True)
class TensorRange:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute, in the file
    size: int


class InvalidSafetensors(SentryError):
    pass


def read_tensor_ranges(source: FileSource) -> list[TensorRange]:
    """Tensor ranges of an open file, sorted by name; InvalidSafetensors if the header is bad."""
    where = source.path
    if source.size < 8:
        raise InvalidSafetensors(f"{where} is too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", source.read(0, 8))
    if header_len > MAX_HEADER_BYTES or 8 + header_len > source.size:
        raise InvalidSafetensors(f"{where} has a safetensors header length that does not fit the file")
    try:
        header = loads_strict(source.read(8, header_len))
    except StrictJSONError as exc:
        raise InvalidSafetensors(f"{where} has a safetensors header that is not valid: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidSafetensors(f"{where} has a safetensors header that is not a JSON object")
    data_start = 8 + header_len
    data_size = source.size - data_start
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            # The format's free-form metadata: a map of strings to strings, and nothing else.
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise InvalidSafetensors(f"{where} has __metadata__ that is not a map of strings to strings")
            continue
        ranges.append(_checked_range(where, name, entry, data_start, data_size))
    spans = sorted((r.offset, r.offset + r.size, r.name) for r in ranges)
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise InvalidSafetensors(f"{where}: tensors {describe(a)} and {describe(b)} overlap")
    return sorted(ranges, key=lambda r: r.name)


def _checked_range(where, name, entry, data_start: int, data_size: int) -> TensorRange:
    label = f"{where}: tensor {describe(name)}"
    bad = f"{label} has an invalid header entry"
    if not isinstance(entry, dict):
        raise InvalidSafetensors(bad)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ELEMENT_SIZE:
        raise InvalidSafetensors(f"{label} has an unsupported dtype {describe(dtype)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidSafetensors(bad)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise InvalidSafetensors(f"{label} has data offsets outside the file")
    size = offsets[1] - offsets[0]
    if size != _byte_size(shape, ELEMENT_SIZE[dtype], data_size):
        raise InvalidSafetensors(f"{label} has a byte size that does not match its shape")
    return TensorRange(name, dtype, tuple(shape), data_start + offsets[0], size)


def _byte_size(shape: list[int], element_size: int, limit: int) -> int:
    """The bytes a tensor of ``shape`` takes, or ``limit + 1`` once it is known to exceed ``limit``:
    a hostile header's thousands of huge dimensions would otherwise make a product of millions of
    digits."""
    if 0 in shape:
        return 0
    size = element_size
    for d in shape:
        size *= d
        if size > limit:
            return limit + 1
    return size
