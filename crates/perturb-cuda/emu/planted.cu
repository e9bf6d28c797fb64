// planted.cu: deliberately broken kernels, one bug each, that the race check must catch
// (tests/kernel_race.rs asserts it does; kernel_emu --plant NAME runs one). Test-only: not in
// kernels/, never compiled by NVRTC. Included by kernel_emu.cpp after its check() helpers.
//   missing_barrier  shared tile written, then a neighbour's slot read, no barrier between (TSan;
//                    in a plain build, a wrong result and, with --check --serial, runs that differ)
//   late_broadcast   thread 0 publishes a value in shared memory and the others read it after
//                    some work, with no barrier: right whenever thread 0 happens to run first
//                    (TSan; --check --serial: one of the two thread orders runs it last)
//   warp_sync        the pre-Volta warp-synchronous shared reduction, no barrier in the last
//                    32 lanes (TSan)
//   oob_global       reads one float past the end of its input (ASan heap-buffer-overflow)
//   oob_shared       96 threads index a 64-float shared array (ASan global-buffer-overflow)
//   halo_write       each block also writes the first word of the next block's range, with the
//                    right value, so only the cross-block write sets see it (--check)
//   cross_block_read each block adds the last output of the block before it (--check: the
//                    two block orders disagree)
//   writes_input     writes through a const input (--check)

extern "C" __global__ void planted_missing_barrier(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
    __shared__ float tile[64];
    const unsigned t = threadIdx.x, i = blockIdx.x * 64 + t;
    tile[t] = i < n ? x[i] : 0.0f;
    // __syncthreads();  <- the bug: the read below may see the previous block's tile
    if (i < n) y[i] = tile[t] + tile[(t + 1) % 64];
}

extern "C" __global__ void planted_late_broadcast(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
    __shared__ float base;
    const unsigned t = threadIdx.x, i = blockIdx.x * 64 + t;
    if (t == 0) base = x[blockIdx.x * 64];
    // __syncthreads();  <- the bug
    float acc = 0.0f;
    for (unsigned k = 0; k < n; ++k) acc += x[k] * (float)(k % 3);
    if (i < n) y[i] = acc + base;
}

extern "C" __global__ void planted_warp_sync(const float* __restrict__ x, float* __restrict__ out, unsigned n) {
    __shared__ float s[128];
    const unsigned t = threadIdx.x, i = blockIdx.x * 128 + t;
    s[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (t < 64) s[t] += s[t + 64];
    __syncthreads();
    if (t < 32) {  // the bug: assumes the warp runs in lockstep (no __syncwarp between steps)
        volatile float* v = s;
        v[t] += v[t + 32]; v[t] += v[t + 16]; v[t] += v[t + 8]; v[t] += v[t + 4]; v[t] += v[t + 2]; v[t] += v[t + 1];
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

extern "C" __global__ void planted_oob_global(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
    PT_GRID_STRIDE(i, n) y[i] = x[i] + x[i + 1];  // the bug: x[n] at the last element
}

// Through a pointer, as pt_block_sum takes its scratch, so only ASan (no bounds check) sees it.
__device__ __forceinline__ float planted_stage(float v) {
    __shared__ float stage[64];
    float* s = stage;
    s[threadIdx.x] = v;  // the bug: the block has 96 threads
    __syncthreads();
    return s[(threadIdx.x + 1) % 64];
}
extern "C" __global__ void planted_oob_shared(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = planted_stage(i < n ? x[i] : 0.0f);
    if (i < n) y[i] = v;
}

extern "C" __global__ void planted_halo_write(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i];
    const unsigned h = (blockIdx.x + 1) * blockDim.x;  // the bug: the next block's first word
    if (threadIdx.x == 0 && h < n) y[h] = 2.0f * x[h];
}

extern "C" __global__ void planted_cross_block_read(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    // the bug: the previous block's last output, which may or may not have been written yet
    const float carry = blockIdx.x > 0 ? y[blockIdx.x * blockDim.x - 1] : 0.0f;
    if (i < n) y[i] = x[i] + carry;
}

extern "C" __global__ void planted_writes_input(const float* __restrict__ x, float* __restrict__ y, unsigned n) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
    if (i == n / 2) const_cast<float*>(x)[i] = 0.0f;  // the bug
}

// Runs plant `name` against its intended result; false if there is no such plant.
bool run_plant(const std::string& name) {
    const unsigned n = 200;  // four 64-thread blocks, the last one partial
    auto x = rnd(n);
    Buf<float> y(n, NAN);
    std::vector<double> want(n);
    if (name == "missing_barrier") {
        for (unsigned i = 0; i < n; ++i) { unsigned j = i / 64 * 64 + (i % 64 + 1) % 64; want[i] = x[i] + (j < n ? x[j] : 0.0f); }
        LAUNCH(planted_missing_barrier, {cdiv(n, 64)}, {64}, x, y, n);
    } else if (name == "late_broadcast") {
        double acc = 0; for (unsigned k = 0; k < n; ++k) acc += (float)(x[k] * (float)(k % 3));
        for (unsigned i = 0; i < n; ++i) want[i] = acc + x[i / 64 * 64];
        LAUNCH(planted_late_broadcast, {cdiv(n, 64)}, {64}, x, y, n);
    } else if (name == "warp_sync") {
        Buf<float> out(cdiv(n, 128), NAN); std::vector<double> s(out.size(), 0.0);
        for (unsigned i = 0; i < n; ++i) s[i / 128] += x[i];
        LAUNCH(planted_warp_sync, {cdiv(n, 128)}, {128}, x, out, n);
        check("planted_warp_sync", out, s, 1e-5);
        return true;
    } else if (name == "oob_global") {
        for (unsigned i = 0; i < n; ++i) want[i] = x[i] + (i + 1 < n ? x[i + 1] : 0.0f);
        LAUNCH(planted_oob_global, {cdiv(n, 64)}, {64}, x, y, n);
    } else if (name == "oob_shared") {
        for (unsigned i = 0; i < n; ++i) { unsigned j = i / 96 * 96 + (i % 96 + 1) % 64; want[i] = j < n ? x[j] : 0.0f; }
        LAUNCH(planted_oob_shared, {cdiv(n, 96)}, {96}, x, y, n);
    } else if (name == "halo_write") {
        for (unsigned i = 0; i < n; ++i) want[i] = 2.0 * x[i];
        LAUNCH(planted_halo_write, {cdiv(n, 64)}, {64}, x, y, n);
    } else if (name == "cross_block_read") {
        Buf<float> acc(n, 0.0f); double carry = 0;
        for (unsigned i = 0; i < n; ++i) { if (i % 64 == 0 && i > 0) carry = want[i - 1]; want[i] = x[i] + carry; }
        LAUNCH(planted_cross_block_read, {cdiv(n, 64)}, {64}, x, emu::inout(acc), n);
        check("planted_cross_block_read", acc, want, 1e-6);
        return true;
    } else if (name == "writes_input") {
        for (unsigned i = 0; i < n; ++i) want[i] = x[i];
        LAUNCH(planted_writes_input, {cdiv(n, 64)}, {64}, x, y, n);
    } else {
        return false;
    }
    check(("planted_" + name).c_str(), y, want, 1e-6);
    return true;
}
