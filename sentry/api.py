"""The Python API: sign and verify models and datasets, from paths or from memory."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, overload

from .errors import (
    ContentMismatch,
    InvalidBundle,
    Remedy,
    SentryError,
    UnsupportedFormat,
)
from .manifest.compare import Report, compare_manifests
from .manifest.manifest import ArtifactType, Manifest
from .manifest.options import Defaults, Options
from .manifest.sidecar import writes_inside
from .manifest.sources import manifest_for_path
from .manifest.tensors import is_sharded_manifest, state_dict_of, tensor_items

if TYPE_CHECKING:  # the layers below are imported when a call needs them; these names are for type checkers
    from cryptography.hazmat.primitives.asymmetric import ec

    from .hashing.params import HashParams
    from .manifest.claim import Claim
    from .manifest.dataset import DatasetClaim, SignedDataset
    from .manifest.lineage import TrainingData
    from .manifest.oms import OmsManifest
    from .manifest.partition import Part
    from .protection import Protection
    from .signing.base import Signer, Verifier
    from .signing.provenance import Provenance
    from .signing.statement import Statement

__all__ = [  # sentry's lazy API, and the helpers that audit, image, data.ray and the tests use
    "check_signed", "configure", "dataset_claim", "dataset_link", "dataset_outputs", "default_signature_path",
    "hash_artifact", "load_provenance", "load_signed_dataset", "protect", "read_signed_manifest",
    "read_signed_statement", "sign_dataset", "sign_model", "sign_samples", "signed_claim", "verifier_for",
    "verify_dataset", "verify_model",
]

# The shapes the API's parameters take (those quoted name classes imported for type checkers only).
# None for a key, a signature or a setting: the configured one.
PathArg: TypeAlias = str | os.PathLike[str]
# A path, or a torch.nn.Module or state_dict in memory: Any, since torch is optional.
Artifact: TypeAlias = Any
SignatureFormat: TypeAlias = Literal["sentry", "oms"]
SigningKey: TypeAlias = "PathArg | Signer | ec.EllipticCurvePrivateKey | None"
PublicKey: TypeAlias = "PathArg | Verifier | ec.EllipticCurvePublicKey | None"
Password: TypeAlias = str | bytes | None
Progress: TypeAlias = Callable[[int], object] | None  # called with the bytes just hashed (ProgressBar)
KeyFiles: TypeAlias = Iterable[PathArg] | Mapping[Any, str]  # paths, or path -> what it is
TrainingDataArg: TypeAlias = "PathArg | TrainingData | Sequence[PathArg | TrainingData] | None"
ProvenanceKey: TypeAlias = "PathArg | ec.EllipticCurvePublicKey"
ProvenanceSources: TypeAlias = "Provenance | Mapping[Any, ProvenanceKey] | Iterable[tuple[PathArg, ProvenanceKey]]"


class DatasetSeal(Protocol):
    """:func:`dataset_outputs`'s ``seal``: writes the sidecar (or its parts), then the bundle."""

    def __call__(self, params: HashParams, results: Iterable[tuple[Iterable[bytes], Part]], ignore: Iterable[str],
                 allow_symlinks: bool, members: Iterable[str] = ()) -> None: ...


_defaults = Defaults()


def configure(**settings: Any) -> None:
    """Set defaults for later calls, e.g. ``configure(public_key="pub.pem", signature="model.sig")``
    so that a training script can call plain ``sentry.verify_model(model)``. ``None`` clears one.
    ``dataset_signature`` / ``dataset_public_key``: the same for datasets (loaders,
    ``verify_dataset``), where they come before ``signature`` / ``public_key``: a script then
    verifies its model and its data with one configuration."""
    _defaults.set(**settings)


def _setting(name: str, value: Any) -> Any:
    return _defaults.pick(name, value)


def _dataset_settings(public_key: PublicKey, signature: PathArg | None) -> tuple[PublicKey, PathArg | None]:
    """``(public_key, signature)`` for a dataset: as given, else the dataset settings; the general
    ones apply after (in ``verifier_for`` and ``_signature_path``)."""
    return _setting("dataset_public_key", public_key), _setting("dataset_signature", signature)


def default_signature_path(path: PathArg) -> Path:
    """``model/`` -> ``model.sig``; ``w.safetensors`` -> ``w.safetensors.sig``, beside the artifact."""
    p = Path(os.path.abspath(path))
    return p.with_name(p.name + ".sig")


def _is_path(obj: object) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _signature_path(artifact: Artifact, signature: PathArg | None) -> Path:
    signature = _setting("signature", signature)
    if signature is not None:
        return Path(signature)
    if _is_path(artifact):
        return default_signature_path(artifact)
    raise SentryError("a model in memory has no default signature path: pass signature=PATH")


def _check_outputs(outputs: list[tuple[str, Path]], artifact: Artifact, key: SigningKey, key_files: KeyFiles,
                   force: bool) -> None:
    """Before any hashing: refuse outputs that would overwrite the key, ``key_files``, the artifact
    or a file that is not an earlier output (without ``force``); see signing/outputs.py."""
    from .signing.outputs import check_outputs

    keep = dict(key_files) if isinstance(key_files, Mapping) else dict.fromkeys(key_files, "a key file given to sign with")
    key = _setting("key", key)
    if _is_path(key):
        keep[key] = "the signing key"
    check_outputs(outputs, artifact=artifact if _is_path(artifact) else None, keep=keep, force=force)


def hash_artifact(artifact: Artifact, *, artifact_type: ArtifactType = "model", leaf_size: int | None = None,
                  ignore: Sequence[str] = (), default_ignores: bool = True, allow_symlinks: bool = False,
                  exclude: Sequence[PathArg] = (), strict: bool = True, strip_prefix: str = "", add_prefix: str = "",
                  device: str | None = None, progress: Progress = None, params: HashParams | None = None,
                  ignored: list[str] | None = None, distributed_timeout: float | None = None,
                  signed_roots: Mapping[str, bytes] | None = None, spread_replicas: bool | None = None) -> Manifest:
    """The manifest of a path (directory or file) or of a model/state_dict in memory.

    ``default_ignores=False`` hashes the top-level VCS entries (.git, ...) too; ``ignored`` (a
    list), if given, receives the paths the ignore rules left out. A model whose parameters are
    DTensors is hashed by every rank of the process group together (all must call this), each
    waiting at most ``distributed_timeout`` seconds (default 600) for the others; with
    ``spread_replicas`` the ranks share the hashing of what they all hold (README "At scale")."""
    options = Options.resolve(_defaults, params=params, leaf_size=leaf_size, ignore=ignore,
                              default_ignores=default_ignores, allow_symlinks=allow_symlinks,
                              strip_prefix=strip_prefix, add_prefix=add_prefix, device=device, progress=progress,
                              distributed_timeout=distributed_timeout, spread_replicas=spread_replicas)
    return _hash(artifact, options, artifact_type=artifact_type, exclude=exclude, strict=strict, ignored=ignored,
                 signed_roots=signed_roots)


def _hash(artifact: Artifact, o: Options, *, artifact_type: ArtifactType = "model", exclude: Sequence[PathArg] = (),
          strict: bool = True, ignored: list[str] | None = None,
          signed_roots: Mapping[str, bytes] | None = None) -> Manifest:
    """:func:`hash_artifact` with its options resolved."""
    if _is_path(artifact):
        return manifest_for_path(artifact, o.params, artifact_type=artifact_type, ignore=o.ignore,
                                 default_ignores=o.default_ignores, allow_symlinks=o.allow_symlinks, exclude=exclude,
                                 strict=strict, progress=o.progress, device=o.device, ignored=ignored,
                                 signed_roots=signed_roots)
    items = tensor_items(state_dict_of(artifact), o.params, strip_prefix=o.strip_prefix, add_prefix=o.add_prefix,
                         device=o.device, progress=o.progress, timeout=o.distributed_timeout,
                         spread_replicas=o.spread_replicas)
    return Manifest(o.params, items, artifact_type, "memory")


FORMATS: tuple[SignatureFormat, ...] = ("sentry", "oms")


def _signer(key: SigningKey, password: Password) -> Signer:
    from .signing.material import signer_for

    return signer_for(_setting("key", key), _setting("password", password))


def _private_key(key: SigningKey, password: Password) -> object:
    from .signing.material import private_key_for

    return private_key_for(_setting("key", key), _setting("password", password))


def verifier_for(public_key: PublicKey) -> Verifier:
    """The verifier to use: a Verifier object as given (or configured), else a KeyVerifier for a
    key file or object."""
    from .signing import material

    return material.verifier_for(_setting("public_key", public_key))


def _sign(artifact: Artifact, artifact_type: ArtifactType, key: SigningKey, signature: PathArg | None,
          password: Password, format: SignatureFormat = "sentry", *, key_files: KeyFiles = (), force: bool = False,
          training_data: tuple[TrainingData, ...] = (), **hash_options: Any) -> Path:
    from .signing import write_bundle
    from .signing.outputs import ITEMS, SIGNATURE

    if format not in FORMATS:
        raise SentryError(f"unknown signature format {format!r}: use one of {', '.join(FORMATS)}")
    signer = _signer(key, password)  # load the key first: a bad key should not cost a full hash
    sig_path = _signature_path(artifact, signature)
    outputs = [(SIGNATURE, sig_path)]
    _check_outputs(outputs, artifact, key, key_files, force)
    name = Path(os.path.abspath(artifact)).name if _is_path(artifact) else type(artifact).__name__
    if format == "oms":
        if training_data:
            raise SentryError("the OMS format has no field for training data: sign in Sentry's format")
        claim = _oms_manifest(artifact, artifact_type, sig_path, **hash_options)
    else:
        options = Options.resolve(_defaults, **hash_options)
        manifest = _hash(artifact, options, artifact_type=artifact_type, exclude=[sig_path])

        def seal() -> None:
            _seal(manifest, training_data, artifact, sig_path, name, signer,
                  lambda side: _check_outputs(outputs + [(ITEMS, side)], artifact, key, key_files, force))

        if is_sharded_manifest(manifest.items):
            return _sign_on_rank_0(seal, sig_path, options.distributed_timeout)
        seal()
        return sig_path
    write_bundle(sig_path, signer.sign_claim(name, claim))
    return sig_path


def _seal(manifest: Manifest, training_data: tuple[TrainingData, ...], artifact: Artifact, sig_path: Path, name: str,
          signer: Signer, check_sidecar: Callable[[Path], None]) -> None:
    from .signing import write_bundle
    from .signing._files import write_atomic

    manifest.training_data = training_data
    manifest = manifest.for_bundle(sig_path, artifact if _is_path(artifact) else None, check_sidecar, write_atomic)
    write_bundle(sig_path, signer.sign_claim(name, manifest))


def _sign_on_rank_0(seal: Callable[[], None], sig_path: Path, timeout: float | None) -> Path:
    """A sharded model: every rank computed the same manifest; rank 0 alone signs and writes (one
    signature, one Sigstore log entry), and no rank returns before it has, or fails unless all do."""
    from .hashing.sharded import any_rank, rank

    failed = False
    try:
        if rank() == 0:
            failed = True
            seal()
            failed = False
    finally:
        if any_rank(failed, timeout) and not failed:
            raise SentryError(f"rank 0 could not write the signature {sig_path} (see its error)")
    return sig_path


def _oms_manifest(artifact: Artifact, artifact_type: ArtifactType, sig_path: Path, *, leaf_size: int | None = None,
                  ignore: Sequence[str] = (), default_ignores: bool = True, allow_symlinks: bool = False,
                  progress: Progress = None, **_tensor_options: Any) -> OmsManifest:
    """An OMS (model_signing) statement: plain SHA-256 per file, as model_signing makes them.

    The remaining options (state_dict prefixes, the hashing device) concern tensors and the
    Merkle engine, which this format does not use."""
    from .manifest import oms

    if not _is_path(artifact) or artifact_type != "model":
        raise SentryError("the OMS format signs a model directory or file, not a model in memory or a dataset")
    if leaf_size is not None:
        raise SentryError("the OMS format hashes whole files: a leaf size does not apply")
    return oms.manifest_for_model(artifact, ignore=ignore, default_ignores=default_ignores,
                                  allow_symlinks=allow_symlinks, exclude=[sig_path],
                                  progress=_setting("progress", progress))


def read_signed_statement(signature: Path, verifier: Verifier) -> Statement:
    """Check the bundle's signature with ``verifier``; return the statement it authenticates."""
    from .signing import parse_statement, read_bundle

    return parse_statement(verifier.verify(read_bundle(signature)))


def read_signed_manifest(signature: Path, verifier: Verifier) -> Manifest:
    """Check the signature, then rebuild the Sentry manifest it covers (nothing is hashed yet)."""
    return signed_manifest(read_signed_statement(signature, verifier), signature)


def signed_manifest(statement: Statement, signature: Path) -> Manifest:
    """The manifest in a verified statement with Sentry's predicate."""
    from .manifest.claim import checked_claim
    from .manifest.manifest import PREDICATE_TYPE

    if statement.predicate_type != PREDICATE_TYPE:
        raise UnsupportedFormat(f"{signature} is not a Sentry signature (predicate {statement.predicate_type!r})")
    return checked_claim(Manifest, statement, signature)


def signed_claim(statement: Statement, signature: Path, artifact_type: ArtifactType | None = None) -> Claim:
    """What a verified statement signs (:func:`~sentry.manifest.claim.read_claim`): an
    ``OmsManifest`` (model_signing), a :class:`Manifest` (a Sentry model) or a ``DatasetClaim``
    (a Sentry dataset, whose sidecar is not read yet), checked against the signed digest.
    ``artifact_type`` ("model" or "dataset"): what the caller verifies; None accepts any (an audit)."""
    from .manifest.claim import read_claim

    return read_claim(statement, Path(signature), artifact_type)


def _require_artifact(artifact: Artifact) -> None:
    """A path that is not there: said first, before its signature (also missing then) is looked for."""
    if _is_path(artifact) and not os.path.lexists(artifact):
        raise SentryError(f"{artifact} does not exist")


def _verify(artifact: Artifact, artifact_type: ArtifactType, public_key: PublicKey, signature: PathArg | None,
            **options: Any) -> Report:
    _require_artifact(artifact)
    sig_path, signed = _read_claim(artifact, public_key, signature, artifact_type)
    report = check_signed(artifact, signed, sig_path, **options)
    report.root = signed.subject_digest().hex()
    report.training_data = list(getattr(signed, "training_data", ()))
    return report


@overload  # a dataset's: claim_class reads it as a DatasetClaim, or refuses it (another kind, a bad type)
def _read_claim(artifact: Artifact, public_key: PublicKey, signature: PathArg | None,
                artifact_type: Literal["dataset"]) -> tuple[Path, DatasetClaim]: ...
@overload
def _read_claim(artifact: Artifact, public_key: PublicKey, signature: PathArg | None,
                artifact_type: ArtifactType) -> tuple[Path, Claim]: ...
def _read_claim(artifact: Artifact, public_key: PublicKey, signature: PathArg | None,
                artifact_type: ArtifactType) -> tuple[Path, Claim]:
    """(signature path, its checked claim: :func:`signed_claim`); nothing is hashed yet."""
    verifier = verifier_for(public_key)
    sig_path = _signature_path(artifact, signature)
    if not sig_path.exists():
        raise SentryError(f"signature {sig_path} does not exist")
    return sig_path, signed_claim(read_signed_statement(sig_path, verifier), sig_path, artifact_type)


def check_signed(artifact: Artifact, signed: Claim, sig_path: Path, *, ignore: Sequence[str] = (),
                 default_ignores: bool = True, allow_symlinks: bool = False, device: str | None = None,
                 progress: Progress = None, **options: Any) -> Report:
    """Check ``artifact`` against what a verified signature signs (:func:`signed_claim`'s result),
    the way its format says; VerificationError on a difference. ``options``: those of
    :func:`check_artifact` for a Sentry model, of :func:`_check_dataset` for a dataset; the OMS
    format compares whole files, so the options about tensors do not apply to it."""
    from .manifest import oms
    from .manifest.dataset import DatasetClaim

    if isinstance(signed, oms.OmsManifest):
        if not _is_path(artifact):
            raise SentryError(f"{sig_path} is a model_signing signature: it verifies a model directory or file")
        return _verdict(oms.verify_model(signed, artifact, patterns=ignore, default_ignores=default_ignores,
                                         allow_symlinks=allow_symlinks, exclude=[sig_path],
                                         progress=_setting("progress", progress)))
    # not OMS, not a dataset: claim_class read a Sentry model, a Manifest
    check: Callable[..., Report] = _check_dataset if isinstance(signed, DatasetClaim) else check_artifact
    return check(artifact, signed, sig_path, ignore=ignore, default_ignores=default_ignores,
                 allow_symlinks=allow_symlinks, device=device, progress=progress, **options)


def check_artifact(artifact: Artifact, signed: Manifest, sig_path: Path, *, ignore: Sequence[str] = (),
                   default_ignores: bool = True, allow_symlinks: bool = False, allow_missing: Iterable[str] = (),
                   allow_uncovered: bool = False, strip_prefix: str = "", add_prefix: str = "",
                   device: str | None = None, progress: Progress = None,
                   distributed_timeout: float | None = None, spread_replicas: bool | None = None) -> Report:
    """Hash the artifact as the signed manifest says and compare; VerificationError on a difference.
    The signed default ignores apply unless ``default_ignores`` is False; what was left out is
    listed in the report."""
    options = Options.resolve(_defaults, params=signed.params, ignore=signed.ignore + tuple(ignore),
                              default_ignores=default_ignores and signed.default_ignores,
                              allow_symlinks=signed.allow_symlinks or allow_symlinks, strip_prefix=strip_prefix,
                              add_prefix=add_prefix, device=device, progress=progress,
                              distributed_timeout=distributed_timeout, spread_replicas=spread_replicas)
    ignored: list[str] = []
    actual = _hash(artifact, options, artifact_type=signed.artifact_type, strict=False, ignored=ignored,
                   exclude=[sig_path] + ([signed.sidecar.path] if signed.sidecar else []),
                   signed_roots={it.name: it.root for it in signed.items if it.kind == "file"})
    report = compare_manifests(signed, actual, allow_missing=allow_missing, allow_uncovered=allow_uncovered)
    report.ignored = ignored
    if is_sharded_manifest(actual.items):
        report.replicas_spread = options.spread_replicas
        return _verdict_of_all_ranks(report, options.distributed_timeout)
    return _verdict(report)


def _verdict_of_all_ranks(report: Report, timeout: float | None) -> Report:
    """Every rank folded the same roots, so each names the changed tensors itself; the flags are
    combined before anyone raises, so no rank is left waiting in a collective for one that did."""
    from .hashing.sharded import any_rank

    failed_somewhere = any_rank(not report.ok, timeout)
    report = _verdict(report)
    if failed_somewhere:
        raise ContentMismatch("verification failed on another rank (see its report)", report)
    return report


def _verdict(report: Report) -> Report:
    if not report.ok:
        first = report.lines()[0]
        raise ContentMismatch(f"verification failed: {report.summary()}; {first}", report)
    return report


def sign_model(model_or_path: Artifact, key: SigningKey = None, signature: PathArg | None = None, *,
               password: Password = None, format: SignatureFormat = "sentry", ignore: Sequence[str] = (),
               default_ignores: bool = True, allow_symlinks: bool = False, leaf_size: int | None = None,
               strip_prefix: str = "", add_prefix: str = "", device: str | None = None, progress: Progress = None,
               force: bool = False, key_files: KeyFiles = (), training_data: TrainingDataArg = None,
               dataset_public_key: PublicKey = None, distributed_timeout: float | None = None,
               spread_replicas: bool | None = None) -> Path:
    """Hash a model directory, checkpoint file or in-memory model and write a signature bundle.

    ``key`` is a private key (path or object) or a Signer (``CertificateSigner``,
    ``SigstoreSigner``). ``format="oms"`` writes what model_signing writes and verifies (a path
    only). ``default_ignores=False`` also hashes the top-level VCS entries (.git, ...); the
    choice is recorded in the signature. Returns the signature path (default: beside the
    artifact, ``PATH.sig``).

    The signature never replaces the key file, ``key_files`` (paths, or path -> what it is: the
    files behind a Signer), the artifact or a file inside it; an existing file that is not a
    signature bundle only with ``force=True`` (docs/spec.md §8).

    ``training_data`` links the model to the data it was trained on (docs/spec.md §3.1): a
    dataset signature path, verified first with ``dataset_public_key`` (path, key or Verifier),
    a :class:`~sentry.manifest.lineage.TrainingData` (:func:`dataset_link`'s result), or a list
    of these. ``verify_model``'s report then lists them in ``training_data``.

    A sharded model (DTensors) is signed by every rank of its process group together: all
    compute the same manifest from their shards, rank 0 alone writes the signature
    (``spread_replicas``: as for :func:`verify_model`)."""
    links = _training_data(training_data, dataset_public_key)
    return _sign(model_or_path, "model", key, signature, password, format, leaf_size=leaf_size, ignore=ignore,
                 default_ignores=default_ignores, allow_symlinks=allow_symlinks, strip_prefix=strip_prefix,
                 add_prefix=add_prefix, device=device, progress=progress, key_files=key_files, force=force,
                 training_data=links, distributed_timeout=distributed_timeout, spread_replicas=spread_replicas)


def _training_data(given: TrainingDataArg, dataset_public_key: PublicKey) -> tuple[TrainingData, ...]:
    """The checked links of :func:`sign_model`'s ``training_data``, before any hashing."""
    from .manifest.lineage import checked_links

    return checked_links(given, dataset_public_key is not None,
                         lambda signature: dataset_link(signature, dataset_public_key))


def dataset_link(signature: PathArg, public_key: PublicKey = None) -> TrainingData:
    """Verify a dataset signature (not its samples) and return the link a model signature records
    to it (docs/spec.md §3.1): a :class:`~sentry.manifest.lineage.TrainingData` with the dataset's
    name, signed root and the SHA-256 of the signature file's bytes. Comparing it with a verified
    model's ``report.training_data`` shows the model names this very dataset signature."""
    from .manifest.lineage import MAX_DATASET_NAME, TrainingData, is_dataset_name
    from .signing import parse_statement
    from .signing.bundle import read_bundle_and_digest

    verifier = verifier_for(public_key)
    sig_path = Path(signature)
    bundle, digest = read_bundle_and_digest(sig_path)  # the bytes hashed are the bytes verified
    statement = parse_statement(verifier.verify(bundle))
    claim = signed_claim(statement, sig_path, "dataset")
    if not is_dataset_name(statement.subject_name):
        raise InvalidBundle(f"{sig_path} names its dataset with something other than a printable name "
                                f"of 1 to {MAX_DATASET_NAME} characters")
    return TrainingData(statement.subject_name, claim.subject_digest().hex(), digest)


def verify_model(model_or_path: Artifact, public_key: PublicKey = None, signature: PathArg | None = None, *,
                 ignore: Sequence[str] = (), default_ignores: bool = True, allow_symlinks: bool = False,
                 allow_missing: Iterable[str] = (), allow_uncovered: bool = False, strip_prefix: str = "",
                 add_prefix: str = "", device: str | None = None, progress: Progress = None,
                 distributed_timeout: float | None = None, spread_replicas: bool | None = None) -> Report:
    """Verify the signature, recompute, compare. Raises VerificationError (with ``.report``) on
    any missing, extra or changed item; returns the Report when everything matches.

    A signature of a model in memory covers tensors only: verifying a directory against it, every
    file that is not a checkpoint of verified tensors (config.json, code, pickles) fails the
    verification unless ``allow_uncovered`` accepts it; the report lists them either way.

    ``public_key`` is a public key (path or object) or a Verifier (``CertificateVerifier``,
    ``SigstoreVerifier``). Sentry and model_signing (OMS) signatures are told apart by their
    predicate type. The default ignores the signature recorded apply (for model_signing: the git
    paths) unless ``default_ignores=False``; the report lists every path left out.

    A model whose parameters are DTensors (FSDP2, tensor parallel) is verified by every rank of
    its process group together, each hashing only its own shards (README "At scale");
    ``distributed_timeout`` (seconds, default 600) bounds each wait for the other ranks.
    Replicated tensors (``Replicate`` placements) are hashed whole by every replica, and the copies
    must agree; ``spread_replicas=True`` splits that work among the replicas instead (also for
    plain tensors every rank holds, as under DDP): each rank hashes 1/k and checks only its part
    of its own copy, so use it where the replicas are known to be in sync."""
    return _verify(model_or_path, "model", public_key, signature, ignore=ignore, default_ignores=default_ignores,
                   allow_symlinks=allow_symlinks,
                   allow_missing=allow_missing, allow_uncovered=allow_uncovered, strip_prefix=strip_prefix,
                   add_prefix=add_prefix, device=device, progress=progress, distributed_timeout=distributed_timeout,
                   spread_replicas=spread_replicas)


def sign_dataset(path: PathArg, key: SigningKey = None, signature: PathArg | None = None, *,
                 sidecar: PathArg | None = None, password: Password = None, ignore: Sequence[str] = (),
                 allow_symlinks: bool = False, leaf_size: int | None = None, device: str | None = None,
                 progress: Progress = None, force: bool = False, key_files: KeyFiles = (),
                 part_samples: int = 0) -> Path:
    """Sign a dataset directory: every file is a sample (no default ignores: a top-level .git is
    samples too), listed in a sidecar (default beside the signature: ``train.sig`` +
    ``train.samples.jsonl``) whose records root the signature covers. ``part_samples`` (a power
    of two): the sidecar is split in parts of that many records (``train.samples.000000.jsonl``,
    ...), each signed with its start and root; the dataset root is the same.

    Returns the signature path. ``force`` and ``key_files`` as for :func:`sign_model` (the sidecar
    may replace an earlier sample list)."""
    from .manifest import dataset

    if not _is_path(path):
        raise SentryError("a dataset is given as a directory path")
    o = Options.resolve(_defaults, leaf_size=leaf_size, ignore=ignore, default_ignores=False,
                        allow_symlinks=allow_symlinks, device=device, progress=progress)
    sig_path, side_path, seal = dataset_outputs(path, key, signature, sidecar, password, force, key_files,
                                                part_samples)
    samples = dataset.samples_of(path, o, exclude=[sig_path, side_path],
                                 walk_lazily=not writes_inside(path, side_path))
    seal(o.params, dataset.partitioned(samples, part_samples), o.ignore, o.allow_symlinks)
    return sig_path


def dataset_outputs(path: PathArg, key: SigningKey, signature: PathArg | None, sidecar: PathArg | None,
                    password: Password, force: bool, key_files: KeyFiles,
                    part_samples: int) -> tuple[Path, Path, DatasetSeal]:
    """(signature path, sidecar path, seal) for signing the dataset ``path``, the outputs checked
    before any hashing; ``seal(params, results, ignore, allow_symlinks)`` writes the sidecar (or
    its parts) from :func:`~sentry.manifest.partition.task` results in record order, then the
    bundle: a bundle never points at a sidecar that is not there yet. Shared by the engines
    (sentry.data.ray) that hash the samples elsewhere."""
    from .manifest import dataset
    from .manifest.dataset_claims import claim_of_sidecars
    from .signing import write_bundle
    from .signing._files import write_atomic
    from .signing.outputs import SIDECAR, SIGNATURE

    dataset.check_part_samples(part_samples)
    signer = _signer(key, password)
    sig_path = _signature_path(path, signature)
    side_path = Path(sidecar) if sidecar is not None else dataset.default_sidecar_path(sig_path)
    first = dataset.part_path(side_path, 0) if part_samples else side_path
    if part_samples and writes_inside(path, side_path):
        raise SentryError("a sidecar in parts cannot lie inside the dataset directory",
                          remedy=Remedy("sidecar", "PATH", purpose="outside the dataset"))
    _check_outputs([(SIGNATURE, sig_path), (SIDECAR, first)], path, key, key_files, force)

    def write(part: Path, lines: Iterable[bytes]) -> None:  # parts after the first, known only now, get the same check first
        if part != first:
            _check_outputs([(SIDECAR, part)], path, key, key_files, force)
        write_atomic(part, lines)

    def seal(params: HashParams, results: Iterable[tuple[Iterable[bytes], Part]], ignore: Iterable[str],
             allow_symlinks: bool, members: Iterable[str] = ()) -> None:
        root, count, files = dataset.write_sidecars(side_path, results, write, part_samples)
        options = Options(params, tuple(ignore), (), allow_symlinks)
        claim = claim_of_sidecars(options, side_path, root, count, files, part_samples, members)
        write_bundle(sig_path, signer.sign_claim(Path(os.path.abspath(path)).name, claim))

    return sig_path, side_path, seal


def _dataset_files(path: PathArg | None, public_key: PublicKey, signature: PathArg | None,
                   sidecar: PathArg | None) -> tuple[Path, DatasetClaim, Path]:
    """(signature path, checked claim, sidecar path) of a dataset signature; the sidecar is not
    read yet. ``path`` (the dataset directory) only locates the default signature ``PATH.sig``."""
    from .manifest.dataset_claims import sidecar_location

    if path is None and _setting("signature", signature) is None:
        raise SentryError("no dataset signature: pass signature=PATH")
    sig_path, claim = _read_claim(path, public_key, signature, "dataset")
    return sig_path, claim, sidecar_location(sig_path, claim, sidecar)


def dataset_claim(path: PathArg | None = None, public_key: PublicKey = None, signature: PathArg | None = None, *,
                  sidecar: PathArg | None = None) -> tuple[Path, DatasetClaim, Path]:
    """(signature path, checked :class:`~sentry.manifest.dataset.DatasetClaim`, sidecar location)
    of a dataset signature, for an engine that hashes the samples itself and streams the
    comparison (:func:`~sentry.manifest.dataset.compare_all`); the sidecar is not read yet."""
    public_key, signature = _dataset_settings(public_key, signature)
    return _dataset_files(path, public_key, signature, sidecar)


def load_signed_dataset(path: PathArg | None = None, public_key: PublicKey = None, signature: PathArg | None = None,
                        *, sidecar: PathArg | None = None) -> SignedDataset:
    """Check a dataset signature and its sidecar; the :class:`SignedDataset` that any sample can
    then be checked against on its own. ``path`` (the dataset directory) only locates the default
    signature ``PATH.sig``."""
    from .manifest.dataset import SignedDataset

    public_key, signature = _dataset_settings(public_key, signature)
    sig_path, claim, side_path = _dataset_files(path, public_key, signature, sidecar)
    return SignedDataset.load(claim, side_path, sig_path)


def verify_dataset(path_or_root: PathArg | bytes | bytearray, public_key: PublicKey = None,
                   signature: PathArg | None = None, *, sidecar: PathArg | None = None,
                   samples: Iterable[str] | None = None, ignore: Sequence[str] = (), default_ignores: bool = True,
                   allow_symlinks: bool = False, provenance: ProvenanceSources | None = None,
                   device: str | None = None, progress: Progress = None) -> Report:
    """Verify a dataset directory against its signature and sidecar: every sample, or just the
    named ``samples`` (each hashed on its own). Given a 32-byte root instead (a loader's
    ``hasher.compute()``), check that root against the signature.

    A whole directory is checked as a merge of the sorted listing with the sidecar, read a block
    at a time: memory does not grow with the records. ``provenance``: per-sample provenance to
    check too (:func:`load_provenance`'s argument, or its result): every sample must carry a
    valid signature of its source, and each changed sample names its source. The report lists
    every path left out; ``default_ignores=False`` also checks what a signature made before
    datasets stopped having default ignores left out."""
    public_key, signature = _dataset_settings(public_key, signature)
    if isinstance(path_or_root, (bytes, bytearray)):
        if provenance is not None:
            raise SentryError("per-sample provenance is checked on the samples: pass the dataset directory")
        if _setting("signature", signature) is None:
            raise SentryError("verifying a dataset root needs signature=PATH")
        sig_path, claim = _read_claim(None, public_key, signature, "dataset")
        if bytes(path_or_root) != claim.root:
            raise ContentMismatch(f"the dataset root {bytes(path_or_root).hex()} is not the one {sig_path} signs")
        return Report(checked=claim.samples, root=claim.root.hex())
    if not _is_path(path_or_root):
        raise SentryError("a dataset is given as a directory path, or as the root a loader computed")
    return _verify(path_or_root, "dataset", public_key, signature, sidecar=sidecar, samples=samples, ignore=ignore,
                   default_ignores=default_ignores, allow_symlinks=allow_symlinks, provenance=provenance, device=device, progress=progress)


def _check_dataset(path: PathArg, claim: DatasetClaim, sig_path: Path, *, sidecar: PathArg | None = None,
                   samples: Iterable[str] | None = None, ignore: Sequence[str] = (), default_ignores: bool = True,
                   allow_symlinks: bool = False, provenance: ProvenanceSources | None = None,
                   device: str | None = None, progress: Progress = None) -> Report:
    """A dataset directory against a verified claim and its sidecar (:func:`verify_dataset`)."""
    from .manifest.dataset_claims import check_directory, sidecar_location

    options = Options.resolve(_defaults, params=claim.params, ignore=claim.ignore + tuple(ignore),
                              default_ignores=default_ignores and claim.default_ignores,
                              allow_symlinks=claim.allow_symlinks or allow_symlinks, device=device, progress=progress)
    load_sources = None if provenance is None else lambda: load_provenance(provenance, claim.params.leaf_size)
    return _verdict(check_directory(path, claim, sig_path, sidecar_location(sig_path, claim, sidecar), options,
                                    samples=samples, load_sources=load_sources))


def sign_samples(path: PathArg, key: SigningKey = None, output: PathArg | None = None, *, prefix: str = "",
                 password: Password = None, ignore: Sequence[str] = (), allow_symlinks: bool = False,
                 leaf_size: int | None = None, device: str | None = None, progress: Progress = None,
                 force: bool = False, key_files: KeyFiles = ()) -> Path:
    """Per-sample provenance, at one of a dataset's sources: sign the root of every sample under
    ``path`` (batch ECDSA P-256, one call per 16k samples) into a provenance file, by default
    ``PATH.provenance.jsonl`` beside the directory. ``prefix`` (a directory path ending in ``/``)
    goes before every name: where these samples sit in the assembled dataset. Returns the path.
    ``force`` and ``key_files`` as for :func:`sign_model` (it may replace an earlier provenance file)."""
    from .manifest import dataset
    from .manifest.sidecar import is_plain_name
    from .signing import keys
    from .signing import provenance as prov
    from .signing._files import write_atomic
    from .signing.outputs import PROVENANCE

    if not _is_path(path):
        raise SentryError("a dataset's samples are given as a directory path")
    if prefix and not (prefix.endswith("/") and is_plain_name(prefix[:-1])):
        raise SentryError(f"prefix {prefix!r} must be a relative directory path ending in '/', such as 'lab-a/'")
    private_key = keys.check_signing_key(_private_key(key, password))
    out = Path(output) if output is not None else prov.default_path(path)
    _check_outputs([(PROVENANCE, out)], path, key, key_files, force)
    o = Options.resolve(_defaults, leaf_size=leaf_size, ignore=ignore, default_ignores=False,
                        allow_symlinks=allow_symlinks, device=device, progress=progress)
    items = dataset.samples_of(path, o, exclude=[out], walk_lazily=not writes_inside(path, out))
    write_atomic(out, prov.file_lines(private_key, items, o.params.leaf_size, prefix=prefix, device=o.device))
    return out


def load_provenance(sources: ProvenanceSources, leaf_size: int | None = None) -> Provenance:
    """Per-sample provenance to check samples against: ``sources`` maps each source's provenance
    file to its trusted public key (PEM path or key object), as a dict or ``(file, key)`` pairs;
    a :class:`~sentry.signing.provenance.Provenance` is returned as it is. ``leaf_size``: the
    dataset's, which the sources must have hashed with."""
    from .signing.provenance import Provenance

    loaded = sources if isinstance(sources, Provenance) else Provenance.load(
        sources.items() if isinstance(sources, Mapping) else sources)
    if leaf_size is not None:
        loaded.require_leaf_size(leaf_size)
    return loaded


def protect(model: Artifact, **verify_options: Any) -> Protection:
    """Refuse every forward of ``model`` and of each of its submodules until the whole model
    verified (``verify_model(model, **verify_options)``, once); after a failure every call raises
    it again. Returns a handle whose ``remove()`` takes all hooks off.

    A call that finds the model changed since it verified (a module, parameter or buffer added,
    replaced or removed; an in-place write; ``.to()``; ``load_state_dict``) verifies it again
    first, so it runs only on signed state. Not covered: ``module.forward(x)`` called directly
    (no hooks run), non-persistent buffers (not in the state_dict, so not signed), and code in
    the same process that means harm (it can remove hooks or write memory behind PyTorch's back).
    Verification hashes every tensor: protect an inference model; a forward that updates the
    model's own state (BatchNorm in training mode, an optimizer step) makes the next call re-verify
    and fail."""
    from ._optional import require

    require("torch", "torch", "sentry.protect")
    from .protection import Protection

    return Protection(model, lambda: verify_model(model, **verify_options))
