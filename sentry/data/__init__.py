"""Loaders that verify every sample against a signed dataset before a batch is handed out.

``get_image_dataloader`` (DALI, GPU or CPU pipelines), ``VerifiedDataset`` +
``verified_dataloader`` (PyTorch). Each returns or holds a hasher whose ``compute()`` is the
dataset root of what it verified; DALI and torch are imported only when used.
"""
_EXPORTS = {
    "get_image_dataloader": "dali_loader",
    "VerifiedDataset": "torch_loader",
    "verified_dataloader": "torch_loader",
    "DatasetHasher": "verify",
    "hash_batch": "batch_hash",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sentry.data' has no attribute {name!r}")
