// A CPU launch emulator for CUDA kernels, for the tests (no GPU needed): the kernel source is
// compiled by g++ with this header in front, and every block and thread of a launch runs.
//
// Each thread of a block is a ucontext fiber; __syncthreads and the warp intrinsics switch fibers
// until every thread they wait for has arrived. Whatever a GPU leaves undefined or deadlocks on
// aborts the launch with a message: a barrier some threads of the block exited before, a warp
// operation whose mask names lanes that exited, wait elsewhere or disagree on the mask, a shuffle
// reading a lane outside its mask. Launches refuse arguments whose byte sizes differ from the
// kernel's parameters (a RawModule launch reads sizeof(parameter) bytes from each argument,
// whatever was passed). Blocks run in a chosen order (a GPU promises none), optionally spread over
// several OS threads (for ThreadSanitizer), each running one block at a time with all its fibers.
//
// Not emulated: PTX inline asm and __CUDA_ARCH__ paths (neither __CUDACC__ nor __CUDA_ARCH__ is
// defined, so headers take their host paths), the memory model, timing, and dynamic shared memory.
// __shared__ is per OS thread (static thread_local), so a block sees what the previous block run
// on that OS thread left there: it is not poisoned between blocks, and a kernel that reads shared
// memory it did not write in this block is not caught.
//
// Sanitizer builds (g++ -fsanitize=address / thread) tell ASan and TSan about every fiber switch.
// Under TSan a switch synchronizes, so races between threads of one block are not reported; races
// between blocks run on different OS threads are.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

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
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace emu {

constexpr size_t STACK_BYTES = 256 << 10;  // per fiber; the ECDSA kernels use far less (tests measure it)
constexpr size_t GUARD_BYTES = 4096;       // a PROT_NONE page below each stack: an overflow faults
constexpr unsigned char POISON = 0xA5;     // what an async copy's destination holds until its wait

struct failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class State { ready, barrier, warp, done };
enum class Op { sync, shfl, up, down, bxor, ballot, any, all };

struct Copy {
    void *dst;
    const void *src;
    size_t size, zfill;
    unsigned group;
};

struct Fiber {
    ucontext_t ctx;
    char *stack = nullptr;  // lowest usable byte; STACK_BYTES long
    State state = State::done;
    uint3 tid{};
    unsigned linear = 0;
    Op op = Op::sync;  // the pending warp operation
    unsigned mask = 0;
    uint64_t value = 0, result = 0;
    int arg = 0, width = 32;
    std::vector<Copy> pending;  // async copies not yet waited for
    unsigned committed = 0;     // pipeline commits so far
    void *tsan = nullptr;
};

struct Kernel {
    const char *name;
    std::vector<size_t> sizes;  // parameter byte sizes
    void (*call)(void *fn, void **args);
    void *fn;
};

inline std::map<std::string, Kernel> &registry() {
    static std::map<std::string, Kernel> r;
    return r;
}

template <class... A, size_t... I>
void unpack(void *fn, void **args, std::index_sequence<I...>) {
    reinterpret_cast<void (*)(A...)>(fn)(*static_cast<std::remove_reference_t<A> *>(args[I])...);
}

// The trampoline: calls fn with each argument read from args[i] as its parameter's type.
template <class... A>
void call(void *fn, void **args) {
    unpack<A...>(fn, args, std::index_sequence_for<A...>{});
}

// Registers a kernel with its parameter sizes, from its C++ type.
template <class... A>
Kernel emu_register(const char *name, void (*fn)(A...)) {
    Kernel k{name, {sizeof(A)...}, &call<A...>, reinterpret_cast<void *>(fn)};
    registry()[name] = k;
    return k;
}

// One OS thread's fibers and the block it is running.
struct Scheduler {
    std::vector<Fiber> fibers;  // the first `count` run the current block; the rest keep their stacks
    size_t count = 0;
    ucontext_t main;
    Fiber *current = nullptr;
    const Kernel *kernel = nullptr;
    void **args = nullptr;
    std::string error;  // set by a fiber that aborts the launch
    void *tsan_main = nullptr;
    const void *main_bottom = nullptr;  // the scheduler's own stack, for ASan
    size_t main_size = 0;

    ~Scheduler() {
        for (Fiber &f : fibers) {
            if (f.stack) munmap(f.stack - GUARD_BYTES, STACK_BYTES + GUARD_BYTES);
#if defined(__SANITIZE_THREAD__)
            if (f.tsan) __tsan_destroy_fiber(f.tsan);
#endif
        }
    }
};

inline thread_local Scheduler sched;

[[noreturn]] inline void fiber_exit();

// ---- fiber switches, told to the sanitizers ----------------------------------------------------
inline void enter(Fiber &f) {
    sched.current = &f;
    threadIdx = f.tid;
#if defined(__SANITIZE_ADDRESS__)
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, STACK_BYTES);
#endif
#if defined(__SANITIZE_THREAD__)
    __tsan_switch_to_fiber(f.tsan, 0);
#endif
    swapcontext(&sched.main, &f.ctx);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    sched.current = nullptr;
}

inline void leave(bool dying) {
    Fiber &f = *sched.current;
#if defined(__SANITIZE_ADDRESS__)
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake, sched.main_bottom, sched.main_size);
#else
    (void)dying;
#endif
#if defined(__SANITIZE_THREAD__)
    __tsan_switch_to_fiber(sched.tsan_main, 0);
#endif
    swapcontext(&f.ctx, &sched.main);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(fake, &sched.main_bottom, &sched.main_size);
#endif
}

inline void fiber_main() {
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(nullptr, &sched.main_bottom, &sched.main_size);
#endif
    try {
        sched.kernel->call(sched.kernel->fn, sched.args);
    } catch (const failure &e) {
        sched.error = e.what();
    }
    fiber_exit();
}

[[noreturn]] inline void fiber_exit() {
    Fiber &f = *sched.current;
    f.state = State::done;
    f.pending.clear();  // copies never waited for: their bytes were never read on the GPU either
    leave(true);
    __builtin_unreachable();
}

// Called by a fiber: stop this thread until the scheduler releases it.
inline Fiber &me();
inline void block_on(State s) {
    me().state = s;
    leave(false);
}

[[noreturn]] inline void fail(const std::string &why) { throw failure(why); }

inline std::string where(const Fiber &f) {
    return "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," + std::to_string(f.tid.z) +
           ") of block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
           std::to_string(blockIdx.z) + ")";
}

inline Fiber &me() {
    if (!sched.current) fail("a device function was called outside a launch");
    return *sched.current;
}

inline void prepare(Fiber &f) {
    if (!f.stack) {
        void *p = mmap(nullptr, STACK_BYTES + GUARD_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fail("out of memory for fiber stacks");
        mprotect(p, GUARD_BYTES, PROT_NONE);
        f.stack = static_cast<char *>(p) + GUARD_BYTES;
#if defined(__SANITIZE_THREAD__)
        f.tsan = __tsan_create_fiber(0);
#endif
    }
#if defined(__SANITIZE_ADDRESS__)
    __asan_unpoison_memory_region(f.stack, STACK_BYTES);  // frames a finished fiber never popped
#endif
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = STACK_BYTES;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
    f.state = State::ready;
    f.pending.clear();
    f.committed = 0;
}

// ---- warp operations: a rendezvous of the lanes of a mask ----------------------------------------
inline const char *op_name(Op op) {
    static const char *names[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync"};
    return names[static_cast<int>(op)];
}

inline unsigned source_lane(const Fiber &f, unsigned lane) {
    unsigned w = static_cast<unsigned>(f.width), base = lane / w * w, a = static_cast<unsigned>(f.arg);
    switch (f.op) {
        case Op::shfl: return base + a % w;
        case Op::up: return lane % w >= a ? lane - a : lane;
        case Op::down: return lane % w + a < w ? lane + a : lane;
        case Op::bxor: return (lane ^ a) < base + w ? lane ^ a : lane;
        default: return lane;
    }
}

// Completes the group of lanes waiting with `lead`'s mask in warp `w`; any disagreement aborts.
inline void complete_warp_op(size_t w, Fiber &lead) {
    Fiber *fs = sched.fibers.data();
    unsigned mask = lead.mask;
    std::string op = op_name(lead.op);
    if (!(mask >> (lead.linear % 32) & 1)) fail(where(lead) + " calls " + op + " with a mask that leaves it out");
    for (unsigned lane = 0; lane < 32; lane++) {
        if (!(mask >> lane & 1)) continue;
        size_t i = w * 32 + lane;
        if (i >= sched.count) fail(where(lead) + ": " + op + "'s mask names lane " + std::to_string(lane) + ", past the block");
        Fiber &f = fs[i];
        if (f.state == State::done) fail(where(lead) + " waits in " + op + " for lane " + std::to_string(lane) + ", which has exited");
        if (f.state == State::barrier) fail(where(lead) + " waits in " + op + " for lane " + std::to_string(lane) + ", which waits at __syncthreads");
        if (f.mask != mask || f.op != lead.op) fail("lanes of warp " + std::to_string(w) + " disagree: " + where(lead) + " in " + op + " mask " + std::to_string(mask) + ", " + where(f) + " in " + op_name(f.op) + " mask " + std::to_string(f.mask));
    }
    uint32_t votes = 0;
    for (unsigned lane = 0; lane < 32; lane++)
        if (mask >> lane & 1 && fs[w * 32 + lane].value) votes |= 1u << lane;
    for (unsigned lane = 0; lane < 32; lane++) {
        if (!(mask >> lane & 1)) continue;
        Fiber &f = fs[w * 32 + lane];
        unsigned src = source_lane(f, lane);
        switch (f.op) {
            case Op::ballot: f.result = votes; break;
            case Op::any: f.result = votes != 0; break;
            case Op::all: f.result = votes == mask; break;
            case Op::sync: break;
            default:
                if (!(mask >> src & 1)) fail(where(f) + " reads lane " + std::to_string(src) + " in " + op + ", outside the mask (undefined)");
                f.result = fs[w * 32 + src].value;
        }
        f.state = State::ready;
    }
}

// Nothing is ready: release what waits, or abort where a GPU would hang or be undefined.
inline void resolve() {
    Fiber *fs = sched.fibers.data();
    bool released = false;
    for (size_t i = 0; i < sched.count; i++)
        if (fs[i].state == State::warp) {
            complete_warp_op(i / 32, fs[i]);
            released = true;
        }
    if (released) return;
    for (size_t i = 0; i < sched.count; i++)
        if (fs[i].state == State::done)
            for (size_t j = 0; j < sched.count; j++)
                if (fs[j].state == State::barrier)
                    fail(where(fs[j]) + " waits at __syncthreads, but " + where(fs[i]) + " has exited (a GPU would hang or misbehave)");
    for (size_t i = 0; i < sched.count; i++) fs[i].state = State::ready;
}

inline void run_block(const std::vector<unsigned> &order) {
    for (;;) {
        bool live = false;
        for (unsigned i : order) {
            Fiber &f = sched.fibers[i];
            if (f.state == State::ready) enter(f);
            if (!sched.error.empty()) throw failure(sched.error);
            live |= f.state != State::done;
        }
        if (!live) return;
        resolve();
    }
}

inline uint3 unflatten(uint64_t i, const dim3 &d) {
    return {static_cast<unsigned>(i % d.x), static_cast<unsigned>(i / d.x % d.y), static_cast<unsigned>(i / d.x / d.y)};
}

// Order of n things: 0 as given, 1 reversed, else shuffled with that seed.
inline std::vector<unsigned> ordering(size_t n, uint64_t order) {
    std::vector<unsigned> v(n);
    std::iota(v.begin(), v.end(), 0u);
    if (order == 1) std::reverse(v.begin(), v.end());
    if (order > 1) std::shuffle(v.begin(), v.end(), std::mt19937_64(order));
    return v;
}

// Runs blocks `blocks[next++]` on this OS thread until none is left.
inline void worker(const Kernel &k, void **args, dim3 grid, dim3 block, const std::vector<unsigned> &blocks,
                   std::atomic<size_t> &next, uint64_t order, std::string &error, std::mutex &lock) {
    size_t nthreads = static_cast<size_t>(block.x) * block.y * block.z;
    try {
        if (sched.fibers.size() < nthreads) sched.fibers.resize(nthreads);
#if defined(__SANITIZE_THREAD__)
        sched.tsan_main = __tsan_get_current_fiber();
#endif
        sched.kernel = &k;
        sched.args = args;
        sched.error.clear();
        gridDim = grid;
        blockDim = block;
        sched.count = nthreads;
        std::vector<Fiber> &fs = sched.fibers;
        std::vector<unsigned> threads = ordering(nthreads, order);
        for (size_t b; (b = next++) < blocks.size();) {
            blockIdx = unflatten(blocks[b], grid);
            for (unsigned i = 0; i < nthreads; i++) {
                prepare(fs[i]);
                fs[i].tid = unflatten(i, block);
                fs[i].linear = i;
            }
            run_block(threads);
        }
    } catch (const std::exception &e) {
        std::lock_guard<std::mutex> g(lock);
        if (error.empty()) error = e.what();
        next = blocks.size();
    }
    sched.kernel = nullptr;
}

inline std::string launch(const char *name, dim3 grid, dim3 block, void **args, const size_t *sizes, int nargs,
                          int workers, uint64_t order) {
    auto it = registry().find(name);
    if (it == registry().end()) return std::string("no kernel named ") + name + " in this module";
    const Kernel &k = it->second;
    if (static_cast<size_t>(nargs) != k.sizes.size())
        return std::string("launch of ") + name + " refused: " + std::to_string(nargs) + " arguments for " +
               std::to_string(k.sizes.size()) + " parameters";
    for (int i = 0; i < nargs; i++)
        if (sizes[i] != k.sizes[i])
            return std::string("launch of ") + name + " refused: argument " + std::to_string(i) + " is " +
                   std::to_string(sizes[i]) + " bytes, the parameter " + std::to_string(k.sizes[i]);
    uint64_t nthreads = static_cast<uint64_t>(block.x) * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !nthreads || nthreads > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535)
        return std::string("launch of ") + name + " refused: invalid grid or block dimensions";
    std::vector<unsigned> blocks = ordering(static_cast<size_t>(grid.x) * grid.y * grid.z, order);
    std::atomic<size_t> next{0};
    std::string error;
    std::mutex lock;
    if (workers <= 1) {
        worker(k, args, grid, block, blocks, next, order, error, lock);
    } else {
        std::vector<std::thread> pool;
        for (int w = 0; w < workers; w++)
            pool.emplace_back([&] { worker(k, args, grid, block, blocks, next, order, error, lock); });
        for (std::thread &t : pool) t.join();
    }
    return error.empty() ? error : std::string("launch of ") + name + " aborted: " + error;
}

inline uint64_t warp_op(Op op, unsigned mask, uint64_t value, int arg = 0, int width = 32) {
    if (width < 1 || width > 32 || (width & (width - 1))) fail("warp operation width must be a power of two up to 32");
    Fiber &f = me();
    f.op = op;
    f.mask = mask;
    f.value = value;
    f.arg = arg;
    f.width = width;
    block_on(State::warp);
    return f.result;
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
inline void __syncthreads() { emu::block_on(emu::State::barrier); }
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
inline unsigned __activemask() {
    unsigned w = emu::me().linear / 32, out = 0;
    for (unsigned lane = 0; lane < 32 && w * 32 + lane < emu::sched.count; lane++)
        if (emu::sched.fibers[w * 32 + lane].state != emu::State::done) out |= 1u << lane;
    return out;
}

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
inline void __pipeline_memcpy_async(void *dst, const void *src, size_t size, size_t zfill = 0) {
    emu::Fiber &f = emu::me();
    if ((size != 4 && size != 8 && size != 16) || zfill > size)
        emu::fail(emu::where(f) + ": __pipeline_memcpy_async of " + std::to_string(size) + " bytes (4, 8 or 16)");
    if (reinterpret_cast<uintptr_t>(dst) % size || reinterpret_cast<uintptr_t>(src) % size)
        emu::fail(emu::where(f) + ": __pipeline_memcpy_async with a pointer not aligned to its size");
    memset(dst, emu::POISON, size);  // undefined until the wait
    f.pending.push_back({dst, src, size, zfill, f.committed});
}
inline void __pipeline_commit() { emu::me().committed++; }
inline void __pipeline_wait_prior(size_t n) {
    emu::Fiber &f = emu::me();
    std::vector<emu::Copy> left;
    for (const emu::Copy &c : f.pending) {
        if (c.group + n < f.committed) {  // a committed batch older than the last n
            memcpy(c.dst, c.src, c.size - c.zfill);
            memset(static_cast<char *>(c.dst) + c.size - c.zfill, 0, c.zfill);
        } else {
            left.push_back(c);
        }
    }
    f.pending.swap(left);
}

// ---- what Python calls (ctypes) ------------------------------------------------------------------------
extern "C" __attribute__((visibility("default"))) int emu_launch(const char *name, const unsigned *grid,
                                                                 const unsigned *block, void **args,
                                                                 const size_t *sizes, int nargs, int workers,
                                                                 unsigned long long order, char *err, size_t errlen) {
    std::string e = emu::launch(name, dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]), args,
                                sizes, nargs, workers, order);
    snprintf(err, errlen, "%s", e.c_str());
    return e.empty() ? 0 : -1;
}

// Deepest fiber stack use so far on the calling OS thread, in bytes (stacks start zeroed).
extern "C" __attribute__((visibility("default"))) size_t emu_stack_high_water() {
    size_t most = 0;
    for (const emu::Fiber &f : emu::sched.fibers) {
        if (!f.stack) continue;
        size_t i = 0;
        while (i < emu::STACK_BYTES && !f.stack[i]) i++;
        most = std::max(most, emu::STACK_BYTES - i);
    }
    return most;
}

#define EMU_REGISTER(name) static const emu::Kernel emu_registered_##name = emu::emu_register(#name, name);
