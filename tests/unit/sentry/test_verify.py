"""Sign and verify through the Python API: every kind of tampering is found and named."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from support import flip_bit, other_public_key, save_tensors, tensor_offset, verification_fails

import sentry
from sentry import SentryError, VerificationError

LEAF = 4096


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 64}')
    (d / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 100)  # 25600 B: 7 leaves
    g = torch.Generator().manual_seed(0)
    save_tensors(d / "model.safetensors", {
        "big": torch.randn(64, 128, generator=g),  # 32 KiB: 8 leaves
        "small": torch.randn(16, generator=g),
        "idx": torch.arange(10, dtype=torch.int64),
    })
    return d


def _fails(path, public, **kw) -> sentry.Report:
    return verification_fails(sentry.verify_model, path, public_key=public, **kw)


def test_round_trip_directory(model_dir, keys):
    sig = sentry.sign_model(model_dir, key=keys[0])
    assert sig == model_dir.with_name("model.sig") and sig.exists()
    report = sentry.verify_model(model_dir, public_key=keys[1])
    assert report.ok and report.checked == 3 + 3  # three files and three tensors


def test_single_file_default_signature_beside_it(model_dir, keys):
    f = model_dir / "model.safetensors"
    sig = sentry.sign_model(f, key=keys[0])
    assert sig.name == "model.safetensors.sig"
    assert sentry.verify_model(f, public_key=keys[1]).checked == 4


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_bit_in_file_is_located(model_dir, keys, where):
    sentry.sign_model(model_dir, key=keys[0])
    path = model_dir / "sub" / "weights.bin"
    size = path.stat().st_size
    offset = {"first": 0, "middle": size // 2, "last": size - 1}[where]
    flip_bit(path, offset)
    report = _fails(model_dir, keys[1])
    (change,) = report.changed
    assert change.label == "file sub/weights.bin" and change.reasons == ("content differs",)
    leaf_start = offset // LEAF * LEAF
    assert change.first_difference == (leaf_start, min(LEAF, size - leaf_start))
    assert not report.missing and not report.extra


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_bit_in_tensor_is_located(model_dir, keys, where):
    sentry.sign_model(model_dir, key=keys[0])
    path = model_dir / "model.safetensors"
    start, size = tensor_offset(path, "big")
    rel = {"first": 0, "middle": size // 2, "last": size - 1}[where]
    flip_bit(path, start + rel, bit=3)
    report = _fails(model_dir, keys[1])
    by_label = {c.label: c for c in report.changed}
    assert set(by_label) == {"file model.safetensors", "tensor big (in model.safetensors)"}
    assert by_label["tensor big (in model.safetensors)"].first_difference == (rel // LEAF * LEAF, LEAF)


def test_renamed_added_removed_files(model_dir, keys):
    sentry.sign_model(model_dir, key=keys[0])
    (model_dir / "config.json").rename(model_dir / "config2.json")
    (model_dir / "extra.txt").write_text("injected")
    (model_dir / "sub" / "weights.bin").unlink()
    report = _fails(model_dir, keys[1])
    assert report.missing == ["file config.json", "file sub/weights.bin"]
    assert report.extra == ["file config2.json", "file extra.txt"]
    assert report.changed == []


def test_swapped_tensor_names(tmp_path, keys):
    f = tmp_path / "w.safetensors"
    a, b = torch.ones(8), torch.zeros(8)
    save_tensors(f, {"a": a, "b": b})
    sentry.sign_model(f, key=keys[0])
    save_tensors(f, {"a": b, "b": a})
    report = _fails(f, keys[1])
    assert {c.label for c in report.changed} >= {"tensor a (in w.safetensors)", "tensor b (in w.safetensors)"}


def test_dtype_change_with_identical_bytes(tmp_path, keys):
    f = tmp_path / "w.safetensors"
    t = torch.arange(6, dtype=torch.float32)
    save_tensors(f, {"t": t})
    sentry.sign_model(f, key=keys[0])
    save_tensors(f, {"t": t.view(torch.int32)})
    report = _fails(f, keys[1])
    change = next(c for c in report.changed if c.label.startswith("tensor t"))
    assert change.reasons == ("dtype F32 -> I32",)  # same bytes, same root: only the dtype differs


def test_wrong_key(model_dir, keys, tmp_path):
    sentry.sign_model(model_dir, key=keys[0])
    with pytest.raises(VerificationError, match="signature"):
        sentry.verify_model(model_dir, public_key=other_public_key(tmp_path))


def test_valid_bundle_for_another_artifact(model_dir, keys, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    sig = sentry.sign_model(other, key=keys[0])
    report = _fails(model_dir, keys[1], signature=sig)
    assert report.changed[0].label == "file config.json"
    assert "file model.safetensors" in report.extra


def test_signature_inside_directory_is_left_out(model_dir, keys):
    sig = sentry.sign_model(model_dir, key=keys[0], signature=model_dir / "model.sig")
    assert sig.parent == model_dir
    assert sentry.verify_model(model_dir, public_key=keys[1], signature=sig).ok


def test_signer_ignore_patterns_apply_at_verify(model_dir, keys):
    sentry.sign_model(model_dir, key=keys[0], ignore=["*.log"])
    (model_dir / "train.log").write_text("step 1")
    assert sentry.verify_model(model_dir, public_key=keys[1]).ok
    (model_dir / "notes.txt").write_text("new")
    assert _fails(model_dir, keys[1]).extra == ["file notes.txt"]
    assert sentry.verify_model(model_dir, public_key=keys[1], ignore=["notes.txt"]).ok


def test_git_directory_is_ignored_by_default(model_dir, keys):
    sentry.sign_model(model_dir, key=keys[0])
    (model_dir / ".git").mkdir()
    (model_dir / ".git" / "HEAD").write_text("ref: refs/heads/main")
    assert sentry.verify_model(model_dir, public_key=keys[1]).ok


def test_symlinks_refused_and_never_followed_outside(model_dir, keys, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("outside")
    (model_dir / "link").symlink_to(outside)
    with pytest.raises(SentryError, match="symbolic link"):
        sentry.sign_model(model_dir, key=keys[0])
    with pytest.raises(SentryError, match="outside"):
        sentry.sign_model(model_dir, key=keys[0], allow_symlinks=True)
    (model_dir / "link").unlink()
    (model_dir / "link").symlink_to(model_dir / "config.json")
    sentry.sign_model(model_dir, key=keys[0], allow_symlinks=True)
    assert sentry.verify_model(model_dir, public_key=keys[1]).ok  # the signer's choice is recorded


def test_fifo_is_refused(model_dir, keys):
    os.mkfifo(model_dir / "pipe")
    with pytest.raises(SentryError, match="not a regular file"):
        sentry.sign_model(model_dir, key=keys[0])


def test_missing_inputs_are_input_errors(model_dir, keys, tmp_path):
    with pytest.raises(SentryError) as exc:
        sentry.sign_model(tmp_path / "nope", key=keys[0])
    assert exc.value.exit_code == 2 and "does not exist" in str(exc.value)
    with pytest.raises(SentryError, match="does not exist"):
        sentry.verify_model(model_dir, public_key=keys[1])  # never signed: no model.sig
    with pytest.raises(SentryError, match="signing key"):
        sentry.sign_model(model_dir)


def test_signing_never_writes_into_the_artifact(model_dir, keys):
    before = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    sentry.sign_model(model_dir, key=keys[0])
    assert {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()} == before
    assert [p.name for p in model_dir.parent.iterdir() if p.name.startswith("model.sig")] == ["model.sig"]


def test_dataset_and_model_signatures_are_not_interchangeable(model_dir, keys):
    sentry.sign_dataset(model_dir, key=keys[0])
    assert sentry.verify_dataset(model_dir, public_key=keys[1]).ok
    with pytest.raises(SentryError, match="signs a dataset, not a model; verify it with verify_dataset"):
        sentry.verify_model(model_dir, public_key=keys[1])


def test_leaf_size_is_recorded_and_reused(model_dir, keys):
    sig = sentry.sign_model(model_dir, key=keys[0], leaf_size=1024)
    from sentry.signing import parse_bundle

    payload = json.loads(parse_bundle(json.loads(sig.read_text())).payload)
    assert payload["predicate"]["hashing"]["leaf_size"] == 1024
    flip_bit(model_dir / "sub" / "weights.bin", 5000)
    change = _fails(model_dir, keys[1]).changed[0]
    assert change.first_difference == (4096, 2048)  # 25 leaves of 1 KiB: chunks of 2 leaves


def test_report_json_names_everything(model_dir, keys):
    sentry.sign_model(model_dir, key=keys[0])
    flip_bit(model_dir / "config.json", 0)
    shutil.rmtree(model_dir / "sub")
    data = _fails(model_dir, keys[1]).to_json()
    assert data["ok"] is False
    assert data["missing"] == [{"kind": "file", "name": "sub/weights.bin", "file": None, "label": "file sub/weights.bin"}]
    assert data["changed"] == [{"kind": "file", "name": "config.json", "file": None, "label": "file config.json",
                                "reasons": ["content differs"], "first_difference": {"offset": 0, "length": 14}}]


def test_file_replaced_between_listing_and_hashing_is_an_error(model_dir, keys, monkeypatch):
    import sentry.hashing as hashing

    real = hashing.digest_ranges

    def replace_then_hash(ranges, *args, **kw):
        f = model_dir / "model.safetensors"
        save_tensors(f, {"big": torch.zeros(100_000)})  # a new, larger file under the same name
        return real(ranges, *args, **kw)

    monkeypatch.setattr(hashing, "digest_ranges", replace_then_hash)
    with pytest.raises(SentryError, match="changed while it was being hashed"):
        sentry.sign_model(model_dir, key=keys[0])
