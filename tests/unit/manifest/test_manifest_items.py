"""Manifest items: the canonical record of every kind of item, and the checks on signed ones."""
import json

import pytest

from sentry.errors import VerificationError
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


def signed(**fields) -> dict:
    obj = {"kind": "tensor", "name": "t", "size": 8192, "root": ROOT.hex(), "chunks": [c.hex() for c in CHUNKS],
           "dtype": "BF16", "shape": [32, 128]}
    return {k: v for k, v in {**obj, **fields}.items() if v is not ...}


def test_signed_item_parses_back():
    item = Item.from_json(signed())
    assert (item.root, item.chunks, item.shape) == (ROOT, CHUNKS, (32, 128))
    assert Item.from_json(signed(chunks=...)).chunks == ()


@pytest.mark.parametrize("fields, phrase", [
    ({"root": ROOT.hex().upper()}, "64 lowercase hex"),
    ({"root": ROOT.hex()[:-2] + " 0"}, "64 lowercase hex"),
    ({"root": " " + ROOT.hex()[1:]}, "64 lowercase hex"),
    ({"root": ROOT.hex()[:-1]}, "64 lowercase hex"),
    ({"root": ROOT.hex() + "0"}, "64 lowercase hex"),
    ({"root": "zz" * 32}, "64 lowercase hex"),
    ({"root": "\u0661" * 64}, "64 lowercase hex"),  # Arabic-Indic digit one
    ({"root": 5}, "64 lowercase hex"),
    ({"root": ...}, "64 lowercase hex"),
    ({"chunks": [CHUNKS[0].hex()[:-2], CHUNKS[1].hex() + "00"]}, "64 lowercase hex"),  # right total, wrong cut
    ({"chunks": [CHUNKS[0].hex(), None]}, "64 lowercase hex"),
    ({"chunks": [CHUNKS[0].hex(), [CHUNKS[1].hex()]]}, "64 lowercase hex"),
    ({"chunks": [c.hex() for c in CHUNKS[:-1]] + [CHUNKS[-1].hex().upper()]}, "64 lowercase hex"),
    ({"chunks": CHUNKS[0].hex()}, "should be a list"),
    ({"chunks": [c.hex() for c in CHUNKS[:-1]]}, "do not combine to its root"),
])
def test_signed_item_with_a_bad_root_or_chunk_is_refused(fields, phrase):
    with pytest.raises(VerificationError, match=phrase):
        Item.from_json(signed(**fields))
