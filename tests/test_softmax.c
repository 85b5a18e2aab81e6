/* tests/test_softmax.c - ab_expf / ab_vexpf, ab_softmax (+ causal), ab_softmax_backward,
 * ab_log_softmax and ab_cross_entropy against independent double-precision references written
 * here from the mathematical definitions (libm exp() and GSL's gsl_sf_exp for exp; max-shifted
 * double softmax / log-sum-exp for the rest; 4th-order central finite differences in double for
 * every gradient). Every kernel comparison runs on every ISA path this machine supports
 * (tu_isas()), so the AVX2 / AVX-512 kernels are held to the same stated bounds as the scalar one.
 *
 * Units: U = 2^-24, the unit roundoff of float (half an ulp of 1). One ulp of a float y is at most
 * 2U|y|, so the documented 2-ulp exp is a relative error <= 4U. Each bound below is a worst-case
 * rounding-error budget of the computation, written next to its assertion:
 *   - softmax:   exp of x - max (x - max rounded: |x - max| U; exp: 4U), the row sum (cols U for any
 *                summation order of positive terms, plus the 4U + range U of its terms), 1/sum and
 *                the product (2U): (cols + 2 range + 10) U relative, range = max - min of the row.
 *   - log_softmax / CE loss: absolute errors of x - max, log(sum) and the final subtraction,
 *                measured as |got - want| / (|want| + 1).
 *   - gradients: relative to the natural scale of each element (stated per test).
 * Shapes use column counts that are not multiples of 8 or 16 and unaligned pointers (offset one
 * float into the allocation) so vector tails and unaligned loads are exercised.
 */
#include "testutil.h"
#include <float.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_sf_exp.h>

#define U (1.0 / 16777216.0)              /* 2^-24 */
#define SUBNORMAL_STEP (ldexp(1.0, -149)) /* the smallest positive float */
#define EXP_ZERO_BELOW (-103.98f)         /* header: "0 below -103.98" */
#define OFF 1                             /* arrays start one float into their allocation */
#define FD_REL_STEP 1e-3                  /* finite-difference step relative to max(1, |x|) */

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                        */

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
/* floats on a monotone integer line (-0 and +0 both at 0) and back */
static int64_t ord_of(float f) {
    uint32_t u = bits_of(f);
    return (u & 0x80000000u) ? -(int64_t)(u & 0x7fffffffu) : (int64_t)u;
}
static float float_of_ord(int64_t o) {
    return o >= 0 ? float_of((uint32_t)o) : float_of(0x80000000u | (uint32_t)(-o));
}

/* |got - exact| in ulps of the exact value (ulp = 2^(e-24) for exact in [2^(e-1), 2^e)), as
 * tools/exp_sweep.c measures the documented bound. */
static double ulp_err(float got, double exact) {
    int e;
    frexp(exact, &e);
    double ulp = ldexp(1.0, e - 24);
    if (ulp < SUBNORMAL_STEP) ulp = SUBNORMAL_STEP;
    return fabs((double)got - exact) / ulp;
}


static int n_isas(ab_isa *isas) { return tu_isas(isas); }

static float *alloc_off(size_t n) { return tu_alloc(n + OFF) + OFF; }
static void free_off(float *p) { free(p - OFF); }

static void fill_seq(float *x, size_t n, float lo, float hi, uint64_t seed) {
    ab_rng rng;
    ab_rng_seed(&rng, seed, 7);
    tu_fill_uniform(x, n, lo, hi, &rng);
}


static double row_range(const float *x, int n) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < n; j++) {
        lo = x[j] < lo ? x[j] : lo;
        hi = x[j] > hi ? x[j] : hi;
    }
    return (double)hi - (double)lo;
}

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs((double)x[i]) > m ? fabs((double)x[i]) : m;
    return m;
}

/* ---------------------------------------------------------------------------------------------- */
/* double-precision references, from the definitions                                             */

/* softmax_j = exp(v_j - m) / sum_k exp(v_k - m), m = max v (the shift cancels mathematically) */
static void ref_softmax_d(double *y, const double *v, int n) {
    double m = v[0], s = 0.0;
    for (int j = 1; j < n; j++) m = v[j] > m ? v[j] : m;
    for (int j = 0; j < n; j++) s += exp(v[j] - m);
    for (int j = 0; j < n; j++) y[j] = exp(v[j] - m) / s;
}
/* log(sum_k exp(v_k)) = m + log(sum_k exp(v_k - m)), returned as the pair (m, log sum) so that
 * v_j - lse can be formed as (v_j - m) - log sum without losing log sum next to a huge m */
static double ref_lse_parts(const double *v, int n, double *m_out) {
    double m = v[0], s = 0.0;
    for (int j = 1; j < n; j++) m = v[j] > m ? v[j] : m;
    for (int j = 0; j < n; j++) s += exp(v[j] - m);
    *m_out = m;
    return log(s);
}
static double ref_lse_d(const double *v, int n) {
    double m, ls = ref_lse_parts(v, n, &m);
    return m + ls;
}
static void to_double(double *d, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = (double)f[i];
}

/* d f / d v_j with step FD_REL_STEP * max(1, |v_j|) (tu_fd_partial: 4th-order central difference). */
static double fd_partial(tu_fd_fn f, const void *ctx, double *v, int j) {
    return tu_fd_partial(f, ctx, v, j, FD_REL_STEP * (fabs(v[j]) > 1.0 ? fabs(v[j]) : 1.0));
}

/* ---------------------------------------------------------------------------------------------- */
/* exp                                                                                            */

/* Accumulates how far y is from exp(x) under the documented contract: ulps for normal results,
 * units of 2^-149 for subnormal ones; exact rules (NaN, +inf, 0) count violations. */
typedef struct exp_stats {
    double ulp, ulp_x; /* worst ulp error (normal results) and where */
    double sub;        /* worst |y - exp(x)| / 2^-149 (subnormal results) */
    long n_normal, n_sub; /* how many of each were checked */
    long bad;          /* violated exact rules */
    float bad_x, bad_y;
} exp_stats;

static void exp_check(exp_stats *st, float x, float y) {
    int ok = 1;
    if (isnan(x)) {
        ok = isnan(y);
    } else if (x > AB_EXPF_MAX_X) {
        ok = y == INFINITY;
    } else if (x < EXP_ZERO_BELOW) {
        ok = y == 0.0f;
    } else if (x == 0.0f) {
        ok = y == 1.0f;
    } else {
        double ex = exp((double)x);
        if (x >= AB_EXPF_MIN_NORMAL_X) {
            double e = ulp_err(y, ex);
            st->n_normal++;
            if (!(e <= st->ulp)) {
                st->ulp = e;
                st->ulp_x = x;
            }
        } else {
            tu_worst(&st->sub, fabs((double)y - ex) / SUBNORMAL_STEP);
            st->n_sub++;
            ok = y >= 0.0f;
        }
    }
    if (!ok) {
        if (!st->bad) {
            st->bad_x = x;
            st->bad_y = y;
        }
        st->bad++;
    }
}

static void exp_assert(const exp_stats *st, const char *who) {
    char what[128];
    if (st->bad)
        fail_msg("%s: %ld special-value rule(s) violated, first exp(%.9g) = %.9g", who, st->bad,
                 (double)st->bad_x, (double)st->bad_y);
    if (st->n_normal) {
        snprintf(what, sizeof what, "%s normal results (ulp, worst x=%.9g)", who, st->ulp_x);
        TU_ASSERT_ERR(what, st->ulp, (double)AB_EXPF_MAX_ULP); /* header: <= AB_EXPF_MAX_ULP ulp */
    }
    if (st->n_sub) {
        snprintf(what, sizeof what, "%s subnormal results (units of 2^-149)", who);
        TU_ASSERT_ERR(what, st->sub, 1.0); /* header: absolute error <= 2^-149 */
    }
}

/* The sweep: N evenly spaced float bit patterns over [AB_EXPF_MIN_NORMAL_X, AB_EXPF_MAX_X], plus
 * every float within 256 ulps of both ends and of 0. */
static float *sweep_args(size_t *count) {
    size_t n_even = (size_t)TU_SIZE(2000000, 60000), n_near = 3 * 513;
    float *xs = tu_alloc(n_even + n_near);
    int64_t lo = ord_of(AB_EXPF_MIN_NORMAL_X), hi = ord_of(AB_EXPF_MAX_X);
    size_t c = 0;
    for (size_t i = 0; i < n_even; i++)
        xs[c++] = float_of_ord(lo + (int64_t)i * (hi - lo) / (int64_t)(n_even - 1));
    const int64_t centres[3] = {lo + 256, 0, hi - 256};
    for (int k = 0; k < 3; k++)
        for (int64_t d = -256; d <= 256; d++) xs[c++] = float_of_ord(centres[k] + d);
    *count = c;
    return xs;
}

static void test_expf_sweep_vs_libm_and_gsl(void **state) {
    (void)state;
    size_t n;
    float *xs = sweep_args(&n);
    exp_stats st = {0};
    double worst_gsl = 0.0, worst_ref_gap = 0.0;
    for (size_t i = 0; i < n; i++) {
        float y = ab_expf(xs[i]);
        exp_check(&st, xs[i], y);
        gsl_sf_result r;
        assert_int_equal(gsl_sf_exp_e((double)xs[i], &r), GSL_SUCCESS);
        tu_worst(&worst_gsl, ulp_err(y, r.val));
        tu_worst(&worst_ref_gap, fabs(r.val - exp((double)xs[i])) / fabs(r.val)); /* the two oracles */
    }
    assert_true(xs[0] == AB_EXPF_MIN_NORMAL_X && n > 1000);
    assert_true(st.n_normal >= (long)TU_SIZE(2000000, 60000));
    exp_assert(&st, "ab_expf vs libm exp");
    TU_ASSERT_ERR("ab_expf vs gsl_sf_exp (ulp)", worst_gsl, (double)AB_EXPF_MAX_ULP);
    /* the references agree to double precision (a few 1e-16), so either can judge 2 float ulps */
    TU_ASSERT_ERR("libm exp vs gsl_sf_exp (relative)", worst_ref_gap, 1e-14);
    free(xs);
}

/* Every float whose exp is subnormal, and on to -110 (results 0): absolute error <= 2^-149. */
static float *subnormal_args(size_t *count) {
    int64_t lo = ord_of(-110.0f), hi = ord_of(AB_EXPF_MIN_NORMAL_X) - 1;
    int64_t stride = TU_SIZE(1, 41);
    size_t cap = (size_t)((hi - lo) / stride + 2);
    float *xs = tu_alloc(cap);
    size_t c = 0;
    for (int64_t o = lo; o <= hi; o += stride) xs[c++] = float_of_ord(o);
    xs[c++] = float_of_ord(hi);
    *count = c;
    return xs;
}

static void test_expf_subnormal_results(void **state) {
    (void)state;
    size_t n;
    float *xs = subnormal_args(&n), *ys = tu_alloc(n);
    exp_stats st = {0};
    for (size_t i = 0; i < n; i++) exp_check(&st, xs[i], ab_expf(xs[i]));
    exp_assert(&st, "ab_expf subnormal range");
    assert_true(st.n_sub > TU_SIZE(2000000, 40000) && st.sub > 0.0); /* subnormal results seen */
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        TU_SET_ISA(isas[k]);
        assert_int_equal(ab_vexpf(ys, xs, n), AB_OK);
        exp_stats sv = {0};
        for (size_t i = 0; i < n; i++) exp_check(&sv, xs[i], ys[i]);
        char who[64];
        snprintf(who, sizeof who, "ab_vexpf [%s] subnormal range", ab_isa_name(isas[k]));
        exp_assert(&sv, who);
    }
    free(xs);
    free(ys);
}

static const float EXP_SPECIALS[] = {
    NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1.0f, -1.0f, 1e-30f, -1e-30f, FLT_MIN,
    AB_EXPF_MAX_X, 88.7228394f /* next float above AB_EXPF_MAX_X */, 89.0f, 100.0f, 1e10f, FLT_MAX,
    AB_EXPF_MIN_NORMAL_X, -87.3365479f /* next below */, -100.0f, -103.97f, -103.972084045410f,
    -103.98f, -104.0f, -150.0f, -1e10f, -FLT_MAX};
#define N_EXP_SPECIALS (sizeof EXP_SPECIALS / sizeof EXP_SPECIALS[0])

static void test_expf_special_values(void **state) {
    (void)state;
    assert_true(isnan(ab_expf(NAN)));
    assert_true(isnan(ab_expf(-NAN)));
    assert_true(ab_expf(INFINITY) == INFINITY);
    assert_true(ab_expf(nextafterf(AB_EXPF_MAX_X, INFINITY)) == INFINITY);
    assert_true(ab_expf(100.0f) == INFINITY);
    assert_true(ab_expf(FLT_MAX) == INFINITY);
    assert_true(bits_of(ab_expf(-INFINITY)) == 0u); /* +0, not -0 */
    assert_true(bits_of(ab_expf(-104.0f)) == 0u);
    assert_true(bits_of(ab_expf(-1e10f)) == 0u);
    assert_true(bits_of(ab_expf(-FLT_MAX)) == 0u);
    assert_true(ab_expf(0.0f) == 1.0f); /* exactly */
    assert_true(ab_expf(-0.0f) == 1.0f);
    float top = ab_expf(AB_EXPF_MAX_X); /* the last finite result, within 2 ulp of exp */
    assert_true(isfinite(top) && top > 3.4e38f);
    float low = ab_expf(AB_EXPF_MIN_NORMAL_X); /* >= FLT_MIN - 2 ulp */
    assert_true(low >= FLT_MIN * (1.0f - 4.0f * FLT_EPSILON));
    exp_stats st = {0};
    for (size_t i = 0; i < N_EXP_SPECIALS; i++) exp_check(&st, EXP_SPECIALS[i], ab_expf(EXP_SPECIALS[i]));
    exp_assert(&st, "ab_expf special values");
}

/* ab_vexpf on every path: the sweep (out of place, unaligned), in place (same bits), specials at
 * every lane position, every length 0..70 and around 128/1000 with guard cells on both sides. */
static void test_vexpf_every_isa(void **state) {
    (void)state;
    size_t n;
    float *xs = sweep_args(&n);
    float *ys = alloc_off(n), *inplace = alloc_off(n);
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        char who[64];
        TU_SET_ISA(isas[k]);
        assert_int_equal(ab_vexpf(ys, xs, n), AB_OK);
        exp_stats st = {0};
        for (size_t i = 0; i < n; i++) exp_check(&st, xs[i], ys[i]);
        snprintf(who, sizeof who, "ab_vexpf [%s] sweep", ab_isa_name(isas[k]));
        exp_assert(&st, who);
        /* in place: the same bits as out of place (same inputs, same path) */
        memcpy(inplace, xs, n * sizeof(float));
        assert_int_equal(ab_vexpf(inplace, inplace, n), AB_OK);
        assert_memory_equal(inplace, ys, n * sizeof(float));
        if (isas[k] == AB_ISA_SCALAR) /* the scalar path applies ab_expf itself */
            for (size_t i = 0; i < n; i++) assert_true(bits_of(ys[i]) == bits_of(ab_expf(xs[i])));

        /* specials in every lane of a 2x16+5 vector */
        enum { N = 37 };
        float x[N], y[N];
        exp_stats ss = {0};
        for (size_t shift = 0; shift < N; shift++) {
            for (size_t i = 0; i < N; i++) x[i] = EXP_SPECIALS[(i + shift) % N_EXP_SPECIALS];
            assert_int_equal(ab_vexpf(y, x, N), AB_OK);
            for (size_t i = 0; i < N; i++) exp_check(&ss, x[i], y[i]);
        }
        snprintf(who, sizeof who, "ab_vexpf [%s] special values", ab_isa_name(isas[k]));
        exp_assert(&ss, who);

        /* lengths, offsets, guards, in-place */
        enum { GUARD = 20 };
        const float sentinel = 12345.0f;
        exp_stats sl = {0};
        size_t lens[80], n_lens = 0;
        for (size_t len = 0; len <= 70; len++) lens[n_lens++] = len;
        const size_t more[] = {127, 128, 129, 1000, 1001};
        for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) lens[n_lens++] = more[i];
        for (size_t li = 0; li < n_lens; li++) {
            size_t len = lens[li];
            for (size_t off = 0; off < 4; off += 3) {
                float *xb = tu_alloc(len + off); /* exact size: reads past the end are caught */
                float *yb = tu_alloc(len + off + 2 * GUARD);
                fill_seq(xb + off, len, -110.0f, 95.0f, 100 + len);
                for (size_t i = 0; i < len; i += 7) xb[off + i] = EXP_SPECIALS[(i / 7) % N_EXP_SPECIALS];
                for (size_t i = 0; i < len + off + 2 * GUARD; i++) yb[i] = sentinel;
                float *yy = yb + GUARD + off;
                assert_int_equal(ab_vexpf(yy, xb + off, len), AB_OK);
                for (size_t i = 0; i < len; i++) exp_check(&sl, xb[off + i], yy[i]);
                for (size_t i = 0; i < GUARD + off; i++) assert_true(yb[i] == sentinel);
                for (size_t i = 0; i < GUARD; i++) assert_true(yy[len + i] == sentinel);
                assert_int_equal(ab_vexpf(xb + off, xb + off, len), AB_OK); /* in place */
                if (len) assert_memory_equal(xb + off, yy, len * sizeof(float));
                free(xb);
                free(yb);
            }
        }
        snprintf(who, sizeof who, "ab_vexpf [%s] lengths 0..1001", ab_isa_name(isas[k]));
        exp_assert(&sl, who);
    }
    free(xs);
    free_off(ys);
    free_off(inplace);
}

static void test_vexpf_args(void **state) {
    (void)state;
    float x[3] = {0.0f, 1.0f, 2.0f}, y[3];
    assert_int_equal(ab_vexpf(NULL, x, 3), AB_ERR_NULL);
    assert_int_equal(ab_vexpf(y, NULL, 3), AB_ERR_NULL);
    assert_int_equal(ab_vexpf(NULL, NULL, 0), AB_OK); /* zero length: no-op */
    y[0] = -5.0f;
    assert_int_equal(ab_vexpf(y, x, 0), AB_OK);
    assert_true(y[0] == -5.0f);
}

/* ---------------------------------------------------------------------------------------------- */
/* softmax                                                                                        */

static const int SM_SHAPES[][2] = {{1, 1},  {1, 7},  {3, 16}, {4, 17}, {5, 31},  {2, 64},
                                   {8, 8},  {7, 100}, {16, 33}, {3, 257}, {2, 1000}};
#define N_SM_SHAPES (sizeof SM_SHAPES / sizeof SM_SHAPES[0])
/* input families: uniform [-a, a], and a large common offset (x - max exact by Sterbenz) */
static const float SM_SPREAD[] = {1.0f, 8.0f, 20.0f};
static const float SM_OFFSET[] = {0.0f, 0.0f, 0.0f, 1000.0f};
#define N_SM_INPUTS 4

static void sm_input(float *x, int rows, int cols, int family, uint64_t seed) {
    float a = SM_SPREAD[family < 3 ? family : 1], o = SM_OFFSET[family];
    fill_seq(x, (size_t)rows * cols, o - a, o + a, seed);
}

/* double softmax of each row's valid prefix (all of it unless causal), zeros after */
static void ref_softmax(double *y, const float *x, int rows, int cols, int causal) {
    double *v = (double *)malloc(sizeof(double) * (size_t)cols);
    assert_non_null(v);
    for (int r = 0; r < rows; r++) {
        int valid = causal ? r + cols - rows + 1 : cols;
        to_double(v, x + (size_t)r * cols, (size_t)valid);
        ref_softmax_d(y + (size_t)r * cols, v, valid);
        for (int j = valid; j < cols; j++) y[(size_t)r * cols + j] = 0.0;
    }
    free(v);
}

/* (cols + 2 range + 10) U: see the header comment */
static double softmax_bound(const float *x, int rows, int cols, int causal) {
    double range = 0.0;
    for (int r = 0; r < rows; r++) {
        int valid = causal ? r + cols - rows + 1 : cols;
        double rg = row_range(x + (size_t)r * cols, valid);
        range = rg > range ? rg : range;
    }
    return ((double)cols + 2.0 * range + 10.0) * U;
}

static double row_sum_err(const float *y, int rows, int cols) {
    double worst = 0.0;
    for (int r = 0; r < rows; r++) {
        double s = 0.0;
        for (int j = 0; j < cols; j++) s += y[(size_t)r * cols + j];
        tu_worst(&worst, fabs(s - 1.0));
    }
    return worst;
}

static void check_softmax_case(ab_isa isa, int rows, int cols, int causal, int family,
                               double *worst_rel, double *worst_sum) {
    size_t n = (size_t)rows * cols;
    float *x = alloc_off(n), *y = alloc_off(n), *z = alloc_off(n);
    double *want = (double *)malloc(sizeof(double) * n);
    assert_non_null(want);
    sm_input(x, rows, cols, family, 1000 * (uint64_t)rows + (uint64_t)cols + 77 * (uint64_t)family);
    if (causal) /* masked inputs large: they must not enter the max or the sum */
        for (int r = 0; r < rows; r++)
            for (int j = r + cols - rows + 1; j < cols; j++) x[(size_t)r * cols + j] = 60.0f + (float)j;
    for (size_t i = 0; i < n; i++) y[i] = NAN; /* every output must be written */
    TU_SET_ISA(isa);
    assert_int_equal(ab_softmax(y, x, rows, cols, causal), AB_OK);
    ref_softmax(want, x, rows, cols, causal);
    for (int r = 0; r < rows; r++) /* masked entries exactly 0 */
        for (int j = causal ? r + cols - rows + 1 : cols; j < cols; j++)
            assert_true(y[(size_t)r * cols + j] == 0.0f);
    char what[128];
    double e = tu_max_rel_err(y, want, n, 1e-30); /* relative, every entry (none underflow) */
    snprintf(what, sizeof what, "softmax%s %dx%d in%d [%s] vs double", causal ? " causal" : "",
             rows, cols, family, ab_isa_name(isa));
    TU_ASSERT_ERR(what, e, softmax_bound(x, rows, cols, causal));
    tu_worst(worst_rel, e);
    /* |sum y - 1| <= sum |y - want| <= the element bound */
    double es = row_sum_err(y, rows, cols);
    snprintf(what, sizeof what, "softmax%s %dx%d in%d [%s] |row sum - 1|", causal ? " causal" : "",
             rows, cols, family, ab_isa_name(isa));
    TU_ASSERT_ERR(what, es, softmax_bound(x, rows, cols, causal));
    tu_worst(worst_sum, es);
    /* in place: the same bits (same inputs, same path) */
    memcpy(z, x, n * sizeof(float));
    assert_int_equal(ab_softmax(z, z, rows, cols, causal), AB_OK);
    assert_memory_equal(z, y, n * sizeof(float));
    free_off(x);
    free_off(y);
    free_off(z);
    free(want);
}

static void test_softmax_vs_double(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        double wr = 0.0, ws = 0.0;
        for (size_t s = 0; s < N_SM_SHAPES; s++)
            for (int fam = 0; fam < N_SM_INPUTS; fam++)
                check_softmax_case(isas[k], SM_SHAPES[s][0], SM_SHAPES[s][1], 0, fam, &wr, &ws);
        if (getenv("AB_TEST_VERBOSE"))
            printf("REF %-48s max rel %.3e, max |sum-1| %.3e\n", ab_isa_name(isas[k]), wr, ws);
    }
}

static const int CAUSAL_SHAPES[][2] = {{1, 1}, {1, 9}, {4, 4}, {5, 9}, {16, 16}, {17, 17},
                                       {7, 33}, {3, 100}, {33, 40}};
#define N_CAUSAL_SHAPES (sizeof CAUSAL_SHAPES / sizeof CAUSAL_SHAPES[0])

static void test_softmax_causal(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        double wr = 0.0, ws = 0.0;
        for (size_t s = 0; s < N_CAUSAL_SHAPES; s++)
            for (int fam = 0; fam < 3; fam++)
                check_softmax_case(isas[k], CAUSAL_SHAPES[s][0], CAUSAL_SHAPES[s][1], 1, fam, &wr, &ws);
    }
    /* explicit pattern: 2 x 4, row 0 sees columns 0..2, row 1 sees 0..3 */
    float x[8] = {0, 0, 0, 5, 1, 1, 1, 1}, y[8];
    assert_int_equal(ab_softmax(y, x, 2, 4, 1), AB_OK);
    for (int j = 0; j < 3; j++) assert_true(fabs(y[j] - 1.0 / 3.0) <= 8 * U);
    assert_true(y[3] == 0.0f);
    for (int j = 4; j < 8; j++) assert_true(fabs(y[j] - 0.25) <= 8 * U);
    /* rows > cols with causal: no valid column for the first rows */
    assert_int_equal(ab_softmax(y, x, 4, 2, 1), AB_ERR_SHAPE);
    assert_int_equal(ab_softmax(y, x, 2, 1, 1), AB_ERR_SHAPE);
    assert_int_equal(ab_softmax(y, x, 4, 2, 0), AB_OK); /* fine without the mask */
    assert_int_equal(ab_softmax(y, x, 0, 3, 1), AB_OK);
}

/* Finite but enormous inputs: max subtraction keeps everything finite. */
static void test_softmax_huge_inputs(void **state) {
    (void)state;
    enum { R = 4, C = 21 };
    float x[R * C], y[R * C];
    double want[R * C];
    for (int j = 0; j < C; j++) {
        x[0 * C + j] = j % 5 == 0 ? 1e30f : (j % 2 ? -1e30f : 3.0f); /* 5 ties at 1e30 */
        x[1 * C + j] = -1e30f;                                          /* uniform */
        x[2 * C + j] = j == 7 ? FLT_MAX : -FLT_MAX;                    /* x - max = -inf */
        x[3 * C + j] = 1e30f;
    }
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    ref_softmax(want, x, R, C, 0);
    for (int k = 0; k < ni; k++) {
        TU_SET_ISA(isas[k]);
        assert_int_equal(ab_softmax(y, x, R, C, 0), AB_OK);
        for (int i = 0; i < R * C; i++) assert_true(isfinite(y[i]) && y[i] >= 0.0f);
        char what[96];
        snprintf(what, sizeof what, "softmax huge inputs [%s] vs double", ab_isa_name(isas[k]));
        /* surviving entries all have x == max: exp exact (1), so only the sum and division: (C + 10) U */
        TU_ASSERT_ERR(what, tu_max_rel_err(y, want, R * C, 1e-30), (C + 10.0) * U);
        assert_true(y[2 * C + 7] == 1.0f && y[2 * C + 8] == 0.0f);
        /* causal, huge values in the masked part */
        float xc[2 * 3] = {-1e30f, 1e30f, FLT_MAX, 1e30f, 1e30f, -FLT_MAX}, yc[6];
        assert_int_equal(ab_softmax(yc, xc, 2, 3, 1), AB_OK);
        assert_true(yc[0] == 0.0f && yc[1] == 1.0f && yc[2] == 0.0f);
        assert_true(fabs(yc[3] - 0.5) <= 4 * U && fabs(yc[4] - 0.5) <= 4 * U && yc[5] == 0.0f);
    }
}

static void test_softmax_args(void **state) {
    (void)state;
    float x[6] = {0}, y[6];
    assert_int_equal(ab_softmax(NULL, x, 2, 3, 0), AB_ERR_NULL);
    assert_int_equal(ab_softmax(y, NULL, 2, 3, 0), AB_ERR_NULL);
    assert_int_equal(ab_softmax(y, x, -1, 3, 0), AB_ERR_SHAPE);
    assert_int_equal(ab_softmax(y, x, 2, -3, 0), AB_ERR_SHAPE);
    assert_int_equal(ab_softmax(y, x, -1, 3, 1), AB_ERR_SHAPE);
    assert_int_equal(ab_softmax(NULL, NULL, 0, 3, 0), AB_OK);
    assert_int_equal(ab_softmax(NULL, NULL, 2, 0, 0), AB_OK);
    assert_int_equal(ab_softmax(NULL, NULL, 0, 0, 1), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* softmax backward                                                                               */

/* L(v) = sum_j w_j softmax(v)_j for one row */
typedef struct { const double *w; int n; } sm_obj_ctx;
static double sm_objective(const double *v, const void *ctx) {
    const sm_obj_ctx *c = (const sm_obj_ctx *)ctx;
    double y[1100], s = 0.0;
    assert_true(c->n <= 1100);
    ref_softmax_d(y, v, c->n);
    for (int j = 0; j < c->n; j++) s += c->w[j] * y[j];
    return s;
}

static const int SMB_SHAPES[][2] = {{1, 1}, {3, 7}, {4, 16}, {2, 33}, {5, 64}, {2, 129}};
#define N_SMB_SHAPES (sizeof SMB_SHAPES / sizeof SMB_SHAPES[0])

/* dx vs FD of L. Inputs in [-2, 2] so no y_j is tiny next to the FD's 1e-13 absolute accuracy.
 * Error scale of element j: y_j max|w| (y_j (w_j - dot) with dot = sum y w, |dot| <= max|w|):
 * y's rounding (U), the dot product (cols U relative to sum y|w| <= max|w|), the subtraction and
 * product (2U), the += (U): bound (cols + 8) U relative to |want_j| + y_j max|w|. */
static void test_softmax_backward_fd(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (size_t s = 0; s < N_SMB_SHAPES; s++) {
        int rows = SMB_SHAPES[s][0], cols = SMB_SHAPES[s][1];
        size_t n = (size_t)rows * cols;
        float *x = alloc_off(n), *y = alloc_off(n), *dy = alloc_off(n), *dx = alloc_off(n),
              *d0 = alloc_off(n);
        double *v = malloc(sizeof(double) * cols), *w = malloc(sizeof(double) * cols),
               *yd = malloc(sizeof(double) * n), *grad = malloc(sizeof(double) * n),
               *acc = malloc(sizeof(double) * n), *fl = malloc(sizeof(double) * n),
               *fl_acc = malloc(sizeof(double) * n);
        assert_true(v && w && yd && grad && acc && fl && fl_acc);
        fill_seq(x, n, -2.0f, 2.0f, 500 + s);
        fill_seq(dy, n, -1.0f, 1.0f, 600 + s);
        fill_seq(d0, n, -1.0f, 1.0f, 700 + s);
        ref_softmax(yd, x, rows, cols, 0);
        for (int r = 0; r < rows; r++) {
            to_double(w, dy + (size_t)r * cols, (size_t)cols);
            to_double(v, x + (size_t)r * cols, (size_t)cols);
            sm_obj_ctx ctx = {w, cols};
            double wmax = max_abs(dy + (size_t)r * cols, (size_t)cols);
            for (int j = 0; j < cols; j++) {
                size_t i = (size_t)r * cols + j;
                grad[i] = fd_partial(sm_objective, &ctx, v, j);
                y[i] = (float)yd[i];
                d0[i] *= (float)(yd[i] * wmax); /* preset of the gradient's own size */
                acc[i] = (double)d0[i] + grad[i];
                fl[i] = yd[i] * wmax;
                fl_acc[i] = fl[i];
            }
        }
        double bound = (cols + 8.0) * U;
        for (int k = 0; k < ni; k++) {
            char what[96];
            TU_SET_ISA(isas[k]);
            memset(dx, 0, n * sizeof(float));
            assert_int_equal(ab_softmax_backward(dx, y, dy, rows, cols), AB_OK);
            snprintf(what, sizeof what, "softmax_backward %dx%d [%s] vs FD", rows, cols,
                     ab_isa_name(isas[k]));
            TU_ASSERT_ERR(what, tu_max_err_floor(dx, grad, fl, n), bound);
            memcpy(dx, d0, n * sizeof(float)); /* accumulates: dx = d0 + grad */
            assert_int_equal(ab_softmax_backward(dx, y, dy, rows, cols), AB_OK);
            snprintf(what, sizeof what, "softmax_backward %dx%d [%s] += vs d0+FD", rows, cols,
                     ab_isa_name(isas[k]));
            TU_ASSERT_ERR(what, tu_max_err_floor(dx, acc, fl_acc, n), bound + 2 * U);
        }
        free_off(x);
        free_off(y);
        free_off(dy);
        free_off(dx);
        free_off(d0);
        free(v);
        free(w);
        free(yd);
        free(grad);
        free(acc);
        free(fl);
        free(fl_acc);
    }
}

static void test_softmax_backward_args(void **state) {
    (void)state;
    float a[6] = {0}, b[6] = {0}, c[6] = {0};
    assert_int_equal(ab_softmax_backward(NULL, a, b, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_softmax_backward(c, NULL, b, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_softmax_backward(c, a, NULL, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_softmax_backward(c, a, b, -2, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_softmax_backward(c, a, b, 2, -3), AB_ERR_SHAPE);
    assert_int_equal(ab_softmax_backward(NULL, NULL, NULL, 0, 3), AB_OK);
    assert_int_equal(ab_softmax_backward(NULL, NULL, NULL, 2, 0), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* log-softmax                                                                                    */

/* |got - want| / (|want| + 1): x - max (range U), log of the sum (sum: (cols + range + 4) U
 * relative -> absolute in the log; log itself <= 2 ulp of |lse| <= range + ln cols), the final
 * subtraction (U |y|, covered by the +1 floor together with |want|):
 * bound (cols + 2 range + 4 (ln cols + 1) + 8) U. */
static double log_softmax_bound(const float *x, int rows, int cols) {
    double range = 0.0;
    for (int r = 0; r < rows; r++) {
        double rg = row_range(x + (size_t)r * cols, cols);
        range = rg > range ? rg : range;
    }
    return ((double)cols + 2.0 * range + 4.0 * (log((double)cols) + 1.0) + 8.0) * U;
}

static void ref_log_softmax(double *y, const float *x, int rows, int cols) {
    double *v = malloc(sizeof(double) * cols);
    assert_non_null(v);
    for (int r = 0; r < rows; r++) {
        to_double(v, x + (size_t)r * cols, (size_t)cols);
        double m, ls = ref_lse_parts(v, cols, &m);
        for (int j = 0; j < cols; j++) y[(size_t)r * cols + j] = (v[j] - m) - ls;
    }
    free(v);
}

static void test_log_softmax_vs_double(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        TU_SET_ISA(isas[k]);
        for (size_t s = 0; s < N_SM_SHAPES; s++) {
            int rows = SM_SHAPES[s][0], cols = SM_SHAPES[s][1];
            size_t n = (size_t)rows * cols;
            for (int fam = 0; fam < N_SM_INPUTS; fam++) {
                float *x = alloc_off(n), *y = alloc_off(n), *z = alloc_off(n);
                double *want = malloc(sizeof(double) * n);
                assert_non_null(want);
                sm_input(x, rows, cols, fam, 3000 + 10 * s + (uint64_t)fam);
                for (size_t i = 0; i < n; i++) y[i] = NAN;
                assert_int_equal(ab_log_softmax(y, x, rows, cols), AB_OK);
                ref_log_softmax(want, x, rows, cols);
                char what[96];
                snprintf(what, sizeof what, "log_softmax %dx%d in%d [%s] vs double", rows, cols,
                         fam, ab_isa_name(isas[k]));
                TU_ASSERT_ERR(what, tu_max_rel_err(y, want, n, 1.0), log_softmax_bound(x, rows, cols));
                memcpy(z, x, n * sizeof(float)); /* in place: same bits */
                assert_int_equal(ab_log_softmax(z, z, rows, cols), AB_OK);
                assert_memory_equal(z, y, n * sizeof(float));
                free_off(x);
                free_off(y);
                free_off(z);
                free(want);
            }
        }
        /* huge: [1e30, -1e30, 0, 1e30] -> [-ln 2, -2e30, -1e30 - ln 2, -ln 2] */
        float x[4] = {1e30f, -1e30f, 0.0f, 1e30f}, y[4];
        double want[4];
        ref_log_softmax(want, x, 1, 4);
        assert_int_equal(ab_log_softmax(y, x, 1, 4), AB_OK);
        for (int j = 0; j < 4; j++) assert_true(isfinite(y[j]));
        char what[96];
        snprintf(what, sizeof what, "log_softmax huge inputs [%s] vs double", ab_isa_name(isas[k]));
        TU_ASSERT_ERR(what, tu_max_rel_err(y, want, 4, 1.0), 16 * U); /* a few roundings */
    }
}

static void test_log_softmax_args(void **state) {
    (void)state;
    float x[6] = {0}, y[6];
    assert_int_equal(ab_log_softmax(NULL, x, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_log_softmax(y, NULL, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_log_softmax(y, x, -2, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_log_softmax(y, x, 2, -3), AB_ERR_SHAPE);
    assert_int_equal(ab_log_softmax(NULL, NULL, 0, 3), AB_OK);
    assert_int_equal(ab_log_softmax(NULL, NULL, 2, 0), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* cross-entropy                                                                                  */

static void ref_ce_losses(double *loss, const float *logits, const int *targets, int rows,
                          int vocab) {
    double *v = malloc(sizeof(double) * vocab);
    assert_non_null(v);
    for (int r = 0; r < rows; r++) {
        to_double(v, logits + (size_t)r * vocab, (size_t)vocab);
        double m, ls = ref_lse_parts(v, vocab, &m);
        loss[r] = (m - v[targets[r]]) + ls;
    }
    free(v);
}

/* Losses: lse(x) - x_t. Absolute errors: the sum inside the log ((vocab + range + 4) U relative),
 * the log (2 ulp of |lse - max| <= ln vocab + range), max + lse (U |max + lse| <= U (maxabs +
 * ln vocab)), the subtraction (U |loss|, under the +1 floor): measured as |err| / (|loss| + 1),
 * bound (vocab + 2 range + maxabs + 4 ln vocab + 12) U. The same K bounds the relative error of
 * softmax(x) = exp(x - (max + lse)) in the gradient. */
static double ce_bound(const float *logits, int rows, int vocab) {
    double range = 0.0;
    for (int r = 0; r < rows; r++) {
        double rg = row_range(logits + (size_t)r * vocab, vocab);
        range = rg > range ? rg : range;
    }
    double maxabs = max_abs(logits, (size_t)rows * vocab);
    return ((double)vocab + 2.0 * range + maxabs + 4.0 * log((double)vocab) + 12.0) * U;
}

static const int CE_SHAPES[][2] = {{1, 1}, {3, 7}, {4, 16}, {5, 33}, {2, 100}, {3, 1000}, {2, 4099}};
#define N_CE_SHAPES (sizeof CE_SHAPES / sizeof CE_SHAPES[0])

static void test_cross_entropy_losses_vs_double(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    const float spreads[3] = {3.0f, 10.0f, 3.0f}, offsets[3] = {0.0f, 0.0f, 50.0f};
    for (int k = 0; k < ni; k++) {
        TU_SET_ISA(isas[k]);
        for (size_t s = 0; s < N_CE_SHAPES; s++) {
            int rows = CE_SHAPES[s][0], vocab = CE_SHAPES[s][1];
            size_t n = (size_t)rows * vocab;
            for (int fam = 0; fam < 3; fam++) {
                float *logits = alloc_off(n), *losses = alloc_off((size_t)rows),
                      *losses_w = alloc_off((size_t)rows), *wts = alloc_off((size_t)rows);
                int *targets = malloc(sizeof(int) * rows);
                double *want = malloc(sizeof(double) * rows);
                assert_true(targets && want);
                fill_seq(logits, n, offsets[fam] - spreads[fam], offsets[fam] + spreads[fam],
                         4000 + 10 * s + (uint64_t)fam);
                ab_rng rng;
                ab_rng_seed(&rng, 4100 + s, 3);
                for (int r = 0; r < rows; r++) {
                    targets[r] = (int)ab_rng_below(&rng, (uint32_t)vocab);
                    losses[r] = NAN;
                    wts[r] = 0.25f + (float)r;
                }
                assert_int_equal(ab_cross_entropy(losses, NULL, logits, targets, NULL, rows, vocab, 1.0f), AB_OK);
                ref_ce_losses(want, logits, targets, rows, vocab);
                char what[96];
                snprintf(what, sizeof what, "cross_entropy loss %dx%d in%d [%s] vs double", rows,
                         vocab, fam, ab_isa_name(isas[k]));
                double bound = ce_bound(logits, rows, vocab);
                TU_ASSERT_ERR(what, tu_max_rel_err(losses, want, (size_t)rows, 1.0), bound);
                /* non-zero weights do not scale the loss */
                assert_int_equal(ab_cross_entropy(losses_w, NULL, logits, targets, wts, rows, vocab, 0.5f), AB_OK);
                snprintf(what, sizeof what, "cross_entropy loss weighted %dx%d in%d [%s]", rows,
                         vocab, fam, ab_isa_name(isas[k]));
                TU_ASSERT_ERR(what, tu_max_rel_err(losses_w, want, (size_t)rows, 1.0), bound);
                if (vocab == 1) assert_true(losses[0] == 0.0f); /* log 1 */
                free_off(logits);
                free_off(losses);
                free_off(losses_w);
                free_off(wts);
                free(targets);
                free(want);
            }
        }
    }
}

/* J_r(v) = loss of one row = lse(v) - v_t (the weight and dscale are applied outside) */
typedef struct { int vocab, target; } ce_obj_ctx;
static double ce_row_loss(const double *v, const void *ctx) {
    const ce_obj_ctx *c = (const ce_obj_ctx *)ctx;
    return ref_lse_d(v, c->vocab) - v[c->target];
}

static const int CEG_SHAPES[][2] = {{1, 1}, {3, 7}, {4, 16}, {6, 33}, {2, 64}, {3, 100}};
#define N_CEG_SHAPES (sizeof CEG_SHAPES / sizeof CEG_SHAPES[0])

/* dlogits vs FD of J = sum_r dscale w_r loss_r. Element scale: the non-target entries g p_j are
 * relative-accurate to K U (K as ce_bound) plus the product and += (2U), so they are compared
 * purely relatively (logits in [-3, 3], vocab <= 100: p_j >= 2.5e-5, far above the FD's 1e-12
 * absolute accuracy); the target entry g (p_t - 1) also carries U |g| from the subtraction, so its
 * floor is |g|. Bound (K + 4) U. */
static void test_cross_entropy_grad_fd(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    const float dscales[3] = {1.0f, 0.37f, -2.5f};
    for (size_t s = 0; s < N_CEG_SHAPES; s++) {
        int rows = CEG_SHAPES[s][0], vocab = CEG_SHAPES[s][1];
        size_t n = (size_t)rows * vocab;
        float *logits = alloc_off(n), *dl = alloc_off(n), *d0 = alloc_off(n), *wts = alloc_off((size_t)rows);
        int *targets = malloc(sizeof(int) * rows);
        double *v = malloc(sizeof(double) * vocab), *dloss = malloc(sizeof(double) * n),
               *grad = malloc(sizeof(double) * n), *acc = malloc(sizeof(double) * n),
               *fl = malloc(sizeof(double) * n), *fl_acc = malloc(sizeof(double) * n);
        assert_true(targets && v && dloss && grad && acc && fl && fl_acc);
        fill_seq(logits, n, -3.0f, 3.0f, 5000 + s);
        fill_seq(d0, n, -1.0f, 1.0f, 5100 + s);
        ab_rng rng;
        ab_rng_seed(&rng, 5200 + s, 3);
        for (int r = 0; r < rows; r++) {
            targets[r] = (int)ab_rng_below(&rng, (uint32_t)vocab);
            /* per-token weights: a mask 0 on every third row, one negative weight */
            wts[r] = r % 3 == 1 ? 0.0f : r == 2 ? -0.5f : 0.5f + 1.5f * ab_rng_uniform(&rng);
            ce_obj_ctx ctx = {vocab, targets[r]};
            to_double(v, logits + (size_t)r * vocab, (size_t)vocab);
            for (int j = 0; j < vocab; j++) dloss[(size_t)r * vocab + j] = fd_partial(ce_row_loss, &ctx, v, j);
        }
        double bound = ce_bound(logits, rows, vocab) + 4 * U;
        for (int k = 0; k < ni; k++) {
            TU_SET_ISA(isas[k]);
            for (int di = 0; di < 3; di++) {
                for (int use_w = 0; use_w < 2; use_w++) {
                    for (int r = 0; r < rows; r++) {
                        double g = (double)dscales[di] * (use_w ? (double)wts[r] : 1.0);
                        for (int j = 0; j < vocab; j++) {
                            size_t i = (size_t)r * vocab + j;
                            grad[i] = g * dloss[i];
                            fl[i] = fabs(g) * (j == targets[r] ? 1.0 : 0.0) + 1e-30;
                            acc[i] = (double)d0[i] + grad[i];
                            fl_acc[i] = fl[i] + fabs((double)d0[i]);
                        }
                    }
                    const float *w = use_w ? wts : NULL;
                    char what[128];
                    memset(dl, 0, n * sizeof(float));
                    assert_int_equal(ab_cross_entropy(NULL, dl, logits, targets, w, rows, vocab, dscales[di]), AB_OK);
                    snprintf(what, sizeof what, "cross_entropy dlogits %dx%d ds=%g w=%d [%s] vs FD",
                             rows, vocab, (double)dscales[di], use_w, ab_isa_name(isas[k]));
                    TU_ASSERT_ERR(what, tu_max_err_floor(dl, grad, fl, n), bound);
                    memcpy(dl, d0, n * sizeof(float)); /* accumulates into dlogits */
                    assert_int_equal(ab_cross_entropy(NULL, dl, logits, targets, w, rows, vocab, dscales[di]), AB_OK);
                    snprintf(what, sizeof what, "cross_entropy dlogits %dx%d ds=%g w=%d [%s] +=",
                             rows, vocab, (double)dscales[di], use_w, ab_isa_name(isas[k]));
                    TU_ASSERT_ERR(what, tu_max_err_floor(dl, acc, fl_acc, n), bound + U);
                }
            }
        }
        free_off(logits);
        free_off(dl);
        free_off(d0);
        free_off(wts);
        free(targets);
        free(v);
        free(dloss);
        free(grad);
        free(acc);
        free(fl);
        free(fl_acc);
    }
}

/* Mask-0 rows: loss exactly 0 and dlogits untouched, even with a target outside [0, vocab);
 * NULL weights behave as all ones. */
static void test_cross_entropy_mask_and_weights(void **state) {
    (void)state;
    enum { R = 5, V = 19 };
    float logits[R * V], dl[R * V], d0[R * V], losses[R], w[R] = {1.0f, 0.0f, 1.0f, -0.0f, 1.0f};
    float ones[R] = {1, 1, 1, 1, 1}, dl1[R * V], dl2[R * V], l1[R], l2[R];
    int targets[R] = {2, -7, V - 1, V + 100, 0}, valid_targets[R] = {2, 3, V - 1, 4, 0};
    fill_seq(logits, R * V, -4.0f, 4.0f, 6000);
    fill_seq(d0, R * V, -1.0f, 1.0f, 6001);
    double want_loss[R];
    ref_ce_losses(want_loss, logits, valid_targets, R, V);
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        TU_SET_ISA(isas[k]);
        for (int r = 0; r < R; r++) losses[r] = NAN;
        memcpy(dl, d0, sizeof dl);
        assert_int_equal(ab_cross_entropy(losses, dl, logits, targets, w, R, V, 0.7f), AB_OK);
        for (int r = 0; r < R; r++) {
            if (w[r] == 0.0f) {
                assert_true(losses[r] == 0.0f);
                assert_memory_equal(dl + r * V, d0 + r * V, V * sizeof(float)); /* no gradient */
            } else {
                /* the loss itself, and the row changed by 0.7 (p - onehot) */
                assert_true(fabs(losses[r] - want_loss[r]) <= ce_bound(logits, R, V) * (fabs(want_loss[r]) + 1.0));
                double ch = 0.0;
                for (int j = 0; j < V; j++) ch += fabs((double)dl[r * V + j] - d0[r * V + j]);
                assert_true(fabs(ch - 0.7 * 2.0 * (1.0 - exp(-want_loss[r]))) <= 1e-5); /* sum |p - onehot| = 2 (1 - p_t) */
            }
        }
        /* weights NULL == all ones, bit for bit */
        memset(dl1, 0, sizeof dl1);
        memset(dl2, 0, sizeof dl2);
        assert_int_equal(ab_cross_entropy(l1, dl1, logits, valid_targets, NULL, R, V, 1.3f), AB_OK);
        assert_int_equal(ab_cross_entropy(l2, dl2, logits, valid_targets, ones, R, V, 1.3f), AB_OK);
        assert_memory_equal(l1, l2, sizeof l1);
        assert_memory_equal(dl1, dl2, sizeof dl1);
        /* every row masked: nothing but zero losses */
        float zeros[R] = {0};
        memcpy(dl, d0, sizeof dl);
        assert_int_equal(ab_cross_entropy(losses, dl, logits, targets, zeros, R, V, 1.0f), AB_OK);
        for (int r = 0; r < R; r++) assert_true(losses[r] == 0.0f);
        assert_memory_equal(dl, d0, sizeof dl);
    }
}

/* losses or dlogits NULL skips that output; the other is unchanged. */
static void test_cross_entropy_null_outputs(void **state) {
    (void)state;
    enum { R = 4, V = 37 };
    float logits[R * V], dl_both[R * V], dl_only[R * V], l_both[R], l_only[R];
    float w[R] = {1.0f, 2.0f, 0.5f, 1.0f};
    int targets[R] = {0, 36, 17, 5};
    fill_seq(logits, R * V, -5.0f, 5.0f, 7000);
    double want[R];
    ref_ce_losses(want, logits, targets, R, V);
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        TU_SET_ISA(isas[k]);
        memset(dl_both, 0, sizeof dl_both);
        memset(dl_only, 0, sizeof dl_only);
        assert_int_equal(ab_cross_entropy(l_both, dl_both, logits, targets, w, R, V, 0.25f), AB_OK);
        assert_int_equal(ab_cross_entropy(NULL, dl_only, logits, targets, w, R, V, 0.25f), AB_OK);
        assert_int_equal(ab_cross_entropy(l_only, NULL, logits, targets, w, R, V, 0.25f), AB_OK);
        assert_int_equal(ab_cross_entropy(NULL, NULL, logits, targets, w, R, V, 0.25f), AB_OK);
        char what[96];
        snprintf(what, sizeof what, "cross_entropy losses only [%s] vs double", ab_isa_name(isas[k]));
        TU_ASSERT_ERR(what, tu_max_rel_err(l_only, want, R, 1.0), ce_bound(logits, R, V));
        TU_ASSERT_ERR(what, tu_max_rel_err(l_both, want, R, 1.0), ce_bound(logits, R, V));
        /* dlogits with and without losses: 0.25 w (p - onehot), per-row floor |g| */
        double dlw[R * V], fl[R * V];
        for (int r = 0; r < R; r++) {
            double g = 0.25 * w[r], lse = want[r] + logits[r * V + targets[r]];
            for (int j = 0; j < V; j++) {
                dlw[r * V + j] = g * (exp((double)logits[r * V + j] - lse) - (j == targets[r]));
                fl[r * V + j] = fabs(g);
            }
        }
        snprintf(what, sizeof what, "cross_entropy dlogits only [%s] vs double", ab_isa_name(isas[k]));
        TU_ASSERT_ERR(what, tu_max_err_floor(dl_only, dlw, fl, R * V), ce_bound(logits, R, V) + 4 * U);
        TU_ASSERT_ERR(what, tu_max_err_floor(dl_both, dlw, fl, R * V), ce_bound(logits, R, V) + 4 * U);
    }
}

/* Huge logits stay finite: [1e30, -1e30, 0, ...]. */
static void test_cross_entropy_huge_logits(void **state) {
    (void)state;
    enum { V = 9 };
    float logits[2 * V], losses[2], dl[2 * V];
    for (int j = 0; j < V; j++) logits[j] = logits[V + j] = j == 4 ? 1e30f : (j % 2 ? -1e30f : 0.0f);
    int targets[2] = {4, 1}; /* the max (loss 0) and a -1e30 entry (loss 2e30) */
    ab_isa isas[AB_ISA_COUNT];
    int ni = n_isas(isas);
    for (int k = 0; k < ni; k++) {
        TU_SET_ISA(isas[k]);
        memset(dl, 0, sizeof dl);
        assert_int_equal(ab_cross_entropy(losses, dl, logits, targets, NULL, 2, V, 1.0f), AB_OK);
        assert_true(losses[0] == 0.0f);
        assert_true(fabs(losses[1] - 2e30) <= 2e30 * 4 * U);
        for (int i = 0; i < 2 * V; i++) assert_true(isfinite(dl[i]));
        for (int j = 0; j < V; j++) {
            assert_true(fabs(dl[j]) <= 4 * U);                                    /* p = onehot */
            double want = (j == 4) - (j == 1);                                     /* p_4 = 1, p_1 = 0 */
            assert_true(fabs(dl[V + j] - want) <= 4 * U);
        }
    }
}

static void test_cross_entropy_errors(void **state) {
    (void)state;
    enum { R = 3, V = 5 };
    float logits[R * V] = {0}, losses[R], dl[R * V] = {0};
    int ok_t[R] = {0, 4, 2}, hi_t[R] = {0, 5, 2}, lo_t[R] = {0, -1, 2};
    float w[R] = {1, 1, 1}, wnan[R] = {1, NAN, 1}, winf[R] = {1, 1, INFINITY}, wninf[R] = {-INFINITY, 1, 1};
    assert_int_equal(ab_cross_entropy(losses, dl, logits, hi_t, w, R, V, 1.0f), AB_ERR_ARG);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, lo_t, w, R, V, 1.0f), AB_ERR_ARG);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, hi_t, NULL, R, V, 1.0f), AB_ERR_ARG);
    assert_int_equal(ab_cross_entropy(NULL, NULL, logits, lo_t, NULL, R, V, 1.0f), AB_ERR_ARG);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, ok_t, wnan, R, V, 1.0f), AB_ERR_NAN);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, ok_t, winf, R, V, 1.0f), AB_ERR_NAN);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, ok_t, wninf, R, V, 1.0f), AB_ERR_NAN);
    assert_int_equal(ab_cross_entropy(losses, dl, NULL, ok_t, w, R, V, 1.0f), AB_ERR_NULL);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, NULL, w, R, V, 1.0f), AB_ERR_NULL);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, ok_t, w, -1, V, 1.0f), AB_ERR_SHAPE);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, ok_t, w, R, 0, 1.0f), AB_ERR_SHAPE);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, ok_t, w, R, -5, 1.0f), AB_ERR_SHAPE);
    assert_int_equal(ab_cross_entropy(NULL, NULL, NULL, NULL, NULL, 0, V, 1.0f), AB_OK);
    assert_int_equal(ab_cross_entropy(losses, dl, logits, ok_t, w, R, V, 1.0f), AB_OK);
    assert_true(strlen(ab_last_error()) > 0);
}

int main(void) {
    gsl_set_error_handler_off(); /* GSL reports through return codes, never abort() */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expf_sweep_vs_libm_and_gsl),
        cmocka_unit_test(test_expf_subnormal_results),
        cmocka_unit_test(test_expf_special_values),
        cmocka_unit_test(test_vexpf_every_isa),
        cmocka_unit_test(test_vexpf_args),
        cmocka_unit_test(test_softmax_vs_double),
        cmocka_unit_test(test_softmax_causal),
        cmocka_unit_test(test_softmax_huge_inputs),
        cmocka_unit_test(test_softmax_args),
        cmocka_unit_test(test_softmax_backward_fd),
        cmocka_unit_test(test_softmax_backward_args),
        cmocka_unit_test(test_log_softmax_vs_double),
        cmocka_unit_test(test_log_softmax_args),
        cmocka_unit_test(test_cross_entropy_losses_vs_double),
        cmocka_unit_test(test_cross_entropy_grad_fd),
        cmocka_unit_test(test_cross_entropy_mask_and_weights),
        cmocka_unit_test(test_cross_entropy_null_outputs),
        cmocka_unit_test(test_cross_entropy_huge_logits),
        cmocka_unit_test(test_cross_entropy_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
