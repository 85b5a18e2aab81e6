/* tests/test_optim.c - reductions (ab_l2_norm, ab_dot), AdamW, gradient clipping and the SAM-style
 * step, against independent double / long double references, on every ISA path this machine runs.
 *
 * Error metrics (each bound is stated next to its assertion):
 *   - reductions: the library accumulates in double and rounds to float once, so the result must
 *     be within a few float ulp of the exact sum (long double reference).
 *   - AdamW: the float state is compared with a double-precision AdamW written from the math
 *     (PyTorch's form: p *= 1 - lr*wd, then p -= lr*mhat/(sqrt(vhat)+eps)), errors measured
 *     relative to the magnitude each quantity accumulates (no division by a cancelled value).
 *   - SAM step: theta' = theta + rho*g/(||g|| + AB_SAM_EPS) per element, error relative to
 *     |theta'| + |step|.
 */
#include "testutil.h"
#include <float.h>
#include <limits.h>

#define REL_ULP ((double)FLT_EPSILON) /* 2^-23: one float ulp at 1.0, as a relative size */

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                        */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Values of mixed magnitude: random sign, mantissa in [1, 2), exponent in [-emax, emax]. */
static void fill_mixed(float *x, size_t n, int emax, ab_rng *rng) {
    for (size_t i = 0; i < n; i++) {
        float mant = 1.0f + ab_rng_uniform(rng);
        int e = (int)ab_rng_below(rng, (uint32_t)(2 * emax + 1)) - emax;
        float v = ldexpf(mant, e);
        x[i] = (ab_rng_u32(rng) & 1u) ? -v : v;
    }
}

static long double ref_sumsq(const float *x, size_t n) {
    long double s = 0.0L;
    for (size_t i = 0; i < n; i++) s += (long double)x[i] * (long double)x[i];
    return s;
}

/* Returns sum x*y; *abs_sum gets sum |x*y| (the scale of the rounding error of any summation). */
static long double ref_dot(const float *x, const float *y, size_t n, long double *abs_sum) {
    long double s = 0.0L, a = 0.0L;
    for (size_t i = 0; i < n; i++) {
        long double p = (long double)x[i] * (long double)y[i];
        s += p;
        a += fabsl(p);
    }
    if (abs_sum) *abs_sum = a;
    return s;
}

static double ref_norm(const float *x, size_t n) { return (double)sqrtl(ref_sumsq(x, n)); }

/* The lengths the brief asks for: around the SIMD widths and the reduction block. */
static size_t reduce_lengths(size_t *out) {
    size_t n = 0;
    out[n++] = 0;
    out[n++] = 1;
    out[n++] = 15;
    out[n++] = 16;
    out[n++] = 17;
    out[n++] = AB_REDUCE_BLOCK - 1;
    out[n++] = AB_REDUCE_BLOCK;
    out[n++] = AB_REDUCE_BLOCK + 1;
    out[n++] = 3 * AB_REDUCE_BLOCK + 7;
    out[n++] = TU_SIZE(300001, 20011);
    return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* ab_l2_norm / ab_dot                                                                            */

static void test_l2_norm_vs_reference(void **state) {
    (void)state;
    size_t lens[16];
    size_t n_lens = reduce_lengths(lens);
    size_t max_n = lens[n_lens - 1];
    float *x = tu_alloc(max_n);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double worst = 0.0;
        for (size_t li = 0; li < n_lens; li++) {
            size_t n = lens[li];
            ab_rng_seed(&rng, 100 + li, 1);
            fill_mixed(x, n, 20, &rng);
            float got = -1.0f;
            assert_int_equal(ab_l2_norm(x, n, &got), AB_OK);
            double want = ref_norm(x, n);
            if (n == 0) {
                assert_true(got == 0.0f);
                continue;
            }
            if (n == 1) assert_true(got == fabsf(x[0])); /* sqrt(x^2) is exact */
            double e = fabs((double)got - want) / want;
            tu_worst(&worst, e);
        }
        char what[96];
        snprintf(what, sizeof what, "l2_norm vs long double [%s]", ab_isa_name(isas[ii]));
        /* one rounding to float (0.5 ulp) plus the double accumulation: allow 2 ulp */
        TU_ASSERT_ERR(what, worst, 2.0 * REL_ULP);
    }
    free(x);
}

static void test_dot_vs_reference(void **state) {
    (void)state;
    size_t lens[16];
    size_t n_lens = reduce_lengths(lens);
    size_t max_n = lens[n_lens - 1];
    float *x = tu_alloc(max_n), *y = tu_alloc(max_n);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double worst = 0.0;
        for (size_t li = 0; li < n_lens; li++) {
            size_t n = lens[li];
            ab_rng_seed(&rng, 200 + li, 2);
            fill_mixed(x, n, 20, &rng);
            fill_mixed(y, n, 12, &rng);
            float got = -1.0f;
            assert_int_equal(ab_dot(x, y, n, &got), AB_OK);
            long double abs_sum;
            long double want = ref_dot(x, y, n, &abs_sum);
            if (n == 0) {
                assert_true(got == 0.0f);
                continue;
            }
            if (n == 1) assert_true(got == x[0] * y[0]); /* the product fits in a double */
            /* relative to the result, with a floor far below any float ulp of it: a summation in
             * double can only err by ~n * 2^-53 * sum|x y|, which 2^-36 covers for n < 2^17 per
             * block-sum and any n here. */
            double e = (double)(fabsl((long double)got - want) / (fabsl(want) + 0x1p-36L * abs_sum));
            tu_worst(&worst, e);
        }
        char what[96];
        snprintf(what, sizeof what, "dot vs long double [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, worst, 2.0 * REL_ULP);
    }
    free(x);
    free(y);
}

/* Squares of 1e30 overflow float and squares of 1e-30 underflow it: only a double accumulation
 * (the documented contract) gets these right. Future SIMD kernels must keep it. */
static void test_reduce_extreme_magnitudes(void **state) {
    (void)state;
    enum { N = 1000 };
    float *big = tu_alloc(N), *tiny = tu_alloc(N);
    for (size_t i = 0; i < N; i++) {
        big[i] = (i & 1) ? -1e30f : 1e30f;
        tiny[i] = (i & 1) ? -1e-30f : 1e-30f;
    }
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        float nb, nt, db, dt;
        assert_int_equal(ab_l2_norm(big, N, &nb), AB_OK);
        assert_int_equal(ab_l2_norm(tiny, N, &nt), AB_OK);
        assert_int_equal(ab_dot(big, big, N, &db), AB_OK); /* 1e63: overflows float -> +inf */
        assert_int_equal(ab_dot(tiny, big, N, &dt), AB_OK); /* signs match: every product ~ +1 */
        double e = 0.0;
        e = fmax(e, fabs(nb - ref_norm(big, N)) / ref_norm(big, N));
        e = fmax(e, fabs(nt - ref_norm(tiny, N)) / ref_norm(tiny, N));
        long double abs_sum;
        long double want_dt = ref_dot(tiny, big, N, &abs_sum);
        e = fmax(e, (double)(fabsl((long double)dt - want_dt) / fabsl(want_dt)));
        char what[96];
        snprintf(what, sizeof what, "l2/dot extreme magnitudes [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, e, 2.0 * REL_ULP);
        assert_true(isinf(db) && db > 0.0f); /* the exact 1e63 rounds to +inf in float */
    }
    free(big);
    free(tiny);
}

/* NaN/Inf anywhere (head, a block boundary, the tail) must reach the result: clipping and the SAM
 * step rely on a non-finite norm to detect them. */
static void test_reduce_nonfinite_propagates(void **state) {
    (void)state;
    size_t n = 2 * AB_REDUCE_BLOCK + 13;
    size_t pos[] = {0, 7, AB_REDUCE_BLOCK - 1, AB_REDUCE_BLOCK, n - 1};
    float *x = tu_alloc(n), *y = tu_alloc(n);
    ab_rng rng;
    ab_rng_seed(&rng, 5, 5);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        for (size_t k = 0; k < sizeof pos / sizeof pos[0]; k++) {
            tu_fill_uniform(x, n, -1.0f, 1.0f, &rng);
            tu_fill_uniform(y, n, -1.0f, 1.0f, &rng);
            float nrm, dot;
            x[pos[k]] = NAN;
            assert_int_equal(ab_l2_norm(x, n, &nrm), AB_OK);
            assert_int_equal(ab_dot(x, y, n, &dot), AB_OK);
            assert_true(isnan(nrm));
            assert_true(isnan(dot));
            x[pos[k]] = INFINITY;
            assert_int_equal(ab_l2_norm(x, n, &nrm), AB_OK);
            assert_true(isinf(nrm));
        }
    }
    free(x);
    free(y);
}

/* Same call twice, the same data at another address (malloc alignment varies between runs), and
 * 1 vs 2 threads: bitwise identical on one ISA path. */
static void test_reduce_bitwise_reproducible(void **state) {
    (void)state;
    size_t n = TU_SIZE(250007, 3 * AB_REDUCE_BLOCK + 5);
    float *x = tu_alloc(n + 16), *y = tu_alloc(n + 16);
    ab_rng rng;
    ab_rng_seed(&rng, 7, 7);
    fill_mixed(x, n, 10, &rng);
    fill_mixed(y, n, 10, &rng);
    float *xs = tu_alloc(n + 16), *ys = tu_alloc(n + 16);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        assert_int_equal(ab_set_threads(1), AB_OK);
        float n1, n2, d1, d2;
        assert_int_equal(ab_l2_norm(x, n, &n1), AB_OK);
        assert_int_equal(ab_l2_norm(x, n, &n2), AB_OK);
        assert_int_equal(ab_dot(x, y, n, &d1), AB_OK);
        assert_int_equal(ab_dot(x, y, n, &d2), AB_OK);
        assert_int_equal(f2u(n1), f2u(n2));
        assert_int_equal(f2u(d1), f2u(d2));
        for (size_t off = 1; off < 16; off += 3) { /* shifted copies: 4, 16, 28, ... bytes */
            memcpy(xs + off, x, n * sizeof(float));
            memcpy(ys + off, y, n * sizeof(float));
            float ns, ds;
            assert_int_equal(ab_l2_norm(xs + off, n, &ns), AB_OK);
            assert_int_equal(ab_dot(xs + off, ys + off, n, &ds), AB_OK);
            assert_int_equal(f2u(ns), f2u(n1));
            assert_int_equal(f2u(ds), f2u(d1));
        }
#ifndef AB_NO_THREADS
        assert_int_equal(ab_set_threads(2), AB_OK);
        float nt, dt;
        assert_int_equal(ab_l2_norm(x, n, &nt), AB_OK);
        assert_int_equal(ab_dot(x, y, n, &dt), AB_OK);
        assert_int_equal(f2u(nt), f2u(n1));
        assert_int_equal(f2u(dt), f2u(d1));
        /* the whole SAM step too: it reduces, then updates */
        float *t1 = tu_alloc(n), *t2 = tu_alloc(n);
        memcpy(t1, y, n * sizeof(float));
        memcpy(t2, y, n * sizeof(float));
        float g1, g2;
        assert_int_equal(ab_set_threads(1), AB_OK);
        assert_int_equal(ab_sam_step(t1, NULL, x, n, -0.1f, &g1), AB_OK);
        assert_int_equal(ab_set_threads(2), AB_OK);
        assert_int_equal(ab_sam_step(t2, NULL, x, n, -0.1f, &g2), AB_OK);
        assert_int_equal(f2u(g1), f2u(g2));
        assert_memory_equal(t1, t2, n * sizeof(float));
        free(t1);
        free(t2);
#endif
    }
    free(x);
    free(y);
    free(xs);
    free(ys);
}

static void test_reduce_errors(void **state) {
    (void)state;
    float x[4] = {1, 2, 3, 4}, out = 5.0f;
    assert_int_equal(ab_l2_norm(x, 4, NULL), AB_ERR_NULL);
    assert_int_equal(ab_l2_norm(NULL, 4, &out), AB_ERR_NULL);
    assert_int_equal(ab_dot(x, x, 4, NULL), AB_ERR_NULL);
    assert_int_equal(ab_dot(NULL, x, 4, &out), AB_ERR_NULL);
    assert_int_equal(ab_dot(x, NULL, 4, &out), AB_ERR_NULL);
    /* n == 0: no data needed, result 0 */
    out = 5.0f;
    assert_int_equal(ab_l2_norm(NULL, 0, &out), AB_OK);
    assert_true(out == 0.0f);
    out = 5.0f;
    assert_int_equal(ab_dot(NULL, NULL, 0, &out), AB_OK);
    assert_true(out == 0.0f);
    assert_int_equal(ab_l2_norm(x, 4, &out), AB_OK);
    assert_true(out == sqrtf(30.0f));
    assert_int_equal(ab_dot(x, x, 4, &out), AB_OK);
    assert_true(out == 30.0f);
}

/* ---------------------------------------------------------------------------------------------- */
/* AdamW                                                                                          */

typedef struct {
    double *p, *m, *v;
    double *p_scale, *m_scale; /* sums of magnitudes: the natural scale of rounding errors */
} adam_ref;

/* One AdamW step in double, PyTorch's formulation (torch.optim.AdamW, non-amsgrad):
 *   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)                                */
static void ref_adamw_step(adam_ref *r, const float *g, size_t n, int t, const ab_adamw_cfg *c) {
    double lr = c->lr, b1 = c->beta1, b2 = c->beta2, eps = c->eps, wd = c->weight_decay;
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    for (size_t i = 0; i < n; i++) {
        double gi = g[i];
        double decay = lr * wd * r->p[i];
        r->p[i] -= decay;
        r->m[i] = b1 * r->m[i] + (1.0 - b1) * gi;
        r->v[i] = b2 * r->v[i] + (1.0 - b2) * gi * gi;
        r->m_scale[i] = b1 * r->m_scale[i] + (1.0 - b1) * fabs(gi);
        double denom = sqrt(r->v[i]) / sqrt(bc2) + eps;
        double upd = (lr / bc1) * r->m[i] / denom;
        r->p[i] -= upd;
        r->p_scale[i] += fabs(decay) + fabs(upd);
    }
}

static void run_adamw_case(ab_adamw_cfg cfg, const char *label, uint64_t seed) {
    size_t n = TU_SIZE(4099, 515);
    const int steps = 10;
    float *p = tu_alloc(n), *m = tu_alloc(n), *v = tu_alloc(n), *g = tu_alloc(n);
    adam_ref r;
    r.p = calloc(n, sizeof(double));
    r.m = calloc(n, sizeof(double));
    r.v = calloc(n, sizeof(double));
    r.p_scale = calloc(n, sizeof(double));
    r.m_scale = calloc(n, sizeof(double));
    assert_non_null(r.p);
    assert_non_null(r.m);
    assert_non_null(r.v);
    assert_non_null(r.p_scale);
    assert_non_null(r.m_scale);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        ab_rng rng;
        ab_rng_seed(&rng, seed, 3);
        fill_mixed(p, n, 3, &rng);
        memset(m, 0, n * sizeof(float));
        memset(v, 0, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            r.p[i] = p[i];
            r.m[i] = r.v[i] = r.m_scale[i] = 0.0;
            r.p_scale[i] = fabs((double)p[i]);
        }
        for (int t = 1; t <= steps; t++) {
            /* gradients of mixed magnitude (2^-12 .. 2^13), signs changing between steps, some 0 */
            fill_mixed(g, n, 12, &rng);
            for (size_t i = 0; i < n; i += 97) g[i] = 0.0f;
            assert_int_equal(ab_adamw_step(p, g, m, v, n, t, &cfg), AB_OK);
            ref_adamw_step(&r, g, n, t, &cfg);
        }
        double ep = 0.0, em = 0.0, ev = 0.0;
        for (size_t i = 0; i < n; i++) {
            ep = fmax(ep, fabs(p[i] - r.p[i]) / r.p_scale[i]);
            if (r.m_scale[i] > 0.0) em = fmax(em, fabs(m[i] - r.m[i]) / r.m_scale[i]);
            if (r.v[i] > 0.0) ev = fmax(ev, fabs(v[i] - r.v[i]) / r.v[i]);
            assert_true(isfinite(p[i]));
        }
        char what[96];
        /* Each of the 10 steps rounds a handful of float operations; the moments contract (beta <
         * 1), so errors stay a few ulp of the accumulated magnitude (measured ~3 ulp). Bound:
         * 16 ulp, room for FMA / reordered SIMD kernels. */
        double bound = 16.0 * REL_ULP;
        snprintf(what, sizeof what, "adamw %s params [%s]", label, ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, ep, bound);
        snprintf(what, sizeof what, "adamw %s m [%s]", label, ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, em, bound);
        snprintf(what, sizeof what, "adamw %s v [%s]", label, ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, ev, bound);
    }
    free(p);
    free(m);
    free(v);
    free(g);
    free(r.p);
    free(r.m);
    free(r.v);
    free(r.p_scale);
    free(r.m_scale);
}

static void test_adamw_vs_reference(void **state) {
    (void)state;
    ab_adamw_cfg cfg = ab_adamw_default();
    run_adamw_case(cfg, "default", 11);
    cfg.lr = 1e-2f;
    cfg.weight_decay = 0.1f;
    run_adamw_case(cfg, "lr1e-2 wd0.1", 12);
    cfg.beta1 = 0.0f; /* RMSprop-like corner: no momentum */
    cfg.beta2 = 0.5f;
    cfg.eps = 1e-3f;
    run_adamw_case(cfg, "b1=0 b2=.5 eps1e-3", 13);
}

/* With zero gradients the moments stay 0 and the update is 0/(0+eps) = 0: without weight decay the
 * parameters are bitwise unchanged; with it they decay by exactly (1 - lr*wd) per step (in
 * value, up to float rounding). */
static void test_adamw_zero_grad(void **state) {
    (void)state;
    enum { N = 37 };
    float p[N], p0[N], g[N], m[N], v[N];
    ab_rng rng;
    ab_rng_seed(&rng, 21, 1);
    fill_mixed(p0, N, 4, &rng);
    p0[0] = -0.0f;
    p0[1] = 0.0f;
    p0[2] = 1e-40f; /* denormal */
    memset(g, 0, sizeof g);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        ab_adamw_cfg cfg = ab_adamw_default();
        memcpy(p, p0, sizeof p);
        memset(m, 0, sizeof m);
        memset(v, 0, sizeof v);
        for (int t = 1; t <= 10; t++) assert_int_equal(ab_adamw_step(p, g, m, v, N, t, &cfg), AB_OK);
        /* unchanged in value; -0 and +0 are equal (DESIGN.md: valgrind's FMA emulation may flip
         * the sign of an exact zero) */
        for (int i = 0; i < N; i++) assert_true(p[i] == p0[i]);
        for (int i = 0; i < N; i++) assert_true(m[i] == 0.0f && v[i] == 0.0f);

        cfg.lr = 0.05f;
        cfg.weight_decay = 0.2f;
        memcpy(p, p0, sizeof p);
        for (int t = 1; t <= 10; t++) assert_int_equal(ab_adamw_step(p, g, m, v, N, t, &cfg), AB_OK);
        double f = pow(1.0 - (double)cfg.lr * (double)cfg.weight_decay, 10), e = 0.0;
        for (int i = 3; i < N; i++) e = fmax(e, fabs(p[i] - p0[i] * f) / fabs(p0[i] * f));
        char what[96];
        snprintf(what, sizeof what, "adamw pure decay, 10 steps [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, e, 4.0 * 10 * REL_ULP);
        assert_true(p[0] == 0.0f && p[1] == 0.0f);
    }
}

/* A large step count: beta^t underflows to 0, the bias corrections become 1, nothing is NaN. */
static void test_adamw_large_step(void **state) {
    (void)state;
    float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.1f, -0.2f, 0.0f}, m[3] = {0}, v[3] = {0};
    ab_adamw_cfg cfg = ab_adamw_default();
    assert_int_equal(ab_adamw_step(p, g, m, v, 3, INT_MAX, &cfg), AB_OK);
    /* m = 0.1 g, v = 0.001 g^2, no bias correction: update = lr * 0.1 g / (sqrt(0.001) |g| + eps) */
    for (int i = 0; i < 2; i++) {
        double mm = (1.0 - (double)0.9f) * g[i], vv = (1.0 - (double)0.999f) * g[i] * g[i];
        double want = (i == 0 ? 1.0 : -2.0) - 1e-3 * mm / (sqrt(vv) + 1e-8);
        assert_true(fabs(p[i] - want) <= 4.0 * REL_ULP * fabs(want));
    }
    assert_true(p[2] == 0.5f);
}

static void test_adamw_default_values(void **state) {
    (void)state;
    ab_adamw_cfg c = ab_adamw_default();
    assert_true(c.lr == 1e-3f);
    assert_true(c.beta1 == 0.9f);
    assert_true(c.beta2 == 0.999f);
    assert_true(c.eps == 1e-8f);
    assert_true(c.weight_decay == 0.0f);
}

static void test_adamw_errors(void **state) {
    (void)state;
    enum { N = 5 };
    float p[N] = {1, 2, 3, 4, 5}, g[N] = {1, 1, 1, 1, 1}, m[N] = {0}, v[N] = {0};
    float p0[N];
    memcpy(p0, p, sizeof p);
    ab_adamw_cfg ok = ab_adamw_default(), c;
    assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, NULL), AB_ERR_NULL);
    assert_int_equal(ab_adamw_step(p, g, m, v, N, 0, &ok), AB_ERR_ARG);
    assert_int_equal(ab_adamw_step(p, g, m, v, N, -3, &ok), AB_ERR_ARG);
    assert_int_equal(ab_adamw_step(p, g, m, v, N, INT_MIN, &ok), AB_ERR_ARG);
    const float bad_beta[] = {1.0f, 1.5f, -0.1f, -1e-30f, NAN, INFINITY};
    for (size_t k = 0; k < sizeof bad_beta / sizeof bad_beta[0]; k++) {
        c = ok;
        c.beta1 = bad_beta[k];
        assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, &c), AB_ERR_ARG);
        c = ok;
        c.beta2 = bad_beta[k];
        assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, &c), AB_ERR_ARG);
    }
    const float bad_eps[] = {0.0f, -0.0f, -1e-8f, NAN};
    for (size_t k = 0; k < sizeof bad_eps / sizeof bad_eps[0]; k++) {
        c = ok;
        c.eps = bad_eps[k];
        assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, &c), AB_ERR_ARG);
    }
    c = ok;
    c.lr = NAN;
    assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, &c), AB_ERR_ARG);
    c = ok;
    c.lr = INFINITY;
    assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, &c), AB_ERR_ARG);
    c = ok;
    c.weight_decay = NAN;
    assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, &c), AB_ERR_ARG);
    assert_int_equal(ab_adamw_step(NULL, g, m, v, N, 1, &ok), AB_ERR_NULL);
    assert_int_equal(ab_adamw_step(p, NULL, m, v, N, 1, &ok), AB_ERR_NULL);
    assert_int_equal(ab_adamw_step(p, g, NULL, v, N, 1, &ok), AB_ERR_NULL);
    assert_int_equal(ab_adamw_step(p, g, m, NULL, N, 1, &ok), AB_ERR_NULL);
    /* every rejected call left the state alone */
    assert_memory_equal(p, p0, sizeof p);
    for (int i = 0; i < N; i++) assert_true(m[i] == 0.0f && v[i] == 0.0f);
    /* beta == 0 is inside [0, 1); n == 0 needs no buffers */
    c = ok;
    c.beta1 = 0.0f;
    c.beta2 = 0.0f;
    assert_int_equal(ab_adamw_step(p, g, m, v, N, 1, &c), AB_OK);
    assert_int_equal(ab_adamw_step(NULL, NULL, NULL, NULL, 0, 1, &ok), AB_OK);
    assert_true(strlen(ab_last_error()) > 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* ab_clip_grad_norm                                                                              */

static void test_clip_below_is_noop(void **state) {
    (void)state;
    size_t n = TU_SIZE(3 * AB_REDUCE_BLOCK + 11, AB_REDUCE_BLOCK + 11);
    float *g = tu_alloc(n), *g0 = tu_alloc(n);
    ab_rng rng;
    ab_rng_seed(&rng, 31, 1);
    fill_mixed(g0, n, 6, &rng);
    g0[0] = -0.0f;
    g0[1] = 1e-41f;
    double want = ref_norm(g0, n);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        memcpy(g, g0, n * sizeof(float));
        float before = -1.0f;
        assert_int_equal(ab_clip_grad_norm(g, n, (float)(want * 1.01), &before), AB_OK);
        assert_memory_equal(g, g0, n * sizeof(float));
        char what[96];
        snprintf(what, sizeof what, "clip norm_before (no-op case) [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, fabs(before - want) / want, 2.0 * REL_ULP);
        /* max_norm equal to the reported norm: not above it, so no-op too */
        assert_int_equal(ab_clip_grad_norm(g, n, before, NULL), AB_OK);
        assert_memory_equal(g, g0, n * sizeof(float));
    }
    free(g);
    free(g0);
}

static void test_clip_above_rescales(void **state) {
    (void)state;
    size_t n = TU_SIZE(3 * AB_REDUCE_BLOCK + 11, AB_REDUCE_BLOCK + 11);
    float *g = tu_alloc(n), *g0 = tu_alloc(n);
    ab_rng rng;
    ab_rng_seed(&rng, 32, 1);
    fill_mixed(g0, n, 6, &rng);
    double want = ref_norm(g0, n);
    const float max_norms[] = {1.0f, 0.37f, (float)(want * 0.999)};
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double e_norm = 0.0, e_elem = 0.0, e_before = 0.0;
        for (size_t k = 0; k < sizeof max_norms / sizeof max_norms[0]; k++) {
            float mx = max_norms[k];
            memcpy(g, g0, n * sizeof(float));
            float before = -1.0f;
            assert_int_equal(ab_clip_grad_norm(g, n, mx, &before), AB_OK);
            e_before = fmax(e_before, fabs(before - want) / want);
            e_norm = fmax(e_norm, fabs(ref_norm(g, n) - mx) / mx);
            double s = (double)mx / want;
            for (size_t i = 0; i < n; i++) {
                double w = g0[i] * s;
                e_elem = fmax(e_elem, fabs(g[i] - w) / fabs(w));
            }
        }
        char what[96];
        /* the factor max/||g|| is rounded (norm, division) and each product once: ~3 roundings */
        snprintf(what, sizeof what, "clip resulting norm vs max_norm [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, e_norm, 4.0 * REL_ULP);
        snprintf(what, sizeof what, "clip elements vs g*max/||g|| [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, e_elem, 4.0 * REL_ULP);
        snprintf(what, sizeof what, "clip norm_before [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, e_before, 2.0 * REL_ULP);
    }
    free(g);
    free(g0);
}

static void test_clip_errors(void **state) {
    (void)state;
    size_t n = 2 * AB_REDUCE_BLOCK + 3;
    float *g = tu_alloc(n), *g0 = tu_alloc(n);
    ab_rng rng;
    ab_rng_seed(&rng, 33, 1);
    tu_fill_uniform(g0, n, -1.0f, 1.0f, &rng);
    size_t pos[] = {0, AB_REDUCE_BLOCK, n - 1};
    const float bad[] = {NAN, INFINITY, -INFINITY};
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        for (size_t k = 0; k < 3; k++)
            for (size_t b = 0; b < 3; b++) {
                memcpy(g, g0, n * sizeof(float));
                g[pos[k]] = bad[b];
                float before = 0.0f;
                assert_int_equal(ab_clip_grad_norm(g, n, 1.0f, &before), AB_ERR_NAN);
                assert_false(isfinite(before));
                g[pos[k]] = g0[pos[k]];
                assert_memory_equal(g, g0, n * sizeof(float)); /* not scaled */
            }
    }
    memcpy(g, g0, n * sizeof(float));
    assert_int_equal(ab_clip_grad_norm(g, n, 0.0f, NULL), AB_ERR_ARG);
    assert_int_equal(ab_clip_grad_norm(g, n, -1.0f, NULL), AB_ERR_ARG);
    assert_int_equal(ab_clip_grad_norm(g, n, NAN, NULL), AB_ERR_ARG);
    assert_int_equal(ab_clip_grad_norm(g, n, -INFINITY, NULL), AB_ERR_ARG);
    assert_memory_equal(g, g0, n * sizeof(float));
    assert_int_equal(ab_clip_grad_norm(NULL, n, 1.0f, NULL), AB_ERR_NULL);
    float before = -1.0f;
    assert_int_equal(ab_clip_grad_norm(NULL, 0, 1.0f, &before), AB_OK);
    assert_true(before == 0.0f);
    free(g);
    free(g0);
}

/* A finite gradient whose norm overflows float (|g_i| near FLT_MAX): reported as +inf, but g is
 * finite, so it is clipped (scale from the norm in double) rather than refused; the SAM step
 * likewise takes its step of length |rho|. */
static void test_huge_finite_gradient(void **state) {
    (void)state;
    enum { N = 19 };
    float g[N];
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        for (int i = 0; i < N; i++) g[i] = (i % 2 ? -1.0f : 1.0f) * 0.5f * FLT_MAX;
        float before = 0.0f, after = 0.0f;
        assert_int_equal(ab_clip_grad_norm(g, N, 1.0f, &before), AB_OK);
        assert_true(isinf(before));
        assert_int_equal(ab_l2_norm(g, N, &after), AB_OK);
        assert_true(fabs(after - 1.0) <= 4.0 * REL_ULP);
        for (int i = 0; i < N; i++) assert_true(isfinite(g[i]) && (g[i] < 0.0f) == (i % 2 == 1));
        float theta[N] = {0}, step = 0.0f, gn = 0.0f;
        for (int i = 0; i < N; i++) g[i] = (i % 2 ? -1.0f : 1.0f) * 0.5f * FLT_MAX;
        assert_int_equal(ab_sam_step(theta, NULL, g, N, 2.0f, &gn), AB_OK);
        assert_true(isinf(gn));
        assert_int_equal(ab_l2_norm(theta, N, &step), AB_OK);
        assert_true(fabs(step - 2.0) <= 8.0 * REL_ULP);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* SAM-style step                                                                                 */

static void test_sam_step_vs_reference(void **state) {
    (void)state;
    size_t lens[] = {1, 17, AB_REDUCE_BLOCK + 1, (size_t)TU_SIZE(100003, 9001)};
    const float rhos[] = {0.05f, -0.1f, 2.5f, 0.0f};
    size_t max_n = lens[3];
    float *theta = tu_alloc(max_n), *theta0 = tu_alloc(max_n), *saved = tu_alloc(max_n),
          *g = tu_alloc(max_n);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double e_theta = 0.0, e_norm = 0.0;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (size_t ri = 0; ri < sizeof rhos / sizeof rhos[0]; ri++) {
                size_t n = lens[li];
                float rho = rhos[ri];
                ab_rng rng;
                ab_rng_seed(&rng, 40 + li, ri);
                fill_mixed(theta0, n, 3, &rng);
                fill_mixed(g, n, 8, &rng);
                if (li == 0) g[0] = 3e-8f; /* ||g|| comparable to AB_SAM_EPS */
                memcpy(theta, theta0, n * sizeof(float));
                memset(saved, 0xA5, n * sizeof(float));
                float gnorm = -1.0f;
                assert_int_equal(ab_sam_step(theta, saved, g, n, rho, &gnorm), AB_OK);
                assert_memory_equal(saved, theta0, n * sizeof(float));
                double nrm = ref_norm(g, n);
                e_norm = fmax(e_norm, fabs(gnorm - nrm) / nrm);
                double s = (double)rho / (nrm + (double)AB_SAM_EPS);
                for (size_t i = 0; i < n; i++) {
                    double step = s * g[i], want = (double)theta0[i] + step;
                    double e = fabs(theta[i] - want) / (fabs(want) + fabs(step) + 1e-300);
                    tu_worst(&e_theta, e);
                }
                assert_int_equal(ab_sam_restore(theta, saved, n), AB_OK);
                assert_memory_equal(theta, theta0, n * sizeof(float));
            }
        char what[96];
        /* the scale rho/(||g||+eps) takes ~3 roundings, the update 2 (or 1 with FMA) */
        snprintf(what, sizeof what, "sam_step theta' vs double [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, e_theta, 4.0 * REL_ULP);
        snprintf(what, sizeof what, "sam_step gnorm vs long double [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, e_norm, 2.0 * REL_ULP);
    }
    free(theta);
    free(theta0);
    free(saved);
    free(g);
}

/* saved is a bitwise copy and restore is bit-exact for -0.0, denormals, infinities and NaN
 * payloads (quiet and signalling) in theta, which the arithmetic of the step would alter. */
static void test_sam_restore_bit_exact(void **state) {
    (void)state;
    size_t n = 2 * AB_REDUCE_BLOCK + 9;
    float *theta = tu_alloc(n), *theta0 = tu_alloc(n), *saved = tu_alloc(n), *g = tu_alloc(n);
    ab_rng rng;
    ab_rng_seed(&rng, 50, 1);
    fill_mixed(theta0, n, 5, &rng);
    tu_fill_uniform(g, n, -1.0f, 1.0f, &rng);
    const uint32_t specials[] = {
        0x80000000u, /* -0.0 */
        0x00000000u, /* +0.0 */
        0x00000001u, /* smallest denormal */
        0x807fffffu, /* largest negative denormal */
        0x7fc12345u, /* quiet NaN with payload */
        0xffc00001u, /* negative quiet NaN with payload */
        0x7f800001u, /* signalling NaN (arithmetic would quiet it) */
        0xff812345u, /* negative signalling NaN */
        0x7f800000u, /* +inf */
        0xff800000u, /* -inf */
    };
    size_t n_sp = sizeof specials / sizeof specials[0];
    for (size_t k = 0; k < n_sp; k++) {
        theta0[k] = u2f(specials[k]);                         /* head */
        theta0[AB_REDUCE_BLOCK - 3 + k] = u2f(specials[k]);   /* across a block boundary */
        theta0[n - n_sp + k] = u2f(specials[k]);              /* tail */
    }
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        const float rhos[] = {-0.1f, 0.05f};
        for (int r = 0; r < 2; r++) {
            memcpy(theta, theta0, n * sizeof(float));
            assert_int_equal(ab_sam_step(theta, saved, g, n, rhos[r], NULL), AB_OK);
            assert_memory_equal(saved, theta0, n * sizeof(float));
            assert_int_equal(ab_sam_restore(theta, saved, n), AB_OK);
            assert_memory_equal(theta, theta0, n * sizeof(float));
        }
    }
    /* saved == NULL: the step still happens, nothing is saved */
    memcpy(theta, theta0, n * sizeof(float));
    float gn = 0.0f;
    assert_int_equal(ab_sam_step(theta + 20, NULL, g + 20, 100, 0.5f, &gn), AB_OK);
    assert_true(gn > 0.0f);
    assert_true(theta[20] != theta0[20] || g[20] == 0.0f);
    free(theta);
    free(theta0);
    free(saved);
    free(g);
}

/* rho < 0 is a descent step: on L(theta) = 1/2 sum h_i theta_i^2 (h > 0), the step along -g/||g||
 * of length |rho| lowers L when |rho| is below the curvature scale; rho > 0 raises it. */
static double quad_loss(const float *theta, const double *h, size_t n) {
    double L = 0.0;
    for (size_t i = 0; i < n; i++) L += 0.5 * h[i] * (double)theta[i] * (double)theta[i];
    return L;
}

static void test_sam_descent_on_quadratic(void **state) {
    (void)state;
    enum { N = 257 };
    float theta[N], saved[N], g[N];
    double h[N];
    ab_rng rng;
    ab_rng_seed(&rng, 60, 1);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        for (int i = 0; i < N; i++) {
            theta[i] = 2.0f * ab_rng_uniform(&rng) - 1.0f;
            h[i] = 0.5 + 2.0 * ab_rng_uniform(&rng);
            g[i] = (float)(h[i] * theta[i]);
        }
        double L0 = quad_loss(theta, h, N);
        float gn;
        assert_int_equal(ab_sam_step(theta, saved, g, N, -0.1f, &gn), AB_OK);
        double L1 = quad_loss(theta, h, N);
        assert_true(L1 < L0);
        /* first order: L1 - L0 ~ -rho_abs * ||g|| */
        assert_true(fabs((L1 - L0) + 0.1 * gn) <= 0.1 * 0.1 * 2.5); /* second-order remainder */
        double moved = 0.0;
        for (int i = 0; i < N; i++) moved += pow((double)theta[i] - saved[i], 2);
        assert_true(fabs(sqrt(moved) - 0.1) <= 1e-5); /* a step of length |rho| */
        assert_int_equal(ab_sam_restore(theta, saved, N), AB_OK);
        assert_int_equal(ab_sam_step(theta, saved, g, N, 0.1f, NULL), AB_OK);
        assert_true(quad_loss(theta, h, N) > L0); /* ascent (the SAM direction) */
        assert_int_equal(ab_sam_restore(theta, saved, N), AB_OK);
        assert_true(quad_loss(theta, h, N) == L0);
    }
}

static void test_sam_zero_grad_and_errors(void **state) {
    (void)state;
    size_t n = AB_REDUCE_BLOCK + 5;
    float *theta = tu_alloc(n), *theta0 = tu_alloc(n), *saved = tu_alloc(n), *g = tu_alloc(n);
    ab_rng rng;
    ab_rng_seed(&rng, 70, 1);
    fill_mixed(theta0, n, 5, &rng);
    theta0[3] = -0.0f;
    theta0[4] = 1e-42f;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        /* zero gradient: no 0/0, theta unchanged (in value: -0 may become +0, DESIGN.md treats
         * them as equal), gnorm 0 */
        memset(g, 0, n * sizeof(float));
        for (int r = 0; r < 2; r++) {
            memcpy(theta, theta0, n * sizeof(float));
            float gn = -1.0f;
            assert_int_equal(ab_sam_step(theta, saved, g, n, r ? -0.1f : 0.1f, &gn), AB_OK);
            assert_true(gn == 0.0f);
            for (size_t i = 0; i < n; i++) assert_true(theta[i] == theta0[i]);
            assert_memory_equal(saved, theta0, n * sizeof(float));
        }
        /* ... also when rho / AB_SAM_EPS overflows float (rho * 0 / eps would be inf * 0 = NaN):
         * theta bit for bit as it was */
        const float huge_rho[] = {1e32f, -1e32f, FLT_MAX, -FLT_MAX};
        for (size_t r = 0; r < sizeof huge_rho / sizeof huge_rho[0]; r++) {
            memcpy(theta, theta0, n * sizeof(float));
            assert_int_equal(ab_sam_step(theta, saved, g, n, huge_rho[r], NULL), AB_OK);
            assert_memory_equal(theta, theta0, n * sizeof(float));
            assert_memory_equal(saved, theta0, n * sizeof(float));
        }
        /* a tiny gradient with a huge rho: the scale rho / (||g|| + eps) overflows: AB_ERR_NAN,
         * theta and saved untouched */
        g[7] = 1e-30f;
        for (size_t r = 0; r < sizeof huge_rho / sizeof huge_rho[0]; r++) {
            memcpy(theta, theta0, n * sizeof(float));
            for (size_t i = 0; i < n; i++) saved[i] = -7.0f;
            assert_int_equal(ab_sam_step(theta, saved, g, n, huge_rho[r], NULL), AB_ERR_NAN);
            assert_non_null(strstr(ab_last_error(), "overflows"));
            assert_memory_equal(theta, theta0, n * sizeof(float));
            for (size_t i = 0; i < n; i++) assert_true(saved[i] == -7.0f);
        }
        g[7] = 0.0f;
        /* NaN / Inf in g: AB_ERR_NAN, theta untouched, gnorm reports the non-finite norm */
        size_t pos[] = {0, AB_REDUCE_BLOCK - 1, n - 1};
        const float bad[] = {NAN, INFINITY, -INFINITY};
        tu_fill_uniform(g, n, -1.0f, 1.0f, &rng);
        for (size_t k = 0; k < 3; k++)
            for (size_t b = 0; b < 3; b++) {
                float keep = g[pos[k]];
                g[pos[k]] = bad[b];
                memcpy(theta, theta0, n * sizeof(float));
                for (size_t i = 0; i < n; i++) saved[i] = -7.0f;
                float gn = 0.0f;
                assert_int_equal(ab_sam_step(theta, saved, g, n, -0.1f, &gn), AB_ERR_NAN);
                assert_false(isfinite(gn));
                assert_memory_equal(theta, theta0, n * sizeof(float));
                for (size_t i = 0; i < n; i++) assert_true(saved[i] == -7.0f);
                g[pos[k]] = keep;
            }
    }
    memcpy(theta, theta0, n * sizeof(float));
    assert_int_equal(ab_sam_step(theta, saved, g, n, NAN, NULL), AB_ERR_ARG);
    assert_int_equal(ab_sam_step(theta, saved, g, n, INFINITY, NULL), AB_ERR_ARG);
    assert_int_equal(ab_sam_step(NULL, saved, g, n, 0.1f, NULL), AB_ERR_NULL);
    assert_int_equal(ab_sam_step(theta, saved, NULL, n, 0.1f, NULL), AB_ERR_NULL);
    assert_memory_equal(theta, theta0, n * sizeof(float));
    assert_int_equal(ab_sam_restore(NULL, saved, n), AB_ERR_NULL);
    assert_int_equal(ab_sam_restore(theta, NULL, n), AB_ERR_NULL);
    float gn = -1.0f;
    assert_int_equal(ab_sam_step(NULL, NULL, NULL, 0, 0.1f, &gn), AB_OK);
    assert_true(gn == 0.0f);
    assert_int_equal(ab_sam_restore(NULL, NULL, 0), AB_OK);
    free(theta);
    free(theta0);
    free(saved);
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l2_norm_vs_reference),
        cmocka_unit_test(test_dot_vs_reference),
        cmocka_unit_test(test_reduce_extreme_magnitudes),
        cmocka_unit_test(test_reduce_nonfinite_propagates),
        cmocka_unit_test(test_reduce_bitwise_reproducible),
        cmocka_unit_test(test_reduce_errors),
        cmocka_unit_test(test_adamw_vs_reference),
        cmocka_unit_test(test_adamw_zero_grad),
        cmocka_unit_test(test_adamw_large_step),
        cmocka_unit_test(test_adamw_default_values),
        cmocka_unit_test(test_adamw_errors),
        cmocka_unit_test(test_clip_below_is_noop),
        cmocka_unit_test(test_clip_above_rescales),
        cmocka_unit_test(test_clip_errors),
        cmocka_unit_test(test_huge_finite_gradient),
        cmocka_unit_test(test_sam_step_vs_reference),
        cmocka_unit_test(test_sam_restore_bit_exact),
        cmocka_unit_test(test_sam_descent_on_quadratic),
        cmocka_unit_test(test_sam_zero_grad_and_errors),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
