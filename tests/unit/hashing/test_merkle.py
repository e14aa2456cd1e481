"""Item hash: shared vectors, an independent RFC 9162 oracle, every CPU path, hostile files."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from merkle_vectors import VECTORS, VECTORS_DIR, expected, make_vectors, vec_id, vector_data
from pymerkle import InmemoryTree

from sentry.errors import SentryError
from sentry.hashing import cpu, merkle
from sentry.hashing.params import HashParams
from sentry.io.posix import FileSource

try:
    from sentry.hashing import _cmerkle
except ImportError:  # pragma: no cover
    _cmerkle = None
needs_c = pytest.mark.skipif(_cmerkle is None, reason="C extension not built")


@pytest.fixture(params=[True, False], ids=["sha-ni", "openssl"])
def c_lanes(request):
    """Run a C-extension test with the two-lane SHA-NI leaf code, then with OpenSSL only."""
    if _cmerkle is None:
        pytest.skip("C extension not built")
    if _cmerkle.set_sha_ni(request.param) != request.param:
        pytest.skip("this CPU has no SHA extensions")
    yield
    _cmerkle.set_sha_ni(True)


def pymerkle_root(data, leaf_size: int) -> bytes:
    """Independent oracle: pymerkle appends each leaf's bytes (it prefixes 0x00 / 0x01 itself)."""
    tree = InmemoryTree(algorithm="sha256")
    for i in range(0, len(data), leaf_size):
        tree.append_entry(bytes(data[i : i + leaf_size]))
    return tree.get_root()


def ref_chunks(data, leaf_size: int, max_chunks: int) -> tuple:
    c = merkle.chunk_leaves(merkle.leaf_count(len(data), leaf_size), max_chunks)
    step = c * leaf_size
    return tuple(merkle.merkle_root(data[i : i + step], leaf_size) for i in range(0, len(data), step))


def as_tuple(d: cpu.ItemDigest):
    return d.size, d.root, d.chunks


def old_file(path: Path, data: bytes) -> Path:
    """Write a file and date it in the past, so any later write visibly changes its mtime."""
    path.write_bytes(data)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return path


# -- known answers and the oracle ---------------------------------------------------------------------
# RFC 6962 reference tree (Certificate Transparency test data, transparency-dev/merkle
# testonly/constants.go): roots of the first n of these leaves, n = 0..8.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_reference_and_oracle_match_rfc6962_known_answers():
    leaves = [bytes.fromhex(x) for x in CT_LEAVES]
    for n, want in enumerate(CT_ROOTS):
        assert merkle.root_of_hashes([merkle.leaf_hash(x) for x in leaves[:n]]).hex() == want
        assert merkle._py_root_of_hashes([merkle.leaf_hash(x) for x in leaves[:n]]).hex() == want
        tree = InmemoryTree(algorithm="sha256")
        for x in leaves[:n]:
            tree.append_entry(x)
        assert tree.get_root().hex() == want


def test_stream_root_matches_known_answers_and_the_reference_for_every_count():
    leaves = [bytes.fromhex(x) for x in CT_LEAVES]
    for n, want in enumerate(CT_ROOTS):
        stream = merkle.StreamRoot()
        for x in leaves[:n]:
            stream.add(merkle.leaf_hash(x))
        assert stream.root().hex() == want and stream.count == n
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    stream = merkle.StreamRoot()
    for n in range(1, 301):
        stream.add(hashes[n - 1])
        assert stream.root() == merkle.root_of_hashes(hashes[:n]), n  # root() can be asked at any point


@needs_c
def test_c_fold_is_the_reference_fold():
    rng = random.Random(9162)
    for n in list(range(70)) + [127, 128, 129, 255, 256, 257, 291, 1000, 1025]:
        hashes = [rng.randbytes(32) for _ in range(n)]
        assert merkle.root_of_hashes(hashes) == merkle._py_root_of_hashes(hashes), n
        assert merkle.root_of_hashes(tuple(hashes)) == merkle._py_root_of_hashes(hashes), n
    with pytest.raises(ValueError):
        _cmerkle.root_of_hashes(b"x" * 33)


def test_chunk_leaves_is_the_smallest_power_of_two_that_fits():
    for max_chunks in (1, 2, 3, 16, 17, 4096):
        for n in list(range(200)) + [4095, 4096, 4097, 64000, 1 << 40, (1 << 40) + 1]:
            c = 1
            while -(-n // c) > max_chunks:
                c <<= 1
            assert merkle.chunk_leaves(n, max_chunks) == c, (n, max_chunks)


def test_split_hashes_is_slicing():
    rng = random.Random(32)
    for n in (0, 1, 2, 16, 4096, 4097):
        hashes = tuple(rng.randbytes(32) for _ in range(n))
        assert merkle.split_hashes(b"".join(hashes)) == hashes


def test_one_leaf_item_is_the_rfc6962_leaf_hash():
    # The CT leaf 0x00 is also our one-byte pattern item (byte 0 = 0): its root is that leaf hash.
    assert merkle.merkle_root(b"\x00").hex() == "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"


def test_vectors_file_is_what_the_generator_writes():
    assert json.loads((VECTORS_DIR / "merkle.json").read_text()) == make_vectors.build()


# -- vectors against every path --------------------------------------------------------------------------
@pytest.mark.parametrize("vec", VECTORS, ids=vec_id)
def test_vector_reference_and_oracle(vec):
    data = vector_data(vec)
    size, root, chunks = expected(vec)
    assert merkle.merkle_root(data, vec["leaf_size"]) == root
    assert pymerkle_root(data, vec["leaf_size"]) == root
    assert ref_chunks(data, vec["leaf_size"], vec["max_chunks"]) == chunks
    if chunks:
        assert merkle.root_of_hashes(chunks) == root
        assert len(chunks) <= vec["max_chunks"]


@pytest.mark.parametrize("vec", VECTORS, ids=vec_id)
def test_vector_c_extension(vec, c_lanes):
    data = vector_data(vec)
    size, root, chunks = expected(vec)
    assert _cmerkle.merkle_root(data, vec["leaf_size"]) == root
    joined = _cmerkle.chunk_roots(data, vec["leaf_size"], vec["chunk_leaves"] or 1)
    assert joined == b"".join(chunks)


@pytest.mark.parametrize("fallback", [False, True], ids=["accelerated", "hashlib"])
@pytest.mark.parametrize("vec", VECTORS, ids=vec_id)
def test_vector_digest_bytes(vec, fallback, monkeypatch):
    if fallback:
        monkeypatch.setattr(cpu, "_chunk_roots", cpu._py_chunk_roots)
    data = vector_data(vec)
    params = HashParams(leaf_size=vec["leaf_size"], max_chunks=vec["max_chunks"])
    want = expected(vec)
    assert as_tuple(cpu.digest_bytes(data, params)) == want
    assert as_tuple(cpu.digest_bytes(bytearray(data), params)) == want
    assert as_tuple(cpu.digest_bytes(np.frombuffer(data, dtype=np.uint8), params)) == want


@pytest.mark.parametrize("vec", VECTORS, ids=vec_id)
def test_vector_digest_ranges(vec, tmp_path):
    data = vector_data(vec)
    params = HashParams(leaf_size=vec["leaf_size"], max_chunks=vec["max_chunks"])
    alone = old_file(tmp_path / "alone.bin", data)
    embedded = old_file(tmp_path / "embedded.bin", b"head" * 33 + data + b"tail")
    got = cpu.digest_ranges(
        [cpu.FileRange(alone, 0, len(data)), cpu.FileRange(alone), cpu.FileRange(embedded, 132, len(data))],
        params,
    )
    assert [as_tuple(d) for d in got] == [expected(vec)] * 3


def test_vectors_cover_the_boundaries():
    sizes = {v["size"] for v in VECTORS}
    assert {0, 1, 4095, 4096, 4097, 8192, 3 * 4096 + 1, 1 << 20} <= sizes
    assert any(v["leaf_size"] != 4096 for v in VECTORS)


# -- properties: sizes around leaf and power-of-two boundaries, any block size / worker count -----------
def boundary_sizes(leaf_size: int, max_leaves: int):
    leaf_counts = {0, 1, 2, 3}
    k = 1
    while k <= max_leaves:
        leaf_counts |= {k - 1, k, k + 1}
        k <<= 1
    for n in sorted(leaf_counts):
        for delta in (-1, 0, 1):
            if n * leaf_size + delta >= 0:
                yield n * leaf_size + delta


@pytest.mark.parametrize("leaf_size", [64, 4096])
def test_property_boundaries_all_paths_agree(leaf_size, monkeypatch):
    rng = random.Random(leaf_size)
    blob = make_vectors.random_bytes((1025 if leaf_size == 64 else 65) * leaf_size + 1, seed="prop")
    for size in sorted(set(boundary_sizes(leaf_size, 1024 if leaf_size == 64 else 64))):
        data = blob[:size]
        max_chunks = rng.choice([1, 2, 3, 16, 100])
        params = HashParams(leaf_size=leaf_size, max_chunks=max_chunks)
        root = merkle.merkle_root(data, leaf_size)
        if size <= 300 * leaf_size:  # pymerkle is slow-ish in pure Python
            assert pymerkle_root(data, leaf_size) == root, size
        if _cmerkle is not None:
            assert _cmerkle.merkle_root(data, leaf_size) == root, size
        monkeypatch.setattr(cpu, "BLOCK_BYTES", leaf_size << rng.randrange(0, 8))
        got = cpu.digest_bytes(data, params, workers=rng.randrange(1, 5))
        assert got.root == root and got.size == size
        assert got.chunks == ref_chunks(data, leaf_size, max_chunks)


def test_c_extension_any_leaf_size(c_lanes):
    # Odd leaf sizes put the SHA-256 padding everywhere in a block (one- and two-block tails).
    blob = make_vectors.random_bytes(20_000, seed="leaf sizes")
    for leaf_size in [1, 2, 31, 54, 55, 56, 62, 63, 64, 65, 119, 127, 128, 1000, 4096]:
        for size in {0, 1, leaf_size, 2 * leaf_size, 2 * leaf_size + 1, 5 * leaf_size - 1, min(20_000, 37 * leaf_size + 3)}:
            data = blob[:size]
            assert _cmerkle.merkle_root(data, leaf_size) == merkle.merkle_root(data, leaf_size), (leaf_size, size)
            assert _cmerkle.chunk_roots(data, leaf_size, 4) == b"".join(
                merkle.merkle_root(data[i : i + 4 * leaf_size], leaf_size) for i in range(0, size, 4 * leaf_size)
            )


def test_property_random_large_sizes_blocks_and_workers(tmp_path, monkeypatch):
    rng = random.Random(2026)
    blob = make_vectors.random_bytes(3 << 20, seed="large")
    path = old_file(tmp_path / "big.bin", blob)
    for _ in range(25):
        size = rng.choice([rng.randrange(0, 3 << 20), (1 << rng.randrange(12, 22)) + rng.choice([-1, 0, 1])])
        offset = rng.randrange(0, len(blob) - size + 1)
        data = blob[offset : offset + size]
        params = HashParams(max_chunks=rng.choice([1, 5, 16, 64]))
        want = (size, merkle.merkle_root(data), ref_chunks(data, 4096, params.max_chunks))
        results = set()
        for _ in range(3):
            monkeypatch.setattr(cpu, "BLOCK_BYTES", 4096 << rng.randrange(0, 11))
            workers = rng.randrange(1, 7)
            results.add(as_tuple(cpu.digest_bytes(data, params, workers=workers)))
            results.add(as_tuple(cpu.digest_ranges([(path, offset, size)], params, workers=workers)[0]))
        assert results == {want}


def test_chunk_invariants():
    blob = make_vectors.random_bytes(300 * 4096 + 7, seed="chunks")
    for max_chunks in (1, 2, 3, 7, 16, 4096):
        for n_bytes in (1, 4096, 4097, 16 * 4096, 16 * 4096 + 1, 300 * 4096 + 7):
            data = blob[:n_bytes]
            d = cpu.digest_bytes(data, HashParams(max_chunks=max_chunks))
            n_leaves = merkle.leaf_count(n_bytes, 4096)
            c = merkle.chunk_leaves(n_leaves, max_chunks)
            assert 1 <= len(d.chunks) <= max_chunks
            assert len(d.chunks) == -(-n_leaves // c)
            assert c == 1 or -(-n_leaves // (c // 2)) > max_chunks  # the smallest such power of two
            assert d.root == merkle.root_of_hashes(d.chunks)
            for i, chunk in enumerate(d.chunks):  # each chunk is the root of its own bytes
                assert chunk == merkle.merkle_root(data[i * c * 4096 : (i + 1) * c * 4096])
    assert cpu.digest_bytes(b"").chunks == ()
    one = cpu.digest_bytes(b"x")
    assert one.chunks == (one.root,)


# -- buffers and arguments ------------------------------------------------------------------------------
def test_digest_bytes_accepts_typed_arrays_and_refuses_strided():
    arr = np.arange(3000, dtype=np.float32).reshape(30, 100)
    assert cpu.digest_bytes(arr).root == merkle.merkle_root(arr.tobytes())
    assert cpu.digest_bytes(memoryview(arr)).root == merkle.merkle_root(arr.tobytes())
    with pytest.raises(SentryError, match="contiguous"):
        cpu.digest_bytes(arr[:, ::2])
    with pytest.raises(SentryError):
        cpu.digest_bytes("not bytes")


@needs_c
def test_c_extension_validates_arguments():
    with pytest.raises(ValueError):
        _cmerkle.merkle_root(b"abc", 0)
    with pytest.raises(ValueError):
        _cmerkle.chunk_roots(b"abc", 4096, 3)
    with pytest.raises(ValueError):
        _cmerkle.chunk_roots(b"abc", -1, 1)
    with pytest.raises((TypeError, BufferError, ValueError)):  # numpy says ValueError
        _cmerkle.merkle_root(np.arange(10, dtype=np.uint8)[::2], 4096)
    assert _cmerkle.merkle_root(b"", 4096) == hashlib.sha256(b"").digest()
    assert _cmerkle.chunk_roots(b"", 4096, 1) == b""
    assert _cmerkle.chunk_roots(b"abc", 4096, 1 << 62) == merkle.merkle_root(b"abc")


def test_hash_params_are_validated():
    with pytest.raises(SentryError):
        cpu.digest_bytes(b"x", params="4096")
    with pytest.raises(SentryError):
        cpu.digest_ranges([("x", -1, 3)])


# -- files ------------------------------------------------------------------------------------------------
def test_many_ranges_in_one_file_and_progress(tmp_path, monkeypatch):
    rng = random.Random(7)
    monkeypatch.setattr(cpu, "BLOCK_BYTES", 16 * 4096)
    blob = make_vectors.random_bytes(2 << 20, seed="ranges")
    other = make_vectors.pattern_bytes(5 * 4096 + 3)
    p1, p2 = old_file(tmp_path / "a.safetensors", blob), old_file(tmp_path / "b.bin", other)
    ranges = [cpu.FileRange(p1), cpu.FileRange(p2, 0, 0), cpu.FileRange(p1, len(blob), 0)]
    for _ in range(60):
        off = rng.randrange(0, len(blob))
        ranges.append(cpu.FileRange(p1, off, rng.randrange(0, min(len(blob) - off, 300_000) + 1)))
        ranges.append(cpu.FileRange(p2, 3, len(other) - 3))
    done = []
    got = cpu.digest_ranges(ranges, progress=done.append, workers=3)
    assert sum(done) == sum(d.size for d in got)
    for r, d in zip(ranges, got):
        content = (blob if r.path == p1 else other)
        size = len(content) - r.offset if r.size is None else r.size
        assert as_tuple(d) == as_tuple(cpu.digest_bytes(content[r.offset : r.offset + size]))
        assert d.root == merkle.merkle_root(content[r.offset : r.offset + size])


def test_range_past_end_of_file(tmp_path):
    p = old_file(tmp_path / "short.bin", b"x" * 100)
    with pytest.raises(SentryError, match="short.bin.*too short"):
        cpu.digest_ranges([(p, 50, 51)])
    with pytest.raises(SentryError, match="too short"):
        cpu.digest_ranges([(p, 101, None)])


def _hook_first_read(monkeypatch, action):
    """Run ``action`` once, just before the first block of any file is read."""
    real_read = FileSource.read
    state = {"done": False}

    def read(self, offset, length):
        if not state["done"]:
            state["done"] = True
            action(self.path)
        return real_read(self, offset, length)

    monkeypatch.setattr(FileSource, "read", read)


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    "change, message",
    [
        ("truncate", "read short"),
        ("append", "changed while it was being hashed"),
        ("rewrite", "changed while it was being hashed"),
        ("replace", "changed while it was being hashed"),
    ],
)
def test_file_changing_while_hashed_is_an_error(tmp_path, monkeypatch, change, message):
    monkeypatch.setattr(cpu, "BLOCK_BYTES", 4 * 4096)
    data = make_vectors.random_bytes(40 * 4096, seed="change")
    p = old_file(tmp_path / "model.bin", data)

    def act(path):
        if change == "truncate":
            os.truncate(path, 1000)
        elif change == "append":
            with open(path, "ab") as f:
                f.write(b"more")
        elif change == "rewrite":  # same size, same inode, new bytes: only mtime tells
            with open(path, "r+b") as f:
                f.seek(len(data) - 10)
                f.write(b"0123456789")
        else:  # renamed over: the bytes hashed are no longer the bytes at the path
            tmp = tmp_path / "new.bin"
            tmp.write_bytes(data)
            os.replace(tmp, path)

    _hook_first_read(monkeypatch, act)
    before = _open_fds()
    with pytest.raises(SentryError, match=message) as err:
        cpu.digest_ranges([cpu.FileRange(p)], workers=2)
    assert str(p) in str(err.value)
    assert _open_fds() == before  # every descriptor closed on the error path


def test_unchanged_file_passes_check(tmp_path):
    p = old_file(tmp_path / "f.bin", b"abc")
    with FileSource(p) as src:
        assert (src.size, src.read(0, 3)) == (3, b"abc")
        src.check_unchanged()


def test_short_read_names_the_file(tmp_path):
    p = old_file(tmp_path / "weights.bin", b"0123456789")
    with FileSource(p) as src:
        assert src.read(2, 8) == b"23456789"
        with pytest.raises(SentryError, match=r"weights\.bin.*read short at byte 10"):
            src.read(5, 10)
        buf = bytearray(4)
        src.read_into(6, buf)
        assert buf == b"6789"
        with pytest.raises(SentryError, match="read short"):
            src.read_into(8, bytearray(4))


def test_symlinks_are_refused_unless_allowed(tmp_path):
    target = old_file(tmp_path / "real.bin", b"payload")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    with pytest.raises(SentryError, match=r"link\.bin is a symbolic link"):
        FileSource(link)
    with pytest.raises(SentryError, match="symbolic link"):
        cpu.digest_ranges([cpu.FileRange(link)])
    with FileSource(link, follow_symlinks=True) as src:
        assert src.read(0, 7) == b"payload"
    got = cpu.digest_ranges([cpu.FileRange(link)], follow_symlinks=True)
    assert got[0].root == merkle.merkle_root(b"payload")


def test_non_regular_files_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(SentryError, match="pipe is not a regular file"):
        FileSource(fifo)
    with pytest.raises(SentryError, match="not a regular file"):
        FileSource(tmp_path)
    with pytest.raises(SentryError, match="does not exist"):
        FileSource(tmp_path / "missing")
    with pytest.raises(SentryError, match="does not exist"):
        cpu.digest_ranges([cpu.FileRange(tmp_path / "missing")])


# -- many small files: hashed whole, several per worker task -------------------------------------------
@pytest.fixture(params=["c", "python"])
def small_file_path(request, monkeypatch):
    """Run with the C whole-file fast path, and without it (FileSource + per-file hashing)."""
    if request.param == "c" and _cmerkle is None:
        pytest.skip("C extension not built")
    if request.param == "python":
        monkeypatch.setattr(cpu, "_chunk_roots", cpu._py_chunk_roots)
    return request.param


def test_many_small_files_mixed_with_large_ones(tmp_path, monkeypatch, small_file_path):
    monkeypatch.setattr(cpu, "BLOCK_BYTES", 4 * 4096)
    rng = random.Random(11)
    contents, ranges = {}, []
    for k in range(300):
        size = 40 * 4096 + 7 if k % 97 == 5 else rng.choice([0, 1, 4095, 4096, 4097, 3 * 4096 + 5, 4 * 4096, 4 * 4096 + 1])
        p = tmp_path / f"s{k:03d}.bin"
        contents[p] = make_vectors.random_bytes(size, seed=f"small{k}")
        p.write_bytes(contents[p])
        ranges.append(cpu.FileRange(p))
        if k % 50 == 0 and size:  # a file with several ranges, one explicit
            ranges.append(cpu.FileRange(p, 1, size - 1))
    ranges.append(ranges[3])  # the same file again, later
    done = []
    got = cpu.digest_ranges(ranges, progress=done.append, workers=2)
    assert sum(done) == sum(d.size for d in got)
    for r, d in zip(ranges, got):
        data = contents[r.path][r.offset :][: r.size]
        assert d.root == merkle.merkle_root(data)
        assert as_tuple(d) == as_tuple(cpu.digest_bytes(data))


def _hook_read_of(monkeypatch, name, action):
    real_read = FileSource.read

    def read(self, offset, length):
        if os.path.basename(self.path) == name:
            action(self.path)
        return real_read(self, offset, length)

    monkeypatch.setattr(FileSource, "read", read)


@pytest.mark.parametrize("change, message", [("truncate", "read short"), ("append", "changed while it was being hashed")])
def test_small_file_changing_inside_a_batch(tmp_path, monkeypatch, change, message):
    monkeypatch.setattr(cpu, "_chunk_roots", cpu._py_chunk_roots)  # FileSource.read is where the hook is
    paths = [old_file(tmp_path / f"f{k:02d}.bin", b"x" * 5000) for k in range(40)]

    def act(path):
        if change == "truncate":
            os.truncate(path, 100)
        else:
            with open(path, "ab") as f:
                f.write(b"more")

    _hook_read_of(monkeypatch, "f17.bin", act)
    before = _open_fds()
    with pytest.raises(SentryError, match=message) as err:
        cpu.digest_ranges([cpu.FileRange(p) for p in paths], workers=2)
    assert "f17.bin" in str(err.value)
    assert _open_fds() == before


def test_odd_entries_inside_a_batch_are_refused(tmp_path, small_file_path):
    paths = [old_file(tmp_path / f"f{k:02d}.bin", b"y" * 100) for k in range(40)]
    link = tmp_path / "link.bin"
    link.symlink_to(paths[0])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(SentryError, match=r"link\.bin is a symbolic link"):
        cpu.digest_ranges([cpu.FileRange(p) for p in paths[:20] + [link] + paths[20:]])
    with pytest.raises(SentryError, match="pipe is not a regular file"):
        cpu.digest_ranges([cpu.FileRange(p) for p in paths[:20] + [fifo] + paths[20:]])
    with pytest.raises(SentryError, match=r"gone\.bin does not exist"):
        cpu.digest_ranges([cpu.FileRange(p) for p in paths + [tmp_path / "gone.bin"]])
    got = cpu.digest_ranges([cpu.FileRange(p) for p in paths[:20] + [link]], follow_symlinks=True)
    assert got[-1] == got[0]


@needs_c
def test_c_whole_file_hashing_vouches_only_for_plain_files(tmp_path):
    sizes = [0, 1, 4096, 4097, 100 * 4096 + 3]
    paths = [old_file(tmp_path / f"{n}.bin", make_vectors.random_bytes(n, seed=str(n))) for n in sizes]
    link, fifo, big = tmp_path / "link", tmp_path / "fifo", old_file(tmp_path / "big", b"z" * 9000)
    link.symlink_to(paths[1])
    os.mkfifo(fifo)
    got = _cmerkle.hash_files([str(p) for p in paths], 4096, 16, 1 << 20, False)
    for p, n, (size, roots) in zip(paths, sizes, got):
        d = cpu.digest_bytes(p.read_bytes())
        assert (size, roots) == (n, b"".join(d.chunks))
    odd = [link, fifo, tmp_path, tmp_path / "missing", big, "nul\x00byte"]
    assert _cmerkle.hash_files([os.fspath(p) for p in odd], 4096, 16, 8192, False) == [None] * len(odd)
    assert _cmerkle.hash_files([str(link)], 4096, 16, 8192, True)[0][0] == 1


SHORT_SYSFS = "/sys/devices/system/cpu/online"  # a regular file that says 4096 bytes and holds fewer


@pytest.mark.skipif(not os.path.isfile(SHORT_SYSFS) or os.path.getsize(SHORT_SYSFS) == 0, reason="no short sysfs file")
def test_a_short_file_inside_a_batch_is_an_error_not_a_retry(tmp_path, small_file_path):
    paths = [old_file(tmp_path / f"f{k:02d}.bin", b"y" * 100) for k in range(10)]
    with pytest.raises(SentryError, match=r"cpu/online ended early: read short at byte \d+ of the \d+ bytes expected from offset 0"):
        cpu.digest_ranges([cpu.FileRange(p) for p in paths[:5] + [SHORT_SYSFS] + paths[5:]], follow_symlinks=True)
    if _cmerkle is not None:
        short, = _cmerkle.hash_files([SHORT_SYSFS], 4096, 16, 1 << 20, True)
        assert short[0] == "short" and short[2] == os.path.getsize(SHORT_SYSFS)
