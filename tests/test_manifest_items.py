"""Manifest items: the canonical record of every kind of item."""
import json

import pytest

from sentry.hashing.merkle import root_of_hashes
from sentry.manifest.item import FILE, SAMPLE, TENSOR, Item

CHUNKS = tuple(bytes([i]) * 32 for i in range(16))
ROOT = root_of_hashes(CHUNKS)
NAMES = ["w", "model.layers.0.mlp.up_proj.weight", "q\"uote", "back\\slash", "tab\there", "é", "~!#[]", "ctl\x01"]


def dumped(item: Item) -> bytes:
    return json.dumps(item.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunks", [(), CHUNKS[:1], CHUNKS[:2], CHUNKS], ids=["0", "1", "2", "16"])
@pytest.mark.parametrize("file", [None, "", "model.safetensors", "dir/m\u00e9.safetensors"])
def test_tensor_record_is_what_json_dumps_writes(name, chunks, file):
    item = Item(TENSOR, name, 8192, ROOT, chunks, "BF16", (32, 128), file)
    assert item.record() == dumped(item)


@pytest.mark.parametrize("fields", [
    {"shape": (True, 2)}, {"shape": [2, 2]}, {"shape": ()}, {"size": True}, {"dtype": "F\"32"}, {"dtype": None},
    {"kind": FILE, "dtype": None, "shape": None}, {"kind": SAMPLE, "chunks": CHUNKS[:2]},
])
def test_records_off_the_fast_path_are_still_json_dumps(fields):
    item = Item(**{"kind": TENSOR, "name": "t", "size": 4, "root": ROOT, "dtype": "F32", "shape": (1,), **fields})
    assert item.record() == dumped(item)
