"""Datasets: samples hashed one item each, listed in a sidecar whose root the signature covers.

:class:`DatasetClaim` is what a signature says about a dataset (parameters, sample count, the
sidecar's name, size and root); :class:`SignedDataset` is a claim together with the sample records
of a sidecar that matched it, ready to check any sample on its own (docs/spec.md §6).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SentryError, InvalidBundle, ContentMismatch
from ..hashing.merkle import StreamRoot
from ..hashing.params import HashParams
from . import sidecar
from .compare import Report, diff_item
from .ignore import IgnoreRules
from .item import _HEX64, MAX_ITEMS, SAMPLE, Item
from .manifest import Manifest
from .sources import iter_files

SIDECAR_SUFFIX = ".samples.jsonl"


def default_sidecar_path(signature) -> Path:
    """``train.sig`` -> ``train.samples.jsonl``, beside the signature."""
    return sidecar.beside(signature, SIDECAR_SUFFIX)


@dataclass(frozen=True)
class DatasetClaim:
    params: HashParams
    samples: int
    sidecar_name: str  # base name; found beside the signature unless the caller says otherwise
    sidecar_size: int
    root: bytes  # the sidecar's records root = the dataset root = the statement's subject digest
    ignore: tuple[str, ...] = ()
    allow_symlinks: bool = False
    # () for a dataset signed now; a signature made before they were recorded implies the model defaults.
    default_ignores: tuple[str, ...] = ()

    def to_predicate(self) -> dict:
        predicate = Manifest(self.params, [], "dataset", "directory", self.ignore, self.allow_symlinks,
                             self.default_ignores).to_predicate()
        predicate["dataset"] = {
            "samples": self.samples,
            "sidecar": {"name": self.sidecar_name, "size": self.sidecar_size, "root": self.root.hex()},
        }
        return predicate

    @classmethod
    def from_predicate(cls, predicate: dict) -> "DatasetClaim":
        def bad(why):
            return InvalidBundle(f"the signed dataset description is invalid: {why}")

        manifest = Manifest.from_predicate(predicate)
        if manifest.artifact_type != "dataset" or manifest.source != "directory" or manifest.items:
            raise bad("a dataset signature lists its samples in a sidecar, not in the statement")
        desc = predicate.get("dataset")
        if not isinstance(desc, dict) or not isinstance(desc.get("sidecar"), dict):
            raise bad("it has no sidecar")
        name, size = sidecar.signed_file(desc["sidecar"], bad)
        count, root = desc.get("samples"), desc["sidecar"].get("root")
        if type(count) is not int or not 0 <= count <= MAX_ITEMS:
            raise bad("the sample count is not a valid number")
        if not isinstance(root, str) or not _HEX64.fullmatch(root):
            raise bad("the sidecar's root is not 64 lowercase hex digits")
        return cls(manifest.params, count, name, size, bytes.fromhex(root), manifest.ignore, manifest.allow_symlinks,
                   manifest.default_ignores)


# Files hashed per call of the engine: what hashing keeps per sample (ranges, digests, its own
# bookkeeping) is then bounded by a batch, not the dataset, when items are consumed as they come.
SAMPLES_PER_BATCH = 1 << 14


def hash_samples(root, params: HashParams, *, names=None, ignore=(), default_ignores=(),
                 allow_symlinks=False, exclude=(), progress=None, device="auto") -> list[Item]:
    """Sample items of the files under ``root`` (every file, or just ``names``; absent names are
    left out, so a comparison reports them missing), sorted by name."""
    return list(iter_samples(root, params, names=names, ignore=ignore, default_ignores=default_ignores,
                             allow_symlinks=allow_symlinks, exclude=exclude, progress=progress, device=device))


def iter_samples(root, params: HashParams, *, names=None, ignore=(), default_ignores=(),
                 allow_symlinks=False, exclude=(), progress=None, device="auto", walk_lazily=False, ignored=None):
    """:func:`hash_samples` as an iterator, hashing ``SAMPLES_PER_BATCH`` files at a time. The
    directory is listed (and its errors raised) at the call, or with ``walk_lazily`` as the
    samples are hashed: memory then holds one directory's entries, not a listing of millions of
    samples, which is only sound while nothing is written under ``root`` (see
    :func:`writes_inside`). A dataset has no default ignores: every file under it is a sample
    that a loader walking it may read (ImageFolder makes a class of a top-level ``.git``);
    ``default_ignores`` are those an older signature implies. ``ignored`` (a list), if given,
    receives the paths the ignore rules left out, as the walk meets them."""
    root = Path(root)
    if not root.is_dir():
        raise SentryError(f"{root} is not a directory; a dataset is a directory of samples")
    if names is None:
        files = iter_files(root, IgnoreRules(ignore, default_ignores, ignored), allow_symlinks, exclude)
        if not walk_lazily:
            files = list(files)
    else:
        bad = [n for n in names if not sidecar.is_plain_name(n)]
        if bad:
            raise SentryError(f"sample name {bad[0][:80]!r} is not a relative path inside the dataset")
        files = [(n, root / n) for n in sorted(set(names)) if os.path.lexists(root / n)]
    if hasattr(progress, "set_total"):
        # A lazy walk is walked twice for a bar (a terminal): once here for the sizes.
        listed = iter_files(root, IgnoreRules(ignore, default_ignores), allow_symlinks, exclude) if walk_lazily else files
        progress.set_total(sum(_size_or_zero(p) for _, p in listed))
    return _hash_batches(iter(files), params, progress, device)


def writes_inside(root, *paths) -> bool:
    """Whether any of ``paths`` (files about to be written) lies under the directory ``root``:
    their temporary files would then show up in a lazy walk of it."""
    real_root = Path(os.path.realpath(root))
    return any(Path(os.path.realpath(Path(p).parent)).is_relative_to(real_root) for p in paths)


def _hash_batches(files, params, progress, device):
    from ..hashing import FileRange, digest_ranges

    while batch := list(itertools.islice(files, SAMPLES_PER_BATCH)):
        digests = digest_ranges([FileRange(path) for _, path in batch], params, progress=progress, device=device)
        for (name, _), d in zip(batch, digests):
            yield Item(SAMPLE, name, d.size, d.root)


def _size_or_zero(path) -> int:
    """For a progress total only: a file that cannot be stat'ed is reported when it is hashed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class SignedDataset:
    """A dataset signature's claim and the sample records of its (verified) sidecar."""

    def __init__(self, claim: DatasetClaim, items: list[Item], sidecar=None, signature=None):
        self.claim, self.params = claim, claim.params
        self.items = {it.name: it for it in items}
        self.sidecar, self.signature = sidecar, signature  # where they were read from

    @classmethod
    def load(cls, claim: DatasetClaim, path, signature=None) -> "SignedDataset":
        """Read the sidecar at ``path`` and check it against the claim: size, records, root, count."""
        with sidecar.signed_lines(path, claim.sidecar_size, "dataset") as (lines, where):
            stream = StreamRoot()
            items = list(sidecar.records(lines, where, stream))
        _check_records(claim, stream, where)
        return cls(claim, items, Path(path), signature)

    def check(self, actual: Item) -> str | None:
        """Why a freshly hashed sample does not match its record, or None when it does."""
        want = self.items.get(actual.name)
        if want is None:
            return "not in the signed dataset"
        change = diff_item(want, actual, self.params.leaf_size, self.params.max_chunks)
        return None if change is None else ", ".join(change.reasons)

    def compare(self, actual, names=None) -> Report:
        """Report on ``actual`` (items, any iterable: each is let go once compared) against the
        records (all of them, or only ``names``)."""
        if names is not None:
            actual = list(actual)
            unknown = set(names) - self.items.keys() - {it.name for it in actual}
            if unknown:
                # A name the user got wrong, not a change to the dataset: an input error.
                raise SentryError(f"sample {min(unknown)!r} is neither in the signed dataset nor in the directory")
        # What compare() reports, without holding every item or copies of the records: at millions
        # of samples those would cost more than the records. Of items named twice, the last counts.
        want = self.items if names is None else {n: self.items[n] for n in set(names) if n in self.items}
        p = self.params
        seen, changes, extra = set(), {}, {}
        for it in actual:
            signed = want.get(it.name)
            if signed is None:
                extra[it.name] = it.label
                continue
            seen.add(it.name)
            change = diff_item(signed, it, p.leaf_size, p.max_chunks)
            if change:
                changes[it.name] = change
            else:
                changes.pop(it.name, None)
        report = Report(checked=len(want) + len(extra))
        if len(seen) < len(want):
            report.missing = [want[n].label for n in sorted(want.keys() - seen)]
        report.extra = [extra[n] for n in sorted(extra)]
        report.changed = [changes[n] for n in sorted(changes)]
        return report


def _check_records(claim: DatasetClaim, stream: StreamRoot, where: str) -> None:
    """The records read (their root and count) are the signed ones."""
    if stream.root() != claim.root:
        raise ContentMismatch(f"{where} does not match the signature: its records do not hash to the signed root")
    if stream.count != claim.samples:  # unreachable with a matching root, unless the signer lied
        raise ContentMismatch(f"{where} lists {stream.count} samples but the signature says {claim.samples}")


def compare_all(claim: DatasetClaim, path, actual) -> Report:
    """Every sample against the sidecar at ``path``, holding neither: ``actual`` (sample items
    sorted by name, as :func:`iter_samples` yields them for a whole directory) and the records
    are merged by name as they come. The report stands only once the whole sidecar has matched
    the claim, which is checked last."""
    p = claim.params
    missing, extra, changed = [], [], []
    with sidecar.signed_lines(path, claim.sidecar_size, "dataset") as (lines, where):
        stream = StreamRoot()
        signed = sidecar.records(lines, where, stream)
        want = next(signed, None)
        for it in actual:
            while want is not None and want.name < it.name:
                missing.append(want.label)
                want = next(signed, None)
            if want is None or want.name != it.name:
                extra.append(it.label)
                continue
            change = diff_item(want, it, p.leaf_size, p.max_chunks)
            if change:
                changed.append(change)
            want = next(signed, None)
        while want is not None:
            missing.append(want.label)
            want = next(signed, None)
    _check_records(claim, stream, where)
    return Report(checked=claim.samples + len(extra), missing=missing, extra=extra, changed=changed)
