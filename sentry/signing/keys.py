"""Key files: generate, write, load and identify ECDSA keys; read a key's password.

Sentry signs with ECDSA P-256 / SHA-256 only. Public keys on P-384 and P-521 load too, so that
bundles made by sigstore/model-transparency with such keys can be verified (each curve with the
hash model_signing pairs it with: SHA-384, SHA-512). No message here ever holds key material or
a password.
"""
from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sentry.errors import Remedy, SentryError
from sentry.signing import _files, outputs

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "PASSWORD_ENV",
    "SIGNING_CURVE",
    "check_signing_key",
    "check_verifying_key",
    "curve_order",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "private_key_is_encrypted",
    "public_key_hint",
    "read_password",
    "read_pem_file",
    "read_small_file",
    "signature_hash",
    "write_keypair",
]

PASSWORD_ENV = "SENTRY_KEY_PASSWORD"
MAX_KEY_FILE_BYTES = 1 << 20

SIGNING_CURVE = ec.SECP256R1
# Curve name -> (hash used with it, group order n). Verification accepts these curves.
_VERIFY_CURVES: dict[str, tuple[type[hashes.HashAlgorithm], int]] = {
    "secp256r1": (
        hashes.SHA256,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    "secp384r1": (
        hashes.SHA384,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    ),
    "secp521r1": (
        hashes.SHA512,
        0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409,
    ),
}

_P256_ONLY = "only ECDSA P-256 keys are supported"


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(SIGNING_CURVE())


def public_key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key's identifier in a bundle: hex SHA-256 of its SubjectPublicKeyInfo **PEM**.

    This is the value model_signing writes to and checks in ``verificationMaterial.publicKey.
    hint``; hashing the PEM rather than the DER keeps Sentry's key bundles readable by it.
    """
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def signature_hash(public_key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    """The hash ECDSA uses with this key's curve (SHA-256 for P-256)."""
    return _VERIFY_CURVES[public_key.curve.name][0]()


def curve_order(public_key: ec.EllipticCurvePublicKey) -> int:
    """The order n of the key's curve group, to range-check signatures."""
    return _VERIFY_CURVES[public_key.curve.name][1]


def check_signing_key(private_key: object) -> ec.EllipticCurvePrivateKey:
    """Return the key if it is an ECDSA P-256 private key, else raise SentryError."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise SentryError(f"{_P256_ONLY} (this is {_kind(private_key)})")
    if private_key.curve.name != SIGNING_CURVE.name:
        raise SentryError(f"{_P256_ONLY} (this key is on {private_key.curve.name})")
    return private_key


def check_verifying_key(public_key: object) -> ec.EllipticCurvePublicKey:
    """Return the key if it can verify: ECDSA on P-256 (or P-384/P-521 for model_signing)."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SentryError(f"{_P256_ONLY} (this is {_kind(public_key)})")
    if public_key.curve.name not in _VERIFY_CURVES:
        raise SentryError(
            f"{_P256_ONLY}, and P-384/P-521 public keys for model_signing bundles "
            f"(this key is on {public_key.curve.name})"
        )
    return public_key


def _kind(key: object) -> str:
    name = type(key).__name__
    for prefix, text in (
        ("Ed25519", "an Ed25519 key"), ("Ed448", "an Ed448 key"), ("RSA", "an RSA key"),
        ("DSA", "a DSA key"), ("X25519", "an X25519 key"), ("X448", "an X448 key"),
    ):
        if name.startswith(prefix):
            return text
    return "not an elliptic-curve key"


# ---------------------------------------------------------------------------- writing


def write_keypair(
    private_path: str | os.PathLike,
    public_path: str | os.PathLike,
    password: bytes | None = None,
    *,
    overwrite: bool = False,
    private_key: ec.EllipticCurvePrivateKey | None = None,
) -> ec.EllipticCurvePrivateKey:
    """Generate (or take) a P-256 key and write it as a PEM key pair; return the private key.

    The private key is PKCS#8 PEM, encrypted when ``password`` is given, created with mode 0600
    from the first moment; the public key is SubjectPublicKeyInfo PEM. Each is written to a
    temporary file in its directory and renamed into place. Existing files are refused unless
    ``overwrite`` is true.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise SentryError("the private and public key paths must differ")
    if password is not None and not password:
        raise SentryError("the key password is empty")
    for what, path in (("the private key", private_path), ("the public key", public_path)):
        # Before either is written: a failed second rename must not cost an existing private key.
        outputs.replaceable(what, path)
    if not overwrite:
        for path in (private_path, public_path):
            if os.path.lexists(path):
                raise SentryError(f"{path} already exists; refusing to overwrite it")
    key = check_signing_key(private_key if private_key is not None else generate_private_key())
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password is not None
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_tmp = _files.write_temp(private_path, private_pem, 0o600)
    try:
        public_tmp = _files.write_temp(public_path, public_pem, 0o644)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(private_tmp)
        raise
    try:
        _files.commit(private_tmp, private_path, overwrite=overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(public_tmp)
        raise
    try:
        _files.commit(public_tmp, public_path, overwrite=overwrite)
    except BaseException:
        # Do not leave half a pair: the private key we just wrote goes too.
        with contextlib.suppress(OSError):
            os.unlink(private_path)
        raise
    return key


# ---------------------------------------------------------------------------- loading


def read_small_file(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of a small file (a key, certificates, a password); SentryError naming ``what``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SentryError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise SentryError(f"{what} path {path} is a directory, not a file") from None
    except OSError as exc:
        raise SentryError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SentryError(f"{path} is too large to be a {what} file")
    return data


def read_pem_file(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of a small PEM file (a key or certificates); SentryError naming ``what`` if not."""
    data = read_small_file(path, what)
    if b"-----BEGIN " not in data:
        raise SentryError(f"{path} is not a PEM file (no '-----BEGIN' line)")
    return data


def _is_encrypted(pem: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem


def private_key_is_encrypted(path: str | os.PathLike) -> bool:
    """Whether a PEM private key needs a password (so the CLI asks only when it must)."""
    return _is_encrypted(read_pem_file(Path(path), "private key"))


def _needs_password(path: Path) -> SentryError:
    return SentryError(f"the private key {path} is encrypted", remedy=Remedy("password", "b'...'", "to decrypt it"))


def load_private_key(
    path: str | os.PathLike, password: bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    """Load an ECDSA P-256 private key from a PEM file (PKCS#8 or SEC1; maybe encrypted)."""
    path = Path(path)
    data = read_pem_file(path, "private key")
    if b"-----BEGIN PUBLIC KEY-----" in data or b"-----BEGIN CERTIFICATE-----" in data:
        if b"PRIVATE KEY-----" not in data:
            raise SentryError(f"{path} holds a public key or certificate, not a private key")
    encrypted = _is_encrypted(data)
    if encrypted and password is None:
        raise _needs_password(path)
    if not encrypted and password is not None:
        raise SentryError(f"the private key {path} is not encrypted, but a password was given")
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:
        # cryptography's own password/encryption mismatch, for formats we did not recognise.
        if password is None:
            raise _needs_password(path) from None
        raise SentryError(
            f"the private key {path} is not encrypted, but a password was given"
        ) from None
    except ValueError:
        if encrypted:
            raise SentryError(f"wrong password for the private key {path}") from None
        raise SentryError(f"{path} does not hold a readable PEM private key") from None
    except Exception:  # UnsupportedAlgorithm and friends: unusual key types.
        raise SentryError(f"{path}: {_P256_ONLY}") from None
    try:
        return check_signing_key(key)
    except SentryError as exc:
        raise SentryError(f"{path}: {exc}") from None


def load_public_key(path: str | os.PathLike) -> ec.EllipticCurvePublicKey:
    """Load an ECDSA public key from a SubjectPublicKeyInfo PEM file.

    P-256 is Sentry's curve; P-384 and P-521 load as well, for verifying model_signing bundles.
    """
    path = Path(path)
    data = read_pem_file(path, "public key")
    if b"PRIVATE KEY-----" in data:
        raise SentryError(f"{path} holds a private key; give the public key instead")
    if b"-----BEGIN CERTIFICATE-----" in data:
        raise SentryError(f"{path} holds a certificate; only public key files are supported here")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SentryError(f"{path} does not hold a readable PEM public key") from None
    except Exception:
        raise SentryError(f"{path}: {_P256_ONLY}") from None
    try:
        return check_verifying_key(key)
    except SentryError as exc:
        raise SentryError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------- passwords


def read_password(
    password_file: str | os.PathLike | None,
    *,
    prompt: bool,
    confirm: bool = False,
    prompt_text: str = "Private key password: ",
) -> bytes | None:
    """The key password for the CLI, or None when there is none.

    In order: the first line of ``password_file`` (one trailing newline removed); the
    environment variable SENTRY_KEY_PASSWORD; a getpass prompt when ``prompt`` is true and
    stdin is a terminal (asked twice when ``confirm``, for a new key). An empty password is an
    error wherever it comes from.
    """
    if password_file is not None:
        path = Path(password_file)
        data = read_small_file(path, "password")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        if not data:
            raise SentryError(f"password file {path} is empty")
        return data
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        if not env:
            raise SentryError(f"{PASSWORD_ENV} is set but empty")
        return os.fsencode(env)
    if prompt and sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt_text)
        if not first:
            raise SentryError("the password is empty")
        if confirm and getpass.getpass("Repeat the password: ") != first:
            raise SentryError("the two passwords differ")
        return first.encode("utf-8")
    return None
