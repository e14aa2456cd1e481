/*
 * Leaf hashing, warp-cooperative: the body of merkle.cu's merkle_leaves (CUDA and the tests' CPU
 * launch emulator only: it needs a warp, unlike merkle.cuh's per-thread code).
 *
 * A warp owns 32 consecutive leaves of the window, lane i hashing leaf i. Message block m of a leaf
 * (RFC 9162 prefix byte, data, 0x80, length) needs data block m (data bytes [64m, 64m+64)), so per
 * block the warp stages data block m+1 of all 32 leaves in shared memory while each lane compresses
 * block m (double buffering; cp.async on sm_80+, so the copies bypass the registers and L1).
 *
 * Reads: a data block is fetched as the aligned 16-byte words that cover its bytes (4 words, or 5
 * when the leaf does not start 16-byte aligned, as a bf16 view at an odd element offset), and
 * realigned in registers (select, then prmt, which also swaps to big-endian). Only words holding a
 * byte of the leaf are read, so no read leaves [item start, item end) rounded out to 16 bytes: an
 * aligned 16-byte word lies inside one page and one allocation granule (cudaMalloc and CuPy's pool
 * align allocations to at least 256 bytes), so those bytes exist wherever the item's bytes do; the
 * bytes outside the leaf are masked to zero and never reach a hash.
 *
 * Shared memory (sentry_staging): per warp and stage, 32 leaves x 5 words, leaf j's at [5j, 5j+5),
 * and each leaf's block descriptor. A 16-byte shared access is served a quarter-warp at a time,
 * and lanes 8 apart in the odd 80-byte stride land on 8 distinct groups of 4 banks: the lane reads
 * are conflict free without an XOR swizzle, and the copies (consecutive words of 8 leaves per
 * instruction) are contiguous. Two __syncwarp per block order it all (and cost the CPU emulator
 * two fiber rendezvous per block, where a shuffle per leaf address would cost eight more).
 */
#pragma once
#include "merkle.cuh"

#define LEAF_WARPS 8   /* warps per block of merkle_leaves: 256 threads */
#define LEAF_STAGES 2  /* data blocks in flight per leaf: double buffering (the code indexes stages mod 2) */
#define SLAB_WORDS 5   /* 16-byte words that cover 64 bytes at any alignment */
#define SLAB (32 * SLAB_WORDS)
#define FUSED_LEVELS 8 /* tree levels the leaf kernel makes in its blocks of 256 slots */

/* --- the async copy: cp.async on sm_80+, a plain copy before, the pipeline primitives off the GPU
 * (the CPU emulator defers those copies to the wait, so a missing wait shows there). --- */
/* slab[word] = *src, asynchronously. */
SENTRY_HD void sentry_copy16_async(uint4 *slab, uint32_t word, const uint4 *src)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(slab) + 16 * word; /* one conversion per slab */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
#elif defined(__CUDA_ARCH__)
    slab[word] = __ldg(src);
#else
    __pipeline_memcpy_async(slab + word, src, 16);
#endif
}

SENTRY_HD void sentry_copy_commit()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif !defined(__CUDA_ARCH__)
    __pipeline_commit();
#endif
}

/* Waits until at most the newest LEAF_STAGES - 1 groups of this thread's copies are in flight. */
SENTRY_HD void sentry_copy_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(LEAF_STAGES - 1) : "memory");
#elif !defined(__CUDA_ARCH__)
    __pipeline_wait_prior(LEAF_STAGES - 1);
#endif
}

/* A lane's leaf, for the stager: `next` is the aligned address of the 16-byte word that holds the
 * leaf's next data block's first byte, `left` its bytes not staged yet, s its address mod 16.
 * Returns that block's descriptor (the address, and in its free low 4 bits how many words hold
 * the block's bytes), and moves on to the block after. */
SENTRY_HD uint64_t sentry_next_block(uint64_t &next, uint32_t &left, uint32_t s)
{
    uint32_t n = left < 64 ? left : 64u;
    uint64_t desc = next | (n ? (s + n + 15) >> 4 : 0u);
    next += 64;
    left -= n;
    return desc;
}

/* The warp copies a data block of each of its 32 leaves into slab, from their descriptors: rounds
 * 0-3 copy words 0-3 of 8 leaves each (4 lanes per leaf, 64 contiguous bytes), round 4 the fifth
 * word of each lane's own leaf. Only words that hold a byte of the block are copied. */
SENTRY_HD void sentry_stage(uint4 *slab, const uint64_t *desc, uint32_t lane)
{
    SENTRY_UNROLL
    for (uint32_t r = 0; r < 4; r++) {
        uint32_t leaf = 8 * r + (lane >> 2), word = lane & 3;
        uint64_t d = desc[leaf];
        if (word < ((uint32_t)d & 15))
            sentry_copy16_async(slab, SLAB_WORDS * leaf + word, (const uint4 *)(d & ~(uint64_t)15) + word);
    }
    uint64_t mine = desc[lane];
    if (((uint32_t)mine & 15) == SLAB_WORDS)
        sentry_copy16_async(slab, SLAB_WORDS * lane + 4, (const uint4 *)(mine & ~(uint64_t)15) + 4);
    sentry_copy_commit();
}

/* The 16 big-endian data words of a staged block whose first byte is at offset s (0..15) of its
 * first word. Aligned (s = 0, every tensor CuPy or torch allocates): a byte swap per word. Else
 * words (s >> 2) .. (s >> 2) + 16 are selected in two steps, then each byte-aligned pair funnelled
 * by prmt, whose selector also swaps the bytes. s is the same for all of a leaf's blocks. */
SENTRY_HD void sentry_realign(const uint4 *q, uint32_t s, uint32_t d[16])
{
    uint32_t x[20];
    SENTRY_UNROLL
    for (int i = 0; i < SLAB_WORDS; i++) {
        uint4 v = q[i];
        x[4 * i] = v.x; x[4 * i + 1] = v.y; x[4 * i + 2] = v.z; x[4 * i + 3] = v.w;
    }
    if (s) {
        bool two = s & 8, one = s & 4;
        SENTRY_UNROLL
        for (int i = 0; i < 18; i++) x[i] = two ? x[i + 2] : x[i];
        SENTRY_UNROLL
        for (int i = 0; i < 17; i++) x[i] = one ? x[i + 1] : x[i];
    }
    uint32_t sel = 0x0123u + (s & 3) * 0x1111u;
    SENTRY_UNROLL
    for (int i = 0; i < 16; i++) d[i] = __byte_perm(x[i], x[i + 1], sel);
}

/* A message block of a leaf of len bytes: d holds its data block, of which rem bytes on belong to
 * the leaf (rem = len - 64m for block m: 64 or more, fewer in the last data block, down to -9 in
 * a block of padding only), carry the message byte before it (the 0x00 prefix, then the previous
 * block's last data byte). RFC 9162 hashes the prefix first, so message byte q is data byte q-1. */
SENTRY_HD void sentry_message(uint32_t d[16], int rem, uint32_t carry, uint32_t len, uint32_t w[16])
{
    if (rem < 64) { /* zero what is not the leaf's */
        SENTRY_UNROLL
        for (int i = 0; i < 16; i++) {
            int keep = rem - 4 * i;
            d[i] = keep >= 4 ? d[i] : (keep <= 0 ? 0u : d[i] & (0xffffffffu << (32 - 8 * keep)));
        }
    }
    w[0] = (carry << 24) | (d[0] >> 8);
    SENTRY_UNROLL
    for (int i = 1; i < 16; i++) w[i] = (d[i - 1] << 24) | (d[i] >> 8);
    if (rem < 64) { /* 0x80 at message byte rem + 1 (if in this block), the bit length in the last */
        SENTRY_UNROLL
        for (int i = 0; i < 16; i++) {
            uint32_t at = (uint32_t)(rem + 1 - 4 * i); /* its byte in word i, if below 4 */
            w[i] |= at < 4 ? 0x80u << (24 - 8 * at) : 0u;
        }
        if (rem + 1 + 1 + 8 <= 64) {
            uint64_t bits = ((uint64_t)len + 1) * 8;
            w[14] = (uint32_t)(bits >> 32);
            w[15] = (uint32_t)bits;
        }
    }
}

/* Warp-wide maximum. */
SENTRY_HD uint32_t sentry_warp_max(uint32_t v)
{
    SENTRY_UNROLL
    for (int k = 16; k; k >>= 1) {
        uint32_t o = __shfl_xor_sync(0xffffffffu, v, k);
        v = o > v ? o : v;
    }
    return v;
}

/* A warp's shared memory: the staged data blocks, and the descriptors the lanes publish for the
 * stages to come (through shared memory: one __syncwarp per block, which the staging needs anyway,
 * instead of a shuffle per leaf address). */
struct sentry_staging {
    uint4 slab[LEAF_STAGES][SLAB];
    uint64_t desc[LEAF_STAGES][32];
};

/* The leaves in the warp's slots first .. first + 31 (those below nslots) into nodes, and grains
 * where the segment's grain roots are its leaves. */
SENTRY_HD void sentry_warp_leaves(const int64_t *__restrict__ seg, uint32_t nseg, uint32_t leaf_size,
                                  uint64_t nslots, uint64_t first, sentry_staging *sh, uint32_t *__restrict__ nodes,
                                  uint32_t *__restrict__ grains)
{
    uint32_t lane = threadIdx.x & 31;
    uint64_t t = first + lane, src = 0;
    uint32_t len = 0;
    const int64_t *row = sentry_leaf_row(seg, nseg, t);
    uint64_t k = t - (uint64_t)row[SEG_LEAF];
    if (t < nslots && k < (uint64_t)row[SEG_LEAVES]) { /* else a gap between segments, or past the end */
        uint64_t off = k * leaf_size, size = (uint64_t)row[SEG_SIZE];
        len = (uint32_t)(size - off < leaf_size ? size - off : leaf_size);
        src = (uint64_t)row[SEG_PTR] + off;
    }
    /* message blocks: the prefix, the bytes, 0x80 and the 8-byte length, in 64-byte blocks */
    uint32_t most = sentry_warp_max(len ? (len + 9) / 64 + 1 : 0), carry = 0x00u;
    uint32_t st[8], w[16], d[16], s = (uint32_t)src & 15, left = len;
    uint64_t next = src & ~(uint64_t)15;
    sha256_init(st);
    sh->desc[0][lane] = sentry_next_block(next, left, s);
    sh->desc[1][lane] = sentry_next_block(next, left, s);
    __syncwarp();
    sentry_stage(sh->slab[0], sh->desc[0], lane);
    __syncwarp(); /* desc[0] is read before block 2's descriptors replace it */
    for (uint32_t m = 0; m < most; m++) {
        sentry_stage(sh->slab[(m + 1) % 2], sh->desc[(m + 1) % 2], lane);
        sh->desc[m % 2][lane] = sentry_next_block(next, left, s); /* block m + 2's, read after the next __syncwarp */
        sentry_copy_wait(); /* this lane's copies of block m are done, */
        __syncwarp();       /* and every lane's are visible, and so are the descriptors */
        int rem = (int)len - 64 * (int)m;
        if (len && rem >= -9) { /* block m is one of this leaf's */
            sentry_realign(sh->slab[m % 2] + SLAB_WORDS * lane, s, d);
            sentry_message(d, rem, carry, len, w);
            carry = d[15] & 0xffu;
            sha256_compress(st, w);
        }
        __syncwarp(); /* block m's slab is read before the next round refills it */
    }
    if (len) { /* the row is looked up again: fewer registers live through the loop */
        row = sentry_leaf_row(seg, nseg, t);
        sha256_store(st, nodes + 8 * t);
        if (row[SEG_GRAIN] == 0) sha256_store(st, grains + 8 * ((uint64_t)row[SEG_OUT] + t - (uint64_t)row[SEG_LEAF]));
    }
}

/*
 * Levels 1 .. FUSED_LEVELS of the block's 256 slots from base (a multiple of 256), once their
 * leaves are in nodes: step l has thread i pair the level-(l-1) nodes at slots base + i*2^l and
 * base + i*2^l + 2^(l-1), as merkle_level would. sentry/hashing/gpu_plan.py lays the segments out
 * so that this is their tree: a segment of n leaves starts at a multiple of min(2^ceil(log2 n),
 * 256), so its level-l nodes (l <= 8) start on multiples of 2^l, and none of its subtrees of
 * 256 or fewer leaves crosses a block; a slot that starts no level-l node of its segment is a gap
 * after its leaves, or (when 2^l exceeds its alignment) lies outside it. Threads of a block see
 * each other's global writes after __syncthreads; the level launches continue from FUSED_LEVELS.
 */
SENTRY_HD void sentry_block_levels(const int64_t *__restrict__ seg, uint32_t nseg, uint64_t nslots, uint64_t base,
                                   uint32_t *__restrict__ nodes, uint32_t *__restrict__ grains)
{
    for (uint32_t l = 1; l <= FUSED_LEVELS; l++) {
        __syncthreads(); /* level l - 1 is complete */
        uint64_t p = base + ((uint64_t)threadIdx.x << l);
        if (threadIdx.x < (LEAF_WARPS * 32u >> l) && p < nslots) {
            const int64_t *row = sentry_leaf_row(seg, nseg, p);
            uint64_t rel = p - (uint64_t)row[SEG_LEAF];
            if (rel < (uint64_t)row[SEG_LEAVES]) sentry_level_node(row, l - 1, rel >> l, nodes, grains);
        }
    }
}
