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
from typing import ClassVar

from ..errors import ContentMismatch, InvalidBundle, InvalidInput, Remedy, SentryError
from ..hashing.merkle import StreamRoot
from ..hashing.params import HashParams
from . import sidecar
from .compare import Report, diff_item
from .ignore import IgnoreRules
from .item import _HEX64, MAX_ITEMS, SAMPLE, Item
from .manifest import PREDICATE_TYPE, Manifest
from .options import Options
from .shards import MEMBERS
from .sources import iter_files

__all__ = [
    "MAX_PART_SAMPLES",
    "MAX_SAMPLES",
    "SAMPLES_PER_BATCH",
    "SIDECAR_SUFFIX",
    "DatasetClaim",
    "SidecarPart",
    "SignedDataset",
    "check_part_samples",
    "compare_all",
    "default_sidecar_path",
    "hash_samples",
    "iter_samples",
    "part_path",
    "partitioned",
    "samples_of",
    "signed_records",
    "write_sidecars",
]

SIDECAR_SUFFIX = ".samples.jsonl"


def default_sidecar_path(signature) -> Path:
    """``train.sig`` -> ``train.samples.jsonl``, beside the signature."""
    return sidecar.beside(signature, SIDECAR_SUFFIX)


@dataclass(frozen=True)
class DatasetClaim:
    """What a dataset signature says (a :class:`~sentry.manifest.claim.Claim`); its samples are in the sidecar."""

    predicate_type: ClassVar[str] = PREDICATE_TYPE
    mismatch: ClassVar[str] = "the signed sidecar root does not match the signed digest"

    params: HashParams
    samples: int
    sidecar_name: str  # base name; found beside the signature unless the caller says otherwise
    sidecar_size: int
    root: bytes  # the sidecar's records root = the dataset root = the statement's subject digest
    ignore: tuple[str, ...] = ()
    allow_symlinks: bool = False
    # () for a dataset signed now; a signature made before they were recorded implies the model defaults.
    default_ignores: tuple[str, ...] = ()
    # A sidecar split in parts (docs/spec.md §6.5): records per part (a power of two) and the parts;
    # then sidecar_name and sidecar_size are unused.
    part_samples: int = 0
    parts: tuple[SidecarPart, ...] = ()
    # Files whose members are samples too (shards.MEMBERS): a directory walk alone cannot check them.
    members: tuple[str, ...] = ()

    def files(self) -> tuple[SidecarPart, ...]:
        """The sidecar files in record order: the parts, or the one sidecar as a part at 0."""
        if self.part_samples:
            return self.parts
        return (SidecarPart(self.sidecar_name, 0, self.sidecar_size, self.root, self.samples),)

    def sidecar_paths(self, where) -> list[Path]:
        """The files of :meth:`files`: ``where`` is the one sidecar, or the directory of the parts."""
        return [Path(where) / p.name for p in self.parts] if self.part_samples else [Path(where)]

    def subject_digest(self) -> bytes:
        return self.root

    def item_count(self) -> int:
        return self.samples

    def to_predicate(self) -> dict:
        predicate = Manifest(self.params, [], "dataset", "directory", self.ignore, self.allow_symlinks,
                             self.default_ignores).to_predicate()
        if self.part_samples:
            files = [{"name": p.name, "start": p.start, "size": p.size, "root": p.root.hex()} for p in self.parts]
            predicate["dataset"] = {"samples": self.samples, "parts": {"samples": self.part_samples, "files": files}}
        else:
            predicate["dataset"] = {
                "samples": self.samples,
                "sidecar": {"name": self.sidecar_name, "size": self.sidecar_size, "root": self.root.hex()},
            }
        if self.members:
            predicate["dataset"]["members"] = list(self.members)
        return predicate

    @classmethod
    def from_predicate(cls, predicate: dict, sidecar_dir=None) -> DatasetClaim:
        """The claim of a signed predicate, every field checked; its sidecar is read later
        (:class:`SignedDataset`, :func:`compare_all`), so ``sidecar_dir`` is not used here."""

        def bad(why):
            return InvalidBundle(f"the signed dataset description is invalid: {why}")

        manifest = Manifest.from_predicate(predicate)
        if manifest.artifact_type != "dataset" or manifest.source != "directory" or manifest.items:
            raise bad("a dataset signature lists its samples in a sidecar, not in the statement")
        desc = predicate.get("dataset")
        members = desc.get("members", []) if isinstance(desc, dict) else []
        if not isinstance(members, list) or any(m not in MEMBERS for m in members) or members != sorted(set(members)):
            raise bad(f"its members are not a sorted list of {', '.join(MEMBERS)}")
        members = tuple(members)
        if isinstance(desc, dict) and "parts" in desc and "sidecar" not in desc:
            count, size, parts = _signed_parts(desc, bad)
            return cls(manifest.params, count, "", 0, _parts_root(parts, size), manifest.ignore,
                       manifest.allow_symlinks, manifest.default_ignores, size, parts, members)
        if not isinstance(desc, dict) or not isinstance(desc.get("sidecar"), dict):
            raise bad("it has no sidecar")
        name, size = sidecar.signed_file(desc["sidecar"], bad)
        signed_count, root = desc.get("samples"), desc["sidecar"].get("root")
        if type(signed_count) is not int or not 0 <= signed_count <= MAX_ITEMS:
            raise bad("the sample count is not a valid number")
        if not isinstance(root, str) or not _HEX64.fullmatch(root):
            raise bad("the sidecar's root is not 64 lowercase hex digits")
        return cls(manifest.params, signed_count, name, size, bytes.fromhex(root), manifest.ignore, manifest.allow_symlinks,
                   manifest.default_ignores, members=members)


@dataclass(frozen=True)
class SidecarPart:
    """One sidecar file: its name (beside the signature), its first record's index in the whole
    sorted list, its size in bytes, the root of its records, and how many it holds."""

    name: str
    start: int
    size: int
    root: bytes
    samples: int


MAX_PART_SAMPLES = 1 << 23  # records per part: a power of two within what one sidecar may hold (MAX_ITEMS)
MAX_SAMPLES = 1 << 32  # samples of a dataset whose sidecar is split in parts


def _signed_parts(desc: dict, bad) -> tuple[int, int, tuple[SidecarPart, ...]]:
    """(samples, records per part, parts) of a signed ``dataset`` with ``parts``, checked."""
    count, spec = desc.get("samples"), desc["parts"]
    if type(count) is not int or not 0 <= count <= MAX_SAMPLES:
        raise bad("the sample count is not a valid number")
    size = spec.get("samples") if isinstance(spec, dict) else None
    if type(size) is not int or not 0 < size <= MAX_PART_SAMPLES or size & (size - 1):
        raise bad(f"the records per sidecar part are not a power of two up to {MAX_PART_SAMPLES}")
    files = spec.get("files")
    if not isinstance(files, list) or len(files) != -(-count // size):
        raise bad(f"{count} samples in parts of {size} need {-(-count // size)} sidecar parts")
    parts = []
    for j, f in enumerate(files):
        name, nbytes = sidecar.signed_file(f, bad)
        root = f.get("root")
        if f.get("start") != j * size or type(f.get("start")) is not int:
            raise bad(f"sidecar part {j} does not start at record {j * size}")
        if not isinstance(root, str) or not _HEX64.fullmatch(root):
            raise bad(f"the root of sidecar part {j} is not 64 lowercase hex digits")
        parts.append(SidecarPart(name, j * size, nbytes, bytes.fromhex(root), min(size, count - j * size)))
    if len({p.name for p in parts}) != len(parts):
        raise bad("two sidecar parts have the same name")
    return count, size, tuple(parts)


def _parts_root(parts, part_samples: int) -> bytes:
    """The dataset root: the parts' roots are those of aligned record blocks (spec §1.3)."""
    stream = StreamRoot()
    for p in parts:
        stream.add(p.root, part_samples if p.samples == part_samples else p.samples)
    return stream.root()


def check_part_samples(part_samples: int) -> None:
    """SentryError unless ``part_samples`` is 0 (one sidecar) or a power of two a part may hold."""
    if type(part_samples) is not int or part_samples < 0 or part_samples & (part_samples - 1) \
            or part_samples > MAX_PART_SAMPLES:
        raise InvalidInput(f"part_samples must be a power of two up to {MAX_PART_SAMPLES} (or 0: one sidecar)")


def partitioned(items, part_samples: int = 0, per_task: int | None = None):
    """:func:`.partition.task` over consecutive runs of the sorted sample ``items``: the one-process
    engine. Refuses more samples than the sidecar (or its parts) may list, as a verifier would."""
    from .partition import task

    limit = MAX_SAMPLES if part_samples else sidecar.MAX_ITEMS  # looked up here: tests lower it
    items, start = iter(items), 0
    while batch := list(itertools.islice(items, per_task or SAMPLES_PER_BATCH)):
        if start + len(batch) > limit:
            raise SentryError(f"cannot sign more than {limit} items: a verifier would refuse the list",
                              remedy=None if part_samples else Remedy("part_samples", "N",
                                                                      purpose="to split the sidecar in parts"))
        yield task(start, batch, part_samples)
        start += len(batch)


def part_path(base, index: int) -> Path:
    """``train.samples.jsonl`` -> ``train.samples.000003.jsonl``: part ``index`` of a sidecar."""
    base = Path(base)
    return base.with_name(f"{base.stem}.{index:06d}{base.suffix}")


def write_sidecars(base, results, write, part_samples: int = 0) -> tuple[bytes, int, tuple[SidecarPart, ...]]:
    """Write the sidecar lines of ``results`` ((lines, :class:`~.partition.Part`) per partition,
    in record order, from :func:`.partition.task` with ``max_leaves=part_samples``) to ``base``,
    or to its parts of ``part_samples`` records each; ``write(path, lines)`` writes one file whole
    or not at all. Returns (dataset root, samples, files), the root folded from the parts' blocks."""
    from ..hashing import aligned
    from .partition import fold

    got: list = []
    total = [0]
    by_file: dict = {}

    def lines():
        for part_lines, part in results:
            got.append(part)
            for block in part.blocks if part_samples else ():  # blocks never straddle two files
                by_file.setdefault(block[0] // part_samples, []).append(block)
            for line in part_lines:
                total[0] += len(line)
                yield line

    stream = lines()
    if not part_samples:
        write(base, stream)
        root, count = fold(got)
        return root, count, (SidecarPart(base.name, 0, total[0], root, count),)
    files: list = []
    pending = next(stream, None)
    while pending is not None:
        start, path, before = len(files) * part_samples, part_path(base, len(files)), total[0] - len(pending)
        write(path, itertools.chain([pending], itertools.islice(stream, part_samples - 1)))
        size = total[0] - before
        pending = next(stream, None)
        root, count = aligned.fold((p - start, n, r) for p, n, r in by_file.pop(len(files), ()))
        if count != min(part_samples, sum(p.count for p in got) - start):
            raise SentryError(f"the records of sidecar part {len(files)} do not fold into {part_samples} records")
        files.append(SidecarPart(path.name, start, size, root, count))
    root, count = fold(got)
    return root, count, tuple(files)


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
    :func:`~sentry.manifest.sidecar.writes_inside`). A dataset has no default ignores: every file under it is a sample
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


def samples_of(root, options: Options, **walk):
    """:func:`iter_samples` walked and hashed as ``options`` say (a dataset's options resolve with
    no default ignores); ``walk``: ``names``, ``exclude``, ``walk_lazily``, ``ignored``."""
    return iter_samples(root, options.params, ignore=options.ignore, default_ignores=options.default_ignores,
                        allow_symlinks=options.allow_symlinks, progress=options.progress, device=options.device,
                        **walk)


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
        self.sidecars = claim.sidecar_paths(sidecar) if sidecar is not None else []

    @classmethod
    def load(cls, claim: DatasetClaim, path, signature=None) -> SignedDataset:
        """Read the sidecar at ``path`` (of parts: the directory holding them) and check it against
        the claim: sizes, records, roots, counts."""
        return cls(claim, list(signed_records(claim, path)), Path(path), signature)

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


def signed_records(claim: DatasetClaim, where):
    """The sample records of the claim's sidecar (or its parts, in order), each line checked as it
    is read; each file's root and count are checked once it is read whole, so a consumer's result
    stands only once this generator is exhausted."""
    previous = None
    for part, path in zip(claim.files(), claim.sidecar_paths(where)):
        with sidecar.signed_lines(path, part.size, "dataset") as (lines, at):
            stream = StreamRoot()
            for it in sidecar.records(lines, at, stream):
                if stream.count == 1 and previous is not None and it.name <= previous:
                    raise InvalidBundle(f"{at} line 1 does not come after the part before it ({it.name[:80]!r})")
                yield it
                previous = it.name
        _check_records(part, stream, at)


def _check_records(part: SidecarPart, stream: StreamRoot, where: str) -> None:
    """The records read (their root and count) are the signed ones."""
    if stream.root() != part.root:
        raise ContentMismatch(f"{where} does not match the signature: its records do not hash to the signed root")
    if stream.count != part.samples:  # unreachable with a matching root, unless the signer lied
        raise ContentMismatch(f"{where} lists {stream.count} samples but the signature says {part.samples}")


def compare_all(claim: DatasetClaim, path, actual) -> Report:
    """Every sample against the sidecar at ``path``, holding neither: ``actual`` (sample items
    sorted by name, as :func:`iter_samples` yields them for a whole directory) and the records
    are merged by name as they come. The report stands only once the whole sidecar has matched
    the claim, which is checked last."""
    p = claim.params
    missing, extra, changed = [], [], []
    signed = signed_records(claim, path)
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
    while want is not None:  # exhausted: the last file's root is checked
        missing.append(want.label)
        want = next(signed, None)
    return Report(checked=claim.samples + len(extra), missing=missing, extra=extra, changed=changed)
