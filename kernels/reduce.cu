// reduce.cu: row reductions over a [rows, cols] view.
//
// Variants:
// - sum_rows_v1: one warp per row (8 rows per 256-thread block); each lane sums a strided
//   subset in order, then a butterfly across the warp (fixed order, deterministic).
// - argmax_rows_v1: one warp per row; each lane keeps its first maximum, then a butterfly
//   keeps the larger value and, on ties, the smaller index: the row's first maximum.
#include "params.cuh"
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) sum_rows_v1(const float* __restrict__ x,
                                                              float* __restrict__ out, RowParams p) {
    const unsigned row = blockIdx.x * (blockDim.x / PT_WARP) + threadIdx.x / PT_WARP;
    const unsigned lane = threadIdx.x % PT_WARP;
    if (row >= p.rows) return;  // whole warps leave together, so the shuffles stay full
    const float* r = x + (size_t)row * p.cols;
    float acc = 0.0f;
    for (unsigned c = lane; c < p.cols; c += PT_WARP) acc += r[c];
    acc = pt_warp_sum(acc);
    if (lane == 0) out[row] = acc;
}

extern "C" __global__ void __launch_bounds__(256) argmax_rows_v1(const float* __restrict__ x,
                                                                 unsigned* __restrict__ out, RowParams p) {
    const unsigned row = blockIdx.x * (blockDim.x / PT_WARP) + threadIdx.x / PT_WARP;
    const unsigned lane = threadIdx.x % PT_WARP;
    if (row >= p.rows) return;
    const float* r = x + (size_t)row * p.cols;
    float best = PT_NEG_INF;
    unsigned idx = 0xffffffffu;
    for (unsigned c = lane; c < p.cols; c += PT_WARP) {
        const float v = r[c];
        if (idx == 0xffffffffu || v > best) {
            best = v;
            idx = c;
        }
    }
#pragma unroll
    for (int o = PT_WARP / 2; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(PT_FULL_MASK, best, o);
        const unsigned oi = __shfl_xor_sync(PT_FULL_MASK, idx, o);
        // An empty lane (idx = ~0) never wins; otherwise larger value, then smaller index.
        const bool take = oi != 0xffffffffu && (idx == 0xffffffffu || ob > best || (ob == best && oi < idx));
        if (take) {
            best = ob;
            idx = oi;
        }
    }
    if (lane == 0) out[row] = idx;
}
