"""Sigstore bundle JSON holding a DSSE envelope: build, write atomically, read strictly.

``read_bundle`` treats the file as hostile: every failure is a VerificationError with one
sentence (a missing or unreadable file is a SentryError: a usage problem, not a forgery).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentry._json import StrictJSONError, describe, expect, loads_strict, type_name
from sentry.errors import BadSignature, InvalidBundle, Remedy, SentryError, VerificationError
from sentry.signing import _files
from sentry.signing.dsse import PAYLOAD_TYPE

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "BUNDLE_MEDIA_TYPE",
    "MAX_BUNDLE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Bundle",
    "decode_b64",
    "make_bundle",
    "parse_bundle",
    "read_bundle",
    "read_bundle_and_digest",
    "require_method",
    "signing_method",
    "write_bundle",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# What Sentry reads: v0.3 (what model_signing and sigstore-python write), the older spelling
# of v0.3, and v0.2 (the first bundle version with DSSE envelopes). Sentry writes v0.3.
ACCEPTED_MEDIA_TYPES = (
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
)
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # what a verifier reads (read_bundle); a signer checks it too
# The largest statement a signer puts in a bundle: base64 makes it 4/3 larger, and 1 MiB is left
# for the verification material (certificates, a transparency-log entry) and the JSON around it.
MAX_PAYLOAD_BYTES = (MAX_BUNDLE_BYTES - (1 << 20)) // 4 * 3


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle. ``payload`` and ``signatures`` are decoded, nothing is verified yet."""

    media_type: str
    verification_material: dict[str, Any]
    payload: bytes
    payload_type: str
    signatures: list[bytes]
    raw: dict[str, Any] = field(repr=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_bundle(
    payload: bytes,
    signature_der: bytes,
    verification_material: dict,
    *,
    payload_type: str = PAYLOAD_TYPE,
) -> dict:
    """A v0.3 bundle dict with one DSSE signature over ``payload``."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": verification_material,
        "dsseEnvelope": {
            "payload": _b64(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": _b64(signature_der)}],
        },
    }


def write_bundle(path: str | os.PathLike, bundle: dict | Bundle) -> None:
    """Write the bundle as JSON, whole or not at all (temporary file, then os.replace)."""
    raw = bundle.raw if isinstance(bundle, Bundle) else bundle
    data = (json.dumps(raw, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    if len(data) > MAX_BUNDLE_BYTES:
        raise SentryError(f"the signature bundle would be {len(data)} bytes; a verifier reads at most "
                          f"{MAX_BUNDLE_BYTES}")
    _files.write_atomic(path, data, mode=0o666, overwrite=True)


# ---------------------------------------------------------------------------- reading


def _read_limited(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SentryError(f"signature bundle {path} does not exist") from None
    except IsADirectoryError:
        raise SentryError(f"{path} is a directory, not a signature bundle") from None
    except OSError as exc:
        raise SentryError(f"cannot read signature bundle {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise SentryError(f"{path} is a directory, not a signature bundle")
        if not stat.S_ISREG(st.st_mode):
            raise SentryError(f"{path} is not a regular file, so not a signature bundle")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        too_large = InvalidBundle(
            f"{path} is too large to be a signature bundle "
            f"(more than {MAX_BUNDLE_BYTES} bytes)"
        )
        if st.st_size > MAX_BUNDLE_BYTES:
            raise too_large
        try:
            data = f.read(MAX_BUNDLE_BYTES + 1)  # the file may have grown since fstat
        except OSError as exc:
            raise SentryError(f"cannot read signature bundle {path}: {exc.strerror}") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise too_large
    return data


def decode_b64(value: Any, what: str, bad) -> bytes:
    if not isinstance(value, str):
        raise bad(f"{what} must be a base64 string, found {type_name(value)}")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"{what} is not valid base64") from None
    # validate=True still lets through extra padding and stray low bits; one text per value. Only
    # the length and the last group of four can differ from the canonical text (validated groups
    # before it each spell their three bytes the one way there is), so only that group is encoded
    # again: re-encoding a whole payload costs a third of decoding it.
    last = decoded[-(len(decoded) % 3 or 3):]
    if len(value) != 4 * -(-len(decoded) // 3) or base64.b64encode(last).decode("ascii") != value[-4:]:
        raise bad(f"{what} is not valid base64 (not in canonical padded form)")
    return decoded


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read and structurally check a bundle file. Nothing cryptographic happens here."""
    path = Path(path)
    return _parse_bytes(path, _read_limited(path))


def read_bundle_and_digest(path: str | os.PathLike) -> tuple[Bundle, str]:
    """:func:`read_bundle`, and the hex SHA-256 of the very bytes parsed (what a model signature
    records of its training data's signature, docs/spec.md §3.1)."""
    path = Path(path)
    data = _read_limited(path)
    return _parse_bytes(path, data), hashlib.sha256(data).hexdigest()


def _parse_bytes(path: Path, data: bytes) -> Bundle:
    def bad(reason: str) -> VerificationError:
        return InvalidBundle(f"{path} is not a valid signature bundle: {reason}")

    if not data.strip():
        raise bad("the file is empty")
    try:
        raw = loads_strict(data)
    except StrictJSONError as exc:
        raise bad(str(exc)) from None
    return parse_bundle(raw, bad)


def parse_bundle(raw: Any, bad=None) -> Bundle:
    """Check an already parsed bundle dict (see ``read_bundle``)."""
    if bad is None:
        def bad(reason: str) -> VerificationError:
            return InvalidBundle(f"not a valid signature bundle: {reason}")

    if not isinstance(raw, dict):
        raise bad(f"expected a JSON object, found {type_name(raw)}")
    media_type = raw.get("mediaType")
    if media_type is None:
        raise bad("it has no mediaType")
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise bad(
            f"its mediaType is {describe(media_type)}, expected {BUNDLE_MEDIA_TYPE!r}"
        )
    material = expect(raw.get("verificationMaterial"), dict, "verificationMaterial", bad)
    envelope = raw.get("dsseEnvelope")
    if envelope is None:
        if "messageSignature" in raw:
            raise bad("it holds a message signature, not the DSSE envelope Sentry verifies")
        raise bad("it has no dsseEnvelope")
    expect(envelope, dict, "dsseEnvelope", bad)
    payload = decode_b64(envelope.get("payload"), "the DSSE payload", bad)
    payload_type = expect(envelope.get("payloadType"), str, "the DSSE payloadType", bad)
    entries = expect(envelope.get("signatures"), list, "the DSSE signatures", bad)
    if len(entries) != 1:
        raise bad(f"expected exactly one DSSE signature, found {len(entries)}")
    signatures = []
    for entry in entries:
        expect(entry, dict, "a DSSE signature", bad)
        keyid = entry.get("keyid")
        if keyid is not None and not isinstance(keyid, str):
            raise bad(f"a DSSE signature's keyid must be a string, found {type_name(keyid)}")
        sig = decode_b64(entry.get("sig"), "the DSSE signature", bad)
        if not sig:
            raise bad("the DSSE signature is empty")
        signatures.append(sig)
    return Bundle(media_type, material, payload, payload_type, signatures, raw)


# ---------------------------------------------------------------------------- methods

# How each signing method is named in messages, and what verifies it.
_METHODS = {
    "key": ("a key", Remedy("public_key", "PATH", python="verify it with a public key (public_key=PATH)")),
    "certificate": ("an X.509 certificate", Remedy("certificate_chain", "CA.pem", python="verify it with a CertificateVerifier")),
    "sigstore": ("Sigstore", Remedy("identity", "ID", python="verify it with a SigstoreVerifier(identity, issuer)")),
}


def signing_method(bundle: Bundle) -> str:
    """``key``, ``certificate`` or ``sigstore``, read from the verification material.

    A transparency-log entry makes it Sigstore (v0.3 bundles carry ``certificate``, v0.2 ones
    ``x509CertificateChain``); without one, a certificate chain makes it ``certificate``.
    Only a hint for choosing and wording: every verifier checks the material it relies on.
    """
    material = bundle.verification_material
    if material.get("tlogEntries"):
        return "sigstore"
    if "publicKey" in material:
        return "key"
    if "x509CertificateChain" in material or "certificate" in material:
        return "certificate"
    raise InvalidBundle("the bundle names no public key, certificate or transparency-log entry")


def require_method(bundle: Bundle, expected: str) -> None:
    """VerificationError, naming the right option, unless the bundle was signed by ``expected``."""
    actual = signing_method(bundle)
    if actual != expected:
        name, remedy = _METHODS[actual]
        raise BadSignature(f"the bundle was signed with {name}, not {_METHODS[expected][0]}", remedy=remedy)
