// kernel_emu.cpp: runs every kernel variant of kernels/*.cu on the CPU emulator
// (cuda_emu.h) against plain double-precision loops, and prints the RNG fills for the Rust
// side to compare bit for bit with perturb_core::rng (tests/kernel_emu.rs builds and runs this).
// Shapes are small and awkward: sizes off multiples of the tiles, padding, stride 2 and 3,
// batch 1, ties. Launch geometry mirrors the Rust launchers (ops_nn.rs, ops_vec.rs).
// Options (tests/kernel_race.rs passes them; tests/kernel_emu.rs runs the default: the full
// shapes, blocks in grid order, threads concurrent):
//   --check            race-check every launch (cuda_emu.h: two opposite block orders,
//                      cross-block write sets, const inputs unchanged)
//   --serial           threads of a block one at a time in a seeded order (cuda_emu.h; not
//                      under TSan, whose build it would blind)
//   --seed N           seed of the block and thread orders (default 1)
//   --small            the small shape set (for the sanitizer builds)
//   --only G,G         run only these groups (linear, linear_tf32, conv, pool, xent, elt, bias,
//                      rows, steps, optim, rng)
//   --drop-barrier F:L skip the __syncthreads() at line L of kernels/F (a mutation)
//   --list-barriers    print each barrier site reached, with its group
//   --plant NAME       run one deliberately broken kernel of planted.cu instead
#include "cuda_emu.h"
#include "params.cuh"
#include "common.cuh"
#include "gemm.cu"
#include "conv2d.cu"
#include "pool.cu"
#include "softmax_xent.cu"
#include "elementwise.cu"
#include "reduce.cu"
#include "attack_step.cu"
#include "optim.cu"
#include "rng.cu"
#include <random>
#include <string>
using emu::Buf;

static int failures = 0;
static std::mt19937 rng_(1234);
Buf<float> rnd(size_t n, float lo = -1, float hi = 1) {
    std::uniform_real_distribution<float> d(lo, hi); Buf<float> v(n); for (auto& x : v) x = d(rng_); return v;
}
Buf<float> ties(size_t n) { auto v = rnd(n, -2, 2); for (auto& x : v) x = std::round(x * 4) / 4; return v; }
void check(const char* what, const Buf<float>& got, const std::vector<double>& want, double tol) {
    double worst = 0; size_t wi = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        double e = std::fabs(got[i] - want[i]) / (tol + tol * std::fabs(want[i]));
        if (!(e <= worst)) { worst = e; wi = i; }
    }
    bool ok = worst <= 1.0;
    if (!ok) failures++;
    printf("%s %-48s worst %.3g of tol at %zu (got %.7g want %.7g)\n", ok ? "ok  " : "FAIL", what, worst, wi, got.empty() ? 0.0 : got[wi], want.empty() ? 0.0 : want[wi]);
}
unsigned cdiv(unsigned a, unsigned b) { return (a + b - 1) / b; }

void test_linear(int m, int k, int n) {
    auto x = rnd(m * k), w = rnd(n * k), dy = rnd(m * n);
    std::vector<double> y(m * n), dx(m * k), dw(n * k);
    for (int i = 0; i < m; ++i) for (int j = 0; j < n; ++j) { double a = 0; for (int p = 0; p < k; ++p) a += (double)x[i*k+p] * w[j*k+p]; y[i*n+j] = a; }
    for (int i = 0; i < m; ++i) for (int j = 0; j < k; ++j) { double a = 0; for (int p = 0; p < n; ++p) a += (double)dy[i*n+p] * w[p*k+j]; dx[i*k+j] = a; }
    for (int i = 0; i < n; ++i) for (int j = 0; j < k; ++j) { double a = 0; for (int p = 0; p < m; ++p) a += (double)dy[p*n+i] * x[p*k+j]; dw[i*k+j] = a; }
    LinearParams p{(unsigned)m, (unsigned)k, (unsigned)n, 0};
    char name[128];
    for (int v = 1; v <= 2; ++v) {
        Buf<float> oy(m * n, NAN), odx(m * k, NAN), odw(n * k, NAN);
        if (v == 1) {
            LAUNCH(linear_fwd_v1, {cdiv(n, 16), cdiv(m, 16)}, {16, 16}, x, w, oy, p);
            LAUNCH(linear_bwd_input_v1, {cdiv(k, 16), cdiv(m, 16)}, {16, 16}, dy, w, odx, p);
            LAUNCH(linear_bwd_weight_v1, {cdiv(k, 16), cdiv(n, 16)}, {16, 16}, x, dy, odw, p);
        } else {
            LAUNCH(linear_fwd_v2, {cdiv(n, 128), cdiv(m, 128)}, {256}, x, w, oy, p);
            LAUNCH(linear_bwd_input_v2, {cdiv(k, 128), cdiv(m, 128)}, {256}, dy, w, odx, p);
            LAUNCH(linear_bwd_weight_v2, {cdiv(k, 128), cdiv(n, 128)}, {256}, x, dy, odw, p);
        }
        snprintf(name, sizeof name, "linear_fwd_v%d %dx%dx%d", v, m, k, n); check(name, oy, y, 1e-5 * std::sqrt(k) + 1e-6);
        snprintf(name, sizeof name, "linear_bwd_input_v%d %dx%dx%d", v, m, k, n); check(name, odx, dx, 1e-5 * std::sqrt(n) + 1e-6);
        snprintf(name, sizeof name, "linear_bwd_weight_v%d %dx%dx%d", v, m, k, n); check(name, odw, dw, 1e-5 * std::sqrt(m) + 1e-6);
    }
}

void test_linear_tf32(int m, int k, int n) {
    auto x = rnd(m * k), w = rnd(n * k), dy = rnd(m * n);
    std::vector<double> y(m * n), dx(m * k), dw(n * k);
    for (int i = 0; i < m; ++i) for (int j = 0; j < n; ++j) { double a = 0; for (int p = 0; p < k; ++p) a += (double)x[i*k+p] * w[j*k+p]; y[i*n+j] = a; }
    for (int i = 0; i < m; ++i) for (int j = 0; j < k; ++j) { double a = 0; for (int p = 0; p < n; ++p) a += (double)dy[i*n+p] * w[p*k+j]; dx[i*k+j] = a; }
    for (int i = 0; i < n; ++i) for (int j = 0; j < k; ++j) { double a = 0; for (int p = 0; p < m; ++p) a += (double)dy[p*n+i] * x[p*k+j]; dw[i*k+j] = a; }
    LinearParams p{(unsigned)m, (unsigned)k, (unsigned)n, 0};
    Buf<float> oy(m * n, NAN), odx(m * k, NAN), odw(n * k, NAN);
    LAUNCH(linear_fwd_v3, {cdiv(n, 64), cdiv(m, 64)}, {128}, x, w, oy, p);
    LAUNCH(linear_bwd_input_v3, {cdiv(k, 64), cdiv(m, 64)}, {128}, dy, w, odx, p);
    LAUNCH(linear_bwd_weight_v3, {cdiv(k, 64), cdiv(n, 64)}, {128}, x, dy, odw, p);
    char name[128];
    snprintf(name, sizeof name, "linear_fwd_v3 (tf32) %dx%dx%d", m, k, n); check(name, oy, y, 1e-3 * std::sqrt(k));
    snprintf(name, sizeof name, "linear_bwd_input_v3 (tf32) %dx%dx%d", m, k, n); check(name, odx, dx, 1e-3 * std::sqrt(n));
    snprintf(name, sizeof name, "linear_bwd_weight_v3 (tf32) %dx%dx%d", m, k, n); check(name, odw, dw, 1e-3 * std::sqrt(m));
}

void test_conv(unsigned n, unsigned ci, unsigned h, unsigned w, unsigned co, unsigned kh, unsigned kw, unsigned s, unsigned pad) {
    unsigned ho = (h + 2*pad - kh) / s + 1, wo = (w + 2*pad - kw) / s + 1;
    Conv2dParams p{n, ci, h, w, co, kh, kw, s, pad, ho, wo, 0};
    auto x = rnd(n*ci*h*w), wt = rnd(co*ci*kh*kw), dy = rnd(n*co*ho*wo);
    std::vector<double> y(n*co*ho*wo), dx(n*ci*h*w, 0.0), dw(co*ci*kh*kw, 0.0);
    for (unsigned b = 0; b < n; ++b) for (unsigned o = 0; o < co; ++o) for (unsigned oh = 0; oh < ho; ++oh) for (unsigned ow = 0; ow < wo; ++ow) {
        double a = 0;
        for (unsigned c = 0; c < ci; ++c) for (unsigned r = 0; r < kh; ++r) for (unsigned q = 0; q < kw; ++q) {
            int ih = (int)(oh*s + r) - (int)pad, iw = (int)(ow*s + q) - (int)pad;
            if (ih < 0 || iw < 0 || ih >= (int)h || iw >= (int)w) continue;
            size_t xi = ((b*ci + c)*h + ih)*w + iw, wi = ((o*ci + c)*kh + r)*kw + q;
            double g = dy[((b*co + o)*ho + oh)*wo + ow];
            a += (double)x[xi] * wt[wi];
            dx[xi] += g * wt[wi];
            dw[wi] += g * x[xi];
        }
        y[((b*co + o)*ho + oh)*wo + ow] = a;
    }
    char name[160];
    unsigned yl = n*co*ho*wo, xl = n*ci*h*w, wl = co*ci*kh*kw;
    for (int v = 1; v <= 2; ++v) {
        Buf<float> oy(yl, NAN), odx(xl, NAN), odw(wl, NAN);
        if (v == 1) {
            LAUNCH(conv2d_fwd_v1, {cdiv(yl, 256)}, {256}, x, wt, oy, p);
            LAUNCH(conv2d_bwd_input_v1, {cdiv(xl, 256)}, {256}, dy, wt, odx, p);
            LAUNCH(conv2d_bwd_weight_v1, {cdiv(wl, 256)}, {256}, x, dy, odw, p);
        } else {
            LAUNCH(conv2d_fwd_v2, {cdiv(n*ho*wo, 64), cdiv(co, 64)}, {256}, x, wt, oy, p);
            LAUNCH(conv2d_bwd_input_v2, {cdiv(n*h*w, 64), cdiv(ci, 64)}, {256}, dy, wt, odx, p);
            // split-K as the host does it, forced to several chunks
            unsigned K = n*ho*wo, M = co, N = ci*kh*kw;
            unsigned splits_want = std::max(1u, std::min(4u, K / 16));
            unsigned chunk = cdiv(cdiv(K, splits_want), 16) * 16; unsigned splits = cdiv(K, chunk);
            Buf<float> part(splits * wl, NAN);
            LAUNCH(conv2d_bwd_weight_v2, {cdiv(N, 64), cdiv(M, 64), splits}, {256}, x, dy, part, p, chunk);
            RowParams rp{splits, wl, 0, 0};
            LAUNCH(conv2d_bwd_weight_v2_reduce, {cdiv(wl, 256)}, {256}, part, odw, rp);
        }
        snprintf(name, sizeof name, "conv2d_fwd_v%d [%u,%u,%u,%u]x[%u,%u,%u,%u] s%u p%u", v, n, ci, h, w, co, ci, kh, kw, s, pad);
        check(name, oy, y, 1e-5 * std::sqrt(ci*kh*kw) + 1e-6);
        snprintf(name, sizeof name, "conv2d_bwd_input_v%d s%u p%u k%ux%u", v, s, pad, kh, kw); check(name, odx, dx, 1e-5 * std::sqrt(co*kh*kw) + 1e-6);
        snprintf(name, sizeof name, "conv2d_bwd_weight_v%d s%u p%u k%ux%u", v, s, pad, kh, kw); check(name, odw, dw, 1e-5 * std::sqrt(n*ho*wo) + 1e-6);
    }
}

void test_pool(unsigned n, unsigned c, unsigned h, unsigned w, unsigned k, unsigned s) {
    unsigned ho = (h - k) / s + 1, wo = (w - k) / s + 1;
    Pool2dParams p{n, c, h, w, k, s, ho, wo};
    auto x = ties(n*c*h*w), dy = rnd(n*c*ho*wo);
    std::vector<double> y(n*c*ho*wo), dx(n*c*h*w, 0.0);
    for (unsigned pl = 0; pl < n*c; ++pl) for (unsigned oh = 0; oh < ho; ++oh) for (unsigned ow = 0; ow < wo; ++ow) {
        size_t best = pl*h*w + oh*s*w + ow*s;
        for (unsigned r = 0; r < k; ++r) for (unsigned q = 0; q < k; ++q) { size_t i = pl*h*w + (oh*s+r)*w + ow*s+q; if (x[i] > x[best]) best = i; }
        y[(pl*ho + oh)*wo + ow] = x[best]; dx[best] += dy[(pl*ho + oh)*wo + ow];
    }
    Buf<float> oy(y.size(), NAN), odx(dx.size(), NAN);
    LAUNCH(maxpool2d_fwd_v1, {cdiv(oy.size(), 256)}, {256}, x, oy, p);
    LAUNCH(maxpool2d_bwd_v1, {cdiv(odx.size(), 256)}, {256}, dy, x, odx, p);
    char name[128]; snprintf(name, sizeof name, "maxpool2d_fwd_v1 h%u w%u k%u s%u", h, w, k, s); check(name, oy, y, 1e-12);
    snprintf(name, sizeof name, "maxpool2d_bwd_v1 h%u w%u k%u s%u", h, w, k, s); check(name, odx, dx, 1e-6);
}

void test_xent(unsigned n, unsigned c, float range) {
    auto z = rnd(n*c, -range, range); Buf<unsigned> lab(n); for (unsigned i = 0; i < n; ++i) lab[i] = (i * 7 + 3) % c;
    float scale = 1.0f / n;
    std::vector<double> loss(n), dz(n*c);
    for (unsigned i = 0; i < n; ++i) { double mx = -1e30; for (unsigned j = 0; j < c; ++j) mx = std::max(mx, (double)z[i*c+j]);
        double s = 0; for (unsigned j = 0; j < c; ++j) s += std::exp(z[i*c+j] - mx);
        loss[i] = std::log(s) + mx - z[i*c+lab[i]];
        for (unsigned j = 0; j < c; ++j) dz[i*c+j] = (std::exp(z[i*c+j]-mx)/s - (j == lab[i])) * scale; }
    Buf<float> ol(n, NAN), od(n*c, NAN); Buf<unsigned> err(1, 0u);
    XentParams p{n, c, scale, 0};
    LAUNCH(softmax_xent_v1, {cdiv(n, 8)}, {256}, z, lab, ol, od, emu::atomic(err), p);
    char name[96]; snprintf(name, sizeof name, "softmax_xent_v1 loss %ux%u", n, c); check(name, ol, loss, 1e-5);
    snprintf(name, sizeof name, "softmax_xent_v1 dlogits %ux%u", n, c); check(name, od, dz, 1e-5);
    if (err[0]) { failures++; printf("FAIL err flag set\n"); }
    lab[n-1] = c; LAUNCH(softmax_xent_v1, {cdiv(n, 8)}, {256}, z, lab, ol, od, emu::atomic(err), p);
    if (err[0] != 1 || !std::isnan(ol[n-1]) || std::isnan(ol[0])) { failures++; printf("FAIL bad label handling\n"); } else printf("ok   bad label sets the flag, NaN row\n");
}

void test_elt(unsigned n) {
    auto x = ties(n), y = rnd(n);
    EltParams p{n, 0.75f, -1.5f, 0};
    std::vector<double> r(n), rb(n), ax(n), mu(n);
    for (unsigned i = 0; i < n; ++i) { r[i] = std::max(x[i], 0.0f); rb[i] = x[i] > 0 ? y[i] : 0; ax[i] = 0.75f*x[i] + -1.5f*y[i]; mu[i] = x[i]*y[i]; }
    Buf<float> o(n, NAN);
    unsigned g = cdiv(n/4 + 1, 256);
    char name[64];
    LAUNCH(relu_fwd_v1, {g}, {256}, x, o, p); snprintf(name, 64, "relu_fwd_v1 %u", n); check(name, o, r, 1e-12);
    LAUNCH(relu_bwd_v1, {g}, {256}, y, x, o, p); snprintf(name, 64, "relu_bwd_v1 %u", n); check(name, o, rb, 1e-12);
    LAUNCH(axpby_v1, {g}, {256}, x, y, o, p); snprintf(name, 64, "axpby_v1 %u", n); check(name, o, ax, 1e-7);
    LAUNCH(mul_v1, {g}, {256}, x, y, o, p); snprintf(name, 64, "mul_v1 %u", n); check(name, o, mu, 1e-7);
}

void test_bias(unsigned o_, unsigned c, unsigned in) {
    auto y = rnd(o_*c*in), b = rnd(c);
    BiasParams p{o_, c, in, 0};
    std::vector<double> ya(y.size()), db(c, 0.0);
    for (size_t i = 0; i < y.size(); ++i) { ya[i] = y[i] + b[(i / in) % c]; db[(i / in) % c] += y[i]; }
    Buf<float> o(y.size(), NAN), od(c, NAN);
    LAUNCH(bias_add_v1, {cdiv(y.size(), 256)}, {256}, y, b, o, p);
    LAUNCH(bias_grad_v1, {c}, {256}, y, od, p);
    check("bias_add_v1", o, ya, 1e-7); check("bias_grad_v1", od, db, 1e-5 * std::sqrt(o_ * in));
}

void test_rows(unsigned r, unsigned c) {
    auto x = ties(r*c); RowParams p{r, c, 0, 0};
    std::vector<double> s(r, 0.0), am(r);
    for (unsigned i = 0; i < r; ++i) { unsigned b = 0; for (unsigned j = 0; j < c; ++j) { s[i] += x[i*c+j]; if (x[i*c+j] > x[i*c+b]) b = j; } am[i] = b; }
    Buf<float> o(r, NAN); Buf<unsigned> oa(r, 12345);
    LAUNCH(sum_rows_v1, {cdiv(r, 8)}, {256}, x, o, p);
    LAUNCH(argmax_rows_v1, {cdiv(r, 8)}, {256}, x, oa, p);
    Buf<float> oaf(oa.begin(), oa.end());
    char name[64]; snprintf(name, 64, "sum_rows_v1 %ux%u", r, c); check(name, o, s, 1e-5 * std::sqrt(c));
    snprintf(name, 64, "argmax_rows_v1 %ux%u", r, c); check(name, oaf, am, 1e-12);
}

void test_steps(unsigned n, unsigned d) {
    auto x0 = rnd(n*d, 0, 1), g = ties(n*d); Buf<float> x(n*d); auto noise = rnd(n*d, -0.05, 0.05);
    for (size_t i = 0; i < x.size(); ++i) x[i] = x0[i] + noise[i];
    if (n > 1) std::fill(g.begin(), g.begin() + d, 0.0f);
    auto sgn = [](float v) { return v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f; };
    StepParams p{n, d, 0.02f, 0.03f, 0.0f, 1.0f, 0, 0};
    std::vector<double> es(n*d), el(n*d), e2(n*d);
    for (size_t i = 0; i < x.size(); ++i) {
        es[i] = std::min(std::max(x[i] + p.alpha * sgn(g[i]), p.lo), p.hi);
        float v = x[i] + p.alpha * sgn(g[i]); v = std::min(std::max(v, x0[i] - p.eps), x0[i] + p.eps);
        el[i] = std::min(std::max(v, p.lo), p.hi);
    }
    StepParams p2{n, d, 0.5f, 0.1f, 0.0f, 1.0f, 0, 0};
    for (unsigned e = 0; e < n; ++e) {
        double gg = 0; for (unsigned i = 0; i < d; ++i) gg += (double)g[e*d+i]*g[e*d+i]; double gn = std::sqrt(gg);
        std::vector<double> s(d); double dd = 0;
        for (unsigned i = 0; i < d; ++i) { s[i] = gn > 0 ? x[e*d+i] + p2.alpha * g[e*d+i] / gn : x[e*d+i]; dd += (s[i]-x0[e*d+i])*(s[i]-x0[e*d+i]); }
        double f = std::min(1.0, p2.eps / std::sqrt(dd));
        for (unsigned i = 0; i < d; ++i) e2[e*d+i] = std::min(std::max(x0[e*d+i] + (s[i]-x0[e*d+i])*f, 0.0), 1.0);
    }
    unsigned g4 = cdiv(n*d/4 + 1, 256);
    auto xs = x; LAUNCH(sign_step_v1, {g4}, {256}, emu::inout(xs), g, p); check("sign_step_v1", xs, es, 1e-12);
    auto xl = x; LAUNCH(step_project_linf_v1, {g4}, {256}, emu::inout(xl), g, x0, p); check("step_project_linf_v1", xl, el, 1e-12);
    auto x2 = x; LAUNCH(step_project_l2_v1, {n}, {128}, emu::inout(x2), g, x0, p2); check("step_project_l2_v1", x2, e2, 1e-5);
}

void test_optim(unsigned n) {
    auto w = rnd(n), g = rnd(n), m = rnd(n, -0.5, 0.5), v = rnd(n, 0, 0.01);
    SgdParams sp{n, 0.05f, 0.9f, 5e-4f, 1, 0, 0, 0};
    std::vector<double> ew(n), em(n);
    for (unsigned i = 0; i < n; ++i) { float gi = g[i] + sp.weight_decay * w[i]; float mi = sp.momentum * m[i] + gi; em[i] = mi; ew[i] = w[i] - sp.lr * (gi + sp.momentum * mi); }
    auto w1 = w, m1 = m; LAUNCH(sgd_update_v1, {cdiv(n, 256)}, {256}, emu::inout(w1), g, emu::inout(m1), sp);
    check("sgd_update_v1 w", w1, ew, 1e-7); check("sgd_update_v1 m", m1, em, 1e-7);
    AdamParams ap{n, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 1 - 0.9f*0.9f, 1 - 0.999f*0.999f, 1, 0, 0, 0};
    std::vector<double> aw(n), am(n), av(n);
    for (unsigned i = 0; i < n; ++i) { double wi = w[i] * (1.0 - 1e-3 * 1e-2); double mi = 0.9*m[i] + 0.1*g[i]; double vi = 0.999*v[i] + 0.001*(double)g[i]*g[i];
        am[i] = mi; av[i] = vi; aw[i] = wi - 1e-3 * (mi / ap.bc1) / (std::sqrt(vi / ap.bc2) + 1e-8); }
    auto w2 = w, m2 = m, v2 = v; LAUNCH(adam_update_v1, {cdiv(n, 256)}, {256}, emu::inout(w2), g, emu::inout(m2), emu::inout(v2), ap);
    check("adam_update_v1 w", w2, aw, 1e-5); check("adam_update_v1 m", m2, am, 1e-5); check("adam_update_v1 v", v2, av, 1e-5);
}

void test_rng() {
    uint4 r = pt_philox(make_uint4(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), make_uint2(0xa4093822, 0x299f31d0));
    bool ok = r.x == 0xd16cfe09 && r.y == 0x94fdcceb && r.z == 0x5001e420 && r.w == 0x24126ea1;
    uint4 r0 = pt_philox(make_uint4(0, 0, 0, 0), make_uint2(0, 0));
    ok = ok && r0.x == 0x6627e8d5 && r0.y == 0xe169c58d && r0.z == 0xbc57ac4c && r0.w == 0x9b00dbd8;
    printf("%s philox known answers\n", ok ? "ok  " : "FAIL"); if (!ok) failures++;
    // dump a fill for comparison with the Rust reference
    for (unsigned dist = 0; dist < 3; ++dist) {
        unsigned len = 11; Buf<float> o(len, NAN);
        unsigned long long seed = 0xDEADBEEF0123ull, off = 1ull << 33;
        RngParams p{len, (unsigned)seed, (unsigned)(seed >> 32), (unsigned)off, (unsigned)(off >> 32), dist, dist == 2 ? 0.25f : (dist == 0 ? -1.0f : 0.5f), dist == 0 ? 3.0f : 2.0f};
        LAUNCH(rng_fill_v1, {1}, {256}, o, p);
        printf("rng dist %u:", dist); for (float f : o) printf(" %08x", *(unsigned*)&f); printf("\n");
    }
}

#include "planted.cu"

static std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out; size_t b = 0;
    while (b <= s.size()) { size_t e = s.find(',', b); if (e == std::string::npos) e = s.size(); if (e > b) out.push_back(s.substr(b, e - b)); b = e + 1; }
    return out;
}

int main(int argc, char** argv) {
    bool small = false; std::vector<std::string> only; std::string plant;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto val = [&]() -> std::string { if (i + 1 >= argc) { fprintf(stderr, "%s needs a value\n", a.c_str()); exit(2); } return argv[++i]; };
        if (a == "--check") emu::cfg.check = true;
        else if (a == "--serial") emu::cfg.serial = true;
        else if (a == "--small") small = true;
        else if (a == "--list-barriers") emu::cfg.list_barriers = true;
        else if (a == "--seed") emu::cfg.seed = std::stoull(val());
        else if (a == "--only") only = split(val());
        else if (a == "--plant") plant = val();
        else if (a == "--drop-barrier") {
            std::string v = val(); size_t c = v.rfind(':');
            if (c == std::string::npos) { fprintf(stderr, "--drop-barrier wants FILE:LINE\n"); return 2; }
            emu::cfg.drop_file = v.substr(0, c); emu::cfg.drop_line = std::stoi(v.substr(c + 1));
        } else { fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
    }
    printf("emu: check %d serial %d seed %llu small %d drop %s:%d\n", emu::cfg.check, emu::cfg.serial,
           (unsigned long long)emu::cfg.seed, small, emu::cfg.drop_file.c_str(), emu::cfg.drop_line);
    // Selects a group: sets the name used in messages and barrier lists.
    auto want = [&](const char* g) {
        if (!plant.empty() || (!only.empty() && std::find(only.begin(), only.end(), g) == only.end())) return false;
        emu::cfg.group = g; return true;
    };
    if (!plant.empty()) {
        emu::cfg.group = "plant " + plant;
        if (!run_plant(plant)) { fprintf(stderr, "unknown plant %s\n", plant.c_str()); return 2; }
    }
    if (small) {
        // Every variant on a few awkward shapes, small enough for ThreadSanitizer: tails off the
        // tiles, one row, odd channel counts, several blocks per grid, several k-steps per tile.
        if (want("linear")) { test_linear(1, 5, 3); test_linear(130, 20, 9); test_linear(9, 36, 133); }
        if (want("linear_tf32")) test_linear_tf32(5, 18, 66);
        if (want("conv")) { test_conv(2, 3, 11, 13, 5, 3, 3, 1, 1); test_conv(1, 4, 9, 10, 6, 4, 3, 2, 1); test_conv(2, 3, 5, 6, 4, 3, 3, 3, 2); test_conv(1, 70, 3, 3, 66, 1, 1, 1, 0); }
        if (want("pool")) { test_pool(2, 3, 9, 9, 2, 2); test_pool(1, 2, 7, 8, 3, 2); test_pool(1, 1, 4, 4, 4, 1); }
        if (want("xent")) { test_xent(17, 10, 5); test_xent(5, 70, 2); test_xent(9, 7, 60); }
        if (want("elt")) for (unsigned n : {1u, 37u, 1029u}) test_elt(n);
        if (want("bias")) { test_bias(3, 5, 7); test_bias(2, 3, 45); }
        if (want("rows")) { test_rows(1, 1); test_rows(5, 3); test_rows(17, 70); }
        if (want("steps")) { test_steps(1, 37); test_steps(3, 150); }
        if (want("optim")) test_optim(300);
    } else {
        if (want("linear")) { test_linear(1, 5, 3); test_linear(7, 33, 17); test_linear(300, 20, 9); test_linear(64, 100, 10); test_linear(130, 36, 133); test_linear(129, 8, 256); }
        if (want("linear_tf32")) { test_linear_tf32(7, 33, 17); test_linear_tf32(70, 20, 65); test_linear_tf32(64, 100, 10); }
        if (want("conv")) {
            test_conv(2, 3, 11, 13, 5, 3, 3, 1, 1); test_conv(1, 4, 9, 10, 6, 4, 3, 2, 1); test_conv(3, 7, 17, 15, 9, 5, 5, 2, 2);
            test_conv(5, 6, 8, 9, 4, 1, 1, 1, 0); test_conv(2, 3, 5, 6, 4, 3, 3, 3, 2); test_conv(1, 1, 28, 28, 16, 4, 4, 2, 1); test_conv(2, 70, 6, 6, 66, 3, 3, 1, 1);
        }
        if (want("pool")) { test_pool(2, 3, 9, 9, 2, 2); test_pool(1, 2, 7, 8, 3, 2); test_pool(2, 1, 6, 5, 3, 1); test_pool(3, 2, 11, 10, 2, 3); test_pool(1, 1, 4, 4, 4, 1); }
        if (want("xent")) { test_xent(17, 10, 5); test_xent(5, 1000, 2); test_xent(33, 7, 60); }
        if (want("elt")) for (unsigned n : {1u, 37u, 1000u, 4099u}) test_elt(n);
        if (want("bias")) { test_bias(3, 5, 7); test_bias(2, 16, 576); }
        if (want("rows")) { test_rows(1, 1); test_rows(5, 3); test_rows(300, 70); test_rows(2, 9000); }
        if (want("steps")) { test_steps(1, 37); test_steps(4, 300); test_steps(3, 784); }
        if (want("optim")) test_optim(1000);
    }
    if (want("rng")) test_rng();
    for (const std::string& s : emu::barrier_sites) printf("barrier-site %s\n", s.c_str());
    printf("launched:"); for (const std::string& k : emu::launched) printf(" %s", k.c_str()); printf("\n");
    if (emu::findings) printf("%d race-check finding(s)\n", emu::findings);
    failures += emu::findings;
    printf("%d failure(s)\n", failures);
    return failures != 0;
}
