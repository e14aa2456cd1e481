// RFC 6979 §3.2 deterministic nonces for P-256 with SHA-256 (qlen = hlen = 256, so
// bits2int is the identity on 32 bytes and one HMAC output makes one candidate).
//
// Uses from sha256_stream.cuh: sha256_ctx, sha256_init, sha256_update, sha256_final.
#pragma once
#include "p256_field.cuh"
#include "sha256_stream.cuh"

struct p256_span {
    const uint8_t* data;
    size_t len;
};

// out = HMAC-SHA256(key, parts[0] || ... || parts[count-1]) for a 32-byte key. A real call on the
// GPU: inlined, each of its six uses would unroll the byte loops of its own SHA-256 updates.
P256_CALL void hmac_sha256(uint8_t out[32], const uint8_t key[32], const p256_span* parts, int count) {
    uint8_t pad[64], inner[32];
    sha256_ctx ctx;
    for (int i = 0; i < 64; i++) pad[i] = (uint8_t)((i < 32 ? key[i] : 0) ^ 0x36);
    sha256_init(&ctx);
    sha256_update(&ctx, pad, 64);
    for (int i = 0; i < count; i++) sha256_update(&ctx, parts[i].data, parts[i].len);
    sha256_final(&ctx, inner);
    for (int i = 0; i < 64; i++) pad[i] ^= 0x36 ^ 0x5c;
    sha256_init(&ctx);
    sha256_update(&ctx, pad, 64);
    sha256_update(&ctx, inner, 32);
    sha256_final(&ctx, out);
    p256_wipe(pad, sizeof pad);
    p256_wipe(inner, sizeof inner);
    p256_wipe(&ctx, sizeof ctx);
}

struct rfc6979_state {
    uint8_t k[32], v[32];
    uint32_t started;
};

// Steps b-f: seeds K and V from the private key x and the digest h1 (both 32 bytes big-endian,
// x < n). bits2octets(h1) is h1 mod n, one conditional subtraction since n > 2^255.
P256_HD void rfc6979_init(rfc6979_state& st, const uint8_t x[32], const uint8_t h1[32]) {
    const p256_mod N = p256_mod_n();
    p256_fe e, d;
    uint8_t h[32];
    fe_from_bytes(e, h1);
    uint32_t ge = ~fe_lt(e, N.m);
    fe_sub_raw(d, e, N.m);
    fe_cmov(e, d, ge);
    fe_to_bytes(h, e);
    for (int i = 0; i < 32; i++) {
        st.v[i] = 0x01;
        st.k[i] = 0x00;
    }
    for (uint8_t sep = 0; sep < 2; sep++) {
        const p256_span parts[4] = {{st.v, 32}, {&sep, 1}, {x, 32}, {h, 32}};
        hmac_sha256(st.k, st.k, parts, 4);
        const p256_span vpart = {st.v, 32};
        hmac_sha256(st.v, st.k, &vpart, 1);
    }
    st.started = 0;
    p256_wipe(h, sizeof h);
    p256_wipe(&e, sizeof e);
}

// Step h: the next candidate nonce. After a rejected candidate, K and V are refreshed first
// (h.3). The caller checks 0 < k < n (and that r, s come out nonzero) and asks again if not.
P256_HD void rfc6979_next(rfc6979_state& st, uint8_t out[32]) {
    const p256_span vpart = {st.v, 32};
    if (st.started) {
        const uint8_t zero = 0;
        const p256_span parts[2] = {{st.v, 32}, {&zero, 1}};
        hmac_sha256(st.k, st.k, parts, 2);
        hmac_sha256(st.v, st.k, &vpart, 1);
    }
    st.started = 1;
    hmac_sha256(st.v, st.k, &vpart, 1);
    for (int i = 0; i < 32; i++) out[i] = st.v[i];
}
