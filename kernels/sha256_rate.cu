/*
 * The compute ceiling of SHA-256 on this GPU, for bench/gpu_merkle.py: each thread compresses a
 * register-resident block `rounds` times (each result feeds the next, so nothing is elided) and
 * writes its state once. No memory traffic: bytes per second here bound any Merkle kernel.
 */
#include "sha256.cuh"

extern "C" __global__ void sha256_rate(uint32_t rounds, uint32_t *out)
{
    uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t st[8], w[16];
    sha256_init(st);
    for (uint32_t r = 0; r < rounds; r++) {
        SENTRY_UNROLL
        for (int i = 0; i < 16; i++) w[i] = st[i & 7] ^ (t + i);
        sha256_compress(st, w);
    }
    sha256_store(st, out + 8 * (uint64_t)t);
}
