"""The in-toto Statement v1 that Sentry signs: one subject (the artifact's Merkle root, or the
model_signing digest for an OMS signature).

``parse_statement`` reads untrusted bytes and checks the envelope of the statement only; the
predicate is the manifest layer's to interpret.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sentry._json import StrictJSONError, describe, expect, loads_strict, type_name
from sentry.errors import InvalidBundle, InvalidInput, SentryError, VerificationError
from sentry.manifest.manifest import PREDICATE_TYPE
from sentry.signing.bundle import MAX_PAYLOAD_BYTES

__all__ = ["MAX_TYPE_URI", "STATEMENT_TYPE", "Statement", "make_statement", "parse_statement", "statement_of"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"

_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_TYPE_URI = 200


@dataclass(frozen=True)
class Statement:
    """A parsed statement: its single subject and its (uninterpreted) predicate."""

    subject_name: str
    digest_hex: str
    predicate_type: str
    predicate: dict[str, Any]


def make_statement(subject_name: str, root_hex: str, predicate: dict, *,
                   predicate_type: str = PREDICATE_TYPE) -> bytes:
    """The statement's JSON bytes: sorted keys, compact separators, ASCII only."""
    if not isinstance(subject_name, str) or not subject_name:
        raise InvalidInput("subject_name must be a non-empty string")
    if not isinstance(root_hex, str) or not _HEX64.fullmatch(root_hex):
        raise InvalidInput("root_hex must be 64 lowercase hex characters")
    if not isinstance(predicate, dict):
        raise InvalidInput("predicate must be a dict")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": root_hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    if len(payload) > MAX_PAYLOAD_BYTES:  # before anything is signed: the bundle could never verify
        hint = "" if predicate_type == PREDICATE_TYPE else "; Sentry's format lists this many files in a sidecar"
        raise SentryError(f"the statement to sign would be {len(payload)} bytes, more than a signature bundle "
                          f"carries ({MAX_PAYLOAD_BYTES} bytes){hint}")
    return payload


def statement_of(subject_name: str, claim) -> bytes:
    """The statement that signs ``claim`` (a :class:`~sentry.manifest.claim.Claim`) under ``subject_name``."""
    return make_statement(subject_name, claim.subject_digest().hex(), claim.to_predicate(),
                          predicate_type=claim.predicate_type)


def _bad(reason: str) -> VerificationError:
    return InvalidBundle(f"the signed statement is not a valid in-toto Statement v1: {reason}")


def parse_statement(payload: bytes) -> Statement:
    """Parse and check a signed in-toto Statement v1; VerificationError if it is malformed.

    Unknown top-level fields are ignored, as the in-toto spec asks of consumers.
    """
    try:
        doc = loads_strict(payload)
    except StrictJSONError as exc:
        raise _bad(str(exc)) from None
    if not isinstance(doc, dict):
        raise _bad(f"expected a JSON object, found {type_name(doc)}")
    if doc.get("_type") != STATEMENT_TYPE:
        if "_type" not in doc:
            raise _bad("it has no _type")
        raise _bad(f"_type is {describe(doc['_type'])}, expected {STATEMENT_TYPE!r}")
    subjects = expect(doc.get("subject"), list, "subject", _bad)
    if len(subjects) != 1:
        raise _bad(f"expected exactly one subject, found {len(subjects)}")
    subject = expect(subjects[0], dict, "the subject", _bad)
    name = expect(subject.get("name"), str, "the subject's name", _bad)
    digest = expect(subject.get("digest"), dict, "the subject's digest", _bad)
    if not all(isinstance(v, str) for v in digest.values()):
        raise _bad("every subject digest must be a string")
    digest_hex = digest.get("sha256")
    if digest_hex is None:
        raise _bad("the subject has no sha256 digest")
    if not _HEX64.fullmatch(digest_hex):
        raise _bad("the subject's sha256 digest is not 64 lowercase hex characters")
    predicate_type = expect(doc.get("predicateType"), str, "predicateType", _bad)
    if len(predicate_type) > MAX_TYPE_URI:  # it is quoted in messages: keep them one short sentence
        raise _bad(f"predicateType is longer than {MAX_TYPE_URI} characters")
    predicate = expect(doc.get("predicate"), dict, "predicate", _bad)
    return Statement(name, digest_hex, predicate_type, predicate)
