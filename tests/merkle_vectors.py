"""The shared Merkle vectors (tests/vectors/merkle.json) and their generator, for every backend's tests."""
from __future__ import annotations

import hashlib
import importlib.util
import json

from support import TESTS

VECTORS_DIR = TESTS / "vectors"
VECTORS = json.loads((VECTORS_DIR / "merkle.json").read_text())["vectors"]

_spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
make_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_vectors)


def vector_data(vec) -> bytes:
    data = make_vectors.make_data(vec["data"], vec["size"])
    assert hashlib.sha256(data).hexdigest() == vec["data_sha256"]
    return data


def vec_id(vec):
    return vec["name"]


def expected(vec):
    return vec["size"], bytes.fromhex(vec["root"]), tuple(bytes.fromhex(c) for c in vec["chunks"])
