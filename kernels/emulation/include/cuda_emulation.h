// A small CUDA emulation for the host: the project's kernels (kernels/*.cu), unchanged, compiled
// as C++ and run on the CPU by runtime.cpp, so that their logic is tested where no GPU is.
//
// What it models: grids, blocks and threads (threadIdx, blockIdx, blockDim, gridDim); each
// block's threads as fibers that run until they reach __syncthreads, which is a real barrier
// (no thread passes it before every thread of its block has arrived; a thread that returns
// while others wait there is reported as a divergent barrier); static __shared__ memory, one
// copy per block being run; dynamic shared memory of exactly the launch's size, filled with NaN
// bytes before each block and checked for overruns after it; __half with IEEE round-to-nearest-
// even conversions. Not modelled: warps and their intrinsics, atomics, memory spaces other than
// global and shared (the kernels use none of them), and reads out of bounds of global memory
// (compute-sanitizer on a GPU checks those).
//
// Layout of the launch interface is stated in runtime.cpp.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

namespace emu {
extern thread_local uint3 thread_index;
extern thread_local uint3 block_index;
extern thread_local dim3 block_dim;  // per launch worker: launches may run concurrently
extern thread_local dim3 grid_dim;
void syncthreads();
void *dynamic_shared();
}  // namespace emu

#define threadIdx (::emu::thread_index)
#define blockIdx (::emu::block_index)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define __syncthreads() ::emu::syncthreads()

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
// one copy per OS thread, and an OS thread runs one block at a time: one copy per block
#define __shared__ static thread_local
#define DYNAMIC_SHARED(type, name) type *name = static_cast<type *>(::emu::dynamic_shared())

template <typename T> static inline T min(T a, T b) { return b < a ? b : a; }
template <typename T> static inline T max(T a, T b) { return a < b ? b : a; }

static inline float __int_as_float(int i)
{
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
