"""Strict DER for ECDSA P-256 signatures: SEQUENCE { INTEGER r, INTEGER s }.

Only the one canonical encoding of each (r, s) with 0 < r, s < n is accepted: short-form lengths,
minimal positive INTEGERs, nothing after the sequence. Anything else would let one signature be
written several ways (malleability) or hide bytes in it.
"""
from __future__ import annotations

__all__ = ["N", "decode_signature", "encode_signature"]

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # room for a 0 sign byte
    if len(body) > 1 and body[0] == 0 and body[1] < 0x80:
        body = body[1:]
    return b"\x02" + bytes([len(body)]) + body


def encode_signature(r: int, s: int) -> bytes:
    body = _integer(r) + _integer(s)
    return b"\x30" + bytes([len(body)]) + body


def _read_integer(data: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(data) or data[pos] != 0x02:
        raise ValueError("expected an INTEGER")
    length = data[pos + 1]
    body = data[pos + 2: pos + 2 + length]
    if not 1 <= length <= 33 or len(body) != length:
        raise ValueError("bad INTEGER length")
    if body[0] & 0x80:
        raise ValueError("negative INTEGER")
    if length > 1 and body[0] == 0 and body[1] < 0x80:
        raise ValueError("INTEGER not minimally encoded")
    value = int.from_bytes(body, "big")
    if not 0 < value < N:
        raise ValueError("INTEGER out of range (0 < value < n)")
    return value, pos + 2 + length


def decode_signature(data: bytes) -> tuple[int, int]:
    """(r, s) of a strict DER signature; ValueError for anything else."""
    data = bytes(data)
    if len(data) < 2 or data[0] != 0x30 or data[1] >= 0x80 or data[1] != len(data) - 2:
        raise ValueError("not a DER SEQUENCE of the right length")
    r, pos = _read_integer(data, 2)
    s, pos = _read_integer(data, pos)
    if pos != len(data):
        raise ValueError("trailing bytes inside the SEQUENCE")
    return r, s
