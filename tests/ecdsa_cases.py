"""The batch ECDSA checks that more than one test module runs, each on the device it is given:
tests/unit/crypto/test_crypto.py (cpu, and cuda on a GPU), tests/gpu/test_ecdsa_gpu.py (a GPU) and
tests/native/test_emulator_ecdsa.py (cuda on the CPU launch emulator)."""
from __future__ import annotations

import hashlib
import random

import ecdsa_vectors
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from ecdsa_vectors import N
from p256_host import host_p256

from sentry.crypto import batch_sign, batch_verify, decode_signature, encode_signature

rng = random.Random(2024)


def sec1(key: ec.EllipticCurvePublicKey, compressed: bool = False) -> bytes:
    fmt = serialization.PublicFormat.CompressedPoint if compressed else serialization.PublicFormat.UncompressedPoint
    return key.public_bytes(serialization.Encoding.X962, fmt)


def random_digests(count: int) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(count)]


def openssl_verifies(public_key, digest: bytes, der: bytes) -> bool:
    try:
        public_key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except Exception:
        return False


def private_keys(count: int) -> list[bytes]:
    return [rng.randrange(1, N).to_bytes(32, "big") for _ in range(count)]


def public_key_of(private: bytes) -> bytes:
    return sec1(ec.derive_private_key(int.from_bytes(private, "big"), ec.SECP256R1()).public_key())


# ---- on any device ----

def rfc6979_vectors(device):
    for v in ecdsa_vectors.rfc6979():
        key = v.d.to_bytes(32, "big")
        assert batch_sign(key, [v.digest], device=device) == [v.signature]
        assert batch_sign(key, [v.digest], device=device, encoding="der") == [encode_signature(v.r, v.s)]


def signatures_verify_with_openssl_and_match_the_ecdsa_package(device):
    ecdsa = pytest.importorskip("ecdsa")
    from ecdsa.util import sigencode_der

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
    batch = random_digests(8)
    sigs = batch_sign(keys, batch, device=device, encoding="der")
    for key, digest, sig in zip(keys, batch, sigs):
        assert openssl_verifies(key.public_key(), digest, sig)
        d = key.private_numbers().private_value
        reference = ecdsa.SigningKey.from_secret_exponent(d, curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
        assert sig == reference.sign_digest_deterministic(digest, hashfunc=hashlib.sha256, sigencode=sigencode_der)


def one_key_for_many_digests_and_key_index(device):
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    batch = random_digests(10)
    one = batch_sign(keys[0], batch, device=device)
    assert one == [batch_sign(keys[0], [d], device=device)[0] for d in batch]
    index = [i % 3 for i in range(10)]
    mixed = batch_sign(keys, batch, key_index=index, device=device)
    assert all(batch_verify([k.public_key() for k in keys], batch, mixed, key_index=index, device=device))
    assert batch_verify(keys[0].public_key(), batch, mixed, device=device) == [i == 0 for i in index]


def cavp_and_rfc6979_vectors(device):
    vectors = ecdsa_vectors.sigver() + ecdsa_vectors.siggen() + ecdsa_vectors.rfc6979()
    result = batch_verify([v.public_key for v in vectors], [v.digest for v in vectors],
                          [v.signature for v in vectors], device=device)
    assert result == [v.valid for v in vectors]


def compressed_keys_and_key_objects(device):
    key = ec.generate_private_key(ec.SECP256R1())
    batch = random_digests(3)
    sigs = batch_sign(key, batch, device="cpu", encoding="der")
    for public in (key.public_key(), sec1(key.public_key()), sec1(key.public_key(), compressed=True)):
        assert batch_verify(public, batch, sigs, device=device, encoding="der") == [True] * 3


def bad_items_fail_alone(device):
    key = ec.generate_private_key(ec.SECP256R1())
    batch = random_digests(12)
    raw = batch_sign(key, batch, device="cpu")
    good = sec1(key.public_key())
    off_curve = good[:-1] + bytes([good[-1] ^ 1])
    r, s = raw[0][:32], raw[0][32:]
    n = N.to_bytes(32, "big")
    keys = [good] * 12
    sigs = list(raw)
    keys[1] = off_curve
    keys[2] = b"\x00" * 65  # the point at infinity
    keys[3] = b"\x05" + good[1:]
    keys[4] = good[:33]  # truncated
    keys[5] = ec.generate_private_key(ec.SECP384R1()).public_key()
    sigs[6] = bytes(32) + s  # r = 0
    sigs[7] = r + n  # s = n
    sigs[8] = n + s  # r = n
    sigs[9] = raw[9][:63]  # short
    sigs[10] = raw[9]  # another digest's signature
    expected = [True] + [False] * 10 + [True]
    assert batch_verify(keys, batch, sigs, device=device) == expected


def high_s_is_accepted_like_openssl(device):
    key = ec.generate_private_key(ec.SECP256R1())
    digest = random_digests(1)
    r, s = decode_signature(batch_sign(key, digest, device="cpu", encoding="der")[0])
    flipped = encode_dss_signature(r, N - s)
    assert openssl_verifies(key.public_key(), digest[0], flipped)
    assert batch_verify(key.public_key(), digest, [flipped], encoding="der", device=device) == [True]


def malformed_der_fails_its_item_only(device):
    key = ec.generate_private_key(ec.SECP256R1())
    batch = random_digests(3)
    der = batch_sign(key, batch, device="cpu", encoding="der")
    padded = der[1][:1] + bytes([der[1][1] + 1]) + der[1][2:] + b"\x00"  # trailing byte inside
    result = batch_verify(key.public_key(), batch, [der[0], padded, der[2]], encoding="der", device=device)
    assert result == [True, False, True]


# ---- on CUDA (a GPU, or the emulator) ----

def table_matches_the_host_build():
    from sentry.crypto import cuda

    _, table = cuda._module()
    assert table.get().tobytes() == host_p256().table.raw


def batch_sizes_around_the_block_size(count):
    private = private_keys(1)[0]
    digests = random_digests(count)
    sigs = batch_sign(private, digests, device="cuda")
    assert sigs == batch_sign(private, digests, device="cpu")
    assert batch_verify(public_key_of(private), digests, sigs, device="cuda") == [True] * count


def every_gpu_signature_verifies_with_openssl():
    keys = private_keys(2048)
    digests = random_digests(2048)
    sigs = batch_sign(keys, digests, device="cuda", encoding="der")
    algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
    for key, digest, sig in zip(keys, digests, sigs):
        ec.derive_private_key(int.from_bytes(key, "big"), ec.SECP256R1()).public_key().verify(sig, digest, algorithm)
    host = host_p256()
    for i in rng.sample(range(2048), 32):  # RFC 6979: the same bytes as the host build
        assert host.sign(int.from_bytes(keys[i], "big"), digests[i]) == batch_sign(keys[i], [digests[i]], device="cuda")[0]


def gpu_accepts_exactly_what_openssl_accepts():
    keys = private_keys(64)
    publics = [public_key_of(k) for k in keys]
    count = 4096
    index = [rng.randrange(64) for _ in range(count)]
    digests = random_digests(count)
    sigs = batch_sign(keys, digests, key_index=index, device="cpu")
    n = N.to_bytes(32, "big")
    for i in rng.sample(range(count), count // 2):  # damage half of them, in every way
        kind = rng.randrange(6)
        if kind == 0:
            digests[i] = bytes([digests[i][0] ^ 1]) + digests[i][1:]
        elif kind == 1:
            sigs[i] = sigs[i][:40] + bytes([sigs[i][40] ^ 0x10]) + sigs[i][41:]
        elif kind == 2:
            sigs[i] = rng.choice([bytes(32), n]) + sigs[i][32:]
        elif kind == 3:
            sigs[i] = sigs[i][:32] + rng.choice([bytes(32), n, b"\xff" * 32])
        elif kind == 4:
            s = (N - int.from_bytes(sigs[i][32:], "big")).to_bytes(32, "big")  # high s: still valid
            sigs[i] = sigs[i][:32] + s
        else:
            index[i] = (index[i] + 1) % 64  # another signer's key
    bad_keys = publics + [b"\x00" * 65, publics[0][:-1] + bytes([publics[0][-1] ^ 1])]
    for i in rng.sample(range(count), 64):
        index[i] = rng.choice([64, 65])
    expected = batch_verify(bad_keys, digests, sigs, key_index=index, device="cpu")
    assert batch_verify(bad_keys, digests, sigs, key_index=index, device="cuda") == expected
    assert 0 < sum(expected) < count


def vectors_with_compressed_keys():
    vectors = ecdsa_vectors.sigver() + ecdsa_vectors.siggen() + ecdsa_vectors.rfc6979()
    compressed = [bytes([2 + (v.qy & 1)]) + v.qx.to_bytes(32, "big") for v in vectors]
    result = batch_verify(compressed, [v.digest for v in vectors], [v.signature for v in vectors], device="cuda")
    assert result == [v.valid for v in vectors]
