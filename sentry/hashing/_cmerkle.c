/*
 * sentry.hashing._cmerkle: the RFC 9162 Merkle Tree Hash of a contiguous buffer, with OpenSSL's
 * SHA-256 and the GIL released, so Python threads hash blocks of one file on several cores.
 *
 *   merkle_root(buffer, leaf_size) -> 32 bytes
 *   chunk_roots(buffer, leaf_size, chunk_leaves) -> concatenated 32-byte roots of the aligned
 *       chunks of chunk_leaves leaves (a power of two; the last chunk may be shorter; b"" if empty)
 *
 * leaf = SHA-256(0x00 || leaf bytes), node = SHA-256(0x01 || left || right), empty = SHA-256("").
 * The tree is built with a compact stack: push each leaf hash, merge the top two entries while they
 * are subtrees of equal height, and at the end fold the remaining (strictly decreasing, perfect)
 * subtrees right to left. That is exactly RFC 9162's "split at the largest power of two below n".
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: no EVP fetch per 4 KiB leaf */
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

#define HLEN SHA256_DIGEST_LENGTH

static void leaf_hash(const unsigned char *p, size_t n, unsigned char out[HLEN])
{
    static const unsigned char prefix = 0x00;
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, &prefix, 1);
    SHA256_Update(&c, p, n);
    SHA256_Final(out, &c);
}

/* out may alias left or right: the inputs are copied before hashing. */
static void node_hash(const unsigned char *left, const unsigned char *right, unsigned char out[HLEN])
{
    unsigned char buf[1 + 2 * HLEN];
    buf[0] = 0x01;
    memcpy(buf + 1, left, HLEN);
    memcpy(buf + 1 + HLEN, right, HLEN);
    SHA256(buf, sizeof buf, out);
}

static void mth(const unsigned char *p, size_t n, size_t leaf_size, unsigned char out[HLEN])
{
    /* Heights on the stack strictly decrease, so 64 entries cover any size_t leaf count. */
    unsigned char stack[64][HLEN];
    unsigned char height[64];
    int top = 0;
    size_t off = 0;

    if (n == 0) {
        SHA256((const unsigned char *)"", 0, out);
        return;
    }
    while (off < n) {
        size_t len = n - off < leaf_size ? n - off : leaf_size;
        leaf_hash(p + off, len, stack[top]);
        height[top++] = 0;
        off += len;
        while (top >= 2 && height[top - 1] == height[top - 2]) {
            node_hash(stack[top - 2], stack[top - 1], stack[top - 2]);
            height[top - 2]++;
            top--;
        }
    }
    while (top >= 2) {
        node_hash(stack[top - 2], stack[top - 1], stack[top - 2]);
        top--;
    }
    memcpy(out, stack[0], HLEN);
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

static PyMethodDef methods[] = {
    {"merkle_root", py_merkle_root, METH_VARARGS,
     "merkle_root(buffer, leaf_size) -> bytes\n\n"
     "RFC 9162 Merkle Tree Hash (SHA-256) of a contiguous bytes-like buffer cut into leaves of\n"
     "leaf_size bytes; the empty buffer hashes to SHA-256(\"\"). Releases the GIL."},
    {"chunk_roots", py_chunk_roots, METH_VARARGS,
     "chunk_roots(buffer, leaf_size, chunk_leaves) -> bytes\n\n"
     "Concatenated 32-byte Merkle roots of consecutive aligned chunks of chunk_leaves leaves\n"
     "(a power of two; the last chunk may be shorter; b\"\" for an empty buffer). Releases the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cmerkle",
    "RFC 9162 Merkle Tree Hash with OpenSSL SHA-256, GIL released.", -1, methods,
};

PyMODINIT_FUNC PyInit__cmerkle(void) { return PyModule_Create(&module); }
