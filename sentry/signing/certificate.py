"""Signing with a private key and its X.509 certificate; verifying the chain to trusted CA roots
(paired, like model_signing's ``sign_certificate``).

The bundle carries ``verificationMaterial.x509CertificateChain``: the signing certificate first,
then the intermediates the signer chose to include, as model_signing writes it. A verifier
trusts nothing in it until the chain leads to one of the CA certificates it was given.

Time: a certificate bundle holds no trusted timestamp, so the only time a verifier can vouch for
is now: every certificate of the chain must be valid at verification time (stricter than
model_signing, which checks the chain at the signing certificate's notBefore). Use: the signing
certificate must allow code signing (extended key usage codeSigning, and digitalSignature if it
has a key usage at all). A signing certificate marked as a CA is accepted, as OpenSSL (and so
model_signing) accepts it.
"""
from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from sentry._json import expect
from sentry.errors import BadSignature, SentryError, VerificationError, reason
from sentry.signing import keys
from sentry.signing.base import Signer, Verifier
from sentry.signing.bundle import Bundle, decode_b64, require_method
from sentry.signing.key import KeySigner, verify_dsse_signature

__all__ = ["MAX_CHAIN", "CertificateSigner", "CertificateVerifier", "load_certificates"]

MAX_CHAIN = 10  # certificates in a bundle's chain; real chains hold two or three


def load_certificates(path: str | os.PathLike) -> list[x509.Certificate]:
    """Every certificate of a PEM file (one or more); SentryError if it holds none."""
    data = keys.read_pem_file(path, "certificate")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise SentryError(f"{path} holds no PEM certificate") from None
    return certificates


class CertificateSigner(Signer):
    """Signs with an ECDSA P-256 key; the bundle carries its certificate and chain."""

    def __init__(self, private_key, certificate: x509.Certificate,
                 chain: Sequence[x509.Certificate] = ()):
        self._signer = KeySigner(private_key)
        if certificate.public_key() != self._signer.public_key:
            raise SentryError("the signing certificate is not for this private key")
        der = [c.public_bytes(serialization.Encoding.DER) for c in (certificate, *chain)]
        self._material = {
            "x509CertificateChain": {
                "certificates": [{"rawBytes": base64.b64encode(d).decode("ascii")} for d in der]
            },
            "tlogEntries": [],
        }

    def sign(self, payload: bytes) -> Bundle:
        return self._signer.sign(payload, self._material)


class CertificateVerifier(Verifier):
    """Verifies certificate bundles whose chain leads to one of ``roots`` (trust anchors)."""

    def __init__(self, roots: list[x509.Certificate]):
        if not roots:
            raise SentryError("a certificate verifier needs at least one trusted CA certificate")
        self._store = verification.Store(list(roots))

    def verify(self, bundle: Bundle) -> bytes:
        require_method(bundle, "certificate")
        now = datetime.datetime.now(datetime.timezone.utc)
        chain = _bundle_chain(bundle)
        leaf = chain[0]
        for cert in chain:
            _check_validity(cert, now, "signing" if cert is leaf else "intermediate")
        builder = (
            verification.PolicyBuilder().store(self._store).time(now).extension_policies(
                ee_policy=verification.ExtensionPolicy.permit_all(),  # usage is checked below
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            )
        )
        try:
            builder.build_client_verifier().verify(leaf, chain[1:])
        except verification.VerificationError as exc:
            raise BadSignature(
                "the signing certificate does not chain to a trusted CA certificate "
                f"({reason(exc).removeprefix('validation failed: ')})"
            ) from None
        _check_code_signing(leaf)
        try:
            public_key = keys.check_verifying_key(leaf.public_key())
        except SentryError as exc:
            raise BadSignature(f"the signing certificate's key cannot verify: {exc}") from None
        return verify_dsse_signature(public_key, bundle)


def _bundle_chain(bundle: Bundle) -> list[x509.Certificate]:
    def bad(reason: str) -> VerificationError:
        return BadSignature(f"the bundle's certificate chain is invalid: {reason}")

    material = bundle.verification_material
    if "x509CertificateChain" in material:
        entries = expect(expect(material["x509CertificateChain"], dict, "x509CertificateChain", bad)
                         .get("certificates"), list, "its certificates", bad)
    else:  # a single certificate, as in v0.3 Sigstore bundles
        entries = [material["certificate"]]
    if not 0 < len(entries) <= MAX_CHAIN:
        raise bad(f"expected 1 to {MAX_CHAIN} certificates, found {len(entries)}")
    chain = []
    for entry in entries:
        der = decode_b64(expect(entry, dict, "a certificate", bad).get("rawBytes"),
                         "a certificate's rawBytes", bad)
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError:
            raise bad("a certificate is not DER X.509") from None
    return chain


def _check_validity(cert: x509.Certificate, now: datetime.datetime, role: str) -> None:
    subject = cert.subject.rfc4514_string() or "(no subject)"
    if now < cert.not_valid_before_utc:
        raise BadSignature(
            f"the {role} certificate {subject} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if now > cert.not_valid_after_utc:
        raise BadSignature(
            f"the {role} certificate {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )


def _check_code_signing(cert: x509.Certificate) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    except ValueError:  # a malformed extension in a chain the CA vouched for; still refuse
        raise BadSignature("the signing certificate has malformed extensions") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise BadSignature("the signing certificate is not for code signing (no codeSigning extended key usage)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.digital_signature:
        raise BadSignature("the signing certificate's key usage does not allow digital signatures")
