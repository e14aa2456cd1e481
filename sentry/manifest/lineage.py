"""The data a model was trained on, as a model signature records it (docs/spec.md §3.1).

The predicate field ``training_data`` is a list of in-toto ResourceDescriptors, one per dataset:
the dataset's name, its root as the digest, and the SHA-256 of the dataset's signature bundle.
The field is read as hostile input: exactly these keys, these types, these spellings.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .._json import describe
from ..errors import InvalidBundle, Remedy, SentryError, VerificationError

__all__ = [
    "MAX_DATASETS",
    "MAX_DATASET_NAME",
    "TrainingData",
    "checked_links",
    "is_dataset_name",
    "parse_training_data",
]

MAX_DATASETS = 16  # descriptors in one model signature
MAX_DATASET_NAME = 255
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TrainingData:
    """One dataset a model was trained on: its name, its signed root and its signature's SHA-256."""

    name: str
    root: str  # the dataset root (docs/spec.md §6.1), 64 lowercase hex digits
    signature_sha256: str  # SHA-256 of the dataset's signature bundle file, 64 lowercase hex digits

    def to_json(self) -> dict:
        return {"name": self.name, "digest": {"sha256": self.root},
                "annotations": {"signature_sha256": self.signature_sha256}}

    @classmethod
    def from_json(cls, obj) -> TrainingData:
        """A descriptor of a signed predicate; VerificationError unless it is exactly well formed."""

        def bad(why):
            return InvalidBundle(f"the signed training data is invalid: {why}")

        if not isinstance(obj, dict) or set(obj) != {"name", "digest", "annotations"}:
            raise bad("a descriptor must be an object with exactly name, digest and annotations")
        name, digest, notes = obj["name"], obj["digest"], obj["annotations"]
        if not is_dataset_name(name):
            raise bad(f"the name {describe(name)} is not a printable string of 1 to {MAX_DATASET_NAME} characters")
        if not isinstance(digest, dict) or set(digest) != {"sha256"} or not _is_hex64(digest["sha256"]):
            raise bad(f"the digest of {name} is not one sha256 of 64 lowercase hex digits")
        if not (isinstance(notes, dict) and set(notes) == {"signature_sha256"}
                and _is_hex64(notes["signature_sha256"])):
            raise bad(f"the annotations of {name} are not one signature_sha256 of 64 lowercase hex digits")
        return cls(name, digest["sha256"], notes["signature_sha256"])


def is_dataset_name(name) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_DATASET_NAME and name.isprintable()


def _is_hex64(value) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def parse_training_data(predicate: dict, bad) -> tuple[TrainingData, ...]:
    """The predicate's ``training_data`` list (absent: no link; ``null`` or ``[]`` is refused);
    ``bad(why)`` makes the error."""
    if "training_data" not in predicate:
        return ()
    value = predicate["training_data"]
    if not isinstance(value, list) or not 0 < len(value) <= MAX_DATASETS:
        raise bad(f"training_data is not a list of 1 to {MAX_DATASETS} descriptors")
    links = tuple(TrainingData.from_json(obj) for obj in value)
    if len({link.root for link in links}) != len(links):
        raise bad("training_data names one dataset root twice")
    return links


def checked_links(given, can_verify: bool, link) -> tuple[TrainingData, ...]:
    """The links a model signature will record for ``training_data`` (a dataset signature path, a
    :class:`TrainingData`, or a list of them), checked as a verifier will read them; a path is
    verified first by ``link(path)``, which needs the dataset owner's key (``can_verify``)."""
    if given is None:
        return ()
    entries = list(given) if isinstance(given, (list, tuple)) else [given]
    if not 0 < len(entries) <= MAX_DATASETS:
        raise SentryError(f"training_data names 1 to {MAX_DATASETS} datasets")
    links = []
    for entry in entries:
        if isinstance(entry, TrainingData):
            try:
                links.append(TrainingData.from_json(entry.to_json()))
            except VerificationError as exc:
                raise SentryError(f"cannot sign: {exc}") from None
        elif isinstance(entry, (str, os.PathLike)):
            if not can_verify:
                raise SentryError(f"linking the dataset signature {entry} needs the dataset owner's public key "
                                  f"to verify it first", remedy=Remedy("dataset_public_key", "PATH"))
            links.append(link(entry))
        else:
            raise SentryError("training_data is a dataset signature path, a TrainingData, or a list of them")
    if len({item.root for item in links}) != len(links):
        raise SentryError("training_data names one dataset root twice")
    return tuple(links)
