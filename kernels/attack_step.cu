// attack_step.cu: the attack's inner update, in place on x [n, d], fused so one step reads
// each input once and writes x once. Compiled with --fmad=false: sign steps are bit-exact
// against the CPU reference.
//
// Variants:
// - sign_step_v1: x = clip(x + alpha * sign(g), lo, hi); grid-stride over float4 groups.
// - step_project_linf_v1: x = clip(clamp(x + alpha * sign(g), x0 - eps, x0 + eps), lo, hi);
//   grid-stride over float4 groups.
// - step_project_l2_v1: one block per example: block-sum ||g||^2, then ||s - x0||^2 with
//   s = x + alpha * g / ||g|| recomputed (never stored), then the projected, clipped write.
//   Three passes over the example, the last two mostly from L2.
#include "params.cuh"
#include "common.cuh"

__device__ __forceinline__ float pt_sign_step(float x, float g, float alpha, float lo, float hi) {
    return pt_clip(x + alpha * pt_sign(g), lo, hi);
}

__device__ __forceinline__ float pt_linf_step(float x, float g, float x0, const StepParams& p) {
    const float v = x + p.alpha * pt_sign(g);
    return pt_clip(pt_clip(v, x0 - p.eps, x0 + p.eps), p.lo, p.hi);
}

extern "C" __global__ void sign_step_v1(float* __restrict__ x, const float* __restrict__ g, StepParams p) {
    const unsigned len = p.n * p.d, n4 = len / 4;
    float4* x4 = reinterpret_cast<float4*>(x);
    const float4* g4 = reinterpret_cast<const float4*>(g);
    PT_GRID_STRIDE(q, n4) {
        float4 a = x4[q];
        const float4 b = g4[q];
        a.x = pt_sign_step(a.x, b.x, p.alpha, p.lo, p.hi);
        a.y = pt_sign_step(a.y, b.y, p.alpha, p.lo, p.hi);
        a.z = pt_sign_step(a.z, b.z, p.alpha, p.lo, p.hi);
        a.w = pt_sign_step(a.w, b.w, p.alpha, p.lo, p.hi);
        x4[q] = a;
    }
    const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < len - n4 * 4) {
        const unsigned i = n4 * 4 + t;
        x[i] = pt_sign_step(x[i], g[i], p.alpha, p.lo, p.hi);
    }
}

extern "C" __global__ void step_project_linf_v1(float* __restrict__ x, const float* __restrict__ g,
                                                const float* __restrict__ x0, StepParams p) {
    const unsigned len = p.n * p.d, n4 = len / 4;
    float4* x4 = reinterpret_cast<float4*>(x);
    const float4* g4 = reinterpret_cast<const float4*>(g);
    const float4* o4 = reinterpret_cast<const float4*>(x0);
    PT_GRID_STRIDE(q, n4) {
        float4 a = x4[q];
        const float4 b = g4[q], c = o4[q];
        a.x = pt_linf_step(a.x, b.x, c.x, p);
        a.y = pt_linf_step(a.y, b.y, c.y, p);
        a.z = pt_linf_step(a.z, b.z, c.z, p);
        a.w = pt_linf_step(a.w, b.w, c.w, p);
        x4[q] = a;
    }
    const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < len - n4 * 4) {
        const unsigned i = n4 * 4 + t;
        x[i] = pt_linf_step(x[i], g[i], x0[i], p);
    }
}

// One block per example (blockIdx.x = example), any multiple of 32 threads up to 1024.
extern "C" __global__ void __launch_bounds__(1024) step_project_l2_v1(float* __restrict__ x, const float* __restrict__ g,
                                                                     const float* __restrict__ x0, StepParams p) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * p.d;
    float* xe = x + base;
    const float* ge = g + base;
    const float* oe = x0 + base;

    float gg = 0.0f;
    for (unsigned i = threadIdx.x; i < p.d; i += blockDim.x) gg += ge[i] * ge[i];
    const float gn = sqrtf(pt_block_sum(gg, scratch));

    // s = x + alpha * g / ||g||; a zero gradient takes no step.
    float dd = 0.0f;
    for (unsigned i = threadIdx.x; i < p.d; i += blockDim.x) {
        const float s = gn > 0.0f ? xe[i] + p.alpha * ge[i] / gn : xe[i];
        const float diff = s - oe[i];
        dd += diff * diff;
    }
    const float dn = sqrtf(pt_block_sum(dd, scratch));
    const float factor = fminf(1.0f, p.eps / dn);

    for (unsigned i = threadIdx.x; i < p.d; i += blockDim.x) {
        const float s = gn > 0.0f ? xe[i] + p.alpha * ge[i] / gn : xe[i];
        xe[i] = pt_clip(oe[i] + (s - oe[i]) * factor, p.lo, p.hi);
    }
}
