"""sentry.crypto: the batch ECDSA API, its strict DER and input checks, on every usable backend
(the CPU always; CUDA when a GPU is usable, see also test_ecdsa_gpu.py)."""
from __future__ import annotations

import hashlib
import random
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

import ecdsa_vectors
from ecdsa_vectors import N
from sentry.crypto import batch_sign, batch_verify, cuda_available, decode_signature, encode_signature
from sentry.errors import SentryError

rng = random.Random(2024)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "cuda" and not cuda_available():
        pytest.skip("no usable GPU")
    return request.param


def sec1(key: ec.EllipticCurvePublicKey, compressed: bool = False) -> bytes:
    fmt = serialization.PublicFormat.CompressedPoint if compressed else serialization.PublicFormat.UncompressedPoint
    return key.public_bytes(serialization.Encoding.X962, fmt)


def digests(count: int) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(count)]


def openssl_verifies(public_key, digest: bytes, der: bytes) -> bool:
    try:
        public_key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except Exception:
        return False


# ---- strict DER ----

def test_der_round_trip_matches_openssl_encoding():
    for r, s in [(1, 1), (0x7F, 0x80), (N - 1, N - 1), (2**255, 2**248)] + [
        (rng.randrange(1, N), rng.randrange(1, N)) for _ in range(50)
    ]:
        der = encode_signature(r, s)
        assert der == encode_dss_signature(r, s)
        assert decode_signature(der) == (r, s)


@pytest.mark.parametrize("der", [
    b"",
    b"\x30",
    b"\x31\x06\x02\x01\x01\x02\x01\x01",  # SET, not SEQUENCE
    b"\x30\x81\x06\x02\x01\x01\x02\x01\x01",  # long-form length for a short sequence
    b"\x30\x07\x02\x01\x01\x02\x01\x01",  # length says more than there is
    b"\x30\x06\x02\x01\x01\x02\x01\x01\x00",  # a byte after the sequence
    b"\x30\x07\x02\x01\x01\x02\x01\x01\x00",  # a byte after the integers, inside
    b"\x30\x07\x02\x02\x00\x01\x02\x01\x01",  # r = 1 with a needless zero byte
    b"\x30\x06\x02\x01\x81\x02\x01\x01",  # negative r
    b"\x30\x06\x02\x01\x00\x02\x01\x01",  # r = 0
    b"\x30\x06\x02\x01\x01\x02\x01\x00",  # s = 0
    b"\x30\x05\x02\x00\x02\x01\x01",  # empty INTEGER
    b"\x30\x06\x04\x01\x01\x02\x01\x01",  # OCTET STRING, not INTEGER
    b"\x30\x03\x02\x01\x01",  # one INTEGER
    encode_signature(1, 1)[:-1],
])
def test_der_rejects_malformed(der):
    with pytest.raises(ValueError):
        decode_signature(der)


def test_der_rejects_values_of_n_and_above():
    for r, s in [(N, 1), (1, N), (N + 1, 1), (2**256 - 1, 1)]:
        with pytest.raises(ValueError):
            decode_signature(encode_signature(r, s))


# ---- signing ----

def test_rfc6979_vectors(device):
    for v in ecdsa_vectors.rfc6979():
        key = v.d.to_bytes(32, "big")
        assert batch_sign(key, [v.digest], device=device) == [v.signature]
        assert batch_sign(key, [v.digest], device=device, encoding="der") == [encode_signature(v.r, v.s)]


def test_signatures_verify_with_openssl_and_match_the_ecdsa_package(device):
    ecdsa = pytest.importorskip("ecdsa")
    from ecdsa.util import sigencode_der

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
    batch = digests(8)
    sigs = batch_sign(keys, batch, device=device, encoding="der")
    for key, digest, sig in zip(keys, batch, sigs):
        assert openssl_verifies(key.public_key(), digest, sig)
        d = key.private_numbers().private_value
        reference = ecdsa.SigningKey.from_secret_exponent(d, curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
        assert sig == reference.sign_digest_deterministic(digest, hashfunc=hashlib.sha256, sigencode=sigencode_der)


def test_one_key_for_many_digests_and_key_index(device):
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    batch = digests(10)
    one = batch_sign(keys[0], batch, device=device)
    assert one == [batch_sign(keys[0], [d], device=device)[0] for d in batch]
    index = [i % 3 for i in range(10)]
    mixed = batch_sign(keys, batch, key_index=index, device=device)
    assert all(batch_verify([k.public_key() for k in keys], batch, mixed, key_index=index, device=device))
    assert batch_verify(keys[0].public_key(), batch, mixed, device=device) == [i == 0 for i in index]


def test_numpy_arrays_in():
    np = pytest.importorskip("numpy")
    key = ec.generate_private_key(ec.SECP256R1())
    batch = np.frombuffer(b"".join(digests(4)), dtype=np.uint8).reshape(4, 32)
    raw = batch_sign(key, batch, device="cpu")
    sigs = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(4, 64)
    assert batch_verify(key.public_key(), batch, sigs, device="cpu") == [True] * 4


@pytest.mark.parametrize("bad_key", [bytes(32), N.to_bytes(32, "big"), b"\x01" * 31, (N + 1).to_bytes(33, "big")])
def test_sign_refuses_invalid_private_keys(bad_key):
    with pytest.raises(ValueError, match="private key 0"):
        batch_sign(bad_key, digests(1), device="cpu")


def test_sign_refuses_other_curves_and_bad_arguments():
    with pytest.raises(ValueError, match="P-256"):
        batch_sign(ec.generate_private_key(ec.SECP384R1()), digests(1), device="cpu")
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="32"):
        batch_sign(key, [b"\x00" * 31], device="cpu")
    with pytest.raises(ValueError, match="2 keys for 3 digests"):
        batch_sign([key, key], digests(3), device="cpu")
    with pytest.raises(ValueError, match="encoding"):
        batch_sign(key, digests(1), encoding="pem")
    with pytest.raises(ValueError, match="device"):
        batch_sign(key, digests(1), device="tpu")
    with pytest.raises(TypeError):
        batch_sign(key, b"\x00" * 32, device="cpu")  # one digest is still a list of one


def test_cuda_without_a_gpu_is_an_error():
    if cuda_available():
        pytest.skip("a GPU is usable here")
    # without CuPy: the extra to install; with CuPy and no GPU: that no GPU is usable
    with pytest.raises(SentryError, match=r"GPU|needs CuPy, which is not installed: pip install 'sentry-artifacts\[gpu\]'"):
        batch_verify(b"\x04" + bytes(64), digests(1), [bytes(64)], device="cuda")


# ---- verifying ----

def test_cavp_and_rfc6979_vectors(device):
    vectors = ecdsa_vectors.sigver() + ecdsa_vectors.siggen() + ecdsa_vectors.rfc6979()
    result = batch_verify([v.public_key for v in vectors], [v.digest for v in vectors],
                          [v.signature for v in vectors], device=device)
    assert result == [v.valid for v in vectors]


def test_compressed_keys_and_key_objects(device):
    key = ec.generate_private_key(ec.SECP256R1())
    batch = digests(3)
    sigs = batch_sign(key, batch, device="cpu", encoding="der")
    for public in (key.public_key(), sec1(key.public_key()), sec1(key.public_key(), compressed=True)):
        assert batch_verify(public, batch, sigs, device=device, encoding="der") == [True] * 3


def test_bad_items_fail_alone(device):
    key = ec.generate_private_key(ec.SECP256R1())
    batch = digests(12)
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


def test_high_s_is_accepted_like_openssl(device):
    key = ec.generate_private_key(ec.SECP256R1())
    digest = digests(1)
    r, s = decode_signature(batch_sign(key, digest, device="cpu", encoding="der")[0])
    flipped = encode_dss_signature(r, N - s)
    assert openssl_verifies(key.public_key(), digest[0], flipped)
    assert batch_verify(key.public_key(), digest, [flipped], encoding="der", device=device) == [True]


def test_malformed_der_fails_its_item_only(device):
    key = ec.generate_private_key(ec.SECP256R1())
    batch = digests(3)
    der = batch_sign(key, batch, device="cpu", encoding="der")
    padded = der[1][:1] + bytes([der[1][1] + 1]) + der[1][2:] + b"\x00"  # trailing byte inside
    result = batch_verify(key.public_key(), batch, [der[0], padded, der[2]], encoding="der", device=device)
    assert result == [True, False, True]


def test_verify_argument_errors():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ValueError, match="signatures for"):
        batch_verify(key, digests(2), [bytes(64)], device="cpu")
    with pytest.raises(ValueError, match="key_index"):
        batch_verify([key, key], digests(2), [bytes(64)] * 2, key_index=[0, 2], device="cpu")
    with pytest.raises(TypeError):
        batch_verify(12345, digests(1), [bytes(64)], device="cpu")
    assert batch_verify(key, [], [], device="cpu") == []


def test_import_sentry_loads_no_gpu_or_array_library():
    code = ("import sys, sentry, sentry.crypto; "
            "assert not {'cupy', 'torch', 'numpy'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
