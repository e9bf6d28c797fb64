// rng.cu: Philox4x32-10 fills, bit-identical to perturb_core::rng for uniform and sign
// (normal goes through logf/cosf, whose last bits may differ from Rust's). Compiled with
// --fmad=false so a + (b - a) * u and a + b * z round as the Rust code does.
//
// Variants:
// - rng_fill_v1: one thread per Philox block (counter = offset + t): 4 outputs for uniform
//   and sign (element 4t + word), 2 for normal (words (0,1) -> element 2t, (2,3) -> 2t + 1).
#include "params.cuh"
#include "common.cuh"

#define PT_PHILOX_M0 0xD2511F53u
#define PT_PHILOX_M1 0xCD9E8D57u
#define PT_PHILOX_W0 0x9E3779B9u
#define PT_PHILOX_W1 0xBB67AE85u

// One Philox4x32-10 block: the same rounds as perturb_core::rng::philox4x32_10.
__device__ __forceinline__ uint4 pt_philox(uint4 c, uint2 k) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k.x += PT_PHILOX_W0;
            k.y += PT_PHILOX_W1;
        }
        const unsigned hi0 = __umulhi(PT_PHILOX_M0, c.x), lo0 = PT_PHILOX_M0 * c.x;
        const unsigned hi1 = __umulhi(PT_PHILOX_M1, c.z), lo1 = PT_PHILOX_M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

// 24 random bits as a float in [0, 1).
__device__ __forceinline__ float pt_unit(unsigned w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

extern "C" __global__ void rng_fill_v1(float* __restrict__ dst, RngParams p) {
    const unsigned long long offset = ((unsigned long long)p.ctr_hi << 32) | p.ctr_lo;
    const uint2 key = make_uint2(p.key_lo, p.key_hi);
    const unsigned per = p.dist == 1 ? 2u : 4u;  // outputs per block
    const unsigned blocks = (p.len + per - 1) / per;
    PT_GRID_STRIDE(t, blocks) {
        const unsigned long long ctr = offset + t;
        const uint4 r = pt_philox(make_uint4((unsigned)ctr, (unsigned)(ctr >> 32), 0u, 0u), key);
        if (p.dist == 1) {
            // Box-Muller; u1 in (0, 1] so the log is finite.
            const unsigned words[4] = {r.x, r.y, r.z, r.w};
            for (unsigned j = 0; j < 2; ++j) {
                const unsigned i = t * 2 + j;
                if (i >= p.len) break;
                const float u1 = (float)((words[2 * j] >> 8) + 1u) * (1.0f / 16777216.0f);
                const float u2 = pt_unit(words[2 * j + 1]);
                const float z = sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
                dst[i] = p.a + p.b * z;
            }
        } else {
            const unsigned words[4] = {r.x, r.y, r.z, r.w};
            for (unsigned j = 0; j < 4; ++j) {
                const unsigned i = t * 4 + j;
                if (i >= p.len) break;
                dst[i] = p.dist == 2 ? ((words[j] >> 31) == 0u ? p.a : -p.a) : p.a + (p.b - p.a) * pt_unit(words[j]);
            }
        }
    }
}
