"""The CPU launch emulator itself (tests/native/cuda_emu.h, tests/cuda_emu): launches, argument
checks, barriers, warp intrinsics, async copies and integer intrinsics, each against a model
written here in Python, and the launches a GPU would hang on or leave undefined, refused."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import fake_cupy

HEAD = "#include <stdint.h>\n"
FULL = 0xFFFFFFFF


def kernel(cupy, code: str, name: str):
    return cupy.RawModule(code=HEAD + code).get_function(name)


def refused(match: str):
    return pytest.raises(fake_cupy.EmulatorError, match=match)


# -- launches and arguments --------------------------------------------------------------------------
ARGS = """
extern "C" __global__ void args(uint64_t *out, uint64_t a, uint32_t b, const uint8_t *none) {
    out[0] = a; out[1] = b; out[2] = none == nullptr;
}"""


def test_arguments_arrive_as_cupy_passes_them(emu_cupy):
    out = emu_cupy.zeros(3, emu_cupy.uint64)
    kernel(emu_cupy, ARGS, "args")((1,), (1,), (out, np.uint64(2**40 + 5), np.uint32(7), None))
    assert out.get().tolist() == [2**40 + 5, 7, 1]
    kernel(emu_cupy, ARGS, "args")((1,), (1,), (out, 2**40 + 6, np.uint32(8), None))  # a Python int is int64
    assert out.get().tolist() == [2**40 + 6, 8, 1]


@pytest.mark.parametrize("args, message", [
    (lambda out: (out, np.uint32(2), np.uint32(7), None), "argument 1 is 4 bytes, the parameter 8"),
    (lambda out: (out, np.uint64(2), 7, None), "argument 2 is 8 bytes, the parameter 4"),
    (lambda out: (out, np.uint64(2), np.uint16(7), None), "argument 2 is 2 bytes, the parameter 4"),
    (lambda out: (out, np.uint64(2), np.uint32(7)), "3 arguments for 4 parameters"),
    (lambda out: (out, np.uint64(2), np.uint32(7), None, None), "5 arguments for 4 parameters"),
], ids=["u32-for-u64", "int-for-u32", "u16-for-u32", "too-few", "too-many"])
def test_launches_with_other_argument_sizes_are_refused(emu_cupy, args, message):
    out = emu_cupy.zeros(3, emu_cupy.uint64)
    with refused("launch of args refused: " + message):
        kernel(emu_cupy, ARGS, "args")((1,), (1,), args(out))
    assert out.get().tolist() == [0, 0, 0]  # nothing ran


def test_unknown_kernels_and_unsupported_arguments(emu_cupy):
    with pytest.raises(fake_cupy.CUDARuntimeError, match="no kernel named nope"):
        emu_cupy.RawModule(code=HEAD + ARGS).get_function("nope")
    with pytest.raises(TypeError, match="Unsupported type"):
        kernel(emu_cupy, ARGS, "args")((1,), (1,), ("text", 1, 2, None))


QUALIFIERS = """
__constant__ uint32_t K[2] = {3, 4};
__device__ __noinline__ uint32_t twice(uint32_t v) { return 2 * v; }
__device__ __forceinline__ uint32_t thrice(uint32_t v) { return 3 * v; }
extern "C" __global__ void __launch_bounds__(64, 4) first(uint4 *out) {
    out[threadIdx.x] = make_uint4(twice(K[0]), thrice(K[1]), blockDim.x, threadIdx.x);
}
extern "C" __global__ __launch_bounds__(64) void second(const uint2 *__restrict__ in, uint32_t *__restrict__ out) {
    out[threadIdx.x] = __ldg(&in[threadIdx.x]).x + in[threadIdx.x].y;
}
__global__ void not_exported(uint32_t *out) { out[0] = 1; }
"""


def test_the_qualifiers_kernels_use(emu_cupy):
    module = emu_cupy.RawModule(code=HEAD + QUALIFIERS)
    out = emu_cupy.zeros(4 * 8, emu_cupy.uint32)
    module.get_function("first")((1,), (8,), (out,))
    assert out.get().reshape(8, 4).tolist() == [[6, 12, 8, t] for t in range(8)]
    pairs = emu_cupy.asarray(np.arange(16, dtype=np.uint32))
    module.get_function("second")((1,), (8,), (pairs, out))
    assert out.get()[:8].tolist() == [4 * t + 1 for t in range(8)]
    with pytest.raises(fake_cupy.CUDARuntimeError):
        module.get_function("not_exported")


IDS = """
extern "C" __global__ void ids(uint32_t *hits, uint32_t *dims) {
    uint64_t block = blockIdx.x + gridDim.x * (blockIdx.y + (uint64_t)gridDim.y * blockIdx.z);
    uint64_t thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    atomicAdd(&hits[block * blockDim.x * blockDim.y * blockDim.z + thread], 1u);
    if (block == 0 && thread == 0) {
        dims[0] = gridDim.x; dims[1] = gridDim.y; dims[2] = gridDim.z;
        dims[3] = blockDim.x; dims[4] = blockDim.y; dims[5] = blockDim.z; dims[6] = warpSize;
    }
}"""


@pytest.mark.parametrize("order, workers", [(0, 1), (1, 1), (7, 1), (1, 3)])
def test_every_block_and_thread_runs_once(emu_cupy, order, workers):
    emu_cupy.emu.order, emu_cupy.emu.workers = order, workers
    grid, block = (5, 3, 2), (7, 4, 3)
    hits, dims = emu_cupy.zeros(30 * 84, emu_cupy.uint32), emu_cupy.zeros(7, emu_cupy.uint32)
    kernel(emu_cupy, IDS, "ids")(grid, block, (hits, dims))
    assert hits.get().tolist() == [1] * (30 * 84)
    assert dims.get().tolist() == [*grid, *block, 32]


# -- barriers -------------------------------------------------------------------------------------------
BARRIER = """
extern "C" __global__ void rotate(uint32_t *out) {  // each thread reads its neighbour's word
    __shared__ uint32_t s[128];
    s[threadIdx.x] = 1000 + threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
extern "C" __global__ void rotate_unsynced(uint32_t *out) {
    __shared__ uint32_t s[128];
    s[threadIdx.x] = 1000 + threadIdx.x;
    out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
extern "C" __global__ void early_exit(uint32_t *out) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}"""


def test_a_barrier_orders_shared_memory_and_a_missing_one_shows(emu_cupy):
    out = emu_cupy.zeros(128, emu_cupy.uint32)
    kernel(emu_cupy, BARRIER, "rotate_unsynced")((1,), (128,), (out,))  # threads run to the end one by one
    assert out.get().tolist() != [1000 + (i + 1) % 128 for i in range(128)]
    kernel(emu_cupy, BARRIER, "rotate")((2,), (128,), (out,))
    assert out.get().tolist() == [1000 + (i + 1) % 128 for i in range(128)]


def test_a_thread_that_exits_before_a_barrier_aborts_the_launch(emu_cupy):
    out = emu_cupy.zeros(64, emu_cupy.uint32)
    with refused(r"launch of early_exit aborted: thread \(\d+,0,0\) of block \(0,0,0\) waits at __syncthreads, "
                 r"but thread \(5,0,0\) of block \(0,0,0\) has exited"):
        kernel(emu_cupy, BARRIER, "early_exit")((1,), (64,), (out,))


# -- warp intrinsics ---------------------------------------------------------------------------------
WARP = """
extern "C" __global__ void warp(uint32_t *out) {
    unsigned t = threadIdx.x, lane = t % 32, v = 100 + t;
    uint32_t *o = out + 12 * t;
    o[10] = __activemask();  // before any lane exits
    o[0] = __shfl_sync(0xffffffffu, v, 3);
    o[1] = __shfl_sync(0xffffffffu, v, 5, 8);
    o[2] = __shfl_up_sync(0xffffffffu, v, 2);
    o[3] = __shfl_down_sync(0xffffffffu, v, 3, 16);
    o[4] = __shfl_xor_sync(0xffffffffu, v, 5);
    o[5] = __ballot_sync(0xffffffffu, t % 3 == 0);
    o[6] = __any_sync(0xffffffffu, t == 37);
    o[7] = __all_sync(0xffffffffu, lane < 31);
    unsigned sum = v;
    for (int d = 16; d; d /= 2) sum += __shfl_down_sync(0xffffffffu, sum, d);
    o[8] = sum;
    o[9] = (uint32_t)(__shfl_sync(0xffffffffu, (uint64_t)v << 33, 0) >> 33);
    __syncwarp();
    if (lane < 16) o[11] = __shfl_xor_sync(0x0000ffffu, v, 1);
}
extern "C" __global__ void exited_lane(uint32_t *out) {
    if (threadIdx.x == 31) return;
    out[threadIdx.x] = __shfl_sync(0xffffffffu, threadIdx.x, 0);
}
extern "C" __global__ void disagree(uint32_t *out) {
    out[threadIdx.x] = __shfl_sync(threadIdx.x < 16 ? 0xffffffffu : 0xffffu, threadIdx.x, 0);
}
extern "C" __global__ void outside(uint32_t *out) {
    out[threadIdx.x] = __shfl_sync(0xffu, threadIdx.x, 9);
}"""


def warp_model(t: int) -> list:
    lane, base = t % 32, t - t % 32
    v = [100 + base + i for i in range(32)]
    return [v[3], v[lane // 8 * 8 + 5], v[lane - 2] if lane >= 2 else v[lane],
            v[lane + 3] if lane % 16 + 3 < 16 else v[lane], v[lane ^ 5],
            sum(1 << i for i in range(32) if (base + i) % 3 == 0), int(base == 32), 0, sum(v) if lane == 0 else None,
            v[0], FULL, v[lane ^ 1] if lane < 16 else 0]


def test_shuffles_votes_and_reductions_match_the_model(emu_cupy):
    out = emu_cupy.zeros(64 * 12, emu_cupy.uint32)
    kernel(emu_cupy, WARP, "warp")((1,), (64,), (out,))
    got = out.get().reshape(64, 12).tolist()
    for t in range(64):
        want = warp_model(t)
        assert [g for g, w in zip(got[t], want) if w is not None] == [w for w in want if w is not None], t


@pytest.mark.parametrize("name, message", [
    ("exited_lane", r"waits in __shfl_sync for lane 31, which has exited"),
    ("disagree", r"lanes of warp 0 disagree: .* with mask 0xffffffff, .* with mask 0x0000ffff"),
    ("outside", r"reads lane 9 in __shfl_sync, outside the mask"),
])
def test_warp_operations_a_gpu_leaves_undefined_abort(emu_cupy, name, message):
    with refused(f"launch of {name} aborted: .*{message}"):
        kernel(emu_cupy, WARP, name)((1,), (32,), (emu_cupy.zeros(32, emu_cupy.uint32),))


# -- async copies ----------------------------------------------------------------------------------------
ASYNC = """
#include <cuda_pipeline.h>  // the emulator's stand-in, as NVRTC would find the real one
template <int WAIT>  // 0: wait for both batches, 1: for the first only, 2: read before waiting
__device__ void stage(const uint4 *src, uint4 *out) {
    __shared__ uint4 s[2][64];
    unsigned t = threadIdx.x;
    __pipeline_memcpy_async(&s[0][t], &src[t], 16);
    __pipeline_commit();
    __pipeline_memcpy_async(&s[1][t], &src[64 + t], 16);
    __pipeline_commit();
    if (WAIT < 2) __pipeline_wait_prior(WAIT);
    out[t] = s[0][t];
    out[64 + t] = s[1][t];
}
extern "C" __global__ void wait_all(const uint4 *src, uint4 *out) { stage<0>(src, out); }
extern "C" __global__ void wait_first(const uint4 *src, uint4 *out) { stage<1>(src, out); }
extern "C" __global__ void no_wait(const uint4 *src, uint4 *out) { stage<2>(src, out); }
"""


@pytest.mark.parametrize("name, landed", [("wait_all", 2), ("wait_first", 1), ("no_wait", 0)])
def test_async_copies_land_at_the_wait_that_covers_them(emu_cupy, name, landed):
    data = np.random.default_rng(3).integers(0, 256, 2048, np.uint8)
    src, out = emu_cupy.asarray(data), emu_cupy.zeros(2048, emu_cupy.uint8)
    kernel(emu_cupy, ASYNC, name)((1,), (64,), (src, out))
    got = out.get()
    assert (got[: 1024 * landed] == data[: 1024 * landed]).all()
    assert (got[1024 * landed :] == 0xA5).all()  # read before its wait: the poisoned destination


# -- integer intrinsics and atomics -------------------------------------------------------------------------
INTRINSICS = """
extern "C" __global__ void ints(const uint32_t *in, uint32_t *out, uint32_t n) {
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint32_t a = in[2 * i], b = in[2 * i + 1], *o = out + 12 * i;
    o[0] = __funnelshift_l(a, b, b); o[1] = __funnelshift_lc(a, b, b % 40); o[2] = __funnelshift_r(a, b, a);
    o[3] = __funnelshift_rc(a, b, a % 40); o[4] = __byte_perm(a, b, b); o[5] = __brev(a); o[6] = __clz(a >> (b % 33 == 32 ? 0 : b % 33));
    o[7] = __ffs(a & b); o[8] = __popc(a); o[9] = __umulhi(a, b); o[10] = min(a, b) + __ldg(&in[0]); o[11] = max(a, b);
}
extern "C" __global__ void atomics(unsigned long long *c, uint32_t *w) {
    unsigned v = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(c, 1ull); atomicMax(c + 1, (unsigned long long)v); atomicMin(w, v); atomicOr(w + 1, 1u << (v % 32));
    unsigned old = w[2], seen;
    do old = atomicCAS(w + 2, seen = old, old + 1); while (old != seen);  // an increment made of CAS
    atomicExch(w + 3, 5u);
}"""


def int_model(a: int, b: int, first: int) -> list:
    pair, m = b << 32 | a, 0xFFFFFFFF
    return [(pair << (b & 31)) >> 32 & m, (pair << min(b % 40, 32)) >> 32 & m, pair >> (a & 31) & m,
            pair >> min(a % 40, 32) & m, sum(((pair >> 8 * ((b >> 4 * n) & 7)) & 0xFF) << 8 * n for n in range(4)),
            int(f"{a:032b}"[::-1], 2), 32 - (a >> (0 if b % 33 == 32 else b % 33)).bit_length(),
            ((a & b) & -(a & b)).bit_length(), bin(a).count("1"), a * b >> 32, (min(a, b) + first) & m, max(a, b)]


def test_integer_intrinsics_match_the_model(emu_cupy):
    rng = np.random.default_rng(5)
    pairs = np.concatenate([rng.integers(0, 2**32, 600, np.uint64), [0, 0, 1, 31, 2**31, 32, 2**32 - 1, 33]]).astype(np.uint32)
    n = len(pairs) // 2
    out = emu_cupy.zeros(12 * n, emu_cupy.uint32)
    kernel(emu_cupy, INTRINSICS, "ints")((3,), (128,), (emu_cupy.asarray(pairs), out, np.uint32(n)))
    got = out.get().reshape(n, 12).tolist()
    for i in range(n):
        assert got[i] == int_model(int(pairs[2 * i]), int(pairs[2 * i + 1]), int(pairs[0])), i


def test_atomics_across_blocks_on_several_os_threads(emu_cupy):
    emu_cupy.emu.workers = 4
    counters, words = emu_cupy.zeros(2, emu_cupy.uint64), emu_cupy.asarray(np.array([FULL, 0, 0, 0], np.uint32))
    kernel(emu_cupy, INTRINSICS, "atomics")((64,), (256,), (counters, words))
    assert counters.get().tolist() == [64 * 256, 64 * 256 - 1]
    assert words.get().tolist() == [0, FULL, 64 * 256, 5]


# -- device memory --------------------------------------------------------------------------------------
def test_device_memory_is_poisoned_exact_and_not_a_numpy_array(emu_cupy):
    a = emu_cupy.empty(10, emu_cupy.uint8)
    assert a.get().tolist() == [0xA5] * 10
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    host = np.zeros(11, np.uint8)
    with pytest.raises(ValueError, match="not inside one live device allocation"):
        emu_cupy.cuda.runtime.memcpy(host.ctypes.data, a.data.ptr, 11, emu_cupy.cuda.runtime.memcpyDeviceToHost)
