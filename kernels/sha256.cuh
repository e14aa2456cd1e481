/*
 * SHA-256 for Sentry's Merkle kernels: the per-thread code, shared by the GPU and the CPU tests.
 *
 * Under nvcc / NVRTC every function is __host__ __device__; under g++ it is plain inline C++, so
 * tests/native/test_kernels_host.py builds this very file into a host library and checks it against hashlib.
 * No libc header NVRTC lacks: under NVRTC the fixed-width types are declared here.
 *
 * Hashes live in memory as their 32 digest bytes (big-endian words), so Python reads them as they
 * are. RFC 9162 hashes one prefix byte before the data (0x00 leaf, 0x01 node): message byte q is
 * data byte q-1, so each message word is a funnel shift of two consecutive big-endian data words.
 * Leaves are hashed by merkle_leaves.cuh (warp-cooperative); nodes here.
 */
#pragma once

#if defined(__CUDACC_RTC__)
typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef long long int64_t;
#else
#include <stdint.h>
#endif

#if defined(__CUDACC__)
#define SENTRY_HD __host__ __device__ __forceinline__
#define SENTRY_UNROLL _Pragma("unroll")
#else
#define SENTRY_HD static inline
#define SENTRY_UNROLL
#endif

/* 16 bytes read in one access (a uint4 load on the GPU). */
struct alignas(16) sentry_u4 {
    uint32_t x, y, z, w;
};

SENTRY_HD uint32_t sentry_bswap(uint32_t x)
{
#if defined(__CUDA_ARCH__)
    return __byte_perm(x, 0, 0x0123);
#else
    return __builtin_bswap32(x);
#endif
}

#define SHA256_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define SHA256_BSIG0(x) (SHA256_ROTR(x, 2) ^ SHA256_ROTR(x, 13) ^ SHA256_ROTR(x, 22))
#define SHA256_BSIG1(x) (SHA256_ROTR(x, 6) ^ SHA256_ROTR(x, 11) ^ SHA256_ROTR(x, 25))
#define SHA256_SSIG0(x) (SHA256_ROTR(x, 7) ^ SHA256_ROTR(x, 18) ^ ((x) >> 3))
#define SHA256_SSIG1(x) (SHA256_ROTR(x, 17) ^ SHA256_ROTR(x, 19) ^ ((x) >> 10))
#define SHA256_CH(e, f, g) ((g) ^ ((e) & ((f) ^ (g))))
#define SHA256_MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) | (b))))
/* One round; the caller rotates the variable names instead of moving eight values. */
#define SHA256_ROUND(a, b, c, d, e, f, g, h, k, wi)                                   \
    do {                                                                             \
        uint32_t t1_ = (h) + SHA256_BSIG1(e) + SHA256_CH(e, f, g) + (k) + (wi);       \
        (d) += t1_;                                                                  \
        (h) = t1_ + SHA256_BSIG0(a) + SHA256_MAJ(a, b, c);                           \
    } while (0)
/* Message schedule in a rolling window of 16 words (constant indices: stays in registers). */
#define SHA256_SCHED(i) \
    (w[(i) & 15] += SHA256_SSIG1(w[((i) - 2) & 15]) + w[((i) - 7) & 15] + SHA256_SSIG0(w[((i) - 15) & 15]))

SENTRY_HD void sha256_init(uint32_t st[8])
{
    st[0] = 0x6a09e667u; st[1] = 0xbb67ae85u; st[2] = 0x3c6ef372u; st[3] = 0xa54ff53au;
    st[4] = 0x510e527fu; st[5] = 0x9b05688cu; st[6] = 0x1f83d9abu; st[7] = 0x5be0cd19u;
}

/* One 64-byte block given as 16 big-endian words; w is used as scratch. */
SENTRY_HD void sha256_compress(uint32_t st[8], uint32_t w[16])
{
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0x428a2f98u, w[0]);
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0x71374491u, w[1]);
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0xb5c0fbcfu, w[2]);
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0xe9b5dba5u, w[3]);
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0x3956c25bu, w[4]);
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0x59f111f1u, w[5]);
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0x923f82a4u, w[6]);
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0xab1c5ed5u, w[7]);
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0xd807aa98u, w[8]);
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0x12835b01u, w[9]);
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0x243185beu, w[10]);
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0x550c7dc3u, w[11]);
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0x72be5d74u, w[12]);
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0x80deb1feu, w[13]);
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0x9bdc06a7u, w[14]);
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0xc19bf174u, w[15]);
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0xe49b69c1u, SHA256_SCHED(16));
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0xefbe4786u, SHA256_SCHED(17));
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0x0fc19dc6u, SHA256_SCHED(18));
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0x240ca1ccu, SHA256_SCHED(19));
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0x2de92c6fu, SHA256_SCHED(20));
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0x4a7484aau, SHA256_SCHED(21));
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0x5cb0a9dcu, SHA256_SCHED(22));
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0x76f988dau, SHA256_SCHED(23));
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0x983e5152u, SHA256_SCHED(24));
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0xa831c66du, SHA256_SCHED(25));
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0xb00327c8u, SHA256_SCHED(26));
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0xbf597fc7u, SHA256_SCHED(27));
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0xc6e00bf3u, SHA256_SCHED(28));
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0xd5a79147u, SHA256_SCHED(29));
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0x06ca6351u, SHA256_SCHED(30));
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0x14292967u, SHA256_SCHED(31));
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0x27b70a85u, SHA256_SCHED(32));
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0x2e1b2138u, SHA256_SCHED(33));
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0x4d2c6dfcu, SHA256_SCHED(34));
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0x53380d13u, SHA256_SCHED(35));
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0x650a7354u, SHA256_SCHED(36));
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0x766a0abbu, SHA256_SCHED(37));
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0x81c2c92eu, SHA256_SCHED(38));
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0x92722c85u, SHA256_SCHED(39));
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0xa2bfe8a1u, SHA256_SCHED(40));
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0xa81a664bu, SHA256_SCHED(41));
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0xc24b8b70u, SHA256_SCHED(42));
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0xc76c51a3u, SHA256_SCHED(43));
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0xd192e819u, SHA256_SCHED(44));
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0xd6990624u, SHA256_SCHED(45));
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0xf40e3585u, SHA256_SCHED(46));
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0x106aa070u, SHA256_SCHED(47));
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0x19a4c116u, SHA256_SCHED(48));
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0x1e376c08u, SHA256_SCHED(49));
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0x2748774cu, SHA256_SCHED(50));
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0x34b0bcb5u, SHA256_SCHED(51));
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0x391c0cb3u, SHA256_SCHED(52));
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0x4ed8aa4au, SHA256_SCHED(53));
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0x5b9cca4fu, SHA256_SCHED(54));
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0x682e6ff3u, SHA256_SCHED(55));
    SHA256_ROUND(a, b, c, d, e, f, g, h, 0x748f82eeu, SHA256_SCHED(56));
    SHA256_ROUND(h, a, b, c, d, e, f, g, 0x78a5636fu, SHA256_SCHED(57));
    SHA256_ROUND(g, h, a, b, c, d, e, f, 0x84c87814u, SHA256_SCHED(58));
    SHA256_ROUND(f, g, h, a, b, c, d, e, 0x8cc70208u, SHA256_SCHED(59));
    SHA256_ROUND(e, f, g, h, a, b, c, d, 0x90befffau, SHA256_SCHED(60));
    SHA256_ROUND(d, e, f, g, h, a, b, c, 0xa4506cebu, SHA256_SCHED(61));
    SHA256_ROUND(c, d, e, f, g, h, a, b, 0xbef9a3f7u, SHA256_SCHED(62));
    SHA256_ROUND(b, c, d, e, f, g, h, a, 0xc67178f2u, SHA256_SCHED(63));
    st[0] += a; st[1] += b; st[2] += c; st[3] += d; st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

/* Writes the digest as its 32 bytes. */
SENTRY_HD void sha256_store(const uint32_t st[8], uint32_t *out)
{
    SENTRY_UNROLL
    for (int i = 0; i < 8; i++) out[i] = sentry_bswap(st[i]);
}

/* The 16 big-endian data words at p (64 bytes), with the widest loads p's alignment allows. */
SENTRY_HD void sentry_load_block(const uint8_t *p, uint32_t d[16])
{
    uint64_t addr = (uint64_t)p;
    if ((addr & 15) == 0) {
        const sentry_u4 *q = (const sentry_u4 *)p;
        SENTRY_UNROLL
        for (int i = 0; i < 4; i++) {
            sentry_u4 v = q[i];
            d[4 * i] = sentry_bswap(v.x); d[4 * i + 1] = sentry_bswap(v.y);
            d[4 * i + 2] = sentry_bswap(v.z); d[4 * i + 3] = sentry_bswap(v.w);
        }
    } else if ((addr & 3) == 0) {
        const uint32_t *q = (const uint32_t *)p;
        SENTRY_UNROLL
        for (int i = 0; i < 16; i++) d[i] = sentry_bswap(q[i]);
    } else {
        SENTRY_UNROLL
        for (int i = 0; i < 16; i++)
            d[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
                   ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    }
}

/* RFC 9162 interior node: SHA-256(0x01 || left || right), each side 32 digest bytes.
 * out may alias left or right (both are read first). */
SENTRY_HD void sha256_node(const uint32_t *left, const uint32_t *right, uint32_t *out)
{
    uint32_t st[8], w[16], d[16];
    SENTRY_UNROLL
    for (int i = 0; i < 8; i++) {
        d[i] = sentry_bswap(left[i]);
        d[8 + i] = sentry_bswap(right[i]);
    }
    sha256_init(st);
    w[0] = 0x01000000u | (d[0] >> 8);
    SENTRY_UNROLL
    for (int i = 1; i < 16; i++) w[i] = (d[i - 1] << 24) | (d[i] >> 8);
    sha256_compress(st, w);
    w[0] = (d[15] << 24) | 0x00800000u;
    SENTRY_UNROLL
    for (int i = 1; i < 15; i++) w[i] = 0;
    w[15] = 65 * 8;
    sha256_compress(st, w);
    sha256_store(st, out);
}
