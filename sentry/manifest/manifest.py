"""A manifest: the hashing parameters, what kind of artifact, and its items; and its root."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import VerificationError
from ..hashing.merkle import leaf_hash, root_of_hashes
from ..hashing.params import HashParams
from .ignore import DEFAULT_IGNORES, is_plain_entry_name
from .item import Item

# What was signed: a directory or a file on disk, or a model held in memory (tensors only).
ARTIFACT_TYPES = ("model", "dataset")
SOURCE_TYPES = ("directory", "file", "memory")
MAX_ITEMS = 10_000_000


@dataclass
class Manifest:
    params: HashParams
    items: list[Item]
    artifact_type: str = "model"  # model | dataset
    source: str = "directory"  # directory | file | memory
    ignore: tuple[str, ...] = ()  # signer's ignore patterns, applied again at verify time
    allow_symlinks: bool = False
    # Top-level names left out of a directory (docs/spec.md §2.1); a signature without the
    # field (made before it was recorded) gets today's defaults.
    default_ignores: tuple[str, ...] = DEFAULT_IGNORES
    _by_key: dict = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.items = sorted(self.items, key=lambda it: it.key)
        by_key = {}
        for it in self.items:
            if it.key in by_key:
                raise VerificationError(f"the manifest lists {it.label} twice")
            by_key[it.key] = it
        self._by_key = by_key

    def root(self) -> bytes:
        """RFC 9162 tree over the items' canonical records, in key order (docs/spec.md §2)."""
        return root_of_hashes([leaf_hash(it.record()) for it in self.items])

    def to_predicate(self) -> dict:
        artifact = {
            "type": self.artifact_type,
            "source": self.source,
            "ignore": list(self.ignore),
            "allow_symlinks": self.allow_symlinks,
        }
        if self.source == "directory":  # only a directory walk has anything to leave out
            artifact["default_ignores"] = list(self.default_ignores)
        return {"hashing": self.params.to_json(), "artifact": artifact, "items": [it.to_json() for it in self.items]}

    @classmethod
    def from_predicate(cls, predicate) -> "Manifest":
        """Rebuild a manifest from a signed statement's predicate; every field is checked."""

        def bad(why):
            return VerificationError(f"the signed manifest is invalid: {why}")

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
        return cls(params, [Item.from_json(o) for o in items], a_type, source, tuple(ignore), symlinks, tuple(defaults))

    def get(self, key):
        return self._by_key.get(key)
