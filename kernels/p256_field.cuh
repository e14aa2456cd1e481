// P-256 arithmetic modulo p (the field) and modulo n (the group order), per thread.
//
// Builds with nvcc, NVRTC and g++: the CPU tests run this very code. Elements are 8 little-endian
// 32-bit limbs, kept in Montgomery form (a·2^256 mod m) and always fully reduced (< m), so equal
// values have equal limbs. Every function here is constant-time: no branch, loop bound or memory
// index depends on the values, only on public constants (an exponent, a loop counter).
#pragma once

#ifdef __CUDACC_RTC__
typedef signed char int8_t;
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
#define P256_UNROLL _Pragma("unroll")
#define P256_NO_UNROLL _Pragma("unroll 1")
#else
#define P256_HD inline
#define P256_UNROLL
#define P256_NO_UNROLL
#endif

// A real call on the GPU, inline on the CPU: for the point operations and the long exponent
// loops, so that each kernel holds one copy of them instead of one per use (code size, nvcc time).
#ifdef __CUDACC__
#define P256_CALL __host__ __device__ __noinline__
#else
#define P256_CALL inline
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
// minv = -m^-1 mod R. special_p: m is p, whose shape lets the reduction use additions only.
struct p256_mod {
    p256_fe m, r2, one, minv;
    bool special_p;
};

P256_HD p256_mod p256_mod_p() {
    return {{{0xffffffff, 0xffffffff, 0xffffffff, 0, 0, 0, 1, 0xffffffff}},
            {{3, 0, 0xffffffff, 0xfffffffb, 0xfffffffe, 0xffffffff, 0xfffffffd, 4}},
            {{1, 0, 0, 0xffffffff, 0xffffffff, 0xffffffff, 0xfffffffe, 0}},
            {{1, 0, 0, 1, 0, 0, 2, 0xffffffff}},
            true};
}

P256_HD p256_mod p256_mod_n() {
    return {{{0xfc632551, 0xf3b9cac2, 0xa7179e84, 0xbce6faad, 0xffffffff, 0xffffffff, 0, 0xffffffff}},
            {{0xbe79eea2, 0x83244c95, 0x49bd6fa6, 0x4699799c, 0x2b6bec59, 0x2845b239, 0xf3d95620,
              0x66e12d94}},
            {{0x039cdaaf, 0x0c46353d, 0x58e8617b, 0x43190552, 0, 0, 0xffffffff, 0}},
            {{0xee00bc4f, 0xccd1c8aa, 0x7d74d2e4, 0x48c94408, 0xc588c6f6, 0x50fe77ec, 0xa9d6281c,
              0x60d06633}},
            false};
}

// ---- carry chains ----
//
// Multi-precision sums and products are chains of PTX's extended-precision instructions. On the
// GPU each helper below is that one instruction and the carry passes from link to link in the
// hardware flag CC.CF: the helpers are `asm volatile`, so nvcc keeps them in program order, and
// every chain is straight-line code in which nothing else writes the flag (only these helpers
// do, and a chain makes no call). On the CPU the same helpers keep the flag in `cf`, so the host
// tests run every chain link for link. sub.cc/subc carry a borrow; no chain mixes adds and subs.

#ifdef __CUDA_ARCH__
#define P256_PTX2(insn) \
    uint32_t r;         \
    (void)cf;           \
    asm volatile(insn " %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); \
    return r
#define P256_PTX3(insn) \
    uint32_t r;         \
    (void)cf;           \
    asm volatile(insn " %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c)); \
    return r
#else
P256_HD uint32_t p256_carry_out(uint64_t s, uint32_t& cf) {
    cf = (uint32_t)(s >> 32) & 1;
    return (uint32_t)s;
}
#endif

P256_HD uint32_t ptx_add_cc(uint32_t a, uint32_t b, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX2("add.cc.u32");
#else
    return p256_carry_out((uint64_t)a + b, cf);
#endif
}

P256_HD uint32_t ptx_addc_cc(uint32_t a, uint32_t b, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX2("addc.cc.u32");
#else
    return p256_carry_out((uint64_t)a + b + cf, cf);
#endif
}

P256_HD uint32_t ptx_addc(uint32_t a, uint32_t b, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX2("addc.u32");
#else
    return a + b + cf;
#endif
}

P256_HD uint32_t ptx_sub_cc(uint32_t a, uint32_t b, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX2("sub.cc.u32");
#else
    return p256_carry_out((uint64_t)a - b, cf);
#endif
}

P256_HD uint32_t ptx_subc_cc(uint32_t a, uint32_t b, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX2("subc.cc.u32");
#else
    return p256_carry_out((uint64_t)a - b - cf, cf);
#endif
}

P256_HD uint32_t ptx_subc(uint32_t a, uint32_t b, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX2("subc.u32");
#else
    return a - b - cf;
#endif
}

// lo(a·b) + c, carry out
P256_HD uint32_t ptx_mad_lo_cc(uint32_t a, uint32_t b, uint32_t c, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX3("mad.lo.cc.u32");
#else
    return p256_carry_out((uint64_t)(a * b) + c, cf);
#endif
}

// lo(a·b) + c + carry, carry out
P256_HD uint32_t ptx_madc_lo_cc(uint32_t a, uint32_t b, uint32_t c, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX3("madc.lo.cc.u32");
#else
    return p256_carry_out((uint64_t)(a * b) + c + cf, cf);
#endif
}

// hi(a·b) + c + carry, carry out
P256_HD uint32_t ptx_madc_hi_cc(uint32_t a, uint32_t b, uint32_t c, uint32_t& cf) {
#ifdef __CUDA_ARCH__
    P256_PTX3("madc.hi.cc.u32");
#else
    return p256_carry_out((((uint64_t)a * b) >> 32) + c + cf, cf);
#endif
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
    uint32_t cf = 0;
    r.v[0] = ptx_sub_cc(a.v[0], b.v[0], cf);
    P256_UNROLL
    for (int i = 1; i < 8; i++) r.v[i] = ptx_subc_cc(a.v[i], b.v[i], cf);
    return 0u - ptx_subc(0, 0, cf);
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
    uint32_t cf = 0;
    r.v[0] = ptx_add_cc(a.v[0], b.v[0], cf);
    P256_UNROLL
    for (int i = 1; i < 8; i++) r.v[i] = ptx_addc_cc(a.v[i], b.v[i], cf);
    return ptx_addc(0, 0, cf);
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

// ---- multiplication ----

// acc[0..2·count) += bi·(a_j + a_(j+2)·2^64 + a_(j+4)·2^128 + ...) for count products from
// j = first: one carry chain of whole 64-bit slots (each lo/hi pair of links is one
// IMAD.WIDE.U32 with carry on the GPU). Returns the carry out.
P256_HD uint32_t p256_mac_slots(uint32_t* acc, const p256_fe& a, int first, int count, uint32_t bi) {
    uint32_t cf = 0;
    acc[0] = ptx_mad_lo_cc(a.v[first], bi, acc[0], cf);
    acc[1] = ptx_madc_hi_cc(a.v[first], bi, acc[1], cf);
    P256_UNROLL
    for (int k = 1; k < count; k++) {
        acc[2 * k] = ptx_madc_lo_cc(a.v[first + 2 * k], bi, acc[2 * k], cf);
        acc[2 * k + 1] = ptx_madc_hi_cc(a.v[first + 2 * k], bi, acc[2 * k + 1], cf);
    }
    return ptx_addc(0, 0, cf);
}

// t = ev + od·2^32 (od[k] is word k + 1), for a sum below 2^512.
P256_HD void p256_merge(uint32_t t[16], const uint32_t ev[16], const uint32_t od[16]) {
    uint32_t cf = 0;
    t[0] = ev[0];
    t[1] = ptx_add_cc(ev[1], od[0], cf);
    P256_UNROLL
    for (int k = 2; k < 15; k++) t[k] = ptx_addc_cc(ev[k], od[k - 1], cf);
    t[15] = ptx_addc(ev[15], od[14], cf);
}

// t = a·b (512 bits), in two accumulators: ev holds words 0..15, od words 1..16 (od[k] is word
// k + 1). Row i adds a·b_i: each product a_j·b_i goes, as a whole 64-bit slot at words i+j and
// i+j+1, to the accumulator in which that slot is an aligned register pair (ev when i+j is
// even), so a row is two slot chains. Before row i both accumulators are below 2^(256 + 32i), so
// the word that takes a chain's carry is still zero; in row 7 the carry out of word 15 is zero
// (a·b < 2^512). a and b are copied first: nvcc reloads referenced memory after each asm
// statement, and ptxas fuses a lo link with its hi link only when both name the same registers.
P256_HD void fe_mul_wide(uint32_t t[16], const p256_fe& a_in, const p256_fe& b_in) {
    const p256_fe a = a_in, b = b_in;
    uint32_t ev[16], od[16];
    for (int k = 0; k < 16; k++) ev[k] = od[k] = 0;
    P256_UNROLL
    for (int i = 0; i < 8; i++) {
        const int e0 = i & 1, o0 = e0 ^ 1;  // first j of each chain: i + j even, odd
        const uint32_t carry = p256_mac_slots(ev + i + e0, a, e0, 4, b.v[i]);
        if (i < 7) ev[i + e0 + 8] = carry;
        od[i + o0 + 7] = p256_mac_slots(od + i + o0 - 1, a, o0, 4, b.v[i]);
    }
    p256_merge(t, ev, od);
}

// t = a^2 (512 bits): the products a_i·a_j with i < j once each, in the accumulators of
// fe_mul_wide (row i has two chains, j = i+1, i+3, ... at odd words and j = i+2, i+4, ... at even
// ones; each ends at j = 6 or 7, so its carry word is at least i + 8, still zero by the same
// bound), then doubled, then the squares a_i^2 added at words 2i, 2i+1 in one chain.
P256_HD void fe_sqr_wide(uint32_t t[16], const p256_fe& a_in) {
    const p256_fe a = a_in;
    uint32_t ev[16], od[16], s[16], cf = 0;
    for (int k = 0; k < 16; k++) ev[k] = od[k] = 0;
    P256_UNROLL
    for (int i = 0; i < 7; i++) {
        const int odd_count = (8 - i) / 2, even_count = (7 - i) / 2;
        od[2 * i + 2 * odd_count] = p256_mac_slots(od + 2 * i, a, i + 1, odd_count, a.v[i]);
        if (even_count) {
            ev[2 * i + 2 + 2 * even_count] = p256_mac_slots(ev + 2 * i + 2, a, i + 2, even_count, a.v[i]);
        }
    }
    p256_merge(s, ev, od);
    s[0] = ptx_add_cc(s[0], s[0], cf);  // the cross products count twice; 2·sum < 2^512
    P256_UNROLL
    for (int k = 1; k < 15; k++) s[k] = ptx_addc_cc(s[k], s[k], cf);
    s[15] = ptx_addc(s[15], s[15], cf);
    t[0] = ptx_mad_lo_cc(a.v[0], a.v[0], s[0], cf);
    t[1] = ptx_madc_hi_cc(a.v[0], a.v[0], s[1], cf);
    P256_UNROLL
    for (int i = 1; i < 8; i++) {
        t[2 * i] = ptx_madc_lo_cc(a.v[i], a.v[i], s[2 * i], cf);
        t[2 * i + 1] = ptx_madc_hi_cc(a.v[i], a.v[i], s[2 * i + 1], cf);  // the last carry is zero
    }
}

// Montgomery reduction mod p: r = t·2^-256 mod p for t < 2^256·p, one word at a time. With
// q = t_i, adding q·p = q·2^256 - q·2^224 + q·2^192 + q·2^96 - q clears word i (t_i - q = 0)
// and adds q at words i+3 and i+6 and q·(2^32 - 1) = hi·2^32 + lo at words i+7, i+8: no
// multiplication. The chain's last carry belongs at word i+9, which the next step's chain ends
// on: it is folded into that step's hi, which stays below 2^32 (hi = q - 1 when q > 0).
P256_HD void fp_redc(p256_fe& r, uint32_t t[16]) {
    uint32_t carry = 0, cf = 0;
    P256_UNROLL
    for (int i = 0; i < 8; i++) {
        const uint32_t q = t[i];
        const uint32_t lo = ptx_sub_cc(0, q, cf);
        const uint32_t hi = ptx_subc(q, 0, cf) + carry;
        t[i + 3] = ptx_add_cc(t[i + 3], q, cf);
        t[i + 4] = ptx_addc_cc(t[i + 4], 0, cf);
        t[i + 5] = ptx_addc_cc(t[i + 5], 0, cf);
        t[i + 6] = ptx_addc_cc(t[i + 6], q, cf);
        t[i + 7] = ptx_addc_cc(t[i + 7], lo, cf);
        t[i + 8] = ptx_addc_cc(t[i + 8], hi, cf);
        carry = ptx_addc(0, 0, cf);
    }
    p256_fe top;
    for (int i = 0; i < 8; i++) top.v[i] = t[i + 8];
    fe_reduce_once(r, top, carry, p256_mod_p());  // (t + Q·p) / 2^256 < 2p
}

// Montgomery reduction for any odd m (here n): r = (t + q·m) / 2^256 with q = t·minv mod 2^256,
// which makes the low half of the sum zero. Needs t < 2^256·m, so that the result is < 2m.
P256_HD void fe_redc_generic(p256_fe& r, const uint32_t t[16], const p256_mod& M) {
    p256_fe low, q, top;
    uint32_t w[16], s[16], cf = 0;
    for (int i = 0; i < 8; i++) low.v[i] = t[i];
    fe_mul_wide(w, low, M.minv);
    for (int i = 0; i < 8; i++) q.v[i] = w[i];
    fe_mul_wide(w, q, M.m);
    s[0] = ptx_add_cc(t[0], w[0], cf);
    P256_UNROLL
    for (int i = 1; i < 16; i++) s[i] = ptx_addc_cc(t[i], w[i], cf);
    const uint32_t carry = ptx_addc(0, 0, cf);
    for (int i = 0; i < 8; i++) top.v[i] = s[i + 8];
    fe_reduce_once(r, top, carry, M);
}

// r = a·b·2^-256 mod p, inline: the point formulas' multiplication. Needs b < p; a may be any
// 256-bit value.
P256_HD void fp_mul(p256_fe& r, const p256_fe& a, const p256_fe& b) {
    uint32_t t[16];
    fe_mul_wide(t, a, b);
    fp_redc(r, t);
}

// r = a^2·2^-256 mod p for a < p: about 40% fewer products than fp_mul(r, a, a).
P256_HD void fp_sqr(p256_fe& r, const p256_fe& a) {
    uint32_t t[16];
    fe_sqr_wide(t, a);
    fp_redc(r, t);
}

// r = a·b·2^-256 mod m, for either modulus; a call on the GPU (everything but the point formulas
// uses it). Needs b < m; a may be any 256-bit value, so that to_mont reduces its input.
P256_CALL void fe_mul(p256_fe& r, const p256_fe& a, const p256_fe& b, const p256_mod& M) {
    if (M.special_p) {
        fp_mul(r, a, b);
        return;
    }
    uint32_t t[16];
    fe_mul_wide(t, a, b);
    fe_redc_generic(r, t, M);
}

P256_HD void fe_sqr(p256_fe& r, const p256_fe& a, const p256_mod& M) { fe_mul(r, a, a, M); }

// Plain integer (any 256-bit value) -> Montgomery form, reduced mod m.
P256_HD void fe_to_mont(p256_fe& r, const p256_fe& a, const p256_mod& M) { fe_mul(r, a, M.r2, M); }

P256_HD void fe_from_mont(p256_fe& r, const p256_fe& a, const p256_mod& M) {
    p256_fe one = {{1}};
    fe_mul(r, a, one, M);
}

// ---- exponentiation (public exponents only) ----

P256_HD uint32_t fe_bit(const p256_fe& e, int i) { return (e.v[i >> 5] >> (i & 31)) & 1; }

// r = a^e (Montgomery form in and out) for a public exponent e: left to right, in windows of up
// to 4 bits that end in a 1, over a^1, a^3, ..., a^15. Only e decides the branches and the
// table index; nothing depends on a.
P256_HD void fe_pow(p256_fe& r, const p256_fe& a, const p256_fe& e, const p256_mod& M) {
    p256_fe odd[8], a2, acc = M.one;
    odd[0] = a;
    fe_sqr(a2, a, M);
    P256_NO_UNROLL
    for (int i = 1; i < 8; i++) fe_mul(odd[i], odd[i - 1], a2, M);
    int bit = 255;
    P256_NO_UNROLL
    while (bit >= 0) {
        if (!fe_bit(e, bit)) {
            fe_sqr(acc, acc, M);
            bit--;
            continue;
        }
        int low = bit >= 3 ? bit - 3 : 0;
        while (!fe_bit(e, low)) low++;
        uint32_t w = 0;
        P256_NO_UNROLL
        for (; bit >= low; bit--) {
            fe_sqr(acc, acc, M);
            w = (w << 1) | fe_bit(e, bit);
        }
        fe_mul(acc, acc, odd[w >> 1], M);
    }
    r = acc;
}


// r = a^(2^count)·b mod p: one step of an addition chain.
P256_CALL void fp_sqr_n_mul(p256_fe& r, const p256_fe& a, int count, const p256_fe& b) {
    p256_fe t = a;
    P256_NO_UNROLL
    for (int i = 0; i < count; i++) fp_sqr(t, t);
    fp_mul(r, t, b);
}

// r = a^-1 mod p = a^(p-2) by an addition chain (255 squarings, 12 multiplications) where
// x_k = a^(2^k - 1); p - 2 = ffffffff 00000001 00000000 00000000 00000000 ffffffff ffffffff
// fffffffd in hex.
P256_HD void fp_inv(p256_fe& r, const p256_fe& a) {
    p256_fe x2, x3, x6, x12, x15, x30, x32, t;
    fp_sqr_n_mul(x2, a, 1, a);
    fp_sqr_n_mul(x3, x2, 1, a);
    fp_sqr_n_mul(x6, x3, 3, x3);
    fp_sqr_n_mul(x12, x6, 6, x6);
    fp_sqr_n_mul(x15, x12, 3, x3);
    fp_sqr_n_mul(x30, x15, 15, x15);
    fp_sqr_n_mul(x32, x30, 2, x2);
    fp_sqr_n_mul(t, x32, 32, a);    // ffffffff 00000001
    fp_sqr_n_mul(t, t, 128, x32);   // then three zero words and ffffffff
    fp_sqr_n_mul(t, t, 32, x32);    // ffffffff
    fp_sqr_n_mul(t, t, 30, x30);    // fffffffd: 30 ones,
    fp_sqr_n_mul(r, t, 2, a);       // then 0 and 1
}

// r = a^-1 (Fermat: a^(m-2)); the inverse of 0 comes out as 0.
P256_HD void fe_inv(p256_fe& r, const p256_fe& a, const p256_mod& M) {
    if (M.special_p) {
        fp_inv(r, a);
        return;
    }
    p256_fe e = M.m;
    e.v[0] -= 2;  // n ends in ...51: no borrow
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
