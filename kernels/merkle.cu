/*
 * Sentry's CUDA Merkle kernels (RFC 9162, SHA-256): per window of segments one launch for the
 * leaves and the 8 tree levels above them (inside each block of 256 slots), one launch per higher
 * level, one launch for the roots, all with blocks of 256 threads (the leaf kernel's shared memory
 * is sized for 8 warps). Grid-stride loops over 64-bit indices: threads (levels, roots) or blocks
 * of 256 slots (leaves). The per-thread work is in merkle.cuh, shared
 * with the CPU tests; the warp-cooperative leaf hashing in merkle_leaves.cuh. Compiled at run time
 * by sentry/hashing/cuda.py (NVRTC, for the running GPU); tests compile it with nvcc for sm_90.
 * __launch_bounds__ asks for 4 blocks per SM (at most 64 registers per thread).
 */
#include "merkle_leaves.cuh"

#define SENTRY_THREADS 256
#define SENTRY_GRID_STRIDE(t, total)                                                      \
    for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < (total); \
         t += (uint64_t)gridDim.x * blockDim.x)

/* Leaves, then tree levels 1 .. 8, of each block of 256 slots of the window's node array. */
extern "C" __global__ void __launch_bounds__(SENTRY_THREADS, 4)
merkle_leaves(const int64_t *__restrict__ seg, uint32_t nseg, uint32_t leaf_size, uint64_t nslots,
              uint32_t *__restrict__ nodes, uint32_t *__restrict__ grains)
{
    __shared__ sentry_staging staging[LEAF_WARPS];
    uint32_t warp = threadIdx.x >> 5;
    uint64_t stride = (uint64_t)gridDim.x * SENTRY_THREADS;
    for (uint64_t base = (uint64_t)blockIdx.x * SENTRY_THREADS; base < nslots; base += stride) {
        if (base + 32 * warp < nslots)
            sentry_warp_leaves(seg, nseg, leaf_size, nslots, base + 32 * warp, staging + warp, nodes, grains);
        sentry_block_levels(seg, nseg, nslots, base, nodes, grains);
    }
}

extern "C" __global__ void __launch_bounds__(SENTRY_THREADS, 4)
merkle_level(const int64_t *__restrict__ seg, uint32_t nseg, const int64_t *__restrict__ first, uint32_t level,
             uint64_t nthreads, uint32_t *__restrict__ nodes, uint32_t *__restrict__ grains)
{
    SENTRY_GRID_STRIDE(t, nthreads) sentry_level_thread(seg, nseg, first, level, t, nodes, grains);
}

extern "C" __global__ void __launch_bounds__(SENTRY_THREADS)
merkle_roots(const int64_t *__restrict__ seg, uint32_t nseg, const uint32_t *__restrict__ nodes,
             uint32_t *__restrict__ roots)
{
    SENTRY_GRID_STRIDE(s, (uint64_t)nseg) sentry_root_thread(seg, (uint32_t)s, nodes, roots);
}
