"""A fake ``cupy`` whose RawModule kernels run on the CPU launch emulator (tests/native/cuda_emu.h).

It has the surface Sentry uses and no more, with CuPy's semantics where they matter: device arrays
refuse implicit conversion to NumPy, kernel arguments become bytes the way CuPy's
``cupy/cuda/function.pyx`` makes them (None: a NULL pointer; an array or memory pointer: its
address; a NumPy scalar or one-element array: its own bytes; a Python int: int64; a float:
float64), and launches run every block and thread. Streams are names only: every copy and launch
completes before the call returns, so ordering between streams is not tested here. One fake is
live at a time (``make`` replaces the settings of the previous one).
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import threading
import types
import weakref
from pathlib import Path
from typing import ClassVar

import numpy as np

from . import build, memory

_SCALARS = {np.dtype(c).type for c in "?bhilqBHILQefdFD"}  # CuPy's _pointer_numpy_types
MEMCPY_KINDS = {"memcpyHostToHost": 0, "memcpyHostToDevice": 1, "memcpyDeviceToHost": 2,
                "memcpyDeviceToDevice": 3, "memcpyDefault": 4}


class EmulatorError(RuntimeError):
    """A launch the emulator refused or aborted (wrong arguments, divergent barrier, ...)."""


class CUDARuntimeError(RuntimeError):
    pass


class MemoryPointer:
    """An address inside an allocation, which it keeps alive."""

    def __init__(self, mem: memory.Allocation, ptr: int):
        self.mem, self.ptr = mem, ptr

    def __add__(self, offset: int) -> MemoryPointer:
        return MemoryPointer(self.mem, self.ptr + offset)

    def copy_from_host_async(self, src: int, size: int, stream=None) -> None:
        _memcpy(self.ptr, src, size, MEMCPY_KINDS["memcpyHostToDevice"])

    copy_from_host = copy_from_host_async

    def copy_to_host_async(self, dst: int, size: int, stream=None) -> None:
        _memcpy(dst, self.ptr, size, MEMCPY_KINDS["memcpyDeviceToHost"])

    copy_to_host = copy_to_host_async


def _memcpy(dst: int, src: int, size: int, kind: int, stream=None) -> None:
    if size:
        if kind in (2, 3):
            memory.check_device(src, size, "copy from the device")
        if kind in (1, 3):
            memory.check_device(dst, size, "copy to the device")
        ctypes.memmove(dst, src, size)


def _host_view(ptr: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr))[:nbytes]


class ndarray:
    """A device array: an allocation and a NumPy view of its bytes that only the emulator touches."""

    def __init__(self, mem: memory.Allocation, view: np.ndarray, device_id: int = 0):
        self._mem, self._view, self._device_id = mem, view, device_id

    shape = property(lambda self: self._view.shape)
    dtype = property(lambda self: self._view.dtype)
    size = property(lambda self: self._view.size)
    nbytes = property(lambda self: self._view.nbytes)
    ndim = property(lambda self: self._view.ndim)
    strides = property(lambda self: self._view.strides)
    flags = property(lambda self: types.SimpleNamespace(c_contiguous=self._view.flags.c_contiguous))
    device = property(lambda self: Device(self._device_id))

    @property
    def data(self) -> MemoryPointer:
        return MemoryPointer(self._mem, self._view.__array_interface__["data"][0])

    @property
    def __cuda_array_interface__(self) -> dict:
        i = self._view.__array_interface__
        return {"shape": i["shape"], "typestr": i["typestr"], "data": i["data"], "strides": i["strides"], "version": 3}

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, key) -> ndarray:
        return ndarray(self._mem, self._view[key], self._device_id)

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly.")

    def set(self, arr, stream=None) -> None:
        arr = np.asarray(arr)
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: host array {arr.shape} {arr.dtype} for device array {self.shape} {self.dtype}")
        self._view[...] = arr

    def get(self, stream=None) -> np.ndarray:
        return self._view.copy()

    def fill(self, value) -> None:
        self._view.fill(value)

    def view(self, dtype) -> ndarray:
        return ndarray(self._mem, self._view.view(dtype), self._device_id)

    def reshape(self, *shape) -> ndarray:
        return ndarray(self._mem, self._view.reshape(*shape), self._device_id)

    def copy(self) -> ndarray:
        out = empty(self.shape, self.dtype)
        out._view[...] = self._view
        return out


def empty(shape, dtype=np.float64) -> ndarray:
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    mem = memory.Allocation(count * dtype.itemsize)
    return ndarray(mem, _host_view(mem.ptr, mem.size).view(dtype).reshape(shape), Device().id)


def zeros(shape, dtype=np.float64) -> ndarray:
    out = empty(shape, dtype)
    out.fill(0)
    return out


def asarray(obj, dtype=None) -> ndarray:
    if isinstance(obj, ndarray) and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    host = np.asarray(obj, dtype)
    out = empty(host.shape, host.dtype)
    out.set(host)
    return out


def ascontiguousarray(a: ndarray) -> ndarray:
    return a if a.flags.c_contiguous else a.copy()


def asnumpy(a: ndarray) -> np.ndarray:
    return a.get()


# -- devices and streams -------------------------------------------------------------------------------
_current = threading.local()


class Device:
    def __init__(self, device=None):
        self.id = getattr(_current, "device", 0) if device is None else int(device)
        self.attributes = {"MultiProcessorCount": _config.sms}

    def __enter__(self):
        self._previous = getattr(_current, "device", 0)
        _current.device = self.id
        return self

    def __exit__(self, *exc):
        _current.device = self._previous

    def synchronize(self) -> None:
        pass


class Stream:
    _next: ClassVar[list[int]] = [0x5000]  # fake handles, never 0 (the legacy default stream's)

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int | None = None):
        if ptr is None and not null:
            Stream._next[0] += 16
            ptr = Stream._next[0]
        self.ptr = ptr or 0

    @classmethod
    def from_external(cls, obj) -> Stream:
        return cls(ptr=obj.__cuda_stream__()[1])

    def synchronize(self) -> None:
        pass  # everything has completed already

    def __enter__(self):
        stack = _streams()
        stack.append(self)
        return self

    def __exit__(self, *exc):
        _streams().pop()


Stream.null = Stream(null=True)


def ExternalStream(ptr: int, device_id: int = -1) -> Stream:
    return Stream(ptr=ptr)


def _streams() -> list:
    if not hasattr(_current, "streams"):
        _current.streams = []
    return _current.streams


def get_current_stream() -> Stream:
    return _streams()[-1] if _streams() else Stream.null


def alloc(nbytes: int) -> MemoryPointer:
    mem = memory.Allocation(nbytes)
    return MemoryPointer(mem, mem.ptr)


def alloc_pinned_memory(nbytes: int):
    """Host memory with the buffer protocol (as CuPy's PinnedMemoryPointer), freed with it."""
    ptr = memory.host_alloc(nbytes)
    buf = (ctypes.c_uint8 * nbytes).from_address(ptr)
    weakref.finalize(buf, memory.host_free, ptr)
    return buf


# -- kernels --------------------------------------------------------------------------------------------
def _arg_bytes(x) -> bytes:
    """The bytes CuPy hands the driver for one kernel argument."""
    if x is None:
        return bytes(8)
    if isinstance(x, ndarray):
        return x.data.ptr.to_bytes(8, "little")
    if isinstance(x, MemoryPointer):
        return x.ptr.to_bytes(8, "little")
    if isinstance(x, np.ndarray):  # by value, and only one element (CuPy refuses bigger ones too)
        if x.size != 1:
            raise TypeError("a NumPy array kernel argument must have exactly one element")
        return x.tobytes()
    if type(x) not in _SCALARS:
        if isinstance(x, int):
            x = np.int64(x)
        elif isinstance(x, float):
            x = np.float64(x)
        else:
            raise TypeError(f"Unsupported type {type(x)}")
    return x.tobytes()


class Function:
    def __init__(self, module: RawModule, name: str):
        self.module, self.name = module, name
        self.kernel = types.SimpleNamespace(ptr=id(self))  # CuPy's RawKernel.kernel: the CUfunction

    def __call__(self, grid, block, args, shared_mem: int = 0, stream=None) -> None:
        if shared_mem:
            raise EmulatorError(f"{self.name}: dynamic shared memory is not emulated")
        grid = [max(1, int(g)) for g in (tuple(grid) + (1, 1))[:3]]
        block = [max(1, int(b)) for b in (tuple(block) + (1, 1))[:3]]
        data = [_arg_bytes(a) for a in args]
        values = [ctypes.create_string_buffer(d, max(len(d), 1)) for d in data]
        sizes = (ctypes.c_size_t * max(len(data), 1))(*map(len, data))
        pointers = (ctypes.c_void_p * max(len(data), 1))(*map(ctypes.addressof, values))
        err = ctypes.create_string_buffer(2048)
        _config.launches.append((self.name, tuple(grid), tuple(block)))
        rc = self.module.lib.emu_launch(self.name.encode(), (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
                                        pointers, sizes, len(values), _config.workers, _config.order, err, len(err))
        if rc:
            raise EmulatorError(err.value.decode())


class RawModule:
    def __init__(self, code: str, options=(), **kwargs):
        self.code, self.options = code, tuple(options)
        self.lib = build.load(code, _config.build_dir)
        self.names = set(build.kernel_names(code))

    def get_function(self, name: str) -> Function:
        if name not in self.names:
            raise CUDARuntimeError(f"CUDA_ERROR_NOT_FOUND: no kernel named {name}")
        return Function(self, name)


# -- the module ------------------------------------------------------------------------------------------
class _Config:
    """Settings of the installed fake (tests change them between launches)."""

    def __init__(self):
        self.build_dir = Path(".")
        self.sms = 132  # an H100 SXM's multiprocessors
        self.blocks_per_sm = 4  # what the occupancy API answers for every kernel
        self.devices = 1
        self.order = 1  # blocks and threads: 0 in order, 1 reversed, else shuffled with this seed
        self.workers = 1  # OS threads running blocks
        self.launches: list = []  # (kernel, grid, block) of every launch


_config = _Config()


def make(build_dir: Path) -> types.ModuleType:
    """A fresh ``cupy`` module object; its settings are ``module.emu``."""
    global _config
    _config = _Config()
    _config.build_dir = Path(build_dir)
    cupy = types.ModuleType("cupy")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)  # importlib.util.find_spec("cupy") finds it
    for name in ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"):
        setattr(cupy, name, getattr(np, name))
    for f in (ndarray, empty, zeros, asarray, ascontiguousarray, asnumpy, RawModule):
        setattr(cupy, f.__name__, f)
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: _config.devices, CUDARuntimeError=CUDARuntimeError,
        memcpy=lambda dst, src, size, kind: _memcpy(dst, src, size, kind),
        memcpyAsync=lambda dst, src, size, kind, stream: _memcpy(dst, src, size, kind),
        hostAlloc=lambda size, flags=0: memory.host_alloc(size), freeHost=memory.host_free, **MEMCPY_KINDS)
    driver = types.SimpleNamespace(
        occupancyMaxActiveBlocksPerMultiprocessor=lambda func, block_size, dynamic_smem: _config.blocks_per_sm)
    cupy.cuda = types.SimpleNamespace(runtime=runtime, driver=driver, Device=Device, Stream=Stream, ExternalStream=ExternalStream,
                                      get_current_stream=get_current_stream, alloc=alloc,
                                      alloc_pinned_memory=alloc_pinned_memory, MemoryPointer=MemoryPointer)
    cupy.emu = _config
    return cupy
