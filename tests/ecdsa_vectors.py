"""ECDSA P-256 / SHA-256 test vectors shared by every backend's tests.

NIST CAVP (FIPS 186-3 SigGen and SigVer, from the `cryptography-vectors` package) and RFC 6979
appendix A.2.5 (typed in; k checked against the `ecdsa` package, r and s against OpenSSL's
evppkey_ecdsa_rfc6979.txt in cryptography-vectors).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = 2**256 - 2**224 + 2**192 + 2**96 - 1

RFC6979_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC6979_PUB = (
    0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6,
    0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299,
)
# message -> (k, r, s), SHA-256
RFC6979_SHA256 = {
    b"sample": (
        0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
        0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
        0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8,
    ),
    b"test": (
        0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
        0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
        0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083,
    ),
}


@dataclass(frozen=True)
class Vector:
    digest: bytes
    qx: int
    qy: int
    r: int
    s: int
    valid: bool = True
    d: int | None = None
    k: int | None = None

    @property
    def public_key(self) -> bytes:
        return b"\x04" + self.qx.to_bytes(32, "big") + self.qy.to_bytes(32, "big")

    @property
    def signature(self) -> bytes:
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big")


def _cavp_section(name: str) -> list[dict[str, str]]:
    vectors = pytest.importorskip("cryptography_vectors")
    path = Path(vectors.__file__).parent / "asymmetric" / "ECDSA" / "FIPS_186-3" / name
    records, current, inside = [], {}, False
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == "[P-256,SHA-256]"
            continue
        if not inside or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key == "Msg" and current:
            records.append(current)
            current = {}
        current[key] = value
    if current:
        records.append(current)
    return records


def _vector(rec: dict[str, str]) -> Vector:
    h = lambda key: int(rec[key], 16)  # noqa: E731
    return Vector(
        digest=hashlib.sha256(bytes.fromhex(rec["Msg"])).digest(),
        qx=h("Qx"), qy=h("Qy"), r=h("R"), s=h("S"),
        valid=rec.get("Result", "P").startswith("P"),
        d=h("d") if "d" in rec else None,
        k=h("k") if "k" in rec else None,
    )


def sigver() -> list[Vector]:
    """CAVP SigVer [P-256,SHA-256]: valid and invalid signatures (changed message, key, r, s)."""
    return [_vector(rec) for rec in _cavp_section("SigVer.rsp")]


def siggen() -> list[Vector]:
    """CAVP SigGen [P-256,SHA-256]: key, nonce and the resulting signature."""
    return [_vector(rec) for rec in _cavp_section("SigGen.txt")]


def rfc6979() -> list[Vector]:
    return [
        Vector(hashlib.sha256(msg).digest(), *RFC6979_PUB, r, s, d=RFC6979_KEY, k=k)
        for msg, (k, r, s) in RFC6979_SHA256.items()
    ]
