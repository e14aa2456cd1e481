/*
 * One level of a dm-verity (format 1) hash tree: digest i = SHA-256(salt || block i), one thread
 * per block. The host hands whole blocks (the last one zero-padded, as dm-verity pads it) and the
 * salt (at most 256 bytes, veritysetup's limit) in device memory; sentry/hashing/verity.py drives it
 * level by level. Plain streaming SHA-256 (sha256_stream.cuh): a salt of any length shifts the
 * block's bytes against SHA-256's 64-byte blocks, so the funnel-shift loads of the Merkle leaf
 * kernel (one prefix byte) do not apply.
 */
#include "sha256_stream.cuh"

extern "C" __global__ void __launch_bounds__(128)
verity_level(const uint8_t *data, uint64_t n_blocks, uint32_t block_size, const uint8_t *salt,
             uint32_t salt_len, uint8_t *out)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_blocks)
        return;
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, salt, salt_len);
    sha256_update(&c, data + i * block_size, block_size);
    sha256_final(&c, out + 32 * i);
}
