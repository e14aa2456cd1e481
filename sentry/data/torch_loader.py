"""A PyTorch Dataset whose samples are verified before they are returned, and its DataLoader.

Each sample's file is read whole, hashed and checked against the signed sidecar in
``__getitem__``, so a DataLoader raises at the batch that holds a bad sample before yielding it,
in the main process or in a worker. :func:`verified_dataloader` instead carries each sample's
verdict with its batch to the main process, which records them all before handing the batch out:
``hasher.compute()`` and ``hasher.report`` (checked, dropped) cover what workers checked, and a
bad sample raises there, as one sentence.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .._optional import require
from ..io.posix import FileSource
from .verify import DatasetHasher, class_labels, signed_dataset

__all__ = ["VerifiedDataset", "decode_bytes", "decode_image", "verified_dataloader"]


def decode_bytes(name: str, data: bytes):
    """Default decoding: ``.npy`` -> tensor, images -> uint8 HWC RGB tensor (:func:`decode_image`),
    else the bytes."""
    import io

    lower = name.lower()
    if lower.endswith(".npy"):
        import numpy as np

        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
    from .verify import IMAGE_EXTENSIONS

    if lower.endswith(IMAGE_EXTENSIONS):
        return torch.from_numpy(decode_image(data))
    return data


def decode_image(data: bytes):
    """An image as DALI's ``decoders.image(output_type=RGB)`` gives it, so both loaders yield the
    same layout: uint8 HWC RGB, EXIF orientation applied, grayscale repeated, alpha dropped,
    palette expanded, 16-bit grayscale scaled to 8 bits (round(v / 257))."""
    import io

    import numpy as np
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode.startswith("I;16"):
        grey = np.rint(np.asarray(image, dtype=np.float64) / 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(image.convert("RGB"))


def _require_decoders(names) -> None:
    """What the default decoding needs for these samples, checked before any sample is loaded
    (perhaps in a worker process, whose errors reach the caller wrapped in a traceback)."""
    from .verify import IMAGE_EXTENSIONS

    lower = [n.lower() for n in names]
    if any(n.endswith(IMAGE_EXTENSIONS) for n in lower):
        for module in ("numpy", "PIL"):
            require(module, "torch", "decoding image samples")
    elif any(n.endswith(".npy") for n in lower):
        require("numpy", "torch", "decoding .npy samples")


class VerifiedDataset(Dataset):
    """Samples of a signed dataset directory as ``(decoded sample, label)``, each verified first.

    Labels are ImageFolder's (index of the top directory). ``extensions`` picks the sample files
    (others, e.g. a labels file, are still signed but not loaded); ``decode(name, bytes)`` turns
    verified bytes into a sample. Under ``policy="drop"`` a bad sample comes back as None.
    ``provenance`` (see :func:`sentry.load_provenance`): each sample's source signature is checked
    too (on the CPU: samples are checked one at a time, possibly in worker processes).
    """

    def __init__(self, root, *, public_key=None, signature=None, sidecar=None, extensions=None,
                 decode=decode_bytes, policy="raise", provenance=None):
        self.root = Path(root)
        self.hasher = DatasetHasher(signed_dataset(root, public_key, signature, sidecar), policy=policy,
                                    provenance=provenance)
        self.names = self.hasher.select(self.root, extensions)
        if decode is decode_bytes:
            _require_decoders(self.names)
        self.labels = class_labels(self.names)
        self.decode = decode

    def __len__(self) -> int:
        return len(self.names)

    def judged(self, index: int):
        """``(verdict, (sample, label) or None)``: the sample's bytes judged (nothing recorded
        yet, see :meth:`DatasetHasher.judge`) and, only when they verified, decoded."""
        name = self.names[index]
        with FileSource(self.root / name) as src:
            data = src.read(0, src.size)
            src.check_unchanged()
        verdict = self.hasher.judge([name], [data])[0]
        return verdict, None if verdict[1] is not None else (self.decode(name, data), self.labels[index])

    def __getitem__(self, index: int):
        verdict, sample = self.judged(index)
        self.hasher.record([verdict])  # in a worker process, into that process's copy of the hasher
        return sample


class _Judged(Dataset):
    def __init__(self, dataset: VerifiedDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset.judged(index)


def _collate(judged):
    kept = [sample for _, sample in judged if sample is not None]
    return (default_collate(kept) if kept else None), [verdict for verdict, _ in judged]


class _Loader:
    """Iterates a DataLoader of (batch, verdicts), recording the verdicts in the main process's
    hasher before the batch is handed out (where "raise" raises, and "drop" reports)."""

    def __init__(self, loader: DataLoader, hasher: DatasetHasher):
        self.loader, self.hasher = loader, hasher

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch, verdicts in self.loader:
            self.hasher.record(verdicts)
            if batch is not None:
                yield batch


def verified_dataloader(dataset: VerifiedDataset, batch_size: int = 1, **loader_options):
    """``(loader, hasher)``: a DataLoader over ``dataset`` (any options: shuffle, num_workers...)
    yielding verified batches, and the hasher whose ``compute()`` is the dataset root."""
    loader = DataLoader(_Judged(dataset), batch_size=batch_size, collate_fn=_collate, **loader_options)
    return _Loader(loader, dataset.hasher), dataset.hasher
