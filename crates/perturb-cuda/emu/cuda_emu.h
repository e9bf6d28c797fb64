// cuda_emu.h: just enough CUDA to run kernels/*.cu on a CPU, so CI (which has no GPU) checks
// what the kernels compute, not only that they compile. One std::thread per CUDA thread of a
// block; blocks run one after another, so `__shared__` can be a function-local static;
// __syncthreads and the warp shuffles are std::barrier rendezvous. It checks indexing and
// arithmetic; it cannot see races between blocks, memory coalescing, or speed. Inline PTX is
// not emulated: kernels keep a reference path for it under `#if __CUDA_ARCH__` (gemm.cu v3).
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
#include <algorithm>
using std::min; using std::max;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };
struct uint2 { unsigned x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline std::barrier<>* g_block_bar;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_bar;
inline std::vector<std::vector<uint32_t>> g_warp_slot;
inline unsigned lin_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline void __trap() { fprintf(stderr, "__trap\n"); abort(); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    unsigned t = lin_tid(), w = t / 32, l = t % 32;
    uint32_t bits; memcpy(&bits, &v, 4);
    g_warp_slot[w][l] = bits;
    g_warp_bar[w]->arrive_and_wait();
    uint32_t r = g_warp_slot[w][l ^ o];
    g_warp_bar[w]->arrive_and_wait();
    T out; memcpy(&out, &r, 4); return out;
}
template <class T> T __shfl_sync(unsigned, T v, int src) {
    unsigned t = lin_tid(), w = t / 32, l = t % 32;
    uint32_t bits; memcpy(&bits, &v, 4);
    g_warp_slot[w][l] = bits;
    g_warp_bar[w]->arrive_and_wait();
    uint32_t r = g_warp_slot[w][src & 31];
    g_warp_bar[w]->arrive_and_wait();
    T out; memcpy(&out, &r, 4); return out;
}
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline unsigned atomicOr(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_or(v); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }

// Runs the grid: one host thread per CUDA thread of a block, reused for every block (blocks
// run one after another, so function-static "shared" memory is never used by two at once).
template <class K, class... A>
void launch(K kernel, dim3 grid, dim3 block, A... args) {
    gridDim = grid; blockDim = block;
    const unsigned nt = block.x * block.y * block.z, nw = (nt + 31) / 32;
    std::barrier<> bar(nt), between(nt);
    g_block_bar = &bar;
    g_warp_bar.clear(); g_warp_slot.assign(nw, std::vector<uint32_t>(32));
    for (unsigned w = 0; w < nw; ++w) g_warp_bar.emplace_back(new std::barrier<>(std::min(32u, nt - w * 32)));
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < nt; ++t) {
        ts.emplace_back([&, t] {
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        blockIdx = {bx, by, bz};
                        kernel(args...);
                        between.arrive_and_wait();
                    }
        });
    }
    for (auto& t : ts) t.join();
}
