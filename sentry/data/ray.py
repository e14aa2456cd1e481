"""Sign and verify datasets with Ray Data (``pip install 'sentry-artifacts[ray]'``).

:func:`sign` and :func:`verify` hash the samples in Ray tasks (a directory's files; with
``members``, the members of WebDataset tar shards and the row groups of Parquet files too) and
give exactly the dataset root that ``sentry sign --dataset`` gives for the same samples, however
Ray partitions the work: each task returns its sidecar lines and the roots of the aligned record
blocks of its range (:mod:`sentry.manifest.partition`), and the driver folds those blocks.
:class:`VerifySamples` is a ``map_batches`` stage that checks every sample's bytes against its
signed record before a later stage (decoding, batch inference) sees it; :func:`read_samples`
reads a dataset's samples as ``{"name", "bytes"}`` rows for it.

Ray must already be initialized (``ray.init()``) or is started by Ray Data with its defaults;
workers must import the same ``sentry`` as the driver.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ContentMismatch, MissingDependency, SentryError
from ..hashing.params import HashParams
from ..manifest import partition, shards
from ..manifest.ignore import IgnoreRules
from ..manifest.item import SAMPLE, Item
from ..manifest.sources import list_files
from .verify import DatasetHasher

__all__ = ["FILES_PER_TASK", "VerifySamples", "hash_samples", "read_samples", "records", "sign", "verify"]

FILES_PER_TASK = 1024  # files hashed per Ray task: a task costs ~10-30 ms on a small machine; amortize it


def _ray_data():
    try:
        import ray.data
    except ImportError:
        raise MissingDependency("sentry.data.ray needs Ray Data: pip install 'sentry-artifacts[ray]'") from None
    return ray.data


def _files(root, rules, exclude) -> list[tuple[str, Path]]:
    root = Path(root)
    if not root.is_dir():
        raise SentryError(f"{root} is not a directory; a dataset is a directory of samples")
    return list_files(root, rules, False, exclude)


def _hash_task(batch, params: HashParams, members, lenient) -> dict:
    items = shards.hash_files(zip(batch["name"], batch["path"]), params, members, device="cpu", lenient=lenient)
    return {"name": np.array([it.name for it in items], dtype=object),
            "size": np.array([it.size for it in items], dtype=np.int64),
            "root": np.array([it.root for it in items], dtype=object)}


def hash_samples(root, params: HashParams, *, members=(), rules=None, exclude=(),
                 files_per_task: int = FILES_PER_TASK, lenient: bool = False) -> list[Item]:
    """The sample items of the dataset directory ``root``, hashed in Ray tasks, sorted by name
    (``lenient``: see :func:`sentry.manifest.shards.sample_ranges`)."""
    files = _files(root, rules or IgnoreRules((), ()), exclude)
    if not files:
        return []
    ds = _ray_data().from_items([{"name": n, "path": p} for n, p in files])
    ds = ds.map_batches(_hash_task, batch_size=files_per_task, batch_format="numpy",
                        fn_kwargs={"params": params, "members": tuple(members), "lenient": lenient})
    items = [Item(SAMPLE, str(n), int(s), bytes(r)) for b in ds.iter_batches(batch_format="numpy", batch_size=None)
             for n, s, r in zip(b["name"], b["size"], b["root"])]
    return sorted(items, key=lambda it: it.name)


def _record_task(row, max_leaves: int) -> dict:
    items = [Item(SAMPLE, n, s, r) for n, s, r in zip(row["names"], row["sizes"], row["roots"])]
    lines, part = partition.task(row["start"], items, max_leaves)
    return {"start": part.start, "count": part.count, "first": part.first or "", "last": part.last or "",
            "lines": b"".join(lines), "positions": [b[0] for b in part.blocks],
            "leaves": [b[1] for b in part.blocks], "roots": b"".join(b[2] for b in part.blocks)}


def _part(row) -> partition.Part:
    roots = bytes(row["roots"])
    blocks = tuple((int(p), int(n), roots[32 * i: 32 * i + 32])
                   for i, (p, n) in enumerate(zip(row["positions"], row["leaves"])))
    return partition.Part(int(row["start"]), int(row["count"]), row["first"] or None, row["last"] or None, blocks)


def records(items, partitions: int, part_samples: int = 0) -> list:
    """(sidecar lines, Part) per partition of the sorted ``items``, computed in Ray tasks, in order."""
    rows = [{"start": s, "names": [it.name for it in items[s:e]], "sizes": [it.size for it in items[s:e]],
             "roots": [it.root for it in items[s:e]]} for s, e in partition.ranges(len(items), partitions)]
    ds = _ray_data().from_items(rows).map(_record_task, fn_kwargs={"max_leaves": part_samples})
    out = [(bytes(r["lines"]), _part(r)) for r in ds.take_all()]
    out.sort(key=lambda lp: lp[1].start)
    return [(lines.splitlines(keepends=True), part) for lines, part in out]


def sign(path, key=None, signature=None, *, sidecar=None, password=None, ignore=(), members=(), leaf_size=None,
         part_samples: int = 0, partitions: int | None = None, files_per_task: int = FILES_PER_TASK,
         force=False, key_files=()) -> Path:
    """:func:`sentry.sign_dataset` with the hashing in Ray tasks; the same sidecar and dataset
    root for the same samples. ``members``: ("tar",) and/or ("parquet",): the members of tar
    shards / row groups of Parquet files are samples too (recorded in the signature: only
    :func:`verify` checks such a dataset). ``partitions``: Ray tasks that compute the sidecar
    records (default: two per CPU of the cluster)."""
    from ..api import dataset_outputs

    members = shards.check_members(members)
    params = HashParams() if leaf_size is None else HashParams(leaf_size=leaf_size)
    sig_path, side_path, seal = dataset_outputs(path, key, signature, sidecar, password, force, key_files,
                                                part_samples)
    items = hash_samples(path, params, members=members, rules=IgnoreRules(tuple(ignore), ()),
                         exclude=[sig_path, side_path], files_per_task=files_per_task)
    _check_unique(items)
    seal(params, records(items, partitions or _default_partitions(), part_samples), ignore, False, members)
    return sig_path


def verify(path, public_key=None, signature=None, *, sidecar=None, ignore=(),
           files_per_task: int = FILES_PER_TASK):
    """:func:`sentry.verify_dataset` of a whole directory with the hashing in Ray tasks, including
    the members of tar shards and Parquet row groups when the signature lists them. Raises
    ContentMismatch (with ``.report``) naming every missing, extra or changed sample."""
    from ..api import dataset_claim
    from ..manifest.dataset import compare_all

    sig_path, claim, where = dataset_claim(path, public_key, signature, sidecar=sidecar)
    ignored: list[str] = []
    rules = IgnoreRules(claim.ignore + tuple(ignore), claim.default_ignores, ignored)
    actual = hash_samples(path, claim.params, members=claim.members, rules=rules,
                          exclude=[sig_path, *claim.sidecar_paths(where)], files_per_task=files_per_task,
                          lenient=True)
    _check_unique(actual)
    report = compare_all(claim, where, actual)  # the sidecar streamed, its roots checked to the end
    report.ignored = ignored
    if not report.ok:
        raise ContentMismatch(f"verification failed: {report.summary()}; {report.lines()[0]}", report)
    return report


def _check_unique(items) -> None:
    for a, b in zip(items, items[1:]):
        if a.name == b.name:
            raise SentryError(f"sample {a.name[:80]!r} is listed twice")


def _default_partitions() -> int:
    import ray

    return 2 * max(1, int(ray.cluster_resources().get("CPU", 1))) if ray.is_initialized() else 2


class VerifySamples:
    """A ``map_batches`` stage that checks each row's bytes against its signed record, so that the
    stages after it see verified samples only: ``ds.map_batches(VerifySamples(signed))``, where
    ``signed`` is :func:`sentry.load_signed_dataset`'s result (or pass ``signature=``,
    ``public_key=``, ``sidecar=``, ``path=`` to load it in each worker, as
    ``ds.map_batches(VerifySamples, fn_constructor_kwargs={...}, concurrency=N)``).

    Rows hold the sample's name (column ``name``) and raw bytes (column ``data``), as
    :func:`read_samples` gives them. ``policy="raise"``: a sample that is not signed, or whose
    bytes differ, fails the stage with ContentMismatch naming it; ``"drop"``: its row is left
    out (and a warning names it)."""

    def __init__(self, signed=None, *, signature=None, public_key=None, sidecar=None, path=None, name="name",
                 data="bytes", policy="raise", device="cpu"):
        if signed is None:
            from ..api import load_signed_dataset

            signed = load_signed_dataset(path, public_key, signature, sidecar=sidecar)
        self.hasher = DatasetHasher(signed, policy=policy, device=device)
        self.name, self.data = name, data

    def __call__(self, batch: dict) -> dict:
        names, buffers = batch[self.name], batch[self.data]
        kept = self.hasher.check([str(n) for n in names], list(buffers))
        if all(k is not None for k in kept):
            return batch
        mask = np.array([k is not None for k in kept], dtype=bool)
        return {key: np.asarray(column)[mask] for key, column in batch.items()}


def _read_task(batch, members) -> dict:
    rows = [s for n, p in zip(batch["name"], batch["path"]) for s in shards.file_samples(n, p, members)]
    return {"name": np.array([n for n, _ in rows], dtype=object), "bytes": np.array([b for _, b in rows], dtype=object)}


def read_samples(path, *, members=(), ignore=(), exclude=(), files_per_task: int = FILES_PER_TASK):
    """A Ray Dataset of the samples under ``path`` as ``{"name": str, "bytes": bytes}`` rows: every
    file, and with ``members`` the members of tar shards (and Parquet row groups) as well; hand it
    to :class:`VerifySamples` before anything decodes the bytes."""
    members = shards.check_members(members)
    files = _files(path, IgnoreRules(tuple(ignore), ()), exclude)
    ds = _ray_data().from_items([{"name": n, "path": p} for n, p in files])
    return ds.map_batches(_read_task, batch_size=files_per_task, batch_format="numpy", fn_kwargs={"members": members})
