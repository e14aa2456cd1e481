"""The dataset sidecar: one canonical sample record per line (JSON Lines), sorted by name.

Its root is the manifest root of docs/spec.md §2 over those records, so a bundle signs a dataset of
any size with one digest. The sidecar itself is untrusted until its root matches the signed one;
:func:`parse` refuses anything that is not exactly what :func:`encode` writes (docs/spec.md §5).
"""
from __future__ import annotations

import json

from ..errors import VerificationError
from ..hashing.merkle import leaf_hash, root_of_hashes
from .item import MAX_NAME, SAMPLE, Item


def records_root(records) -> bytes:
    """RFC 9162 root over canonical records, one record per leaf (the manifest root rule)."""
    return root_of_hashes([leaf_hash(r) for r in records])


def encode(items: list[Item]) -> bytes:
    """The sidecar bytes of sample items already sorted by name."""
    return b"".join(it.record() + b"\n" for it in items)


def is_plain_name(name: str) -> bool:
    """A sample name is a relative POSIX path that stays inside the dataset directory."""
    return 0 < len(name) <= MAX_NAME and "\x00" not in name and not any(p in ("", ".", "..") for p in name.split("/"))


def parse(data: bytes, where: str) -> list[Item]:
    """Sample items from sidecar bytes; VerificationError naming ``where`` and the line on anything odd."""
    if data and not data.endswith(b"\n"):
        raise VerificationError(f"{where} does not end with a newline; it is truncated or not a Sentry sidecar")
    items: list[Item] = []
    for n, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            obj = json.loads(line)
            item = Item.from_json(obj)
        except (ValueError, RecursionError, VerificationError) as exc:
            why = exc if isinstance(exc, VerificationError) else "it is not JSON"
            raise VerificationError(f"{where} line {n} is not a valid sample record ({why})") from None
        # Byte-for-byte canonical: no duplicate keys, extra spaces or alternative spellings that a
        # different parser could read differently.
        if item.kind != SAMPLE or item.record() != line:
            raise VerificationError(f"{where} line {n} is not a canonical sample record")
        if not is_plain_name(item.name):
            raise VerificationError(f"{where} line {n} names a sample outside the dataset ({item.name[:80]!r})")
        if items and item.name <= items[-1].name:
            what = "lists the sample twice" if item.name == items[-1].name else "is out of name order"
            raise VerificationError(f"{where} line {n} {what} ({item.name[:80]!r})")
        items.append(item)
    return items
