"""The CUDA Merkle backend: the same roots as the CPU backend, computed on the GPU where the bytes are.

Kernels (``kernels/merkle.cu``) are compiled by NVRTC through CuPy on first use, once per device
under a lock (the file reader threads start at once), for the running GPU's architecture (CuPy
also caches the binary on disk per architecture).
Work tables come from :mod:`.gpu_plan`: all items of a call (every tensor of a model) go through
one leaf launch and one launch per tree level per window of at most ``WINDOW_LEAVES`` leaves.

Memory: inputs are read in place (torch tensors by ``data_ptr()``, CuPy arrays by their pointer).
The only scratch is the node array, 32 bytes per leaf of a window (0.78% of the bytes at 4 KiB
leaves, never more than ``WINDOW_LEAVES * 32`` = 64 MiB), plus a few bytes per item. A strided
tensor (or a conjugate / negative view) is first copied to a C-contiguous tensor, one window's
worth at a time: that costs the size of those tensors. For torch inputs the scratch comes from
torch's caching allocator and the kernels run on torch's current stream, so they follow the
writes that made the tensors and use memory torch already holds.

Files (``digest_ranges``) are read by ``FILE_WORKERS`` threads, each into its own device buffer of
``FILE_BLOCK_BYTES``, and hashed there while the other threads read: with kvikio's CuFile
(:mod:`sentry.io.kvikio`: GPUDirect Storage, or kvikio's compatibility mode) when kvikio is
installed, else through a pinned host buffer per thread. ``file_reader()`` says which. The
file-range logic (blocks, bounded memory, short reads, changed-file checks) is the CPU backend's.

CuPy is imported only here and only when used: ``import sentry`` needs neither CuPy nor torch.
"""
from __future__ import annotations

import functools
import queue
from typing import Optional

import numpy as np

from ..errors import SentryError
from ..io import kvikio as kvikio_io
from ..io.posix import FileSource
from . import cpu, gpu_plan, merkle
from .kernel_source import NVRTC_OPTIONS, PerDevice, source
from .params import HashParams

WINDOW_LEAVES = 1 << 21  # leaves per launch window: a node array of 64 MiB at most
FILE_BLOCK_BYTES = kvikio_io.BLOCK_BYTES  # one device buffer (and pinned buffer without kvikio) per reader thread
FILE_WORKERS = 4  # reader threads; at least 2, so that one block is read while another hashes
THREADS = 256  # per block
BLOCKS_PER_SM = 16  # grid cap for the grid-stride loops
H = gpu_plan.HASH_LEN
KERNELS = ("merkle_leaves", "merkle_level", "merkle_roots")


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> Optional[str]:
    """Why the backend cannot run here (None when it can). Never raises; probed once."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
        return "no CUDA GPU is visible"
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda13x)"
    except Exception as exc:  # no driver, driver too old, device busy, ...
        return f"no usable CUDA GPU ({type(exc).__name__}: {exc})"


def available() -> bool:
    return unavailable_reason() is None


def _compile(device_id: int) -> dict:
    """The kernels of merkle.cu, compiled by NVRTC and loaded on ``device_id``."""
    import cupy

    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=source("merkle.cu"), options=NVRTC_OPTIONS)
        return {name: module.get_function(name) for name in KERNELS}


_kernels = PerDevice(_compile)


class _StreamRef:
    """A raw stream handle in the CUDA stream protocol (for ``cupy.cuda.Stream.from_external``)."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    def __cuda_stream__(self):
        return (0, self.ptr)


class _Gpu:
    """One device, one stream, one allocator: everything a run of the kernels needs."""

    def __init__(self, device_id: int, stream_ptr: Optional[int] = None, torch_device=None):
        import cupy

        self.cupy, self.rt = cupy, cupy.cuda.runtime
        self.device = cupy.cuda.Device(device_id)
        self.torch_device = torch_device
        with self.device:
            if stream_ptr is None:
                self.stream = cupy.cuda.get_current_stream()
            elif stream_ptr == 0:  # torch's default stream is the legacy default stream
                self.stream = cupy.cuda.Stream.null
            elif hasattr(cupy.cuda.Stream, "from_external"):
                self.stream = cupy.cuda.Stream.from_external(_StreamRef(stream_ptr))
            else:  # CuPy < 14
                self.stream = cupy.cuda.ExternalStream(stream_ptr, device_id)
        self.grid_cap = self.device.attributes["MultiProcessorCount"] * BLOCKS_PER_SM

    def __enter__(self):
        self.device.__enter__()
        self.stream.__enter__()
        return self

    def __exit__(self, *exc):
        self.stream.__exit__(*exc)
        self.device.__exit__(*exc)

    def empty(self, nbytes: int) -> tuple:
        """(owner, address) of ``nbytes`` of device memory, from torch's allocator for torch inputs."""
        nbytes = max(nbytes, H)
        if self.torch_device is not None:
            import torch

            t = torch.empty(nbytes, dtype=torch.uint8, device=self.torch_device)
            return t, t.data_ptr()
        mem = self.cupy.cuda.alloc(nbytes)
        return mem, mem.ptr

    def upload(self, array: np.ndarray) -> tuple:
        owner, ptr = self.empty(array.nbytes)
        if array.nbytes:
            self.rt.memcpyAsync(ptr, array.ctypes.data, array.nbytes, self.rt.memcpyHostToDevice, self.stream.ptr)
        return owner, ptr

    def download(self, ptr: int, nbytes: int) -> bytes:
        out = np.empty(nbytes, np.uint8)
        self.stream.synchronize()
        if nbytes:
            self.rt.memcpy(out.ctypes.data, ptr, nbytes, self.rt.memcpyDeviceToHost)
        return out.tobytes()

    def launch(self, name: str, threads: int, *args) -> None:
        if threads:
            grid = min(-(-threads // THREADS), self.grid_cap)
            _kernels.get(self.device.id)[name]((grid,), (THREADS,), args)


def _run(gpu: _Gpu, work: gpu_plan.Work, leaf_size: int, pointers, window_leaves: int) -> tuple:
    """Run the kernels over every window of ``work``: (grain roots, segment roots) as bytes."""
    u32, u64 = np.uint32, np.uint64
    total = sum(merkle.leaf_count(s.size, leaf_size) for s in work.segments)
    keep = []  # owners of the device memory below, until the results are downloaded

    def alloc(nbytes: int) -> int:
        owner, ptr = gpu.empty(nbytes)
        keep.append(owner)
        return ptr

    def upload(array: np.ndarray) -> int:
        owner, ptr = gpu.upload(array)
        keep.append(owner)
        return ptr

    with gpu:
        nodes, grains, roots = alloc(min(window_leaves, total) * H), alloc(work.grains * H), alloc(len(work.segments) * H)
        for first, table, firsts, counts in gpu_plan.window_tables(work, leaf_size, window_leaves, pointers):
            tab, fst = upload(table), upload(firsts)
            nseg, nleaves = u32(len(table)), int(table[:, gpu_plan.LEAVES].sum())
            gpu.launch("merkle_leaves", nleaves, u64(tab), nseg, u32(leaf_size), u64(nleaves), u64(nodes), u64(grains))
            for level, n in enumerate(counts):
                level_firsts = u64(fst + level * len(table) * 8)
                gpu.launch("merkle_level", n, u64(tab), nseg, level_firsts, u32(level), u64(n), u64(nodes), u64(grains))
            gpu.launch("merkle_roots", len(table), u64(tab), nseg, u64(nodes), u64(roots + first * H))
        return gpu.download(grains, work.grains * H), gpu.download(roots, len(work.segments) * H)


def _digest(gpu: _Gpu, sizes, pointer, params: HashParams, window_leaves: int = WINDOW_LEAVES) -> list:
    """Digests of items in device memory: ``pointer(i)`` is (owner, address) of item i's bytes; it
    is asked once per window that holds the item, and the owner kept until the next window.
    ``window_leaves`` (a power of two) is also the largest segment: bigger items fold on the host."""
    work = gpu_plan.plan(sizes, params, window_leaves)
    if not work.segments:  # nothing but empty items
        return gpu_plan.assemble(work, b"", b"")
    held: dict = {}

    def pointers(segs):
        nonlocal held
        window: dict = {}
        for s in segs:
            if s.item not in window:
                window[s.item] = held.get(s.item) or pointer(s.item)
        held = window  # the previous window's copies are freed in stream order, after its launches
        return [window[s.item][1] + s.start for s in segs]

    return gpu_plan.assemble(work, *_run(gpu, work, params.leaf_size, pointers, window_leaves))


# -- torch tensors and CuPy arrays ---------------------------------------------------------------------
def _tensor_pointer(t) -> tuple:
    """(owner, address) of a CUDA tensor's C-contiguous bytes: itself, or a contiguous copy."""
    if not t.is_contiguous() or t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg().contiguous()
    return t, t.data_ptr()


def digest_tensors(tensors, params: HashParams = HashParams()) -> list:
    """Digests of torch tensors on CUDA devices, in order: each device's tensors in one run."""
    import torch

    by_device: dict = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    out: list = [None] * len(tensors)
    for dev, indices in by_device.items():
        if dev.type != "cuda":
            raise SentryError(f"the CUDA backend hashes tensors on CUDA devices, not on {dev}")
        group = [tensors[i].detach() for i in indices]
        gpu = _Gpu(dev.index, torch.cuda.current_stream(dev).cuda_stream, torch_device=dev)
        sizes = [t.numel() * t.element_size() for t in group]
        for i, d in zip(indices, _digest(gpu, sizes, lambda k: _tensor_pointer(group[k]), params)):
            out[i] = d
    return out


def digest_device_buffer(buf, params: HashParams = HashParams()) -> cpu.ItemDigest:
    """Digest of a CuPy array (or any ``__cuda_array_interface__`` object)'s C-contiguous bytes,
    hashed in place (a non-contiguous array is copied first), on CuPy's current stream."""
    import cupy

    arr = cupy.asarray(buf)
    if not arr.flags.c_contiguous:
        arr = cupy.ascontiguousarray(arr)
    return _digest(_Gpu(arr.device.id), [arr.nbytes], lambda _: (arr, arr.data.ptr), params)[0]


# -- files ---------------------------------------------------------------------------------------------
def file_reader() -> str:
    """How ``digest_ranges`` reads files: ``"kvikio"`` when kvikio imports (CuFile straight into
    device buffers, through GPUDirect Storage or kvikio's compatibility mode, whichever kvikio picks
    for each file under Sentry's cufile.json: ``DeviceFileSource.gds``), else ``"pinned"`` (pread
    into pinned host buffers, then copied)."""
    return "kvikio" if kvikio_io.available() else "pinned"


class _Reader:
    """One reader thread's stream and device buffer: ``_fill`` puts a file block there, then it is
    hashed in place."""

    def __init__(self, device_id: int, nbytes: int):
        import cupy

        with cupy.cuda.Device(device_id):
            self.cuda_stream = cupy.cuda.Stream(non_blocking=True)
            self.dev = cupy.empty(nbytes, dtype=cupy.uint8)
        self.gpu = _Gpu(device_id, self.cuda_stream.ptr)

    def hash_block(self, src, offset: int, length: int, leaf_size: int, grain: int) -> bytes:
        block = self.dev[:length]
        self._fill(src, offset, block)
        return _hash_on_device(self.gpu, block, leaf_size, grain)  # synchronized: the buffers are free again


class _PinnedReader(_Reader):
    """pread into a pinned host buffer, then an asynchronous copy to the device on the thread's stream."""

    def __init__(self, device_id: int, nbytes: int):
        import cupy

        super().__init__(device_id, nbytes)
        self.host = np.frombuffer(cupy.cuda.alloc_pinned_memory(nbytes), np.uint8, nbytes)

    def _fill(self, src, offset: int, block) -> None:
        host = self.host[: block.nbytes]
        src.read_into(offset, host)
        block.set(host, stream=self.cuda_stream)


class _KvikioReader(_Reader):
    """kvikio reads straight into the device buffer (``src`` is a DeviceFileSource)."""

    def _fill(self, src, offset: int, block) -> None:
        src.read_device(offset, block)  # returns once the bytes are in device memory


def _hash_on_device(gpu: _Gpu, block, leaf_size: int, grain: int) -> bytes:
    """Grain roots of one block of a file, a CuPy array of bytes."""
    n = merkle.leaf_count(block.nbytes, leaf_size)
    work = gpu_plan.Work([None], [gpu_plan.Segment(0, 0, block.nbytes, grain, 0)], -(-n // grain))
    grains, _ = _run(gpu, work, leaf_size, lambda segs: [block.data.ptr], n)
    return grains


def digest_ranges(ranges, params: HashParams = HashParams(), progress=None, *, follow_symlinks: bool = False) -> list:
    """Digests of file byte ranges (``cpu.FileRange``), in order, hashed on the current GPU.

    The CPU backend's driver cuts the ranges into aligned blocks of ``FILE_BLOCK_BYTES``, opens and
    checks every file; ``FILE_WORKERS`` threads each read a block into their own device buffer and
    hash it there, so that while one block hashes the others are being read. The reads go through
    kvikio or pinned host buffers, as ``file_reader()`` says.
    """
    import cupy

    device_id = cupy.cuda.Device().id  # the caller's current device, for the worker threads too
    if file_reader() == "kvikio":
        reader, open_file = _KvikioReader, kvikio_io.DeviceFileSource
    else:
        reader, open_file = _PinnedReader, FileSource
    free: queue.SimpleQueue = queue.SimpleQueue()  # readers not in use; at most one per thread

    def hash_block(src, offset, length, leaf_size, grain):
        try:
            r = free.get_nowait()
        except queue.Empty:
            r = reader(device_id, FILE_BLOCK_BYTES)
        try:
            return r.hash_block(src, offset, length, leaf_size, grain)
        finally:
            free.put(r)

    return cpu.digest_ranges(ranges, params, progress, FILE_WORKERS, follow_symlinks=follow_symlinks,
                             hash_block=hash_block, block_bytes=FILE_BLOCK_BYTES, open_file=open_file)
