"""Signing with a private key, verifying with the matching public key (paired, like
model_signing's ``sign_ec_key``).

The signature is ECDSA over the DSSE pre-authentication encoding of the payload, DER encoded:
what ``openssl dgst -sha256 -verify`` checks. Sentry signs on P-256 with SHA-256 only; it
verifies P-384/SHA-384 and P-521/SHA-512 as well, the pairs model_signing uses, so that
model_signing key bundles verify. Nothing in a bundle's verification material is trusted:
the caller's public key decides.
"""
from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from sentry._json import describe
from sentry.crypto.cpu import ecdsa_algorithm
from sentry.errors import BadSignature, InvalidBundle, VerificationError
from sentry.signing import keys
from sentry.signing.base import Signer, Verifier
from sentry.signing.bundle import Bundle, make_bundle, parse_bundle, require_method
from sentry.signing.dsse import PAYLOAD_TYPE, pae

__all__ = ["KeySigner", "KeyVerifier", "dsse_signed_message", "verify_dsse_signature"]


def _ecdsa(public_key: ec.EllipticCurvePublicKey, *, deterministic: bool) -> ec.ECDSA:
    return ecdsa_algorithm(keys.signature_hash(public_key), deterministic=deterministic)


class KeySigner(Signer):
    """Signs with an ECDSA P-256 private key.

    Nonces are deterministic (RFC 6979) where the installed OpenSSL supports it, so the CPU
    signer and the GPU batch signer produce the same bytes; otherwise they are random.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        self._private_key = keys.check_signing_key(private_key)
        self._hint = keys.public_key_hint(private_key.public_key())

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._private_key.public_key()

    def sign(self, payload: bytes, material: dict | None = None) -> Bundle:
        """The bundle; ``material`` replaces the key hint (a certificate signer passes its chain)."""
        payload = bytes(payload)
        ecdsa = _ecdsa(self._private_key.public_key(), deterministic=True)
        signature = self._private_key.sign(pae(PAYLOAD_TYPE, payload), ecdsa)
        if material is None:
            material = {"publicKey": {"hint": self._hint}, "tlogEntries": []}
        return parse_bundle(make_bundle(payload, signature, material))


class KeyVerifier(Verifier):
    """Verifies key bundles (Sentry's, and model_signing's) against the caller's public key."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey):
        self._public_key = keys.check_verifying_key(public_key)
        self._hint = keys.public_key_hint(public_key)
        self._spki = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def verify(self, bundle: Bundle) -> bytes:
        message, signature = self.signed_message(bundle)
        try:
            self._public_key.verify(signature, message, _ecdsa(self._public_key, deterministic=False))
        except InvalidSignature:
            raise self.mismatch(bundle) from None
        return bundle.payload

    def signed_message(self, bundle: Bundle) -> tuple[bytes, bytes]:
        """The bytes the bundle's signature must cover and the signature, after every check but
        the cryptographic one, which `verify` (or a batch, see sentry.audit) then does."""
        require_method(bundle, "key")
        try:
            return dsse_signed_message(self._public_key, bundle)
        except VerificationError:
            if self._claims_other_key(bundle.verification_material):
                raise self.mismatch(bundle) from None
            raise

    def mismatch(self, bundle: Bundle) -> VerificationError:
        """The error for a bundle whose signature does not verify with our key."""
        if self._claims_other_key(bundle.verification_material):
            # Most likely cause first; the claim itself is untrusted and decided nothing.
            return BadSignature(
                "the signature does not match the public key: the bundle says it was "
                "made with a different key"
            )
        return BadSignature(_MISMATCH)

    def _claims_other_key(self, material: dict) -> bool:
        """Whether the bundle names a key other than ours. Only used to word the error."""
        info = material["publicKey"]
        if not isinstance(info, dict):
            raise InvalidBundle("the bundle's publicKey must be an object")
        hint = info.get("hint")
        if hint is not None:
            if not isinstance(hint, str):
                raise InvalidBundle("the bundle's public key hint must be a string")
            if hint and hint != self._hint:
                return True
        raw = info.get("rawBytes")
        if raw is not None:
            # model_signing 1.0 put the signer's PEM public key here. Untrusted: compared only.
            if not isinstance(raw, str):
                raise InvalidBundle("the bundle's publicKey.rawBytes must be a string")
            try:
                blob = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidBundle(
                    "the bundle's publicKey.rawBytes is not valid base64"
                ) from None
            return _spki_of(blob) != self._spki
        return False


_MISMATCH = (
    "the signature does not match the public key: the signed statement was changed, or it was "
    "signed with another key"
)


def dsse_signed_message(public_key: ec.EllipticCurvePublicKey, bundle: Bundle) -> tuple[bytes, bytes]:
    """The DSSE PAE bytes the bundle's one signature must cover, and that signature (strict DER,
    in range for ``public_key``'s curve): every check but the cryptographic one."""
    if bundle.payload_type != PAYLOAD_TYPE:
        raise BadSignature(
            f"the bundle's payload type is {describe(bundle.payload_type)}, "
            f"expected {PAYLOAD_TYPE!r}"
        )
    if len(bundle.signatures) != 1:
        raise BadSignature(
            f"expected exactly one signature in the bundle, found {len(bundle.signatures)}"
        )
    signature = bundle.signatures[0]
    _check_signature_encoding(public_key, signature)
    return pae(PAYLOAD_TYPE, bundle.payload), signature


def verify_dsse_signature(public_key: ec.EllipticCurvePublicKey, bundle: Bundle) -> bytes:
    """The bundle's payload if its one DSSE signature verifies with ``public_key``.

    Whoever calls this has already decided to trust the key (given by the user, or certified).
    """
    message, signature = dsse_signed_message(public_key, bundle)
    try:
        public_key.verify(signature, message, _ecdsa(public_key, deterministic=False))
    except InvalidSignature:
        raise BadSignature(_MISMATCH) from None
    return bundle.payload


def _check_signature_encoding(public_key: ec.EllipticCurvePublicKey, signature: bytes) -> None:
    """Strict DER, 0 < r, s < n: refuse malformed and malleable encodings before use."""
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        raise BadSignature("the signature is not a DER-encoded ECDSA signature") from None
    n = keys.curve_order(public_key)
    if not (0 < r < n and 0 < s < n):
        raise BadSignature("the signature's values are out of range for the curve")
    if encode_dss_signature(r, s) != signature:
        raise BadSignature("the signature is not in canonical DER form")


def _spki_of(blob: bytes) -> bytes | None:
    """DER SubjectPublicKeyInfo of a PEM or DER public key blob, or None if unreadable."""
    for loader in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            key = loader(blob)
        except Exception:
            continue
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return None
