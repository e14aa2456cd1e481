"""The batch API's inputs, checked and packed into the fixed-size records both backends read.

Digests: 32 bytes each. Private keys: 32-byte big-endian scalars. Public keys: 65-byte slots,
SEC1 as given (0x04 || x || y, or 0x02/0x03 || x padded with zeros). Signatures: r || s, 64
bytes. A caller's mistake (a digest of the wrong size, a key of the wrong type, mismatched
lengths) raises; a bad public key or signature only makes its own item fail.
"""
from __future__ import annotations

from array import array
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sentry.crypto.der import N, decode_signature, encode_signature
from sentry.errors import InvalidInput

__all__ = [
    "ENCODINGS",
    "PUBLIC_KEY_SLOT",
    "check_encoding",
    "digests",
    "encode_signatures",
    "key_index",
    "private_keys",
    "public_key_slot",
    "public_keys",
    "signatures",
]

ENCODINGS = ("raw", "der")
PUBLIC_KEY_SLOT = 65


def _rows(values, width: int | None, what: str) -> list[bytes]:
    """bytes-likes (or the rows of a 2-D uint8 array) as a list of bytes."""
    if hasattr(values, "ndim") and values.ndim == 2:
        if width is not None and values.shape[1] != width:
            raise InvalidInput(f"{what} must be {width} bytes each, not {values.shape[1]}")
        return [bytes(row) for row in values.astype("uint8", copy=False)]
    if isinstance(values, (bytes, bytearray, memoryview, str)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a sequence of byte strings or a 2-D uint8 array")
    return [bytes(v) for v in values]


def digests(values) -> bytes:
    """All digests, concatenated (32 bytes each)."""
    rows = _rows(values, 32, "digests")
    for i, row in enumerate(rows):
        if len(row) != 32:
            raise InvalidInput(f"digest {i} is {len(row)} bytes; SHA-256 digests are 32")
    return b"".join(rows)


def _one_or_many(keys, key_type: type) -> list:
    """One key (an object, a byte string, a 1-D array) or a sequence / 2-D array of keys."""
    if isinstance(keys, (key_type, bytes, bytearray, memoryview)):
        return [keys]
    if hasattr(keys, "ndim"):
        return [keys] if keys.ndim == 1 else _rows(keys, None, "keys")
    return list(keys)


def key_index(key_count: int, item_count: int, given=None) -> array | None:
    """Which key goes with item i: None when key i does (one key per item), else an array of
    indices (uint32): the caller's key_index, or all zeros for a single key."""
    if given is not None:
        index = array("I", [int(k) for k in given])
        if len(index) != item_count:
            raise InvalidInput(f"key_index has {len(index)} entries for {item_count} digests")
        if index and max(index) >= key_count:
            raise InvalidInput(f"key_index refers to key {max(index)}, but there are {key_count} keys")
        return index
    if key_count == item_count:
        return None
    if key_count == 1:
        return array("I", bytes(4 * item_count))
    raise InvalidInput(f"{key_count} keys for {item_count} digests: give one key, one per digest, or key_index")


def private_keys(keys) -> bytearray:
    """Private keys as concatenated 32-byte scalars, each checked 0 < d < n. A bytearray, so the
    caller can wipe it. Accepts `cryptography` P-256 private keys or 32-byte big-endian scalars,
    one (for every digest) or one per digest."""
    packed = bytearray()
    for i, key in enumerate(_one_or_many(keys, ec.EllipticCurvePrivateKey)):
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if key.curve.name != "secp256r1":
                raise InvalidInput(f"private key {i} is on {key.curve.name}; only P-256 is supported")
            packed += key.private_numbers().private_value.to_bytes(32, "big")
            continue
        if not isinstance(key, (bytes, bytearray, memoryview)) and not hasattr(key, "ndim"):
            raise TypeError(f"private key {i} must be a P-256 private key object or 32 bytes")
        raw = bytes(key)
        if len(raw) != 32 or not 0 < int.from_bytes(raw, "big") < N:
            raise InvalidInput(f"private key {i} is not a P-256 scalar (32 bytes, 0 < d < n)")
        packed += raw
    if not packed:
        raise InvalidInput("no private keys")
    return packed


def public_key_slot(key) -> bytes:
    """A public key's 65-byte slot. Unparseable bytes give a slot no backend accepts (prefix 0,
    SEC1's point at infinity), so the key's items fail and the rest of the batch goes on."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            return bytes(PUBLIC_KEY_SLOT)
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if not isinstance(key, (bytes, bytearray, memoryview)) and not hasattr(key, "ndim"):
        raise TypeError("a public key must be a P-256 public key object or SEC1 bytes")
    raw = bytes(key)
    if (len(raw) == 65 and raw[0] == 4) or (len(raw) == 33 and raw[0] in (2, 3)):
        return raw.ljust(PUBLIC_KEY_SLOT, b"\0")
    return bytes(PUBLIC_KEY_SLOT)


def public_keys(keys) -> list[bytes]:
    slots = [public_key_slot(k) for k in _one_or_many(keys, ec.EllipticCurvePublicKey)]
    if not slots:
        raise InvalidInput("no public keys")
    return slots


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise InvalidInput(f"encoding must be 'raw' or 'der', not {encoding!r}")


def signatures(values, encoding: str) -> bytes:
    """All signatures as r || s records. One that does not parse (strict DER; raw: 64 bytes)
    becomes r = s = 0, which every backend rejects."""
    check_encoding(encoding)
    packed = []
    for sig in _rows(values, None, "signatures"):
        if encoding == "raw":
            packed.append(sig if len(sig) == 64 else bytes(64))
            continue
        try:
            r, s = decode_signature(sig)
        except ValueError:
            packed.append(bytes(64))
            continue
        packed.append(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return b"".join(packed)


def encode_signatures(raw: bytes, encoding: str) -> list[bytes]:
    """r || s records (as the backends produce them) in the caller's encoding."""
    records = [raw[i: i + 64] for i in range(0, len(raw), 64)]
    if encoding == "raw":
        return records
    return [encode_signature(int.from_bytes(r[:32], "big"), int.from_bytes(r[32:], "big")) for r in records]
