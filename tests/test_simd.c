/* tests/test_simd.c - every non-GEMM kernel on every ISA path this machine runs (tu_isas), through
 * the public API, against the scalar oracle (AB_ISA_SCALAR) on the same inputs.
 *
 * Lengths straddle the vector widths (8 floats for AVX2, 16 for AVX-512, and the 2x-unrolled
 * 16/32-float main loops): 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4099. Matrix
 * kernels use odd column counts and causal masks. Inputs start at an odd float offset in their
 * buffers, so no path can rely on 32- or 64-byte alignment.
 *
 * Error metrics, and why the bounds are what they are (each bound is stated at its assertion):
 *   - exp: distance in ulps (ordered bit patterns, so subnormal steps count as ulps). Both paths
 *     are within 1.2 ulp of the exact value (tools/exp_sweep), so they may differ by 2.
 *   - elementwise kernels: |got - want| / (|want| + scale), where scale is the magnitude of the
 *     terms that the scalar formula rounds (e.g. |x| for GELU, whose scalar tanh form loses the
 *     bits of 1 + tanh(u) near -1). This is the natural size of the rounding errors of either path.
 *   - row kernels (softmax, CE, layernorm): the paths sum a row in a different order (lanes vs a
 *     sequential float sum); for the random rows here that difference is ~sqrt(n) eps/2 relative
 *     to the sum of magnitudes (~4e-6 at n = 4099), which sets the bounds (stated per test).
 *   - reductions: double accumulation, rounded to float once: <= 1 float ulp apart (relative).
 *   - add, copies, masked entries: bit-exact.
 */
#include "testutil.h"
#include <float.h>

#define EPS ((double)FLT_EPSILON) /* 2^-23 */

static const size_t LENS[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4099};
#define N_LENS (sizeof LENS / sizeof LENS[0])
#define MAX_LEN 4099
#define OFF 1 /* inputs start one float into their buffers: unaligned for every vector width */

/* Shapes for the row kernels: odd and even column counts around the widths; rows <= cols so every
 * shape also runs causal. */
static const int SHAPES[][2] = {{1, 1},  {3, 7},   {4, 8},   {5, 9},   {6, 15},  {2, 16}, {7, 17},
                                {9, 31}, {3, 33},  {33, 33}, {17, 65}, {4, 1000}, {3, 1025}};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                        */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ulps between two floats: bit patterns mapped to a monotone integer line (+0 and -0 coincide).
 * NaN vs anything is "infinitely" far unless both are NaN. */
static double ulp_dist(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0.0 : INFINITY;
    int64_t ia = (int32_t)f2u(a), ib = (int32_t)f2u(b);
    if (ia < 0) ia = (int64_t)INT32_MIN - ia;
    if (ib < 0) ib = (int64_t)INT32_MIN - ib;
    return (double)(ia > ib ? ia - ib : ib - ia);
}

/* |got - exact| in ulps of the exact value's float binade (as tools/exp_sweep.c measures). */
static double ulp_err_exact(float got, double exact) {
    int e;
    frexp(exact, &e);
    return fabs((double)got - exact) / ldexp(1.0, e - 24);
}

/* |got - want| / scale; NaN where the reference is finite counts as infinitely wrong, NaN in both
 * as equal (the scalar oracle defines where NaN comes out). */
static double rel(float got, float want, double scale) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got) ? 0.0 : INFINITY;
    if (got == want) return 0.0; /* also equal infinities */
    return fabs((double)got - (double)want) / scale;
}


static void check(const char *kernel, ab_isa isa, double err, double bound) {
    char what[96];
    snprintf(what, sizeof what, "%s [%s] vs scalar", kernel, ab_isa_name(isa));
    TU_ASSERT_ERR(what, err, bound);
}

static float *copy_of(const float *x, size_t n) {
    float *c = tu_alloc(n);
    memcpy(c, x, n * sizeof(float));
    return c;
}

/* ---------------------------------------------------------------------------------------------- */
/* exp                                                                                            */

/* Arguments spread over the whole domain: the normal range, the subnormal range, overflow. */
static void fill_exp_args(float *x, size_t n, ab_rng *rng) {
    for (size_t i = 0; i < n; i++) {
        switch (ab_rng_below(rng, 4)) {
        case 0: x[i] = -110.0f + 200.0f * ab_rng_uniform(rng); break;  /* everything, incl. 0/inf */
        case 1: x[i] = -2.0f + 4.0f * ab_rng_uniform(rng); break;      /* around 1 */
        case 2: x[i] = -104.0f + 17.0f * ab_rng_uniform(rng); break;   /* subnormal results */
        default: x[i] = 80.0f + 9.0f * ab_rng_uniform(rng); break;     /* near overflow */
        }
    }
}

static void test_vexpf_vs_scalar(void **state) {
    (void)state;
    float *x = tu_alloc(MAX_LEN + OFF), *want = tu_alloc(MAX_LEN), *got = tu_alloc(MAX_LEN + OFF);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0, worst_exact = 0.0;
        for (size_t li = 0; li < N_LENS; li++) {
            size_t n = LENS[li];
            ab_rng_seed(&rng, 11 + li, 1);
            fill_exp_args(x + OFF, n, &rng);
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_vexpf(want, x + OFF, n), AB_OK);
            TU_SET_ISA(isas[ii]);
            assert_int_equal(ab_vexpf(got + OFF, x + OFF, n), AB_OK);
            for (size_t i = 0; i < n; i++) {
                tu_worst(&worst, ulp_dist(got[OFF + i], want[i]));
                float xi = x[OFF + i];
                /* the documented accuracy on this path too (normal results) */
                if (xi >= AB_EXPF_MIN_NORMAL_X && xi <= AB_EXPF_MAX_X)
                    tu_worst(&worst_exact, ulp_err_exact(got[OFF + i], exp((double)xi)));
            }
            /* in place gives the same bits */
            float *inplace = copy_of(x + OFF, n);
            assert_int_equal(ab_vexpf(inplace, inplace, n), AB_OK);
            assert_memory_equal(inplace, got + OFF, n * sizeof(float));
            free(inplace);
        }
        /* both within 1.2 ulp of exact (exhaustive sweep) -> at most 2 apart */
        check("vexpf (ulp)", isas[ii], worst, 2.0);
        char what[96];
        snprintf(what, sizeof what, "vexpf [%s] vs double exp (ulp)", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, worst_exact, (double)AB_EXPF_MAX_ULP);
    }
    free(x);
    free(want);
    free(got);
}

/* NaN in -> NaN out, +-inf, overflow, underflow, the range ends, 0: at every position of a vector
 * (head, middle, masked or buffered tail), identical to the scalar oracle. */
static void test_vexpf_special_values(void **state) {
    (void)state;
    const float sp[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 88.7f, AB_EXPF_MAX_X,
                        nextafterf(AB_EXPF_MAX_X, INFINITY), 89.0f, 1e30f, -1e30f, -FLT_MAX,
                        FLT_MAX, AB_EXPF_MIN_NORMAL_X, nextafterf(AB_EXPF_MIN_NORMAL_X, -INFINITY),
                        -103.97f, -103.972084045410f, -103.98f, -104.0f, -150.0f, 1e-30f, -1e-30f};
    const size_t n_sp = sizeof sp / sizeof sp[0];
    enum { N = 37 }; /* 2 x 16 + 5: main loop, single vector, tail on both widths */
    float x[N], want[N], got[N];
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t pos = 0; pos < N; pos += 3) {
            for (size_t i = 0; i < N; i++) x[i] = 0.25f * (float)i - 4.0f;
            for (size_t s = 0; s < n_sp; s++) x[(pos + 5 * s) % N] = sp[s]; /* 5, 37 coprime */
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_vexpf(want, x, N), AB_OK);
            TU_SET_ISA(isas[ii]);
            assert_int_equal(ab_vexpf(got, x, N), AB_OK);
            for (size_t i = 0; i < N; i++) {
                if (isnan(x[i])) assert_true(isnan(got[i]));
                if (x[i] == INFINITY || x[i] > AB_EXPF_MAX_X) assert_true(got[i] == INFINITY);
                if (x[i] < -103.972084045410f) assert_true(got[i] == 0.0f);
                if (x[i] == 0.0f) assert_true(got[i] == 1.0f);
                tu_worst(&worst, ulp_dist(got[i], want[i]));
            }
        }
        check("vexpf special values (ulp)", isas[ii], worst, 2.0);
    }
    /* Every float between the last subnormal result and -104, and between AB_EXPF_MAX_X and 89: the
     * SIMD paths clamp x to [-104, 89] and rely on the arithmetic giving exactly 0 and +inf there. */
    size_t cap = 160000;
    float *xs = tu_alloc(cap), *ys = tu_alloc(cap);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        for (int side = 0; side < 2; side++) {
            /* side 0: [-104.5, -103.972084) -> +0; side 1: (AB_EXPF_MAX_X, 89.5] -> +inf */
            size_t cnt = 0;
            float v = side ? nextafterf(AB_EXPF_MAX_X, INFINITY) : -104.5f;
            float end = side ? nextafterf(89.5f, INFINITY) : -103.972084045410f;
            for (; v < end && cnt < cap; v = nextafterf(v, INFINITY)) xs[cnt++] = v;
            assert_true(cnt > 1000 && cnt < cap);
            assert_int_equal(ab_vexpf(ys, xs, cnt), AB_OK);
            for (size_t i = 0; i < cnt; i++) {
                if (side == 0) assert_true(f2u(ys[i]) == 0u);
                else assert_true(ys[i] == INFINITY);
            }
        }
    }
    free(xs);
    free(ys);
}

/* ---------------------------------------------------------------------------------------------- */
/* softmax, softmax backward, log-softmax                                                         */

static void fill_logits(float *x, size_t n, float spread, ab_rng *rng) {
    tu_fill_uniform(x, n, -spread, spread, rng);
}

/* Softmax outputs are in [0, 1]; error relative to the output, with a floor of 1e-30 so outputs
 * that are (sub)normal crumbs of exp compare absolutely. Bound: exp differs by <= 2 ulp per term
 * (2.4e-7) and the row sums by the difference of two float summation orders, ~sqrt(n) eps/2 for
 * a sum of n positive random terms (3.8e-6 at n = 4099); 5e-6 covers both (measured ~6e-7). */
#define SOFTMAX_BOUND 5e-6

static void test_softmax_vs_scalar(void **state) {
    (void)state;
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t si = 0; si < N_SHAPES; si++) {
            int rows = SHAPES[si][0], cols = SHAPES[si][1];
            size_t n = (size_t)rows * cols;
            float *x = tu_alloc(n + OFF), *want = tu_alloc(n), *got = tu_alloc(n + OFF);
            for (int causal = 0; causal <= 1; causal++) {
                for (int spread_i = 0; spread_i < 2; spread_i++) {
                    ab_rng_seed(&rng, 100 + si, (uint64_t)(causal * 2 + spread_i));
                    /* spread 30: terms span e^-60 .. 1; spread 3000: huge logits, most terms 0 */
                    fill_logits(x + OFF, n, spread_i ? 3000.0f : 30.0f, &rng);
                    TU_SET_ISA(AB_ISA_SCALAR);
                    assert_int_equal(ab_softmax(want, x + OFF, rows, cols, causal), AB_OK);
                    TU_SET_ISA(isas[ii]);
                    for (size_t i = 0; i < n; i++) got[OFF + i] = NAN; /* masked part must be written */
                    assert_int_equal(ab_softmax(got + OFF, x + OFF, rows, cols, causal), AB_OK);
                    for (int r = 0; r < rows; r++) {
                        int valid = causal ? r + cols - rows + 1 : cols;
                        double row_sum = 0.0;
                        for (int j = 0; j < cols; j++) {
                            size_t k = (size_t)r * cols + j;
                            if (j >= valid) {
                                assert_true(f2u(got[OFF + k]) == 0u); /* masked: exactly +0 */
                                continue;
                            }
                            tu_worst(&worst, rel(got[OFF + k], want[k], fabs(want[k]) + 1e-30));
                            row_sum += got[OFF + k];
                        }
                        tu_worst(&worst, fabs(row_sum - 1.0) / (double)(valid + 8)); /* sums to 1 */
                    }
                    /* in place: same bits as out of place */
                    float *inplace = copy_of(x + OFF, n);
                    assert_int_equal(ab_softmax(inplace, inplace, rows, cols, causal), AB_OK);
                    assert_memory_equal(inplace, got + OFF, n * sizeof(float));
                    free(inplace);
                }
            }
            free(x);
            free(want);
            free(got);
        }
        check("softmax (rel)", isas[ii], worst, SOFTMAX_BOUND);
    }
}

/* Masking with -inf or -1e30 (what attention masks use), huge logits, NaN: same as the scalar
 * oracle on every path. -inf and -1e30 entries give exactly 0; a NaN anywhere in a row makes the
 * whole row NaN (the sum is NaN); a row of all -inf is NaN (-inf - -inf), also as in the oracle. */
static void test_softmax_special_values(void **state) {
    (void)state;
    enum { ROWS = 6, COLS = 37 };
    float x[ROWS * COLS], want[ROWS * COLS], got[ROWS * COLS];
    ab_rng rng;
    ab_rng_seed(&rng, 3, 3);
    fill_logits(x, ROWS * COLS, 5.0f, &rng);
    for (int j = 0; j < COLS; j += 3) x[0 * COLS + j] = -INFINITY; /* row 0: -inf masking */
    for (int j = 1; j < COLS; j += 2) x[1 * COLS + j] = -1e30f;    /* row 1: -1e30 masking */
    x[2 * COLS + 5] = 3e38f;                                      /* row 2: huge logits */
    x[2 * COLS + 36] = -3e38f;
    x[2 * COLS + 20] = 2.9e38f;
    x[3 * COLS + 33] = NAN;                                       /* row 3: NaN in the tail */
    for (int j = 0; j < COLS; j++) x[4 * COLS + j] = -INFINITY;   /* row 4: fully masked */
    for (int j = 0; j < COLS; j++) x[5 * COLS + j] = 7.0f;        /* row 5: uniform */
    TU_SET_ISA(AB_ISA_SCALAR);
    assert_int_equal(ab_softmax(want, x, ROWS, COLS, 0), AB_OK);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        assert_int_equal(ab_softmax(got, x, ROWS, COLS, 0), AB_OK);
        double worst = 0.0;
        for (int j = 0; j < COLS; j++) {
            if (j % 3 == 0) assert_true(got[0 * COLS + j] == 0.0f);
            if (j % 2 == 1) assert_true(got[1 * COLS + j] == 0.0f);
            assert_true(isnan(got[3 * COLS + j]));
            assert_true(isnan(got[4 * COLS + j]));
            assert_true(got[5 * COLS + j] == 1.0f / (float)COLS); /* exp(0) = 1 exactly */
        }
        assert_true(got[2 * COLS + 5] > 0.5f && got[2 * COLS + 36] == 0.0f);
        for (int k = 0; k < ROWS * COLS; k++) tu_worst(&worst, rel(got[k], want[k], fabs(want[k]) + 1e-30));
        check("softmax special values (rel)", isas[ii], worst, SOFTMAX_BOUND);
    }
}

/* dx += y * (dy - sum(y dy)): error relative to |dx0| + y (|dy| + sum|y dy|), the terms rounded.
 * The dot is a float sum over the row (<= ~cols eps of sum|y dy|). */
static void test_softmax_backward_vs_scalar(void **state) {
    (void)state;
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t si = 0; si < N_SHAPES; si++) {
            int rows = SHAPES[si][0], cols = SHAPES[si][1];
            size_t n = (size_t)rows * cols;
            float *x = tu_alloc(n), *y = tu_alloc(n + OFF), *dy = tu_alloc(n + OFF);
            float *dx0 = tu_alloc(n), *want = tu_alloc(n), *got = tu_alloc(n + OFF);
            ab_rng_seed(&rng, 200 + si, 0);
            fill_logits(x, n, 4.0f, &rng);
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_softmax(y + OFF, x, rows, cols, 0), AB_OK);
            tu_fill_uniform(dy + OFF, n, -1.0f, 1.0f, &rng);
            tu_fill_uniform(dx0, n, -1.0f, 1.0f, &rng);
            memcpy(want, dx0, n * sizeof(float));
            assert_int_equal(ab_softmax_backward(want, y + OFF, dy + OFF, rows, cols), AB_OK);
            TU_SET_ISA(isas[ii]);
            memcpy(got + OFF, dx0, n * sizeof(float));
            assert_int_equal(ab_softmax_backward(got + OFF, y + OFF, dy + OFF, rows, cols), AB_OK);
            for (int r = 0; r < rows; r++) {
                double abs_dot = 0.0;
                for (int j = 0; j < cols; j++) abs_dot += fabs((double)y[OFF + r * cols + j] * dy[OFF + r * cols + j]);
                for (int j = 0; j < cols; j++) {
                    size_t k = (size_t)r * cols + j;
                    double scale = fabs(dx0[k]) + y[OFF + k] * (fabs(dy[OFF + k]) + abs_dot);
                    tu_worst(&worst, rel(got[OFF + k], want[k], scale));
                }
            }
            free(x);
            free(y);
            free(dy);
            free(dx0);
            free(want);
            free(got);
        }
        check("softmax_backward (rel to terms)", isas[ii], worst, 1e-5);
    }
}

/* y = x - max - log(sum exp(x - max)): absolute error ~ eps |x - max| + the relative error of the
 * row sum (log turns it into an absolute one), so relative to |want| + 1. */
static void test_log_softmax_vs_scalar(void **state) {
    (void)state;
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t si = 0; si < N_SHAPES; si++) {
            int rows = SHAPES[si][0], cols = SHAPES[si][1];
            size_t n = (size_t)rows * cols;
            float *x = tu_alloc(n + OFF), *want = tu_alloc(n), *got = tu_alloc(n + OFF);
            for (int spread_i = 0; spread_i < 2; spread_i++) {
                ab_rng_seed(&rng, 300 + si, (uint64_t)spread_i);
                fill_logits(x + OFF, n, spread_i ? 1000.0f : 8.0f, &rng);
                TU_SET_ISA(AB_ISA_SCALAR);
                assert_int_equal(ab_log_softmax(want, x + OFF, rows, cols), AB_OK);
                TU_SET_ISA(isas[ii]);
                assert_int_equal(ab_log_softmax(got + OFF, x + OFF, rows, cols), AB_OK);
                for (size_t k = 0; k < n; k++) tu_worst(&worst, rel(got[OFF + k], want[k], fabs(want[k]) + 1.0));
                float *inplace = copy_of(x + OFF, n);
                assert_int_equal(ab_log_softmax(inplace, inplace, rows, cols), AB_OK);
                assert_memory_equal(inplace, got + OFF, n * sizeof(float));
                free(inplace);
            }
            free(x);
            free(want);
            free(got);
        }
        check("log_softmax (rel to |y|+1)", isas[ii], worst, 4e-6);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* cross-entropy                                                                                  */

/* losses: absolute error ~ eps (|max| + |x_t|) + the row sum's relative error, so relative to
 * |loss| + 1 + |x_t|. dlogits: relative to |d0| + |g| (p + onehot), the terms added. Rows with
 * weight 0 must be untouched (losses exactly 0, dlogits bit-identical). */
static void test_cross_entropy_vs_scalar(void **state) {
    (void)state;
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst_loss = 0.0, worst_grad = 0.0;
        for (size_t si = 0; si < N_SHAPES; si++) {
            int rows = SHAPES[si][0], vocab = SHAPES[si][1];
            size_t n = (size_t)rows * vocab;
            float *lg = tu_alloc(n + OFF), *d0 = tu_alloc(n), *dw = tu_alloc(n), *dg = tu_alloc(n + OFF);
            float *lw = tu_alloc((size_t)rows), *lgot = tu_alloc((size_t)rows), *wts = tu_alloc((size_t)rows);
            int *tg = (int *)calloc((size_t)rows, sizeof(int));
            assert_non_null(tg);
            for (int variant = 0; variant < 4; variant++) {
                /* 0: weights NULL; 1: weights with zeros; 2: huge logits; 3: losses only / grads only */
                ab_rng_seed(&rng, 400 + si, (uint64_t)variant);
                fill_logits(lg + OFF, n, variant == 2 ? 2e4f : 6.0f, &rng);
                tu_fill_uniform(d0, n, -0.01f, 0.01f, &rng);
                for (int r = 0; r < rows; r++) {
                    tg[r] = (int)ab_rng_below(&rng, (uint32_t)vocab);
                    wts[r] = (r % 3 == 1) ? 0.0f : 0.5f + ab_rng_uniform(&rng);
                }
                const float *w = variant == 0 ? NULL : wts;
                float dscale = 1.0f / (float)rows;
                memcpy(dw, d0, n * sizeof(float));
                memcpy(dg + OFF, d0, n * sizeof(float));
                for (int r = 0; r < rows; r++) lgot[r] = NAN;
                TU_SET_ISA(AB_ISA_SCALAR);
                assert_int_equal(ab_cross_entropy(lw, dw, lg + OFF, tg, w, rows, vocab, dscale), AB_OK);
                TU_SET_ISA(isas[ii]);
                if (variant == 3) {
                    assert_int_equal(ab_cross_entropy(lgot, NULL, lg + OFF, tg, w, rows, vocab, dscale), AB_OK);
                    assert_int_equal(ab_cross_entropy(NULL, dg + OFF, lg + OFF, tg, w, rows, vocab, dscale), AB_OK);
                } else {
                    assert_int_equal(ab_cross_entropy(lgot, dg + OFF, lg + OFF, tg, w, rows, vocab, dscale), AB_OK);
                }
                for (int r = 0; r < rows; r++) {
                    float wr = w ? w[r] : 1.0f;
                    const float *lr = lg + OFF + (size_t)r * vocab;
                    if (wr == 0.0f) {
                        assert_true(f2u(lgot[r]) == 0u);
                        assert_memory_equal(dg + OFF + (size_t)r * vocab, d0 + (size_t)r * vocab,
                                            (size_t)vocab * sizeof(float));
                        continue;
                    }
                    tu_worst(&worst_loss, rel(lgot[r], lw[r], fabs(lw[r]) + 1.0 + fabs(lr[tg[r]])));
                    double g = fabs((double)dscale * wr);
                    for (int j = 0; j < vocab; j++) {
                        size_t k = (size_t)r * vocab + j;
                        double p = fabs((double)dw[k] - d0[k]) / g; /* ~ softmax + onehot */
                        double scale = fabs(d0[k]) + g * (p + (j == tg[r]) + 1e-30);
                        tu_worst(&worst_grad, rel(dg[OFF + k], dw[k], scale));
                    }
                }
            }
            free(lg);
            free(d0);
            free(dw);
            free(dg);
            free(lw);
            free(lgot);
            free(wts);
            free(tg);
        }
        check("cross_entropy loss (rel to |loss|+1+|x_t|)", isas[ii], worst_loss, 1e-5);
        check("cross_entropy dlogits (rel to terms)", isas[ii], worst_grad, 2e-5);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* layernorm                                                                                      */

/* out = (x - mu) rstd w + b: mu and var are float row sums (error ~ cols eps of the magnitudes),
 * so out is compared relative to |w| (|norm| + 1) + |b|; mean relative to mean|x|; rstd
 * relative. */
static void test_layernorm_forward_vs_scalar(void **state) {
    (void)state;
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst_out = 0.0, worst_stat = 0.0;
        for (size_t si = 0; si < N_SHAPES; si++) {
            int rows = SHAPES[si][0], cols = SHAPES[si][1];
            size_t n = (size_t)rows * cols;
            float *x = tu_alloc(n + OFF), *w = tu_alloc((size_t)cols + OFF), *b = tu_alloc((size_t)cols + OFF);
            float *want = tu_alloc(n), *got = tu_alloc(n + OFF);
            float *mw = tu_alloc((size_t)rows), *rw = tu_alloc((size_t)rows);
            float *mg = tu_alloc((size_t)rows), *rg = tu_alloc((size_t)rows);
            ab_rng_seed(&rng, 500 + si, 0);
            tu_fill_uniform(x + OFF, n, -2.0f, 3.0f, &rng);
            tu_fill_uniform(w + OFF, (size_t)cols, -1.5f, 1.5f, &rng);
            tu_fill_uniform(b + OFF, (size_t)cols, -1.0f, 1.0f, &rng);
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_layernorm_forward(want, mw, rw, x + OFF, w + OFF, b + OFF, rows, cols, 1e-5f), AB_OK);
            TU_SET_ISA(isas[ii]);
            assert_int_equal(ab_layernorm_forward(got + OFF, mg, rg, x + OFF, w + OFF, b + OFF, rows, cols, 1e-5f), AB_OK);
            for (int r = 0; r < rows; r++) {
                double mean_abs = 0.0;
                for (int j = 0; j < cols; j++) mean_abs += fabs(x[OFF + (size_t)r * cols + j]);
                mean_abs /= cols;
                tu_worst(&worst_stat, rel(mg[r], mw[r], mean_abs));
                tu_worst(&worst_stat, rel(rg[r], rw[r], fabs(rw[r])));
                for (int j = 0; j < cols; j++) {
                    size_t k = (size_t)r * cols + j;
                    double nrm = fabs((x[OFF + k] - mw[r]) * rw[r]);
                    double scale = fabs(w[OFF + j]) * (nrm + 1.0) + fabs(b[OFF + j]);
                    tu_worst(&worst_out, rel(got[OFF + k], want[k], scale));
                }
            }
            /* mean and rstd may be NULL (inference): same output */
            float *again = tu_alloc(n);
            assert_int_equal(ab_layernorm_forward(again, NULL, NULL, x + OFF, w + OFF, b + OFF, rows, cols, 1e-5f), AB_OK);
            assert_memory_equal(again, got + OFF, n * sizeof(float));
            free(again);
            free(x);
            free(w);
            free(b);
            free(want);
            free(got);
            free(mw);
            free(rw);
            free(mg);
            free(rg);
        }
        check("layernorm_forward out (rel to terms)", isas[ii], worst_out, 1e-5);
        check("layernorm_forward mean/rstd (rel)", isas[ii], worst_stat, 1e-5);
    }
}

/* dx, dweight accumulate sums over the row / over rows: normwise relative error per row (max |diff|
 * over max |want - initial| + max |initial|) bounds them without dividing by cancelled entries.
 * dbias is the same float additions in the same order on every path: bit-exact. */
static void test_layernorm_backward_vs_scalar(void **state) {
    (void)state;
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t si = 0; si < N_SHAPES; si++) {
            int rows = SHAPES[si][0], cols = SHAPES[si][1];
            size_t n = (size_t)rows * cols, c = (size_t)cols;
            float *x = tu_alloc(n + OFF), *w = tu_alloc(c + OFF), *b = tu_alloc(c), *out = tu_alloc(n);
            float *mean = tu_alloc((size_t)rows), *rstd = tu_alloc((size_t)rows), *dout = tu_alloc(n + OFF);
            float *dx0 = tu_alloc(n), *dw0 = tu_alloc(c), *db0 = tu_alloc(c);
            float *dxw = tu_alloc(n), *dww = tu_alloc(c), *dbw = tu_alloc(c);
            float *dxg = tu_alloc(n + OFF), *dwg = tu_alloc(c + OFF), *dbg = tu_alloc(c + OFF);
            ab_rng_seed(&rng, 600 + si, 0);
            tu_fill_uniform(x + OFF, n, -2.0f, 3.0f, &rng);
            tu_fill_uniform(w + OFF, c, -1.5f, 1.5f, &rng);
            tu_fill_uniform(b, c, -1.0f, 1.0f, &rng);
            tu_fill_uniform(dout + OFF, n, -1.0f, 1.0f, &rng);
            tu_fill_uniform(dx0, n, -0.5f, 0.5f, &rng);
            tu_fill_uniform(dw0, c, -0.5f, 0.5f, &rng);
            tu_fill_uniform(db0, c, -0.5f, 0.5f, &rng);
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_layernorm_forward(out, mean, rstd, x + OFF, w + OFF, b, rows, cols, 1e-5f), AB_OK);
            for (int nulls = 0; nulls <= 1; nulls++) {
                memcpy(dxw, dx0, n * sizeof(float));
                memcpy(dww, dw0, c * sizeof(float));
                memcpy(dbw, db0, c * sizeof(float));
                memcpy(dxg + OFF, dx0, n * sizeof(float));
                memcpy(dwg + OFF, dw0, c * sizeof(float));
                memcpy(dbg + OFF, db0, c * sizeof(float));
                TU_SET_ISA(AB_ISA_SCALAR);
                assert_int_equal(ab_layernorm_backward(dxw, nulls ? NULL : dww, nulls ? NULL : dbw, dout + OFF,
                                                       x + OFF, w + OFF, mean, rstd, rows, cols), AB_OK);
                TU_SET_ISA(isas[ii]);
                assert_int_equal(ab_layernorm_backward(dxg + OFF, nulls ? NULL : dwg + OFF, nulls ? NULL : dbg + OFF,
                                                       dout + OFF, x + OFF, w + OFF, mean, rstd, rows, cols), AB_OK);
                for (int r = 0; r < rows; r++) {
                    double diff = 0.0, mag = 0.0;
                    for (size_t j = 0; j < c; j++) {
                        size_t k = (size_t)r * c + j;
                        if (isnan(dxg[OFF + k])) diff = INFINITY;
                        diff = fmax(diff, fabs((double)dxg[OFF + k] - dxw[k]));
                        mag = fmax(mag, fabs((double)dxw[k] - dx0[k]) + fabs(dx0[k]));
                    }
                    tu_worst(&worst, diff / mag);
                }
                double diff = 0.0, mag = 0.0;
                for (size_t j = 0; j < c; j++) {
                    if (isnan(dwg[OFF + j])) diff = INFINITY;
                    diff = fmax(diff, fabs((double)dwg[OFF + j] - dww[j]));
                    mag = fmax(mag, fabs((double)dww[j] - dw0[j]) + fabs(dw0[j]));
                }
                tu_worst(&worst, diff / mag);
                assert_memory_equal(dbg + OFF, dbw, c * sizeof(float)); /* untouched or bit-exact */
                if (nulls) {
                    assert_memory_equal(dwg + OFF, dw0, c * sizeof(float));
                    assert_memory_equal(dbg + OFF, db0, c * sizeof(float));
                }
            }
            free(x); free(w); free(b); free(out); free(mean); free(rstd); free(dout);
            free(dx0); free(dw0); free(db0); free(dxw); free(dww); free(dbw);
            free(dxg); free(dwg); free(dbg);
        }
        check("layernorm_backward dx/dweight (normwise rel)", isas[ii], worst, 1e-5);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* GELU                                                                                           */

/* References in double, from the float x, in the sigmoid form (1 + tanh u = 2 / (1 + e^-2u)): the
 * tanh form cancels to 0 even in double for u < -19. */
static double gelu_ref(double v) {
    double u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    return v / (1.0 + exp(-2.0 * u));
}
static double gelu_grad_ref(double v) {
    double u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    double ch = cosh(u), du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * v * v);
    return 1.0 / (1.0 + exp(-2.0 * u)) + 0.5 * v * du / (ch * ch);
}

/* Inputs in [-12, 12] plus a few large ones. The scalar oracle's 1 + tanhf(u) keeps only the bits of
 * tanh near -1, an absolute error of ~eps |x| in GELU and ~eps |x| du in its derivative, so
 * vs scalar the error is relative to |want| + |x| (forward) and to |dx0| + |dout| (1 + |x| du)
 * (backward). The SIMD paths use the sigmoid form, so they are also checked against double:
 * relative error <= 2e-5 for |x| <= 12 (exp's 2 ulp grow with |2u| ~ 2e2 in the tail). */
static void fill_gelu_args(float *x, size_t n, ab_rng *rng) {
    tu_fill_uniform(x, n, -12.0f, 12.0f, rng);
    for (size_t i = 5; i < n; i += 23) x[i] = (i & 1) ? 3e3f * ab_rng_uniform(rng) : -3e3f * ab_rng_uniform(rng);
}

static void test_gelu_vs_scalar(void **state) {
    (void)state;
    float *x = tu_alloc(MAX_LEN + OFF), *want = tu_alloc(MAX_LEN), *got = tu_alloc(MAX_LEN + OFF);
    float *dout = tu_alloc(MAX_LEN + OFF), *dx0 = tu_alloc(MAX_LEN), *dxw = tu_alloc(MAX_LEN);
    float *dxg = tu_alloc(MAX_LEN + OFF);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double wf = 0.0, wb = 0.0, wf_ref = 0.0, wb_ref = 0.0;
        int simd = isas[ii] != AB_ISA_SCALAR;
        for (size_t li = 0; li < N_LENS; li++) {
            size_t n = LENS[li];
            ab_rng_seed(&rng, 700 + li, 0);
            fill_gelu_args(x + OFF, n, &rng);
            tu_fill_uniform(dout + OFF, n, -1.0f, 1.0f, &rng);
            tu_fill_uniform(dx0, n, -1.0f, 1.0f, &rng);
            memcpy(dxw, dx0, n * sizeof(float));
            memcpy(dxg + OFF, dx0, n * sizeof(float));
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_gelu_forward(want, x + OFF, n), AB_OK);
            assert_int_equal(ab_gelu_backward(dxw, x + OFF, dout + OFF, n), AB_OK);
            TU_SET_ISA(isas[ii]);
            assert_int_equal(ab_gelu_forward(got + OFF, x + OFF, n), AB_OK);
            assert_int_equal(ab_gelu_backward(dxg + OFF, x + OFF, dout + OFF, n), AB_OK);
            for (size_t i = 0; i < n; i++) {
                double v = x[OFF + i];
                double du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * v * v);
                tu_worst(&wf, rel(got[OFF + i], want[i], fabs(want[i]) + fabs(v)));
                tu_worst(&wb, rel(dxg[OFF + i], dxw[i], fabs(dx0[i]) + fabs(dout[OFF + i]) * (1.0 + fabs(v) * du)));
                if (simd && fabs(v) <= 12.0) {
                    double rf = gelu_ref(v), rb = gelu_grad_ref(v);
                    tu_worst(&wf_ref, fabs(got[OFF + i] - rf) / (fabs(rf) + 1e-37));
                    /* backward vs double: relative to the accumulated terms */
                    double want_b = dx0[i] + dout[OFF + i] * rb;
                    tu_worst(&wb_ref, fabs(dxg[OFF + i] - want_b) /
                                     (fabs(dx0[i]) + fabs(dout[OFF + i]) * (fabs(rb) + 1e-7)));
                }
            }
        }
        check("gelu_forward (rel to |y|+|x|)", isas[ii], wf, 4.0 * EPS);
        check("gelu_backward (rel to terms)", isas[ii], wb, 4.0 * EPS);
        if (simd) {
            char what[96];
            snprintf(what, sizeof what, "gelu_forward [%s] vs double (rel)", ab_isa_name(isas[ii]));
            TU_ASSERT_ERR(what, wf_ref, 2e-5);
            snprintf(what, sizeof what, "gelu_backward [%s] vs double (rel)", ab_isa_name(isas[ii]));
            TU_ASSERT_ERR(what, wb_ref, 2e-5);
        }
    }
    free(x); free(want); free(got); free(dout); free(dx0); free(dxw); free(dxg);
}

/* Large |x|, infinities and NaN: the tanh form's limits (gelu(x) -> x, -> -0) without overflow,
 * and the same non-finite results as the oracle. */
static void test_gelu_special_values(void **state) {
    (void)state;
    const float sp[] = {1e3f, -1e3f, 1e10f, -1e10f, 1e20f, -1e20f, FLT_MAX, -FLT_MAX, INFINITY,
                        -INFINITY, NAN, 0.0f, -0.0f, 40.0f, -40.0f, 10.0f, -10.0f};
    enum { N = 17 };
    float want[N], got[N], dxw[N], dxg[N], dout[N];
    for (int i = 0; i < N; i++) dout[i] = 1.0f;
    TU_SET_ISA(AB_ISA_SCALAR);
    assert_int_equal(ab_gelu_forward(want, sp, N), AB_OK);
    memset(dxw, 0, sizeof dxw);
    assert_int_equal(ab_gelu_backward(dxw, sp, dout, N), AB_OK);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        assert_int_equal(ab_gelu_forward(got, sp, N), AB_OK);
        memset(dxg, 0, sizeof dxg);
        assert_int_equal(ab_gelu_backward(dxg, sp, dout, N), AB_OK);
        for (int i = 0; i < N; i++) {
            assert_true(isnan(got[i]) == isnan(want[i]));
            assert_true(isnan(dxg[i]) == isnan(dxw[i]));
            if (isnan(want[i]) || fabsf(sp[i]) < 20.0f) continue;
            /* |x| >= 20: tanh(u) is +-1 in float, gelu is x or 0, its derivative 1 or 0 (or NaN) */
            assert_true(got[i] == want[i]);
            assert_true(dxg[i] == dxw[i] || (isnan(dxg[i]) && isnan(dxw[i])));
        }
        assert_true(got[0] == 1e3f && got[1] == 0.0f && got[8] == INFINITY);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* residual add, AdamW                                                                            */

static void test_add_bit_exact(void **state) {
    (void)state;
    float *a = tu_alloc(MAX_LEN + OFF), *b = tu_alloc(MAX_LEN + OFF), *want = tu_alloc(MAX_LEN);
    float *got = tu_alloc(MAX_LEN + OFF), *da = tu_alloc(MAX_LEN), *db = tu_alloc(MAX_LEN);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        for (size_t li = 0; li < N_LENS; li++) {
            size_t n = LENS[li];
            ab_rng_seed(&rng, 800 + li, 0);
            tu_fill_uniform(a + OFF, n, -1e3f, 1e3f, &rng);
            tu_fill_uniform(b + OFF, n, -1.0f, 1.0f, &rng);
            if (n > 3) a[OFF + n - 2] = NAN;
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_residual_forward(want, a + OFF, b + OFF, n), AB_OK);
            TU_SET_ISA(isas[ii]);
            assert_int_equal(ab_residual_forward(got + OFF, a + OFF, b + OFF, n), AB_OK);
            /* one IEEE add per element on every path: bit-exact */
            assert_memory_equal(got + OFF, want, n * sizeof(float));
            /* backward accumulates in place (out == a) */
            memcpy(da, a + OFF, n * sizeof(float));
            memcpy(db, a + OFF, n * sizeof(float));
            assert_int_equal(ab_residual_backward(da, db, b + OFF, n), AB_OK);
            assert_memory_equal(da, want, n * sizeof(float));
            assert_memory_equal(db, want, n * sizeof(float));
        }
    }
    free(a); free(b); free(want); free(got); free(da); free(db);
}

/* Three AdamW steps from the same state. The paths differ by FMA contractions only, so each of m,
 * v, p is compared relative to the magnitude of the terms that formed it, tracked along the steps
 * from the scalar state: m_scale = b1 m_scale + (1-b1)|g|; v (a sum of positive terms); and
 * p_scale = |p0| + sum lr (m_scale/bc1 / (sqrt(v/bc2) + eps) + wd |p|). */
static void test_adamw_vs_scalar(void **state) {
    (void)state;
    size_t big = TU_SIZE(100003, 5003); /* > MAX_LEN */
    size_t lens[N_LENS + 1];
    memcpy(lens, LENS, sizeof LENS);
    lens[N_LENS] = big;
    float *p0 = tu_alloc(big + OFF), *g = tu_alloc(big + OFF);
    float *pw = tu_alloc(big), *mw = tu_alloc(big), *vw = tu_alloc(big);
    float *pg = tu_alloc(big + OFF), *mg = tu_alloc(big + OFF), *vg = tu_alloc(big + OFF);
    double *ms = (double *)calloc(big, sizeof(double)), *ps = (double *)calloc(big, sizeof(double));
    assert_non_null(ms);
    assert_non_null(ps);
    ab_adamw_cfg cfg = ab_adamw_default();
    cfg.lr = 1e-2f;
    cfg.weight_decay = 0.1f;
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t li = 0; li <= N_LENS; li++) {
            size_t n = lens[li];
            ab_rng_seed(&rng, 900 + li, 0);
            tu_fill_uniform(p0 + OFF, n, -1.0f, 1.0f, &rng);
            memcpy(pw, p0 + OFF, n * sizeof(float));
            memcpy(pg + OFF, p0 + OFF, n * sizeof(float));
            memset(mw, 0, n * sizeof(float));
            memset(vw, 0, n * sizeof(float));
            memset(mg + OFF, 0, n * sizeof(float));
            memset(vg + OFF, 0, n * sizeof(float));
            for (size_t i = 0; i < n; i++) {
                ms[i] = 0.0;
                ps[i] = fabs(p0[OFF + i]);
            }
            for (int step = 1; step <= 3; step++) {
                tu_fill_uniform(g + OFF, n, -1.0f, 1.0f, &rng);
                if (step == 2 && n > 2) g[OFF + n - 1] = 0.0f; /* zero gradient: 0/(0 + eps) */
                TU_SET_ISA(AB_ISA_SCALAR);
                assert_int_equal(ab_adamw_step(pw, g + OFF, mw, vw, n, step, &cfg), AB_OK);
                TU_SET_ISA(isas[ii]);
                assert_int_equal(ab_adamw_step(pg + OFF, g + OFF, mg + OFF, vg + OFF, n, step, &cfg), AB_OK);
                double bc1 = 1.0 - pow(cfg.beta1, step), bc2 = 1.0 - pow(cfg.beta2, step);
                for (size_t i = 0; i < n; i++) {
                    ms[i] = cfg.beta1 * ms[i] + (1.0 - cfg.beta1) * fabs(g[OFF + i]);
                    ps[i] += cfg.lr * (ms[i] / bc1 / (sqrt(vw[i] / bc2) + cfg.eps) +
                                       cfg.weight_decay * fabs(pw[i]));
                }
            }
            for (size_t i = 0; i < n; i++) {
                tu_worst(&worst, rel(mg[OFF + i], mw[i], ms[i] + 1e-30));
                tu_worst(&worst, rel(vg[OFF + i], vw[i], vw[i] + 1e-30));
                tu_worst(&worst, rel(pg[OFF + i], pw[i], ps[i]));
            }
        }
        /* a few roundings of eps/2 per step, three steps feeding forward */
        check("adamw p/m/v (rel to terms)", isas[ii], worst, 8.0 * EPS);
    }
    free(p0); free(g); free(pw); free(mw); free(vw); free(pg); free(mg); free(vg); free(ms); free(ps);
}

/* ---------------------------------------------------------------------------------------------- */
/* reductions, clipping (scale), SAM step (axpy_save)                                             */

static size_t reduce_len(size_t li, size_t *n_out) {
    /* LENS plus lengths around the reduction block and several blocks */
    static const size_t extra[] = {AB_REDUCE_BLOCK - 1, AB_REDUCE_BLOCK, AB_REDUCE_BLOCK + 1,
                                   3 * AB_REDUCE_BLOCK + 29};
    *n_out = N_LENS + sizeof extra / sizeof extra[0];
    return li < N_LENS ? LENS[li] : extra[li - N_LENS];
}

/* Both paths accumulate x*x (exact in double) in double, in different orders, and round to float
 * once: within 1 float ulp of each other (relative 2^-23). For dot products the order can matter
 * relative to the result when terms cancel, so the bound is relative to |dot| + 2^-30 sum|x y|. */
static void test_reductions_vs_scalar(void **state) {
    (void)state;
    size_t max_n = 3 * AB_REDUCE_BLOCK + 29 + OFF, count;
    float *x = tu_alloc(max_n), *y = tu_alloc(max_n);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        reduce_len(0, &count);
        for (size_t li = 0; li < count; li++) {
            size_t n = reduce_len(li, &count);
            ab_rng_seed(&rng, 1000 + li, 0);
            for (size_t i = 0; i < n; i++) {
                x[OFF + i] = ldexpf(ab_rng_uniform(&rng) - 0.5f, (int)ab_rng_below(&rng, 40) - 20);
                y[OFF + i] = ab_rng_uniform(&rng) - 0.5f;
            }
            float nw, ng, dw, dg;
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_l2_norm(x + OFF, n, &nw), AB_OK);
            assert_int_equal(ab_dot(x + OFF, y + OFF, n, &dw), AB_OK);
            TU_SET_ISA(isas[ii]);
            assert_int_equal(ab_l2_norm(x + OFF, n, &ng), AB_OK);
            assert_int_equal(ab_dot(x + OFF, y + OFF, n, &dg), AB_OK);
            double abs_dot = 0.0;
            for (size_t i = 0; i < n; i++) abs_dot += fabs((double)x[OFF + i] * y[OFF + i]);
            tu_worst(&worst, rel(ng, nw, fabs(nw)));
            tu_worst(&worst, rel(dg, dw, fabs(dw) + 0x1p-30 * abs_dot));
            /* NaN / inf in the tail reach the result on every path */
            x[OFF + n - 1] = NAN;
            assert_int_equal(ab_l2_norm(x + OFF, n, &ng), AB_OK);
            assert_true(isnan(ng));
            x[OFF + n - 1] = INFINITY;
            assert_int_equal(ab_l2_norm(x + OFF, n, &ng), AB_OK);
            assert_true(isinf(ng));
        }
        check("l2_norm/dot (rel)", isas[ii], worst, EPS);
    }
    free(x);
    free(y);
}

/* ab_clip_grad_norm: g *= max_norm / ||g|| (the scale kernel): one multiply per element, by a
 * factor that may differ by an ulp between paths (the norm). */
static void test_clip_scale_vs_scalar(void **state) {
    (void)state;
    float *g = tu_alloc(MAX_LEN + OFF), *want = tu_alloc(MAX_LEN), *got = tu_alloc(MAX_LEN + OFF);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t li = 0; li < N_LENS; li++) {
            size_t n = LENS[li];
            ab_rng_seed(&rng, 1100 + li, 0);
            tu_fill_uniform(g + OFF, n, -3.0f, 3.0f, &rng);
            memcpy(want, g + OFF, n * sizeof(float));
            memcpy(got + OFF, g + OFF, n * sizeof(float));
            float bw, bg;
            TU_SET_ISA(AB_ISA_SCALAR);
            assert_int_equal(ab_clip_grad_norm(want, n, 0.125f, &bw), AB_OK);
            TU_SET_ISA(isas[ii]);
            assert_int_equal(ab_clip_grad_norm(got + OFF, n, 0.125f, &bg), AB_OK);
            tu_worst(&worst, rel(bg, bw, fabs(bw)));
            for (size_t i = 0; i < n; i++) tu_worst(&worst, rel(got[OFF + i], want[i], fabs(want[i]) + 1e-30));
        }
        check("clip_grad_norm / scale (rel)", isas[ii], worst, 3.0 * EPS);
    }
    free(g);
    free(want);
    free(got);
}

/* ab_sam_step: saved is a bit-exact copy of theta; theta' = theta + s g with s = rho/(||g|| + eps)
 * (FMA on the SIMD paths: one rounding instead of two, and s may differ by an ulp through the
 * norm), relative to |theta| + |s g|. The last length is above the streaming-store threshold of the
 * SIMD paths (4M floats) with saved at an odd float offset, so the aligned head, the streaming
 * middle and the tail all run. */
static void test_sam_step_vs_scalar(void **state) {
    (void)state;
    size_t big = TU_SIZE(((size_t)1 << 22) + 37, 5003); /* > MAX_LEN */
    size_t lens[N_LENS + 1];
    memcpy(lens, LENS, sizeof LENS);
    lens[N_LENS] = big;
    float *th0 = tu_alloc(big), *g = tu_alloc(big + OFF), *tw = tu_alloc(big), *sw = tu_alloc(big);
    float *tg = tu_alloc(big + OFF), *sg = tu_alloc(big + 3);
    ab_rng rng;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        double worst = 0.0;
        for (size_t li = 0; li <= N_LENS; li++) {
            size_t n = lens[li];
            ab_rng_seed(&rng, 1200 + li, 0);
            tu_fill_uniform(th0, n, -1.0f, 1.0f, &rng);
            tu_fill_uniform(g + OFF, n, -1.0f, 1.0f, &rng);
            for (int with_saved = 0; with_saved <= 1; with_saved++) {
                float nw, ng, rho = with_saved ? -0.1f : 0.05f;
                memcpy(tw, th0, n * sizeof(float));
                memcpy(tg + OFF, th0, n * sizeof(float));
                TU_SET_ISA(AB_ISA_SCALAR);
                assert_int_equal(ab_sam_step(tw, with_saved ? sw : NULL, g + OFF, n, rho, &nw), AB_OK);
                TU_SET_ISA(isas[ii]);
                assert_int_equal(ab_sam_step(tg + OFF, with_saved ? sg + 3 : NULL, g + OFF, n, rho, &ng), AB_OK);
                if (with_saved) assert_memory_equal(sg + 3, th0, n * sizeof(float));
                double s = fabs((double)rho / nw);
                for (size_t i = 0; i < n; i++)
                    tu_worst(&worst, rel(tg[OFF + i], tw[i], fabs(th0[i]) + s * fabs(g[OFF + i])));
                /* restore gives theta back bit for bit */
                if (with_saved) {
                    assert_int_equal(ab_sam_restore(tg + OFF, sg + 3, n), AB_OK);
                    assert_memory_equal(tg + OFF, th0, n * sizeof(float));
                }
            }
        }
        check("sam_step theta (rel to terms)", isas[ii], worst, 2.0 * EPS);
    }
    free(th0); free(g); free(tw); free(sw); free(tg); free(sg);
}

/* ---------------------------------------------------------------------------------------------- */
/* dispatch                                                                                       */

/* Each ISA runs its own kernels: on a path with SIMD kernels, exp of values where the FMA and
 * the scalar rounding differ must differ somewhere (otherwise this file would be testing the
 * scalar path twice). Also: asking for an ISA the CPU lacks is an error, not a crash. */
static void test_paths_are_distinct(void **state) {
    (void)state;
    enum { N = 4096 };
    float *x = tu_alloc(N), *a = tu_alloc(N), *b = tu_alloc(N);
    ab_rng rng;
    ab_rng_seed(&rng, 77, 0);
    tu_fill_uniform(x, N, -80.0f, 80.0f, &rng);
    TU_SET_ISA(AB_ISA_SCALAR);
    assert_int_equal(ab_vexpf(a, x, N), AB_OK);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        if (isas[ii] == AB_ISA_SCALAR) continue;
        TU_SET_ISA(isas[ii]);
        assert_int_equal(ab_get_isa(), isas[ii]);
        assert_int_equal(ab_vexpf(b, x, N), AB_OK);
        assert_true(memcmp(a, b, N * sizeof(float)) != 0);
    }
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        if (!ab_cpu_supports((ab_isa)i)) {
            assert_int_equal(ab_set_isa((ab_isa)i), AB_ERR_ISA);
            printf("NOTE %s not available here: ab_set_isa returns AB_ERR_ISA\n", ab_isa_name((ab_isa)i));
        }
    }
    if (n_isa == 1) printf("SKIP no SIMD path on this machine: only scalar vs scalar was checked\n");
    free(x);
    free(a);
    free(b);
}

static int teardown_isa(void **state) {
    (void)state;
    ab_set_isa(ab_best_isa());
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vexpf_vs_scalar),
        cmocka_unit_test(test_vexpf_special_values),
        cmocka_unit_test(test_softmax_vs_scalar),
        cmocka_unit_test(test_softmax_special_values),
        cmocka_unit_test(test_softmax_backward_vs_scalar),
        cmocka_unit_test(test_log_softmax_vs_scalar),
        cmocka_unit_test(test_cross_entropy_vs_scalar),
        cmocka_unit_test(test_layernorm_forward_vs_scalar),
        cmocka_unit_test(test_layernorm_backward_vs_scalar),
        cmocka_unit_test(test_gelu_vs_scalar),
        cmocka_unit_test(test_gelu_special_values),
        cmocka_unit_test(test_add_bit_exact),
        cmocka_unit_test(test_adamw_vs_scalar),
        cmocka_unit_test(test_reductions_vs_scalar),
        cmocka_unit_test(test_clip_scale_vs_scalar),
        cmocka_unit_test(test_sam_step_vs_scalar),
        cmocka_unit_test(test_paths_are_distinct),
    };
    return cmocka_run_group_tests_name("simd", tests, NULL, teardown_isa);
}
