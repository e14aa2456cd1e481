/*
 * sentry.hashing._cmerkle: the RFC 9162 Merkle Tree Hash of a contiguous buffer, with OpenSSL's
 * SHA-256 and the GIL released, so Python threads hash blocks of one file on several cores.
 *
 *   merkle_root(buffer, leaf_size) -> 32 bytes
 *   chunk_roots(buffer, leaf_size, chunk_leaves) -> concatenated 32-byte roots of the aligned
 *       chunks of chunk_leaves leaves (a power of two; the last chunk may be shorter; b"" if empty)
 *   root_of_hashes(buffer) -> 32 bytes: the same tree over concatenated 32-byte subtree roots
 *   verity_level(buffer, salt, block_size) -> concatenated SHA-256(salt || block) of each block
 *       (the last one zero-padded): one level of a dm-verity tree (format 1), sentry.image.verity
 *
 * leaf = SHA-256(0x00 || leaf bytes), node = SHA-256(0x01 || left || right), empty = SHA-256("").
 * The tree is built with a compact stack: push each leaf hash, merge the top two entries while they
 * are subtrees of equal height, and at the end fold the remaining (strictly decreasing, perfect)
 * subtrees right to left. That is exactly RFC 9162's "split at the largest power of two below n".
 *
 * SHA-256 is OpenSSL's. On x86-64 CPUs with the SHA extensions, full leaves are hashed two at a time
 * with interleaved SHA-NI instructions instead: one SHA-256 stream is bound by the latency of
 * sha256rnds2, two independent streams fill the gaps (measured ~15% faster than OpenSSL per 4 KiB
 * leaf, which more than pays for the extra leaf and node blocks a Merkle tree costs over a flat
 * hash). At import the two-lane code is checked against OpenSSL and disabled if they ever differ;
 * set_sha_ni(False) turns it off (tests run the vectors both ways).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: no EVP fetch per 4 KiB leaf */
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define HLEN SHA256_DIGEST_LENGTH

static int use_sha_ni = 0; /* set at import: CPU support and a self-test */

static void leaf_hash(const unsigned char *p, size_t n, unsigned char out[HLEN])
{
    static const unsigned char prefix = 0x00;
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, &prefix, 1);
    SHA256_Update(&c, p, n);
    SHA256_Final(out, &c);
}

/* out may alias left or right: the inputs are copied before hashing. Not the one-shot SHA256():
 * in OpenSSL 3 it goes through EVP_Q_digest, an algorithm fetch (and a lock) per call, which
 * costs about as much as hashing a 4 KiB leaf. */
static void node_hash(const unsigned char *left, const unsigned char *right, unsigned char out[HLEN])
{
    unsigned char buf[1 + 2 * HLEN];
    SHA256_CTX c;
    buf[0] = 0x01;
    memcpy(buf + 1, left, HLEN);
    memcpy(buf + 1 + HLEN, right, HLEN);
    SHA256_Init(&c);
    SHA256_Update(&c, buf, sizeof buf);
    SHA256_Final(out, &c);
}

/* ---- two-lane SHA-NI leaf hashing (x86-64, GCC/Clang) ------------------------------------------ */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SHA_NI_CODE 1
#include <cpuid.h>
#include <immintrin.h>

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t H256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

/* The SHA-NI instructions keep the state as the word pairs (A,B,E,F) and (C,D,G,H). */
typedef struct {
    __m128i abef, cdgh;
} sha_state;

SHANI static void state_init(sha_state *s)
{
    __m128i dcba = _mm_loadu_si128((const __m128i *)&H256[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&H256[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    s->abef = _mm_alignr_epi8(cdab, efgh, 8);
    s->cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

SHANI static void state_digest(const sha_state *s, unsigned char out[HLEN])
{
    const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i feba = _mm_shuffle_epi32(s->abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(s->cdgh, 0xB1);
    __m128i dcba = _mm_blend_epi16(feba, dchg, 0xF0);
    __m128i hgfe = _mm_alignr_epi8(dchg, feba, 8);
    _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(dcba, bswap));
    _mm_storeu_si128((__m128i *)(out + 16), _mm_shuffle_epi8(hgfe, bswap));
}

/* Rounds 4i..4i+3 with message words w (already big-endian-loaded). */
#define ROUNDS4(S, w, i)                                                                        \
    do {                                                                                        \
        __m128i m_ = _mm_add_epi32((w), _mm_loadu_si128((const __m128i *)&K256[4 * (i)]));     \
        (S).cdgh = _mm_sha256rnds2_epu32((S).cdgh, (S).abef, m_);                               \
        (S).abef = _mm_sha256rnds2_epu32((S).abef, (S).cdgh, _mm_shuffle_epi32(m_, 0x0E));      \
    } while (0)

/* Message schedule: words 4i..4i+3 from the previous 16 words, held in x[0..3] (x[i&3] = i-4). */
#define SCHEDULE(x, i)                                                                          \
    ((x)[(i) & 3] = _mm_sha256msg2_epu32(                                                       \
         _mm_add_epi32(_mm_sha256msg1_epu32((x)[(i) & 3], (x)[((i) - 3) & 3]),                  \
                       _mm_alignr_epi8((x)[((i) - 1) & 3], (x)[((i) - 2) & 3], 4)),             \
         (x)[((i) - 1) & 3]))

/* One 64-byte block for each of two independent SHA-256 states, instructions interleaved. */
SHANI static void compress_x2(sha_state *a, sha_state *b, const unsigned char *pa, const unsigned char *pb)
{
    const __m128i be = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i xa[4], xb[4];
    sha_state sa = *a, sb = *b;
    int i;
    for (i = 0; i < 16; i++) { /* unrolled by the compiler */
        if (i < 4) {
            xa[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * i)), be);
            xb[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * i)), be);
        } else {
            SCHEDULE(xa, i);
            SCHEDULE(xb, i);
        }
        ROUNDS4(sa, xa[i & 3], i);
        ROUNDS4(sb, xb[i & 3], i);
    }
    a->abef = _mm_add_epi32(a->abef, sa.abef);
    a->cdgh = _mm_add_epi32(a->cdgh, sa.cdgh);
    b->abef = _mm_add_epi32(b->abef, sb.abef);
    b->cdgh = _mm_add_epi32(b->cdgh, sb.cdgh);
}

/* SHA-256(0x00 || p0[0:n]) and SHA-256(0x00 || p1[0:n]): two leaves of the same length. */
SHANI static void leaf_hash_x2(const unsigned char *p0, const unsigned char *p1, size_t n,
                               unsigned char out0[HLEN], unsigned char out1[HLEN])
{
    sha_state s0, s1;
    unsigned char t0[128], t1[128];
    size_t total = n + 1, full = total / 64, rem = total % 64, tail, k;
    uint64_t bits = (uint64_t)total * 8;
    int j;

    state_init(&s0);
    state_init(&s1);
    /* Message = 0x00 || data: block k starts at data byte 64k - 1; block 0 carries the prefix. */
    for (k = 0; k < full; k++) {
        if (k == 0) {
            t0[0] = t1[0] = 0x00;
            memcpy(t0 + 1, p0, 63);
            memcpy(t1 + 1, p1, 63);
            compress_x2(&s0, &s1, t0, t1);
        } else {
            compress_x2(&s0, &s1, p0 + 64 * k - 1, p1 + 64 * k - 1);
        }
    }
    /* Padding: the last rem message bytes, 0x80, zeros, the 64-bit big-endian bit length. */
    memset(t0, 0, sizeof t0);
    memset(t1, 0, sizeof t1);
    if (full == 0) {
        memcpy(t0 + 1, p0, n);
        memcpy(t1 + 1, p1, n);
    } else {
        memcpy(t0, p0 + 64 * full - 1, rem);
        memcpy(t1, p1 + 64 * full - 1, rem);
    }
    t0[rem] = t1[rem] = 0x80;
    tail = rem + 9 <= 64 ? 64 : 128;
    for (j = 0; j < 8; j++)
        t0[tail - 1 - j] = t1[tail - 1 - j] = (unsigned char)(bits >> (8 * j));
    compress_x2(&s0, &s1, t0, t1);
    if (tail == 128)
        compress_x2(&s0, &s1, t0 + 64, t1 + 64);
    state_digest(&s0, out0);
    state_digest(&s1, out1);
}

static int cpu_has_sha_ni(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & bit_SHA) != 0;
}

/* The two-lane code must agree with OpenSSL on every length class (one-block, two-block tail,
 * multi-block) before it is used. */
static int sha_ni_self_test(void)
{
    unsigned char data[2 * 4096], got[2][HLEN], want[2][HLEN];
    size_t lengths[] = {0, 1, 54, 55, 62, 63, 64, 100, 4095, 4096};
    size_t i, k;
    for (i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 131 + 7);
    for (k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
        leaf_hash_x2(data, data + 4096, lengths[k], got[0], got[1]);
        leaf_hash(data, lengths[k], want[0]);
        leaf_hash(data + 4096, lengths[k], want[1]);
        if (memcmp(got, want, sizeof got))
            return 0;
    }
    return 1;
}
#endif /* x86-64 */

static void push(unsigned char stack[][HLEN], unsigned char *height, int *top, const unsigned char h[HLEN])
{
    memcpy(stack[*top], h, HLEN);
    height[(*top)++] = 0;
    while (*top >= 2 && height[*top - 1] == height[*top - 2]) {
        node_hash(stack[*top - 2], stack[*top - 1], stack[*top - 2]);
        height[*top - 2]++;
        (*top)--;
    }
}

static void empty_root(unsigned char out[HLEN])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Final(out, &c);
}

/* What push() leaves on the stack, perfect subtrees of strictly decreasing height, folded right
 * to left into the root. */
static void fold_stack(unsigned char stack[][HLEN], int top, unsigned char out[HLEN])
{
    while (top >= 2) {
        node_hash(stack[top - 2], stack[top - 1], stack[top - 2]);
        top--;
    }
    memcpy(out, stack[0], HLEN);
}

static void mth(const unsigned char *p, size_t n, size_t leaf_size, unsigned char out[HLEN])
{
    /* Heights on the stack strictly decrease, so 64 entries cover any size_t leaf count. */
    unsigned char stack[64][HLEN];
    unsigned char height[64];
    int top = 0;
    size_t off = 0;

    if (n == 0) {
        empty_root(out);
        return;
    }
    while (off < n) {
        unsigned char h[2][HLEN];
        size_t len = n - off < leaf_size ? n - off : leaf_size;
#ifdef HAVE_SHA_NI_CODE
        if (use_sha_ni && n - off >= 2 * leaf_size) { /* two full leaves */
            leaf_hash_x2(p + off, p + off + leaf_size, leaf_size, h[0], h[1]);
            push(stack, height, &top, h[0]);
            push(stack, height, &top, h[1]);
            off += 2 * leaf_size;
            continue;
        }
#endif
        leaf_hash(p + off, len, h[0]);
        push(stack, height, &top, h[0]);
        off += len;
    }
    fold_stack(stack, top, out);
}

static PyObject *py_merkle_root(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t leaf_size;
    unsigned char out[HLEN];

    if (!PyArg_ParseTuple(args, "y*n:merkle_root", &buf, &leaf_size))
        return NULL;
    if (leaf_size <= 0) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "leaf_size must be positive");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    mth(buf.buf, (size_t)buf.len, (size_t)leaf_size, out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyBytes_FromStringAndSize((const char *)out, HLEN);
}

static PyObject *py_chunk_roots(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t leaf_size, chunk_leaves;
    size_t chunk_bytes, n, n_chunks, i;
    PyObject *result;
    unsigned char *out;

    if (!PyArg_ParseTuple(args, "y*nn:chunk_roots", &buf, &leaf_size, &chunk_leaves))
        return NULL;
    if (leaf_size <= 0 || chunk_leaves <= 0 || (chunk_leaves & (chunk_leaves - 1))) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError,
                        "leaf_size must be positive and chunk_leaves a positive power of two");
        return NULL;
    }
    n = (size_t)buf.len;
    /* A chunk larger than any buffer is simply the whole buffer (avoids overflow). */
    if ((size_t)chunk_leaves > n / (size_t)leaf_size)
        chunk_bytes = n ? n : 1;
    else
        chunk_bytes = (size_t)leaf_size * (size_t)chunk_leaves;
    n_chunks = n / chunk_bytes + (n % chunk_bytes != 0);

    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n_chunks * HLEN));
    if (result == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n_chunks; i++) {
        size_t off = i * chunk_bytes;
        size_t len = n - off < chunk_bytes ? n - off : chunk_bytes;
        mth((const unsigned char *)buf.buf + off, len, (size_t)leaf_size, out + i * HLEN);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return result;
}

/* Verifying folds every item's chunk roots (16 per big tensor) and every manifest's record hashes:
 * in Python each node hash costs a few allocations and calls, here a SHA-256 block or two. */
static PyObject *py_root_of_hashes(PyObject *self, PyObject *arg)
{
    Py_buffer buf;
    unsigned char stack[64][HLEN];
    unsigned char height[64];
    unsigned char out[HLEN];
    int top = 0;
    Py_ssize_t off;

    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (buf.len % HLEN) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "the buffer must hold whole 32-byte hashes");
        return NULL;
    }
    if (buf.len == 0)
        empty_root(out);
    else {
        for (off = 0; off < buf.len; off += HLEN)
            push(stack, height, &top, (const unsigned char *)buf.buf + off);
        fold_stack(stack, top, out);
    }
    PyBuffer_Release(&buf);
    return PyBytes_FromStringAndSize((const char *)out, HLEN);
}

/* -- one level of a dm-verity (format 1) hash tree ---------------------------------------------
 * digest = SHA-256(salt || block) for every block, the last one zero-padded to block_size. With the
 * one-byte salt 00 a full block's digest is exactly the RFC 9162 leaf hash of those 4 KiB, so the
 * two-lane SHA-NI leaf code serves it (and one pass gives both trees: sentry/image/verity.py). */
static void salted_block(const SHA256_CTX *salted, const unsigned char *p, size_t len, size_t block_size,
                         unsigned char out[HLEN])
{
    static const unsigned char zeros[256] = {0};
    SHA256_CTX c = *salted;
    SHA256_Update(&c, p, len);
    while (len < block_size) {
        size_t k = block_size - len < sizeof zeros ? block_size - len : sizeof zeros;
        SHA256_Update(&c, zeros, k);
        len += k;
    }
    SHA256_Final(out, &c);
}

static void verity_level(const unsigned char *p, size_t n, const unsigned char *salt, size_t salt_len,
                         size_t block_size, unsigned char *out)
{
    SHA256_CTX salted;
    size_t off = 0;
    SHA256_Init(&salted);
    SHA256_Update(&salted, salt, salt_len);
    while (off < n) {
        size_t len = n - off < block_size ? n - off : block_size;
#ifdef HAVE_SHA_NI_CODE
        if (use_sha_ni && salt_len == 1 && salt[0] == 0x00 && n - off >= 2 * block_size) {
            leaf_hash_x2(p + off, p + off + block_size, block_size, out, out + HLEN);
            out += 2 * HLEN;
            off += 2 * block_size;
            continue;
        }
#endif
        salted_block(&salted, p + off, len, block_size, out);
        out += HLEN;
        off += len;
    }
}

static PyObject *py_verity_level(PyObject *self, PyObject *args)
{
    Py_buffer buf, salt;
    Py_ssize_t block_size;
    size_t n_blocks;
    PyObject *result;

    if (!PyArg_ParseTuple(args, "y*y*n:verity_level", &buf, &salt, &block_size))
        return NULL;
    if (block_size <= 0 || salt.len > 256) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&salt);
        PyErr_SetString(PyExc_ValueError, "block_size must be positive and the salt at most 256 bytes");
        return NULL;
    }
    n_blocks = (size_t)buf.len / (size_t)block_size + ((size_t)buf.len % (size_t)block_size != 0);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n_blocks * HLEN));
    if (result != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        verity_level(buf.buf, (size_t)buf.len, salt.buf, (size_t)salt.len, (size_t)block_size, out);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&salt);
    return result;
}

static PyObject *py_set_sha_ni(PyObject *self, PyObject *arg)
{
    int want = PyObject_IsTrue(arg);
    if (want < 0)
        return NULL;
#ifdef HAVE_SHA_NI_CODE
    use_sha_ni = want && cpu_has_sha_ni() && sha_ni_self_test();
#endif
    return PyBool_FromLong(use_sha_ni);
}

/* -- whole small files, for datasets of many samples -------------------------------------------
 * Per file, the work in Python (stat, open, fstat, pread, fstat, stat, close, each handing the GIL
 * over) costs several times the hashing of a 4 KiB sample, and two threads doing it contend for
 * the GIL. Here a list of files is opened, read, hashed and checked with the GIL released, with
 * the checks of sentry.io.posix.FileSource. A file that cannot be opened as a plain regular file
 * of at most max_bytes gives None (the caller opens it with FileSource, which says why); one that
 * reads short, fails to read or changes while hashed is reported as such, not retried. */
#define HF_RETRY (-1)
#define HF_SHORT (-2)
#define HF_READ (-3)
#define HF_CHANGED (-4)
#define HF_LONGER (-5)
static size_t chunk_leaves_for(size_t n_leaves, size_t max_chunks)
{
    size_t c = 1;
    while ((n_leaves + c - 1) / c > max_chunks)
        c <<= 1;
    return c;
}

static int same_stamp(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ino == b->st_ino && a->st_dev == b->st_dev;
}

/* Chunk roots of the whole file into out; returns its size, or an HF_ code with *n_out the bytes
 * read (HF_SHORT), or errno (HF_READ), and *size_out the size expected; HF_LONGER if it still
 * yields data past its size (a /proc file says 0 bytes). buf holds max_bytes + 1 bytes. */
static long long hash_one_file(const char *path, int follow, size_t leaf_size, size_t max_chunks,
                               unsigned char *buf, size_t max_bytes, unsigned char *out, size_t *n_out,
                               long long *size_out)
{
    struct stat st, st_fd, st_now;
    size_t got = 0, size, chunk_bytes, n_chunks, i;
    int fd;
    long long ret = HF_RETRY;

    if ((follow ? stat(path, &st) : lstat(path, &st)) != 0 || !S_ISREG(st.st_mode))
        return HF_RETRY; /* no open(): a FIFO would block, a device may have side effects */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return HF_RETRY;
    if (fstat(fd, &st_fd) != 0 || !S_ISREG(st_fd.st_mode) || st_fd.st_size < 0 ||
        (unsigned long long)st_fd.st_size > max_bytes)
        goto fail;
    size = (size_t)st_fd.st_size;
    *size_out = (long long)size;
    while (got < size) {
        ssize_t r = pread(fd, buf + got, size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            ret = r < 0 ? HF_READ : HF_SHORT;
            *n_out = r < 0 ? (size_t)errno : got;
            goto fail;
        }
        got += (size_t)r;
    }
    chunk_bytes = chunk_leaves_for((size + leaf_size - 1) / leaf_size, max_chunks) * leaf_size;
    n_chunks = (size + chunk_bytes - 1) / chunk_bytes;
    for (i = 0; i < n_chunks; i++) {
        size_t off = i * chunk_bytes;
        mth(buf + off, size - off < chunk_bytes ? size - off : chunk_bytes, leaf_size, out + i * HLEN);
    }
    /* Unchanged since opened, through the descriptor and at the path (FileSource.check_unchanged). */
    ret = HF_CHANGED;
    if (fstat(fd, &st_now) != 0 || !same_stamp(&st_fd, &st_now))
        goto fail;
    if ((follow ? stat(path, &st_now) : lstat(path, &st_now)) != 0 || !same_stamp(&st_fd, &st_now))
        goto fail;
    for (;;) { /* and the data ends where fstat says (FileSource.check_unchanged) */
        ssize_t r = pread(fd, buf + size, 1, (off_t)size);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != 0) {
            ret = r < 0 ? HF_READ : HF_LONGER;
            *n_out = r < 0 ? (size_t)errno : 0;
            goto fail;
        }
        break;
    }
    close(fd);
    *n_out = n_chunks;
    return (long long)size;
fail:
    close(fd);
    return ret;
}

static PyObject *py_hash_files(PyObject *self, PyObject *args)
{
    PyObject *paths, *encoded = NULL, *result = NULL;
    Py_ssize_t leaf_size, max_chunks, max_bytes, n, i;
    int follow;
    size_t cap;
    const char **cpaths = NULL;
    long long *sizes = NULL, *expected = NULL;
    size_t *counts = NULL;
    unsigned char *outs = NULL, *buf = NULL;

    if (!PyArg_ParseTuple(args, "O!nnnp:hash_files", &PyList_Type, &paths, &leaf_size, &max_chunks,
                          &max_bytes, &follow))
        return NULL;
    if (leaf_size <= 0 || max_chunks <= 0 || max_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "leaf_size and max_chunks must be positive, max_bytes not negative");
        return NULL;
    }
    n = PyList_GET_SIZE(paths);
    cap = (size_t)max_chunks;
    if ((size_t)max_bytes / (size_t)leaf_size + 1 < cap)
        cap = (size_t)max_bytes / (size_t)leaf_size + 1;
    encoded = PyList_New(n);
    cpaths = PyMem_RawCalloc((size_t)n + 1, sizeof(*cpaths));
    sizes = PyMem_RawCalloc((size_t)n + 1, sizeof(*sizes));
    counts = PyMem_RawCalloc((size_t)n + 1, sizeof(*counts));
    expected = PyMem_RawCalloc((size_t)n + 1, sizeof(*expected));
    outs = PyMem_RawMalloc(((size_t)n + 1) * cap * HLEN);
    buf = PyMem_RawMalloc((size_t)max_bytes + 1);
    if (!encoded || !cpaths || !sizes || !counts || !expected || !outs || !buf) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        PyObject *b = NULL;
        if (!PyUnicode_FSConverter(PyList_GET_ITEM(paths, i), &b)) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError) && !PyErr_ExceptionMatches(PyExc_TypeError))
                goto done;
            PyErr_Clear(); /* an embedded NUL, not a path: left to the caller, which says so */
            Py_INCREF(Py_None);
            PyList_SET_ITEM(encoded, i, Py_None);
            continue;
        }
        PyList_SET_ITEM(encoded, i, b);
        cpaths[i] = PyBytes_AS_STRING(b);
    }
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++)
        sizes[i] = cpaths[i] ? hash_one_file(cpaths[i], follow, (size_t)leaf_size, (size_t)max_chunks, buf,
                                             (size_t)max_bytes, outs + (size_t)i * cap * HLEN, &counts[i],
                                             &expected[i])
                             : HF_RETRY;
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (!result)
        goto done;
    for (i = 0; i < n; i++) {
        PyObject *item;
        if (sizes[i] == HF_RETRY) {
            Py_INCREF(Py_None);
            item = Py_None;
        } else if (sizes[i] == HF_SHORT) {
            item = Py_BuildValue("(snL)", "short", (Py_ssize_t)counts[i], expected[i]);
        } else if (sizes[i] == HF_READ) {
            item = Py_BuildValue("(si)", "read", (int)counts[i]);
        } else if (sizes[i] == HF_CHANGED) {
            item = Py_BuildValue("(s)", "changed");
        } else if (sizes[i] == HF_LONGER) {
            item = Py_BuildValue("(sL)", "longer", expected[i]);
        } else {
            item = Py_BuildValue("(Ly#)", sizes[i], (const char *)(outs + (size_t)i * cap * HLEN),
                                 (Py_ssize_t)(counts[i] * HLEN));
        }
        if (!item) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    Py_XDECREF(encoded);
    PyMem_RawFree(cpaths);
    PyMem_RawFree(sizes);
    PyMem_RawFree(counts);
    PyMem_RawFree(expected);
    PyMem_RawFree(outs);
    PyMem_RawFree(buf);
    return result;
}

static PyMethodDef methods[] = {
    {"set_sha_ni", py_set_sha_ni, METH_O,
     "set_sha_ni(enabled) -> bool\n\n"
     "Use the two-lane SHA-NI leaf hashing if enabled and this CPU supports it (the default at\n"
     "import); returns whether it is now in use. Roots are the same either way."},
    {"merkle_root", py_merkle_root, METH_VARARGS,
     "merkle_root(buffer, leaf_size) -> bytes\n\n"
     "RFC 9162 Merkle Tree Hash (SHA-256) of a contiguous bytes-like buffer cut into leaves of\n"
     "leaf_size bytes; the empty buffer hashes to SHA-256(\"\"). Releases the GIL."},
    {"chunk_roots", py_chunk_roots, METH_VARARGS,
     "chunk_roots(buffer, leaf_size, chunk_leaves) -> bytes\n\n"
     "Concatenated 32-byte Merkle roots of consecutive aligned chunks of chunk_leaves leaves\n"
     "(a power of two; the last chunk may be shorter; b\"\" for an empty buffer). Releases the GIL."},
    {"root_of_hashes", py_root_of_hashes, METH_O,
     "root_of_hashes(buffer) -> bytes\n\n"
     "RFC 9162 Merkle Tree Hash over already-hashed subtrees, given as a buffer of concatenated\n"
     "32-byte hashes (sentry.hashing.merkle.root_of_hashes); SHA-256(\"\") for an empty buffer."},
    {"verity_level", py_verity_level, METH_VARARGS,
     "verity_level(buffer, salt, block_size) -> bytes\n\n"
     "Concatenated SHA-256(salt || block) of each block_size block of buffer, the last one zero-padded:\n"
     "one level of a dm-verity (format 1) hash tree. b\"\" for an empty buffer. Releases the GIL."},
    {"hash_files", py_hash_files, METH_VARARGS,
     "hash_files(paths, leaf_size, max_chunks, max_bytes, follow_symlinks) -> list\n\n"
     "Per path, (size, chunk roots) of the whole regular file, chunked as sentry.hashing.merkle.\n"
     "chunk_leaves(n_leaves, max_chunks) says; None if it cannot be opened as a regular file of at\n"
     "most max_bytes (missing, a symbolic link while not following them, not a regular file...);\n"
     "(\"short\", bytes read, size), (\"read\", errno), (\"changed\",) or (\"longer\", size) if it\n"
     "read short, failed to read, changed while hashed or yields more than its size. Releases the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cmerkle",
    "RFC 9162 Merkle Tree Hash with OpenSSL SHA-256, GIL released.", -1, methods,
};

PyMODINIT_FUNC PyInit__cmerkle(void)
{
#ifdef HAVE_SHA_NI_CODE
    use_sha_ni = cpu_has_sha_ni() && sha_ni_self_test();
#endif
    return PyModule_Create(&module);
}
