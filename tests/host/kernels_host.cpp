// Host build of the Merkle kernels' per-thread code (kernels/merkle.cuh, kernels/sha256.cuh) for
// the CPU tests: node hashes and the level plan. Whole kernels (the warp-cooperative leaf kernel
// included) run on the CPU launch emulator instead (tests/native/test_emulator_kernels.py).
#include "merkle.cuh"

extern "C" {

void host_node_hash(const uint32_t *left, const uint32_t *right, uint32_t *out) { sha256_node(left, right, out); }

uint64_t host_level_threads(uint64_t leaves, uint32_t level) { return sentry_level_threads(leaves, level); }
}
