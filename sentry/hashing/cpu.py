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

Where blocks start and how their roots fold (and why that gives the RFC 9162 root) is
:mod:`.plan`, which the CUDA backend shares.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..errors import SentryError
from ..io.posix import FileSource, changed_error, longer_error, read_error, short_read_error
from . import merkle, plan
from .params import HashParams
from .plan import FileRange, ItemDigest

__all__ = ["BLOCK_BYTES", "SMALL_FILES_PER_TASK", "digest_bytes", "digest_ranges"]

log = logging.getLogger(__name__)

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


def _block_leaves(params: HashParams, block_bytes: int | None = None) -> int:
    return plan.block_leaves(params, block_bytes or BLOCK_BYTES)


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


def digest_bytes(buf, params: HashParams = HashParams(), *, workers: int | None = None) -> ItemDigest:
    """Digest of a C-contiguous in-memory buffer (bytes, bytearray, memoryview, numpy array).

    Large buffers are hashed in parallel, one aligned block per task.
    """
    _check_params(params)
    view = _byte_view(buf)
    item = plan.plan(len(view), params, _block_leaves(params))
    ls, grain = params.leaf_size, item.grain

    def run(block):
        start, length = block
        return _chunk_roots(view[start : start + length], ls, grain)

    workers = min(workers or os.cpu_count() or 1, len(item.blocks))
    if workers <= 1:
        return plan.assemble(item, map(run, item.blocks))
    with ThreadPoolExecutor(workers, thread_name_prefix="sentry-hash") as pool:
        return plan.assemble(item, list(pool.map(run, item.blocks)))


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
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    *,
    follow_symlinks: bool = False,
    hash_blocks: Callable[..., list] = _hash_file_blocks,
    block_bytes: int | None = None,
    batch_bytes: int | None = None,
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
    job = _RangeDigests(ranges, params, progress, max(1, workers or os.cpu_count() or 1), follow_symlinks,
                        hash_blocks, _block_leaves(params, block_bytes), batch_bytes, open_file)
    return job.run()


class _RangeDigests:
    """One :func:`digest_ranges` call: small files first, whole, in tasks of several; then the
    block pipeline for the rest; then each range's blocks folded into its digest."""

    def __init__(self, ranges, params, progress, workers, follow_symlinks, hash_blocks, block_leaves,
                 batch_bytes, open_file):
        self.ranges, self.params, self.progress, self.workers = ranges, params, progress, workers
        self.follow_symlinks, self.hash_blocks, self.open_file = follow_symlinks, hash_blocks, open_file
        self.batch_bytes, self.block_leaves = batch_bytes, block_leaves
        self.step = block_leaves * params.leaf_size  # bytes per block
        # path -> the index of its range, or a list of indices when it has several; files in order of
        # first appearance. A bare int, not a list per file, since a dataset has millions of files.
        self.by_path: dict = {}
        for i, r in enumerate(ranges):
            path = os.fspath(r.path)
            seen = self.by_path.setdefault(path, i)
            if seen != i:
                if type(seen) is int:
                    self.by_path[path] = seen = [seen]
                seen.append(i)
        self.digests: list = [None] * len(ranges)
        self.plans: dict = {}  # range index -> its Plan, for ranges that go through the pipeline
        self.results: dict = {}  # range index -> its block results
        self.open_files: dict = {}  # path -> [FileSource, blocks not yet hashed]
        # Whole files hashed by the CPU go through _cmerkle.hash_files, which does all of it with the
        # GIL released; a file it could not open as a plain one (None) is left to _small_group, which
        # says why. Files are answered in order, so the first error in a task is its first file's.
        self.in_c = (_cmerkle is not None and _chunk_roots is _cmerkle.chunk_roots
                     and hash_blocks is _hash_file_blocks and open_file is FileSource)
        log.debug("%d ranges, %d threads; whole small files in C: %s; Merkle leaves: %s", len(ranges), workers,
                  self.in_c, "C accelerator" if ACCELERATED else "hashlib (no C accelerator)")

    def run(self) -> list:
        limit = 2 * self.workers
        with ThreadPoolExecutor(self.workers, thread_name_prefix="sentry-hash") as pool:
            _run_bounded(pool, self._small_batches(), self._small_files, self._small_done, limit)
            todo = plan.grouped(self._blocks(), lambda task: merkle.leaf_count(task[5], self.params.leaf_size)
                                * self.params.leaf_size, self.batch_bytes)
            try:
                _run_bounded(pool, todo, self._hash_run, self._run_done, limit)
            except BaseException:
                # Running blocks have finished (a closed fd number could be reused by another open
                # and read from); now close what they were reading.
                for src, _ in self.open_files.values():
                    src.close()
                todo.close()
                raise
        for i, rs in self.results.items():
            self.digests[i] = plan.assemble(self.plans[i], rs)
        return self.digests

    @staticmethod
    def _indices(entry) -> list:
        return [entry] if type(entry) is int else entry

    # -- small files: whole files per step of a task, nothing of them left open in between -------
    def _is_small(self, entry) -> bool:
        """A known size over one block goes straight to the block pipeline; an unknown one (to the
        end of the file) is looked at by the worker."""
        return all(self.ranges[i].size is None or self.ranges[i].size <= self.step for i in self._indices(entry))

    def _small_batches(self):
        """Batches of (path, indices), made as the pool takes them rather than all at once."""
        n_small = sum(1 for entry in self.by_path.values() if self._is_small(entry))
        per_task = max(1, min(SMALL_FILES_PER_TASK, -(-n_small // (4 * self.workers))))
        batch = []
        for p, entry in self.by_path.items():
            if self._is_small(entry):
                batch.append((p, self._indices(entry)))
                if len(batch) == per_task:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _small_files(self, batch) -> list:
        """(A worker.) Each file's digests, or None for one found to need the pipeline."""
        if self.batch_bytes is not None:  # the hasher takes the task's files at once
            return self._small_group(batch)
        got = self._hash_files_in_c(batch) if self.in_c else [None] * len(batch)
        out = []
        for answer, (path, indices) in zip(got, batch):
            if answer is None:
                out.append(self._small_group([(path, indices)])[0])
            else:
                out.append([plan.assemble_one(*_c_answer(path, answer))])
        return out

    def _hash_files_in_c(self, batch) -> list:
        """_cmerkle.hash_files' answers for the whole files of the batch; None for the others."""
        got = [None] * len(batch)
        whole = [k for k, (_, ix) in enumerate(batch) if len(ix) == 1 and self.ranges[ix[0]][1:] == (0, None)]
        answers = _cmerkle.hash_files([batch[k][0] for k in whole], self.params.leaf_size, self.params.max_chunks,
                                      self.step, self.follow_symlinks)
        for k, answer in zip(whole, answers):
            got[k] = answer
        return got

    def _small_group(self, files) -> list:
        """Each file's digests (None for one with a range found to need several blocks), from one
        ``hash_blocks`` call; each file is checked unchanged after it."""
        with contextlib.ExitStack() as opened:
            found: list[tuple] = []
            todo: list[tuple] = []
            for path, indices in files:
                src = opened.enter_context(self.open_file(path, follow_symlinks=self.follow_symlinks))
                sizes = _range_sizes(src, [self.ranges[i] for i in indices])
                if max(sizes) > self.step:
                    found.append((None, None))
                    continue
                found.append((src, sizes))
                todo += [(src, self.ranges[i].offset, size, plan.one_block_grain(size, self.params))
                         for i, size in zip(indices, sizes) if size]
            roots = iter(self.hash_blocks(todo, self.params.leaf_size) if todo else ())
            out: list[list | None] = []
            for src, sizes in found:
                if src is None:
                    out.append(None)
                    continue
                out.append([plan.assemble_one(size, next(roots)) if size else plan.EMPTY_DIGEST for size in sizes])
                src.check_unchanged()
        return out

    def _small_done(self, batch, results) -> None:
        nbytes = 0
        for (_, indices), item_digests in zip(batch, results):
            if item_digests is None:
                continue
            for i, d in zip(indices, item_digests):
                self.digests[i] = d
                nbytes += d.size
        if self.progress is not None and nbytes:
            self.progress(nbytes)

    # -- the block pipeline ------------------------------------------------------------------------
    def _blocks(self):
        """(src, path, range index, block index, offset, length) of every block still to hash.
        Files are opened lazily, in order, so only files with blocks in flight hold a descriptor."""
        for path, entry in self.by_path.items():
            indices = self._indices(entry)
            if self.digests[indices[0]] is not None:
                continue
            src = self.open_file(path, follow_symlinks=self.follow_symlinks)
            self.open_files[path] = [src, 0]
            for i, size in zip(indices, _range_sizes(src, [self.ranges[i] for i in indices])):
                self.plans[i] = plan.plan(size, self.params, self.block_leaves)
                self.results[i] = [None] * len(self.plans[i].blocks)
                self.open_files[path][1] += len(self.plans[i].blocks)
            if self.open_files[path][1] == 0:
                self._finish(path)
                continue
            for i in indices:
                for j, (start, length) in enumerate(self.plans[i].blocks):
                    yield src, path, i, j, self.ranges[i].offset + start, length

    def _hash_run(self, tasks) -> list:
        """(A worker.) The grain roots of a run of consecutive blocks."""
        blocks = [(src, offset, length, self.plans[i].grain) for src, _, i, _, offset, length in tasks]
        return self.hash_blocks(blocks, self.params.leaf_size)

    def _run_done(self, tasks, roots) -> None:
        for (_, path, i, j, _, length), result in zip(tasks, roots):
            self.results[i][j] = result
            if self.progress is not None:
                self.progress(length)
            entry = self.open_files[path]
            entry[1] -= 1
            if entry[1] == 0:
                self._finish(path)

    def _finish(self, path: str) -> None:
        src = self.open_files.pop(path)[0]
        try:
            src.check_unchanged()
        finally:
            src.close()


def _c_answer(path: str, answer: tuple) -> tuple:
    """(size, grain roots) from one of _cmerkle.hash_files' answers, or the error it reports."""
    if answer[0] == "short":
        raise short_read_error(path, 0, answer[2], answer[1])
    if answer[0] == "read":
        raise read_error(path, os.strerror(answer[1]))
    if answer[0] == "changed":
        raise changed_error(path)
    if answer[0] == "longer":
        raise longer_error(path, answer[1])
    return answer
