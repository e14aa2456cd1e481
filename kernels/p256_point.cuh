// P-256 points: Jacobian doubling and addition (a = -3), the fixed-base table for k·G, the
// constant-time k·G used by signing and the variable-time u1·G + u2·Q used by verifying.
//
// Coordinates are in Montgomery form mod p. A Jacobian point (X, Y, Z) is (X/Z^2, Y/Z^3);
// Z = 0 is the point at infinity.
#pragma once
#include "p256_field.cuh"

struct p256_jac {
    p256_fe x, y, z;
};
struct p256_aff {
    p256_fe x, y;
};

// Fixed-base table: row j (0..64) holds i·16^j·G for i = 1..8, affine. 65·8·64 = 33,280 bytes.
#define P256_TABLE_ROWS 65
#define P256_TABLE_ENTRIES (P256_TABLE_ROWS * 8)

P256_HD void fp_add(p256_fe& r, const p256_fe& a, const p256_fe& b) { fe_add(r, a, b, p256_mod_p()); }
P256_HD void fp_sub(p256_fe& r, const p256_fe& a, const p256_fe& b) { fe_sub(r, a, b, p256_mod_p()); }

P256_HD p256_aff p256_generator() {
    p256_aff g;
    const p256_mod P = p256_mod_p();
    p256_fe x = {{0xd898c296, 0xf4a13945, 0x2deb33a0, 0x77037d81, 0x63a440f2, 0xf8bce6e5, 0xe12c4247,
                  0x6b17d1f2}};
    p256_fe y = {{0x37bf51f5, 0xcbb64068, 0x6b315ece, 0x2bce3357, 0x7c0f9e16, 0x8ee7eb4a, 0xfe1a7f9b,
                  0x4fe342e2}};
    fe_to_mont(g.x, x, P);
    fe_to_mont(g.y, y, P);
    return g;
}

// y^2 for the point with this x: x^3 - 3x + b (Montgomery form).
P256_HD void p256_curve_rhs(p256_fe& r, const p256_fe& x) {
    const p256_fe b_plain = {{0x27d2604b, 0x3bce3c3e, 0xcc53b0f6, 0x651d06b0, 0x769886bc, 0xb3ebbd55,
                              0xaa3a93e7, 0x5ac635d8}};
    p256_fe b, t, x3;
    fe_to_mont(b, b_plain, p256_mod_p());
    fp_sqr(t, x);
    fp_mul(x3, t, x);
    fp_add(t, x, x);
    fp_add(t, t, x);
    fp_sub(r, x3, t);
    fp_add(r, r, b);
}

P256_HD void p256_set_infinity(p256_jac& r) {
    r.x = p256_mod_p().one;
    r.y = p256_mod_p().one;
    r.z = {{0}};
}

P256_HD void p256_from_affine(p256_jac& r, const p256_aff& a) {
    r.x = a.x;
    r.y = a.y;
    r.z = p256_mod_p().one;
}

P256_HD void p256_cmov(p256_jac& r, const p256_jac& a, uint32_t mask) {
    fe_cmov(r.x, a.x, mask);
    fe_cmov(r.y, a.y, mask);
    fe_cmov(r.z, a.z, mask);
}

// Affine coordinates of a finite point (constant-time: the inversion is a fixed exponentiation).
P256_HD void p256_to_affine(p256_aff& r, const p256_jac& p) {
    p256_fe zi, zi2;
    fe_inv(zi, p.z, p256_mod_p());
    fp_sqr(zi2, zi);
    fp_mul(r.x, p.x, zi2);
    fp_mul(zi2, zi2, zi);
    fp_mul(r.y, p.y, zi2);
}

// r = 2p, "dbl-2001-b" (a = -3): 3M + 5S. Infinity stays infinity (Z3 = 0); P-256 has no
// point of order 2, so no other case is exceptional.
P256_CALL void p256_dbl(p256_jac& r, const p256_jac& p) {
    p256_fe delta, gamma, beta, alpha, t, u;
    fp_sqr(delta, p.z);
    fp_sqr(gamma, p.y);
    fp_mul(beta, p.x, gamma);
    fp_sub(t, p.x, delta);
    fp_add(u, p.x, delta);
    fp_mul(alpha, t, u);
    fp_add(t, alpha, alpha);
    fp_add(alpha, t, alpha);  // alpha = 3(X - delta)(X + delta)
    fp_add(t, p.y, p.z);
    fp_sqr(t, t);
    fp_sub(t, t, gamma);
    fp_sub(r.z, t, delta);  // Z3 = (Y + Z)^2 - gamma - delta
    fp_add(beta, beta, beta);
    fp_add(beta, beta, beta);  // 4 beta
    fp_sqr(t, alpha);
    fp_sub(t, t, beta);
    fp_sub(r.x, t, beta);  // X3 = alpha^2 - 8 beta
    fp_sub(t, beta, r.x);
    fp_mul(t, alpha, t);
    fp_sqr(gamma, gamma);
    fp_add(gamma, gamma, gamma);
    fp_add(gamma, gamma, gamma);
    fp_add(gamma, gamma, gamma);  // 8 gamma^2
    fp_sub(r.y, t, gamma);  // Y3 = alpha(4 beta - X3) - 8 gamma^2
}

// r = p + q for Jacobian p and affine q, "madd-2007-bl": 7M + 4S. Correct when p and q are
// finite and p != q (p = -q gives Z3 = 0, infinity). h = U2 - X1 and s = 2(S2 - Y1) are
// returned so that callers can tell p == q (h = s = 0) apart; r may alias p.
P256_CALL void p256_madd_core(p256_jac& r, p256_fe& h, p256_fe& s, const p256_jac& p, const p256_aff& q) {
    p256_fe z1z1, u2, s2, hh, i, j, v, t;
    fp_sqr(z1z1, p.z);
    fp_mul(u2, q.x, z1z1);
    fp_mul(s2, q.y, p.z);
    fp_mul(s2, s2, z1z1);
    fp_sub(h, u2, p.x);
    fp_sqr(hh, h);
    fp_add(i, hh, hh);
    fp_add(i, i, i);
    fp_mul(j, h, i);
    fp_sub(s, s2, p.y);
    fp_add(s, s, s);
    fp_mul(v, p.x, i);
    fp_add(t, p.z, h);  // Z3 before X1, Y1 are overwritten (r may alias p)
    fp_sqr(t, t);
    fp_sub(t, t, z1z1);
    fp_sub(t, t, hh);
    p256_fe y1j;
    fp_mul(y1j, p.y, j);
    r.z = t;
    fp_sqr(t, s);
    fp_sub(t, t, j);
    fp_sub(t, t, v);
    fp_sub(r.x, t, v);  // X3 = s^2 - J - 2V
    fp_sub(t, v, r.x);
    fp_mul(t, s, t);
    fp_add(y1j, y1j, y1j);
    fp_sub(r.y, t, y1j);  // Y3 = s(V - X3) - 2 Y1 J
}

// r = p + q for every p and q, constant-time: q_inf is a mask saying q is infinity (affine
// coordinates cannot), and the doubling p == q is computed and selected only when the caller
// says it can happen (with_double is a public constant).
P256_HD void p256_madd_ct(p256_jac& r, const p256_jac& p, const p256_aff& q, uint32_t q_inf, bool with_double) {
    p256_jac sum, alt;
    p256_fe h, s;
    p256_madd_core(sum, h, s, p, q);
    if (with_double) {
        p256_dbl(alt, p);
        p256_cmov(sum, alt, fe_is_zero(h) & fe_is_zero(s));
    }
    p256_from_affine(alt, q);
    p256_cmov(sum, alt, fe_is_zero(p.z));
    p256_cmov(sum, p, q_inf);
    r = sum;
}

// r = p + q (affine q), variable-time: for public points only.
P256_HD void p256_madd_vt(p256_jac& r, const p256_jac& p, const p256_aff& q) {
    if (fe_is_zero(p.z)) {
        p256_from_affine(r, q);
        return;
    }
    p256_jac sum;
    p256_fe h, s;
    p256_madd_core(sum, h, s, p, q);
    if (fe_is_zero(h)) {
        if (fe_is_zero(s)) p256_dbl(r, p);
        else p256_set_infinity(r);
        return;
    }
    r = sum;
}

// r = p + q for Jacobian p and q, "add-2007-bl", variable-time: for public points only.
P256_CALL void p256_add_vt(p256_jac& r, const p256_jac& p, const p256_jac& q) {
    if (fe_is_zero(p.z)) {
        r = q;
        return;
    }
    if (fe_is_zero(q.z)) {
        r = p;
        return;
    }
    p256_fe z1z1, z2z2, u1, u2, s1, s2, h, i, j, s, v, t;
    fp_sqr(z1z1, p.z);
    fp_sqr(z2z2, q.z);
    fp_mul(u1, p.x, z2z2);
    fp_mul(u2, q.x, z1z1);
    fp_mul(s1, p.y, q.z);
    fp_mul(s1, s1, z2z2);
    fp_mul(s2, q.y, p.z);
    fp_mul(s2, s2, z1z1);
    fp_sub(h, u2, u1);
    fp_sub(s, s2, s1);
    fp_add(s, s, s);
    if (fe_is_zero(h)) {
        if (fe_is_zero(s)) p256_dbl(r, p);
        else p256_set_infinity(r);
        return;
    }
    fp_add(i, h, h);
    fp_sqr(i, i);
    fp_mul(j, h, i);
    fp_mul(v, u1, i);
    fp_add(t, p.z, q.z);
    fp_sqr(t, t);
    fp_sub(t, t, z1z1);
    fp_sub(t, t, z2z2);
    fp_mul(r.z, t, h);
    fp_sqr(t, s);
    fp_sub(t, t, j);
    fp_sub(t, t, v);
    fp_sub(r.x, t, v);
    fp_sub(t, v, r.x);
    fp_mul(t, s, t);
    fp_mul(s1, s1, j);
    fp_add(s1, s1, s1);
    fp_sub(r.y, t, s1);
}

// ---- scalars as signed base-16 digits ----

// Booth recoding of one 4-bit window: `in` holds the window's 4 bits above the previous window's
// top bit. Gives |digit| in 0..8 and its sign (1 = negative), without branches.
P256_HD void p256_booth4(uint32_t in, uint32_t& digit, uint32_t& negative) {
    uint32_t s = ~((in >> 4) - 1u);  // all ones when the window's top bit is set
    uint32_t d = 31u - in;
    d = (d & s) | (in & ~s);
    digit = (d >> 1) + (d & 1);
    negative = s & 1;
}

// The 65 digits of scalar k (plain, < 2^256), lowest first: k = sum d_j 16^j, |d_j| <= 8,
// d_64 in {0, 1}. Walks k by shifting a copy, so no limb is indexed by a variable.
struct p256_digits {
    p256_fe rest;
    uint32_t prev;
};

P256_HD void p256_digits_start(p256_digits& it, const p256_fe& k) {
    it.rest = k;
    it.prev = 0;
}

P256_HD void p256_digits_next(p256_digits& it, uint32_t& digit, uint32_t& negative) {
    uint32_t in = ((it.rest.v[0] & 0xf) << 1) | it.prev;
    it.prev = (it.rest.v[0] >> 3) & 1;
    for (int i = 0; i < 7; i++) it.rest.v[i] = (it.rest.v[i] >> 4) | (it.rest.v[i + 1] << 28);
    it.rest.v[7] >>= 4;
    p256_booth4(in, digit, negative);
}

// Row j of the fixed-base table: i·16^j·G for i = 1..8. Public data, built once per device.
P256_HD void p256_table_row(p256_aff row[8], int j) {
    p256_jac base, acc;
    p256_from_affine(base, p256_generator());
    for (int i = 0; i < 4 * j; i++) p256_dbl(base, base);
    acc = base;
    p256_to_affine(row[0], acc);
    for (int i = 1; i < 8; i++) {
        p256_add_vt(acc, acc, base);
        p256_to_affine(row[i], acc);
    }
}

// r = k·G, constant-time in k (plain scalar, 0 < k < n). Each digit's table entry is picked by
// reading all eight entries of its row and keeping one with masks, then negated with a mask.
//
// No exceptional addition can occur in rows 0..63: after row j the sum is x·G with x a nonzero
// integer (its lowest nonzero digit is not a multiple of 16), |x| < 16^j · 8/15, and it meets
// ±d·16^j·G, |d| in 1..8; since |x| + 8·16^j < n, equality mod n would be equality of integers,
// which the sizes rule out. Row 64 adds 2^256·G to (k - 2^256)·G, which can double (k ≡ 2^257
// mod n), so that one addition also computes the doubling.
P256_HD void p256_base_mult_ct(p256_jac& r, const p256_fe& k, const p256_aff* table) {
    const p256_mod P = p256_mod_p();
    p256_digits it;
    p256_digits_start(it, k);
    p256_set_infinity(r);
    for (int j = 0; j < P256_TABLE_ROWS; j++) {
        uint32_t digit, negative;
        p256_digits_next(it, digit, negative);
        p256_aff q = {{{0}}, {{0}}};
        for (int i = 0; i < 8; i++) {
            uint32_t hit = ct_eq_u32(digit, (uint32_t)(i + 1));
            fe_cmov(q.x, table[8 * j + i].x, hit);
            fe_cmov(q.y, table[8 * j + i].y, hit);
        }
        p256_fe ny;
        fe_neg(ny, q.y, P);
        fe_cmov(q.y, ny, 0u - negative);
        p256_madd_ct(r, r, q, ct_is_zero_u32(digit), j == P256_TABLE_ROWS - 1);
    }
    p256_wipe(&it, sizeof it);
}

// The width-5 NAF of k (plain, any 256-bit value), lowest digit first: k = sum d_i 2^i, each d_i
// 0 or odd in -15..15, and at least four zeros after each nonzero digit (about 43 nonzero digits
// in 257, where signed 4-bit windows have about 61 in 65). Variable-time: for public scalars.
P256_HD void p256_wnaf5(int8_t naf[257], const p256_fe& k_in) {
    p256_fe k = k_in;
    uint32_t top = 0;  // bit 256 of k, after adding a negative digit's magnitude
    for (int i = 0; i < 257; i++) {
        int d = 0;
        if (k.v[0] & 1) {
            d = (int)(k.v[0] & 31);
            if (d >= 16) {
                d -= 32;
                const p256_fe m = {{(uint32_t)-d}};
                top += fe_add_raw(k, k, m);
            } else {
                k.v[0] -= (uint32_t)d;  // its low five bits are d: no borrow
            }
        }
        naf[i] = (int8_t)d;
        for (int j = 0; j < 7; j++) k.v[j] = (k.v[j] >> 1) | (k.v[j + 1] << 31);
        k.v[7] = (k.v[7] >> 1) | (top << 31);
        top = 0;
    }
}

// r = u1·G + u2·q, variable-time (verification: everything is public). u1·G reads the table
// (no doublings); u2·q runs the width-5 NAF of u2 over the odd multiples 1, 3, ..., 15 of q.
P256_HD void p256_double_mult_vt(p256_jac& r, const p256_fe& u1, const p256_fe& u2, const p256_aff& q,
                                 const p256_aff* table) {
    const p256_mod P = p256_mod_p();
    p256_digits it;
    uint32_t digit, negative;

    p256_jac a;
    p256_set_infinity(a);
    p256_digits_start(it, u1);
    for (int j = 0; j < P256_TABLE_ROWS; j++) {
        p256_digits_next(it, digit, negative);
        if (digit == 0) continue;
        p256_aff t = table[8 * j + digit - 1];
        if (negative) fe_neg(t.y, t.y, P);
        p256_madd_vt(a, a, t);
    }

    p256_jac odd[8], twice;
    p256_from_affine(odd[0], q);
    p256_dbl(twice, odd[0]);
    for (int i = 1; i < 8; i++) p256_add_vt(odd[i], odd[i - 1], twice);

    int8_t naf[257];
    p256_wnaf5(naf, u2);
    p256_jac b;
    p256_set_infinity(b);
    for (int i = 256; i >= 0; i--) {
        if (!fe_is_zero(b.z)) p256_dbl(b, b);
        const int d = naf[i];
        if (d == 0) continue;
        p256_jac t = odd[(d < 0 ? -d : d) >> 1];
        if (d < 0) fe_neg(t.y, t.y, P);
        p256_add_vt(b, b, t);
    }
    p256_add_vt(r, a, b);
}
