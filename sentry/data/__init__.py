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


# What a module needs before it can be imported: (import name, extra).
_NEEDS = {"torch_loader": ("torch", "torch")}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module = _EXPORTS[name]
        if module in _NEEDS:
            from .._optional import require

            require(*_NEEDS[module], f"sentry.data.{name}")
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module 'sentry.data' has no attribute {name!r}")
