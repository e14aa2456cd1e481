"""The CUDA backend on a GPU: the same digests as the CPU backend, in place, in bounded memory.

Marked ``gpu`` and skipped where CuPy or a usable GPU is missing (CI). Run on a GPU machine with
``python -m pytest -q -m gpu tests/gpu/test_cuda.py``.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from merkle_vectors import VECTORS, expected, vec_id, vector_data

from sentry import _gpu
from sentry.hashing import cpu, cuda
from sentry.hashing.params import HashParams

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _gpu.available(), reason=f"{_gpu.unavailable_reason()}")]

MiB = 1 << 20


@pytest.fixture(scope="module")
def torch():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    return torch


def as_tuple(d):
    return d.size, d.root, d.chunks


def cpu_digest(data, params=HashParams()):
    return as_tuple(cpu.digest_bytes(data, params))


def on_gpu(torch, data: bytes):
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).cuda() if data else torch.zeros(0, dtype=torch.uint8, device="cuda")


def sizes_around_boundaries(leaf_size: int, top: int = 24 << 20) -> list:
    sizes = {0, 1, 2, 63, 64, 65, top}
    for k in range(26):
        for base in (1 << k, leaf_size << k):
            if base + 1 <= top:
                sizes.update((base - 1, base, base + 1))
    return sorted(sizes)


# -- correctness against the vectors and the CPU backend --------------------------------------------
@pytest.mark.parametrize("vec", VECTORS, ids=vec_id)
def test_vectors_cupy_and_torch(torch, vec):
    import cupy

    params = HashParams(vec["leaf_size"], vec["max_chunks"])
    data = vector_data(vec)
    assert as_tuple(cuda.digest_device_buffer(cupy.asarray(np.frombuffer(data, np.uint8)), params)) == expected(vec)
    assert as_tuple(cuda.digest_tensors([on_gpu(torch, data)], params)[0]) == expected(vec)


def test_all_vectors_in_one_run(torch):
    params = HashParams()
    vecs = [v for v in VECTORS if v["leaf_size"] == 4096 and v["max_chunks"] == 16]
    got = cuda.digest_tensors([on_gpu(torch, vector_data(v)) for v in vecs], params)
    assert [as_tuple(d) for d in got] == [expected(v) for v in vecs]


@pytest.mark.parametrize("leaf_size", [64, 4096, 1 << 20])
def test_sizes_around_powers_of_two_and_leaf_boundaries(torch, leaf_size):
    params = HashParams(leaf_size=leaf_size)
    rng = np.random.default_rng(leaf_size)
    sizes = sizes_around_boundaries(leaf_size)
    arena = rng.integers(0, 256, max(sizes), np.uint8)
    tensors = [torch.from_numpy(arena[:n]).cuda() for n in sizes]
    got = cuda.digest_tensors(tensors, params)
    for n, d in zip(sizes, got):
        assert as_tuple(d) == cpu_digest(arena[:n], params), n


def test_random_batches_of_many_items(torch):
    rng = random.Random(7)
    for trial in range(5):
        params = HashParams(max_chunks=rng.choice([1, 3, 16, 4096]))
        data = [rng.randbytes(rng.choice([0, 1, rng.randrange(1, 10_000), rng.randrange(1, 2 * MiB)]))
                for _ in range(rng.randrange(1, 3000))]
        got = cuda.digest_tensors([on_gpu(torch, b) for b in data], params)
        assert [as_tuple(d) for d in got] == [cpu_digest(b, params) for b in data], trial


def test_small_windows_split_and_fold(torch):
    """Items larger than a window are cut into segments and folded on the host; windows hold many items."""
    rng = np.random.default_rng(8)
    data = [rng.integers(0, 256, n, np.uint8) for n in (5 * MiB + 3, 4096 * 64, 1, 0, 4096 * 65 - 1, 3 * MiB)]
    tensors = [torch.from_numpy(b).cuda() for b in data]
    for window in (1, 8, 64, 1024):
        gpu = cuda._Gpu(0, torch.cuda.current_stream().cuda_stream, torch_device=tensors[0].device)
        got = cuda._digest(gpu, [b.nbytes for b in data], lambda i: cuda._tensor_pointer(tensors[i]), HashParams(), window)
        assert [as_tuple(d) for d in got] == [cpu_digest(b) for b in data], window


def test_tens_of_megabytes_and_a_large_buffer(torch):
    rng = np.random.default_rng(9)
    data = rng.integers(0, 256, 48 * MiB + 12345, np.uint8)
    assert as_tuple(cuda.digest_tensors([torch.from_numpy(data).cuda()])[0]) == cpu_digest(data)


# -- tensors as models hold them ---------------------------------------------------------------------------
def test_non_contiguous_and_offset_views_hash_their_contiguous_bytes(torch):
    g = torch.Generator(device="cuda").manual_seed(0)
    base = torch.randn(300, 257, device="cuda", generator=g)
    views = [base.t(), base[:, 1:], base[::2], base[5:9, 3], base.t().contiguous().t()[1:],
             torch.randn(4, 4, dtype=torch.complex64, device="cuda", generator=g).conj()]
    got = cuda.digest_tensors(views)
    for v, d in zip(views, got):
        want = v.resolve_conj().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        assert as_tuple(d) == cpu_digest(want)


def test_bf16_odd_sizes_at_unaligned_addresses(torch):
    """bf16 views start at any even address: the kernel's byte and word loads must agree."""
    g = torch.Generator(device="cuda").manual_seed(1)
    big = torch.randn(3 * 4096 + 7, device="cuda", generator=g).to(torch.bfloat16)
    views = [big[k : k + n] for k in (0, 1, 2, 3, 7, 8) for n in (1, 3, 2047, 2048, 2049, 4097, 3 * 4096 - 1)]
    assert all(v.is_contiguous() for v in views)
    got = cuda.digest_tensors(views)
    for v, d in zip(views, got):
        assert as_tuple(d) == cpu_digest(v.cpu().view(torch.uint8).numpy())


def test_follows_writes_on_the_current_stream(torch):
    """Hashing is ordered after pending work on torch's current stream (no sync by the caller)."""
    src = torch.randint(0, 256, (64 * MiB,), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        dst = torch.empty_like(src)
        dst.copy_(src)
        for _ in range(20):
            dst.add_(1)
        got = cuda.digest_tensors([dst])[0]
    assert as_tuple(got) == cpu_digest((src + 20).cpu().numpy())


def test_zero_copy_memory_stays_within_one_percent(torch):
    """A 2 GiB tensor is hashed in place: torch's peak grows by at most ~1% of it plus 1 MiB."""
    t = torch.randint(0, 256, (2 << 30,), dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    cuda.digest_tensors([t])
    extra = torch.cuda.max_memory_allocated() - before
    assert extra <= t.numel() // 100 + MiB, extra


def test_cupy_buffer_is_hashed_in_place():
    """With CuPy's pool capped just above the array, any staging copy would fail."""
    import cupy

    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    arr = cupy.random.randint(0, 256, 256 * MiB, dtype=cupy.uint8)
    limit = pool.total_bytes() + arr.nbytes // 100 + MiB
    old = pool.get_limit()
    pool.set_limit(size=limit)
    try:
        got = cuda.digest_device_buffer(arr)
    finally:
        pool.set_limit(size=old)
    assert as_tuple(got) == cpu_digest(cupy.asnumpy(arr))


# -- the public paths ------------------------------------------------------------------------------------------
@pytest.fixture(params=["kvikio", "pinned"])
def file_reader(request, monkeypatch):
    """Each way the CUDA backend reads files: kvikio (where it is installed) and pinned buffers."""
    if request.param == "kvikio":
        pytest.importorskip("kvikio")
        assert cuda.file_reader() == "kvikio"
    else:
        monkeypatch.setattr(cuda, "file_reader", lambda: "pinned")
    return request.param


def test_files_on_cuda_match_cpu(tmp_path, monkeypatch, file_reader):
    import sentry.hashing as hashing

    monkeypatch.setattr(cuda, "FILE_BLOCK_BYTES", MiB)  # several blocks per file,
    monkeypatch.setattr(cuda, "FILE_BATCH_BYTES", 4 * MiB)  # several to a run, every reader thread busy
    rng = np.random.default_rng(10)
    ranges = []
    for i, n in enumerate([0, 1, 4095, 4096, 4097, 3 * MiB + 17, 10 * MiB]):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(rng.integers(0, 256, n, np.uint8).tobytes())
        ranges += [cpu.FileRange(f), cpu.FileRange(f, n // 3, n - n // 3)]
    for k in range(500):  # many small files, hashed whole in batches
        f = tmp_path / f"s{k}.bin"
        f.write_bytes(rng.integers(0, 256, int(rng.integers(0, 20_000)), np.uint8).tobytes())
        ranges.append(cpu.FileRange(f))
    seen = []
    got = hashing.digest_ranges(ranges, HashParams(), progress=seen.append, device="cuda")
    assert got == cpu.digest_ranges(ranges, HashParams())
    assert sum(seen) == sum(d.size for d in got)


def test_cli_on_cuda_reads_files_to_the_cpu_roots(tmp_path, keys):
    """`sentry hash/sign/verify --device cuda` (kvikio where installed) against `--device cpu`."""
    import json

    import torch
    from support import run_cli, save_tensors

    rng = np.random.default_rng(11)
    m = tmp_path / "m"
    (m / "shards").mkdir(parents=True)
    for n in (0, 1, 4095, 4096, 4097, 40 * MiB + 3):  # the last: three 16 MiB blocks in one run
        (m / f"{n}.bin").write_bytes(rng.integers(0, 256, n, np.uint8).tobytes())
    for k in range(300):
        (m / "shards" / f"{k}.bin").write_bytes(rng.integers(0, 256, int(rng.integers(1, 9000)), np.uint8).tobytes())
    save_tensors(m / "w.safetensors", {"a": torch.arange(100_000, dtype=torch.float32)})

    def run(*args):
        r = run_cli(*args)
        assert r.returncode == 0, (cuda.file_reader(), r.stderr)
        return r.stdout

    on_gpu = json.loads(run("hash", m, "--json", "--device", "cuda", "-q"))
    assert on_gpu == json.loads(run("hash", m, "--json", "--device", "cpu", "-q"))
    key, pub = keys
    for signer, verifier in (("cuda", "cpu"), ("cpu", "cuda")):
        run("sign", m, "--key", key, "--device", signer, "-q")
        run("verify", m, "--public-key", pub, "--device", verifier, "-q")


def test_verify_model_on_cuda(torch, tmp_path):
    from support import make_keys

    import sentry
    from sentry.errors import VerificationError

    key, pub = make_keys(tmp_path)
    model = torch.nn.Sequential(torch.nn.Linear(257, 129), torch.nn.LayerNorm(129), torch.nn.Linear(129, 3))
    model = model.to(torch.bfloat16)
    sig = tmp_path / "m.sig"
    sentry.sign_model(model, key=key, signature=sig, device="cpu")
    model = model.cuda()
    sentry.verify_model(model, public_key=pub, signature=sig, device="cuda")
    sentry.verify_model(model, public_key=pub, signature=sig)  # auto picks CUDA
    with torch.no_grad():
        model[2].weight[1, 2] += 1
    with pytest.raises(VerificationError) as err:
        sentry.verify_model(model, public_key=pub, signature=sig, device="cuda")
    assert [c.label for c in err.value.report.changed] == ["tensor 2.weight"]


def test_safetensors_signature_verifies_the_model_on_gpu(torch, tmp_path):
    from safetensors.torch import save_file
    from support import make_keys

    import sentry

    key, pub = make_keys(tmp_path)
    g = torch.Generator().manual_seed(2)
    state = {"emb": torch.randn(1001, 63, generator=g).to(torch.bfloat16), "b": torch.randn(7, generator=g)}
    f = tmp_path / "w.safetensors"
    save_file(state, str(f))
    sentry.sign_model(f, key=key, device="cuda")
    sentry.verify_model(f, public_key=pub, device="cuda")
    sentry.verify_model({k: v.cuda() for k, v in state.items()}, public_key=pub, signature=str(f) + ".sig", device="cuda")
