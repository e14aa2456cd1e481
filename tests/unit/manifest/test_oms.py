"""OMS / model_signing interop, both ways: its bundles verify with Sentry, Sentry's OMS bundles
verify with model_signing's own CLI, and the real model_signing 1.0.1 bundles in ../shared verify
offline (key, certificate chain, Sigstore public-good)."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import make_keys, make_pki, shared_interop

import sentry
from sentry.errors import SentryError, VerificationError
from sentry.manifest import oms
from sentry.signing import (
    CertificateVerifier,
    KeySigner,
    load_certificates,
    load_private_key,
    make_statement,
    write_bundle,
)

model_signing = pytest.importorskip("model_signing")
INTEROP = shared_interop()
needs_interop = pytest.mark.skipif(INTEROP is None, reason="shared interop data absent")
IBM = ("stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2")


@pytest.fixture
def model(tmp_path) -> Path:
    root = tmp_path / "model"
    (root / "sub" / ".git").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "config.json").write_text('{"layers": 2}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 40)  # 10240 bytes: several shards
    (root / "sub" / "empty").write_bytes(b"")
    (root / "sub" / ".git" / "kept").write_text("model_signing ignores only the top-level .git")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (root / "notes.log").write_text("not part of the model")
    return root


def _model_signing_sign(model: Path, sig: Path, *, key=None, pki=None, shard_size=None, ignore=()):
    from model_signing import hashing, signing

    config = hashing.Config()
    if shard_size:
        config.use_shard_serialization(shard_size=shard_size)
    config.set_ignored_paths(paths=[model / p for p in ignore] + [sig])
    cfg = signing.Config().set_hashing_config(config)
    if key is not None:
        cfg.use_elliptic_key_signer(private_key=key)
    else:
        cfg.use_certificate_signer(private_key=pki["key"], signing_certificate=pki["leaf"],
                                   certificate_chain=[pki["intermediate"]])
    cfg.sign(model, sig)


def _model_signing_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_signing", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ model_signing -> Sentry


@pytest.mark.parametrize("shard_size", [None, 1024])
def test_model_signing_key_bundles_verify_files_and_shards(tmp_path, model, shard_size):
    key, pub = make_keys(tmp_path)
    sig = model / "model.sig"  # inside the model, as model_signing users often put it
    _model_signing_sign(model, sig, key=key, shard_size=shard_size, ignore=["notes.log"])
    report = sentry.verify_model(model, public_key=pub, signature=sig)
    # config.json, weights.bin (1 file or 10 shards), sub/.git/kept; sub/empty has no shards
    assert report.ok and report.checked == (4 if shard_size is None else 12)

    (model / "weights.bin").write_bytes(bytes(range(256)) * 39 + bytes(255) + b"\x01")
    (model / "new.txt").write_text("x")
    with pytest.raises(VerificationError) as err:
        sentry.verify_model(model, public_key=pub, signature=sig)
    rep = err.value.report
    assert rep.extra == (["file new.txt"] if shard_size is None else ["shard new.txt:0:1"])
    assert [c.label for c in rep.changed] == (["file weights.bin"] if shard_size is None else ["shard weights.bin:9216:10240"])


def test_model_signing_certificate_bundle_and_single_file_verify(tmp_path, model):
    pki = make_pki(tmp_path)
    sig = tmp_path / "model.sig"
    _model_signing_sign(model, sig, pki=pki, ignore=["notes.log"])
    verifier = CertificateVerifier(load_certificates(pki["root"]))
    assert sentry.verify_model(model, public_key=verifier, signature=sig).ok
    key, pub = make_keys(tmp_path)
    _model_signing_sign(model / "weights.bin", tmp_path / "w.sig", key=key)
    assert sentry.verify_model(model / "weights.bin", public_key=pub, signature=tmp_path / "w.sig").checked == 1
    with pytest.raises(VerificationError, match="changed of 1 items; changed: file ."):
        sentry.verify_model(model / "config.json", public_key=pub, signature=tmp_path / "w.sig")


# ------------------------------------------------------------------ Sentry -> model_signing


def test_sentry_oms_bundles_verify_with_model_signing_cli(tmp_path, model):
    key, pub = make_keys(tmp_path)
    key_sig = sentry.sign_model(model, key=key, signature=model / "model.sig", format="oms", ignore=["*.log"])
    statement = json.loads(base64.b64decode(json.loads(key_sig.read_text())["dsseEnvelope"]["payload"]))
    serialization = statement["predicate"]["serialization"]
    assert statement["predicateType"] == oms.PREDICATE_TYPE
    assert serialization["ignore_paths"] == [".git", ".gitattributes", ".github", ".gitignore", "model.sig", "notes.log"]
    r = _model_signing_cli("verify", "key", "--public_key", pub, "--signature", key_sig, model)
    assert r.returncode == 0, r.stderr

    pki = make_pki(tmp_path)
    from sentry.signing import CertificateSigner

    signer = CertificateSigner(load_private_key(pki["key"]), *load_certificates(pki["leaf"]),
                               load_certificates(pki["intermediate"]))
    cert_sig = sentry.sign_model(model, key=signer, signature=tmp_path / "cert.sig", format="oms", ignore=["*.log"])
    (model / "weights.bin").write_bytes(b"changed")
    r = _model_signing_cli("verify", "certificate", "--certificate_chain", pki["root"], "--signature", cert_sig, model)
    assert r.returncode == 1 and "weights.bin" in r.stderr  # the CLI checks the chain, then finds the change
    (model / "weights.bin").write_bytes(bytes(range(256)) * 40)
    r = _model_signing_cli("verify", "certificate", "--certificate_chain", pki["root"], "--signature", cert_sig, model)
    assert r.returncode == 0, r.stderr


def test_oms_signing_of_a_file_and_refusals(tmp_path, model):
    key, pub = make_keys(tmp_path)
    sig = sentry.sign_model(model / "weights.bin", key=key, signature=tmp_path / "w.sig", format="oms")
    assert sentry.verify_model(model / "weights.bin", public_key=pub, signature=sig).checked == 1
    with pytest.raises(SentryError, match="a leaf size does not apply"):
        sentry.sign_model(model, key=key, format="oms", leaf_size=1024)
    with pytest.raises(SentryError, match="not a model in memory or a dataset"):
        sentry.api._sign(model, "dataset", key, None, None, "oms")
    with pytest.raises(SentryError, match="unknown signature format"):
        sentry.sign_model(model, key=key, format="cbor")


# ------------------------------------------------------------------ hostile OMS predicates


def _oms_bundle(tmp_path, key, predicate, digest=None):
    resources = predicate.get("resources") or []
    if digest is None:
        digest = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources
                                         if isinstance(r, dict) and isinstance(r.get("digest"), str)
                                         and len(r["digest"]) == 64)).hexdigest()
    path = tmp_path / "hostile.sig"
    statement = make_statement("m", digest, predicate, predicate_type=oms.PREDICATE_TYPE)
    write_bundle(path, KeySigner(load_private_key(key)).sign(statement))
    return path


GOOD = {"name": "config.json", "algorithm": "sha256", "digest": hashlib.sha256(b'{"layers": 2}').hexdigest()}


@pytest.mark.parametrize("serialization, resources, words", [
    ({"method": "tensors", "hash_type": "sha256"}, [GOOD], "unknown serialization method"),
    ({"method": "files", "hash_type": "blake3"}, [GOOD], "uses the hash 'blake3'; Sentry verifies sha256 only"),
    ({"method": "shards", "hash_type": "sha256", "shard_size": 0.5}, [GOOD], "shard_size is not a positive integer"),
    ({"method": "files", "hash_type": "sha256", "ignore_paths": "x"}, [GOOD], "ignore_paths is not a list"),
    ({"method": "files", "hash_type": "sha256"}, [], "resources is not a non-empty list"),
    ({"method": "files", "hash_type": "sha256"}, [GOOD, GOOD], "listed twice"),
    ({"method": "files", "hash_type": "sha256"}, [{**GOOD, "digest": "AB" * 32}], "not 64 lowercase hex"),
    ({"method": "files", "hash_type": "sha256"}, [{**GOOD, "algorithm": "md5"}], "is not hashed with sha256"),
    ("files", [GOOD], "no serialization object"),
])
def test_hostile_oms_predicates_fail_in_one_sentence(tmp_path, model, serialization, resources, words):
    key, pub = make_keys(tmp_path)
    sig = _oms_bundle(tmp_path, key, {"serialization": serialization, "resources": resources})
    with pytest.raises(VerificationError, match=words):
        sentry.verify_model(model, public_key=pub, signature=sig)


def test_oms_subject_must_match_the_resources(tmp_path, model):
    key, pub = make_keys(tmp_path)
    predicate = {"serialization": {"method": "files", "hash_type": "sha256"}, "resources": [GOOD]}
    sig = _oms_bundle(tmp_path, key, predicate, digest="00" * 32)
    with pytest.raises(VerificationError, match="do not match the signed digest"):
        sentry.verify_model(model, public_key=pub, signature=sig)


def test_signed_ignore_paths_cannot_reach_outside_and_shard_size_may_be_a_float(tmp_path, model):
    key, pub = make_keys(tmp_path)
    digest = hashlib.sha256(b'{"layers": 2}').hexdigest()
    predicate = {"serialization": {"method": "shards", "hash_type": "sha256", "shard_size": 1e9,
                                   "allow_symlinks": False, "ignore_paths": ["/etc", "../x", "weights.bin", "sub",
                                                                             "notes.log"]},
                 "resources": [{"name": "config.json:0:13", "algorithm": "sha256-sharded-1000000000", "digest": digest}]}
    assert sentry.verify_model(model, public_key=pub, signature=_oms_bundle(tmp_path, key, predicate)).checked == 1


# ------------------------------------------------------------------ real model_signing 1.0.1 bundles


def _interop_copy(tmp_path, name) -> Path:
    dst = tmp_path / name
    shutil.copytree(INTEROP / name, dst)
    return dst


@needs_interop
def test_real_bundles_verify_offline():
    keys = INTEROP / "keys"
    from sentry.signing.sigstore import SigstoreVerifier

    for name, verifier in (
        ("v1.0.1-elliptic-key", keys / "signing-key-pub.pem"),  # P-384
        ("v1.0.1-certificate", CertificateVerifier(load_certificates(keys / "ca-cert.pem"))),
        ("v1.0.1-sigstore", SigstoreVerifier(*IBM)),
    ):
        report = sentry.verify_model(INTEROP / name, public_key=verifier, signature=INTEROP / name / "model.sig",
                                     ignore=["ignore-me"])
        assert report.ok and report.checked == 2, name


@needs_interop
def test_real_bundles_fail_on_a_changed_file_or_a_wrong_identity(tmp_path):
    from sentry.signing.sigstore import SigstoreVerifier

    model = _interop_copy(tmp_path, "v1.0.1-sigstore")
    with pytest.raises(VerificationError, match="SANs do not match"):
        sentry.verify_model(model, public_key=SigstoreVerifier("mallory@example.com", IBM[1]), ignore=["ignore-me"],
                            signature=model / "model.sig")
    with pytest.raises(VerificationError, match="OIDCIssuer does not match"):
        sentry.verify_model(model, public_key=SigstoreVerifier(IBM[0], "https://accounts.google.com"),
                            ignore=["ignore-me"], signature=model / "model.sig")
    (model / "signme-2").write_bytes(b"tampered")
    with pytest.raises(VerificationError, match="changed: file signme-2"):
        sentry.verify_model(model, public_key=SigstoreVerifier(*IBM), ignore=["ignore-me"],
                            signature=model / "model.sig")
    with pytest.raises(VerificationError, match="extra: file ignore-me"):
        sentry.verify_model(INTEROP / "v1.0.1-elliptic-key", public_key=INTEROP / "keys" / "signing-key-pub.pem",
                            signature=INTEROP / "v1.0.1-elliptic-key" / "model.sig")


@needs_interop
def test_tampered_transparency_log_entry_fails(tmp_path):
    from sentry.signing.sigstore import SigstoreVerifier

    raw = json.loads((INTEROP / "v1.0.1-sigstore" / "model.sig").read_text())
    entry = raw["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)
    sig = tmp_path / "tampered.sig"
    sig.write_text(json.dumps(raw))
    with pytest.raises(VerificationError, match="the Sigstore signature does not verify"):
        sentry.verify_model(INTEROP / "v1.0.1-sigstore", public_key=SigstoreVerifier(*IBM), signature=sig,
                            ignore=["ignore-me"])
