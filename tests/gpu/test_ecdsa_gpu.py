"""The CUDA batch ECDSA backend against OpenSSL, the CPU backend and the host build of the same
kernels. Skipped without a usable GPU (the checks, in ecdsa_cases.py, also run on the CPU launch
emulator: tests/native/test_emulator_ecdsa.py; the vectors also run on CUDA in test_crypto.py)."""
from __future__ import annotations

import ecdsa_cases
import pytest

from sentry.crypto import batch_sign, batch_verify, cuda_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="no usable GPU")]


def test_table_matches_the_host_build():
    ecdsa_cases.table_matches_the_host_build()


@pytest.mark.parametrize("count", [1, 127, 128, 129, 1000])
def test_batch_sizes_around_the_block_size(count):
    ecdsa_cases.batch_sizes_around_the_block_size(count)


def test_every_gpu_signature_verifies_with_openssl():
    ecdsa_cases.every_gpu_signature_verifies_with_openssl()


def test_gpu_accepts_exactly_what_openssl_accepts():
    ecdsa_cases.gpu_accepts_exactly_what_openssl_accepts()


def test_vectors_with_compressed_keys():
    ecdsa_cases.vectors_with_compressed_keys()


@pytest.mark.slow
def test_a_million_verifies_in_one_batch():
    private = ecdsa_cases.private_keys(1)[0]
    digests = ecdsa_cases.random_digests(1024)
    sigs = batch_sign(private, digests, device="cuda")
    count = 1 << 20
    all_digests = digests * (count // 1024)
    all_sigs = sigs * (count // 1024)
    all_sigs[12345] = bytes(64)
    result = batch_verify(ecdsa_cases.public_key_of(private), all_digests, all_sigs, device="cuda")
    assert result.count(False) == 1 and not result[12345]
