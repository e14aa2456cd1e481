/*
 * Sentry's CUDA Merkle kernels (RFC 9162, SHA-256): one leaf launch per window of segments, one
 * launch per tree level, one launch for the roots. Grid-stride loops over 64-bit thread indices;
 * the per-thread work is in merkle.cuh, shared with the CPU tests. Compiled at run time by
 * sentry/hashing/cuda.py (NVRTC, for the running GPU); tests compile it with nvcc for sm_90.
 */
#include "merkle.cuh"

#define SENTRY_GRID_STRIDE(t, total) \
    for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < (total); t += (uint64_t)gridDim.x * blockDim.x)

extern "C" __global__ void merkle_leaves(const int64_t *seg, uint32_t nseg, uint32_t leaf_size, uint64_t nleaves,
                                         uint32_t *nodes, uint32_t *grains)
{
    SENTRY_GRID_STRIDE(t, nleaves) sentry_leaf_thread(seg, nseg, leaf_size, t, nodes, grains);
}

extern "C" __global__ void merkle_level(const int64_t *seg, uint32_t nseg, const int64_t *first, uint32_t level,
                                        uint64_t nthreads, uint32_t *nodes, uint32_t *grains)
{
    SENTRY_GRID_STRIDE(t, nthreads) sentry_level_thread(seg, nseg, first, level, t, nodes, grains);
}

extern "C" __global__ void merkle_roots(const int64_t *seg, uint32_t nseg, const uint32_t *nodes, uint32_t *roots)
{
    SENTRY_GRID_STRIDE(s, (uint64_t)nseg) sentry_root_thread(seg, (uint32_t)s, nodes, roots);
}
