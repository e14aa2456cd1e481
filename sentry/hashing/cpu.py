"""The CPU Merkle backend: item roots and chunk roots of in-memory buffers and file byte ranges.

Roots are the RFC 9162 Merkle Tree Hash of :mod:`sentry.hashing.merkle` (the reference), computed
in parallel over aligned blocks of leaves with bounded memory.

Why a C extension: measured on the 2-core development VM, hashing 4 KiB leaves with per-leaf
``hashlib`` calls runs at ~1.2 GB/s on one thread (flat SHA-256 of the same bytes: ~1.5-1.7 GB/s)
and gets *slower* with two Python threads, because every 4 KiB leaf hands the GIL over twice.
``_cmerkle`` hashes a whole block per call with the GIL released, so threads scale with cores, and
on CPUs with SHA extensions it hashes two leaves at once (~1.8-1.9 GB/s per core here, a little
faster than flat SHA-256 despite the tree's extra blocks). Without it (no compiler / no OpenSSL
headers) the same roots come from ``merkle.py`` + hashlib, only slower.

Why blocks fold with the same rule: MTH(D[0:n]) splits at k, the largest power of two below n.
If blocks hold B = 2^b leaves (the last one possibly fewer) and n > B, then k >= B and, both being
powers of two, B divides k: the split never falls inside a block, and in block units it is again
the largest power of two below ceil(n/B). By induction, MTH of the leaves equals
``merkle.root_of_hashes`` over the block roots. The same argument lets aligned chunk roots fold
into the item root, and aligned sub-chunk block roots fold into a chunk root.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

from ..errors import SentryError
from ..io.posix import FileSource, changed_error, longer_error, read_error, short_read_error
from . import merkle
from .params import HashParams

try:
    from . import _cmerkle

    _chunk_roots = _cmerkle.chunk_roots
    ACCELERATED = True  # the C extension is in use (SHA-NI or not: see _cmerkle.set_sha_ni)
except ImportError:  # pragma: no cover - exercised by the fallback tests via monkeypatch
    _cmerkle = None
    ACCELERATED = False

    def _chunk_roots(buf, leaf_size: int, chunk_leaves: int) -> bytes:
        return _py_chunk_roots(buf, leaf_size, chunk_leaves)


def _py_chunk_roots(buf, leaf_size: int, chunk_leaves: int) -> bytes:
    """Pure-Python twin of ``_cmerkle.chunk_roots`` (same contract, same bytes)."""
    view = memoryview(buf).cast("B")
    step = leaf_size * chunk_leaves
    return b"".join(merkle.merkle_root(view[i : i + step], leaf_size) for i in range(0, len(view), step))


# Bytes per work unit (a few MiB at 4 KiB leaves: 1024 leaves). Read at call time so tests and
# benchmarks can change it; it never changes a root, only how the work is cut.
BLOCK_BYTES = 4 << 20
HASH_LEN = 32


@dataclass(frozen=True, slots=True)  # slots: one per file of a dataset
class ItemDigest:
    """An item's size, Merkle root, and the roots of its aligned chunks.

    ``chunks`` are the roots of consecutive chunks of ``merkle.chunk_leaves(n_leaves, max_chunks)``
    leaves (the last may be shorter): ``()`` for the empty item, ``(root,)`` for a one-leaf item.
    When non-empty, ``root == merkle.root_of_hashes(chunks)``.
    """

    size: int
    root: bytes
    chunks: tuple


class FileRange(NamedTuple):
    """``size`` bytes of the file at ``path`` from ``offset``; ``size=None``: to the end of the
    file as it is when opened."""

    path: "str | os.PathLike"
    offset: int = 0
    size: Optional[int] = None


# -- planning: which blocks an item is cut into, and how their roots fold ---------------------------
def _block_leaves(params: HashParams, block_bytes: Optional[int] = None) -> int:
    """Leaves per work block: a power of two, at least one leaf."""
    leaves = max(1, int(block_bytes or BLOCK_BYTES) // params.leaf_size)
    return 1 << (leaves.bit_length() - 1)


class _Plan(NamedTuple):
    size: int
    chunk_leaves: int  # leaves per recorded chunk
    grain: int  # leaves per root a block returns: min(chunk_leaves, block leaves)
    blocks: list  # [(start, length)] relative to the item start


def _plan(size: int, params: HashParams, block_leaves: int) -> _Plan:
    n_leaves = merkle.leaf_count(size, params.leaf_size)
    c = merkle.chunk_leaves(n_leaves, params.max_chunks)
    step = block_leaves * params.leaf_size
    blocks = [(s, min(step, size - s)) for s in range(0, size, step)]
    return _Plan(size, c, min(c, block_leaves), blocks)


def _assemble(plan: _Plan, block_results: Iterable[bytes]) -> ItemDigest:
    """Fold the blocks' grain roots into chunk roots, and those into the item root."""
    if plan.size == 0:
        return _EMPTY_DIGEST
    joined = b"".join(block_results)
    grains = [joined[i : i + HASH_LEN] for i in range(0, len(joined), HASH_LEN)]
    per_chunk = plan.chunk_leaves // plan.grain  # >1 only when a chunk spans several blocks
    chunks = tuple(
        merkle.root_of_hashes(grains[i : i + per_chunk]) for i in range(0, len(grains), per_chunk)
    )
    return ItemDigest(plan.size, merkle.root_of_hashes(chunks), chunks)


_EMPTY_DIGEST = ItemDigest(0, merkle.EMPTY_ROOT, ())


# An item of at most one block needs no plan: its block's grain roots are its chunk roots (the
# chunk size, a power of two, never exceeds the block's, since the block holds all its leaves).
def _one_block_grain(size: int, params: HashParams) -> int:
    return merkle.chunk_leaves(merkle.leaf_count(size, params.leaf_size), params.max_chunks)


def _assemble_one(size: int, roots: bytes) -> ItemDigest:
    chunks = merkle.split_hashes(roots)
    return ItemDigest(size, merkle.root_of_hashes(chunks), chunks)


def _check_params(params) -> None:
    if not isinstance(params, HashParams):
        raise SentryError("params must be a HashParams")


# -- in-memory buffers --------------------------------------------------------------------------------
def _byte_view(buf) -> memoryview:
    try:
        view = memoryview(buf)
    except TypeError:
        raise SentryError(f"cannot hash an object of type {type(buf).__name__}: it is not a bytes-like buffer") from None
    if not view.c_contiguous:
        raise SentryError("cannot hash a non-contiguous buffer; make it C-contiguous first")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def digest_bytes(buf, params: HashParams = HashParams(), *, workers: Optional[int] = None) -> ItemDigest:
    """Digest of a C-contiguous in-memory buffer (bytes, bytearray, memoryview, numpy array).

    Large buffers are hashed in parallel, one aligned block per task.
    """
    _check_params(params)
    view = _byte_view(buf)
    plan = _plan(len(view), params, _block_leaves(params))
    ls, grain = params.leaf_size, plan.grain

    def run(block):
        start, length = block
        return _chunk_roots(view[start : start + length], ls, grain)

    workers = min(workers or os.cpu_count() or 1, len(plan.blocks))
    if workers <= 1:
        return _assemble(plan, map(run, plan.blocks))
    with ThreadPoolExecutor(workers, thread_name_prefix="sentry-hash") as pool:
        return _assemble(plan, list(pool.map(run, plan.blocks)))


# -- files ----------------------------------------------------------------------------------------------
def _hash_file_blocks(blocks, leaf_size: int) -> list:
    """Grain roots of each ``(src, offset, length, grain)``, one block read and hashed at a time."""
    return [_chunk_roots(src.read(offset, length), leaf_size, grain) for src, offset, length, grain in blocks]


def _range_sizes(src: FileSource, ranges: list) -> list:
    """Each range's byte count in the open file; SentryError if one does not lie inside it."""
    sizes = []
    for r in ranges:
        size = src.size - r.offset if r.size is None else r.size
        if size < 0 or r.offset + size > src.size:
            raise SentryError(
                f"{src.path} is {src.size} bytes, too short for the range of {size} bytes at offset {r.offset}"
            )
        sizes.append(size)
    return sizes


def _grouped(items, size, limit: Optional[int]):
    """Consecutive items in lists whose ``size`` adds up to at most ``limit`` (an item over it goes
    alone); ``limit`` None: one item per list, handed on as soon as it comes."""
    if limit is None:
        for item in items:
            yield [item]
        return
    group, used = [], 0
    for item in items:
        n = size(item)
        if group and used + n > limit:
            yield group
            group, used = [], 0
        group.append(item)
        used += n
    if group:
        yield group


def _run_bounded(pool, tasks, fn, on_done, limit: int) -> None:
    """Submit ``fn(task)`` for each task with at most ``limit`` in flight; ``on_done(task, result)``
    runs in the calling thread as each completes. On any error (including from ``tasks``), pending
    work is cancelled and running work waited for before the error propagates, so the caller may
    then close what those tasks were reading."""
    pending: dict = {}
    try:
        while True:
            while len(pending) < limit:
                task = next(tasks, None)
                if task is None:
                    break
                pending[pool.submit(fn, task)] = task
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_done(pending.pop(fut), fut.result())
    except BaseException:
        for fut in pending:
            fut.cancel()
        wait(pending)
        raise


# Small files are hashed whole by one worker, this many at most per task: per-file work in the
# calling thread (open, stat, a future, a wait) used to cost more than hashing a 4 KiB file. A hasher
# taking a task's files at once (``batch_bytes``) holds them open: this bounds the descriptors too.
SMALL_FILES_PER_TASK = 64


def digest_ranges(
    ranges: Sequence[FileRange],
    params: HashParams = HashParams(),
    progress: Optional[Callable[[int], None]] = None,
    workers: Optional[int] = None,
    *,
    follow_symlinks: bool = False,
    hash_blocks: Callable[..., list] = _hash_file_blocks,
    block_bytes: Optional[int] = None,
    batch_bytes: Optional[int] = None,
    open_file: Callable[..., FileSource] = FileSource,
) -> list:
    """Digests of file byte ranges, in the order given (one :class:`ItemDigest` per range).

    Work is cut into aligned blocks of leaves, hashed by ``workers`` threads (default: the CPU
    count) across and inside files; at most ``2 * workers`` blocks (or batches, see
    ``batch_bytes``) are in flight at any time, so memory stays bounded whatever the file sizes.
    Each file is opened once (refusing symlinks unless ``follow_symlinks``), every range must lie
    inside it, and after its last block is hashed the file must be unchanged, or SentryError.
    ``progress(nbytes)`` is called from the calling thread as work completes.

    Files whose ranges each fit in one block are hashed first, whole, in tasks of several files
    (open, read, hash, check and close all in a worker); the others, and files found too large
    once opened (then opened again), go through the block pipeline.

    ``hash_blocks(blocks, leaf_size)`` returns the grain roots of each ``(src, offset, length,
    grain)`` block, in order (the CUDA backend passes its own), ``block_bytes`` sets the block size
    (default ``BLOCK_BYTES``), and ``open_file(path, follow_symlinks=...)`` opens each file (a
    FileSource, or a subclass that can also read into GPU memory). Without ``batch_bytes`` each call
    gets one block, or one small file's ranges; with it, a call gets a whole task of small files
    (all open until it returns), or consecutive blocks of the pipeline, across files, of at most
    ``batch_bytes`` counted in whole leaves (so that a hasher placing each block on a leaf boundary
    of a buffer of ``batch_bytes`` fits them all).
    """
    _check_params(params)
    ranges = [r if isinstance(r, FileRange) else FileRange(*r) for r in ranges]
    for r in ranges:
        if type(r.offset) is not int or r.offset < 0 or (
            r.size is not None and (type(r.size) is not int or r.size < 0)
        ):
            raise SentryError(
                f"{os.fspath(r.path)}: a range needs a non-negative integer offset and size, got {r.offset!r} and {r.size!r}"
            )
    workers = max(1, workers or os.cpu_count() or 1)
    ls = params.leaf_size
    block_leaves = _block_leaves(params, block_bytes)
    step = block_leaves * ls

    # path -> the index of its range, or a list of indices when it has several; files in order of
    # first appearance. A bare int, not a list per file, since a dataset has millions of files.
    by_path: dict = {}
    for i, r in enumerate(ranges):
        path = os.fspath(r.path)
        seen = by_path.setdefault(path, i)
        if seen != i:
            if type(seen) is int:
                by_path[path] = seen = [seen]
            seen.append(i)
    digests: list = [None] * len(ranges)

    def indices_of(entry) -> list:
        return [entry] if type(entry) is int else entry

    # -- small files: whole files per step of a task, nothing of them left open in between -------
    def small_group(files) -> list:
        """Each file's digests (None for one with a range found to need several blocks), from one
        ``hash_blocks`` call; each file is checked unchanged after it."""
        with contextlib.ExitStack() as opened:
            found, todo = [], []
            for path, indices in files:
                src = opened.enter_context(open_file(path, follow_symlinks=follow_symlinks))
                sizes = _range_sizes(src, [ranges[i] for i in indices])
                if max(sizes) > step:
                    found.append((None, None))
                    continue
                found.append((src, sizes))
                todo += [(src, ranges[i].offset, size, _one_block_grain(size, params))
                         for i, size in zip(indices, sizes) if size]
            roots = iter(hash_blocks(todo, ls) if todo else ())
            out = []
            for src, sizes in found:
                if src is None:
                    out.append(None)
                    continue
                out.append([_assemble_one(size, next(roots)) if size else _EMPTY_DIGEST for size in sizes])
                src.check_unchanged()
        return out

    # Whole files hashed by the CPU go through _cmerkle.hash_files, which does all of it with the
    # GIL released; a file it could not open as a plain one (None) is left to small_group, which
    # says why. Files are answered in order, so the first error in a task is its first file's.
    in_c = (_cmerkle is not None and _chunk_roots is _cmerkle.chunk_roots and hash_blocks is _hash_file_blocks
            and open_file is FileSource)

    def small_files(batch):
        if batch_bytes is not None:  # the hasher takes the task's files at once
            return small_group(batch)
        got = [None] * len(batch)
        if in_c:
            whole = [k for k, (_, ix) in enumerate(batch) if len(ix) == 1 and ranges[ix[0]][1:] == (0, None)]
            for k, answer in zip(whole, _cmerkle.hash_files([batch[k][0] for k in whole], ls, params.max_chunks, step, follow_symlinks)):
                got[k] = answer
        out = []
        for answer, (path, indices) in zip(got, batch):
            if answer is None:
                out.append(small_group([(path, indices)])[0])
            elif answer[0] == "short":
                raise short_read_error(path, 0, answer[2], answer[1])
            elif answer[0] == "read":
                raise read_error(path, os.strerror(answer[1]))
            elif answer[0] == "changed":
                raise changed_error(path)
            elif answer[0] == "longer":
                raise longer_error(path, answer[1])
            else:
                out.append([_assemble_one(*answer)])
        return out

    def small_done(batch, results):
        nbytes = 0
        for (path, indices), item_digests in zip(batch, results):
            if item_digests is None:
                continue
            for i, d in zip(indices, item_digests):
                digests[i] = d
                nbytes += d.size
        if progress is not None and nbytes:
            progress(nbytes)

    # A known size over one block goes straight to the block pipeline; an unknown one (to the end
    # of the file) is looked at by the worker.
    def is_small(entry) -> bool:
        return all(ranges[i].size is None or ranges[i].size <= step for i in indices_of(entry))

    def small_batches(per_task):
        """Batches of (path, indices), made as the pool takes them rather than all at once."""
        batch = []
        for p, entry in by_path.items():
            if is_small(entry):
                batch.append((p, indices_of(entry)))
                if len(batch) == per_task:
                    yield batch
                    batch = []
        if batch:
            yield batch

    n_small = sum(1 for entry in by_path.values() if is_small(entry))
    per_task = max(1, min(SMALL_FILES_PER_TASK, -(-n_small // (4 * workers))))
    batches = small_batches(per_task)

    # -- the block pipeline ------------------------------------------------------------------------
    plans: dict = {}
    results: dict = {}  # range index -> its block results
    open_files: dict = {}  # path -> [FileSource, blocks not yet hashed]

    def finish(path: str) -> None:
        src = open_files.pop(path)[0]
        try:
            src.check_unchanged()
        finally:
            src.close()

    def blocks():
        """Open files lazily, in order, so only files with blocks in flight hold a descriptor."""
        for path, entry in by_path.items():
            indices = indices_of(entry)
            if digests[indices[0]] is not None:
                continue
            src = open_file(path, follow_symlinks=follow_symlinks)
            open_files[path] = [src, 0]
            for i, size in zip(indices, _range_sizes(src, [ranges[i] for i in indices])):
                plans[i] = _plan(size, params, block_leaves)
                results[i] = [None] * len(plans[i].blocks)
                open_files[path][1] += len(plans[i].blocks)
            if open_files[path][1] == 0:
                finish(path)
                continue
            for i in indices:
                for j, (start, length) in enumerate(plans[i].blocks):
                    yield src, path, i, j, ranges[i].offset + start, length

    def group(tasks):
        return hash_blocks([(src, offset, length, plans[i].grain) for src, _, i, _, offset, length in tasks], ls)

    def group_done(tasks, roots):
        for (_, path, i, j, _, length), result in zip(tasks, roots):
            results[i][j] = result
            if progress is not None:
                progress(length)
            entry = open_files[path]
            entry[1] -= 1
            if entry[1] == 0:
                finish(path)

    with ThreadPoolExecutor(workers, thread_name_prefix="sentry-hash") as pool:
        _run_bounded(pool, batches, small_files, small_done, 2 * workers)
        todo = _grouped(blocks(), lambda task: merkle.leaf_count(task[5], ls) * ls, batch_bytes)
        try:
            _run_bounded(pool, todo, group, group_done, 2 * workers)
        except BaseException:
            # Running blocks have finished (a closed fd number could be reused by another open
            # and read from); now close what they were reading.
            for src, _ in open_files.values():
                src.close()
            todo.close()
            raise
    for i, rs in results.items():
        digests[i] = _assemble(plans[i], rs)
    return digests
