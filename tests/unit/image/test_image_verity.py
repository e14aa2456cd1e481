"""The dm-verity tree (sentry/image/verity.py, sentry/hashing/verity.py) against `veritysetup
format` (cryptsetup, the reference): tree bytes, superblock bytes and root, for 1 block, a
partial last block, > 128 blocks, > 16,384 blocks (a sparse all-zero file), and several salts.
The C level, the Python level and hashlib agree; with salt 00 level 0 is RFC 9162's leaves."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import uuid

import pytest

from sentry.errors import SentryError
from sentry.hashing import merkle
from sentry.hashing import verity as engine
from sentry.image import verity

needs_veritysetup = pytest.mark.skipif(shutil.which("veritysetup") is None, reason="veritysetup (cryptsetup-bin) not installed")
B = verity.BLOCK
SALTS = ["00", "-", "5a" * 32, bytes(range(256)).hex()]  # "-": veritysetup's empty salt
SIZES = {"1 block": B, "partial last block": 2 * B + 904, "129 blocks": 129 * B + 1}


def salt_bytes(text: str) -> bytes:
    return b"" if text == "-" else bytes.fromhex(text)


def reference_level(data: bytes, salt: bytes) -> bytes:
    data += bytes(-len(data) % B)
    return b"".join(hashlib.sha256(salt + data[i : i + B]).digest() for i in range(0, len(data), B))


def veritysetup_format(data_path, hash_path, salt: str, *extra) -> str:
    out = subprocess.run(["veritysetup", "format", f"--salt={salt}", *extra, str(data_path), str(hash_path)],
                         capture_output=True, text=True, check=True).stdout
    return re.search(r"Root hash:\s+([0-9a-f]{64})", out).group(1)


@pytest.mark.parametrize("salt", [b"", b"\x00", b"\x01", os.urandom(32), bytes(256)])
@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 3 * B, 3 * B + 17])
def test_c_python_and_hashlib_levels_agree(salt, size):
    data = os.urandom(size)
    want = reference_level(data, salt)
    assert engine.level(data, salt) == want
    assert engine.py_level(data, salt, B) == want


def test_level_threads_over_slices_without_changing_a_digest(monkeypatch):
    data = os.urandom(9 * B + 5)
    monkeypatch.setattr(engine, "SLICE_BYTES", 2 * B)
    assert engine.level(data, b"\x07") == reference_level(data, b"\x07")


def test_salt_00_level_0_is_rfc9162_leaves():
    data = os.urandom(5 * B)
    level0 = engine.level(data, b"\x00")
    assert [level0[i : i + 32] for i in range(0, len(level0), 32)] == [merkle.leaf_hash(data[i : i + B]) for i in range(0, len(data), B)]


def test_bad_salt_and_block_size_are_refused():
    with pytest.raises(SentryError, match="at most 256"):
        engine.level(b"x", bytes(257))
    with pytest.raises(SentryError, match="power of two"):
        engine.level(b"x", b"", 3000)


@needs_veritysetup
@pytest.mark.parametrize("salt", SALTS)
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_tree_bytes_and_root_equal_veritysetup(tmp_path, salt, size):
    data = os.urandom(size)
    data_path, hash_path = tmp_path / "data", tmp_path / "hash"
    data_path.write_bytes(data + bytes(-size % B))  # veritysetup reads whole blocks: the image pads
    root = veritysetup_format(data_path, hash_path, salt, "--no-superblock")
    tree = verity.build_tree(data, salt_bytes(salt))
    assert tree.root.hex() == root
    assert hash_path.read_bytes() == tree.hash_area()
    assert len(tree.hash_area()) == verity.hash_area_size(tree.data_blocks)


@needs_veritysetup
def test_superblock_and_appended_tree_equal_veritysetup_on_a_sparse_16385_block_file(tmp_path):
    """Three levels (16,385 blocks > 128 * 128), zeros: a sparse file costs no disk."""
    blocks, fs_uuid = 16_385, uuid.UUID("12345678-1234-5678-1234-567812345678")
    path = tmp_path / "img"
    with open(path, "wb") as f:
        f.truncate(blocks * B)
    root = veritysetup_format(path, path, "ab" * 16, f"--hash-offset={blocks * B}", f"--uuid={fs_uuid}")
    tree = verity.build_tree(bytes(blocks * B), bytes.fromhex("ab" * 16))
    assert len(tree.levels) == 3 and tree.root.hex() == root
    written = path.read_bytes()[blocks * B :]
    assert written == verity.superblock(fs_uuid, bytes.fromhex("ab" * 16), blocks) + tree.hash_area()
    sb = verity.parse_superblock(written[:B])
    assert (sb.uuid, sb.salt, sb.data_blocks) == (fs_uuid, bytes.fromhex("ab" * 16), blocks)


@pytest.mark.parametrize("raw, match", [
    (b"nothing", "no dm-verity superblock"),
    (verity.superblock(uuid.UUID(int=0), b"", 1).replace(b"sha256", b"sha512"), "format 1 with sha256"),
    (verity.superblock(uuid.UUID(int=0), b"", 1)[:80] + b"\xff\xff" + bytes(B - 82), "malformed"),
])
def test_hostile_superblocks_are_refused_in_one_sentence(raw, match):
    with pytest.raises(SentryError, match=match):
        verity.parse_superblock(raw)


def test_the_python_fallback_is_used_without_the_extension_and_agrees(monkeypatch):
    data = os.urandom(200 * B + 7)  # two stored levels
    with_c = verity.build_tree(data, b"\x09")
    monkeypatch.setattr(engine, "_c_level", None)
    assert engine.level(data[: 3 * B + 7], b"\x09") == reference_level(data[: 3 * B + 7], b"\x09")
    assert verity.build_tree(data, b"\x09") == with_c
