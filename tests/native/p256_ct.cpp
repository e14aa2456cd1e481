// Constant-time check of signing (ctgrind style): the private key and the digest are marked
// undefined for valgrind's memcheck, which then reports any branch or memory index that depends
// on them. Values the code deliberately makes public go through P256_DECLASSIFY.
// Usage: p256_ct PRIVATE_KEY_HEX DIGEST_HEX  -> prints the signature r || s in hex.
#include <valgrind/memcheck.h>
#define P256_DECLASSIFY(ptr, len) VALGRIND_MAKE_MEM_DEFINED(ptr, len)
#include <stdio.h>

#include "p256_ecdsa.cuh"

static p256_aff table[P256_TABLE_ENTRIES];

static void parse_hex(uint8_t out[32], const char* hex) {
    for (int i = 0; i < 32; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    uint8_t priv[32], digest[32], sig[64];
    parse_hex(priv, argv[1]);
    parse_hex(digest, argv[2]);
    for (int j = 0; j < P256_TABLE_ROWS; j++) p256_table_row(table + 8 * j, j);
    VALGRIND_MAKE_MEM_UNDEFINED(priv, sizeof priv);
    VALGRIND_MAKE_MEM_UNDEFINED(digest, sizeof digest);
#ifdef P256_CT_LEAK  // the test's control: a branch on the key must be reported
    if (priv[0] & 1) sig[0] = 1;
#endif
    p256_sign(sig, priv, digest, table);
    for (int i = 0; i < 64; i++) printf("%02x", sig[i]);
    printf("\n");
    return 0;
}
