"""Helpers shared by the tests: keys, small models, byte flips, running the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sentry.signing import write_keypair

TESTS = Path(__file__).resolve().parent  # tests/: support modules, vectors, native sources
REPO = TESTS.parent  # the checkout under test


def make_keys(tmp: Path, name: str = "key"):
    private, public = tmp / f"{name}.pem", tmp / f"{name}.pub.pem"
    write_keypair(private, public)
    return private, public


def other_public_key(tmp: Path) -> Path:
    return make_keys(tmp, "other")[1]


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def save_tensors(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def tensor_offset(path: Path, name: str) -> tuple[int, int]:
    """Absolute (offset, size) of a tensor's bytes in a safetensors file, read independently."""
    import json
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + begin, end - begin


def verification_fails(verify, *args, **kw):
    """Call ``verify`` expecting a VerificationError with a failing report; return the report."""
    import pytest

    from sentry import VerificationError

    with pytest.raises(VerificationError) as exc:
        verify(*args, **kw)
    assert exc.value.report is not None and not exc.value.report.ok
    return exc.value.report


def run_cli(*args, cwd=None, env=None):
    """Run `python -m sentry.cli ...` in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sentry.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def shared_interop() -> Path | None:
    """../shared/interop/model-transparency beside the checkout (real model_signing bundles), if there."""
    for shared in (REPO.parent / "shared", REPO / "shared"):
        if (shared / "interop" / "model-transparency").is_dir():
            return shared / "interop" / "model-transparency"
    return None


def make_pki(tmp: Path, *, days=(-1, 365), code_signing=True, key_usage=True, leaf_key=None):
    """A root CA, an intermediate and a code-signing leaf (P-256), written as PEM files.

    Returns a dict of paths: root, intermediate, leaf (certificate), key (the leaf's private key).
    ``days`` is the leaf's validity (notBefore, notAfter) in days from now.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject, key, issuer, issuer_key, ca, start, end, extra=()):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now + datetime.timedelta(days=start))
             .not_valid_after(now + datetime.timedelta(days=end))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        for ext, critical in extra:
            b = b.add_extension(ext, critical=critical)
        return b.sign(issuer_key, hashes.SHA256())

    root_key, int_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    leaf_key = leaf_key or ec.generate_private_key(ec.SECP256R1())
    root = cert("test root", root_key, "test root", root_key, True, -10, 3650)
    inter = cert("test intermediate", int_key, "test root", root_key, True, -10, 3650)
    extra = []
    if key_usage:
        extra.append((x509.KeyUsage(True, False, False, False, False, False, False, False, False), True))
    if code_signing:
        extra.append((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False))
    leaf = cert("test signer", leaf_key, "test intermediate", int_key, False, *days, extra)
    paths = {}
    for label, c in (("root", root), ("intermediate", inter), ("leaf", leaf)):
        paths[label] = tmp / f"{label}.crt.pem"
        paths[label].write_bytes(c.public_bytes(serialization.Encoding.PEM))
    paths["key"] = tmp / "leaf.key.pem"
    paths["key"].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return paths


def nvidia_wheel_file(pattern: str) -> Path | None:
    """A file of NVIDIA's pip wheels (the ``nvidia`` namespace package), e.g. ``cu*/bin/nvdisasm``
    or ``cu*/lib/libnvrtc.so.*``: the test extra installs nvdisasm and NVRTC that way, so that
    the SASS and run-time compile tests run without a CUDA toolkit's copies."""
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        for candidate in sorted(Path(root).glob(pattern)):
            return candidate
    return None



def make_deep(base: Path, depth: int, name: str = "w.bin", data: bytes = b"weights") -> None:
    """``depth`` nested directories ``d`` under ``base`` with the file ``name`` at the bottom, made
    through directory descriptors (the whole path may be longer than the system accepts)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(old)
        with os.fdopen(os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(data)
    finally:
        os.close(fd)


def remove_deep(base: Path, depth: int) -> None:
    """Undo :func:`make_deep` (and any files since written at the bottom) without recursion:
    shutil.rmtree, and so pytest's clean-up of old temporary directories, would recurse."""
    fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY)]
    for _ in range(depth):
        fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    for name in os.listdir(fds[-1]):
        os.unlink(name, dir_fd=fds[-1])
    os.close(fds.pop())
    while fds:
        os.rmdir("d", dir_fd=fds[-1])
        os.close(fds.pop())
