"""A dataset claim built from the sidecar just written, and a dataset directory checked against a
verified one (docs/spec.md §6): what ``sign_dataset`` / ``verify_dataset`` do below the API."""
from __future__ import annotations

from pathlib import Path

from ..errors import UnsupportedFormat
from .compare import Report
from .dataset import DatasetClaim, SignedDataset, compare_all, samples_of
from .options import Options

__all__ = ["check_directory", "claim_of_sidecars", "sidecar_location"]


def claim_of_sidecars(options: Options, side_path: Path, root: bytes, count: int, files, part_samples: int,
                      members=()) -> DatasetClaim:
    """The claim of a dataset whose sidecar (or its parts, ``files``: :func:`write_sidecars`'s) was
    written at ``side_path`` with records root ``root``, hashed with ``options``."""
    if part_samples:
        return DatasetClaim(options.params, count, "", 0, root, options.ignore, options.allow_symlinks, (),
                            part_samples, files, tuple(members))
    return DatasetClaim(options.params, count, side_path.name, files[0].size, root, options.ignore,
                        options.allow_symlinks, members=tuple(members))


def sidecar_location(sig_path: Path, claim: DatasetClaim, sidecar=None) -> Path:
    """The sidecar given, else the one the claim names beside the signature; for a sidecar in
    parts, the directory holding them: beside the sidecar path given (as signing named them), else
    beside the signature."""
    if claim.part_samples:
        return (Path(sidecar) if sidecar is not None else sig_path).parent
    return Path(sidecar) if sidecar is not None else sig_path.with_name(claim.sidecar_name)


def check_directory(path, claim: DatasetClaim, sig_path: Path, side_path: Path, options: Options, *,
                    samples=None, load_sources=None) -> Report:
    """The report of the dataset directory ``path`` (or of its named ``samples``) against a
    verified ``claim`` and its sidecar at ``side_path``; ``options`` walk it (the claim's
    parameters, ignore rules and symlink choice, with the caller's added). ``load_sources()``:
    the per-sample provenance (signing/provenance.py) every sample must also carry, loaded once
    the sidecar is, before any hashing. The caller decides the verdict."""
    if claim.members:
        raise UnsupportedFormat(f"{sig_path} signs the members of {' and '.join(claim.members)} files as samples, "
                                f"which a directory walk does not read: verify it with sentry.data.ray.verify")
    # Subsets are looked up by name: the sidecar is read (and checked) whole before any hashing.
    signed = SignedDataset.load(claim, side_path, sig_path) if samples is not None else None
    sources = load_sources() if load_sources is not None else None
    ignored: list = []
    actual = samples_of(path, options, names=samples, exclude=[sig_path, *claim.sidecar_paths(side_path)],
                        walk_lazily=True, ignored=ignored)  # compared as hashed, not all kept
    failures: dict = {}
    if sources is not None:
        actual = sources.checked(actual, failures, options.device)
    report = compare_all(claim, side_path, actual) if signed is None else signed.compare(actual, samples)
    if sources is not None:
        sources.attribute(report, failures)
    report.ignored = ignored
    return report
