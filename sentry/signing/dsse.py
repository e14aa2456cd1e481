"""DSSE v1 pre-authentication encoding: the exact bytes a DSSE signature covers.

Spec: https://github.com/secure-systems-lab/dsse/blob/v1.0.0/protocol.md
    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
where LEN is the ASCII decimal byte length, without leading zeros.
"""
from __future__ import annotations

__all__ = ["PAYLOAD_TYPE", "pae"]

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding of ``payload`` of type ``payload_type``."""
    type_bytes = payload_type.encode("utf-8")
    payload = bytes(payload)
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)
