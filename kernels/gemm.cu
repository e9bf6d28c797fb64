// gemm.cu: the linear layer's three products as one C[M, N] = A · B template, M x N output,
// K reduction, row-major everywhere. How A and B are stored is a template flag:
//   A_KC: A(i, p) = A[i * lda + p] (k contiguous), else A[p * lda + i] (i contiguous);
//   B_KC: B(p, j) = B[j * ldb + p] (k contiguous), else B[p * ldb + j] (j contiguous).
// linear_fwd:        y[m, n]  = x[m, k] · w[n, k]^T   M=m N=n K=k  A=x (KC)  B=w (KC)
// linear_bwd_input:  dx[m, k] = dy[m, n] · w[n, k]    M=m N=k K=n  A=dy (KC) B=w (JC)
// linear_bwd_weight: dw[n, k] = dy[m, n]^T · x[m, k]  M=n N=k K=m  A=dy (IC) B=x (JC)
// Every output is summed by one thread in k order, so results are deterministic.
//
// Variants:
// - v1 naive: one thread per output, 16x16 blocks, operands straight from global memory.
// - v2 shared-memory tiles: 128x128 block tile, k-step 8, 256 threads each owning an 8x8
//   register block (two 4x4 quadrants 64 apart, so shared reads are float4 and conflict-free),
//   float4 global loads where the leading dimension allows, double-buffered shared memory
//   with one barrier per k-step.
// - v3 tensor cores (sm_80+): TF32 mma.sync m16n8k8, 64x64 block tile, k-step 16, 4 warps of
//   32x32; inputs rounded to TF32 (10-bit mantissa), f32 accumulation. Needs its own, wider
//   tolerance; not promoted. Below sm_80 the mma falls back to its reference semantics in
//   shuffles (for the CPU emulator; the host does not launch v3 there).
#include "params.cuh"
#include "common.cuh"

// ---- v1 ---------------------------------------------------------------------------------

template <bool A_KC, bool B_KC>
__device__ __forceinline__ void gemm_naive(const float* __restrict__ A, const float* __restrict__ B,
                                           float* __restrict__ C, int M, int N, int K, int lda, int ldb) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= M || j >= N) return;
    float acc = 0.0f;
    for (int p = 0; p < K; ++p) {
        const float a = A_KC ? A[(size_t)i * lda + p] : A[(size_t)p * lda + i];
        const float b = B_KC ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
        acc += a * b;
    }
    C[(size_t)i * N + j] = acc;
}

extern "C" __global__ void linear_fwd_v1(const float* x, const float* w, float* y, LinearParams p) {
    gemm_naive<true, true>(x, w, y, p.m, p.n, p.k, p.k, p.k);
}
extern "C" __global__ void linear_bwd_input_v1(const float* dy, const float* w, float* dx, LinearParams p) {
    gemm_naive<true, false>(dy, w, dx, p.m, p.k, p.n, p.n, p.k);
}
extern "C" __global__ void linear_bwd_weight_v1(const float* x, const float* dy, float* dw, LinearParams p) {
    gemm_naive<false, false>(dy, x, dw, p.n, p.k, p.m, p.n, p.k);
}

// ---- v2 ---------------------------------------------------------------------------------

#define G2_BM 128
#define G2_BN 128
#define G2_BK 8
#define G2_THREADS 256

// Loads one BK x 128 slice of an operand into registers (4 values per thread) as float4 when
// the leading dimension and the bounds allow, else as bounded scalars (zeros outside).
// KC: element (r, p) at X[r * ld + p], r in [r0, r0+128), p in [k0, k0+8); thread t loads
//     r = t / 2, p = 4 * (t % 2) .. +3.
// !KC: element (r, p) at X[p * ld + r]; thread t loads p = t / 32, r = 4 * (t % 32) .. +3.
template <bool KC>
__device__ __forceinline__ float4 g2_load(const float* __restrict__ X, int ld, int R, int K, int r0, int k0) {
    const int t = threadIdx.x;
    float v[4];
    if (KC) {
        const int r = r0 + t / 2, p = k0 + 4 * (t % 2);
        if ((ld & 3) == 0 && r < R && p + 3 < K) {
            return *reinterpret_cast<const float4*>(X + (size_t)r * ld + p);
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) v[c] = (r < R && p + c < K) ? X[(size_t)r * ld + p + c] : 0.0f;
    } else {
        const int p = k0 + t / 32, r = r0 + 4 * (t % 32);
        if (p >= K) return make_float4(0.f, 0.f, 0.f, 0.f);
        const float* row = X + (size_t)p * ld + r;
        if ((ld & 3) == 0 && r + 3 < R) return *reinterpret_cast<const float4*>(row);
#pragma unroll
        for (int c = 0; c < 4; ++c) v[c] = r + c < R ? row[c] : 0.0f;
    }
    return make_float4(v[0], v[1], v[2], v[3]);
}

// Stores a thread's loaded values into the k-major shared tile S[BK][128].
template <bool KC>
__device__ __forceinline__ void g2_store(float (*S)[G2_BM], float4 v) {
    const int t = threadIdx.x;
    if (KC) {
        const int r = t / 2, p = 4 * (t % 2);
        S[p + 0][r] = v.x;
        S[p + 1][r] = v.y;
        S[p + 2][r] = v.z;
        S[p + 3][r] = v.w;
    } else {
        *reinterpret_cast<float4*>(&S[t / 32][4 * (t % 32)]) = v;
    }
}

template <bool A_KC, bool B_KC>
__device__ __forceinline__ void gemm_tiled(const float* __restrict__ A, const float* __restrict__ B,
                                           float* __restrict__ C, int M, int N, int K, int lda, int ldb) {
    __shared__ __align__(16) float As[2][G2_BK][G2_BM];
    __shared__ __align__(16) float Bs[2][G2_BK][G2_BN];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.y * G2_BM, n0 = blockIdx.x * G2_BN;

    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    g2_store<A_KC>(As[0], g2_load<A_KC>(A, lda, M, K, m0, 0));
    g2_store<B_KC>(Bs[0], g2_load<B_KC>(B, ldb, N, K, n0, 0));
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += G2_BK) {
        const bool more = k0 + G2_BK < K;
        float4 na = make_float4(0.f, 0.f, 0.f, 0.f), nb = na;
        if (more) {  // issue the next tile's global loads before computing on this one
            na = g2_load<A_KC>(A, lda, M, K, m0, k0 + G2_BK);
            nb = g2_load<B_KC>(B, ldb, N, K, n0, k0 + G2_BK);
        }
#pragma unroll
        for (int kk = 0; kk < G2_BK; ++kk) {
            const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
            const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][kk][64 + ty * 4]);
            const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
            const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][64 + tx * 4]);
            const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        if (more) {
            // The other buffer was last read before the previous barrier, so it is free.
            g2_store<A_KC>(As[buf ^ 1], na);
            g2_store<B_KC>(Bs[buf ^ 1], nb);
            __syncthreads();
            buf ^= 1;
        }
    }

    const bool vec = (N & 3) == 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int row = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
        if (row >= M) continue;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int col = n0 + h * 64 + tx * 4;
            float* dst = C + (size_t)row * N + col;
            if (vec && col + 3 < N) {
                *reinterpret_cast<float4*>(dst) =
                    make_float4(acc[i][h * 4], acc[i][h * 4 + 1], acc[i][h * 4 + 2], acc[i][h * 4 + 3]);
            } else {
#pragma unroll
                for (int c = 0; c < 4; ++c)
                    if (col + c < N) dst[c] = acc[i][h * 4 + c];
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(G2_THREADS, 2)
    linear_fwd_v2(const float* x, const float* w, float* y, LinearParams p) {
    gemm_tiled<true, true>(x, w, y, p.m, p.n, p.k, p.k, p.k);
}
extern "C" __global__ void __launch_bounds__(G2_THREADS, 2)
    linear_bwd_input_v2(const float* dy, const float* w, float* dx, LinearParams p) {
    gemm_tiled<true, false>(dy, w, dx, p.m, p.k, p.n, p.n, p.k);
}
extern "C" __global__ void __launch_bounds__(G2_THREADS, 2)
    linear_bwd_weight_v2(const float* x, const float* dy, float* dw, LinearParams p) {
    gemm_tiled<false, false>(dy, x, dw, p.n, p.k, p.m, p.n, p.k);
}

// ---- v3 ---------------------------------------------------------------------------------

#define G3_BM 64
#define G3_BN 64
#define G3_BK 16
#define G3_THREADS 128
#define G3_PAD 4  // row stride 20 floats: the fragment reads below hit 32 distinct banks

// f32 -> TF32 (10-bit mantissa), round to nearest, ties away from zero.
__device__ __forceinline__ unsigned g3_tf32(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
    return r;
#else
    // The same rounding in integer arithmetic (finite inputs), for the CPU emulator.
    return (__float_as_uint(f) + 0x1000u) & 0xffffe000u;
#endif
}

// d += A (16x8, row-major) * B (8x8, col-major), one warp, fragments as in the PTX ISA for
// mma.m16n8k8 .tf32: lane = 4 g + q holds a = {A[g][q], A[g+8][q], A[g][q+4], A[g+8][q+4]},
// b = {B[q][g], B[q+4][g]}, d = {D[g][2q], D[g][2q+1], D[g+8][2q], D[g+8][2q+1]}.
__device__ __forceinline__ void g3_mma(float d[4], const unsigned a[4], const unsigned b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    // Reference semantics through shuffles: what the CPU emulator runs (and what the host
    // never launches below sm_80). Register indices are warp-uniform, source lanes are not.
    const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int row = g + (r >= 2 ? 8 : 0), col = 2 * q + (r & 1);
        float acc = d[r];
        for (int k = 0; k < 8; ++k) {
            const int ai = (r >= 2 ? 1 : 0) + (k >= 4 ? 2 : 0), bi = k >= 4 ? 1 : 0;
            const float av = __uint_as_float(__shfl_sync(PT_FULL_MASK, a[ai], (row % 8) * 4 + k % 4));
            const float bv = __uint_as_float(__shfl_sync(PT_FULL_MASK, b[bi], col * 4 + k % 4));
            acc = fmaf(av, bv, acc);
        }
        d[r] = acc;
    }
#endif
}

// Fills S[64][BK + PAD] (row r = output row or column, k contiguous) with zeros outside.
template <bool KC>
__device__ __forceinline__ void g3_fill(float (*S)[G3_BK + G3_PAD], const float* __restrict__ X, int ld, int R, int K,
                                        int r0, int k0) {
    for (int e = threadIdx.x; e < G3_BM * G3_BK; e += G3_THREADS) {
        // KC: consecutive threads walk k (contiguous in memory); else they walk r.
        const int r = KC ? e / G3_BK : e % G3_BM;
        const int p = KC ? e % G3_BK : e / G3_BM;
        const int gr = r0 + r, gp = k0 + p;
        float v = 0.0f;
        if (gr < R && gp < K) v = KC ? X[(size_t)gr * ld + gp] : X[(size_t)gp * ld + gr];
        S[r][p] = v;
    }
}

template <bool A_KC, bool B_KC>
__device__ __forceinline__ void gemm_tf32(const float* __restrict__ A, const float* __restrict__ B,
                                          float* __restrict__ C, int M, int N, int K, int lda, int ldb) {
    __shared__ __align__(16) float As[G3_BM][G3_BK + G3_PAD];
    __shared__ __align__(16) float Bs[G3_BN][G3_BK + G3_PAD];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, q = lane % 4;  // mma fragment coordinates: group and thread-in-group
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    const int m0 = blockIdx.y * G3_BM, n0 = blockIdx.x * G3_BN;

    // acc[mi][ni][r]: 16x8 tile (mi, ni) of the warp's 32x32, register r per the m16n8 layout.
    float acc[2][4][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[a][b][r] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += G3_BK) {
        g3_fill<A_KC>(As, A, lda, M, K, m0, k0);
        g3_fill<B_KC>(Bs, B, ldb, N, K, n0, k0);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < G3_BK; kk += 8) {
            unsigned af[2][4], bf[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const int r = wm + mi * 16 + g;
                af[mi][0] = g3_tf32(As[r][kk + q]);
                af[mi][1] = g3_tf32(As[r + 8][kk + q]);
                af[mi][2] = g3_tf32(As[r][kk + q + 4]);
                af[mi][3] = g3_tf32(As[r + 8][kk + q + 4]);
            }
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                const int c = wn + ni * 8 + g;
                bf[ni][0] = g3_tf32(Bs[c][kk + q]);
                bf[ni][1] = g3_tf32(Bs[c][kk + q + 4]);
            }
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) g3_mma(acc[mi][ni], af[mi], bf[ni]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int row = m0 + wm + mi * 16 + g + (r >= 2 ? 8 : 0);
                const int col = n0 + wn + ni * 8 + 2 * q + (r & 1);
                if (row < M && col < N) C[(size_t)row * N + col] = acc[mi][ni][r];
            }
}

extern "C" __global__ void __launch_bounds__(G3_THREADS)
    linear_fwd_v3(const float* x, const float* w, float* y, LinearParams p) {
    gemm_tf32<true, true>(x, w, y, p.m, p.n, p.k, p.k, p.k);
}
extern "C" __global__ void __launch_bounds__(G3_THREADS)
    linear_bwd_input_v3(const float* dy, const float* w, float* dx, LinearParams p) {
    gemm_tf32<true, false>(dy, w, dx, p.m, p.k, p.n, p.n, p.k);
}
extern "C" __global__ void __launch_bounds__(G3_THREADS)
    linear_bwd_weight_v3(const float* x, const float* dy, float* dw, LinearParams p) {
    gemm_tf32<false, false>(dy, x, dw, p.n, p.k, p.m, p.n, p.k);
}
