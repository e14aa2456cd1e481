"""Verifying a signed disk image (docs/spec.md §10.5): the bundle's signature, then the image file
against its signed SHA-256, then its tree with the verity parameters the statement signs.

The predicate is read as hostile even though signed: every field is type- and range-checked, and
a malformed one fails the verification (InvalidBundle). What is not checked here: that the files
in the image hash to the signed manifest root. The build checks that (salt 00: from the same
pass; other salts: by the sources' stamps) and the signer vouches for it; the summary says so.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ContentMismatch, InvalidBundle, SentryError, UnsupportedFormat
from ..hashing.verity import MAX_SALT
from ..manifest.manifest import IMAGE_PREDICATE_TYPE
from . import verity
from .verify import verify_image

__all__ = ["SignedImage", "parse_image_statement", "verify_signed_image"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIXED = {"format": 1, "hash": "sha256", "data_block_size": verity.BLOCK, "hash_block_size": verity.BLOCK}


@dataclass(frozen=True)
class SignedImage:
    """What a verified disk-image statement commits to."""

    root_hash: bytes
    hash_offset: int
    salt: bytes
    superblock: bool
    image_sha256: str
    manifest_root: str
    leaf_size: int
    layout: str


def _field(obj, key: str, kind, where: str, sig: Path):
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidBundle(f"{sig}: the signed disk-image predicate has no valid {where}.{key}")
    return value


def _hex(obj, key: str, where: str, sig: Path) -> str:
    value = _field(obj, key, str, where, sig)
    if not _HEX64.fullmatch(value):
        raise InvalidBundle(f"{sig}: the signed {where}.{key} is not 64 lowercase hex digits")
    return value


def parse_image_statement(statement, sig: Path) -> SignedImage:
    """The commitment in a verified statement; UnsupportedFormat for another predicate type,
    InvalidBundle for a malformed predicate."""
    if statement.predicate_type != IMAGE_PREDICATE_TYPE:
        raise UnsupportedFormat(f"{sig} does not sign a disk image (predicate {statement.predicate_type!r})")
    pred = statement.predicate
    v = _field(pred, "verity", dict, "predicate", sig)
    if any(v.get(k) != want or isinstance(v.get(k), bool) for k, want in _FIXED.items()):
        raise UnsupportedFormat(f"{sig} signs a dm-verity tree other than format 1, sha256, 4096-byte blocks, "
                                "the only kind Sentry checks")
    offset, blocks = _field(v, "hash_offset", int, "verity", sig), _field(v, "data_blocks", int, "verity", sig)
    if offset <= 0 or offset % verity.BLOCK or blocks != offset // verity.BLOCK:
        raise InvalidBundle(f"{sig}: the signed hash offset {offset} and data block count {blocks} disagree")
    salt_hex = _field(v, "salt", str, "verity", sig)
    if not re.fullmatch(r"(?:[0-9a-f]{2})*", salt_hex) or len(salt_hex) > 2 * MAX_SALT:
        raise InvalidBundle(f"{sig}: the signed salt is not at most {MAX_SALT} hex-encoded bytes")
    image, manifest = _field(pred, "image", dict, "predicate", sig), _field(pred, "manifest", dict, "predicate", sig)
    signed = SignedImage(bytes.fromhex(_hex(v, "root_hash", "verity", sig)), offset, bytes.fromhex(salt_hex),
                         _field(v, "superblock", bool, "verity", sig), _hex(image, "sha256", "image", sig),
                         _hex(manifest, "root", "manifest", sig), _field(manifest, "leaf_size", int, "manifest", sig),
                         _field(pred, "layout", str, "predicate", sig))
    if signed.image_sha256 != statement.digest_hex:
        raise InvalidBundle(f"{sig}: the signed image digest does not match the statement's subject digest")
    return signed


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _model_root(model_signature, verifier, signed: SignedImage, sig: Path) -> str:
    """Check that ``model_signature`` (a Sentry model signature) signs the image's manifest root."""
    from ..api import read_signed_statement, signed_claim
    from ..manifest.manifest import Manifest

    model_sig = Path(model_signature)
    if not model_sig.exists():
        raise SentryError(f"model signature {model_sig} does not exist")
    claim = signed_claim(read_signed_statement(model_sig, verifier), model_sig, "model")
    if not isinstance(claim, Manifest):
        raise UnsupportedFormat(f"{model_sig} is a model_signing signature: it signs file digests, not the "
                                "Sentry manifest root a disk image names")
    root = claim.root().hex()
    if root != signed.manifest_root:
        leaf = claim.params.leaf_size
        why = f" (leaf sizes {leaf} and {signed.leaf_size})" if leaf != signed.leaf_size else ""
        raise ContentMismatch(f"{sig} names model manifest root {signed.manifest_root}, but {model_sig} signs "
                              f"{root}{why}: they do not refer to the same weights")
    return root


def verify_signed_image(path, public_key=None, signature=None, *, root_hash: bytes | None = None,
                        model_signature=None, model_public_key=None, device="cpu") -> dict:
    """Verify ``signature`` (default PATH.sig, a disk-image statement) with ``public_key`` (a key
    path or object, or a Verifier), then ``path``: its SHA-256 must be the signed one and its tree
    must match the signed root with the signed hash offset, salt and superblock flag. A trusted
    ``root_hash``, if given, must be the signed one. ``model_signature``: a Sentry model signature
    (checked with ``model_public_key``, default ``public_key``) that must sign the image's manifest
    root. A summary dict if all holds; a VerificationError otherwise."""
    from ..api import read_signed_statement, verifier_for

    path = Path(path)
    sig = Path(signature) if signature is not None else path.with_name(path.name + ".sig")
    if not path.exists():
        raise SentryError(f"{path} does not exist")
    if not sig.exists():
        raise SentryError(f"signature {sig} does not exist")
    verifier = verifier_for(public_key)
    signed = parse_image_statement(read_signed_statement(sig, verifier), sig)
    if root_hash is not None and root_hash != signed.root_hash:
        raise ContentMismatch(f"{sig} signs root hash {signed.root_hash.hex()}, not the {root_hash.hex()} given")
    model_root = None
    if model_signature is not None:
        model_root = _model_root(model_signature, verifier if model_public_key is None else
                                 verifier_for(model_public_key), signed, sig)
    size = path.stat().st_size
    blocks = signed.hash_offset // verity.BLOCK
    want = signed.hash_offset + verity.BLOCK * signed.superblock + verity.hash_area_size(blocks)
    if size != want:  # a signed verify fails on it (exit 1); verify_image would call a short image bad input
        raise ContentMismatch(f"{path} is {size} bytes, not the signed image's {want} (truncated, or bytes added)")
    summary = verify_image(path, signed.root_hash, hash_offset=signed.hash_offset, salt=signed.salt,
                           superblock=signed.superblock, device=device)
    digest = _file_sha256(path)
    if digest != signed.image_sha256:  # size, data and tree match: what is left is the superblock
        raise ContentMismatch(f"{path} has SHA-256 {digest}, not the signed {signed.image_sha256}: its data and "
                              "tree match, so its verity superblock differs")
    return {**summary, "signature": str(sig), "layout": signed.layout, "image_sha256": digest,
            "manifest_root": signed.manifest_root, "manifest_leaf_size": signed.leaf_size,
            "model_signature": None if model_signature is None else str(model_signature),
            "manifest_root_checked_against": "model signature" if model_root else "nothing: the signer's claim"}
