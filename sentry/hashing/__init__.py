"""The Merkle engine: one front for every backend (CPU now; CUDA arrives in kernels/)."""
from __future__ import annotations

from ..errors import SentryError
from .params import HashParams

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when a usable GPU backend exists, else the CPU."""
    if device not in DEVICES:
        raise SentryError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cuda":
        raise SentryError("the CUDA hashing backend is not available in this build; use --device cpu")
    return "cpu"


def digest_ranges(ranges, params: HashParams, *, progress=None, device="auto"):
    """Digests of file byte ranges (``cpu.FileRange``), in order."""
    resolve_device(device)
    from . import cpu

    return cpu.digest_ranges(ranges, params, progress=progress)


def digest_tensor(name: str, tensor, params: HashParams, *, device="auto"):
    """Digest of a torch tensor's C-contiguous bytes, wherever it lives."""
    resolve_device(device)
    from . import cpu
    from .tensor import cpu_tensor_bytes

    return cpu.digest_bytes(cpu_tensor_bytes(name, tensor), params)


def __getattr__(name):
    if name in ("FileRange", "ItemDigest"):
        from . import cpu

        return getattr(cpu, name)
    raise AttributeError(name)
