"""X.509 certificate signing and verification: chains to given CA roots, validity now, code signing."""
from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from support import make_pki, shared_interop

from sentry.errors import SentryError, VerificationError
from sentry.signing import KeyVerifier, load_private_key, make_statement, read_bundle, write_bundle
from sentry.signing.certificate import CertificateSigner, CertificateVerifier, load_certificates

STATEMENT = make_statement("model", "ab" * 32, {"items": []})
INTEROP = shared_interop()


def _sign(tmp_path, pki, chain=("intermediate",)):
    signer = CertificateSigner(load_private_key(pki["key"]), load_certificates(pki["leaf"])[0],
                               [c for name in chain for c in load_certificates(pki[name])])
    path = tmp_path / "model.sig"
    write_bundle(path, signer.sign(STATEMENT))
    return read_bundle(path)


def _verifier(pki, *names):
    return CertificateVerifier([c for n in names or ("root",) for c in load_certificates(pki[n])])


def test_chain_to_root_verifies_and_material_is_model_signings(tmp_path):
    pki = make_pki(tmp_path)
    bundle = _sign(tmp_path, pki)
    assert _verifier(pki).verify(bundle) == STATEMENT
    chain = bundle.verification_material["x509CertificateChain"]["certificates"]
    assert len(chain) == 2 and bundle.verification_material["tlogEntries"] == []


def test_untrusted_ca_fails(tmp_path):
    pki = make_pki(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    with pytest.raises(VerificationError, match="does not chain to a trusted CA certificate"):
        _verifier(other).verify(_sign(tmp_path, pki))


def test_missing_intermediate_fails(tmp_path):
    pki = make_pki(tmp_path)
    with pytest.raises(VerificationError, match="does not chain"):
        _verifier(pki).verify(_sign(tmp_path, pki, chain=()))
    # ... unless the verifier trusts the intermediate itself
    assert _verifier(pki, "intermediate").verify(_sign(tmp_path, pki, chain=())) == STATEMENT


@pytest.mark.parametrize("days, words", [((-30, -1), "expired on"), ((1, 30), "is not valid until")])
def test_expired_or_not_yet_valid_certificate_fails(tmp_path, days, words):
    pki = make_pki(tmp_path, days=days)
    with pytest.raises(VerificationError, match=f"the signing certificate CN=test signer {words}"):
        _verifier(pki).verify(_sign(tmp_path, pki))


def test_certificate_must_allow_code_signing(tmp_path):
    pki = make_pki(tmp_path, code_signing=False)
    with pytest.raises(VerificationError, match="not for code signing"):
        _verifier(pki).verify(_sign(tmp_path, pki))


def test_changed_statement_fails(tmp_path):
    pki = make_pki(tmp_path)
    bundle = _sign(tmp_path, pki)
    raw = bundle.raw
    raw["dsseEnvelope"]["payload"] = base64.b64encode(STATEMENT.replace(b"ab", b"cd", 1)).decode()
    (tmp_path / "model.sig").write_text(json.dumps(raw))
    with pytest.raises(VerificationError, match="does not match the public key"):
        _verifier(pki).verify(read_bundle(tmp_path / "model.sig"))


def test_hostile_chains_are_one_sentence(tmp_path):
    pki = make_pki(tmp_path)
    raw = _sign(tmp_path, pki).raw
    for chain, words in (
        ("x", "x509CertificateChain must be an object"),
        ({"certificates": []}, "expected 1 to 10 certificates"),
        ({"certificates": [{"rawBytes": "AAAA"}]}, "not DER X.509"),
        ({"certificates": [{"rawBytes": "%%"}]}, "not valid base64"),
    ):
        raw["verificationMaterial"]["x509CertificateChain"] = chain
        (tmp_path / "bad.sig").write_text(json.dumps(raw))
        with pytest.raises(VerificationError, match=words):
            _verifier(pki).verify(read_bundle(tmp_path / "bad.sig"))


def test_key_and_certificate_must_match_and_files_must_hold_certificates(tmp_path):
    pki = make_pki(tmp_path)
    with pytest.raises(SentryError, match="not for this private key"):
        CertificateSigner(ec.generate_private_key(ec.SECP256R1()), load_certificates(pki["leaf"])[0])
    with pytest.raises(SentryError, match="holds no PEM certificate"):
        load_certificates(pki["key"])
    with pytest.raises(SentryError, match="does not exist"):
        load_certificates(tmp_path / "nope.pem")


def test_wrong_verifier_for_the_method_names_the_option(tmp_path):
    pki = make_pki(tmp_path)
    bundle = _sign(tmp_path, pki)
    with pytest.raises(VerificationError, match="signed with an X.509 certificate, not a key; verify it with a CertificateVerifier"):
        KeyVerifier(ec.generate_private_key(ec.SECP256R1()).public_key()).verify(bundle)


@pytest.mark.skipif(INTEROP is None, reason="shared interop data absent")
def test_model_signing_certificate_bundle_verifies_with_its_root_only(tmp_path):
    bundle = read_bundle(INTEROP / "v1.0.1-certificate" / "model.sig")
    verifier = CertificateVerifier(load_certificates(INTEROP / "keys" / "ca-cert.pem"))
    assert b"model_signing/signature/v1.0" in verifier.verify(bundle)
    with pytest.raises(VerificationError, match="does not chain"):
        _verifier(make_pki(tmp_path)).verify(bundle)


def test_signers_return_the_checked_bundle_they_write(tmp_path):
    """Signer.sign returns a Bundle (parsed as a verifier parses it); written and read back, it is the same."""
    pki = make_pki(tmp_path)
    signer = CertificateSigner(load_private_key(pki["key"]), load_certificates(pki["leaf"])[0],
                               load_certificates(pki["intermediate"]))
    bundle = signer.sign(STATEMENT)
    assert bundle.payload == STATEMENT and len(bundle.signatures) == 1
    write_bundle(tmp_path / "m.sig", bundle)
    assert read_bundle(tmp_path / "m.sig") == bundle
    assert _verifier(pki).verify(bundle) == STATEMENT
