// ECDSA P-256 / SHA-256 on one item: sign with an RFC 6979 nonce, verify with full validation.
// Per thread; ecdsa.cu runs it over a batch and the CPU tests call it through g++.
//
// Formats (all big-endian): private key 32 bytes; digest 32 bytes (SHA-256 of the message);
// signature r || s, 64 bytes; public key 65 bytes = SEC1 prefix byte then x then y
// (0x04: uncompressed; 0x02 / 0x03: compressed, y ignored; anything else is rejected).
#pragma once
#include "p256_point.cuh"
#include "rfc6979.cuh"

// sig = (r, s) for private key d, digest e and nonce k (plain limbs; 0 < d < n). Constant-time.
// Returns a mask: all ones when 0 < k < n and r, s != 0 (else sig is to be thrown away).
P256_HD uint32_t p256_sign_with_k(uint8_t sig[64], const p256_fe& d, const p256_fe& e, const p256_fe& k,
                                  const p256_aff* table) {
    const p256_mod P = p256_mod_p(), N = p256_mod_n();
    p256_jac kg;
    p256_aff a;
    p256_fe x, r, s, t, km, kinv, dm;
    p256_base_mult_ct(kg, k, table);
    p256_to_affine(a, kg);
    fe_from_mont(x, a.x, P);
    fe_to_mont(r, x, N);  // r = x mod n, in Montgomery form
    fe_to_mont(km, k, N);
    fe_inv(kinv, km, N);
    fe_to_mont(dm, d, N);
    fe_to_mont(t, e, N);
    fe_mul(s, r, dm, N);
    fe_add(s, s, t, N);
    fe_mul(s, s, kinv, N);  // s = k^-1 (e + r d)
    uint32_t ok = ~fe_is_zero(k) & fe_lt(k, N.m) & ~fe_is_zero(r) & ~fe_is_zero(s);
    fe_from_mont(r, r, N);
    fe_from_mont(s, s, N);
    fe_to_bytes(sig, r);
    fe_to_bytes(sig + 32, s);
    p256_wipe(&kg, sizeof kg);
    p256_wipe(&a, sizeof a);
    p256_wipe(&km, sizeof km);
    p256_wipe(&kinv, sizeof kinv);
    p256_wipe(&dm, sizeof dm);
    p256_wipe(&t, sizeof t);
    return ok;
}

// Deterministic ECDSA (RFC 6979) of a 32-byte digest with private key `priv` (0 < d < n, which
// the caller checks). Constant-time, except that a rejected nonce (probability about 2^-32) is
// made public and retried: it tells nothing about the nonce finally used, or about the key.
P256_HD void p256_sign(uint8_t sig[64], const uint8_t priv[32], const uint8_t digest[32],
                       const p256_aff* table) {
    rfc6979_state st;
    uint8_t kb[32];
    p256_fe d, e, k;
    rfc6979_init(st, priv, digest);
    fe_from_bytes(d, priv);
    fe_from_bytes(e, digest);
    for (;;) {
        rfc6979_next(st, kb);
        fe_from_bytes(k, kb);
        uint32_t ok = p256_sign_with_k(sig, d, e, k, table);
        P256_DECLASSIFY(&ok, sizeof ok);
        if (ok) break;
    }
    P256_DECLASSIFY(sig, 64);
    p256_wipe(&st, sizeof st);
    p256_wipe(kb, sizeof kb);
    p256_wipe(&d, sizeof d);
    p256_wipe(&k, sizeof k);
}

// Parses and validates a public key (see the formats above): coordinates < p, on the curve.
// Returns false for anything else. Variable-time (public data).
P256_HD bool p256_decode_pubkey(p256_aff& q, const uint8_t key[65]) {
    const p256_mod P = p256_mod_p();
    uint8_t prefix = key[0];
    if (prefix != 0x02 && prefix != 0x03 && prefix != 0x04) return false;
    p256_fe x, y, rhs, y2;
    fe_from_bytes(x, key + 1);
    if (!fe_lt(x, P.m)) return false;
    fe_to_mont(q.x, x, P);
    p256_curve_rhs(rhs, q.x);
    if (prefix == 0x04) {
        fe_from_bytes(y, key + 33);
        if (!fe_lt(y, P.m)) return false;
        fe_to_mont(q.y, y, P);
    } else {
        // p = 3 mod 4: a square root of rhs, if any, is rhs^((p+1)/4).
        const p256_fe e = {{0, 0, 0x40000000, 0, 0, 0x40000000, 0xc0000000, 0x3fffffff}};
        fe_pow(q.y, rhs, e, P);
        fe_from_mont(y, q.y, P);
        if ((y.v[0] & 1) != (uint32_t)(prefix & 1)) fe_neg(q.y, q.y, P);
    }
    fp_sqr(y2, q.y);
    return fe_eq(y2, rhs) != 0;
}

// Standard ECDSA verification with every check: valid public key, 0 < r, s < n, and
// x(u1·G + u2·Q) = r mod n for u1 = e/s, u2 = r/s, the sum not at infinity.
P256_HD bool p256_verify(const uint8_t pub[65], const uint8_t digest[32], const uint8_t sig[64],
                         const p256_aff* table) {
    const p256_mod P = p256_mod_p(), N = p256_mod_n();
    p256_aff q;
    if (!p256_decode_pubkey(q, pub)) return false;
    p256_fe r, s, e, rm, sm, w, u1, u2;
    fe_from_bytes(r, sig);
    fe_from_bytes(s, sig + 32);
    if (fe_is_zero(r) || fe_is_zero(s) || !fe_lt(r, N.m) || !fe_lt(s, N.m)) return false;
    fe_from_bytes(e, digest);
    fe_to_mont(rm, r, N);
    fe_to_mont(sm, s, N);
    fe_to_mont(e, e, N);
    fe_inv(w, sm, N);
    fe_mul(u1, e, w, N);
    fe_mul(u2, rm, w, N);
    fe_from_mont(u1, u1, N);
    fe_from_mont(u2, u2, N);
    p256_jac sum;
    p256_double_mult_vt(sum, u1, u2, q, table);
    if (fe_is_zero(sum.z)) return false;
    // x(sum) mod n == r  <=>  X == r'·Z^2 (mod p) for r' = r or r + n (when r + n < p): no inversion.
    p256_fe z2, cand, lhs;
    fp_sqr(z2, sum.z);
    fe_to_mont(cand, r, P);
    fp_mul(lhs, cand, z2);
    if (fe_eq(lhs, sum.x)) return true;
    p256_fe rn;
    if (fe_add_raw(rn, r, N.m) || !fe_lt(rn, P.m)) return false;
    fe_to_mont(cand, rn, P);
    fp_mul(lhs, cand, z2);
    return fe_eq(lhs, sum.x) != 0;
}
