// pool.cu: max pooling, NCHW, square k x k window, stride s, no padding.
//
// Variants:
// - maxpool2d_fwd_v1: one thread per output; scans its window row by row and keeps the first
//   maximum (strict >), PyTorch's tie rule.
// - maxpool2d_bwd_v1: one thread per input element (a gather, so no atomics): visits every
//   window that contains the element in (oh, ow) order, recomputes that window's first
//   maximum from x, and adds the window's dy when the maximum is this element.
#include "params.cuh"
#include "common.cuh"

// Offset (within the plane) of the first maximum of window (oh, ow).
__device__ __forceinline__ unsigned pt_window_argmax(const float* __restrict__ plane, const Pool2dParams& p,
                                                     unsigned oh, unsigned ow, float* best_out) {
    const unsigned h0 = oh * p.stride, w0 = ow * p.stride;
    unsigned best_i = h0 * p.w + w0;
    float best = plane[best_i];
    for (unsigned r = 0; r < p.k; ++r) {
        for (unsigned c = 0; c < p.k; ++c) {
            const unsigned i = (h0 + r) * p.w + (w0 + c);
            const float v = plane[i];
            if (v > best) {
                best = v;
                best_i = i;
            }
        }
    }
    *best_out = best;
    return best_i;
}

extern "C" __global__ void maxpool2d_fwd_v1(const float* __restrict__ x, float* __restrict__ y, Pool2dParams p) {
    const unsigned plane_out = p.h_out * p.w_out;
    const unsigned total = p.n * p.c * plane_out;
    PT_GRID_STRIDE(o, total) {
        const unsigned nc = o / plane_out, pix = o % plane_out;
        const float* plane = x + (size_t)nc * p.h * p.w;
        float best;
        pt_window_argmax(plane, p, pix / p.w_out, pix % p.w_out, &best);
        y[o] = best;
    }
}

extern "C" __global__ void maxpool2d_bwd_v1(const float* __restrict__ dy, const float* __restrict__ x,
                                            float* __restrict__ dx, Pool2dParams p) {
    const unsigned plane_in = p.h * p.w, plane_out = p.h_out * p.w_out;
    const unsigned total = p.n * p.c * plane_in;
    PT_GRID_STRIDE(e, total) {
        const unsigned nc = e / plane_in, pix = e % plane_in;
        const unsigned ih = pix / p.w, iw = pix % p.w;
        const float* plane = x + (size_t)nc * plane_in;
        const float* g = dy + (size_t)nc * plane_out;
        // Windows containing row ih: oh*s <= ih < oh*s + k.
        const unsigned oh_lo = ih + 1 > p.k ? (ih + 1 - p.k + p.stride - 1) / p.stride : 0;
        const unsigned oh_hi = min(ih / p.stride, p.h_out - 1);
        const unsigned ow_lo = iw + 1 > p.k ? (iw + 1 - p.k + p.stride - 1) / p.stride : 0;
        const unsigned ow_hi = min(iw / p.stride, p.w_out - 1);
        float acc = 0.0f;
        for (unsigned oh = oh_lo; oh <= oh_hi; ++oh) {
            for (unsigned ow = ow_lo; ow <= ow_hi; ++ow) {
                float best;
                if (pt_window_argmax(plane, p, oh, ow, &best) == pix) acc += g[oh * p.w_out + ow];
            }
        }
        dx[e] = acc;
    }
}
