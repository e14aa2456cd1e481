// Batched ECDSA P-256 / SHA-256: one thread per signature. Formats are those of p256_ecdsa.cuh.
//
// key_index maps item i to its key (keys[key_index[i]]): one key for a whole batch, or one per
// item, or anything between; NULL means item i uses key i. Each block first copies the
// fixed-base table (built once per device by p256_build_table) into shared memory, where
// signing reads every entry of a row and so all threads of a warp read the same words.
#include "p256_ecdsa.cuh"

extern "C" __global__ void p256_build_table(p256_aff* table) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < P256_TABLE_ROWS) p256_table_row(table + 8 * j, j);
}

__device__ __forceinline__ void load_table(p256_aff* shared, const p256_aff* table) {
    const uint32_t* src = (const uint32_t*)table;
    uint32_t* dst = (uint32_t*)shared;
    for (int i = threadIdx.x; i < P256_TABLE_ENTRIES * 16; i += blockDim.x) dst[i] = src[i];
    __syncthreads();
}

extern "C" __global__ void p256_sign_batch(const uint8_t* keys, const uint32_t* key_index,
                                           const uint8_t* digests, const p256_aff* table, uint8_t* sigs,
                                           uint32_t n) {
    __shared__ p256_aff shared[P256_TABLE_ENTRIES];
    load_table(shared, table);
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint64_t key = key_index ? key_index[i] : i;
    uint8_t priv[32];
    for (int b = 0; b < 32; b++) priv[b] = keys[32 * key + b];
    p256_sign(sigs + 64 * (uint64_t)i, priv, digests + 32 * (uint64_t)i, shared);
    p256_wipe(priv, sizeof priv);
}

extern "C" __global__ void p256_verify_batch(const uint8_t* pubkeys, const uint32_t* key_index,
                                             const uint8_t* digests, const uint8_t* sigs,
                                             const p256_aff* table, uint8_t* ok, uint32_t n) {
    __shared__ p256_aff shared[P256_TABLE_ENTRIES];
    load_table(shared, table);
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint64_t key = key_index ? key_index[i] : i;
    ok[i] = p256_verify(pubkeys + 65 * key, digests + 32 * (uint64_t)i, sigs + 64 * (uint64_t)i, shared);
}
