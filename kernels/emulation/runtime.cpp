// Runtime of the host CUDA emulation (include/cuda_emulation.h): runs a kernel's grid on the
// CPU. Entry point, called by the test driver (tests/cuda_emulator.py) through ctypes:
//
//   int emu_launch(void (*body)(void *), void *args, const unsigned grid[3],
//                  const unsigned block[3], size_t shared_bytes, int workers, int barriers,
//                  int *synced, char *error, size_t error_size)
//
//   body(args) runs one thread of the kernel (a generated wrapper that unpacks args and calls
//   it); grid and block as in <<<grid, block, shared_bytes>>>. Blocks are spread over `workers`
//   OS threads; within a block, threads run one after another. barriers = 1: each thread is a
//   fiber with its own stack and __syncthreads switches to the next thread of the block (a
//   real barrier); barriers = 0: threads run straight through on the worker's stack (fast),
//   and a __syncthreads reached there is an error, never silently skipped. The driver launches
//   each kernel with barriers = 1 first and drops them for a kernel whose first launch never
//   reached one. *synced: set to 1 when any thread reached __syncthreads. Returns 0, or 1 with
//   a message in `error`.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emulation.h"

namespace emu {
thread_local uint3 thread_index;
thread_local uint3 block_index;
thread_local dim3 block_dim;
thread_local dim3 grid_dim;

namespace {
// -- fiber contexts: a few instructions on x86-64 (callee-saved registers, the stack pointer,
// MXCSR and the x87 control word), ucontext elsewhere
#if defined(__x86_64__)
extern "C" void emu_switch(void **save, void *load);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");

struct Context {
    void *sp = nullptr;
};

void context_init(Context &c, char *stack, std::size_t size, void (*entry)())
{
    auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t(15);
    auto *slot = reinterpret_cast<std::uint64_t *>(top - 16);  // entry's "return address" slot
    slot[0] = reinterpret_cast<std::uint64_t>(entry);
    slot[1] = 0;
    auto *sp = reinterpret_cast<std::uint64_t *>(top - 16 - 7 * 8);
    for (int i = 1; i < 7; ++i)
        sp[i] = 0;  // r15 .. rbp
    std::uint32_t mxcsr = 0x1f80;
    std::uint16_t fpucw = 0x037f;
    std::memcpy(sp, &mxcsr, 4);
    std::memcpy(reinterpret_cast<char *>(sp) + 4, &fpucw, 2);
    c.sp = sp;
}

inline void context_switch(Context &from, Context &to) { emu_switch(&from.sp, to.sp); }
#else
}  // namespace
}  // namespace emu
#include <ucontext.h>
namespace emu {
namespace {
struct Context {
    ucontext_t uc;
};

void context_init(Context &c, char *stack, std::size_t size, void (*entry)())
{
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}

inline void context_switch(Context &from, Context &to) { swapcontext(&from.uc, &to.uc); }
#endif

constexpr std::size_t STACK_BYTES = 64 << 10;
constexpr std::size_t GUARD_BYTES = 256;
constexpr unsigned char GUARD = 0xA5;
enum State { RUNNING, AT_BARRIER, DONE };

struct Fiber {
    Context context;
    State state;
    uint3 index;
};

struct Worker {
    Context scheduler;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    std::vector<unsigned char> shared;
    std::size_t shared_bytes = 0;
    void (*body)(void *) = nullptr;
    void *args = nullptr;
    bool fibered = false;
    bool synced = false;
    int current = -1;
    std::string error;
};

thread_local Worker *worker = nullptr;

void fiber_entry()
{
    Worker *w = worker;
    Fiber &f = w->fibers[w->current];
    w->body(w->args);
    f.state = DONE;
    context_switch(f.context, w->scheduler);  // never resumed: the block's next run re-inits
    std::abort();
}

uint3 unflatten(unsigned i, dim3 d) { return {i % d.x, (i / d.x) % d.y, i / (d.x * d.y)}; }

bool run_block(Worker &w, uint3 block)
{
    block_index = block;
    const unsigned threads = block_dim.x * block_dim.y * block_dim.z;
    std::memset(w.shared.data(), 0xFF, w.shared_bytes);  // NaN in every float / double
    std::memset(w.shared.data() + w.shared_bytes, GUARD, GUARD_BYTES);
    if (!w.fibered) {
        for (unsigned t = 0; t < threads && w.error.empty(); ++t) {
            thread_index = unflatten(t, block_dim);
            w.body(w.args);
        }
    } else {
        for (unsigned t = 0; t < threads; ++t) {
            Fiber &f = w.fibers[t];
            context_init(f.context, w.stacks.data() + (std::size_t)t * STACK_BYTES, STACK_BYTES,
                         fiber_entry);
            f.state = RUNNING;
            f.index = unflatten(t, block_dim);
        }
        for (;;) {
            for (unsigned t = 0; t < threads; ++t) {
                Fiber &f = w.fibers[t];
                if (f.state != RUNNING)
                    continue;
                w.current = (int)t;
                thread_index = f.index;
                context_switch(w.scheduler, f.context);
            }
            unsigned done = 0, waiting = 0;
            for (unsigned t = 0; t < threads; ++t)
                (w.fibers[t].state == DONE ? done : waiting) += 1;
            if (waiting == 0)
                break;
            if (done != 0) {
                char msg[160];
                std::snprintf(msg, sizeof msg,
                              "divergent __syncthreads in block (%u, %u, %u): %u threads "
                              "returned while %u wait at the barrier",
                              block.x, block.y, block.z, done, waiting);
                w.error = msg;
                return false;
            }
            for (unsigned t = 0; t < threads; ++t)
                w.fibers[t].state = RUNNING;  // every thread arrived: release the barrier
        }
    }
    for (std::size_t i = 0; i < GUARD_BYTES; ++i)
        if (w.shared[w.shared_bytes + i] != GUARD) {
            char msg[160];
            std::snprintf(msg, sizeof msg,
                          "block (%u, %u, %u) wrote past its %zu bytes of dynamic shared memory",
                          block.x, block.y, block.z, w.shared_bytes);
            w.error = msg;
            return false;
        }
    return w.error.empty();
}
}  // namespace

void syncthreads()
{
    Worker *w = worker;
    w->synced = true;
    if (!w->fibered) {
        if (w->error.empty())
            w->error = "__syncthreads reached without barrier support";
        return;
    }
    Fiber &f = w->fibers[w->current];
    f.state = AT_BARRIER;
    context_switch(f.context, w->scheduler);
}

void *dynamic_shared() { return worker->shared.data(); }
}  // namespace emu

extern "C" int emu_launch(void (*body)(void *), void *args, const unsigned grid[3],
                          const unsigned block[3], std::size_t shared_bytes, int workers,
                          int barriers, int *synced, char *error, std::size_t error_size)
{
    using namespace emu;
    const dim3 launch_grid = {grid[0], grid[1], grid[2]};
    const dim3 launch_block = {block[0], block[1], block[2]};
    const unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    const unsigned threads = block[0] * block[1] * block[2];
    workers = (int)std::max<unsigned long long>(1, std::min<unsigned long long>(workers, blocks));
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::vector<std::string> errors(workers);
    std::atomic<bool> any_sync{false};
    auto work = [&](int id) {
        grid_dim = launch_grid;  // this thread's launch (Python threads may launch at once)
        block_dim = launch_block;
        Worker w;
        w.body = body;
        w.args = args;
        w.fibered = barriers != 0;
        w.shared_bytes = shared_bytes;
        w.shared.assign(shared_bytes + GUARD_BYTES, 0);
        if (w.fibered) {
            w.fibers.resize(threads);
            w.stacks.resize((std::size_t)threads * STACK_BYTES);
        }
        worker = &w;
        for (unsigned long long b; !failed && (b = next++) < blocks;) {
            const uint3 idx = {(unsigned)(b % grid[0]), (unsigned)((b / grid[0]) % grid[1]),
                               (unsigned)(b / ((unsigned long long)grid[0] * grid[1]))};
            if (!run_block(w, idx)) {
                failed = true;
                errors[id] = w.error;
            }
        }
        if (w.synced)
            any_sync = true;
        worker = nullptr;
    };
    std::vector<std::thread> pool;
    for (int i = 1; i < workers; ++i)
        pool.emplace_back(work, i);
    work(0);
    for (auto &t : pool)
        t.join();
    *synced = any_sync ? 1 : 0;
    for (auto &e : errors)
        if (!e.empty()) {
            std::snprintf(error, error_size, "%s", e.c_str());
            return 1;
        }
    return 0;
}
