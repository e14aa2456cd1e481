"""Audit a directory of signed artifacts (a model hub): every signature bundle under it is read,
all of their signatures are checked in one batch (`sentry.crypto.batch_verify`: the GPU when one
is usable), and then each artifact is checked against its signed manifest.

A bundle ``X.sig`` signs the artifact ``X`` beside it (the default place `sentry sign` writes).
One bad bundle or artifact fails its own entry, never the audit.
"""
from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .api import check_artifact, signed_manifest, verifier_for
from .errors import SentryError
from .io.posix import path_too_long_error, shown_path


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


def find_signatures(directory) -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        raise SentryError(f"{root} is not a directory")
    # Its own stack, not rglob (which recurses, so a deep directory tree ended in RecursionError);
    # like rglob, links to directories are not entered.
    found, stack = [], [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise path_too_long_error(directory) from None
            raise SentryError(f"cannot read directory {shown_path(directory)}: {exc.strerror}") from None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.name.endswith(".sig") and entry.is_file():
                found.append(Path(entry.path))
    return sorted(found)


def audit(directory, public_key, *, signatures_only: bool = False, device: str = "auto",
          progress=None) -> list[Entry]:
    """One Entry per bundle under ``directory``, in path order."""
    from .crypto import batch_verify
    from .signing import KeyVerifier, parse_statement, read_bundle

    verifier = verifier_for(public_key)
    if not isinstance(verifier, KeyVerifier) or verifier.public_key.curve.name != "secp256r1":
        raise SentryError("an audit checks ECDSA P-256 signatures; this public key is on another curve")
    entries, pending, digests, signatures = [], [], [], []
    for sig in find_signatures(directory):
        entry = Entry(sig, sig.with_name(sig.name.removesuffix(".sig")))
        entries.append(entry)
        try:
            bundle = read_bundle(sig)
            message, signature = verifier.signed_message(bundle)
        except SentryError as exc:
            entry.error = str(exc)
            continue
        pending.append((entry, bundle))
        digests.append(hashlib.sha256(message).digest())
        signatures.append(signature)
    valid = batch_verify(verifier.public_key, digests, signatures, encoding="der", device=device) if pending else []
    for (entry, bundle), ok in zip(pending, valid):
        try:
            if not ok:
                raise verifier.mismatch(bundle)
            signed = signed_manifest(parse_statement(bundle.payload), entry.signature)
            if signatures_only:
                entry.summary = f"signature valid ({len(signed.items)} items signed)"
            else:
                entry.summary = check_artifact(entry.artifact, signed, entry.signature, device=device,
                                               progress=progress).summary()
        except SentryError as exc:
            entry.error = str(exc)
    return entries
