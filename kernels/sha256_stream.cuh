/*
 * Streaming SHA-256 (init / update / final over any byte lengths) on top of sha256.cuh's
 * compression function: what HMAC-SHA256 in RFC 6979 needs (kernels/rfc6979.cuh). The Merkle
 * kernels hash whole leaves and nodes with sha256.cuh directly.
 * Branches and indices depend only on lengths, never on the bytes hashed (the signing kernels
 * hash secrets with it; tests/native/test_ecdsa_ct.py checks that under valgrind).
 */
#pragma once
#include "sha256.cuh"

struct sha256_ctx {
    uint32_t state[8];
    uint8_t block[64];
    uint32_t used;   /* bytes in block */
    uint64_t total;  /* bytes hashed so far */
};

SENTRY_HD void sha256_init(sha256_ctx *c)
{
    sha256_init(c->state);
    c->used = 0;
    c->total = 0;
}

/* A real call on the GPU: each HMAC of RFC 6979 would otherwise inline its own copies of the
   unrolled compression function (about 40 in the signing kernel: code size and nvcc time). */
#if defined(__CUDACC__)
__host__ __device__ __noinline__
#else
static inline
#endif
void sha256_compress_buffered(sha256_ctx *c)
{
    uint32_t w[16];
    sentry_load_block(c->block, w);
    sha256_compress(c->state, w);
    c->used = 0;
}

SENTRY_HD void sha256_update(sha256_ctx *c, const uint8_t *p, uint64_t len)
{
    c->total += len;
    for (uint64_t i = 0; i < len; i++) {
        c->block[c->used++] = p[i];
        if (c->used == 64) sha256_compress_buffered(c);
    }
}

SENTRY_HD void sha256_final(sha256_ctx *c, uint8_t out[32])
{
    uint64_t bits = c->total * 8;
    c->block[c->used++] = 0x80;
    if (c->used > 56) {
        while (c->used < 64) c->block[c->used++] = 0;
        sha256_compress_buffered(c);
    }
    while (c->used < 56) c->block[c->used++] = 0;
    for (int i = 0; i < 8; i++) c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_compress_buffered(c);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->state[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->state[i];
    }
}
