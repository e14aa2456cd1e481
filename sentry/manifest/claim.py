"""What a signature signs: one :class:`Claim` protocol for every predicate Sentry signs and reads.

A claim is a model manifest (:class:`~sentry.manifest.manifest.Manifest`), a dataset claim
(:class:`~sentry.manifest.dataset.DatasetClaim`: the same predicate type, told apart by its
``artifact.type``) or a model_signing manifest (:class:`~sentry.manifest.oms.OmsManifest`).
Signing one is one path (``Signer.sign_claim``: its statement, then the bundle); reading one is
one path (:func:`read_claim`: predicate type -> class -> predicate checked -> subject digest
checked), whoever reads it: verify, audit, dataset links.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, NoReturn, Protocol, TypeVar, runtime_checkable

from ..errors import InvalidBundle, Remedy, SentryError, UnsupportedFormat
from . import oms
from .dataset import DatasetClaim
from .manifest import IMAGE_PREDICATE_TYPE, PREDICATE_TYPE, Manifest

__all__ = ["CLAIM_TYPES", "Claim", "checked_claim", "claim_class", "read_claim"]


@runtime_checkable
class Claim(Protocol):
    """A signed statement's predicate, typed: its subject digest is what the statement names."""

    predicate_type: ClassVar[str]
    mismatch: ClassVar[str]  # the sentence for a predicate whose digest is not the subject's

    def subject_digest(self) -> bytes: ...

    def item_count(self) -> int: ...

    def to_predicate(self) -> dict: ...

    @classmethod
    def from_predicate(cls, predicate: dict, sidecar_dir=None) -> Claim: ...


# Predicate type -> the claim class, or for Sentry's type: signed artifact type -> class.
_SENTRY_KINDS: dict[str, type] = {"model": Manifest, "dataset": DatasetClaim}
CLAIM_TYPES: dict[str, Any] = {PREDICATE_TYPE: _SENTRY_KINDS, oms.PREDICATE_TYPE: oms.OmsManifest}


def claim_class(predicate_type: str, predicate: dict, signature: Path, artifact_type: str | None = None) -> type:
    """The class that reads this predicate; before it is parsed, a usage error if it signs the
    other kind of artifact than ``artifact_type`` ("model", "dataset"; None accepts any: an
    audit), since a dataset read as a model (or back) would otherwise read as a corrupt one."""
    found = CLAIM_TYPES.get(predicate_type)
    if predicate_type == IMAGE_PREDICATE_TYPE:
        raise UnsupportedFormat(f"{signature} signs a disk image, not a model or dataset",
                                remedy=Remedy("image", python="verify it with sentry.image.verify_signed_image"))
    if found is None:
        raise UnsupportedFormat(f"{signature} is not a Sentry signature (predicate {predicate_type!r})")
    if found is oms.OmsManifest:
        if artifact_type == "dataset":
            wrong_kind(signature, "model_signing model")
        return found
    artifact = predicate.get("artifact")
    signed_type = artifact.get("type") if isinstance(artifact, dict) else None
    signed_type = signed_type if isinstance(signed_type, str) else None  # hostile: any JSON value
    if artifact_type is not None and signed_type is not None and signed_type in found and signed_type != artifact_type:
        wrong_kind(signature, signed_type)
    return found["dataset"] if signed_type == "dataset" else found["model"]


def wrong_kind(signature: Path, signed_type: str) -> NoReturn:
    """A signature used for the other kind of artifact: a usage error that says how to verify it."""
    if signed_type == "dataset":
        raise SentryError(f"{signature} signs a dataset, not a model",
                          remedy=Remedy("dataset", "True", python="verify it with verify_dataset"))
    raise SentryError(f"{signature} signs a {signed_type}, not a dataset",
                      remedy=Remedy("dataset", "False", python="verify it with verify_model"))


C = TypeVar("C", bound=Claim)


def checked_claim(cls: type[C], statement, signature: Path) -> C:
    """``statement``'s predicate read by ``cls`` (a sidecar it names is read beside the signature)
    and checked to be what the statement's subject digest names."""
    claim: C = cls.from_predicate(statement.predicate, sidecar_dir=Path(signature).parent)  # type: ignore[assignment]
    if claim.subject_digest().hex() != statement.digest_hex:
        raise InvalidBundle(f"{signature}: {cls.mismatch}")
    return claim


def read_claim(statement, signature: Path, artifact_type: str | None = None) -> Claim:
    """What a verified statement (a :class:`~sentry.signing.statement.Statement`) signs."""
    cls = claim_class(statement.predicate_type, statement.predicate, signature, artifact_type)
    return checked_claim(cls, statement, signature)
