// Host build of the kernels' per-thread code (kernels/merkle.cuh, kernels/sha256.cuh) for the CPU
// tests: each "launch" runs its threads in a loop, last thread first, since a GPU promises no order.
#include "merkle.cuh"

extern "C" {

void host_leaf_hash(const uint8_t *p, uint64_t len, uint32_t *out) { sha256_prefixed(0x00u, p, len, out); }

void host_node_hash(const uint32_t *left, const uint32_t *right, uint32_t *out) { sha256_node(left, right, out); }

void host_leaves(const int64_t *seg, uint32_t nseg, uint32_t leaf_size, uint64_t nleaves, uint32_t *nodes,
                 uint32_t *grains)
{
    for (uint64_t t = nleaves; t-- > 0;) sentry_leaf_thread(seg, nseg, leaf_size, t, nodes, grains);
}

void host_level(const int64_t *seg, uint32_t nseg, const int64_t *first, uint32_t level, uint64_t nthreads,
                uint32_t *nodes, uint32_t *grains)
{
    for (uint64_t t = nthreads; t-- > 0;) sentry_level_thread(seg, nseg, first, level, t, nodes, grains);
}

void host_roots(const int64_t *seg, uint32_t nseg, const uint32_t *nodes, uint32_t *roots)
{
    for (uint32_t s = nseg; s-- > 0;) sentry_root_thread(seg, s, nodes, roots);
}

uint64_t host_level_threads(uint64_t leaves, uint32_t level) { return sentry_level_threads(leaves, level); }
}
