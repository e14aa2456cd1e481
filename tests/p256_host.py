"""The kernels' P-256 code built for the CPU (g++, tests/native/p256_harness.cpp), via ctypes.

Built once per test session; tests skip when there is no C++ compiler.
"""
from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
HARNESS = Path(__file__).resolve().parent / "native" / "p256_harness.cpp"
TABLE_BYTES = 65 * 8 * 64

P = 2**256 - 2**224 + 2**192 + 2**96 - 1
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
OPS = {"add": 0, "sub": 1, "mul": 2, "inv": 3, "neg": 4, "mont": 5, "sqr": 6}


def b32(x: int) -> bytes:
    return x.to_bytes(32, "big")


RAW_OPS = {"add": 0, "sub": 1, "mul": 2, "sqr": 3}


def limbs(x: int, count: int = 8):
    return (ctypes.c_uint32 * count)(*((x >> (32 * i)) & 0xFFFFFFFF for i in range(count)))


def from_limbs(words) -> int:
    return sum(w << (32 * i) for i, w in enumerate(words))


class HostP256:
    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        self.table = ctypes.create_string_buffer(TABLE_BYTES)
        lib.p256h_build_table(self.table)

    def field(self, op: str, modulus: int, a: int, b: int = 0) -> int:
        out = ctypes.create_string_buffer(32)
        self.lib.p256h_field(OPS[op], int(modulus == N), b32(a), b32(b), out)
        return int.from_bytes(out.raw, "big")

    def raw(self, op: str, a: int, b: int) -> int:
        """a + b (257 bits), a - b mod 2^256 with the borrow as bit 256, a·b or a^2 (512 bits)."""
        out = (ctypes.c_uint32 * 16)()
        self.lib.p256h_raw(RAW_OPS[op], limbs(a), limbs(b), out)
        return from_limbs(out[:9] if op in ("add", "sub") else out)

    def redc(self, modulus: int, t: int) -> int:
        out = (ctypes.c_uint32 * 8)()
        self.lib.p256h_redc(int(modulus == N), limbs(t, 16), out)
        return from_limbs(out)

    def mont_mul(self, modulus: int, a: int, b: int) -> int:
        out = (ctypes.c_uint32 * 8)()
        self.lib.p256h_mont(0, int(modulus == N), limbs(a), limbs(b), out)
        return from_limbs(out)

    def mont_pow(self, modulus: int, a: int, e: int) -> int:
        out = (ctypes.c_uint32 * 8)()
        self.lib.p256h_mont(1, int(modulus == N), limbs(a), limbs(e), out)
        return from_limbs(out)

    def _point(self, fn, *args) -> tuple[int, int] | bool | None:
        out = ctypes.create_string_buffer(64)
        rc = fn(*args, out)
        if rc != 1:
            return None if rc == 0 else False
        return int.from_bytes(out.raw[:32], "big"), int.from_bytes(out.raw[32:], "big")

    def base_mult(self, k: int):
        return self._point(self.lib.p256h_base_mult, b32(k), self.table)

    def double_mult(self, u1: int, u2: int, pub: bytes):
        return self._point(self.lib.p256h_double_mult, b32(u1), b32(u2), sec1_buffer(pub), self.table)

    def decode_pubkey(self, pub: bytes):
        return self._point(self.lib.p256h_decode_pubkey, sec1_buffer(pub)) or None

    def sign_with_k(self, d: int, digest: bytes, k: int) -> bytes | None:
        sig = ctypes.create_string_buffer(64)
        ok = self.lib.p256h_sign_with_k(b32(d), digest, b32(k), self.table, sig)
        return sig.raw if ok else None

    def sign(self, d: int, digest: bytes) -> bytes:
        sig = ctypes.create_string_buffer(64)
        self.lib.p256h_sign(b32(d), digest, self.table, sig)
        return sig.raw

    def verify(self, pub: bytes, digest: bytes, sig: bytes) -> bool:
        return bool(self.lib.p256h_verify(sec1_buffer(pub), digest, sig, self.table))

    def rfc6979(self, d: int, digest: bytes, count: int = 1) -> list[int]:
        out = ctypes.create_string_buffer(32 * count)
        self.lib.p256h_rfc6979(b32(d), digest, count, out)
        return [int.from_bytes(out.raw[32 * i: 32 * i + 32], "big") for i in range(count)]

    def hmac(self, key: bytes, msg: bytes) -> bytes:
        out = ctypes.create_string_buffer(32)
        self.lib.p256h_hmac(key, msg, ctypes.c_size_t(len(msg)), out)
        return out.raw


def sec1_buffer(pub: bytes) -> bytes:
    """The kernels' 65-byte key slot: a compressed key is padded with zeros."""
    return bytes(pub).ljust(65, b"\0")[:65]


@functools.cache
def host_p256() -> HostP256:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the kernels' host code")
    lib_path = Path(tempfile.mkdtemp(prefix="sentry-p256-")) / "p256h.so"
    subprocess.run([cxx, "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{KERNELS}", "-o", str(lib_path),
                    str(HARNESS)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    for name in ("p256h_base_mult", "p256h_double_mult", "p256h_decode_pubkey", "p256h_sign_with_k",
                 "p256h_verify"):
        getattr(lib, name).restype = ctypes.c_int
    return HostP256(lib)
