// optim.cu: optimiser updates, in place, one thread per parameter (grid-stride). Compiled
// with --fmad=false so each update rounds as the CPU reference's Rust code does.
//
// Variants:
// - sgd_update_v1: PyTorch SGD, dampening 0: g' = g + wd * w; m = momentum * m + g';
//   w -= lr * (nesterov ? g' + momentum * m : m).
// - adam_update_v1: PyTorch Adam (decoupled = 0: g += wd * w) or AdamW (decoupled = 1:
//   w *= 1 - lr * wd first); m, v moments; w -= lr * (m / bc1) / (sqrt(v / bc2) + eps).
#include "params.cuh"
#include "common.cuh"

extern "C" __global__ void sgd_update_v1(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                                         SgdParams p) {
    PT_GRID_STRIDE(i, p.len) {
        const float wi = w[i];
        const float gi = g[i] + p.weight_decay * wi;
        const float mi = p.momentum * m[i] + gi;
        m[i] = mi;
        const float step = p.nesterov ? gi + p.momentum * mi : mi;
        w[i] = wi - p.lr * step;
    }
}

extern "C" __global__ void adam_update_v1(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                                          float* __restrict__ v, AdamParams p) {
    PT_GRID_STRIDE(i, p.len) {
        float wi = w[i];
        float gi = g[i];
        if (p.decoupled) {
            wi = wi * (1.0f - p.lr * p.weight_decay);
        } else {
            gi = gi + p.weight_decay * wi;
        }
        const float mi = p.beta1 * m[i] + (1.0f - p.beta1) * gi;
        const float vi = p.beta2 * v[i] + (1.0f - p.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float m_hat = mi / p.bc1;
        const float v_hat = vi / p.bc2;
        w[i] = wi - p.lr * m_hat / (sqrtf(v_hat) + p.eps);
    }
}
