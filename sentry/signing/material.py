"""A signer or verifier from what a caller gives: a Signer/Verifier object as it is, a key object,
or a PEM key file (a private one with its password)."""
from __future__ import annotations

import os

from ..errors import SentryError
from .base import Signer, Verifier
from .key import KeySigner, KeyVerifier
from .keys import load_private_key, load_public_key

__all__ = ["private_key_for", "signer_for", "verifier_for"]


def signer_for(key, password=None) -> Signer:
    if isinstance(key, Signer):  # a certificate or Sigstore signer, built by the caller
        return key
    return KeySigner(private_key_for(key, password))


def private_key_for(key, password=None):
    """The private key object for ``key``: a PEM path (with its password, str or bytes) or a key object."""
    if key is None:
        raise SentryError("no signing key: pass key=PATH (see `sentry keygen`) or a Signer")
    if isinstance(key, (str, os.PathLike)):
        key = load_private_key(key, password.encode() if isinstance(password, str) else password)
    return key


def verifier_for(public_key) -> Verifier:
    """A Verifier object as given, else a KeyVerifier for a key file or object."""
    if isinstance(public_key, Verifier):  # a certificate or Sigstore verifier
        return public_key
    if public_key is None:
        raise SentryError("no public key: pass public_key=PATH or a Verifier")
    return KeyVerifier(load_public_key(public_key) if isinstance(public_key, (str, os.PathLike)) else public_key)
