"""sentry.crypto: the batch ECDSA API, its strict DER and input checks, on every usable backend
(the CPU always; CUDA when a GPU is usable). The device cases are checks of ecdsa_cases.py, which
tests/gpu/test_ecdsa_gpu.py and tests/native/test_emulator_ecdsa.py run too."""
from __future__ import annotations

import random
import subprocess
import sys

import ecdsa_cases
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from ecdsa_vectors import N

from sentry.crypto import batch_sign, batch_verify, cuda_available, decode_signature, encode_signature
from sentry.errors import SentryError

rng = random.Random(2024)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    if request.param == "cuda" and not cuda_available():
        pytest.skip("no usable GPU")
    return request.param


def digests(count: int) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(count)]


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
    ecdsa_cases.rfc6979_vectors(device)


def test_signatures_verify_with_openssl_and_match_the_ecdsa_package(device):
    ecdsa_cases.signatures_verify_with_openssl_and_match_the_ecdsa_package(device)


def test_one_key_for_many_digests_and_key_index(device):
    ecdsa_cases.one_key_for_many_digests_and_key_index(device)


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
    ecdsa_cases.cavp_and_rfc6979_vectors(device)


def test_compressed_keys_and_key_objects(device):
    ecdsa_cases.compressed_keys_and_key_objects(device)


def test_bad_items_fail_alone(device):
    ecdsa_cases.bad_items_fail_alone(device)


def test_high_s_is_accepted_like_openssl(device):
    ecdsa_cases.high_s_is_accepted_like_openssl(device)


def test_malformed_der_fails_its_item_only(device):
    ecdsa_cases.malformed_der_fails_its_item_only(device)


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
