"""A manifest: the hashing parameters, what kind of artifact, and its items; and its root.

A manifest too large for a bundle is signed without its chunk roots, and if still too large, with
its items in a sidecar file beside the signature (docs/spec.md §2.2): see :meth:`Manifest.fitted`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, get_args

from ..errors import InvalidBundle, SentryError, VerificationError, reason
from ..hashing.merkle import leaf_hash, root_of_hashes
from ..hashing.params import HashParams
from . import sidecar as sidecars
from .ignore import DEFAULT_IGNORES, is_plain_entry_name
from .item import MAX_ITEMS, Item
from .lineage import TrainingData, parse_training_data

__all__ = [
    "ARTIFACT_TYPES",
    "IMAGE_PREDICATE_TYPE",
    "MAX_INLINE_BYTES",
    "PREDICATE_TYPE",
    "SIDECAR_SUFFIX",
    "SOURCE_TYPES",
    "ArtifactType",
    "Manifest",
    "Sidecar",
    "Source",
]

# Sentry's in-toto predicate type: a model manifest or a dataset claim (dataset.py).
PREDICATE_TYPE = "https://github.com/sentry-artifacts/sentry/manifest/v1"
# A model disk image (docs/spec.md §10.5): its verity root, image digest and manifest root. Named
# here beside Sentry's predicate so a verify of a model or dataset can tell it apart (manifest/claim.py).
IMAGE_PREDICATE_TYPE = "https://github.com/sentry-artifacts/sentry/disk-image/v1"
ArtifactType = Literal["model", "dataset"]
# What was signed: a directory or a file on disk, or a model held in memory (tensors only).
Source = Literal["directory", "file", "memory"]
ARTIFACT_TYPES: tuple[str, ...] = get_args(ArtifactType)
SOURCE_TYPES: tuple[str, ...] = get_args(Source)
# Item records a statement holds inline; beyond, chunk roots go, then the items go to a sidecar.
# Well under what a bundle can carry (signing/bundle.py MAX_PAYLOAD_BYTES: 47 MiB).
MAX_INLINE_BYTES = 32 << 20
SIDECAR_SUFFIX = ".manifest.jsonl"  # model.sig -> model.manifest.jsonl, beside it


@dataclass(frozen=True)
class Sidecar:
    """Where a manifest's items are listed instead of in the statement, and its size in bytes."""

    path: Path
    size: int


@dataclass
class Manifest:
    """A Sentry model (or the frame of a dataset claim): a :class:`~sentry.manifest.claim.Claim`."""

    predicate_type: ClassVar[str] = PREDICATE_TYPE
    mismatch: ClassVar[str] = "the signed manifest does not match the signed digest"

    params: HashParams
    items: list[Item]
    artifact_type: ArtifactType = "model"
    source: Source = "directory"
    ignore: tuple[str, ...] = ()  # signer's ignore patterns, applied again at verify time
    allow_symlinks: bool = False
    # Top-level names left out of a directory (docs/spec.md §2.1); a signature without the
    # field (made before it was recorded) gets today's defaults.
    default_ignores: tuple[str, ...] = DEFAULT_IGNORES
    sidecar: Sidecar | None = None  # the items are listed there, not in the statement
    training_data: tuple[TrainingData, ...] = ()  # a model's link to the datasets it was trained on
    _by_key: dict = field(default_factory=dict, init=False, repr=False)  # filled by __post_init__

    def __post_init__(self):
        self.items = sorted(self.items, key=lambda it: it.key)
        by_key = {}
        for it in self.items:
            if it.key in by_key:
                raise InvalidBundle(f"the manifest lists {it.label} twice")
            by_key[it.key] = it
        self._by_key = by_key

    def root(self) -> bytes:
        """RFC 9162 tree over the items' canonical records, in key order (docs/spec.md §2)."""
        return root_of_hashes([leaf_hash(it.record()) for it in self.items])

    def subject_digest(self) -> bytes:
        return self.root()

    def item_count(self) -> int:
        return len(self.items)

    def to_predicate(self, *, inline: bool = False) -> dict:
        """The statement's predicate; with a sidecar, the items are left to it unless ``inline``."""
        artifact = {
            "type": self.artifact_type,
            "source": self.source,
            "ignore": list(self.ignore),
            "allow_symlinks": self.allow_symlinks,
        }
        if self.source == "directory":  # only a directory walk has anything to leave out
            artifact["default_ignores"] = list(self.default_ignores)
        predicate = {
            "hashing": self.params.to_json(),
            "artifact": artifact,
            "items": [it.to_json() for it in self.items] if inline or self.sidecar is None else [],
        }
        if self.sidecar is not None and not inline:
            predicate["sidecar"] = {"name": self.sidecar.path.name, "size": self.sidecar.size}
        if self.training_data:
            predicate["training_data"] = [link.to_json() for link in self.training_data]
        return predicate

    def records_size(self) -> int:
        """Bytes of the items' records, one per line: what listing them costs, inline or in a sidecar."""
        return sum(len(it.record()) + 1 for it in self.items)

    def fitted(self) -> Manifest:
        """The manifest to sign: this one, or when its records exceed MAX_INLINE_BYTES, the same
        without chunk roots (hashing parameter max_chunks 1, recorded, so a verifier hashes alike:
        chunk roots only locate a change inside an item). Whether it then needs a sidecar is
        :meth:`needs_sidecar`."""
        if self.params.max_chunks == 1 or self.records_size() <= MAX_INLINE_BYTES:
            return self
        return dataclasses.replace(self, params=dataclasses.replace(self.params, max_chunks=1),
                                   items=[dataclasses.replace(it, chunks=()) for it in self.items])

    def needs_sidecar(self) -> bool:
        return self.records_size() > MAX_INLINE_BYTES

    def for_bundle(self, sig_path: Path, artifact, check_sidecar, write) -> Manifest:
        """The manifest to sign, checked as a verifier will check it: :meth:`fitted`, and if still
        too large for the bundle, with its items written (``write(path, lines)``) to a sidecar
        beside the signature (docs/spec.md §2.2), which never goes inside the ``artifact`` (a path;
        None: a model in memory) and, like every output, replaces only an earlier one of its kind
        (``check_sidecar(path)``: signing/outputs.py)."""
        manifest = self.fitted()
        what = artifact if artifact is not None else "the model"
        manifest.check_signable(what)
        if manifest.needs_sidecar():
            side_path = sidecars.beside(sig_path, SIDECAR_SUFFIX)
            if artifact is not None and sidecars.writes_inside(artifact, side_path):
                raise SentryError(f"the manifest of {what} ({len(manifest.items)} items) needs a sidecar beside "
                                  f"the signature, which then must not lie inside {what}")
            check_sidecar(side_path)
            written = sidecars.Writer()
            write(side_path, written.lines(manifest.items))
            manifest.sidecar = Sidecar(side_path, written.size)
        return manifest

    def check_signable(self, what) -> None:
        """SentryError, before anything is signed, if a verifier would refuse this manifest: its
        own checks (names, counts, every field) run on what would be signed."""
        try:
            Manifest.from_predicate(self.to_predicate(inline=True))
        except VerificationError as exc:
            raise SentryError(f"cannot sign {what}: a verifier would refuse it ({reason(exc)})") from None

    @classmethod
    def from_predicate(cls, predicate, sidecar_dir=None) -> Manifest:
        """Rebuild a manifest from a signed statement's predicate; every field is checked. The
        items of a predicate that names a sidecar are read from that file in ``sidecar_dir``
        (beside the signature), where one is expected."""

        def bad(why):
            return InvalidBundle(f"the signed manifest is invalid: {why}")

        if not isinstance(predicate, dict):
            raise bad("the predicate is not an object")
        try:
            params = HashParams.from_json(predicate.get("hashing"))
        except VerificationError:
            raise
        except Exception as exc:  # SentryError from parameter validation
            raise bad(str(exc)) from None
        artifact = predicate.get("artifact")
        if not isinstance(artifact, dict):
            raise bad("no artifact description")
        a_type, source = artifact.get("type"), artifact.get("source")
        ignore, symlinks = artifact.get("ignore", []), artifact.get("allow_symlinks", False)
        if a_type not in ARTIFACT_TYPES or source not in SOURCE_TYPES:
            raise bad("unknown artifact type or source")
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise bad("ignore patterns are not a list of strings")
        if not isinstance(symlinks, bool):
            raise bad("allow_symlinks is not a boolean")
        defaults = artifact.get("default_ignores", list(DEFAULT_IGNORES))
        if not isinstance(defaults, list) or not all(is_plain_entry_name(n) for n in defaults):
            raise bad("default_ignores is not a list of file names")
        items = predicate.get("items")
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise bad("items are not a list")
        links = parse_training_data(predicate, bad)
        if links and a_type != "model":
            raise bad("only a model names the data it was trained on")
        side = predicate.get("sidecar")
        if side is None:
            return cls(params, [Item.from_json(o) for o in items], a_type, source, tuple(ignore), symlinks,
                       tuple(defaults), training_data=links)
        if sidecar_dir is None or a_type != "model" or items:
            raise bad("a sidecar is named where none is expected")
        name, size = sidecars.signed_file(side, bad)
        path = Path(sidecar_dir) / name
        with sidecars.signed_lines(path, size, "manifest") as (lines, where):
            items = list(sidecars.item_records(lines, where))
        return cls(params, items, a_type, source, tuple(ignore), symlinks, tuple(defaults), Sidecar(path, size), links)

    def get(self, key):
        return self._by_key.get(key)
