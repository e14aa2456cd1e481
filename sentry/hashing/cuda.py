"""The CUDA Merkle backend: the same roots as the CPU backend, computed on the GPU where the bytes are.

Kernels (``kernels/merkle.cu``) are compiled by NVRTC through CuPy on first use, once per device
under a lock (the file reader threads start at once), for the running GPU's architecture
(:mod:`sentry._gpu`, which also says whether a GPU is usable at all).
Work tables come from :mod:`.gpu_plan`: all items of a call (every tensor of a model) go through
one leaf launch (which also makes the 8 tree levels above the leaves) and one launch per higher
tree level per window of at most ``WINDOW_LEAVES`` node slots; each grid is one wave of blocks,
sized with the occupancy API.

Memory: inputs are read in place (torch tensors by ``data_ptr()``, CuPy arrays by their pointer),
as the aligned 16-byte words that hold their bytes. The only scratch is the node array, 32 bytes
per slot of a window (a leaf, or a gap that aligns the next item's tree: about 0.78% of the bytes
at 4 KiB leaves, never more than ``WINDOW_LEAVES * 32`` = 64 MiB), plus a few bytes per item. A strided
tensor (or a conjugate / negative view) is first copied to a C-contiguous tensor, one window's
worth at a time: that costs the size of those tensors. For torch inputs the scratch comes from
torch's caching allocator and the kernels run on torch's current stream, so they follow the
writes that made the tensors and use memory torch already holds.

Files (``digest_ranges``) are read by ``FILE_WORKERS`` threads, each into its own device buffer of
``FILE_BATCH_BYTES``, and hashed there while the other threads read: many blocks of
``FILE_BLOCK_BYTES`` (of one large file or several) or many small files per buffer, each on a leaf
boundary, hashed by one run of the kernels over a segment per block. The reads go through kvikio's
CuFile (:mod:`sentry.io.kvikio`: GPUDirect Storage, or kvikio's compatibility mode) when kvikio is
installed, else through a pinned host buffer per thread. ``file_reader()`` says which. The
file-range logic (blocks, what goes together, bounded memory, short reads, changed-file checks) is
the CPU backend's.

CuPy is imported only here and only when used: ``import sentry`` needs neither CuPy nor torch.
"""
from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable

import numpy as np

from .. import _gpu
from ..errors import SentryError
from ..io import kvikio as kvikio_io
from ..io.posix import FileSource
from . import cpu, gpu_plan, merkle, plan
from .params import HashParams

__all__ = [
    "FILE_BATCH_BYTES",
    "FILE_BLOCK_BYTES",
    "FILE_WORKERS",
    "KERNELS",
    "THREADS",
    "WINDOW_LEAVES",
    "H",
    "digest_device_buffer",
    "digest_ranges",
    "digest_tensors",
    "file_reader",
]

WINDOW_LEAVES = 1 << 21  # node slots per launch window (also its largest segment): a node array of 64 MiB at most
FILE_BLOCK_BYTES = kvikio_io.BLOCK_BYTES  # bytes per block: one read request, one segment of a run
# One device buffer (and pinned host buffer without kvikio) per reader thread, hashed in one run:
# 32768 leaves of 4 KiB, 128 blocks of THREADS for merkle_leaves, about one per SM of an H100/H200
# (16 MiB gave 16), and up to four per SM with FILE_WORKERS streams hashing at once, the leaf
# kernel's occupancy; a bigger buffer would add memory (FILE_WORKERS of them), not parallelism.
FILE_BATCH_BYTES = 128 << 20
FILE_WORKERS = 4  # reader threads; at least 2, so that one buffer is read while another hashes
THREADS = 256  # per block (kernels/merkle.cu sizes the leaf kernel's shared memory for 8 warps)
H = gpu_plan.HASH_LEN
KERNELS = ("merkle_leaves", "merkle_level", "merkle_roots")


def _compile(device_id: int) -> dict:
    """name -> (function, grid cap) for the kernels of merkle.cu, compiled by NVRTC and loaded on
    ``device_id``; the cap is as many blocks as the GPU holds at once, from the occupancy API
    (registers and shared memory per block)."""
    import cupy

    module = _gpu.raw_module("merkle.cu", device_id)
    with cupy.cuda.Device(device_id) as device:
        sms, kernels = device.attributes["MultiProcessorCount"], {}
        for name in KERNELS:
            fn = module.get_function(name)
            per_sm = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(fn.kernel.ptr, THREADS, 0)
            kernels[name] = fn, sms * max(per_sm, 1)
        return kernels


_kernels = _gpu.PerDevice(_compile)


class _StreamRef:
    """A raw stream handle in the CUDA stream protocol (for ``cupy.cuda.Stream.from_external``)."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    def __cuda_stream__(self):
        return (0, self.ptr)


class _Gpu:
    """One device, one stream, one allocator: everything a run of the kernels needs."""

    def __init__(self, device_id: int, stream_ptr: int | None = None, torch_device=None):
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
        """Run kernel ``name`` over ``threads`` items (leaves for merkle_leaves: 256 per block, a
        warp per 32), in at most one wave of blocks: the kernels loop over whatever is left."""
        if threads:
            fn, cap = _kernels.get(self.device.id)[name]
            fn((min(-(-threads // THREADS), cap),), (THREADS,), args)


def _run(gpu: _Gpu, work: gpu_plan.Work, leaf_size: int, pointers, window_leaves: int) -> tuple:
    """Run the kernels over every window of ``work``: (grain roots, segment roots) as bytes."""
    u32, u64 = np.uint32, np.uint64
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
        nodes = alloc(gpu_plan.node_slots(work, leaf_size, window_leaves) * H)
        grains, roots = alloc(work.grains * H), alloc(len(work.segments) * H)
        for first, table, slots, firsts, counts in gpu_plan.window_tables(work, leaf_size, window_leaves, pointers):
            tab, fst, nseg = upload(table), upload(firsts), u32(len(table))
            # leaves and the first FUSED_LEVELS levels, then one launch per level above
            gpu.launch("merkle_leaves", slots, u64(tab), nseg, u32(leaf_size), u64(slots), u64(nodes), u64(grains))
            for k, n in enumerate(counts):
                level_firsts = u64(fst + k * len(table) * 8)
                level = u32(gpu_plan.FUSED_LEVELS + k)
                gpu.launch("merkle_level", n, u64(tab), nseg, level_firsts, level, u64(n), u64(nodes), u64(grains))
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
        for i, d in zip(indices, _digest(gpu, sizes, lambda k: _tensor_pointer(group[k]), params)):  # noqa: B023 (called here)
            out[i] = d
    return out


def digest_device_buffer(buf, params: HashParams = HashParams()) -> plan.ItemDigest:
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
    """One reader thread's stream and device buffer: ``_fill`` reads file blocks into it, each on a
    leaf boundary, then one run of the kernels hashes them all there."""

    def __init__(self, device_id: int, nbytes: int):
        import cupy

        with cupy.cuda.Device(device_id):
            self.cuda_stream = cupy.cuda.Stream(non_blocking=True)
            self.dev = cupy.empty(nbytes, dtype=cupy.uint8)
        self.gpu = _Gpu(device_id, self.cuda_stream.ptr)

    def hash_blocks(self, blocks, leaf_size: int) -> list:
        """Grain roots of each ``(src, offset, length, grain)`` (none longer than the buffer), in
        as few runs as the buffer allows."""
        out = []
        for run in plan.grouped(blocks, lambda b: _placed(b[2], leaf_size), self.dev.nbytes):
            out += self._hash_run(run, leaf_size)
        return out

    def _fill(self, reads) -> None:
        """Read each ``(src, offset, buffer start, size)`` into the device buffer (per subclass)."""
        raise NotImplementedError

    def _hash_run(self, blocks, leaf_size: int) -> list:
        segments, start, out = [], 0, 0
        for _, _, length, grain in blocks:  # the buffer is the item, each block a segment of it
            segments.append(gpu_plan.Segment(0, start, length, grain, out))
            start += _placed(length, leaf_size)
            out += -(-merkle.leaf_count(length, leaf_size) // grain)
        self._fill([(src, offset, seg.start, seg.size) for (src, offset, _, _), seg in zip(blocks, segments)])
        work = gpu_plan.Work([None], segments, out)
        base = self.dev.data.ptr
        # WINDOW_LEAVES, not the buffer's leaves: aligning each block's tree may need more slots than
        # leaves, and a buffer then still goes through one run of launches
        grains, _ = _run(self.gpu, work, leaf_size, lambda segs: [base + s.start for s in segs], WINDOW_LEAVES)
        bounds = [seg.out * H for seg in segments] + [out * H]
        return [grains[a:b] for a, b in zip(bounds, bounds[1:])]  # synchronized: the buffers are free again


def _placed(length: int, leaf_size: int) -> int:
    """Bytes a block takes in a reader's buffer: whole leaves, so that every block starts on a leaf
    boundary (aligned loads for the kernels, aligned device addresses for GPUDirect Storage)."""
    return merkle.leaf_count(length, leaf_size) * leaf_size


class _PinnedReader(_Reader):
    """pread into a pinned host buffer, then one asynchronous copy to the device on the thread's stream."""

    def __init__(self, device_id: int, nbytes: int):
        import cupy

        super().__init__(device_id, nbytes)
        self.host = np.frombuffer(cupy.cuda.alloc_pinned_memory(nbytes), np.uint8, nbytes)

    def _fill(self, reads) -> None:
        end = 0
        for src, offset, start, length in reads:
            src.read_into(offset, self.host[start : start + length])
            end = start + length
        self.dev[:end].set(self.host[:end], stream=self.cuda_stream)


class _KvikioReader(_Reader):
    """kvikio reads straight into the device buffer (each ``src`` is a DeviceFileSource), all of a
    run's reads in flight at once."""

    def _fill(self, reads) -> None:
        pending = []
        try:
            for src, offset, start, length in reads:
                pending.append(src.start_read(offset, self.dev[start : start + length]))
            while pending:
                pending.pop(0).wait()  # returns once the bytes are in device memory
        finally:  # stopped by an error: no read may still write into the buffer or use its file
            for read in pending:
                with contextlib.suppress(SentryError):
                    read.wait()


def digest_ranges(ranges, params: HashParams = HashParams(), progress=None, *, follow_symlinks: bool = False) -> list:
    """Digests of file byte ranges (``plan.FileRange``), in order, hashed on the current GPU.

    The CPU backend's driver cuts the ranges into aligned blocks of ``FILE_BLOCK_BYTES``, opens and
    checks every file, and hands over consecutive blocks (across files) of up to
    ``FILE_BATCH_BYTES``, or a task of up to ``cpu.SMALL_FILES_PER_TASK`` small files, at a time.
    ``FILE_WORKERS`` threads each read those into their own device buffer and hash them there in
    one run, so that while one buffer hashes the others are being read. The reads go through kvikio
    or pinned host buffers, as ``file_reader()`` says.
    """
    import cupy

    device_id = cupy.cuda.Device().id  # the caller's current device, for the worker threads too
    reader: type[_Reader]
    open_file: Callable
    if file_reader() == "kvikio":
        reader, open_file = _KvikioReader, kvikio_io.DeviceFileSource
    else:
        reader, open_file = _PinnedReader, FileSource
    # a block is at least one leaf, maybe more than FILE_BLOCK_BYTES: every block fits the buffer
    batch = max(FILE_BATCH_BYTES, plan.block_leaves(params, FILE_BLOCK_BYTES) * params.leaf_size)
    free: queue.SimpleQueue = queue.SimpleQueue()  # readers not in use; at most one per thread

    def hash_blocks(blocks, leaf_size):
        try:
            r = free.get_nowait()
        except queue.Empty:
            r = reader(device_id, batch)
        try:
            return r.hash_blocks(blocks, leaf_size)
        finally:
            free.put(r)

    return cpu.digest_ranges(ranges, params, progress, FILE_WORKERS, follow_symlinks=follow_symlinks,
                             hash_blocks=hash_blocks, block_bytes=FILE_BLOCK_BYTES, batch_bytes=batch,
                             open_file=open_file)
