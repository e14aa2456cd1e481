"""The OpenSSF model signing (OMS) predicate v1.0, by model_signing's rules (model_signing 1.x).

A model is listed file by file (``files``: one plain SHA-256 per file) or in fixed-size slices
(``shards``: one SHA-256 per ``[start, end)`` slice, named ``path:start:end``; empty files have
none). Names are POSIX paths relative to the model directory; a model that is a single file is
named ``.``. The subject digest is SHA-256 over the resources' raw digests, concatenated in the
order the predicate lists them; model_signing lists them sorted by path components (then start,
end), and so does Sentry. Top-level ``.git``, ``.gitattributes``, ``.github`` and ``.gitignore``
are left out unless turned off (``--no-ignore-git-paths`` there, ``--no-default-ignores`` here),
and so is every path in ``ignore_paths`` (with everything below it).
"""
from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from ..errors import InvalidBundle, SentryError, UnsupportedFormat, VerificationError
from ..io.posix import FileSource
from .compare import Report, compare_digests
from .ignore import IgnoreRules
from .manifest import MAX_ITEMS
from .sources import files_of

__all__ = ["GIT_PATHS", "METHODS", "PREDICATE_TYPE", "OmsManifest", "manifest_for_model", "verify_model"]

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
METHODS = ("files", "shards")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_READ = 1 << 20


@dataclass(frozen=True)
class OmsManifest:
    """A model_signing (OMS) manifest: a :class:`~sentry.manifest.claim.Claim`."""

    predicate_type: ClassVar[str] = PREDICATE_TYPE
    mismatch: ClassVar[str] = "the signed model_signing resources do not match the signed digest"

    method: str  # files | shards
    resources: dict[str, bytes]  # name -> SHA-256, in the signed order
    ignore_paths: tuple[str, ...] = ()
    allow_symlinks: bool = False
    shard_size: int | None = None  # shards only

    @property
    def kind(self) -> str:
        return "file" if self.method == "files" else "shard"

    @property
    def algorithm(self) -> str:
        return "sha256" if self.method == "files" else f"sha256-sharded-{self.shard_size}"

    def digest(self) -> bytes:
        """The subject digest: SHA-256 over the resources' digests in order."""
        return hashlib.sha256(b"".join(self.resources.values())).digest()

    def subject_digest(self) -> bytes:
        return self.digest()

    def item_count(self) -> int:
        return len(self.resources)

    def to_predicate(self) -> dict:
        serialization = {"method": self.method, "hash_type": "sha256", "allow_symlinks": self.allow_symlinks}
        if self.shard_size is not None:
            serialization["shard_size"] = self.shard_size
        if self.ignore_paths:
            serialization["ignore_paths"] = list(self.ignore_paths)
        resources = [{"name": n, "algorithm": self.algorithm, "digest": d.hex()} for n, d in self.resources.items()]
        return {"serialization": serialization, "resources": resources}

    @classmethod
    def from_statement(cls, digest_hex: str, predicate: dict) -> OmsManifest:
        """Check a signed (otherwise untrusted) OMS predicate against the subject digest."""
        manifest = cls.from_predicate(predicate)
        if manifest.digest().hex() != digest_hex:
            raise InvalidBundle(cls.mismatch)
        return manifest

    @classmethod
    def from_predicate(cls, predicate: dict, sidecar_dir=None) -> OmsManifest:
        """Check a signed (otherwise untrusted) OMS predicate; it names no sidecar."""

        def bad(why: str) -> VerificationError:
            return InvalidBundle(f"the signed model_signing manifest is invalid: {why}")

        ser = predicate.get("serialization")
        if not isinstance(ser, dict):
            raise bad("it has no serialization object")
        method, hash_type = ser.get("method"), ser.get("hash_type")
        if method not in METHODS:
            raise bad(f"unknown serialization method {str(method)[:40]!r}")
        if hash_type != "sha256":
            raise UnsupportedFormat(f"the model_signing signature uses the hash {str(hash_type)[:40]!r}; Sentry verifies sha256 only")
        symlinks = ser.get("allow_symlinks", False)
        ignore = ser.get("ignore_paths", [])
        if not isinstance(symlinks, bool):
            raise bad("allow_symlinks is not a boolean")
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise bad("ignore_paths is not a list of strings")
        shard_size = None
        if method == "shards":
            # model_signing writes it through a protobuf Struct, so 1000000000 arrives as 1000000000.0.
            shard_size = ser.get("shard_size")
            if type(shard_size) is float and shard_size.is_integer():
                shard_size = int(shard_size)
            if type(shard_size) is not int or shard_size <= 0:
                raise bad("shard_size is not a positive integer")
        manifest = cls(method, {}, tuple(ignore), symlinks, shard_size)
        items = predicate.get("resources")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
            raise bad("resources is not a non-empty list")
        for item in items:
            if not isinstance(item, dict):
                raise bad("a resource is not an object")
            name, digest = item.get("name"), item.get("digest")
            if not isinstance(name, str) or not name:
                raise bad("a resource has no name")
            if item.get("algorithm") != manifest.algorithm:
                raise bad(f"resource {name[:80]!r} is not hashed with {manifest.algorithm}")
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise bad(f"resource {name[:80]!r} has a digest that is not 64 lowercase hex digits")
            if name in manifest.resources:
                raise bad(f"resource {name[:80]!r} is listed twice")
            manifest.resources[name] = bytes.fromhex(digest)
        return manifest


def _under(relpath: str, paths) -> bool:
    """model_signing's rule: the path is one of ``paths`` or lies below one."""
    parts = PurePosixPath(relpath).parts
    return any(parts[: len(p)] == p for p in paths)


def _ignored_parts(ignore_paths) -> list[tuple[str, ...]]:
    """Relative paths as components; absolute ones and ones with '..' can match nothing inside."""
    out = []
    for p in ignore_paths:
        parts = PurePosixPath(p).parts
        if not PurePosixPath(p).is_absolute() and ".." not in parts:
            out.append(parts)
    return out


def _model_files(path: Path, ignore_paths, rules: IgnoreRules, allow_symlinks, exclude) -> list[tuple[str, Path]]:
    """The files model_signing would hash: ``ignore_paths`` (with everything below them) and
    what ``rules`` ignore are left out, and all of it listed in ``rules.found``."""
    ignored = _ignored_parts(ignore_paths)

    def skip(rel: str, is_dir: bool) -> bool:
        if _under(rel, ignored):
            rules.found.append(rel + "/" if is_dir else rel)
            return True
        return rules(rel, is_dir)

    source, files = files_of(path, skip, allow_symlinks, exclude)
    if source == "file":
        return [(".", files[0][1])]
    return files


def _sort_key(name: str, start: int = 0, end: int = 0):
    return PurePosixPath(name).parts, start, end


def _hash_range(src: FileSource, start: int, end: int, progress) -> bytes:
    h = hashlib.sha256()
    for offset in range(start, end, _READ):
        length = min(_READ, end - offset)
        h.update(src.read(offset, length))
        if progress is not None:
            progress(length)
    return h.digest()


def _hash_file(name: str, real: Path, shard_size: int | None, progress) -> list[tuple[tuple, str, bytes]]:
    """(sort key, resource name, SHA-256) for the file, or for each of its shards."""
    with FileSource(real, follow_symlinks=True) as src:
        if shard_size is None:
            spans: list[tuple[int, int, str | None]] = [(0, src.size, name)]
        else:
            spans = [(s, min(s + shard_size, src.size), None) for s in range(0, src.size, shard_size)]
        out = [(_sort_key(name, start, end), label or f"{name}:{start}:{end}", _hash_range(src, start, end, progress))
               for start, end, label in spans]
        src.check_unchanged()
    return out


def _hash_files(files, shard_size: int | None, progress) -> dict[str, bytes]:
    """{resource name: SHA-256} in model_signing's order; ``shard_size`` None hashes whole files."""
    if hasattr(progress, "set_total"):
        progress.set_total(sum(os.stat(real).st_size for _, real in files))
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda f: _hash_file(f[0], f[1], shard_size, progress), files)
        entries = sorted(e for per_file in results for e in per_file)
    return {name: digest for _, name, digest in entries}


def manifest_for_model(path, *, ignore=(), default_ignores=True, allow_symlinks=False, exclude=(),
                       progress=None) -> OmsManifest:
    """What ``sentry sign --format oms`` signs: files serialization, SHA-256.

    ``ignore`` patterns are Sentry's globs; model_signing reads ``ignore_paths`` literally, so
    the topmost paths they match now (and a signature inside the directory) are recorded
    instead, beside the git paths model_signing records (none with ``default_ignores=False``,
    model_signing's ``--no-ignore-git-paths``).
    """
    path = Path(path)
    git = GIT_PATHS if default_ignores else ()
    patterns = IgnoreRules(ignore, ())
    source, files = files_of(path, lambda rel, is_dir: rel in git or patterns(rel, is_dir), allow_symlinks, exclude)
    if not files:
        raise SentryError(f"{path} holds no files to hash")
    recorded = set(git)
    if source == "file":
        files = [(".", files[0][1])]
    else:
        recorded.update(p.rstrip("/") for p in patterns.found)  # a skipped directory is not entered: topmost
        root = os.path.abspath(path)
        for p in exclude:
            rel = os.path.relpath(os.path.abspath(p), root)
            if not rel.startswith(".."):
                recorded.add(Path(rel).as_posix())
    return OmsManifest("files", _hash_files(files, None, progress), tuple(sorted(recorded)), allow_symlinks)


def verify_model(signed: OmsManifest, path, *, patterns=(), default_ignores=True, allow_symlinks=False, exclude=(),
                 progress=None) -> Report:
    """Hash ``path`` the way ``signed`` was made and compare, resource by resource. As
    model_signing does, the signed ``ignore_paths`` are left out, and the top-level git paths
    too unless ``default_ignores`` is False; the report lists what was left out."""
    rules = IgnoreRules(patterns, GIT_PATHS if default_ignores else ())
    files = _model_files(Path(path), signed.ignore_paths, rules, signed.allow_symlinks or allow_symlinks, exclude)
    actual = _hash_files(files, signed.shard_size, progress)
    report = compare_digests(signed.resources, actual, signed.kind)
    report.ignored = rules.found
    return report
