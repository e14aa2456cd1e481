"""CUDA tensors without CUDA: a stand-in with the part of torch.Tensor that the CUDA Merkle backend
reads (device, sizes, strides, data_ptr, contiguous copies), its bytes in the fake CuPy's device
memory, and ``install`` patching ``torch.cuda.current_stream`` and ``torch.empty(device="cuda")``
so that ``sentry.hashing.cuda.digest_tensors`` runs unmodified.
"""
from __future__ import annotations

import math
import types

import numpy as np
import torch

STREAM = 0x7E57  # the stream handle torch reports (not 0: the backend then wraps it as external)


class Tensor:
    """A view (sizes, strides and offset in elements) over device bytes ``storage`` (a fake CuPy array)."""

    layout, is_quantized = torch.strided, False

    def __init__(self, cupy, storage, dtype, shape, stride, offset: int, index: int = 0):
        self.cupy, self.storage, self.dtype = cupy, storage, dtype
        self.shape, self._stride, self._offset = tuple(shape), tuple(stride), offset
        self.device = torch.device("cuda", index)

    def detach(self):
        return self

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return self.dtype.itemsize

    def stride(self) -> tuple:
        return self._stride

    def is_contiguous(self) -> bool:
        expected = 1
        for n, s in reversed(list(zip(self.shape, self._stride))):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True

    def is_conj(self) -> bool:
        return False

    def is_neg(self) -> bool:
        return False

    def resolve_conj(self):
        return self

    def resolve_neg(self):
        return self

    def data_ptr(self) -> int:
        return self.storage.data.ptr + self._offset * self.element_size()

    def contiguous(self):
        if self.is_contiguous():
            return self
        e = self.element_size()
        view = np.lib.stride_tricks.as_strided(self.storage._view[self._offset * e :], self.shape + (e,),
                                               tuple(s * e for s in self._stride) + (1,), writeable=False)
        out = self.cupy.asarray(np.ascontiguousarray(view).reshape(-1))
        return Tensor(self.cupy, out, self.dtype, self.shape, _contiguous_strides(self.shape), 0, self.device.index)


def _contiguous_strides(shape) -> tuple:
    strides, n = [], 1
    for d in reversed(shape):
        strides.append(n)
        n *= d
    return tuple(reversed(strides))


def to_cuda(cupy, t: torch.Tensor, index: int = 0) -> Tensor:
    """A device copy of a CPU tensor's whole storage, viewed as ``t`` views it."""
    storage = torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()).numpy()
    return Tensor(cupy, cupy.asarray(storage), t.dtype, t.shape, t.stride(), t.storage_offset(), index)


def host_bytes(t: torch.Tensor) -> bytes:
    """The C-contiguous bytes of a CPU tensor (any dtype)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def install(monkeypatch, cupy) -> None:
    empty = torch.empty

    def cuda_empty(*size, dtype=None, device=None, **kwargs):
        if device is None or torch.device(device).type != "cuda":
            return empty(*size, dtype=dtype, device=device, **kwargs)
        assert dtype == torch.uint8 and len(size) == 1, "the backend asks for flat byte buffers"
        return Tensor(cupy, cupy.empty(size[0], cupy.uint8), dtype, size, (1,), 0, torch.device(device).index)

    monkeypatch.setattr(torch, "empty", cuda_empty)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=STREAM))
