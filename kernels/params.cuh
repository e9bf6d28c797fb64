// params.cuh: the op parameter structs, mirrored byte for byte from perturb-core's ops.rs.
// Each is passed to a kernel by value. The static_asserts pin every size and field offset;
// a Rust test (perturb-cuda, `header_layout_matches_rust`) reads these same lines and checks
// them against size_of / offset_of on the Rust side, so a field added on one side only fails
// both the NVRTC compile and the Rust test.
#pragma once

// Field offsets without offsetof: CUDA 12's NVRTC has neither <cstddef> nor __builtin_offsetof
// (13's has both), so one definition that both accept derives each offset from declaration
// order. Every field is one 4-byte word (pt_word_offset checks it per field), and a struct
// whose size is 4 x its field count has no padding (pt_probe<T> brace-initialises exactly
// sizeof(T)/4 fields, so a padded struct fails to compile), so the k-th field sits at 4k.
// pt_probe<T>() is a T whose k-th field holds k.
template <unsigned... I> struct PtIndex {};
template <unsigned N, unsigned... I> struct PtMakeIndex : PtMakeIndex<N - 1, N - 1, I...> {};
template <unsigned... I> struct PtMakeIndex<0, I...> { using type = PtIndex<I...>; };
template <class T, unsigned... I> __device__ constexpr T pt_probe_from(PtIndex<I...>) { return T{I...}; }
template <class T> __device__ constexpr T pt_probe() {
    static_assert(sizeof(T) % 4 == 0, "a params struct is a whole number of 4-byte words");
    return pt_probe_from<T>(typename PtMakeIndex<sizeof(T) / 4>::type{});
}
template <unsigned FieldBytes, class V> __device__ constexpr unsigned pt_word_offset(V position) {
    static_assert(FieldBytes == 4, "every params field is one 4-byte word");
    return static_cast<unsigned>(position) * 4u;
}
#define PT_OFFSET(T, f) pt_word_offset<sizeof(T::f)>(pt_probe<T>().f)

struct Conv2dParams {
    unsigned n, c_in, h, w, c_out, kh, kw, stride, pad, h_out, w_out, _pad0;
};
static_assert(sizeof(Conv2dParams) == 48, "Conv2dParams size");
static_assert(PT_OFFSET(Conv2dParams, c_in) == 4, "Conv2dParams.c_in");
static_assert(PT_OFFSET(Conv2dParams, h) == 8, "Conv2dParams.h");
static_assert(PT_OFFSET(Conv2dParams, w) == 12, "Conv2dParams.w");
static_assert(PT_OFFSET(Conv2dParams, c_out) == 16, "Conv2dParams.c_out");
static_assert(PT_OFFSET(Conv2dParams, kh) == 20, "Conv2dParams.kh");
static_assert(PT_OFFSET(Conv2dParams, kw) == 24, "Conv2dParams.kw");
static_assert(PT_OFFSET(Conv2dParams, stride) == 28, "Conv2dParams.stride");
static_assert(PT_OFFSET(Conv2dParams, pad) == 32, "Conv2dParams.pad");
static_assert(PT_OFFSET(Conv2dParams, h_out) == 36, "Conv2dParams.h_out");
static_assert(PT_OFFSET(Conv2dParams, w_out) == 40, "Conv2dParams.w_out");

struct LinearParams {
    unsigned m, k, n, _pad0;
};
static_assert(sizeof(LinearParams) == 16, "LinearParams size");
static_assert(PT_OFFSET(LinearParams, k) == 4, "LinearParams.k");
static_assert(PT_OFFSET(LinearParams, n) == 8, "LinearParams.n");

struct BiasParams {
    unsigned outer, channels, inner, _pad0;
};
static_assert(sizeof(BiasParams) == 16, "BiasParams size");
static_assert(PT_OFFSET(BiasParams, channels) == 4, "BiasParams.channels");
static_assert(PT_OFFSET(BiasParams, inner) == 8, "BiasParams.inner");

struct Pool2dParams {
    unsigned n, c, h, w, k, stride, h_out, w_out;
};
static_assert(sizeof(Pool2dParams) == 32, "Pool2dParams size");
static_assert(PT_OFFSET(Pool2dParams, c) == 4, "Pool2dParams.c");
static_assert(PT_OFFSET(Pool2dParams, h) == 8, "Pool2dParams.h");
static_assert(PT_OFFSET(Pool2dParams, w) == 12, "Pool2dParams.w");
static_assert(PT_OFFSET(Pool2dParams, k) == 16, "Pool2dParams.k");
static_assert(PT_OFFSET(Pool2dParams, stride) == 20, "Pool2dParams.stride");
static_assert(PT_OFFSET(Pool2dParams, h_out) == 24, "Pool2dParams.h_out");
static_assert(PT_OFFSET(Pool2dParams, w_out) == 28, "Pool2dParams.w_out");

struct XentParams {
    unsigned n, classes;
    float grad_scale;
    unsigned _pad0;
};
static_assert(sizeof(XentParams) == 16, "XentParams size");
static_assert(PT_OFFSET(XentParams, classes) == 4, "XentParams.classes");
static_assert(PT_OFFSET(XentParams, grad_scale) == 8, "XentParams.grad_scale");

struct EltParams {
    unsigned len;
    float a, b;
    unsigned _pad0;
};
static_assert(sizeof(EltParams) == 16, "EltParams size");
static_assert(PT_OFFSET(EltParams, a) == 4, "EltParams.a");
static_assert(PT_OFFSET(EltParams, b) == 8, "EltParams.b");

struct RowParams {
    unsigned rows, cols, _pad0, _pad1;
};
static_assert(sizeof(RowParams) == 16, "RowParams size");
static_assert(PT_OFFSET(RowParams, cols) == 4, "RowParams.cols");

struct StepParams {
    unsigned n, d;
    float alpha, eps, lo, hi;
    unsigned _pad0, _pad1;
};
static_assert(sizeof(StepParams) == 32, "StepParams size");
static_assert(PT_OFFSET(StepParams, d) == 4, "StepParams.d");
static_assert(PT_OFFSET(StepParams, alpha) == 8, "StepParams.alpha");
static_assert(PT_OFFSET(StepParams, eps) == 12, "StepParams.eps");
static_assert(PT_OFFSET(StepParams, lo) == 16, "StepParams.lo");
static_assert(PT_OFFSET(StepParams, hi) == 20, "StepParams.hi");

struct SgdParams {
    unsigned len;
    float lr, momentum, weight_decay;
    unsigned nesterov, _pad0, _pad1, _pad2;
};
static_assert(sizeof(SgdParams) == 32, "SgdParams size");
static_assert(PT_OFFSET(SgdParams, lr) == 4, "SgdParams.lr");
static_assert(PT_OFFSET(SgdParams, momentum) == 8, "SgdParams.momentum");
static_assert(PT_OFFSET(SgdParams, weight_decay) == 12, "SgdParams.weight_decay");
static_assert(PT_OFFSET(SgdParams, nesterov) == 16, "SgdParams.nesterov");

struct AdamParams {
    unsigned len;
    float lr, beta1, beta2, eps, weight_decay, bc1, bc2;
    unsigned decoupled, _pad0, _pad1, _pad2;
};
static_assert(sizeof(AdamParams) == 48, "AdamParams size");
static_assert(PT_OFFSET(AdamParams, lr) == 4, "AdamParams.lr");
static_assert(PT_OFFSET(AdamParams, beta1) == 8, "AdamParams.beta1");
static_assert(PT_OFFSET(AdamParams, beta2) == 12, "AdamParams.beta2");
static_assert(PT_OFFSET(AdamParams, eps) == 16, "AdamParams.eps");
static_assert(PT_OFFSET(AdamParams, weight_decay) == 20, "AdamParams.weight_decay");
static_assert(PT_OFFSET(AdamParams, bc1) == 24, "AdamParams.bc1");
static_assert(PT_OFFSET(AdamParams, bc2) == 28, "AdamParams.bc2");
static_assert(PT_OFFSET(AdamParams, decoupled) == 32, "AdamParams.decoupled");

struct RngParams {
    unsigned len, key_lo, key_hi, ctr_lo, ctr_hi, dist;
    float a, b;
};
static_assert(sizeof(RngParams) == 32, "RngParams size");
static_assert(PT_OFFSET(RngParams, key_lo) == 4, "RngParams.key_lo");
static_assert(PT_OFFSET(RngParams, key_hi) == 8, "RngParams.key_hi");
static_assert(PT_OFFSET(RngParams, ctr_lo) == 12, "RngParams.ctr_lo");
static_assert(PT_OFFSET(RngParams, ctr_hi) == 16, "RngParams.ctr_hi");
static_assert(PT_OFFSET(RngParams, dist) == 20, "RngParams.dist");
static_assert(PT_OFFSET(RngParams, a) == 24, "RngParams.a");
static_assert(PT_OFFSET(RngParams, b) == 28, "RngParams.b");
