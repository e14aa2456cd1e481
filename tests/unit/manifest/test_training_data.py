"""The model -> dataset link of a model signature (docs/spec.md §3.1): signed, read back, refused
when malformed, absent from older signatures."""
from __future__ import annotations

import json

import pytest
from support import make_keys, run_cli

import sentry
from sentry import SentryError, VerificationError
from sentry.manifest.lineage import TrainingData
from sentry.signing import KeySigner, load_private_key, make_statement, write_bundle


@pytest.fixture
def linked(tmp_path):
    owner, owner_pub = make_keys(tmp_path, "owner")
    key, pub = make_keys(tmp_path, "trainer")
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "1.bin").write_bytes(b"one")
    data_sig = sentry.sign_dataset(data, key=owner)
    model = tmp_path / "w.bin"
    model.write_bytes(b"weights")
    sig = sentry.sign_model(model, key=key, training_data=data_sig, dataset_public_key=owner_pub)
    return dict(tmp=tmp_path, owner_pub=owner_pub, key=key, pub=pub, data_sig=data_sig, model=model, sig=sig)


def test_link_is_signed_and_read_back(linked):
    report = sentry.verify_model(linked["model"], public_key=linked["pub"])
    link = sentry.dataset_link(linked["data_sig"], linked["owner_pub"])
    assert report.training_data == [link] and link.name == "data"
    assert report.to_json()["training_data"] == [{"name": "data", "digest": {"sha256": link.root},
                                                  "annotations": {"signature_sha256": link.signature_sha256}}]
    result = run_cli("verify", linked["model"], "--public-key", linked["pub"])
    assert result.returncode == 0 and f"trained on: data (dataset root {link.root})" in result.stdout


def test_signature_without_link_still_verifies(linked):
    sentry.sign_model(linked["model"], key=linked["key"])
    assert sentry.verify_model(linked["model"], public_key=linked["pub"]).training_data == []


def test_linking_needs_a_verified_dataset_signature(linked, tmp_path):
    with pytest.raises(SentryError, match="needs the dataset owner.s public key"):
        sentry.sign_model(linked["model"], key=linked["key"], training_data=linked["data_sig"])
    with pytest.raises(VerificationError, match="does not match the public key"):
        sentry.sign_model(linked["model"], key=linked["key"], training_data=linked["data_sig"],
                          dataset_public_key=linked["pub"])
    with pytest.raises(SentryError, match="signs a model, not a dataset"):
        sentry.sign_model(linked["model"], key=linked["key"], training_data=linked["sig"],
                          dataset_public_key=linked["pub"])
    with pytest.raises(SentryError, match="OMS format has no field"):
        sentry.sign_model(linked["model"], key=linked["key"], format="oms",
                          training_data=TrainingData("d", "0" * 64, "1" * 64))
    with pytest.raises(SentryError, match="cannot sign: the signed training data is invalid"):
        sentry.sign_model(linked["model"], key=linked["key"], training_data=TrainingData("d", "ABC", "1" * 64))


GOOD = {"name": "data", "digest": {"sha256": "0" * 64}, "annotations": {"signature_sha256": "1" * 64}}


@pytest.mark.parametrize("value, why", [
    (None, "not a list"),
    ([], "not a list"),
    ([GOOD] * 2, "one dataset root twice"),
    ([dict(GOOD, uri="https://x")], "exactly name, digest and annotations"),
    ([dict(GOOD, name="")], "not a printable string"),
    ([dict(GOOD, name="a\nb")], "not a printable string"),
    ([dict(GOOD, digest={"sha256": "0" * 63})], "not one sha256"),
    ([dict(GOOD, digest={"sha256": "0" * 64, "sha512": "0" * 128})], "not one sha256"),
    ([dict(GOOD, digest={"sha256": "A" * 64})], "not one sha256"),
    ([dict(GOOD, annotations={})], "not one signature_sha256"),
    ([dict(GOOD, annotations={"signature_sha256": 5})], "not one signature_sha256"),
    ([GOOD] * 17, "not a list of 1 to 16"),
    ("data", "not a list"),
])
def test_hostile_link_is_refused(linked, value, why):
    """A validly signed statement whose training_data is malformed fails verification."""
    statement = json.loads(_payload(linked["sig"]))
    statement["predicate"]["training_data"] = value
    payload = make_statement("w.bin", statement["subject"][0]["digest"]["sha256"], statement["predicate"])
    write_bundle(linked["sig"], KeySigner(load_private_key(linked["key"])).sign(payload))
    with pytest.raises(VerificationError, match=f"the signed (manifest|training data) is invalid: .*{why}"):
        sentry.verify_model(linked["model"], public_key=linked["pub"])


def test_dataset_signature_cannot_carry_a_link(linked, tmp_path):
    from sentry.manifest.manifest import Manifest

    predicate = {"hashing": {"algorithm": "rfc9162-sha256", "leaf_size": 4096, "max_chunks": 16},
                 "artifact": {"type": "dataset", "source": "directory"}, "items": [], "training_data": [GOOD]}
    with pytest.raises(VerificationError, match="only a model names the data it was trained on"):
        Manifest.from_predicate(predicate)


def _payload(sig) -> bytes:
    from sentry.signing import read_bundle

    return read_bundle(sig).payload


def test_cli_signs_the_link(linked):
    result = run_cli("sign", linked["model"], "--key", linked["key"], "--training-data", linked["data_sig"],
                     "--dataset-public-key", linked["owner_pub"])
    assert result.returncode == 0, result.stderr
    link = sentry.dataset_link(linked["data_sig"], linked["owner_pub"])
    assert sentry.verify_model(linked["model"], public_key=linked["pub"]).training_data == [link]
    result = run_cli("sign", linked["model"], "--key", linked["key"], "--training-data", linked["data_sig"])
    assert result.returncode == 2 and "--dataset-public-key" in result.stderr
