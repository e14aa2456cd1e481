"""`--json`: one object of one shape (docs/cli-json.md) on every outcome of every command that has
it: success (0), a failed verification (1) and a usage or input error (2), argparse's own included.
Also -v/--log-level. In process (``main`` and capsys): many runs, each a few milliseconds.

References: the bundle's statement read with base64/json, the key fingerprint with `cryptography`
and hashlib, the certificate's subject with `cryptography`, roots from the Python API.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support import flip_bit, make_keys, make_pki, save_tensors, tensor_offset

import sentry
from sentry.cli import main

CONTEXT = {"path", "artifact_type", "format", "root", "signature", "signer", "method"}
# A tensor whose name looks like a label's "(in FILE)": its identity must come out exact.
ODD = "x (in y.safetensors)"


def run(capsys, *args) -> tuple[int, dict, str]:
    """Exit code, the one JSON object on stdout (its shape checked), stderr."""
    try:
        code = main([str(a) for a in (*args, "--json")])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert set(doc) == {"ok", "command", "error", "report", "context"} and set(doc["context"]) == CONTEXT
    assert doc["ok"] is (code == 0) and (doc["error"] is None) is (code == 0)
    if code:  # the error is also the one line on stderr, in the same words
        assert set(doc["error"]) == {"kind", "message"} and doc["error"]["message"] in err
    return code, doc, err


def statement(sig) -> dict:
    return json.loads(base64.b64decode(json.loads(sig.read_text())["dsseEnvelope"]["payload"]))


def fingerprint(public_pem) -> str:
    key = serialization.load_pem_public_key(public_pem.read_bytes())
    return hashlib.sha256(key.public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"hidden": 8}')
    save_tensors(d / "w.safetensors", {"w": torch.arange(2048, dtype=torch.float32), ODD: torch.ones(4)})
    return d


@pytest.fixture
def signed(capsys, model, keys):
    code, doc, _ = run(capsys, "sign", model, "--key", keys[0], "-q")
    assert code == 0
    return doc


# ---------------------------------------------------------------------------- sign


def test_sign_says_what_it_signed(capsys, model, keys, signed):
    sig = model.with_name("model.sig")
    st = statement(sig)
    assert signed["command"] == "sign" and signed["context"] == {
        "path": str(model), "artifact_type": "model", "format": "sentry", "signature": str(sig),
        "root": st["subject"][0]["digest"]["sha256"], "signer": fingerprint(keys[1]), "method": "key"}
    assert st["subject"][0]["digest"]["sha256"] == sentry.hash_artifact(model).root().hex()
    assert signed["report"] == {"items": len(st["predicate"]["items"]), "sidecar": None, "part_samples": None,
                                "training_data": []}
    assert signed["report"]["items"] == 4  # two files, two tensors


def test_sign_with_a_certificate_names_its_subject(capsys, model, tmp_path):
    pki = make_pki(tmp_path)
    code, doc, _ = run(capsys, "sign", model, "--key", pki["key"], "--certificate", pki["leaf"], "-q")
    leaf = x509.load_pem_x509_certificate(pki["leaf"].read_bytes())
    assert code == 0 and doc["context"]["method"] == "certificate"
    assert doc["context"]["signer"] == leaf.subject.rfc4514_string() == "CN=test signer"


def test_sign_dataset_and_oms(capsys, model, keys, tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for i in range(3):
        (data / "a" / f"{i}.bin").write_bytes(bytes([i]) * 100)
    code, doc, _ = run(capsys, "sign", data, "--key", keys[0], "--dataset", "-q")
    assert code == 0 and doc["context"]["artifact_type"] == "dataset" and doc["report"]["items"] == 3
    sidecar = tmp_path / "data.samples.jsonl"
    assert doc["report"]["sidecar"] == str(sidecar) and sidecar.is_file()
    assert doc["context"]["root"] == statement(tmp_path / "data.sig")["subject"][0]["digest"]["sha256"]
    code, doc, _ = run(capsys, "sign", model, "--key", keys[0], "--format", "oms", "--signature", tmp_path / "o.sig")
    assert code == 0 and doc["context"]["format"] == "oms" and doc["report"]["items"] == 2  # files only


def test_sign_errors(capsys, model, keys, tmp_path):
    code, doc, err = run(capsys, "sign", model)
    assert code == 2 and doc["error"]["kind"] == "SentryError" and "choose how to sign" in err
    assert doc["report"] is None and doc["context"]["path"] == str(model) and doc["context"]["root"] is None
    assert not model.with_name("model.sig").exists()
    code, doc, err = run(capsys, "sign", model, "--key", keys[0], "--part-samples", "many")
    assert code == 2 and doc["command"] == "sign" and "invalid int value: 'many'" in doc["error"]["message"]
    assert doc["error"]["kind"] == "SentryError" and "usage: sentry sign" in err
    # A training-data link whose signature is not the dataset owner's: a failed verification.
    data = tmp_path / "data"
    data.mkdir()
    (data / "s.bin").write_bytes(b"sample")
    sentry.sign_dataset(data, key=keys[0])
    other = make_keys(tmp_path, "other")[1]
    code, doc, _ = run(capsys, "sign", model, "--key", keys[0], "--training-data", tmp_path / "data.sig",
                       "--dataset-public-key", other)
    assert code == 1 and doc["error"]["kind"] == "BadSignature" and not model.with_name("model.sig").exists()


# ---------------------------------------------------------------------------- verify


def test_verify_success_has_the_signed_context(capsys, model, keys, signed):
    code, doc, _ = run(capsys, "verify", model, "--public-key", keys[1], "-q")
    assert code == 0 and doc["command"] == "verify" and doc["context"] == signed["context"]
    assert doc["report"]["checked"] == 4 and doc["report"]["root"] == signed["context"]["root"]


def test_verify_mismatch_names_items_by_kind_name_and_file(capsys, model, keys, signed):
    offset, size = tensor_offset(model / "w.safetensors", ODD)
    flip_bit(model / "w.safetensors", offset)
    (model / "config.json").unlink()
    (model / "new.txt").write_text("new")
    code, doc, err = run(capsys, "verify", model, "--public-key", keys[1], "-q")
    assert code == 1 and doc["error"]["kind"] == "ContentMismatch" and err.startswith("sentry: verification failed")
    report = doc["report"]
    assert report["ok"] is False and report["checked"] == 5
    assert [(m["kind"], m["name"], m["file"]) for m in report["missing"]] == [("file", "config.json", None)]
    assert [(e["kind"], e["name"], e["file"]) for e in report["extra"]] == [("file", "new.txt", None)]
    changed = {(c["kind"], c["name"], c["file"]): c for c in report["changed"]}
    assert set(changed) == {("file", "w.safetensors", None), ("tensor", ODD, "w.safetensors")}
    assert changed["tensor", ODD, "w.safetensors"]["label"] == f"tensor {ODD} (in w.safetensors)"
    assert changed["tensor", ODD, "w.safetensors"]["first_difference"] == {"offset": 0, "length": size}
    assert doc["context"] == signed["context"]  # the signature verified: its root and signer are known


def test_verify_bad_signature_and_input_errors(capsys, model, keys, signed, tmp_path):
    other = make_keys(tmp_path, "other")[1]
    code, doc, _ = run(capsys, "verify", model, "--public-key", other)
    assert code == 1 and doc["error"]["kind"] == "BadSignature" and doc["report"] is None
    assert doc["context"]["root"] is None and doc["context"]["signer"] is None  # nothing was verified
    assert doc["context"]["signature"] == signed["context"]["signature"]
    model.with_name("model.sig").unlink()
    code, doc, _ = run(capsys, "verify", model, "--public-key", keys[1])
    assert code == 2 and doc["error"]["kind"] == "SentryError" and "does not exist" in doc["error"]["message"]
    assert doc["report"] is None
    code, doc, _ = run(capsys, "verify", model, "--public-key", keys[1], "--device", "tpu")
    assert code == 2 and doc["command"] == "verify" and "invalid choice: 'tpu'" in doc["error"]["message"]
    code, doc, _ = run(capsys, "verify", model, "--dataset", "--allow-uncovered", "--public-key", keys[1])
    assert code == 2 and "--allow-uncovered is for models" in doc["error"]["message"]


def test_verify_with_a_bundle_of_the_wrong_format(capsys, model, keys, tmp_path):
    (tmp_path / "x.sig").write_text("{}")
    code, doc, _ = run(capsys, "verify", model, "--public-key", keys[1], "--signature", tmp_path / "x.sig")
    assert code == 1 and doc["error"]["kind"] == "InvalidBundle"


# ---------------------------------------------------------------------------- hash, audit, doctor


def test_hash(capsys, model, tmp_path):
    code, doc, _ = run(capsys, "hash", model, "-q")
    root = sentry.hash_artifact(model).root().hex()
    assert code == 0 and doc["report"]["root"] == doc["context"]["root"] == root
    assert doc["context"]["format"] == "sentry" and doc["context"]["signer"] is None
    assert {(it["kind"], it["name"], it.get("file")) for it in doc["report"]["items"]} == {
        ("file", "config.json", None), ("file", "w.safetensors", None), ("tensor", "w", "w.safetensors"),
        ("tensor", ODD, "w.safetensors")}
    code, doc, _ = run(capsys, "hash", tmp_path / "absent")
    assert code == 2 and doc["error"]["kind"] == "SentryError" and doc["report"] is None
    code, doc, _ = run(capsys, "hash", model, "--leaf-size", "1000")
    assert code == 2 and doc["error"]["kind"] in ("SentryError", "InvalidInput") and "leaf" in doc["error"]["message"]


def test_audit(capsys, model, keys, signed, tmp_path):
    code, doc, _ = run(capsys, "audit", tmp_path, "--public-key", keys[1], "--device", "cpu", "-q")
    assert code == 0 and doc["context"]["path"] == str(tmp_path)
    assert doc["report"]["verified"] == 1 and doc["report"]["failed"] == 0
    assert [b["ok"] for b in doc["report"]["bundles"]] == [True]
    (model / "config.json").write_text("{}")
    code, doc, _ = run(capsys, "audit", tmp_path, "--public-key", keys[1], "--device", "cpu", "-q")
    assert code == 1 and doc["error"] == {"kind": "VerificationError", "message": "1 of 1 bundles failed verification"}
    assert [b["ok"] for b in doc["report"]["bundles"]] == [False]
    (tmp_path / "empty").mkdir()
    code, doc, _ = run(capsys, "audit", tmp_path / "empty", "--public-key", keys[1])
    assert code == 2 and doc["error"]["kind"] == "SentryError" and "no signature bundles" in doc["error"]["message"]


def test_doctor(capsys):
    code, doc, _ = run(capsys, "doctor")
    assert code == 0 and doc["report"]["version"] == sentry.__version__ and doc["command"] == "doctor"
    code, doc, _ = run(capsys, "doctor", "--gpu")
    assert code == 2 and doc["command"] == "doctor" and "unrecognized arguments: --gpu" in doc["error"]["message"]


# ---------------------------------------------------------------------------- image


needs_tools = pytest.mark.skipif(not (shutil.which("mkfs.erofs") and shutil.which("veritysetup")),
                                 reason="needs mkfs.erofs and veritysetup")


@needs_tools
def test_image_build_and_verify(capsys, model, keys, tmp_path):
    img = tmp_path / "m.img"
    code, doc, _ = run(capsys, "image", "build", model, "-o", img, "--key", keys[0], "-q")
    manifest_root = sentry.hash_artifact(model).root().hex()
    assert code == 0 and doc["command"] == "image build" and doc["context"]["artifact_type"] == "image"
    assert doc["context"]["root"] == doc["report"]["manifest_root"] == manifest_root
    assert doc["context"]["signature"] == f"{img}.sig" and doc["context"]["signer"] == fingerprint(keys[1])
    code, doc, _ = run(capsys, "image", "verify", img, "--public-key", keys[1])
    assert code == 0 and doc["command"] == "image verify" and doc["context"]["root"] == manifest_root
    code, doc, _ = run(capsys, "image", "verify", img, "--public-key", keys[1], "--root-hash", "ab" * 32)
    assert code == 1 and doc["error"]["kind"] == "ContentMismatch" and doc["report"] is None


def test_image_input_errors(capsys, model, tmp_path):
    code, doc, _ = run(capsys, "image", "build", tmp_path / "absent", "-o", tmp_path / "x.img")
    assert code == 2 and doc["command"] == "image build" and "is not a directory" in doc["error"]["message"]
    assert doc["context"]["path"] == str(tmp_path / "absent") and not (tmp_path / "x.img").exists()
    code, doc, _ = run(capsys, "image", "build", model)
    assert code == 2 and doc["command"] == "image build" and "-o/--output" in doc["error"]["message"]
    code, doc, _ = run(capsys, "image", "verify", tmp_path / "x.img", "--root-hash", "12")
    assert code == 2 and doc["command"] == "image verify"
    assert doc["error"]["message"] == "--root-hash must be 64 hex digits"
    code, doc, _ = run(capsys, "image", "verify")
    assert code == 2 and doc["command"] == "image verify" and "IMAGE" in doc["error"]["message"]


# ---------------------------------------------------------------------------- logging


def test_verbosity_and_log_level(capsys, model, keys, signed):
    from sentry.hashing import cpu

    assert main(["hash", str(model), "-q"]) == 0
    assert capsys.readouterr().err == ""  # default WARNING: quiet
    assert main(["verify", str(model), "--public-key", str(keys[1]), "-q", "-v"]) == 0
    assert capsys.readouterr().err == f"sentry: INFO: sentry.cli: trusting the public key {keys[1]}\n"
    assert main(["hash", str(model), "-q", "-vv"]) == 0
    err = capsys.readouterr().err
    assert "sentry: DEBUG: sentry.hashing: hashing 4 file ranges on the cpu backend" in err
    assert ("C accelerator" if cpu.ACCELERATED else "hashlib (no C accelerator)") in err
    assert "2 files, 4 items" in err
    assert main(["--log-level", "debug", "hash", str(model), "-q"]) == 0  # before the command too
    assert "DEBUG" in capsys.readouterr().err
    assert main(["hash", str(model), "-q", "-vv", "--log-level", "error"]) == 0  # the level wins over -v
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as exc:
        main(["hash", str(model), "--log-level", "loud"])
    assert exc.value.code == 2 and "invalid choice: 'LOUD'" in capsys.readouterr().err
