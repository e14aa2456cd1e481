// The kernels' per-thread code built for the CPU with g++, exported for the tests (ctypes).
// Values cross as big-endian byte strings; points as x || y (plain, not Montgomery).
#include "p256_ecdsa.cuh"

namespace {

p256_mod modulus(int which) { return which ? p256_mod_n() : p256_mod_p(); }

void point_out(uint8_t out[64], const p256_jac& pt) {
    p256_aff a;
    p256_fe x, y;
    p256_to_affine(a, pt);
    fe_from_mont(x, a.x, p256_mod_p());
    fe_from_mont(y, a.y, p256_mod_p());
    fe_to_bytes(out, x);
    fe_to_bytes(out + 32, y);
}

}  // namespace

extern "C" {

// op on plain values a, b mod p (which = 0) or n (which = 1): 0 add, 1 sub, 2 mul, 3 inv,
// 4 neg, 5 Montgomery form of a, 6 square (fp_sqr for p). a and b are taken mod m first (as
// to_mont does).
void p256h_field(int op, int which, const uint8_t a_be[32], const uint8_t b_be[32], uint8_t out[32]) {
    const p256_mod M = modulus(which);
    p256_fe a, b, r;
    fe_from_bytes(a, a_be);
    fe_from_bytes(b, b_be);
    fe_to_mont(a, a, M);
    fe_to_mont(b, b, M);
    switch (op) {
        case 0: fe_add(r, a, b, M); break;
        case 1: fe_sub(r, a, b, M); break;
        case 2: fe_mul(r, a, b, M); break;
        case 3: fe_inv(r, a, M); break;
        case 4: fe_neg(r, a, M); break;
        case 6:
            if (which) fe_sqr(r, a, M);
            else fp_sqr(r, a);
            break;
        default: fe_to_bytes(out, a); return;
    }
    fe_from_mont(r, r, M);
    fe_to_bytes(out, r);
}

// The building blocks below Montgomery form, on raw little-endian limbs (8 per 256-bit value):
// what the carry chains compute, for any inputs the functions allow.
// 0: r = a + b (9 limbs), 1: r = a - b (8 limbs, then the borrow), 2: r = a·b, 3: r = a^2 (16 limbs).
void p256h_raw(int op, const uint32_t a[8], const uint32_t b[8], uint32_t* r) {
    p256_fe x, y, z;
    for (int i = 0; i < 8; i++) {
        x.v[i] = a[i];
        y.v[i] = b[i];
    }
    if (op >= 2) {
        if (op == 2) fe_mul_wide(r, x, y);
        else fe_sqr_wide(r, x);
        return;
    }
    r[8] = op == 0 ? fe_add_raw(z, x, y) : fe_sub_raw(z, x, y);
    for (int i = 0; i < 8; i++) r[i] = z.v[i];
}

// r = t·2^-256 mod m for a 512-bit t < 2^256·m: the reduction fe_mul applies to a·b.
void p256h_redc(int which, const uint32_t t_in[16], uint32_t r[8]) {
    uint32_t t[16];
    p256_fe out;
    for (int i = 0; i < 16; i++) t[i] = t_in[i];
    if (which) fe_redc_generic(out, t, p256_mod_n());
    else fp_redc(out, t);
    for (int i = 0; i < 8; i++) r[i] = out.v[i];
}

// r = a·b·2^-256 mod m straight from the limbs (a any 256-bit value, b < m), and r = a^e mod m
// in Montgomery form for a public exponent e.
void p256h_mont(int op, int which, const uint32_t a[8], const uint32_t b[8], uint32_t r[8]) {
    p256_fe x, y, z;
    for (int i = 0; i < 8; i++) {
        x.v[i] = a[i];
        y.v[i] = b[i];
    }
    if (op == 0) fe_mul(z, x, y, modulus(which));
    else fe_pow(z, x, y, modulus(which));
    for (int i = 0; i < 8; i++) r[i] = z.v[i];
}

void p256h_build_table(p256_aff* table) {
    for (int j = 0; j < P256_TABLE_ROWS; j++) p256_table_row(table + 8 * j, j);
}

// k·G by the signing (constant-time) path; returns 0 for the point at infinity.
int p256h_base_mult(const uint8_t k_be[32], const p256_aff* table, uint8_t out[64]) {
    p256_fe k;
    p256_jac r;
    fe_from_bytes(k, k_be);
    p256_base_mult_ct(r, k, table);
    if (fe_is_zero(r.z)) return 0;
    point_out(out, r);
    return 1;
}

// u1·G + u2·Q by the verifying path; returns 0 for infinity, -1 for an invalid Q.
int p256h_double_mult(const uint8_t u1_be[32], const uint8_t u2_be[32], const uint8_t pub[65],
                      const p256_aff* table, uint8_t out[64]) {
    p256_fe u1, u2;
    p256_aff q;
    p256_jac r;
    if (!p256_decode_pubkey(q, pub)) return -1;
    fe_from_bytes(u1, u1_be);
    fe_from_bytes(u2, u2_be);
    p256_double_mult_vt(r, u1, u2, q, table);
    if (fe_is_zero(r.z)) return 0;
    point_out(out, r);
    return 1;
}

int p256h_decode_pubkey(const uint8_t pub[65], uint8_t out[64]) {
    p256_aff q;
    if (!p256_decode_pubkey(q, pub)) return 0;
    p256_jac j;
    p256_from_affine(j, q);
    point_out(out, j);
    return 1;
}

int p256h_sign_with_k(const uint8_t d_be[32], const uint8_t e_be[32], const uint8_t k_be[32],
                      const p256_aff* table, uint8_t sig[64]) {
    p256_fe d, e, k;
    fe_from_bytes(d, d_be);
    fe_from_bytes(e, e_be);
    fe_from_bytes(k, k_be);
    return p256_sign_with_k(sig, d, e, k, table) != 0;
}

void p256h_sign(const uint8_t d_be[32], const uint8_t digest[32], const p256_aff* table, uint8_t sig[64]) {
    p256_sign(sig, d_be, digest, table);
}

int p256h_verify(const uint8_t pub[65], const uint8_t digest[32], const uint8_t sig[64], const p256_aff* table) {
    return p256_verify(pub, digest, sig, table);
}

// The first `count` RFC 6979 candidates, 32 bytes each.
void p256h_rfc6979(const uint8_t d_be[32], const uint8_t digest[32], int count, uint8_t* out) {
    rfc6979_state st;
    rfc6979_init(st, d_be, digest);
    for (int i = 0; i < count; i++) rfc6979_next(st, out + 32 * i);
}

void p256h_hmac(const uint8_t key[32], const uint8_t* msg, size_t len, uint8_t out[32]) {
    const p256_span part = {msg, len};
    hmac_sha256(out, key, &part, 1);
}

}  // extern "C"
