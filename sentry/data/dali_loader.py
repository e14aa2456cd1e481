"""DALI loaders that verify every batch against a signed dataset before handing it out.

Images: ``fn.readers.file`` yields each sample's encoded bytes, which are hashed and checked,
and ``fn.decoders.image`` (``mixed``, i.e. nvJPEG, on a GPU) decodes the same bytes in the same
pipeline run, so what is decoded is exactly what was verified. ``.npy``: ``fn.readers.numpy``
(with GPUDirect Storage on a GPU) yields the array without the file's header; the loader reads
the header itself, requires it to describe exactly the dtype and shape DALI produced, and hashes
header + array bytes, which are the file's bytes. Order comes from the reader, and epochs are
exact (``pad_last_batch``; shuffling is a full permutation per epoch), so the dataset root never
depends on the order or on the batch size. ``device="cpu"`` builds a CPU pipeline
(``device_id=None``) that needs no GPU; ``"auto"`` (the default) a GPU one where DALI sees a GPU.

Batches are what DALI's own ``DALIGenericIterator`` yields, ``[{"data": x, "label": y}]`` (one
dict per pipeline), so code written for DALI runs unchanged; ``output="tuple"`` yields ``(x, y)``.
(A list that also unpacked as ``x, y`` would iterate over other things than it indexes.)
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

from .._optional import require
from ..errors import ContentMismatch, InvalidInput, SentryError
from ..manifest.dataset import hash_samples
from .batch_hash import cuda_available
from .verify import IMAGE_EXTENSIONS, DatasetHasher, class_labels, signed_dataset

__all__ = ["KINDS", "OUTPUTS", "DaliLoader", "get_image_dataloader"]

KINDS = {"image": IMAGE_EXTENSIONS, "numpy": (".npy",)}
OUTPUTS = ("dali", "tuple")


def get_image_dataloader(path, batch_size: int | None = None, device: str = "auto", gds="auto", *, batch=None,
                         public_key=None, signature=None, sidecar=None, kind: str = "auto", output: str = "dali",
                         shuffle: bool = False, seed: int = 0, policy: str = "raise", provenance=None,
                         num_threads: int = 2, device_id: int = 0):
    """``(loader, hasher)``: iterate ``loader`` for verified batches, ``[{"data": samples,
    "label": labels}]`` as DALI's ``DALIGenericIterator`` yields them (``output="tuple"``:
    ``(samples, labels)``); samples are torch tensors (a list when their shapes differ), labels an
    int64 tensor. ``hasher.compute()`` is the dataset root for ``sentry.verify_dataset(root)``.
    Verification material may come from ``sentry.configure``. ``batch`` is an alias of ``batch_size``.

    ``kind``: ``"auto"`` (from the sample files: all images or all ``.npy``), ``"image"`` (decoded
    to uint8 HWC RGB, as the PyTorch loader does: grayscale repeated, alpha dropped, EXIF
    orientation applied) or ``"numpy"`` (``.npy`` arrays as stored). ``device``: ``"auto"`` (a GPU
    pipeline where DALI sees a GPU, else a CPU one), ``"gpu"`` or ``"cpu"``. ``gds`` applies to
    ``.npy`` on a GPU pipeline only: ``True`` reads with DALI's GPU reader through cuFile
    (GPUDirect Storage where the system has it, cuFile's compatibility mode otherwise: same bytes;
    without the cuFile library, a warning and the host reader), ``False`` reads on the host and
    copies, ``"auto"`` uses the GPU reader only where GPUDirect Storage is enabled. Labels: index
    of the top directory (ImageFolder), -1 at the top level. ``provenance`` (see
    :func:`sentry.load_provenance`): every batch's per-sample source signatures are checked too,
    in one batch (on the GPU when the pipeline is a GPU one), before the batch is handed out."""
    batch_size = _batch_size(batch_size, batch)
    if kind not in ("auto", *KINDS):
        raise SentryError(f"unknown sample kind {kind!r}: choose auto, image or numpy")
    if output not in OUTPUTS:
        raise SentryError(f"unknown loader output {output!r}: choose dali or tuple")
    if gds != "auto" and not isinstance(gds, bool):
        raise SentryError(f"gds must be 'auto', True or False, got {gds!r}")
    device = _resolve_device(device, device_id)
    root = Path(path)
    signed = signed_dataset(root, public_key, signature, sidecar)
    hasher = DatasetHasher(signed, policy=policy, device="cpu", provenance=provenance,
                           signature_device="auto" if device == "gpu" else "cpu")
    names = hasher.select(root, KINDS[kind] if kind != "auto" else sum(KINDS.values(), ()))
    kind = _sample_kind(root, names) if kind == "auto" else kind
    if not names:
        raise SentryError(f"{root} holds no {kind} samples to load")
    if device == "gpu" and kind == "numpy" and cuda_available():
        hasher.device = "cuda"  # the arrays are in GPU memory: hash them there
    gpu_reader = device == "gpu" and kind == "numpy" and _gpu_reader(gds)
    order = list(range(len(names)))
    if shuffle:
        random.Random(seed).shuffle(order)  # epoch 1; the reader reshuffles after every epoch
    pipe = _pipeline(root, [names[i] for i in order], order, kind, batch_size,
                     device, gpu_reader, shuffle, seed, num_threads, None if device == "cpu" else device_id)
    return DaliLoader(pipe, root, names, class_labels(names), hasher, batch_size, kind, output), hasher


def _batch_size(batch_size, batch) -> int:
    """``batch`` (the original Sentry's name) or ``batch_size``, a positive integer."""
    if batch is not None and batch_size is not None:
        raise SentryError("give the batch size once: batch or batch_size, not both")
    size = batch_size if batch is None else batch
    if size is None:
        raise SentryError("the loader needs a batch size: batch=N")
    if type(size) is not int or size < 1:
        raise SentryError(f"batch size must be a positive integer, got {size!r}")
    return size


def _resolve_device(device: str, device_id: int) -> str:
    """``"cpu"`` or ``"gpu"``; a GPU that is asked for and absent is one sentence, not DALI's CUDA error."""
    if device not in ("auto", "cpu", "gpu"):
        raise InvalidInput(f"unknown loader device {device!r}: choose auto, cpu or gpu")
    require("nvidia.dali", "dali", "the DALI loader")
    from nvidia.dali import backend
    if device == "cpu":
        return device
    try:
        gpus = backend.GetCUDADeviceCount()  # type: ignore[attr-defined]  # DALI's C extension, untyped
    except Exception:  # no driver, or one DALI cannot use
        gpus = 0
    if device == "gpu" and not 0 <= device_id < gpus:
        where = f"GPU {device_id}" if gpus else "a CUDA GPU"
        raise SentryError(f"device='gpu' needs {where} that DALI can use, and this machine has {gpus}: "
                          "use device='auto' or 'cpu'")
    return "gpu" if gpus else "cpu"


def _gpu_reader(gds) -> bool:
    """Whether ``.npy`` samples go straight into GPU memory through DALI's GPU reader (cuFile):
    ``"auto"`` where GPUDirect Storage is enabled; ``True`` wherever cuFile loads (GDS or its
    compatibility mode), else, with a warning, the host reader and a copy, as ``False``."""
    from ..io import kvikio

    have_kvikio = kvikio.available()  # kvikio's import loads the cuFile library of its wheel
    if gds == "auto":
        return have_kvikio and kvikio.gds_enabled()
    if gds and not _cufile_loads():
        warnings.warn("sentry: gds=True, but the cuFile library (libcufile) is not installed: .npy samples are read "
                      "on the host and copied to the GPU", stacklevel=3)
        return False
    return gds


def _cufile_loads() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcufile.so.0")  # what DALI's GPU numpy reader opens
    except OSError:
        return False
    return True


def _sample_kind(root: Path, names) -> str:
    """The one kind of sample files in ``names``; a mix of images and arrays is refused."""
    kinds = {k for n in names for k, ext in KINDS.items() if n.lower().endswith(ext)}
    if len(kinds) > 1:
        raise SentryError(f"{root} holds both image and .npy samples: pass kind='image' or kind='numpy'")
    return kinds.pop() if kinds else "image or .npy"


def _pipeline(root, files, indices, kind, batch_size, device, gpu_reader, shuffle, seed, num_threads, device_id):
    from nvidia.dali import fn, pipeline_def, types

    common = dict(file_root=str(root), files=files, pad_last_batch=True, shuffle_after_epoch=shuffle,
                  seed=seed, name="reader")

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed)
    def images():
        # The label is the sample's index in ``names``: it names the file each output came from.
        raw, index = fn.readers.file(labels=indices, **common)
        decoded = fn.decoders.image(raw, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)
        return raw, decoded, index

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed)
    def arrays():
        data = fn.readers.numpy(device="gpu" if gpu_reader else "cpu", **common)
        if device == "gpu" and not gpu_reader:
            data = data.gpu()
        return data, fn.get_property(data, key="source_info")

    if gpu_reader:
        from ..io.kvikio import configure_cufile

        configure_cufile()  # cufile.json allows the compatibility mode where GDS is absent
    pipe = images() if kind == "image" else arrays()
    pipe.build()
    return pipe


class DaliLoader:
    """One epoch per iteration; every batch is verified before it is yielded."""

    def __init__(self, pipe, root: Path, names, labels, hasher: DatasetHasher, batch_size: int, kind: str,
                 output: str = "dali"):
        self.pipe, self.root, self.names, self.labels = pipe, root, names, labels
        self.index = {n: i for i, n in enumerate(names)}
        self.hasher, self.batch_size, self.kind, self.output = hasher, batch_size, kind, output

    def __len__(self) -> int:
        return -(-len(self.names) // self.batch_size)

    def __iter__(self):
        import torch

        for b in range(len(self)):
            real = min(self.batch_size, len(self.names) - b * self.batch_size)  # the rest is padding
            try:
                outputs = self.pipe.run()
            except RuntimeError as exc:
                raise self._explain(exc) from None
            if self.kind == "image":
                raw, decoded, index = outputs
                idx = [int(_host(index[i])[0]) for i in range(real)]
                buffers = [_host(raw[i]) for i in range(real)]
            else:
                decoded, info = outputs
                idx = [self.index[bytes(_host(info[i])).decode()] for i in range(real)]
                buffers = [self._npy_bytes(self.names[i], decoded[j]) for j, i in enumerate(idx)]
            kept = self.hasher.check([self.names[i] for i in idx], buffers)
            # Copies: DALI reuses its output buffers on the next run.
            samples = [_torch(decoded[j]).clone() for j, item in enumerate(kept) if item is not None]
            labels = torch.tensor([self.labels[i] for i, item in zip(idx, kept) if item is not None])
            if not samples:
                continue
            same = all(s.shape == samples[0].shape for s in samples)
            data = torch.stack(samples) if same else samples
            yield (data, labels) if self.output == "tuple" else [{"data": data, "label": labels}]

    def _explain(self, exc: RuntimeError) -> SentryError:
        """A sample DALI cannot read or decode is usually a tampered one: check the files its
        message names (else, on this error path only, every sample) and name the bad one."""
        text = str(exc)
        named = [os.path.relpath(q, self.root).replace(os.sep, "/") for q in re.findall(r'"([^"]+)"', text)]
        signed = self.hasher.signed
        for names in ([n for n in named if n in self.index], self.names):
            report = signed.compare(hash_samples(self.root, signed.params, names=names), names) if names else None
            if report is not None and not report.ok:
                return ContentMismatch(f"DALI could not load a batch, and {report.lines()[0]}", report)
        lines = [line.strip() for line in text.splitlines()]
        detail = next((line for line in lines[lines.index("encountered:") + 1:] if line), "") if "encountered:" in lines else ""
        return SentryError(f"DALI could not load a batch from {self.root}: {detail or lines[0]}")

    def _npy_bytes(self, name: str, tensor):
        """The file's bytes as DALI loaded them: our read of its header + DALI's array."""
        import numpy as np
        from nvidia.dali.types import to_numpy_type

        header, shape, dtype = _npy_header(self.root / name)
        if tuple(tensor.shape()) != shape or np.dtype(to_numpy_type(tensor.dtype)) != dtype:
            raise ContentMismatch(f"{self.root / name} changed while it was being loaded (its header no longer "
                                    "describes the array read)")
        if self.hasher.device == "cuda":
            import cupy

            return cupy.concatenate([cupy.asarray(np.frombuffer(header, np.uint8)),
                                     cupy.asarray(tensor).reshape(-1).view(cupy.uint8)])
        return header + np.ascontiguousarray(_host(tensor)).tobytes()


def _npy_header(path: Path):
    """(header bytes, shape, dtype) of a .npy file; Fortran-ordered arrays are refused."""
    import numpy as np

    from ..io.posix import FileSource

    with FileSource(path) as src, open(src.fileno(), "rb", closefd=False) as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError:
            raise SentryError(f"{path} is not a .npy file") from None
        if fortran:
            raise SentryError(f"{path} holds a Fortran-ordered array, which the numpy loader does not read")
        end = f.tell()
        return src.read(0, end), tuple(shape), dtype


def _host(tensor):
    """A numpy view of a DALI tensor (copied to the host when it lives on the GPU)."""
    import numpy as np

    return np.asarray(tensor.as_cpu() if hasattr(tensor, "as_cpu") else tensor)


def _torch(tensor):
    import torch

    return torch.from_dlpack(tensor)
