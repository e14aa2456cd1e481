// A CPU launch emulator for CUDA kernels, for the tests (no GPU needed): the kernel source is
// compiled by g++ after this header, linked with cuda_emu_runtime.cpp, and every block and thread
// of a launch runs. This header is what kernels see: qualifiers, built-in variables and types,
// intrinsics; the runtime holds the fibers, the scheduler and the launcher.
//
// Each thread of a block is a ucontext fiber; __syncthreads and the warp intrinsics switch fibers
// until every thread they wait for has arrived. Whatever a GPU leaves undefined or deadlocks on
// aborts the launch with a message: a barrier some threads of the block exited before, a warp
// operation whose mask names lanes that exited, wait elsewhere or disagree on the mask, a shuffle
// reading a lane outside its mask. Launches refuse arguments whose byte sizes differ from the
// kernel's parameters (a RawModule launch reads sizeof(parameter) bytes from each argument,
// whatever was passed). Blocks and threads run in a chosen order (a GPU promises none), blocks
// optionally spread over several OS threads (for ThreadSanitizer), each OS thread running one
// block at a time with all its fibers.
//
// Not emulated: PTX inline asm and __CUDA_ARCH__ paths (neither __CUDACC__ nor __CUDA_ARCH__ is
// defined, so headers take their host paths), the memory model, timing, and dynamic shared memory.
// __shared__ is per OS thread (static thread_local), so a block sees what the previous block run
// on that OS thread left there: it is not poisoned between blocks, and a kernel that reads shared
// memory it did not write in this block is caught only in the first block an OS thread runs.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>
#include <utility>

// ---- qualifiers -----------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))  // after every system header: they spell __noinline__ too
#define __launch_bounds__(...)
#define __shared__ static thread_local
// __restrict__ is g++'s own keyword.

// ---- built-in types and variables ------------------------------------------------------------------
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ---- the runtime (cuda_emu_runtime.cpp) -------------------------------------------------------------
namespace emu {

enum class Op { sync, shfl, up, down, bxor, ballot, any, all };
using Trampoline = void (*)(void *fn, void **args);

void register_kernel(const char *name, const size_t *sizes, size_t nargs, Trampoline call, void *fn);
void barrier();
uint64_t warp_op(Op op, unsigned mask, uint64_t value, int arg = 0, int width = 32);
unsigned active_mask();
void memcpy_async(void *dst, const void *src, size_t size, size_t zfill);
void commit();
void wait_prior(size_t n);

template <class... A, size_t... I>
void unpack(void *fn, void **args, std::index_sequence<I...>) {
    reinterpret_cast<void (*)(A...)>(fn)(*static_cast<std::remove_reference_t<A> *>(args[I])...);
}

// The trampoline: calls fn with each argument read from args[i] as its parameter's type.
template <class... A>
void call(void *fn, void **args) {
    unpack<A...>(fn, args, std::index_sequence_for<A...>{});
}

// Registers a kernel with its parameter byte sizes, taken from its C++ type.
template <class... A>
int emu_register(const char *name, void (*fn)(A...)) {
    static const size_t sizes[] = {sizeof(A)..., 0};
    register_kernel(name, sizes, sizeof...(A), &call<A...>, reinterpret_cast<void *>(fn));
    return 0;
}

// A shuffle of any value of at most 8 bytes.
template <class T>
T shuffle(Op op, unsigned mask, T value, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    bits = warp_op(op, mask, bits, arg, width);
    memcpy(&value, &bits, sizeof(T));
    return value;
}

}  // namespace emu

// ---- synchronization and warp intrinsics ---------------------------------------------------------
inline void __syncthreads() { emu::barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_op(emu::Op::sync, mask, 0); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <class T> T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) { return emu::shuffle(emu::Op::shfl, mask, v, src, width); }
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = warpSize) { return emu::shuffle(emu::Op::up, mask, v, static_cast<int>(d), width); }
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = warpSize) { return emu::shuffle(emu::Op::down, mask, v, static_cast<int>(d), width); }
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lanes, int width = warpSize) { return emu::shuffle(emu::Op::bxor, mask, v, lanes, width); }
inline unsigned __ballot_sync(unsigned mask, int p) { return static_cast<unsigned>(emu::warp_op(emu::Op::ballot, mask, p != 0)); }
inline int __any_sync(unsigned mask, int p) { return static_cast<int>(emu::warp_op(emu::Op::any, mask, p != 0)); }
inline int __all_sync(unsigned mask, int p) { return static_cast<int>(emu::warp_op(emu::Op::all, mask, p != 0)); }
// The lanes of this warp that have not exited (fibers do not diverge otherwise).
inline unsigned __activemask() { return emu::active_mask(); }

// ---- atomics (any integer width; the __atomic builtins) --------------------------------------------
template <class T, class V> T atomicAdd(T *p, V v) { return __atomic_fetch_add(p, static_cast<T>(v), __ATOMIC_SEQ_CST); }
template <class T, class V> T atomicSub(T *p, V v) { return __atomic_fetch_sub(p, static_cast<T>(v), __ATOMIC_SEQ_CST); }
template <class T, class V> T atomicExch(T *p, V v) { return __atomic_exchange_n(p, static_cast<T>(v), __ATOMIC_SEQ_CST); }
template <class T, class V> T atomicOr(T *p, V v) { return __atomic_fetch_or(p, static_cast<T>(v), __ATOMIC_SEQ_CST); }
template <class T, class V> T atomicAnd(T *p, V v) { return __atomic_fetch_and(p, static_cast<T>(v), __ATOMIC_SEQ_CST); }
template <class T, class V> T atomicXor(T *p, V v) { return __atomic_fetch_xor(p, static_cast<T>(v), __ATOMIC_SEQ_CST); }
template <class T, class U, class V> T atomicCAS(T *p, U expected, V desired) {
    T e = static_cast<T>(expected);
    __atomic_compare_exchange_n(p, &e, static_cast<T>(desired), false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return e;  // the old value, whether or not it was replaced
}
template <class T, class V> T atomicMax(T *p, V v) {
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < static_cast<T>(v) && !__atomic_compare_exchange_n(p, &old, static_cast<T>(v), true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
template <class T, class V> T atomicMin(T *p, V v) {
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old > static_cast<T>(v) && !__atomic_compare_exchange_n(p, &old, static_cast<T>(v), true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}

// ---- integer intrinsics ---------------------------------------------------------------------------
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) { return static_cast<unsigned>((((uint64_t)hi << 32 | lo) << (s & 31)) >> 32); }
inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned s) { return static_cast<unsigned>((((uint64_t)hi << 32 | lo) << (s < 32 ? s : 32)) >> 32); }
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) { return static_cast<unsigned>(((uint64_t)hi << 32 | lo) >> (s & 31)); }
inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned s) { return static_cast<unsigned>(((uint64_t)hi << 32 | lo) >> (s < 32 ? s : 32)); }
// Byte n of the result is byte (selector nibble n & 7) of y:x (x holds bytes 0-3).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    uint64_t v = (uint64_t)y << 32 | x;
    unsigned out = 0;
    for (int n = 0; n < 4; n++) out |= static_cast<unsigned>(v >> (8 * ((s >> (4 * n)) & 7)) & 0xff) << (8 * n);
    return out;
}
template <class T> T __ldg(const T *p) { return *p; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline int __clzll(unsigned long long x) { return x ? __builtin_clzll(x) : 64; }
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
inline int __ffsll(unsigned long long x) { return __builtin_ffsll(static_cast<long long>(x)); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= (x >> i & 1) << (31 - i);
    return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((uint64_t)a * b >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return static_cast<unsigned long long>((unsigned __int128)a * b >> 64); }
template <class A, class B> std::common_type_t<A, B> min(A a, B b) { return a < b ? a : b; }
template <class A, class B> std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }

// ---- the CUDA pipeline primitives: each copy happens at the wait that covers it ---------------------
inline void __pipeline_memcpy_async(void *dst, const void *src, size_t size, size_t zfill = 0) { emu::memcpy_async(dst, src, size, zfill); }
inline void __pipeline_commit() { emu::commit(); }
inline void __pipeline_wait_prior(size_t n) { emu::wait_prior(n); }

#define EMU_REGISTER(name) static const int emu_registered_##name = emu::emu_register(#name, name);
