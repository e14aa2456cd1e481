"""The dataset sidecar: one canonical sample record per line (JSON Lines), sorted by name.

Its root is the manifest root of docs/spec.md §2 over those records, so a bundle signs a dataset of
any size with one digest. The sidecar itself is untrusted until its root matches the signed one;
:func:`parse` refuses anything but the exact bytes signing writes (docs/spec.md §6).
"""
from __future__ import annotations

import json
import re

from ..errors import VerificationError
from ..hashing.merkle import leaf_hash, root_of_hashes
from .item import MAX_NAME, PLAIN_JSON_CHARS, SAMPLE, Item

# The one canonical spelling of a sample record (sorted keys, no spaces); the name is then checked
# to be spelt as json.dumps spells it. Matching this is ~5x faster than parsing and re-encoding,
# which matters at millions of lines.
_RECORD = re.compile(rb'\{"kind":"sample","name":("(?:[^"\\]|\\.)*"),"root":"([0-9a-f]{64})","size":(0|[1-9][0-9]{0,18})\}')

_PLAIN_TOKEN = re.compile(b'"' + PLAIN_JSON_CHARS.encode() + b'"')


def records_root(records) -> bytes:
    """RFC 9162 root over canonical records, one record per leaf (the manifest root rule)."""
    return root_of_hashes([leaf_hash(r) for r in records])


def is_plain_name(name: str) -> bool:
    """A sample name is a relative POSIX path that stays inside the dataset directory."""
    return 0 < len(name) <= MAX_NAME and "\x00" not in name and not any(p in ("", ".", "..") for p in name.split("/"))


def json_string(token: bytes):
    """The string a JSON string token spells, if the token is exactly how json.dumps writes it."""
    if _PLAIN_TOKEN.fullmatch(token):  # nothing escaped: the token spells itself (the common case)
        return token[1:-1].decode("ascii")
    try:
        value = json.loads(token)
    except ValueError:
        return None
    return value if json.dumps(value).encode() == token else None


def parse(data: bytes, where: str) -> tuple[list[Item], bytes]:
    """Sample items from sidecar bytes, and their records root; VerificationError naming ``where``
    and the line on anything odd."""
    if data and not data.endswith(b"\n"):
        raise VerificationError(f"{where} does not end with a newline; it is truncated or not a Sentry sidecar")
    items: list[Item] = []
    leaves = []
    # Line by line rather than data.split(): a list of every line would outlive the loop (for the
    # root), and at millions of samples cost more than the items themselves.
    start, n = 0, 0
    while start < len(data):
        end = data.index(b"\n", start)
        line, start, n = data[start:end], end + 1, n + 1
        # Byte-for-byte canonical: no duplicate keys, extra fields, spaces or alternative spellings
        # that a different parser could read differently.
        m = _RECORD.fullmatch(line)
        name = json_string(m.group(1)) if m else None
        if name is None:
            raise VerificationError(f"{where} line {n} is not a canonical sample record")
        item = Item(SAMPLE, name, int(m.group(3)), bytes.fromhex(m.group(2).decode()))
        if not is_plain_name(item.name):
            raise VerificationError(f"{where} line {n} names a sample outside the dataset ({item.name[:80]!r})")
        if items and item.name <= items[-1].name:
            what = "lists the sample twice" if item.name == items[-1].name else "is out of name order"
            raise VerificationError(f"{where} line {n} {what} ({item.name[:80]!r})")
        items.append(item)
        leaves.append(leaf_hash(line))
    return items, root_of_hashes(leaves)  # records_root of the lines
