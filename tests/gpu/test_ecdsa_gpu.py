"""The CUDA batch ECDSA backend against OpenSSL, the CPU backend and the host build of the same
kernels. Skipped without a usable GPU (the vectors also run on CUDA in test_crypto.py)."""
from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

import ecdsa_vectors
from ecdsa_vectors import N
from p256_host import host_p256
from sentry.crypto import batch_sign, batch_verify, cuda_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="no usable GPU")]
rng = random.Random(90)


def _keys(count: int) -> list[bytes]:
    return [rng.randrange(1, N).to_bytes(32, "big") for _ in range(count)]


def _digests(count: int) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(count)]


def _public(private: bytes) -> bytes:
    key = ec.derive_private_key(int.from_bytes(private, "big"), ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def test_table_matches_the_host_build():
    from sentry.crypto import cuda

    _, table = cuda._module()
    assert table.get().tobytes() == host_p256().table.raw


@pytest.mark.parametrize("count", [1, 127, 128, 129, 1000])
def test_batch_sizes_around_the_block_size(count):
    private = _keys(1)[0]
    digests = _digests(count)
    sigs = batch_sign(private, digests, device="cuda")
    assert sigs == batch_sign(private, digests, device="cpu")
    assert batch_verify(_public(private), digests, sigs, device="cuda") == [True] * count


def test_every_gpu_signature_verifies_with_openssl():
    keys = _keys(2048)
    digests = _digests(2048)
    sigs = batch_sign(keys, digests, device="cuda", encoding="der")
    algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
    for key, digest, sig in zip(keys, digests, sigs):
        ec.derive_private_key(int.from_bytes(key, "big"), ec.SECP256R1()).public_key().verify(sig, digest, algorithm)
    host = host_p256()
    for i in rng.sample(range(2048), 32):  # RFC 6979: the same bytes as the host build
        assert host.sign(int.from_bytes(keys[i], "big"), digests[i]) == batch_sign(keys[i], [digests[i]], device="cuda")[0]


def test_gpu_accepts_exactly_what_openssl_accepts():
    keys = _keys(64)
    publics = [_public(k) for k in keys]
    count = 4096
    index = [rng.randrange(64) for _ in range(count)]
    digests = _digests(count)
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


def test_vectors_with_compressed_keys():
    vectors = ecdsa_vectors.sigver() + ecdsa_vectors.siggen() + ecdsa_vectors.rfc6979()
    compressed = [bytes([2 + (v.qy & 1)]) + v.qx.to_bytes(32, "big") for v in vectors]
    result = batch_verify(compressed, [v.digest for v in vectors], [v.signature for v in vectors], device="cuda")
    assert result == [v.valid for v in vectors]


@pytest.mark.slow
def test_a_million_verifies_in_one_batch():
    private = _keys(1)[0]
    digests = _digests(1024)
    sigs = batch_sign(private, digests, device="cuda")
    count = 1 << 20
    all_digests = digests * (count // 1024)
    all_sigs = sigs * (count // 1024)
    all_sigs[12345] = bytes(64)
    result = batch_verify(_public(private), all_digests, all_sigs, device="cuda")
    assert result.count(False) == 1 and not result[12345]
