"""The Merkle engine: one front for both backends, CPU (``cpu.py``) and CUDA (``cuda.py``)."""
from __future__ import annotations

import logging

from .. import _gpu
from .params import HashParams
from .plan import FileRange, ItemDigest  # the engine's input and result types

__all__ = ["FileRange", "ItemDigest", "digest_ranges", "digest_tensor", "digest_tensors", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """The backend to use: 'auto' picks CUDA when a usable GPU (and CuPy) is there, else the CPU
    (sentry._gpu.resolve_device, which says why 'cuda' cannot run)."""
    return _gpu.resolve_device(device, "hashing")


def digest_ranges(ranges, params: HashParams, *, progress=None, device="auto"):
    """Digests of file byte ranges (``plan.FileRange``), in order."""
    backend = resolve_device(device)
    log.debug("hashing %d file ranges on the %s backend (device %r)", len(ranges), backend, device)
    if backend == "cuda":
        from . import cuda

        return cuda.digest_ranges(ranges, params, progress)
    from . import cpu

    return cpu.digest_ranges(ranges, params, progress=progress)


def digest_tensors(named_tensors, params: HashParams, *, device="auto", progress=None) -> list:
    """Digests of torch tensors' C-contiguous bytes, in order, each hashed where it lives.

    With the CUDA backend, tensors on GPUs are hashed in place, each device's in one run of the
    kernels; tensors in host memory, and every tensor with the CPU backend, by the CPU backend
    (a GPU tensor is then copied to the host, one at a time). 'auto' looks for a GPU backend only
    when some tensor is on a GPU. ``progress(nbytes)`` is called as items are done.
    """
    from . import cpu
    from .tensor import check_tensor, cpu_tensor_bytes

    named_tensors = list(named_tensors)
    for name, t in named_tensors:
        check_tensor(name, t)
    on_gpu = [i for i, (_, t) in enumerate(named_tensors) if t.device.type == "cuda"]
    out: list = [None] * len(named_tensors)
    backend = resolve_device(device) if on_gpu or device != "auto" else "cpu"
    if backend == "cuda" and on_gpu:
        from . import cuda

        for i, d in zip(on_gpu, cuda.digest_tensors([named_tensors[i][1] for i in on_gpu], params)):
            out[i] = d
    for i, (name, t) in enumerate(named_tensors):
        if out[i] is None:
            out[i] = cpu.digest_bytes(cpu_tensor_bytes(name, t), params)
        if progress:
            progress(out[i].size)
    return out


def digest_tensor(name: str, tensor, params: HashParams, *, device="auto"):
    """Digest of one torch tensor's C-contiguous bytes, wherever it lives."""
    return digest_tensors([(name, tensor)], params, device=device)[0]

