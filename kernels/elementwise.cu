// elementwise.cu: per-element ops and the bias pair. Compiled with --fmad=false so each
// expression rounds exactly as the CPU reference's Rust code does (no fused multiply-add).
//
// Variants:
// - bias_add_v1: grid-stride, one thread per element, channel = (i / inner) % channels.
// - bias_grad_v1: one block per channel, fixed-order strided sum then block tree reduction
//   (deterministic, no atomics).
// - relu_fwd_v1, relu_bwd_v1, axpby_v1, mul_v1: grid-stride over float4 groups, scalar tail
//   (buffers are whole allocations, so 16-byte aligned).
#include "params.cuh"
#include "common.cuh"

extern "C" __global__ void bias_add_v1(const float* __restrict__ y, const float* __restrict__ b,
                                       float* __restrict__ out, BiasParams p) {
    const unsigned len = p.outer * p.channels * p.inner;
    PT_GRID_STRIDE(i, len) {
        out[i] = y[i] + b[(i / p.inner) % p.channels];
    }
}

// db[c] = sum over (o, i) of dy[o, c, i]. Each thread sums a strided subset in a fixed
// order, then the block reduces; block size 256.
extern "C" __global__ void __launch_bounds__(256) bias_grad_v1(const float* __restrict__ dy,
                                                               float* __restrict__ db, BiasParams p) {
    __shared__ float scratch[32];
    const unsigned c = blockIdx.x;
    const unsigned per = p.outer * p.inner;
    float acc = 0.0f;
    for (unsigned e = threadIdx.x; e < per; e += blockDim.x) {
        const unsigned o = e / p.inner, i = e % p.inner;
        acc += dy[(o * p.channels + c) * p.inner + i];
    }
    acc = pt_block_sum(acc, scratch);
    if (threadIdx.x == 0) db[c] = acc;
}

// out[i] = f(x[i]) over float4 groups, then the scalar tail (at most 3 elements).
template <class F>
__device__ __forceinline__ void pt_map1(unsigned len, const float* __restrict__ x, float* __restrict__ out, F f) {
    const unsigned n4 = len / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* o4 = reinterpret_cast<float4*>(out);
    PT_GRID_STRIDE(q, n4) {
        const float4 a = x4[q];
        o4[q] = make_float4(f(a.x), f(a.y), f(a.z), f(a.w));
    }
    const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < len - n4 * 4) out[n4 * 4 + t] = f(x[n4 * 4 + t]);
}

// out[i] = f(x[i], y[i]), same structure as pt_map1.
template <class F>
__device__ __forceinline__ void pt_map2(unsigned len, const float* __restrict__ x, const float* __restrict__ y,
                                        float* __restrict__ out, F f) {
    const unsigned n4 = len / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const float4* y4 = reinterpret_cast<const float4*>(y);
    float4* o4 = reinterpret_cast<float4*>(out);
    PT_GRID_STRIDE(q, n4) {
        const float4 a = x4[q], b = y4[q];
        o4[q] = make_float4(f(a.x, b.x), f(a.y, b.y), f(a.z, b.z), f(a.w, b.w));
    }
    const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < len - n4 * 4) out[n4 * 4 + t] = f(x[n4 * 4 + t], y[n4 * 4 + t]);
}

extern "C" __global__ void relu_fwd_v1(const float* __restrict__ x, float* __restrict__ y, EltParams p) {
    pt_map1(p.len, x, y, [](float v) { return fmaxf(v, 0.0f); });
}

// dx = dy where x > 0, else 0 (x is the forward input).
extern "C" __global__ void relu_bwd_v1(const float* __restrict__ dy, const float* __restrict__ x,
                                       float* __restrict__ dx, EltParams p) {
    pt_map2(p.len, dy, x, dx, [](float g, float v) { return v > 0.0f ? g : 0.0f; });
}

extern "C" __global__ void axpby_v1(const float* __restrict__ x, const float* __restrict__ y,
                                    float* __restrict__ out, EltParams p) {
    const float a = p.a, b = p.b;
    pt_map2(p.len, x, y, out, [=](float u, float v) { return a * u + b * v; });
}

extern "C" __global__ void mul_v1(const float* __restrict__ x, const float* __restrict__ y,
                                  float* __restrict__ out, EltParams p) {
    pt_map2(p.len, x, y, out, [](float u, float v) { return u * v; });
}
