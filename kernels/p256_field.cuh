// P-256 arithmetic modulo p (the field) and modulo n (the group order), per thread.
//
// Builds with nvcc, NVRTC and g++: the CPU tests run this very code. Elements are 8 little-endian
// 32-bit limbs, kept in Montgomery form (a·2^256 mod m) and always fully reduced (< m), so equal
// values have equal limbs. Every function here is constant-time: no branch, loop bound or memory
// index depends on the values, only on public constants (an exponent, a loop counter).
#pragma once

#ifdef __CUDACC_RTC__
typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef decltype(sizeof(0)) size_t;
#else
#include <stddef.h>
#include <stdint.h>
#endif

#ifdef __CUDACC__
#define P256_HD __host__ __device__ __forceinline__
#define P256_NO_UNROLL _Pragma("unroll 1")
#else
#define P256_HD inline
#define P256_NO_UNROLL
#endif

// The field multiplication is a real call on the GPU by default: inlining it everywhere makes
// nvcc take minutes and the kernels spill. -DP256_INLINE_MUL inlines it (a tuning experiment).
#if defined(__CUDACC__) && !defined(P256_INLINE_MUL)
#define P256_MUL_FN __host__ __device__ __noinline__
#else
#define P256_MUL_FN P256_HD
#endif

// Marks a secret-derived value as public (a rejected nonce, a signature). A no-op, except in the
// constant-time test build, which defines it to tell valgrind the value may be branched on.
#ifndef P256_DECLASSIFY
#define P256_DECLASSIFY(ptr, len) ((void)0)
#endif

struct p256_fe {
    uint32_t v[8];
};

// A modulus m with its Montgomery constants: R = 2^256, r2 = R^2 mod m, one = R mod m,
// n0 = -m^-1 mod 2^32.
struct p256_mod {
    p256_fe m, r2, one;
    uint32_t n0;
};

P256_HD p256_mod p256_mod_p() {
    return {{{0xffffffff, 0xffffffff, 0xffffffff, 0, 0, 0, 1, 0xffffffff}},
            {{3, 0, 0xffffffff, 0xfffffffb, 0xfffffffe, 0xffffffff, 0xfffffffd, 4}},
            {{1, 0, 0, 0xffffffff, 0xffffffff, 0xffffffff, 0xfffffffe, 0}},
            1};
}

P256_HD p256_mod p256_mod_n() {
    return {{{0xfc632551, 0xf3b9cac2, 0xa7179e84, 0xbce6faad, 0xffffffff, 0xffffffff, 0, 0xffffffff}},
            {{0xbe79eea2, 0x83244c95, 0x49bd6fa6, 0x4699799c, 0x2b6bec59, 0x2845b239, 0xf3d95620,
              0x66e12d94}},
            {{0x039cdaaf, 0x0c46353d, 0x58e8617b, 0x43190552, 0, 0, 0xffffffff, 0}},
            0xee00bc4f};
}

// ---- masks: all ones for true, zero for false ----

P256_HD uint32_t ct_is_zero_u32(uint32_t x) { return ((x | (0u - x)) >> 31) - 1u; }
P256_HD uint32_t ct_eq_u32(uint32_t a, uint32_t b) { return ct_is_zero_u32(a ^ b); }

P256_HD uint32_t fe_is_zero(const p256_fe& a) {
    uint32_t z = 0;
    for (int i = 0; i < 8; i++) z |= a.v[i];
    return ct_is_zero_u32(z);
}

P256_HD uint32_t fe_eq(const p256_fe& a, const p256_fe& b) {
    uint32_t z = 0;
    for (int i = 0; i < 8; i++) z |= a.v[i] ^ b.v[i];
    return ct_is_zero_u32(z);
}

// r = mask ? a : r
P256_HD void fe_cmov(p256_fe& r, const p256_fe& a, uint32_t mask) {
    for (int i = 0; i < 8; i++) r.v[i] = (a.v[i] & mask) | (r.v[i] & ~mask);
}

// r = a - b over 256 bits; returns the borrow (0 or 1).
P256_HD uint32_t fe_sub_raw(p256_fe& r, const p256_fe& a, const p256_fe& b) {
    uint64_t borrow = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t d = (uint64_t)a.v[i] - b.v[i] - borrow;
        r.v[i] = (uint32_t)d;
        borrow = (d >> 32) & 1;
    }
    return (uint32_t)borrow;
}

// Mask: a < m, as integers.
P256_HD uint32_t fe_lt(const p256_fe& a, const p256_fe& m) {
    p256_fe t;
    return 0u - fe_sub_raw(t, a, m);
}

// r = t mod m for t = hi·2^256 + lo < 2m.
P256_HD void fe_reduce_once(p256_fe& r, const p256_fe& lo, uint32_t hi, const p256_mod& M) {
    p256_fe d;
    uint32_t borrow = fe_sub_raw(d, lo, M.m);
    uint32_t use_d = 0u - (hi | (borrow ^ 1u));
    r = lo;
    fe_cmov(r, d, use_d);
}

// r = a + b over 256 bits; returns the carry (0 or 1).
P256_HD uint32_t fe_add_raw(p256_fe& r, const p256_fe& a, const p256_fe& b) {
    uint64_t c = 0;
    for (int i = 0; i < 8; i++) {
        c += (uint64_t)a.v[i] + b.v[i];
        r.v[i] = (uint32_t)c;
        c >>= 32;
    }
    return (uint32_t)c;
}

P256_HD void fe_add(p256_fe& r, const p256_fe& a, const p256_fe& b, const p256_mod& M) {
    p256_fe s;
    uint32_t carry = fe_add_raw(s, a, b);
    fe_reduce_once(r, s, carry, M);
}

P256_HD void fe_sub(p256_fe& r, const p256_fe& a, const p256_fe& b, const p256_mod& M) {
    p256_fe d, m = M.m;
    uint32_t mask = 0u - fe_sub_raw(d, a, b);
    for (int i = 0; i < 8; i++) m.v[i] &= mask;
    fe_add_raw(r, d, m);
}

P256_HD void fe_neg(p256_fe& r, const p256_fe& a, const p256_mod& M) {
    p256_fe zero = {{0}};
    fe_sub(r, zero, a, M);
}

// r = a·b·2^-256 mod m (CIOS). Needs b < m; a may be any 256-bit value, so that to_mont
// reduces its input.
P256_MUL_FN void fe_mul(p256_fe& r, const p256_fe& a, const p256_fe& b, const p256_mod& M) {
    uint32_t t[10] = {0};
    for (int i = 0; i < 8; i++) {
        uint64_t c = 0;
        for (int j = 0; j < 8; j++) {
            c += (uint64_t)a.v[j] * b.v[i] + t[j];
            t[j] = (uint32_t)c;
            c >>= 32;
        }
        c += t[8];
        t[8] = (uint32_t)c;
        t[9] = (uint32_t)(c >> 32);
        uint32_t q = t[0] * M.n0;
        c = ((uint64_t)q * M.m.v[0] + t[0]) >> 32;
        for (int j = 1; j < 8; j++) {
            c += (uint64_t)q * M.m.v[j] + t[j];
            t[j - 1] = (uint32_t)c;
            c >>= 32;
        }
        c += t[8];
        t[7] = (uint32_t)c;
        t[8] = t[9] + (uint32_t)(c >> 32);
    }
    p256_fe lo;
    for (int i = 0; i < 8; i++) lo.v[i] = t[i];
    fe_reduce_once(r, lo, t[8], M);
}

P256_HD void fe_sqr(p256_fe& r, const p256_fe& a, const p256_mod& M) { fe_mul(r, a, a, M); }

// Plain integer (any 256-bit value) -> Montgomery form, reduced mod m.
P256_HD void fe_to_mont(p256_fe& r, const p256_fe& a, const p256_mod& M) { fe_mul(r, a, M.r2, M); }

P256_HD void fe_from_mont(p256_fe& r, const p256_fe& a, const p256_mod& M) {
    p256_fe one = {{1}};
    fe_mul(r, a, one, M);
}

// r = a^e (Montgomery form in and out) for a public exponent e: square and multiply, where
// only the exponent's bits decide the multiplications.
P256_HD void fe_pow(p256_fe& r, const p256_fe& a, const p256_fe& e, const p256_mod& M) {
    p256_fe acc = M.one;
    P256_NO_UNROLL
    for (int limb = 7; limb >= 0; limb--) {
        uint32_t w = e.v[limb];
        P256_NO_UNROLL
        for (int bit = 31; bit >= 0; bit--) {
            fe_sqr(acc, acc, M);
            if ((w >> bit) & 1) fe_mul(acc, acc, a, M);
        }
    }
    r = acc;
}

// r = a^-1 (Fermat: a^(m-2)); the inverse of 0 comes out as 0.
P256_HD void fe_inv(p256_fe& r, const p256_fe& a, const p256_mod& M) {
    p256_fe e = M.m;
    e.v[0] -= 2;  // both moduli end in ...51 or ...ff: no borrow
    fe_pow(r, a, e, M);
}

// ---- byte strings (big-endian, as in SEC1, DER and the digests) ----

P256_HD void fe_from_bytes(p256_fe& r, const uint8_t* be) {
    for (int i = 0; i < 8; i++) {
        const uint8_t* w = be + 4 * (7 - i);
        r.v[i] = ((uint32_t)w[0] << 24) | ((uint32_t)w[1] << 16) | ((uint32_t)w[2] << 8) | w[3];
    }
}

P256_HD void fe_to_bytes(uint8_t* be, const p256_fe& a) {
    for (int i = 0; i < 8; i++) {
        uint8_t* w = be + 4 * (7 - i);
        w[0] = (uint8_t)(a.v[i] >> 24);
        w[1] = (uint8_t)(a.v[i] >> 16);
        w[2] = (uint8_t)(a.v[i] >> 8);
        w[3] = (uint8_t)a.v[i];
    }
}

// Zeroes memory that held secrets; volatile so the compiler cannot drop the stores as dead.
P256_HD void p256_wipe(void* p, size_t len) {
    volatile uint8_t* b = (volatile uint8_t*)p;
    for (size_t i = 0; i < len; i++) b[i] = 0;
}
