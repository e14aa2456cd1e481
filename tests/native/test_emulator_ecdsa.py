"""The real ECDSA kernels (kernels/ecdsa.cu) on the CPU launch emulator, through the batch API with
device="cuda" and the real launch code of sentry/crypto/cuda.py: the project's own GPU tests
(tests/gpu/test_ecdsa_gpu.py, and tests/unit/crypto/test_crypto.py's cuda cases: the checks of
ecdsa_cases.py), run here without a GPU."""
from __future__ import annotations

import cuda_emu
import ecdsa_cases
import pytest


@pytest.fixture(scope="module", autouse=True)
def emu(emu_build_dir):
    """One fake CuPy for the module: the fixed-base table is built once (sentry caches it per device)."""
    with pytest.MonkeyPatch.context() as mp:
        cupy = cuda_emu.install(mp, emu_build_dir)
        yield cupy
    cuda_emu.clear_caches()


def test_the_batch_api_picks_the_cuda_backend():
    from sentry.crypto import _backend, cuda, cuda_available

    assert cuda_available() and _backend("auto") is cuda


def test_table_matches_the_host_build():
    ecdsa_cases.table_matches_the_host_build()


@pytest.mark.parametrize("count", [1, 127, 128, 129, 300])
def test_signatures_match_the_cpu_backend_around_the_block_size(count):
    ecdsa_cases.batch_sizes_around_the_block_size(count)


@pytest.mark.parametrize("case", [ecdsa_cases.rfc6979_vectors,
                                  ecdsa_cases.signatures_verify_with_openssl_and_match_the_ecdsa_package,
                                  ecdsa_cases.one_key_for_many_digests_and_key_index,
                                  ecdsa_cases.cavp_and_rfc6979_vectors,
                                  ecdsa_cases.compressed_keys_and_key_objects,
                                  ecdsa_cases.bad_items_fail_alone,
                                  ecdsa_cases.high_s_is_accepted_like_openssl,
                                  ecdsa_cases.malformed_der_fails_its_item_only],
                         ids=lambda f: f.__name__)
def test_the_cuda_cases_of_the_crypto_tests(case):
    case("cuda")


def test_vectors_with_compressed_keys():
    ecdsa_cases.vectors_with_compressed_keys()


def test_every_signature_verifies_with_openssl():
    ecdsa_cases.every_gpu_signature_verifies_with_openssl()


def test_accepts_exactly_what_openssl_accepts_with_per_item_keys():
    ecdsa_cases.gpu_accepts_exactly_what_openssl_accepts()


def test_the_fiber_stacks_are_far_deeper_than_the_kernels_need():
    """Each emulated thread runs on a 256 KiB stack; the signing and verifying kernels' deepest use
    on this OS thread (stacks start zeroed) must stay well inside it."""
    from sentry.crypto import cuda

    ecdsa_cases.batch_sizes_around_the_block_size(3)
    used = cuda._module()[0].lib.emu_stack_high_water()
    assert 1024 < used < 64 << 10, used
