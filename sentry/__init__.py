"""Sentry: Merkle-hash ML artifacts (models, checkpoints, datasets), sign the roots, verify them.

Public API (torch, cupy and DALI are imported only when a call needs them)::

    sentry.sign_model(model_or_path, key=..., signature=...)
    sentry.verify_model(model_or_path, public_key=..., signature=...)
    sentry.sign_dataset(dir, ...), sentry.verify_dataset(dir or loader root, ...)
    sentry.sign_samples(source_dir, key=...)  # per-sample provenance, checked by loaders and verify_dataset
    sentry.data.get_image_dataloader(dir, batch, ...), sentry.data.VerifiedDataset(dir, ...)
    sentry.configure(public_key=..., signature=...); sentry.protect(model)
"""
from typing import TYPE_CHECKING

from .errors import (
    BadSignature,
    ContentMismatch,
    InvalidBundle,
    InvalidInput,
    MissingDependency,
    Remedy,
    SentryError,
    UnsupportedFormat,
    VerificationError,
)

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and IDEs (no import at run time)
    from . import data
    from .api import (
        configure,
        dataset_link,
        default_signature_path,
        hash_artifact,
        load_provenance,
        load_signed_dataset,
        protect,
        sign_dataset,
        sign_model,
        sign_samples,
        verify_dataset,
        verify_model,
    )
    from .manifest.compare import Report

__version__ = "0.1.0"

_API = {
    "configure", "sign_model", "verify_model", "sign_dataset", "verify_dataset", "protect",
    "hash_artifact", "default_signature_path", "load_signed_dataset", "sign_samples", "load_provenance",
    "dataset_link",
}
__all__ = [  # a literal, so linters and type checkers read it: the lazy API, "Report" and the errors
    "BadSignature", "ContentMismatch", "InvalidBundle", "InvalidInput", "MissingDependency", "Remedy", "Report",
    "SentryError", "UnsupportedFormat", "VerificationError", "configure", "data", "dataset_link",
    "default_signature_path", "hash_artifact", "load_provenance", "load_signed_dataset", "protect", "sign_dataset",
    "sign_model", "sign_samples", "verify_dataset", "verify_model",
]


def __getattr__(name: str) -> object:  # the lazy names' own types come from the TYPE_CHECKING imports
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "data":  # `import sentry; sentry.data.VerifiedDataset(...)` without importing torch/DALI early
        import importlib

        return importlib.import_module(".data", __name__)
    if name == "Report":
        from .manifest.compare import Report

        return Report
    raise AttributeError(f"module 'sentry' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API, lazy names included (REPL completion), and the module's own dunders."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
