"""Hashing parameters: recorded in every signature so a verifier reproduces the same tree."""
from __future__ import annotations

from dataclasses import dataclass

from .._json import describe
from ..errors import SentryError

__all__ = [
    "ALGORITHM",
    "DEFAULT_LEAF_SIZE",
    "DEFAULT_MAX_CHUNKS",
    "MAX_LEAF_SIZE",
    "MAX_MAX_CHUNKS",
    "MIN_LEAF_SIZE",
    "HashParams",
]

ALGORITHM = "rfc9162-sha256"
DEFAULT_LEAF_SIZE = 4096
DEFAULT_MAX_CHUNKS = 16
# Bounds that keep a hostile bundle from asking for absurd trees (1-byte leaves, 1 GiB leaves).
MIN_LEAF_SIZE, MAX_LEAF_SIZE = 64, 1 << 24
MAX_MAX_CHUNKS = 4096


@dataclass(frozen=True)
class HashParams:
    leaf_size: int = DEFAULT_LEAF_SIZE
    max_chunks: int = DEFAULT_MAX_CHUNKS

    def __post_init__(self):
        ls, mc = self.leaf_size, self.max_chunks
        if type(ls) is not int or not (MIN_LEAF_SIZE <= ls <= MAX_LEAF_SIZE) or ls & (ls - 1):
            raise SentryError(
                f"leaf size must be a power of two between {MIN_LEAF_SIZE} and {MAX_LEAF_SIZE} bytes, got {describe(ls)}"
            )
        if type(mc) is not int or not (1 <= mc <= MAX_MAX_CHUNKS):
            raise SentryError(f"max_chunks must be an integer from 1 to {MAX_MAX_CHUNKS}, got {describe(mc)}")

    def to_json(self) -> dict:
        return {"algorithm": ALGORITHM, "leaf_size": self.leaf_size, "max_chunks": self.max_chunks}

    @classmethod
    def from_json(cls, obj) -> HashParams:
        if not isinstance(obj, dict) or obj.get("algorithm") != ALGORITHM:
            raise SentryError(f"unsupported hashing parameters: expected algorithm {ALGORITHM!r}")
        # hostile input: __post_init__ refuses a value that is missing or not an int
        return cls(leaf_size=obj.get("leaf_size"), max_chunks=obj.get("max_chunks"))  # type: ignore[arg-type]
