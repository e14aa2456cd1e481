"""Locate each tensor's byte range in a .safetensors file from its header, without loading it.

Format: 8-byte little-endian header length N, N bytes of JSON, then the data section; each
tensor names its dtype, shape and [begin, end) offsets within the data section. The header
comes from a file we do not trust, so every field is checked before it is used.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from ..errors import SentryError
from ..io.posix import FileSource
from .dtypes import ELEMENT_SIZE

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
        header = json.loads(source.read(8, header_len).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidSafetensors(f"{where} has a safetensors header that is not valid JSON") from None
    if not isinstance(header, dict):
        raise InvalidSafetensors(f"{where} has a safetensors header that is not a JSON object")
    data_start = 8 + header_len
    data_size = source.size - data_start
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ranges.append(_checked_range(where, name, entry, data_start, data_size))
    spans = sorted((r.offset, r.offset + r.size, r.name) for r in ranges)
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise InvalidSafetensors(f"{where}: tensors {a!r} and {b!r} overlap")
    return sorted(ranges, key=lambda r: r.name)


def _checked_range(where, name, entry, data_start: int, data_size: int) -> TensorRange:
    bad = f"{where}: tensor {name!r} has an invalid header entry"
    if not isinstance(entry, dict):
        raise InvalidSafetensors(bad)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ELEMENT_SIZE:
        raise InvalidSafetensors(f"{where}: tensor {name!r} has an unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidSafetensors(bad)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise InvalidSafetensors(f"{where}: tensor {name!r} has data offsets outside the file")
    size = offsets[1] - offsets[0]
    if size != math.prod(shape) * ELEMENT_SIZE[dtype]:
        raise InvalidSafetensors(f"{where}: tensor {name!r} has a byte size that does not match its shape")
    return TensorRange(name, dtype, tuple(shape), data_start + offsets[0], size)
