"""One Claim protocol: model manifests, dataset claims and model_signing manifests are signed by
one path (Signer.sign_claim) and read by one path (read_claim: predicate type -> class -> digest)."""
from __future__ import annotations

import hashlib
import json

import pytest

import sentry
from sentry.errors import InvalidBundle, SentryError, UnsupportedFormat
from sentry.manifest.claim import Claim, read_claim
from sentry.manifest.dataset import DatasetClaim
from sentry.manifest.manifest import Manifest
from sentry.manifest.oms import OmsManifest
from sentry.signing import KeySigner, KeyVerifier, load_private_key, load_public_key, make_statement, parse_statement


def _signed(tmp_path, keys):
    model, data = tmp_path / "model", tmp_path / "data"
    model.mkdir(), data.mkdir()
    (model / "w.bin").write_bytes(b"weights" * 1000)
    (data / "a.txt").write_bytes(b"sample a")
    (data / "b.txt").write_bytes(b"sample b")
    return {
        "model": sentry.sign_model(model, keys[0], tmp_path / "model.sig"),
        "dataset": sentry.sign_dataset(data, keys[0], tmp_path / "data.sig"),
        "oms": sentry.sign_model(model, keys[0], tmp_path / "oms.sig", format="oms"),
    }


def _statement(path, keys):
    return parse_statement(KeyVerifier(load_public_key(keys[1])).verify(sentry.signing.read_bundle(path)))


def test_every_claim_reads_back_and_signs_to_the_same_statement(tmp_path, keys):
    signer, signed = KeySigner(load_private_key(keys[0])), _signed(tmp_path, keys)
    for kind, cls in (("model", Manifest), ("dataset", DatasetClaim), ("oms", OmsManifest)):
        path = signed[kind]
        statement = _statement(path, keys)
        claim = read_claim(statement, path)
        assert type(claim) is cls and isinstance(claim, Claim)
        assert claim.subject_digest().hex() == statement.digest_hex
        assert claim.item_count() == {"model": 1, "dataset": 2, "oms": 1}[kind]
        # Signing the claim again is one path and gives the very statement that was signed.
        assert signer.sign_claim(statement.subject_name, claim).payload == sentry.signing.read_bundle(path).payload


def test_the_oms_digest_is_model_signings_rule(tmp_path, keys):
    """The OMS subject digest: SHA-256 over the resources' digests (hashlib, not Sentry's code)."""
    path = _signed(tmp_path, keys)["oms"]
    claim = read_claim(_statement(path, keys), path)
    weights = hashlib.sha256((tmp_path / "model" / "w.bin").read_bytes()).digest()
    assert claim.subject_digest() == hashlib.sha256(weights).digest()


def test_a_predicate_that_is_not_what_the_subject_names_is_refused(tmp_path, keys):
    signed = _signed(tmp_path, keys)
    for kind, phrase in (("model", "signed manifest does not match"), ("dataset", "sidecar root does not match"),
                         ("oms", "model_signing resources do not match")):
        statement = _statement(signed[kind], keys)
        forged = parse_statement(make_statement("x", "00" * 32, statement.predicate,
                                                predicate_type=statement.predicate_type))
        with pytest.raises(InvalidBundle, match=phrase):
            read_claim(forged, signed[kind])


def test_the_predicate_type_and_the_kind_choose_the_class(tmp_path, keys):
    signed = _signed(tmp_path, keys)
    with pytest.raises(SentryError, match="signs a dataset, not a model"):
        read_claim(_statement(signed["dataset"], keys), signed["dataset"], "model")
    with pytest.raises(SentryError, match="signs a model, not a dataset"):
        read_claim(_statement(signed["model"], keys), signed["model"], "dataset")
    with pytest.raises(SentryError, match="signs a model_signing model, not a dataset"):
        read_claim(_statement(signed["oms"], keys), signed["oms"], "dataset")
    other = parse_statement(json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "urn:other",
                                        "subject": [{"name": "m", "digest": {"sha256": "00" * 32}}],
                                        "predicate": {}}).encode())
    with pytest.raises(UnsupportedFormat, match="not a Sentry signature"):
        read_claim(other, signed["model"])
