/*
 * RFC 9162 Merkle trees of many items at once: the per-thread work of merkle.cu's level and root
 * kernels, and the segment table the leaf kernel (merkle_leaves.cuh) reads; node hashes and the
 * level plan are also built with g++ by the tests (tests/host/kernels_host.cpp).
 *
 * A launch hashes a window of *segments* (an item, or an aligned block of a large item), described
 * by a table of int64 rows (SEG_*). All leaf hashes of the window sit in one node array, segment s
 * owning slots [LEAF, LEAF + LEAVES). The tree is reduced in place, one launch per level:
 *
 *   level l holds node j of a segment in slot LEAF + j * 2^l, covering leaves [j*2^l, (j+1)*2^l);
 *   level l+1 node j = node(level-l nodes 2j, 2j+1) written over slot 2j*2^l, or, when 2j+1 does
 *   not exist (the segment has an odd number of level-l nodes), the lone node 2j carried up as is.
 *
 * Why that is RFC 9162's MTH for every leaf count n: by induction, level-l node j is the MTH of
 * leaves [j*2^l, min((j+1)*2^l, n)). A paired parent covers t leaves with 2^l < t <= 2^(l+1), its
 * left child exactly 2^l of them, and RFC 9162 splits t leaves at the largest power of two below
 * t, which is 2^l: the same node. A carried node covers the same (at most 2^l) leaves at level l+1.
 * Level ceil(log2 n) has one node, the root (spec section 1.3 is the same argument with blocks).
 * Threads of one launch touch disjoint slots (thread j reads 2j*2^l and (2j+1)*2^l, writes the
 * first), so no level needs a barrier inside it, and the node array is the only scratch memory.
 *
 * The GRAIN level's nodes (aligned sub-blocks of 2^GRAIN leaves: the chunk roots) are copied to
 * the grain array as they are made, since the next level overwrites half of them.
 */
#pragma once
#include "sha256.cuh"

/* Columns of the segment table, one int64 row per segment. */
#define SEG_PTR 0    /* device address of the segment's first byte */
#define SEG_SIZE 1   /* bytes (> 0) */
#define SEG_LEAF 2   /* first leaf slot in the window's node array */
#define SEG_LEAVES 3 /* leaves: ceil(SIZE / leaf_size) */
#define SEG_OUT 4    /* first row of its grain roots in the grain array */
#define SEG_GRAIN 5  /* level of its grain roots: log2(leaves per grain), at most its top level */
#define SEG_COLS 6

SENTRY_HD void sentry_copy_hash(const uint32_t *src, uint32_t *dst)
{
    SENTRY_UNROLL
    for (int i = 0; i < 8; i++) dst[i] = src[i];
}

/* The last row s < n with key(s) <= t, key(s) = base[s * stride]: keys are non-decreasing and
 * key(0) = 0 <= t, so segments owning no thread (equal keys) are never chosen. */
SENTRY_HD uint32_t sentry_find(const int64_t *base, uint32_t stride, uint32_t n, uint64_t t)
{
    uint32_t lo = 0, hi = n; /* answer in [lo, hi) */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((uint64_t)base[(uint64_t)mid * stride] <= t) lo = mid; else hi = mid;
    }
    return lo;
}

/* The row of the segment whose slots hold window slot t (t may also be a gap after its leaves). */
SENTRY_HD const int64_t *sentry_leaf_row(const int64_t *seg, uint32_t nseg, uint64_t t)
{
    return seg + (uint64_t)sentry_find(seg + SEG_LEAF, SEG_COLS, nseg, t) * SEG_COLS;
}

/* Level-l threads of a segment with m level-l nodes: ceil(m/2) when m >= 2, else none. */
SENTRY_HD uint64_t sentry_level_threads(uint64_t leaves, uint32_t level)
{
    uint64_t m = ((leaves - 1) >> level) + 1;
    return m >= 2 ? (m + 1) / 2 : 0;
}

/* Node j of level+1 of the segment in row: the pair (2j, 2j+1) of level, or the lone 2j carried. */
SENTRY_HD void sentry_level_node(const int64_t *row, uint32_t level, uint64_t j, uint32_t *nodes, uint32_t *grains)
{
    uint64_t m = (((uint64_t)row[SEG_LEAVES] - 1) >> level) + 1; /* level-l nodes */
    uint32_t *left = nodes + 8 * ((uint64_t)row[SEG_LEAF] + ((2 * j) << level));
    if (2 * j + 1 < m) sha256_node(left, left + 8 * ((uint64_t)1 << level), left);
    if ((uint64_t)row[SEG_GRAIN] == level + 1) sentry_copy_hash(left, grains + 8 * ((uint64_t)row[SEG_OUT] + j));
}

/* Thread t of the launch that makes level+1 from level; first[s] = the segment's first thread. */
SENTRY_HD void sentry_level_thread(const int64_t *seg, uint32_t nseg, const int64_t *first, uint32_t level,
                                   uint64_t t, uint32_t *nodes, uint32_t *grains)
{
    uint32_t s = sentry_find(first, 1, nseg, t);
    sentry_level_node(seg + (uint64_t)s * SEG_COLS, level, t - (uint64_t)first[s], nodes, grains);
}

/* Thread s of the roots launch, after the last level: segment s's root. */
SENTRY_HD void sentry_root_thread(const int64_t *seg, uint32_t s, const uint32_t *nodes, uint32_t *roots)
{
    sentry_copy_hash(nodes + 8 * (uint64_t)seg[(uint64_t)s * SEG_COLS + SEG_LEAF], roots + 8 * (uint64_t)s);
}
