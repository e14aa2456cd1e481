"""The kernels' P-256 arithmetic, nonces, signing and verifying, built for the CPU with g++
(the code the GPU runs), against Python integers, `cryptography` (OpenSSL) and `ecdsa`."""
from __future__ import annotations

import hashlib
import hmac
import random

import ecdsa_vectors
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from ecdsa_vectors import N, P
from p256_host import host_p256

ecdsa = pytest.importorskip("ecdsa")
G = ecdsa.NIST256p.generator
rng = random.Random(6979)
EDGES = [0, 1, 2, N - 1, N, N + 1, P - 1, P, P + 1, 2**255, 2**256 - 1]


@pytest.fixture(scope="module")
def host():
    return host_p256()


def sec1(point, compressed=False) -> bytes:
    x, y = point.x(), point.y()
    if compressed:
        return bytes([2 + (y & 1)]) + x.to_bytes(32, "big")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def openssl_verifies(pub: bytes, digest: bytes, sig: bytes) -> bool:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


@pytest.mark.parametrize("modulus", [P, N], ids=["p", "n"])
def test_field_arithmetic_matches_integers(host, modulus):
    values = EDGES + [rng.randrange(2**256) for _ in range(60)]
    for a in values:
        b = rng.choice(values)
        assert host.field("add", modulus, a, b) == (a + b) % modulus
        assert host.field("sub", modulus, a, b) == (a - b) % modulus
        assert host.field("mul", modulus, a, b) == a * b % modulus
        assert host.field("sqr", modulus, a) == a * a % modulus
        assert host.field("neg", modulus, a) == -a % modulus
        assert host.field("mont", modulus, a) == a * 2**256 % modulus
        expected_inverse = pow(a, -1, modulus) if a % modulus else 0
        assert host.field("inv", modulus, a) == expected_inverse


R = 2**256
CARRY_WORDS = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]


def carry_heavy(count: int, words: int = 8) -> list[int]:
    """Values made of limbs that keep carries and borrows running: 0, 1, all ones, the top bit."""
    return [sum(rng.choice(CARRY_WORDS + [rng.getrandbits(32)]) << (32 * i) for i in range(words))
            for _ in range(count)]


def raw_values(modulus: int) -> list[int]:
    return (EDGES + [modulus - 2, R - 2, 2**224 - 1, 2**32 - 1, 2**32] + carry_heavy(80)
            + [rng.getrandbits(256) for _ in range(30)])


def test_carry_chains_match_integers(host):
    """The limb-level chains (the host twins of the GPU's PTX) against Python integers."""
    values = raw_values(P)
    for a in values:
        for b in (rng.choice(values), a, R - 1 - a, R - 1):
            assert host.raw("add", a, b) == a + b
            assert host.raw("sub", a, b) == (a - b) % 2**257  # borrow in bit 256
            assert host.raw("mul", a, b) == a * b
        assert host.raw("sqr", a, 0) == a * a


@pytest.mark.parametrize("modulus", [P, N], ids=["p", "n"])
def test_montgomery_reduction_over_its_whole_range(host, modulus):
    """t·2^-256 mod m for every t < 2^256·m, the bound fe_mul relies on."""
    top = R * modulus
    ts = [0, 1, modulus, top - 1, top - modulus, top - R, R - 1, R * (modulus - 1), (modulus - 1) ** 2]
    ts += [t % top for t in carry_heavy(60, words=16)] + [rng.randrange(top) for _ in range(40)]
    r_inv = pow(R, -1, modulus)
    for t in ts:
        assert host.redc(modulus, t) == t * r_inv % modulus, hex(t)


@pytest.mark.parametrize("modulus", [P, N], ids=["p", "n"])
def test_montgomery_multiplication_of_unreduced_inputs(host, modulus):
    """fe_mul takes any 256-bit a (to_mont relies on it) and b < m."""
    r_inv = pow(R, -1, modulus)
    bs = [0, 1, modulus - 1, R % modulus] + [b % modulus for b in carry_heavy(20)]
    for a in raw_values(modulus):
        b = rng.choice(bs)
        assert host.mont_mul(modulus, a, b) == a * b * r_inv % modulus


@pytest.mark.parametrize("modulus", [P, N], ids=["p", "n"])
def test_windowed_exponentiation(host, modulus):
    """fe_pow's windows: exponents with long and short runs of ones and zeros at either end."""
    exponents = [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 2**255, R - 1, modulus - 2, (P + 1) // 4, 0b1001 << 200,
                 sum(1 << b for b in range(0, 256, 3)), sum(1 << b for b in range(1, 256, 5))]
    exponents += carry_heavy(6) + [rng.getrandbits(256) for _ in range(6)]
    for e in exponents:
        x = rng.randrange(modulus)
        assert host.mont_pow(modulus, x * R % modulus, e) == pow(x, e, modulus) * R % modulus, hex(e)


def test_base_mult_matches_openssl(host):
    # 2^257 mod n makes the last table addition a doubling; 2^256 - n has no top digit.
    scalars = [1, 2, 3, 8, 9, 16, N - 1, N - 2, N - 8, 2**255, 2**255 - 1, 2**257 % N, 2**256 - N]
    scalars += [rng.randrange(1, N) for _ in range(40)]
    for k in scalars:
        numbers = ec.derive_private_key(k, ec.SECP256R1()).public_key().public_numbers()
        assert host.base_mult(k) == (numbers.x, numbers.y), hex(k)


def test_double_mult_matches_reference(host):
    q = G * rng.randrange(1, N)
    cases = [(0, 5), (5, 0), (1, 1), (N - 1, 1)] + [(rng.randrange(N), rng.randrange(N)) for _ in range(20)]
    # u2's width-5 NAF: negative digits, carries into bit 256, runs of ones and zeros
    naf_edges = [15, 16, 17, 31, 32, 33, N - 1, N, R - 1, R - 17, 2**255, 2**255 - 1, (R - 1) // 3,
                 sum(0b11111 << (6 * i) for i in range(42)), sum(0b10001 << (9 * i) for i in range(28))]
    cases += [(rng.randrange(N), u2) for u2 in naf_edges + carry_heavy(10)]
    for u1, u2 in cases:
        expected = G * u1 + q * u2
        assert host.double_mult(u1, u2, sec1(q)) == (expected.x(), expected.y())
    # u1·G == u2·Q (a doubling) and u1·G == -u2·Q (infinity)
    d = rng.randrange(2, N)
    qd = G * d
    u2 = rng.randrange(1, N)
    same = 2 * (G * (d * u2 % N))
    assert host.double_mult(d * u2 % N, u2, sec1(qd)) == (same.x(), same.y())
    assert host.double_mult(-d * u2 % N, u2, sec1(qd)) is None


def test_public_key_decoding(host):
    for _ in range(10):
        point = G * rng.randrange(1, N)
        for compressed in (False, True):
            assert host.decode_pubkey(sec1(point, compressed)) == (point.x(), point.y())
    x, y = _small_point()
    assert host.decode_pubkey(b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")) == (x, y)
    bad = [
        b"\x00" * 65,  # SEC1's encoding of the point at infinity
        b"\x05" + x.to_bytes(32, "big") + y.to_bytes(32, "big"),
        b"\x04" + x.to_bytes(32, "big") + (y ^ 1).to_bytes(32, "big"),  # off the curve
        b"\x04" + (x + P).to_bytes(32, "big") + y.to_bytes(32, "big"),  # x + p: right mod p, too big
        b"\x03" + (x + P).to_bytes(32, "big"),
        b"\x04" + x.to_bytes(32, "big") + P.to_bytes(32, "big"),
        b"\x02" + P.to_bytes(32, "big"),
        b"\x02" + _non_residue_x().to_bytes(32, "big"),  # no point has this x
    ]
    for key in bad:
        assert host.decode_pubkey(key) is None, key.hex()


def _rhs(x: int) -> int:
    return (x**3 - 3 * x + ecdsa.NIST256p.curve.b()) % P


def _is_square(c: int) -> bool:
    return pow(c, (P - 1) // 2, P) == 1


def _non_residue_x() -> int:
    return next(x for x in range(5, 1000) if not _is_square(_rhs(x)))


def _small_point() -> tuple[int, int]:
    """A point whose x is small enough that x + p still fits in 32 bytes."""
    x = next(x for x in range(1, 1000) if _is_square(_rhs(x)))
    return x, pow(_rhs(x), (P + 1) // 4, P)


def test_hmac_sha256_matches_hmac_module(host):
    key = bytes(range(32))
    for length in (0, 1, 31, 55, 56, 63, 64, 65, 119, 200):
        msg = bytes(rng.randrange(256) for _ in range(length))
        assert host.hmac(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_rfc6979_nonces(host):
    from ecdsa.rfc6979 import generate_k

    for v in ecdsa_vectors.rfc6979():
        assert host.rfc6979(v.d, v.digest)[0] == v.k
    for _ in range(5):
        d, digest = rng.randrange(1, N), rng.randbytes(32)
        # candidates after the first are what a rejected candidate (k >= n, r or s = 0) leads to
        expected = [generate_k(N, d, hashlib.sha256, digest, retry_gen=i) for i in range(3)]
        assert host.rfc6979(d, digest, 3) == expected
    digest_over_n = (N + 5).to_bytes(32, "big")  # bits2octets reduces the digest mod n
    assert host.rfc6979(3, digest_over_n)[0] == generate_k(N, 3, hashlib.sha256, digest_over_n)


def test_rfc6979_appendix_vectors(host):
    for v in ecdsa_vectors.rfc6979():
        assert host.sign(v.d, v.digest) == v.signature
        assert host.verify(v.public_key, v.digest, v.signature)


def test_sign_matches_ecdsa_package_and_openssl_verifies(host):
    from ecdsa.util import sigencode_string

    for _ in range(20):
        d = rng.randrange(1, N)
        digest = rng.randbytes(32)
        sig = host.sign(d, digest)
        key = ecdsa.SigningKey.from_secret_exponent(d, curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
        assert sig == key.sign_digest_deterministic(digest, hashfunc=hashlib.sha256, sigencode=sigencode_string)
        pub = sec1(G * d)
        assert openssl_verifies(pub, digest, sig)
        assert host.verify(pub, digest, sig)


def test_cavp_siggen(host):
    vectors = ecdsa_vectors.siggen()
    assert len(vectors) == 15
    for v in vectors:
        assert host.sign_with_k(v.d, v.digest, v.k) == v.signature
        assert host.verify(v.public_key, v.digest, v.signature)
        assert host.base_mult(v.d) == (v.qx, v.qy)


def test_cavp_sigver(host):
    vectors = ecdsa_vectors.sigver()
    assert len(vectors) == 15 and 0 < sum(v.valid for v in vectors) < 15
    for v in vectors:
        assert host.verify(v.public_key, v.digest, v.signature) == v.valid


def test_verify_accepts_what_openssl_accepts(host):
    for _ in range(10):
        private = ec.generate_private_key(ec.SECP256R1())
        pub = sec1(G * private.private_numbers().private_value, compressed=rng.random() < 0.5)
        digest = rng.randbytes(32)
        r, s = decode_dss_signature(private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        for sig_s in (s, N - s):  # ECDSA (and OpenSSL) accept both s and n - s
            sig = r.to_bytes(32, "big") + sig_s.to_bytes(32, "big")
            assert host.verify(pub, digest, sig)
        flipped = bytearray(digest)
        flipped[rng.randrange(32)] ^= 1 << rng.randrange(8)
        assert not host.verify(pub, bytes(flipped), sig)


def test_verify_rejects_out_of_range_values(host):
    v = ecdsa_vectors.rfc6979()[0]
    for r, s in [(0, v.s), (v.r, 0), (N, v.s), (v.r, N), (v.r + N, v.s), (v.r, v.s + N), (2**256 - 1, v.s)]:
        if r < 2**256 and s < 2**256:
            assert not host.verify(v.public_key, v.digest, r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    assert not host.verify(b"\x00" * 65, v.digest, v.signature)
    off_curve = v.public_key[:-1] + bytes([v.public_key[-1] ^ 1])
    assert not host.verify(off_curve, v.digest, v.signature)


def test_verify_when_x_of_r_exceeds_n(host):
    """x(R) in [n, p): r = x - n, so the check must also try r + n. Built without a private key:
    pick R, u1, u2 and solve for Q, the digest and s; OpenSSL is the judge."""
    x = next(x for x in range(N + 1, P) if _is_square(_rhs(x)))
    y = pow(_rhs(x), (P + 1) // 4, P)
    big_r = ecdsa.ellipticcurve.PointJacobi(ecdsa.NIST256p.curve, x, y, 1, N)
    u1, u2 = rng.randrange(1, N), rng.randrange(1, N)
    q = (big_r + G * (N - u1)) * pow(u2, -1, N)
    r = x - N
    s = r * pow(u2, -1, N) % N
    digest = (u1 * s % N).to_bytes(32, "big")
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert openssl_verifies(sec1(q), digest, sig)
    assert host.verify(sec1(q), digest, sig)
    assert host.verify(sec1(q, compressed=True), digest, sig)
