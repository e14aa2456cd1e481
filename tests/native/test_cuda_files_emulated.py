"""The batched GPU file path with the real kernels, on the CPU launch emulator (tests/cuda_emu):
blocks of large files and whole small files, read into a reader's buffer (poisoned between them)
and hashed together in one run, give the CPU engine's roots."""
from __future__ import annotations

import pytest
from gpu_inputs import BLOCK, ranges_of_every_size

from sentry.hashing import cpu, cuda
from sentry.hashing.params import HashParams


@pytest.mark.parametrize("params", [HashParams(), HashParams(leaf_size=1024, max_chunks=3)],
                         ids=["default", "small-leaves"])
def test_batched_file_runs_on_the_emulated_kernels_give_the_cpu_roots(emu_cupy, monkeypatch, tmp_path, params):
    monkeypatch.setattr(cuda, "FILE_BLOCK_BYTES", BLOCK)
    monkeypatch.setattr(cuda, "FILE_BATCH_BYTES", 4 * BLOCK)
    ranges = ranges_of_every_size(tmp_path, small_files=60)  # small files: several to a run
    seen = []
    got = cuda.digest_ranges(ranges, params, progress=seen.append)
    assert got == cpu.digest_ranges(ranges, params)
    assert sum(seen) == sum(d.size for d in got)
    runs = sum(1 for name, _, _ in emu_cupy.emu.launches if name == "merkle_leaves")
    assert 0 < runs < sum(1 for d in got if d.size) / 2  # several blocks and files per run
