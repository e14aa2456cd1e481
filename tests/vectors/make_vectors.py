"""Generate tests/vectors/merkle.json: item-hash test vectors for every Sentry backend.

    python tests/vectors/make_vectors.py           # rewrite merkle.json
    python tests/vectors/make_vectors.py --check   # exit 1 if merkle.json differs

The data of each vector is defined without reference to any library, so any language can rebuild it:
  pattern: byte i is (i mod 251)
  random:  SHA-256(seed || counter) for counter = 0, 1, 2, ... (counter as 4-byte big-endian),
           concatenated and truncated to the size; seed is the ASCII string given
Roots come from the plain reference implementation, sentry/hashing/merkle.py; tests check them
against an independent RFC 9162 library (pymerkle) and every backend.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from sentry.hashing import merkle

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "merkle.json")
MAX_CHUNKS = 16
SEED = "sentry-merkle-vectors-v1"

# (name, data kind, size, leaf size)
CASES = [
    ("empty", "pattern", 0, 4096),
    ("one-byte", "pattern", 1, 4096),
    ("leaf-minus-one", "pattern", 4095, 4096),
    ("one-leaf", "pattern", 4096, 4096),
    ("leaf-plus-one", "pattern", 4097, 4096),
    ("two-leaves", "pattern", 8192, 4096),
    ("three-leaves-plus-one", "pattern", 3 * 4096 + 1, 4096),
    ("seventeen-leaves", "pattern", 17 * 4096, 4096),  # chunk_leaves 2, a one-leaf last chunk
    ("random-1MiB", "random", 1 << 20, 4096),
    ("leaf-1024-5000B", "pattern", 5000, 1024),
]


def pattern_bytes(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def random_bytes(size: int, seed: str = SEED) -> bytes:
    s = seed.encode("ascii")
    blocks = (hashlib.sha256(s + i.to_bytes(4, "big")).digest() for i in range(-(-size // 32)))
    return b"".join(blocks)[:size]


def make_data(kind: str, size: int) -> bytes:
    return pattern_bytes(size) if kind == "pattern" else random_bytes(size)


def chunk_roots(data: bytes, leaf_size: int, max_chunks: int) -> list:
    n_leaves = merkle.leaf_count(len(data), leaf_size)
    step = merkle.chunk_leaves(n_leaves, max_chunks) * leaf_size
    return [merkle.merkle_root(data[i : i + step], leaf_size) for i in range(0, len(data), step)]


def build() -> dict:
    vectors = []
    for name, kind, size, leaf_size in CASES:
        data = make_data(kind, size)
        n_leaves = merkle.leaf_count(size, leaf_size)
        vec = {
            "name": name,
            "data": kind,
            "size": size,
            "data_sha256": hashlib.sha256(data).hexdigest(),
            "leaf_size": leaf_size,
            "max_chunks": MAX_CHUNKS,
            "leaves": n_leaves,
            "chunk_leaves": merkle.chunk_leaves(n_leaves, MAX_CHUNKS) if size else None,
            "root": merkle.merkle_root(data, leaf_size).hex(),
            "chunks": [c.hex() for c in chunk_roots(data, leaf_size, MAX_CHUNKS)],
        }
        if kind == "random":
            vec["seed"] = SEED
        vectors.append(vec)
    return {
        "algorithm": "rfc9162-sha256",
        "description": "RFC 9162 Merkle Tree Hash (SHA-256) of an item cut into leaves of leaf_size bytes, "
        "and the roots of its aligned chunks of chunk_leaves leaves; see docs/spec.md section 1.",
        "data": {
            "pattern": "byte i is (i mod 251)",
            "random": "SHA-256(seed || counter as 4-byte big-endian) for counter 0, 1, ..., concatenated, truncated",
        },
        "generator": "tests/vectors/make_vectors.py",
        "vectors": vectors,
    }


def main(argv) -> int:
    text = json.dumps(build(), indent=2) + "\n"
    if "--check" in argv:
        with open(OUT) as f:
            same = f.read() == text
        print("merkle.json is up to date" if same else "merkle.json differs from the generator")
        return 0 if same else 1
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
