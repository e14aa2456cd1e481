"""Per-batch verification shared by every loader: which files to read, and are these bytes signed?

A loader builds a :class:`DatasetHasher` from a verified signature + sidecar, asks it which
samples to read (:meth:`DatasetHasher.select`: injected and missing files are found before the
first batch), and hands it every batch's raw bytes before yielding the batch
(:meth:`DatasetHasher.check`; or :meth:`~DatasetHasher.judge` in a worker process and
:meth:`~DatasetHasher.record` in the main one). ``hasher.compute()`` is the dataset root of the samples verified
so far; after a whole epoch it is the signed root, whatever the order or the batch size.
"""
from __future__ import annotations

import os
import warnings
from pathlib import PurePosixPath

from ..errors import ContentMismatch, SentryError
from ..manifest.compare import Change, Report
from ..manifest.ignore import IgnoreRules
from ..manifest.item import SAMPLE, Item
from ..manifest.sidecar import records_root
from ..manifest.sources import list_files
from .batch_hash import hash_batch

__all__ = ["IMAGE_EXTENSIONS", "POLICIES", "DatasetHasher", "class_labels", "signed_dataset"]

POLICIES = ("raise", "drop")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".jp2")


def signed_dataset(path, public_key, signature, sidecar):
    from ..api import load_signed_dataset

    return load_signed_dataset(path, public_key, signature, sidecar=sidecar)


class DatasetHasher:
    """Checks samples against a :class:`~sentry.manifest.dataset.SignedDataset`.

    ``policy="raise"``: the first bad sample raises VerificationError naming it. ``"drop"``: bad
    samples are left out of their batch, listed in ``report`` (once each) and warned about.
    ``report.checked`` counts the distinct samples checked so far, verified or not. ``provenance``
    (:func:`sentry.load_provenance`): each batch's per-sample source signatures are checked too,
    in one batch on ``signature_device``, and a bad sample is attributed to its source.
    """

    def __init__(self, signed, *, policy: str = "raise", device: str = "cpu", provenance=None,
                 signature_device: str = "cpu"):
        if policy not in POLICIES:
            raise SentryError(f"unknown policy {policy!r}: choose raise or drop")
        if provenance is not None:
            from ..api import load_provenance

            provenance = load_provenance(provenance, signed.params.leaf_size)
        self.signed, self.policy, self.device = signed, policy, device
        self.provenance, self.signature_device = provenance, signature_device
        self.report = Report()
        self._verified: dict[str, Item] = {}
        self._checked: set[str] = set()  # names of the samples checked, verified or not
        self._failed: set[str] = set()  # names already listed in report.changed (once, whatever the epochs)

    def select(self, root, extensions=None) -> list[str]:
        """Sample names under ``root`` to load (extensions filter, e.g. ``(".png",)``), sorted.

        A file that is not signed is an injected sample; a signed sample of those extensions that
        is absent is a missing one: each raises (or, under "drop", is reported)."""
        signed = self.signed
        exclude = [*signed.sidecars, *([signed.signature] if signed.signature is not None else [])]
        skip = IgnoreRules(signed.claim.ignore, signed.claim.default_ignores)
        on_disk = [n for n, _ in list_files(root, skip, signed.claim.allow_symlinks, exclude)]

        def wanted(name):
            return extensions is None or name.lower().endswith(tuple(extensions))

        names = [n for n in on_disk if wanted(n)]
        missing = sorted(set(filter(wanted, signed.items)) - set(names))
        for name in missing:
            self._bad(name, f"signed sample {name} is missing from {root}", self.report.missing)
        for name in names:
            if name not in signed.items:
                self._bad(name, f"{os.path.join(root, name)} is not in the signed dataset", self.report.extra)
        return [n for n in names if n in signed.items]

    def check(self, names, buffers) -> list[Item | None]:
        """Hash a batch's raw sample bytes, check and record each: its verified item, or None if dropped."""
        return self.record(self.judge(names, buffers))

    def judge(self, names, buffers) -> list[tuple[Item, Change | None]]:
        """Hash and check a batch's raw sample bytes without recording anything: per sample, its
        item and None, or the Change that fails it. A DataLoader worker judges; the main process
        :meth:`record` records them, so that its report covers every sample."""
        digests = hash_batch(buffers, self.signed.params, self.device)
        items = [Item(SAMPLE, name, size, root) for name, (size, root) in zip(names, digests)]
        whys = [self.signed.check(item) for item in items]
        if self.provenance is not None:
            signed_by = self.provenance.check(items, self.signature_device)
            whys = [why or by for why, by in zip(whys, signed_by)]
        verdicts = []
        for item, why in zip(items, whys):
            source = None if why is None or self.provenance is None else self.provenance.source_of(item.name)
            verdicts.append((item, None if why is None else Change(item.label, tuple(why.split(", ")), source=source)))
        return verdicts

    def record(self, verdicts) -> list[Item | None]:
        """Count and record :meth:`judge`'s verdicts (raising at the first failure under "raise");
        each verified item, or None for a dropped sample."""
        keep = []
        for item, failure in verdicts:
            self._checked.add(item.name)
            self.report.checked = len(self._checked)
            if failure is None:
                self._verified[item.name] = item
                keep.append(item)
                continue
            self._verified.pop(item.name, None)  # changed since an earlier epoch: no longer in the root
            origin = f" (from source {failure.source})" if failure.source else ""
            listed = item.name in self._failed
            self._failed.add(item.name)
            self._bad(item.name, f"{item.label} failed verification: {', '.join(failure.reasons)}{origin}",
                      None if listed else self.report.changed, failure)
            keep.append(None)
        return keep

    def compute(self) -> bytes:
        """The dataset root of the samples verified so far (for ``sentry.verify_dataset(root)``)."""
        return records_root(self._verified[n].record() for n in sorted(self._verified))

    @property
    def verified(self) -> int:
        return len(self._verified)

    def _bad(self, name, message, where, entry=None):
        if self.policy == "raise":
            raise ContentMismatch(message)
        if where is not None:
            where.append(entry if entry is not None else f"sample {name}")
        warnings.warn(f"sentry: dropped: {message}", stacklevel=3)


def class_labels(names) -> list[int]:
    """ImageFolder labels: the index of each name's top directory among the sorted top
    directories; -1 for samples at the top level."""
    tops = [PurePosixPath(n).parts[0] if "/" in n else None for n in names]
    classes = {c: i for i, c in enumerate(sorted({t for t in tops if t is not None}))}
    return [-1 if t is None else classes[t] for t in tops]
