// softmax_xent.cu: fused softmax cross-entropy, forward and backward in one pass over the
// logits. Compiled with --fmad=false; expf/logf are the accurate (not __expf) versions.
//
// Variants:
// - softmax_xent_v1: one warp per row (8 rows per 256-thread block): warp max, warp sum of
//   exp(l - max), loss = log(sum) - (l[label] - max), dlogits = (softmax - onehot) * scale.
//   A label >= classes sets bit 0 of *err (the host reports it at its next sync) and writes
//   NaN to that row's loss and gradients.
#include "params.cuh"
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) softmax_xent_v1(
    const float* __restrict__ logits, const unsigned* __restrict__ labels, float* __restrict__ losses,
    float* __restrict__ dlogits, unsigned* __restrict__ err, XentParams p) {
    const unsigned row = blockIdx.x * (blockDim.x / PT_WARP) + threadIdx.x / PT_WARP;
    const unsigned lane = threadIdx.x % PT_WARP;
    if (row >= p.n) return;  // whole warps leave together
    const float* l = logits + (size_t)row * p.classes;
    float* d = dlogits + (size_t)row * p.classes;
    const unsigned label = labels[row];
    if (label >= p.classes) {
        if (lane == 0) {
            atomicOr(err, 1u);
            losses[row] = PT_NAN;
        }
        for (unsigned c = lane; c < p.classes; c += PT_WARP) d[c] = PT_NAN;
        return;
    }
    float mx = PT_NEG_INF;
    for (unsigned c = lane; c < p.classes; c += PT_WARP) mx = fmaxf(mx, l[c]);
    mx = pt_warp_max(mx);
    float sum = 0.0f;
    for (unsigned c = lane; c < p.classes; c += PT_WARP) sum += expf(l[c] - mx);
    sum = pt_warp_sum(sum);
    const float inv = 1.0f / sum;
    for (unsigned c = lane; c < p.classes; c += PT_WARP) {
        const float s = expf(l[c] - mx) * inv;
        d[c] = (s - (c == label ? 1.0f : 0.0f)) * p.grad_scale;
    }
    if (lane == 0) losses[row] = logf(sum) - (l[label] - mx);
}
