"""Stand-ins for kvikio and CuPy, backed by numpy and POSIX reads, to run the GPU file paths here.

``install(monkeypatch)`` puts them in ``sys.modules`` and replaces the two pieces of the CUDA
backend that need a real GPU (the stream handle and ``_run``, the kernels' launches) with the CPU
backend, so that everything between (reader choice, kvikio opens and reads, device buffers and
where blocks go in them, the work tables, the file driver) runs as it would on a GPU. The fake
kvikio counts reads issued and finished, and can hold each read back until the next one is issued
(``gate``), come up short (``short``) or fail (``error``).
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import types

import numpy as np

from sentry.hashing import cpu, cuda, gpu_plan, merkle
from sentry.io import kvikio as kio

GATE_TIMEOUT = 2.0  # seconds a gated read waits for the next one before giving up


class DeviceArray(np.ndarray):
    """'Device' memory: numpy's, with CuPy's host-to-device ``set`` and ``data.ptr``."""

    def set(self, arr, stream=None):
        self[...] = arr

    @property
    def data(self):
        return _Pointer(self)


class FakeCupy(types.ModuleType):
    def __init__(self):
        super().__init__("cupy")
        self.uint8 = np.uint8
        self.allocations = []  # bytes of each device buffer
        self.buffers = []  # the device buffers themselves
        self.pinned = []  # bytes of each pinned host buffer
        self.runs = []  # see install()
        self.cuda = types.SimpleNamespace(Device=_Device, Stream=lambda non_blocking=False: types.SimpleNamespace(ptr=0),
                                          alloc_pinned_memory=self._pinned)

    def empty(self, n, dtype):
        self.allocations.append(n)
        self.buffers.append(np.empty(n, dtype).view(DeviceArray))
        return self.buffers[-1]

    def at(self, ptr: int, size: int) -> tuple:
        """(buffer, offset) of the ``size`` device bytes at address ``ptr``; AssertionError if they
        do not lie inside one buffer."""
        for buf in self.buffers:
            offset = ptr - buf.ctypes.data
            if 0 <= offset and offset + size <= buf.nbytes:
                return buf, offset
        raise AssertionError(f"{size} bytes at {ptr:#x} are outside every device buffer")

    def _pinned(self, n):
        self.pinned.append(n)
        return bytearray(n)


class _Device:
    def __init__(self, device_id=0):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class FakeKvikio(types.ModuleType):
    def __init__(self):
        super().__init__("kvikio")
        self.defaults = types.SimpleNamespace(is_compat_mode_preferred=lambda: True)
        self.opened = []  # the paths CuFile was given
        self.before_open = None  # called with the path just before CuFile opens it
        self.issued = self.finished = 0
        self.gate = None  # total reads expected: hold read i until read i+1 is issued (or all are)
        self.short = 0  # bytes each read leaves out
        self.error = None  # a read raises RuntimeError(error)
        self.cond = threading.Condition()
        kv = self

        class CuFile:
            def __init__(self, path, flags="r"):
                kv.opened.append(path)
                if kv.before_open:
                    kv.before_open(path)
                self._fd = os.open(path, os.O_RDONLY)

            def fileno(self):
                return self._fd

            def pread(self, buf, size, file_offset, task_size=None):
                with kv.cond:
                    index = kv.issued
                    kv.issued += 1
                    kv.cond.notify_all()
                return _Future(kv, self._fd, buf, size, file_offset, index)

            def close(self):
                os.close(self._fd)

        self.CuFile = CuFile

    def in_flight(self) -> int:
        with self.cond:
            return self.issued - self.finished


class _Future:
    def __init__(self, kv, fd, buf, size, offset, index):
        self.kv, self.fd, self.buf, self.size, self.offset, self.index = kv, fd, buf, size, offset, index

    def get(self):
        kv = self.kv
        with kv.cond:
            if kv.gate is not None:
                kv.cond.wait_for(lambda: kv.issued > self.index + 1 or kv.issued >= kv.gate, GATE_TIMEOUT)
        try:
            if kv.error:
                raise RuntimeError(kv.error)
            return os.preadv(self.fd, [memoryview(self.buf)[: self.size - kv.short]], self.offset)
        finally:
            with kv.cond:
                kv.finished += 1
                kv.cond.notify_all()


def install(monkeypatch, *, with_kvikio: bool = True):
    """Fake CuPy, and fake kvikio or none (its import then fails); returns (cupy, kvikio or None).

    ``cupy.runs`` gets, for each run of the kernels' stand-in, (reads in flight, [(buffer offset,
    bytes) of each segment]).
    """
    fake_cupy, fake_kvikio = FakeCupy(), FakeKvikio() if with_kvikio else None
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "kvikio", fake_kvikio)  # None: ImportError on import
    monkeypatch.setenv(kio.CONFIG_ENV, str(kio.DEFAULT_CONFIG))  # configure_cufile() sets it; undone after

    def run(gpu, work, leaf_size, pointers, window_leaves):
        """The kernels' stand-in: each segment's grain roots and root from the CPU backend, over
        the device bytes at the address ``pointers`` gives."""
        grains, roots, placed = [], [], []
        for window, _ in gpu_plan.windows(work.segments, leaf_size, window_leaves):
            segs = work.segments[window.start : window.stop]
            for seg, ptr in zip(segs, pointers(segs)):
                buf, offset = fake_cupy.at(ptr, seg.size)
                data = buf[offset : offset + seg.size]
                placed.append((offset, seg.size))
                grains.append(cpu._chunk_roots(data, leaf_size, seg.grain))
                roots.append(merkle.root_of_hashes(merkle.split_hashes(grains[-1])))  # grains are aligned subtrees
        fake_cupy.runs.append((fake_kvikio.in_flight() if fake_kvikio else 0, placed))
        return b"".join(grains), b"".join(roots)

    monkeypatch.setattr(cuda, "_Gpu", lambda device_id, stream_ptr: None)
    monkeypatch.setattr(cuda, "_run", run)
    return fake_cupy, fake_kvikio


class StagedArray(DeviceArray):
    """Device memory of :class:`FakeSignerCupy`: each host-to-device copy leaves in ``staged``
    what the real stack would leave on the host."""

    staged: list | None = None
    pinned_ours: dict | None = None

    def set(self, arr, stream=None):  # pageable source: the driver stages it in buffers of its own
        self.staged.append(bytearray(np.ascontiguousarray(arr).tobytes()))
        self[...] = arr

    def get(self):
        return np.array(self)


class _Pointer:
    """CuPy's ``array.data``: the address, and (for a StagedArray) copies from the host."""

    def __init__(self, array: DeviceArray):
        self.array, self.ptr = array, array.ctypes.data

    def copy_from_host_async(self, src: int, size: int, stream=None):
        source = np.frombuffer((ctypes.c_uint8 * size).from_address(src), np.uint8)
        if src not in self.array.pinned_ours:  # not page-locked: staged by the driver
            self.array.staged.append(bytearray(source.tobytes()))
        self.array[:size] = source

    copy_from_host = copy_from_host_async


class FakeSignerCupy(FakeCupy):
    """FakeCupy with what the batch signer (sentry/crypto/cuda.py) uses. Its kernels run as the
    CPU backend. ``staged`` keeps a view of every host buffer the signer handed over, as the real
    stack keeps it after the call: CuPy's pinned pool keeps the staging copy of ``asarray``, the
    driver its staging copy of a pageable source, and a page-locked buffer from ``hostAlloc``
    keeps whatever it held when ``freeHost`` released it."""

    def __init__(self):
        super().__init__()
        self.staged: list = []
        self.pinned_ours: dict = {}  # address -> ctypes buffer, from hostAlloc
        self.freed = 0
        self.array = type("StagedArray", (StagedArray,), {"staged": self.staged, "pinned_ours": self.pinned_ours})
        self.cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=RuntimeError,
                                                  hostAlloc=self._host_alloc, freeHost=self._free_host)
        self.cuda.get_current_stream = lambda: types.SimpleNamespace(ptr=0, synchronize=lambda: None)
        self.RawModule = _SignerModule

    def empty(self, n, dtype):
        return super().empty(n, dtype).view(self.array)

    def zeros(self, n, dtype):
        out = self.empty(n, dtype)
        out.fill(0)
        return out

    def asarray(self, host):  # CuPy stages through a buffer of its pinned pool, kept unwiped
        host = np.ascontiguousarray(host)
        self.staged.append(bytearray(host.tobytes()))
        return host.copy().view(self.array)

    def _host_alloc(self, size, flags):
        buf = (ctypes.c_uint8 * size)()
        self.pinned_ours[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def _free_host(self, ptr):
        self.staged.append(bytearray(self.pinned_ours.pop(ptr)))  # freed as it was: nobody wipes it later
        self.freed += 1


class _SignerModule:
    def __init__(self, code, options):
        pass

    def get_function(self, name):
        from sentry.crypto import cpu

        def build_table(grid, block, args):
            pass

        def sign_batch(grid, block, args):
            keys, index, digests, _table, out, count = args
            self.keys = keys  # the device buffer, to look at after the call
            raw = cpu.sign(bytearray(keys.tobytes()), None if index is None else list(index), digests.tobytes())
            out[: 64 * int(count)] = np.frombuffer(raw, np.uint8)

        return {"p256_build_table": build_table, "p256_sign_batch": sign_batch}[name]


def install_signer(monkeypatch):
    """A FakeSignerCupy, and ``sentry.crypto.cuda`` loaded against it (undone after the test)."""
    return load_crypto_cuda(monkeypatch, FakeSignerCupy())


def load_crypto_cuda(monkeypatch, fake):
    """``sentry.crypto.cuda`` loaded afresh against the fake CuPy ``fake`` (undone after the test)."""
    import importlib.util

    from cuda_emu import isolate

    import sentry.crypto

    monkeypatch.setitem(sys.modules, "cupy", fake)
    isolate(monkeypatch)
    spec = importlib.util.find_spec("sentry.crypto.cuda")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "sentry.crypto.cuda", module)
    monkeypatch.setattr(sentry.crypto, "cuda", module, raising=False)
    return fake
