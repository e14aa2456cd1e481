// The CPU launch emulator's runtime (see cuda_emu.h): fibers, the block scheduler, warp rendezvous,
// deferred async copies and the launcher Python calls. Compiled once per set of flags and linked
// into every kernel library (hidden symbols: each library has its own state).
//
// Sanitizer builds (g++ -fsanitize=address / thread) tell ASan and TSan about every fiber switch.
// Under TSan a switch synchronizes, so races between threads of one block are not reported; races
// between blocks run on different OS threads are.
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include "cuda_emu.h"  // last: it defines __noinline__, which system headers spell too

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

namespace emu {

constexpr size_t STACK_BYTES = 256 << 10;  // per fiber; the ECDSA kernels use far less (tests measure it)
constexpr size_t GUARD_BYTES = 4096;       // a PROT_NONE page below each stack: an overflow faults
constexpr unsigned char POISON = 0xA5;     // what an async copy's destination holds until its wait

struct failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class State { ready, barrier, warp, done };

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
    std::vector<size_t> sizes;  // parameter byte sizes
    Trampoline call;
    void *fn;
};

std::map<std::string, Kernel> &registry() {
    static std::map<std::string, Kernel> r;  // built on first use: registrations run as the library loads
    return r;
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

// Schedulers keep their fibers' stacks between launches. The calling thread has its own; launches
// on several OS threads borrow from `spare`, taken and returned by the launching thread alone, so
// the workers share no lock that would order them for TSan (and hide races between blocks).
thread_local Scheduler own;
thread_local Scheduler *now = &own;  // the scheduler of the block this OS thread runs
std::mutex spare_lock;
std::vector<std::unique_ptr<Scheduler>> spare;

[[noreturn]] void fiber_exit();

// ---- fiber switches, told to the sanitizers ----------------------------------------------------
void enter(Fiber &f) {
    now->current = &f;
    threadIdx = f.tid;
#if defined(__SANITIZE_ADDRESS__)
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, STACK_BYTES);
#endif
#if defined(__SANITIZE_THREAD__)
    __tsan_switch_to_fiber(f.tsan, 0);
#endif
    swapcontext(&now->main, &f.ctx);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    now->current = nullptr;
}

void leave(bool dying) {
    Fiber &f = *now->current;
#if defined(__SANITIZE_ADDRESS__)
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake, now->main_bottom, now->main_size);
#else
    (void)dying;
#endif
#if defined(__SANITIZE_THREAD__)
    __tsan_switch_to_fiber(now->tsan_main, 0);
#endif
    swapcontext(&f.ctx, &now->main);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(fake, &now->main_bottom, &now->main_size);
#endif
}

void fiber_main() {
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(nullptr, &now->main_bottom, &now->main_size);
#endif
    try {
        now->kernel->call(now->kernel->fn, now->args);
    } catch (const std::exception &e) {  // unwound here: an exception cannot cross a fiber's first frame
        now->error = e.what();
    }
    fiber_exit();
}

[[noreturn]] void fiber_exit() {
    Fiber &f = *now->current;
    f.state = State::done;
    f.pending.clear();  // copies never waited for: their bytes were never read on the GPU either
    leave(true);
    __builtin_unreachable();
}

// Called by a fiber: stop this thread until the scheduler releases it.
Fiber &me();
void block_on(State s) {
    me().state = s;
    leave(false);
}

[[noreturn]] void fail(const std::string &why) { throw failure(why); }

std::string where(const Fiber &f) {
    return "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," + std::to_string(f.tid.z) +
           ") of block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
           std::to_string(blockIdx.z) + ")";
}

Fiber &me() {
    if (!now->current) fail("a device function was called outside a launch");
    return *now->current;
}

void prepare(Fiber &f) {
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
const char *op_name(Op op) {
    static const char *names[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync"};
    return names[static_cast<int>(op)];
}

unsigned source_lane(const Fiber &f, unsigned lane) {
    unsigned w = static_cast<unsigned>(f.width), base = lane / w * w, a = static_cast<unsigned>(f.arg);
    switch (f.op) {
        case Op::shfl: return base + a % w;
        case Op::up: return lane % w >= a ? lane - a : lane;
        case Op::down: return lane % w + a < w ? lane + a : lane;
        case Op::bxor: return (lane ^ a) < base + w ? lane ^ a : lane;
        default: return lane;
    }
}

std::string hex(unsigned v) {
    char out[16];
    snprintf(out, sizeof out, "0x%08x", v);
    return out;
}

// Completes the group of lanes waiting with `lead`'s mask in warp `w`; any disagreement aborts.
void complete_warp_op(size_t w, Fiber &lead) {
    Fiber *fs = now->fibers.data();
    unsigned mask = lead.mask;
    std::string op = op_name(lead.op);
    if (!(mask >> (lead.linear % 32) & 1)) fail(where(lead) + " calls " + op + " with a mask that leaves it out");
    for (unsigned lane = 0; lane < 32; lane++) {
        if (!(mask >> lane & 1)) continue;
        size_t i = w * 32 + lane;
        if (i >= now->count) fail(where(lead) + ": " + op + "'s mask names lane " + std::to_string(lane) + ", past the block");
        Fiber &f = fs[i];
        if (f.state == State::done) fail(where(lead) + " waits in " + op + " for lane " + std::to_string(lane) + ", which has exited");
        if (f.state == State::barrier) fail(where(lead) + " waits in " + op + " for lane " + std::to_string(lane) + ", which waits at __syncthreads");
        if (f.mask != mask || f.op != lead.op)
            fail("lanes of warp " + std::to_string(w) + " disagree: " + where(lead) + " in " + op + " with mask " + hex(mask) +
                 ", " + where(f) + " in " + op_name(f.op) + " with mask " + hex(f.mask));
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
void resolve() {
    Fiber *fs = now->fibers.data();
    bool released = false;
    for (size_t i = 0; i < now->count; i++)
        if (fs[i].state == State::warp) {
            complete_warp_op(i / 32, fs[i]);
            released = true;
        }
    if (released) return;
    for (size_t i = 0; i < now->count; i++)
        if (fs[i].state == State::done)
            for (size_t j = 0; j < now->count; j++)
                if (fs[j].state == State::barrier)
                    fail(where(fs[j]) + " waits at __syncthreads, but " + where(fs[i]) + " has exited (a GPU would hang or misbehave)");
    for (size_t i = 0; i < now->count; i++) fs[i].state = State::ready;
}

void run_block(const std::vector<unsigned> &order) {
    for (;;) {
        bool live = false;
        for (unsigned i : order) {
            Fiber &f = now->fibers[i];
            if (f.state == State::ready) enter(f);
            if (!now->error.empty()) throw failure(now->error);
            live |= f.state != State::done;
        }
        if (!live) return;
        resolve();
    }
}

uint3 unflatten(uint64_t i, const dim3 &d) {
    return {static_cast<unsigned>(i % d.x), static_cast<unsigned>(i / d.x % d.y), static_cast<unsigned>(i / d.x / d.y)};
}

// Order of n things: 0 as given, 1 reversed, else shuffled with that seed.
std::vector<unsigned> ordering(size_t n, uint64_t order) {
    std::vector<unsigned> v(n);
    std::iota(v.begin(), v.end(), 0u);
    if (order == 1) std::reverse(v.begin(), v.end());
    if (order > 1) std::shuffle(v.begin(), v.end(), std::mt19937_64(order));
    return v;
}

// Runs blocks[first], blocks[first + stride], ... on this OS thread. A fixed share, not a shared
// counter: taking blocks from one atomic would order the workers for TSan and hide their races.
void worker(Scheduler *s, const Kernel &k, void **args, dim3 grid, dim3 block, const std::vector<unsigned> &blocks,
            size_t first, size_t stride, uint64_t order, std::string &error, std::mutex &lock, std::atomic<bool> &stop) {
    now = s;
    size_t nthreads = static_cast<size_t>(block.x) * block.y * block.z;
    try {
        if (now->fibers.size() < nthreads) now->fibers.resize(nthreads);
#if defined(__SANITIZE_THREAD__)
        now->tsan_main = __tsan_get_current_fiber();
#endif
        now->kernel = &k;
        now->args = args;
        now->error.clear();
        gridDim = grid;
        blockDim = block;
        now->count = nthreads;
        std::vector<Fiber> &fs = now->fibers;
        std::vector<unsigned> threads = ordering(nthreads, order);
        for (size_t b = first; b < blocks.size() && !stop.load(std::memory_order_relaxed); b += stride) {
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
        stop = true;
    }
    now->kernel = nullptr;
}

std::string launch(const char *name, dim3 grid, dim3 block, void **args, const size_t *sizes, int nargs, int workers,
                   uint64_t order) {
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
    std::atomic<bool> stop{false};
    std::string error;
    std::mutex lock;
    if (workers <= 1) {
        worker(&own, k, args, grid, block, blocks, 0, 1, order, error, lock, stop);
    } else {
        std::vector<std::unique_ptr<Scheduler>> borrowed;
        {
            std::lock_guard<std::mutex> g(spare_lock);
            while (borrowed.size() < static_cast<size_t>(workers)) {
                if (spare.empty()) {
                    borrowed.push_back(std::make_unique<Scheduler>());
                } else {
                    borrowed.push_back(std::move(spare.back()));
                    spare.pop_back();
                }
            }
        }
        std::vector<std::thread> pool;
        for (int w = 0; w < workers; w++)
            pool.emplace_back([&, w] { worker(borrowed[w].get(), k, args, grid, block, blocks, w, workers, order, error, lock, stop); });
        for (std::thread &t : pool) t.join();
        std::lock_guard<std::mutex> g(spare_lock);
        for (auto &s : borrowed) spare.push_back(std::move(s));
    }
    return error.empty() ? error : std::string("launch of ") + name + " aborted: " + error;
}

uint64_t warp_op(Op op, unsigned mask, uint64_t value, int arg, int width) {
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

void register_kernel(const char *name, const size_t *sizes, size_t nargs, Trampoline call, void *fn) {
    registry()[name] = Kernel{std::vector<size_t>(sizes, sizes + nargs), call, fn};
}

void barrier() { block_on(State::barrier); }

// The lanes of this warp that have not exited (fibers do not diverge otherwise).
unsigned active_mask() {
    unsigned w = me().linear / 32, out = 0;
    for (unsigned lane = 0; lane < 32 && w * 32 + lane < now->count; lane++)
        if (now->fibers[w * 32 + lane].state != State::done) out |= 1u << lane;
    return out;
}

// ---- the CUDA pipeline primitives: each copy happens at the wait that covers it ---------------------
void memcpy_async(void *dst, const void *src, size_t size, size_t zfill) {
    Fiber &f = me();
    if ((size != 4 && size != 8 && size != 16) || zfill > size)
        fail(where(f) + ": __pipeline_memcpy_async of " + std::to_string(size) + " bytes (4, 8 or 16)");
    if (reinterpret_cast<uintptr_t>(dst) % size || reinterpret_cast<uintptr_t>(src) % size)
        fail(where(f) + ": __pipeline_memcpy_async with a pointer not aligned to its size");
    memset(dst, POISON, size);  // undefined until the wait
    f.pending.push_back({dst, src, size, zfill, f.committed});
}

void commit() { me().committed++; }

void wait_prior(size_t n) {
    Fiber &f = me();
    std::vector<Copy> left;
    for (const Copy &c : f.pending) {
        if (c.group + n < f.committed) {  // a committed batch older than the last n
            memcpy(c.dst, c.src, c.size - c.zfill);
            memset(static_cast<char *>(c.dst) + c.size - c.zfill, 0, c.zfill);
        } else {
            left.push_back(c);
        }
    }
    f.pending.swap(left);
}

}  // namespace emu

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
    for (const emu::Fiber &f : emu::own.fibers) {
        if (!f.stack) continue;
        size_t i = 0;
        while (i < emu::STACK_BYTES && !f.stack[i]) i++;
        most = std::max(most, emu::STACK_BYTES - i);
    }
    return most;
}
