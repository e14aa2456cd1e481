"""Batched ECDSA P-256 / SHA-256: sign and verify many digests at once, on the GPU or the CPU.

    sigs = sentry.crypto.batch_sign(keys, digests, encoding="der")
    ok = sentry.crypto.batch_verify(public_keys, digests, sigs, encoding="der")

Digests are 32-byte SHA-256 values (the message is hashed by the caller). Keys are one key for
every digest, one per digest, or any number with ``key_index`` naming each digest's key. Both
backends are standard ECDSA: every signature verifies with OpenSSL, nonces are RFC 6979 (the
same bytes from both, where OpenSSL has RFC 6979), and a signature is accepted exactly when
OpenSSL accepts it, after validating the key (on the curve, not infinity) and 0 < r, s < n.
``device``: "cuda" (kernels/ecdsa.cu), "cpu" (OpenSSL through `cryptography`, one thread per
core), or "auto" (CUDA when a GPU is usable). Importing this module loads neither CuPy nor NumPy.
"""
from __future__ import annotations

from sentry import _gpu
from sentry.crypto import inputs
from sentry.crypto.der import decode_signature, encode_signature
from sentry.errors import InvalidInput

__all__ = ["batch_sign", "batch_verify", "cuda_available", "decode_signature", "encode_signature"]


def cuda_available() -> bool:
    """Whether CuPy is installed and sees a GPU."""
    return _gpu.available()


def _backend(device: str):
    if _gpu.resolve_device(device, "batch ECDSA") == "cpu":
        from sentry.crypto import cpu

        return cpu
    from sentry.crypto import cuda

    return cuda


def batch_sign(private_keys, digests, *, key_index=None, device: str = "auto", encoding: str = "raw") -> list[bytes]:
    """Sign each 32-byte digest with its key; returns the signatures, 64-byte r || s
    (``encoding="raw"``) or DER.

    ``private_keys``: `cryptography` P-256 private keys or 32-byte big-endian scalars (a single
    one signs every digest). Key material is wiped from the packed buffers and device memory
    after use, and never appears in messages."""
    inputs.check_encoding(encoding)
    packed_digests = inputs.digests(digests)
    private = inputs.private_keys(private_keys)
    try:
        count = len(packed_digests) // 32
        index = inputs.key_index(len(private) // 32, count, key_index)
        raw = _backend(device).sign(private, index, packed_digests) if count else b""
    finally:
        private[:] = bytes(len(private))
    return inputs.encode_signatures(raw, encoding)


def batch_verify(public_keys, digests, signatures, *, key_index=None, device: str = "auto",
                 encoding: str = "raw") -> list[bool]:
    """Whether each signature is valid for its digest and public key, one bool per digest.

    ``public_keys``: SEC1 bytes (65-byte uncompressed or 33-byte compressed) or `cryptography`
    P-256 public keys. ``signatures``: 64-byte r || s (``encoding="raw"``) or strict DER. An
    invalid key or a malformed signature makes only its own items False."""
    inputs.check_encoding(encoding)
    packed_digests = inputs.digests(digests)
    count = len(packed_digests) // 32
    packed_signatures = inputs.signatures(signatures, encoding)
    if len(packed_signatures) != 64 * count:
        raise InvalidInput(f"{len(packed_signatures) // 64} signatures for {count} digests")
    public = inputs.public_keys(public_keys)
    index = inputs.key_index(len(public), count, key_index)
    if not count:
        return []
    return _backend(device).verify(public, index, packed_digests, packed_signatures)
