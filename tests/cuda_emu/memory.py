"""'Device' memory of the emulator: host memory from libc's malloc, exact size, poisoned.

Every allocation is filled with ``POISON`` when made and again when freed, so a kernel reading bytes
nobody wrote (or a freed buffer) sees 0xA5 rather than plausible zeros; under ASan (the sanitizer
tests preload it, and malloc is then ASan's) a read past the end is a report. Pointers are host
addresses, so the kernels dereference them as they are and copies are ``memmove``. Copies check
that their device side lies inside one live allocation.
"""
from __future__ import annotations

import bisect
import ctypes
import threading

POISON = 0xA5
_libc = ctypes.CDLL(None)  # the process's malloc: ASan's when it is preloaded
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]
_lock = threading.Lock()
_starts: list = []  # sorted addresses of live device allocations
_sizes: dict = {}


class Allocation:
    """Device bytes, freed (after poisoning) when the last reference goes."""

    def __init__(self, nbytes: int):
        self.size = nbytes
        self.ptr = _libc.malloc(max(nbytes, 1))
        if not self.ptr:
            raise MemoryError(f"cannot allocate {nbytes} bytes of emulated device memory")
        ctypes.memset(self.ptr, POISON, nbytes)
        with _lock:
            bisect.insort(_starts, self.ptr)
            _sizes[self.ptr] = nbytes

    def __del__(self):
        with _lock:
            _starts.pop(bisect.bisect_left(_starts, self.ptr))
            del _sizes[self.ptr]
        ctypes.memset(self.ptr, POISON, self.size)
        _libc.free(self.ptr)


def check_device(ptr: int, nbytes: int, what: str) -> None:
    """Raise unless [ptr, ptr + nbytes) lies inside one live allocation."""
    with _lock:
        i = bisect.bisect_right(_starts, ptr) - 1
        if i >= 0 and ptr + nbytes <= _starts[i] + _sizes[_starts[i]]:
            return
    raise ValueError(f"{what}: {nbytes} bytes at {ptr:#x} are not inside one live device allocation")


def host_alloc(nbytes: int) -> int:
    """Page-locked host memory stand-in: plain malloc, poisoned."""
    ptr = _libc.malloc(max(nbytes, 1))
    ctypes.memset(ptr, POISON, nbytes)
    return ptr


def host_free(ptr: int) -> None:
    _libc.free(ptr)


def live() -> int:
    """Bytes of device memory allocated and not yet freed."""
    with _lock:
        return sum(_sizes.values())
