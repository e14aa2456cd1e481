"""Audit a directory of signed artifacts (a model hub): every signature bundle under it is read,
all of their signatures are checked in one batch (`sentry.crypto.batch_verify`: the GPU when one
is usable), and then each artifact is checked against its signed manifest.

A bundle ``X.sig`` signs the artifact ``X`` beside it (the default place `sentry sign` writes),
whatever it signs: a Sentry model, a Sentry dataset (with its sidecar beside the bundle) or a
model_signing (OMS) model, checked as `sentry verify` checks it. One bad bundle or artifact fails
its own entry, never the audit; so does a directory of the hub that cannot be read.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .api import check_signed, signed_claim, verifier_for
from .errors import SentryError, reason
from .io.posix import path_too_long_error, shown_path

__all__ = ["Entry", "audit", "find_signatures"]


@dataclass
class Entry:
    signature: Path
    artifact: Path
    error: str | None = None
    summary: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {"signature": str(self.signature), "artifact": str(self.artifact), "ok": self.ok,
                "error": self.error, "summary": self.summary}


def find_signatures(directory) -> tuple[list[Path], list[Entry]]:
    """The bundles (``*.sig`` regular files) under ``directory``, sorted, and a failed entry for
    each directory below it that could not be read (its bundles would go unchecked). Walked
    without recursion: a hostile hub may nest directories thousands deep."""
    root = Path(directory)
    if not root.is_dir():
        raise SentryError(f"{root} is not a directory")
    found, unreadable, todo = [], [], [str(root)]
    while todo:
        current = todo.pop()
        try:
            with os.scandir(current) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
                    elif e.name.endswith(".sig") and e.is_file():
                        found.append(Path(e.path))
        except OSError as exc:
            why = str(path_too_long_error(current)) if exc.errno == errno.ENAMETOOLONG else \
                f"cannot read directory {shown_path(current)}: {exc.strerror}"
            unreadable.append(Entry(Path(current), Path(current), why))
    return sorted(found), unreadable


def audit(directory, public_key, *, signatures_only: bool = False, device: str = "auto",
          progress=None) -> list[Entry]:
    """One Entry per bundle under ``directory`` (and per unreadable directory), in path order."""
    from .crypto import batch_verify
    from .signing import KeyVerifier, parse_statement, read_bundle

    verifier = verifier_for(public_key)
    if not isinstance(verifier, KeyVerifier) or verifier.public_key.curve.name != "secp256r1":
        raise SentryError("an audit checks ECDSA P-256 signatures; this public key is on another curve")
    found, entries = find_signatures(directory)
    pending, digests, signatures = [], [], []
    for sig in found:
        entry = Entry(sig, sig.with_name(sig.name.removesuffix(".sig")))
        entries.append(entry)
        with _failing(entry):
            bundle = read_bundle(sig)
            message, signature = verifier.signed_message(bundle)
            pending.append((entry, bundle))
            digests.append(hashlib.sha256(message).digest())
            signatures.append(signature)
    valid = batch_verify(verifier.public_key, digests, signatures, encoding="der", device=device) if pending else []
    for (entry, bundle), ok in zip(pending, valid):
        with _failing(entry):
            if not ok:
                raise verifier.mismatch(bundle)
            signed = signed_claim(parse_statement(bundle.payload), entry.signature)
            if signatures_only:
                entry.summary = f"signature valid ({signed.item_count()} items signed)"
            else:
                entry.summary = check_signed(entry.artifact, signed, entry.signature, device=device,
                                             progress=progress).summary()
    return sorted(entries, key=lambda e: e.signature)


@contextlib.contextmanager
def _failing(entry: Entry):
    """Record what goes wrong with one entry as its error, and go on with the others. Not only
    SentryError: whatever else a hostile artifact provokes deeper down (a bug, or the system
    running short) must fail its own entry, not end the audit; its type is named."""
    try:
        yield
    except SentryError as exc:
        entry.error = str(exc)
    except Exception as exc:
        entry.error = f"cannot be checked ({type(exc).__name__}): {reason(exc)}"
