"""Sealing: the in-toto statement, its DSSE envelope, the Sigstore bundle, signers and verifiers.

Layers, each one module: ``keys`` (key files and passwords), ``dsse`` (the bytes a signature
covers), ``statement`` (what is signed), ``bundle`` (the file it travels in), ``base`` (the
Signer/Verifier roles) and one module per signing method: ``key``, ``certificate`` and
``sigstore`` (imported on use: it loads sigstore-python).
"""
from sentry.manifest.manifest import IMAGE_PREDICATE_TYPE, PREDICATE_TYPE
from sentry.signing.base import Signer, Verifier
from sentry.signing.bundle import (
    ACCEPTED_MEDIA_TYPES,
    BUNDLE_MEDIA_TYPE,
    MAX_BUNDLE_BYTES,
    Bundle,
    make_bundle,
    parse_bundle,
    read_bundle,
    signing_method,
    write_bundle,
)
from sentry.signing.certificate import CertificateSigner, CertificateVerifier, load_certificates
from sentry.signing.dsse import PAYLOAD_TYPE, pae
from sentry.signing.key import KeySigner, KeyVerifier
from sentry.signing.keys import (
    PASSWORD_ENV,
    generate_private_key,
    load_private_key,
    load_public_key,
    public_key_hint,
    read_password,
    write_keypair,
)
from sentry.signing.statement import (
    STATEMENT_TYPE,
    Statement,
    make_statement,
    parse_statement,
)

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "BUNDLE_MEDIA_TYPE",
    "IMAGE_PREDICATE_TYPE",
    "MAX_BUNDLE_BYTES",
    "PASSWORD_ENV",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Bundle",
    "CertificateSigner",
    "CertificateVerifier",
    "KeySigner",
    "KeyVerifier",
    "Signer",
    "Statement",
    "Verifier",
    "generate_private_key",
    "load_certificates",
    "load_private_key",
    "load_public_key",
    "make_bundle",
    "make_statement",
    "pae",
    "parse_bundle",
    "parse_statement",
    "public_key_hint",
    "read_bundle",
    "read_password",
    "signing_method",
    "write_bundle",
    "write_keypair",
]
