// common.cuh: small device helpers shared by the kernel files: fixed-order warp and block
// reductions (so every reduction is deterministic run to run), sign with sign(0) = 0, and
// the grid-stride loop. No state, no globals.
#pragma once

#define PT_WARP 32
#define PT_FULL_MASK 0xffffffffu
// NVRTC has no <cmath>: IEEE constants by bit pattern.
#define PT_NEG_INF __int_as_float(0xff800000)
#define PT_NAN __int_as_float(0x7fc00000)

// Grid-stride loop over [0, n): each thread visits i, i + gridDim*blockDim, ...
#define PT_GRID_STRIDE(i, n) \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

// sign(0) = 0 and sign(NaN) = 0, as the CPU reference does.
__device__ __forceinline__ float pt_sign(float g) {
    return g > 0.0f ? 1.0f : (g < 0.0f ? -1.0f : 0.0f);
}

// min(max(v, lo), hi) in that order, as the reference writes it.
__device__ __forceinline__ float pt_clip(float v, float lo, float hi) {
    return fminf(fmaxf(v, lo), hi);
}

// Butterfly sum over a full warp; every lane ends with the same value, in a fixed order.
__device__ __forceinline__ float pt_warp_sum(float v) {
#pragma unroll
    for (int o = PT_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(PT_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float pt_warp_max(float v) {
#pragma unroll
    for (int o = PT_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(PT_FULL_MASK, v, o));
    return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024), in a fixed order.
// `scratch` holds at least 32 floats of shared memory. Every thread gets the result.
__device__ __forceinline__ float pt_block_sum(float v, float* scratch) {
    const unsigned lane = threadIdx.x % PT_WARP, warp = threadIdx.x / PT_WARP;
    const unsigned warps = blockDim.x / PT_WARP;
    v = pt_warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return pt_warp_sum(v);
}
