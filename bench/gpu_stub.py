"""Bench-only stand-in for a GPU, so that sentry's CUDA verify path runs on a machine without one.

Inside ``stubbed_cuda()``, ``sentry.verify_model`` of a state_dict of :class:`StandIn` tensors
takes the CUDA route as it would on a GPU: ``cuda.digest_tensors`` -> ``_digest`` -> ``gpu_plan``
work tables and windows -> ``_run``'s launches -> ``gpu_plan.assemble``. Only three things are
replaced, and only until the context exits:

- ``sentry.hashing.resolve_device`` answers "cuda" (CuPy and a GPU are not there to ask);
- ``torch.cuda.current_stream`` answers stream 0 (torch here is a CPU build);
- ``sentry.hashing.cuda._Gpu`` is :class:`StubGpu`: allocations are addresses in host dicts, table
  uploads are kept as numpy arrays, and the kernels are replaced by writing each segment's known
  digest (the one it was signed with) where the real kernels would write the roots they compute.

A StandIn has a real shape and dtype over meta storage (no bytes), reports device cuda:0, and
carries its digest and a fake device address, which the stub "kernel" reads back from the
segment table. Nothing in ``sentry/`` imports this module.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import time
from types import SimpleNamespace
from unittest import mock

import torch

import sentry.hashing
from sentry.hashing import cuda, gpu_plan

H = gpu_plan.HASH_LEN
_ADDRESS_STEP = 1 << 40  # fake device addresses: one far-apart range per tensor
_CUDA0 = torch.device("cuda", 0)


class StandIn(torch.Tensor):
    """A tensor of the real shape and dtype with no bytes, that says it lives on cuda:0."""

    # Attribute reads (shape, dtype, numel, ...) as fast as a plain tensor's: a subclass otherwise
    # routes each through Python __torch_function__ (~2-4 us apiece, 10x a real tensor's).
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, shape, dtype, digest, index: int):
        t = torch.Tensor._make_subclass(cls, torch.empty(shape, dtype=dtype, device="meta"))
        t.digest, t.address = digest, (index + 1) * _ADDRESS_STEP
        t.grains = b"".join(digest.chunks)  # what the leaf kernel writes for it (one segment)
        return t

    @property
    def device(self):
        return _CUDA0

    # What cuda.py asks of a tensor that is not answered from the metadata alone. detach() of a
    # CUDA tensor is a ~1 us view; through torch's meta dispatch it would cost far more.
    def detach(self):
        return self

    def data_ptr(self):
        return self.address


@dataclasses.dataclass
class StubLog:
    """What the stub stood in for: seconds in its kernels, and how many of each GPU call (their
    host cost on a real GPU, CuPy's and the driver's, is not in any figure taken with the stub)."""

    seconds: float = 0.0
    calls: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class StubGpu:
    """``cuda._Gpu``'s interface over host dicts; its kernels write the tensors' known digests."""

    def __init__(self, device_id=0, stream_ptr=None, torch_device=None, *, tensors=(), log: StubLog):
        self._by_address = {t.address: t for t in tensors}
        self._next = 1 << 20
        self._bases: list = []  # allocation start addresses, ascending
        self._memory: dict = {}  # base -> bytearray, created on first write
        self._sizes: dict = {}
        self._uploads: dict = {}
        self.log = log
        log.calls["_Gpu setup (device, stream, SM count)"] += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def empty(self, nbytes: int) -> tuple:
        self.log.calls["allocations"] += 1
        base = self._next
        self._next += -(-max(nbytes, H) // 256) * 256
        self._bases.append(base)
        self._sizes[base] = nbytes
        return None, base

    def upload(self, array) -> tuple:
        self.log.calls["copies to the device"] += 1
        owner, base = self.empty(array.nbytes)
        self._uploads[base] = array.copy()
        return owner, base

    def _at(self, address: int) -> tuple:
        """(the allocation's buffer, offset in it) of a device address."""
        base = self._bases[bisect.bisect_right(self._bases, address) - 1]
        return self._memory.setdefault(base, bytearray(self._sizes[base])), address - base

    def download(self, address: int, nbytes: int) -> bytes:
        self.log.calls["synchronized copies back"] += 1
        buf, off = self._at(address)
        return bytes(buf[off : off + nbytes])

    def launch(self, name: str, threads: int, *args) -> None:
        start = time.perf_counter()
        self.log.calls["kernel launches"] += 1
        if name == "merkle_leaves":  # (table, nseg, leaf_size, leaves, nodes, grains)
            buf, off = self._at(int(args[5]))
            for out, t in self._rows(args[0]):
                buf[off + out * H : off + out * H + len(t.grains)] = t.grains
        elif name == "merkle_roots":  # (table, nseg, nodes, roots of this window)
            buf, off = self._at(int(args[3]))
            for i, (_, t) in enumerate(self._rows(args[0])):
                buf[off + i * H : off + (i + 1) * H] = t.digest.root
        self.log.seconds += time.perf_counter() - start

    def _rows(self, table_address) -> list:
        """(first grain index, tensor) per row of an uploaded segment table."""
        table = self._uploads[int(table_address)]
        rows = []
        for ptr, size, out in zip(*(table[:, c].tolist() for c in (gpu_plan.PTR, gpu_plan.SIZE, gpu_plan.OUT))):
            t = self._by_address[ptr]
            # Whole tensors only: a tensor larger than a window (8 GiB at 4 KiB leaves) would be
            # cut into segments, whose block roots this stub does not know.
            assert size == t.digest.size, "a tensor was split into segments"
            rows.append((out, t))
        return rows


@contextlib.contextmanager
def stubbed_cuda(tensors, log: StubLog | None = None):
    """While active, sentry hashes these StandIn tensors through its CUDA path with StubGpu."""
    tensors, log = list(tensors), log or StubLog()

    def gpu(*args, **kwargs):
        return StubGpu(*args, **kwargs, tensors=tensors, log=log)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(sentry.hashing, "resolve_device", lambda device: "cuda"))
        stack.enter_context(mock.patch.object(torch.cuda, "current_stream", lambda device=None: SimpleNamespace(cuda_stream=0)))
        stack.enter_context(mock.patch.object(cuda, "_Gpu", gpu))
        yield
