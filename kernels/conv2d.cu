// conv2d.cu: 2-D convolution, NCHW, weights [c_out, c_in, kh, kw], symmetric zero padding,
// stride s, no dilation. Forward and both backwards; input and weight gradients are separate
// kernels and neither uses atomics, so every result is deterministic run to run.
//
// Variants:
// - v1 naive: one thread per output element, direct loops over its reduction, no shared memory.
// - v2 implicit GEMM: the convolution as C[M, N] = A[M, K] · B[K, N] with B's elements gathered
//   from the image on the fly (no im2col buffer); 64x64 block tile, k-step 16, 256 threads
//   with a 4x4 register block each (rows ty + 16a, columns tx + 16b, so stores coalesce along
//   pixels), next tile's gathers issued before the current tile's math, double-buffered
//   shared memory, one barrier per k-step.
//     fwd:        M = c_out, N = n*h_out*w_out, K = c_in*kh*kw; A = w, B = im2col(x)
//     bwd_input:  M = c_in,  N = n*h*w,         K = c_out*kh*kw; A = w (transposed), B = the
//                 dy value each (r, s) tap maps to, zero where the stride skips it
//     bwd_weight: M = c_out, N = c_in*kh*kw,    K = n*h_out*w_out; A = dy, B = im2col(x)^T,
//                 split over K into grid.z chunks written to a partial buffer [splits, M, N],
//                 then conv2d_bwd_weight_v2_reduce sums the chunks in split order.
#include "params.cuh"
#include "common.cuh"

// ---- v1 ---------------------------------------------------------------------------------

extern "C" __global__ void conv2d_fwd_v1(const float* __restrict__ x, const float* __restrict__ w,
                                         float* __restrict__ y, Conv2dParams p) {
    const unsigned plane = p.h_out * p.w_out;
    const unsigned total = p.n * p.c_out * plane;
    PT_GRID_STRIDE(o, total) {
        const unsigned img = o / (p.c_out * plane), co = (o / plane) % p.c_out, pix = o % plane;
        const int ih0 = (int)((pix / p.w_out) * p.stride) - (int)p.pad;
        const int iw0 = (int)((pix % p.w_out) * p.stride) - (int)p.pad;
        float acc = 0.0f;
        for (unsigned ci = 0; ci < p.c_in; ++ci) {
            const float* xp = x + ((size_t)img * p.c_in + ci) * p.h * p.w;
            const float* wp = w + ((size_t)co * p.c_in + ci) * p.kh * p.kw;
            for (unsigned r = 0; r < p.kh; ++r) {
                const int ih = ih0 + (int)r;
                if (ih < 0 || ih >= (int)p.h) continue;
                for (unsigned s = 0; s < p.kw; ++s) {
                    const int iw = iw0 + (int)s;
                    if (iw < 0 || iw >= (int)p.w) continue;
                    acc += xp[ih * p.w + iw] * wp[r * p.kw + s];
                }
            }
        }
        y[o] = acc;
    }
}

// dx[img, ci, ih, iw] = sum over (co, r, s) with ih + pad - r = oh * stride, 0 <= oh < h_out
// (and likewise for columns) of dy[img, co, oh, ow] * w[co, ci, r, s].
extern "C" __global__ void conv2d_bwd_input_v1(const float* __restrict__ dy, const float* __restrict__ w,
                                               float* __restrict__ dx, Conv2dParams p) {
    const unsigned plane = p.h * p.w, plane_out = p.h_out * p.w_out;
    const unsigned total = p.n * p.c_in * plane;
    PT_GRID_STRIDE(e, total) {
        const unsigned img = e / (p.c_in * plane), ci = (e / plane) % p.c_in, pix = e % plane;
        const int ih = (int)(pix / p.w), iw = (int)(pix % p.w);
        float acc = 0.0f;
        for (unsigned co = 0; co < p.c_out; ++co) {
            const float* g = dy + ((size_t)img * p.c_out + co) * plane_out;
            const float* wp = w + ((size_t)co * p.c_in + ci) * p.kh * p.kw;
            for (unsigned r = 0; r < p.kh; ++r) {
                const int th = ih + (int)p.pad - (int)r;
                if (th < 0 || th % (int)p.stride != 0 || th / (int)p.stride >= (int)p.h_out) continue;
                for (unsigned s = 0; s < p.kw; ++s) {
                    const int tw = iw + (int)p.pad - (int)s;
                    if (tw < 0 || tw % (int)p.stride != 0 || tw / (int)p.stride >= (int)p.w_out) continue;
                    acc += g[(th / (int)p.stride) * p.w_out + tw / (int)p.stride] * wp[r * p.kw + s];
                }
            }
        }
        dx[e] = acc;
    }
}

// dw[co, ci, r, s] = sum over (img, oh, ow) of dy[img, co, oh, ow] * x[img, ci, ih, iw].
extern "C" __global__ void conv2d_bwd_weight_v1(const float* __restrict__ x, const float* __restrict__ dy,
                                                float* __restrict__ dw, Conv2dParams p) {
    const unsigned khkw = p.kh * p.kw, plane_out = p.h_out * p.w_out;
    const unsigned total = p.c_out * p.c_in * khkw;
    PT_GRID_STRIDE(e, total) {
        const unsigned co = e / (p.c_in * khkw), ci = (e / khkw) % p.c_in, rs = e % khkw;
        const int r = (int)(rs / p.kw), s = (int)(rs % p.kw);
        float acc = 0.0f;
        for (unsigned img = 0; img < p.n; ++img) {
            const float* g = dy + ((size_t)img * p.c_out + co) * plane_out;
            const float* xp = x + ((size_t)img * p.c_in + ci) * p.h * p.w;
            for (unsigned oh = 0; oh < p.h_out; ++oh) {
                const int ih = (int)(oh * p.stride) - (int)p.pad + r;
                if (ih < 0 || ih >= (int)p.h) continue;
                for (unsigned ow = 0; ow < p.w_out; ++ow) {
                    const int iw = (int)(ow * p.stride) - (int)p.pad + s;
                    if (iw < 0 || iw >= (int)p.w) continue;
                    acc += g[oh * p.w_out + ow] * xp[ih * p.w + iw];
                }
            }
        }
        dw[e] = acc;
    }
}

// ---- v2: the implicit-GEMM engine ---------------------------------------------------------

#define CV_BM 64
#define CV_BN 64
#define CV_BK 16
#define CV_THREADS 256

// Runs one 64x64 output tile over the reduction range [kbeg, kend). `Op` supplies
//   float a(int i, int p)            A(i, p) for i < M, p in range (callers bound-check);
//   Col col(int j)                   per-column decode, done once per thread;
//   float b(const Col&, int p)       B(p, j) (0 where the gather falls in the padding);
//   void store(int i, int j, float)  the output write.
// A tile loads: element e = t + 256 r, p = e % 16, i = e / 16 (k fastest: coalesced weights).
// B tile loads: each thread owns column t % 64 and rows t / 64 + 4 r.
template <class Op>
__device__ __forceinline__ void cv_tile(const Op& op, int M, int N, int kbeg, int kend) {
    __shared__ float As[2][CV_BK][CV_BM + 1];  // +1: the k-fastest stores spread over banks
    __shared__ float Bs[2][CV_BK][CV_BN];
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int m0 = blockIdx.y * CV_BM, n0 = blockIdx.x * CV_BN;
    const int jl = t % CV_BN, pl0 = t / CV_BN;
    const int j = n0 + jl;
    const bool jok = j < N;
    const typename Op::Col col = op.col(jok ? j : 0);

    float ra[4], rb[4];
    auto load = [&](int k0) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = t + CV_THREADS * r;
            const int i = m0 + e / CV_BK, pa = k0 + e % CV_BK;
            ra[r] = (i < M && pa < kend) ? op.a(i, pa) : 0.0f;
            const int pb = k0 + pl0 + 4 * r;
            rb[r] = (jok && pb < kend) ? op.b(col, pb) : 0.0f;
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = t + CV_THREADS * r;
            As[buf][e % CV_BK][e / CV_BK] = ra[r];
            Bs[buf][pl0 + 4 * r][jl] = rb[r];
        }
    };

    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = 0.0f;

    load(kbeg);
    store(0);
    __syncthreads();
    int buf = 0;
    for (int k0 = kbeg; k0 < kend; k0 += CV_BK) {
        const bool more = k0 + CV_BK < kend;
        if (more) load(k0 + CV_BK);
#pragma unroll
        for (int kk = 0; kk < CV_BK; ++kk) {
            float av[4], bv[4];
#pragma unroll
            for (int a = 0; a < 4; ++a) av[a] = As[buf][kk][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 4; ++b) bv[b] = Bs[buf][kk][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
        }
        if (more) {
            store(buf ^ 1);  // last read before the previous barrier
            __syncthreads();
            buf ^= 1;
        }
    }

#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int i = m0 + ty + 16 * a;
        if (i >= M) continue;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int jj = n0 + tx + 16 * b;
            if (jj < N) op.store(i, jj, acc[a][b]);
        }
    }
}

// Forward: A(co, p) = w[co * K + p]; B(p, j) = x[img, ci, oh*s - pad + r, ow*s - pad + q].
struct ConvFwdOp {
    const float* __restrict__ x;
    const float* __restrict__ w;
    float* __restrict__ y;
    Conv2dParams p;
    int K;
    struct Col {
        const float* img;  // x + img * c_in * h * w
        int ih0, iw0;
    };
    __device__ float a(int i, int k) const { return w[(size_t)i * K + k]; }
    __device__ Col col(int j) const {
        const int plane = p.h_out * p.w_out;
        const int img = j / plane, pix = j % plane;
        return Col{x + (size_t)img * p.c_in * p.h * p.w, (int)((pix / p.w_out) * p.stride) - (int)p.pad,
                   (int)((pix % p.w_out) * p.stride) - (int)p.pad};
    }
    __device__ float b(const Col& c, int k) const {
        const int khkw = p.kh * p.kw;
        const int ci = k / khkw, rs = k % khkw;
        const int ih = c.ih0 + rs / (int)p.kw, iw = c.iw0 + rs % (int)p.kw;
        if (ih < 0 || ih >= (int)p.h || iw < 0 || iw >= (int)p.w) return 0.0f;
        return c.img[((size_t)ci * p.h + ih) * p.w + iw];
    }
    __device__ void store(int co, int j, float v) const {
        const int plane = p.h_out * p.w_out;
        y[((size_t)(j / plane) * p.c_out + co) * plane + j % plane] = v;
    }
};

extern "C" __global__ void __launch_bounds__(CV_THREADS, 2) conv2d_fwd_v2(const float* __restrict__ x,
                                                                       const float* __restrict__ w,
                                                                       float* __restrict__ y, Conv2dParams p) {
    const ConvFwdOp op{x, w, y, p, (int)(p.c_in * p.kh * p.kw)};
    cv_tile(op, p.c_out, p.n * p.h_out * p.w_out, 0, op.K);
}

// Backward to the input: A(ci, (co, rs)) = w[co, ci, rs]; B((co, rs), (img, ih, iw)) =
// dy[img, co, oh, ow] where ih + pad - r = oh * stride (0 <= oh < h_out), else 0.
struct ConvBwdInputOp {
    const float* __restrict__ dy;
    const float* __restrict__ w;
    float* __restrict__ dx;
    Conv2dParams p;
    struct Col {
        const float* img;  // dy + img * c_out * h_out * w_out
        int th, tw;        // ih + pad, iw + pad
    };
    __device__ float a(int ci, int k) const {
        const int khkw = p.kh * p.kw;
        return w[((size_t)(k / khkw) * p.c_in + ci) * khkw + k % khkw];
    }
    __device__ Col col(int j) const {
        const int plane = p.h * p.w;
        const int img = j / plane, pix = j % plane;
        return Col{dy + (size_t)img * p.c_out * p.h_out * p.w_out, pix / (int)p.w + (int)p.pad,
                   pix % (int)p.w + (int)p.pad};
    }
    __device__ float b(const Col& c, int k) const {
        const int khkw = p.kh * p.kw;
        const int co = k / khkw, rs = k % khkw;
        const int th = c.th - rs / (int)p.kw, tw = c.tw - rs % (int)p.kw;
        const int st = (int)p.stride;
        if (th < 0 || tw < 0 || th % st != 0 || tw % st != 0) return 0.0f;
        const int oh = th / st, ow = tw / st;
        if (oh >= (int)p.h_out || ow >= (int)p.w_out) return 0.0f;
        return c.img[((size_t)co * p.h_out + oh) * p.w_out + ow];
    }
    __device__ void store(int ci, int j, float v) const {
        const int plane = p.h * p.w;
        dx[((size_t)(j / plane) * p.c_in + ci) * plane + j % plane] = v;
    }
};

extern "C" __global__ void __launch_bounds__(CV_THREADS, 2) conv2d_bwd_input_v2(const float* __restrict__ dy,
                                                                             const float* __restrict__ w,
                                                                             float* __restrict__ dx, Conv2dParams p) {
    const ConvBwdInputOp op{dy, w, dx, p};
    cv_tile(op, p.c_in, p.n * p.h * p.w, 0, p.c_out * p.kh * p.kw);
}

// Backward to the weights: A(co, (img, pix)) = dy[img, co, pix]; B((img, pix), (ci, r, s)) =
// x[img, ci, oh*s - pad + r, ow*s - pad + q]. Output: partial[z, co, (ci, r, s)].
struct ConvBwdWeightOp {
    const float* __restrict__ x;
    const float* __restrict__ dy;
    float* __restrict__ out;
    Conv2dParams p;
    struct Col {
        const float* chan;  // x + ci * h * w (the image offset is added per k)
        int r, s;
    };
    __device__ float a(int co, int k) const {
        const int plane = p.h_out * p.w_out;
        return dy[((size_t)(k / plane) * p.c_out + co) * plane + k % plane];
    }
    __device__ Col col(int j) const {
        const int khkw = p.kh * p.kw;
        const int ci = j / khkw, rs = j % khkw;
        return Col{x + (size_t)ci * p.h * p.w, rs / (int)p.kw, rs % (int)p.kw};
    }
    __device__ float b(const Col& c, int k) const {
        const int plane = p.h_out * p.w_out;
        const int img = k / plane, pix = k % plane;
        const int ih = (int)((pix / p.w_out) * p.stride) - (int)p.pad + c.r;
        const int iw = (int)((pix % p.w_out) * p.stride) - (int)p.pad + c.s;
        if (ih < 0 || ih >= (int)p.h || iw < 0 || iw >= (int)p.w) return 0.0f;
        return c.chan[((size_t)img * p.c_in * p.h + ih) * p.w + iw];
    }
    __device__ void store(int co, int j, float v) const { out[(size_t)co * (p.c_in * p.kh * p.kw) + j] = v; }
};

// grid.z = number of K chunks; chunk z covers [z * k_chunk, min(K, (z + 1) * k_chunk)) and
// writes partial + z * c_out * c_in * kh * kw. With one chunk, `partial` is dw itself.
extern "C" __global__ void __launch_bounds__(CV_THREADS, 2) conv2d_bwd_weight_v2(const float* __restrict__ x,
                                                                              const float* __restrict__ dy,
                                                                              float* __restrict__ partial,
                                                                              Conv2dParams p, unsigned k_chunk) {
    const int M = p.c_out, N = p.c_in * p.kh * p.kw, K = p.n * p.h_out * p.w_out;
    const int kbeg = blockIdx.z * k_chunk;
    const int kend = min(K, kbeg + (int)k_chunk);
    const ConvBwdWeightOp op{x, dy, partial + (size_t)blockIdx.z * M * N, p};
    cv_tile(op, M, N, kbeg, kend);
}

// partial viewed as [splits, len] (p.rows = splits, p.cols = len): dw[e] = sum over z, in
// order, of partial[z, e]. A fixed order, so deterministic.
extern "C" __global__ void conv2d_bwd_weight_v2_reduce(const float* __restrict__ partial, float* __restrict__ dw,
                                                       RowParams p) {
    PT_GRID_STRIDE(e, p.cols) {
        float acc = 0.0f;
        for (unsigned z = 0; z < p.rows; ++z) acc += partial[(size_t)z * p.cols + e];
        dw[e] = acc;
    }
}
