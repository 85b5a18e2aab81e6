/* tests/test_layers.c - ab_layernorm_forward/_backward, ab_gelu_forward/_backward,
 * ab_residual_forward/_backward and ab_embedding_forward/_backward against double-precision
 * references written here from the mathematical definitions, gradients against 4th-order central
 * finite differences in double (and GSL's gsl_deriv_central for GELU'), on every ISA path this
 * machine supports (tu_isas()), plus the error paths of every function.
 *
 * Units: U = 2^-24, the unit roundoff of float. Each bound is a rounding-error budget of the
 * computation (any summation order), stated next to its assertion. Errors are measured with
 * tu_max_rel_err, element by element with a floor equal to the natural size of that element's
 * rounding errors (e.g. |w_j| (1 + |norm_j|) + |b_j| for a layernorm output), so elements that
 * cancel to ~0 are judged on the scale of the terms that produced them.
 *
 * LayerNorm statistics: the row mean carries up to cols U mean|x| of summation error, which
 * enters the output as rstd * that; so the layernorm bounds contain A = cols (1 + rstd mean|x|),
 * the forward's worst-case error in units of U. For data centred at 0 that is ~2 cols; for the
 * offset-1000 family it is ~1000 cols: that is the price of float statistics, not slack (a
 * one-pass E[x^2] - E[x]^2 variance loses ~mean^2/var U cols and fails these bounds by far).
 */
#include "testutil.h"
#include <float.h>
#include <gsl/gsl_deriv.h>
#include <gsl/gsl_errno.h>

#define U (1.0 / 16777216.0) /* 2^-24 */
#define OFF 1                /* arrays start one float into their allocation (unaligned) */
#define GELU_K 0.79788456080286535588 /* sqrt(2/pi) */
#define GELU_C 0.044715

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                        */

static float *alloc_off(size_t n) { return tu_alloc(n + OFF) + OFF; }
static void free_off(float *p) { free(p - OFF); }
static double *dalloc(size_t n) {
    double *p = (double *)calloc(n ? n : 1, sizeof(double));
    assert_non_null(p);
    return p;
}
static void fill_seq(float *x, size_t n, float lo, float hi, uint64_t seed) {
    ab_rng rng;
    ab_rng_seed(&rng, seed, 11);
    tu_fill_uniform(x, n, lo, hi, &rng);
}
static float *copy_of(const float *x, size_t n) {
    float *c = alloc_off(n);
    if (n) memcpy(c, x, n * sizeof(float));
    return c;
}

#define FD_REL_STEP 1e-3

/* ---------------------------------------------------------------------------------------------- */
/* LayerNorm: double reference from the definition                                                */

/* mean = sum x / n, var = sum (x - mean)^2 / n (biased), rstd = 1 / sqrt(var + eps),
 * out = (x - mean) rstd w + b, for one row */
static void ref_ln_row(double *out, double *mean, double *rstd, const double *x, const double *w,
                       const double *b, int cols, double eps) {
    double mu = 0.0, var = 0.0;
    for (int j = 0; j < cols; j++) mu += x[j];
    mu /= cols;
    for (int j = 0; j < cols; j++) var += (x[j] - mu) * (x[j] - mu);
    var /= cols;
    double rs = 1.0 / sqrt(var + eps);
    if (out)
        for (int j = 0; j < cols; j++) out[j] = (x[j] - mu) * rs * w[j] + b[j];
    if (mean) *mean = mu;
    if (rstd) *rstd = rs;
}

/* L = sum_{r,j} c_rj out_rj over all rows; one row (for dx) or the whole matrix (dw, db) */
typedef struct ln_ctx {
    const double *x, *w, *b, *c;
    int rows, cols;
    double eps;
    int which; /* 0: v is one row of x (row = .row), 1: v is w, 2: v is b */
    int row;
} ln_ctx;

static double ln_objective(const double *v, const void *vctx) {
    const ln_ctx *t = (const ln_ctx *)vctx;
    double out[1024], L = 0.0;
    assert_true(t->cols <= 1024);
    int r0 = t->which == 0 ? t->row : 0, r1 = t->which == 0 ? t->row + 1 : t->rows;
    for (int r = r0; r < r1; r++) {
        const double *x = t->which == 0 ? v : t->x + (size_t)r * t->cols;
        ref_ln_row(out, NULL, NULL, x, t->which == 1 ? v : t->w, t->which == 2 ? v : t->b, t->cols,
                   t->eps);
        for (int j = 0; j < t->cols; j++) L += t->c[(size_t)r * t->cols + j] * out[j];
    }
    return L;
}

static const int LN_SHAPES[][2] = {{1, 1}, {1, 7}, {3, 16}, {4, 17}, {2, 33}, {5, 64}, {3, 100}, {2, 768}};
#define N_LN_SHAPES (sizeof LN_SHAPES / sizeof LN_SHAPES[0])
/* input families: 0 uniform [-2, 2]; 1 small spread (std ~0.006, eps matters) around 0.5;
 * 2 offset 1000 (cancellation); 3 constant rows (var = 0, rstd = 1/sqrt(eps)); 4 as 1 with
 * eps = 1e-2 (eps dominates: it must be the caller's eps) */
#define N_LN_FAMILIES 5
static float ln_family_eps(int fam) { return fam == 4 ? 1e-2f : 1e-5f; }
static void ln_input(float *x, int rows, int cols, int fam, uint64_t seed) {
    size_t n = (size_t)rows * cols;
    switch (fam) {
    case 0: fill_seq(x, n, -2.0f, 2.0f, seed); break;
    case 1:
    case 4: fill_seq(x, n, 0.49f, 0.51f, seed); break;
    case 2: fill_seq(x, n, 999.0f, 1001.0f, seed); break;
    default:
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++) x[(size_t)r * cols + j] = 0.3f + 0.25f * (float)r;
    }
}

typedef struct ln_case {
    int rows, cols, fam;
    float eps;
    float *x, *w, *b, *c;           /* c: the linear objective's coefficients (= dout) */
    double *out, *mean, *rstd;      /* forward references */
    double *gx, *gw, *gb;           /* FD gradients of L = sum c out */
    double A;                       /* cols (1 + max_r rstd_r mean_j|x_rj|): see header */
} ln_case;

static void ln_case_make(ln_case *k, int rows, int cols, int fam, uint64_t seed, int with_fd) {
    size_t n = (size_t)rows * cols;
    k->rows = rows;
    k->cols = cols;
    k->fam = fam;
    k->eps = ln_family_eps(fam);
    k->x = alloc_off(n);
    k->w = alloc_off((size_t)cols);
    k->b = alloc_off((size_t)cols);
    k->c = alloc_off(n);
    ln_input(k->x, rows, cols, fam, seed);
    fill_seq(k->w, (size_t)cols, -1.5f, 1.5f, seed + 1);
    fill_seq(k->b, (size_t)cols, -1.0f, 1.0f, seed + 2);
    fill_seq(k->c, n, -1.0f, 1.0f, seed + 3);
    k->out = dalloc(n);
    k->mean = dalloc((size_t)rows);
    k->rstd = dalloc((size_t)rows);
    double *xd = dalloc(n), *wd = dalloc((size_t)cols), *bd = dalloc((size_t)cols), *cd = dalloc(n);
    for (size_t i = 0; i < n; i++) xd[i] = k->x[i], cd[i] = k->c[i];
    for (int j = 0; j < cols; j++) wd[j] = k->w[j], bd[j] = k->b[j];
    k->A = 0.0;
    for (int r = 0; r < rows; r++) {
        ref_ln_row(k->out + (size_t)r * cols, k->mean + r, k->rstd + r, xd + (size_t)r * cols, wd, bd,
                   cols, k->eps);
        double mabs = 0.0;
        for (int j = 0; j < cols; j++) mabs += fabs(xd[(size_t)r * cols + j]) / cols;
        tu_worst(&k->A, cols * (1.0 + k->rstd[r] * mabs));
    }
    k->gx = k->gw = k->gb = NULL;
    if (with_fd) {
        k->gx = dalloc(n);
        k->gw = dalloc((size_t)cols);
        k->gb = dalloc((size_t)cols);
        ln_ctx t = {xd, wd, bd, cd, rows, cols, (double)k->eps, 0, 0};
        for (int r = 0; r < rows; r++) {
            t.which = 0;
            t.row = r;
            double *xr = xd + (size_t)r * cols, std = 1.0 / k->rstd[r];
            for (int j = 0; j < cols; j++) /* step relative to the row's scale sqrt(var + eps) */
                k->gx[(size_t)r * cols + j] = tu_fd_partial(ln_objective, &t, xr, j, FD_REL_STEP * std);
        }
        for (int j = 0; j < cols; j++) {
            t.which = 1;
            k->gw[j] = tu_fd_partial(ln_objective, &t, wd, j, FD_REL_STEP * fmax(1.0, fabs(wd[j])));
            t.which = 2;
            k->gb[j] = tu_fd_partial(ln_objective, &t, bd, j, FD_REL_STEP * fmax(1.0, fabs(bd[j])));
        }
    }
    free(xd);
    free(wd);
    free(bd);
    free(cd);
}

static void ln_case_free(ln_case *k) {
    free_off(k->x);
    free_off(k->w);
    free_off(k->b);
    free_off(k->c);
    free(k->out);
    free(k->mean);
    free(k->rstd);
    free(k->gx);
    free(k->gw);
    free(k->gb);
}

static void test_layernorm_forward_vs_double(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas);
    for (size_t s = 0; s < N_LN_SHAPES; s++) {
        for (int fam = 0; fam < N_LN_FAMILIES; fam++) {
            ln_case k;
            int rows = LN_SHAPES[s][0], cols = LN_SHAPES[s][1];
            size_t n = (size_t)rows * cols;
            ln_case_make(&k, rows, cols, fam, 100 * s + (uint64_t)fam, 0);
            float *out = alloc_off(n), *out2 = alloc_off(n), *mean = alloc_off((size_t)rows),
                  *rstd = alloc_off((size_t)rows);
            double *fl = dalloc(n), *flm = dalloc((size_t)rows), *zero = dalloc((size_t)rows);
            double mean_bound = 0.0;
            for (int r = 0; r < rows; r++) {
                double mabs = 0.0;
                for (int j = 0; j < cols; j++) {
                    size_t i = (size_t)r * cols + j;
                    double norm = ((double)k.x[i] - k.mean[r]) * k.rstd[r];
                    fl[i] = fabs((double)k.w[j]) * (1.0 + fabs(norm)) + fabs((double)k.b[j]);
                    mabs += fabs((double)k.x[i]) / cols;
                }
                flm[r] = mabs + 1e-30;
                /* rstd's second-order sensitivity to the mean error: 0.5 (dmu rstd)^2 relative */
                double dmu_rs = cols * U * mabs * k.rstd[r];
                tu_worst(&mean_bound, 0.5 * dmu_rs * dmu_rs);
            }
            for (int ii = 0; ii < ni; ii++) {
                char what[128];
                TU_SET_ISA(isas[ii]);
                for (size_t i = 0; i < n; i++) out[i] = NAN;
                for (int r = 0; r < rows; r++) mean[r] = rstd[r] = NAN;
                assert_int_equal(ab_layernorm_forward(out, mean, rstd, k.x, k.w, k.b, rows, cols, k.eps), AB_OK);
                /* out: the statistics (A U), the normalise-scale-shift (<= 16 U) */
                snprintf(what, sizeof what, "layernorm out %dx%d fam%d [%s] vs double", rows, cols,
                         fam, ab_isa_name(isas[ii]));
                TU_ASSERT_ERR(what, tu_max_err_floor(out, k.out, fl, n), (k.A + 16.0) * U);
                /* mean: summation (cols U of mean|x|) and the division */
                snprintf(what, sizeof what, "layernorm mean %dx%d fam%d [%s] vs double", rows, cols,
                         fam, ab_isa_name(isas[ii]));
                TU_ASSERT_ERR(what, tu_max_err_floor(mean, k.mean, flm, (size_t)rows), (cols + 2.0) * U);
                /* rstd, relative: var's summation (cols U) and + eps, sqrt, 1/x halve/keep it:
                 * (cols / 2 + 8) U, plus the mean error's second-order term */
                snprintf(what, sizeof what, "layernorm rstd %dx%d fam%d [%s] vs double", rows, cols,
                         fam, ab_isa_name(isas[ii]));
                TU_ASSERT_ERR(what, tu_max_err_floor(rstd, k.rstd, zero, (size_t)rows),
                              (cols / 2.0 + 8.0) * U + mean_bound);
                /* mean/rstd NULL (inference): the same output bits */
                assert_int_equal(ab_layernorm_forward(out2, NULL, NULL, k.x, k.w, k.b, rows, cols, k.eps), AB_OK);
                assert_memory_equal(out2, out, n * sizeof(float));
                assert_int_equal(ab_layernorm_forward(out2, mean, NULL, k.x, k.w, k.b, rows, cols, k.eps), AB_OK);
                assert_memory_equal(out2, out, n * sizeof(float));
                assert_int_equal(ab_layernorm_forward(out2, NULL, rstd, k.x, k.w, k.b, rows, cols, k.eps), AB_OK);
                assert_memory_equal(out2, out, n * sizeof(float));
            }
            free_off(out);
            free_off(out2);
            free_off(mean);
            free_off(rstd);
            free(fl);
            free(flm);
            free(zero);
            ln_case_free(&k);
        }
    }
}

/* eps is the caller's: a zero-variance row gives (x - mean) = 0 and rstd = 1/sqrt(eps) */
static void test_layernorm_eps_and_constant_rows(void **state) {
    (void)state;
    enum { C = 12 };
    float x[C], w[C], b[C], out[C], mean, rstd;
    for (int j = 0; j < C; j++) x[j] = 1.5f, w[j] = 2.0f, b[j] = (float)j - 3.0f;
    const float eps[3] = {1e-5f, 1e-2f, 4.0f};
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas);
    for (int ii = 0; ii < ni; ii++) {
        TU_SET_ISA(isas[ii]);
        for (int e = 0; e < 3; e++) {
            assert_int_equal(ab_layernorm_forward(out, &mean, &rstd, x, w, b, 1, C, eps[e]), AB_OK);
            assert_true(mean == 1.5f); /* 12 x 1.5 sums exactly */
            /* rstd = 1/sqrt(eps): a few roundings */
            assert_true(fabs(rstd * sqrt((double)eps[e]) - 1.0) <= 4 * U);
            for (int j = 0; j < C; j++) assert_true(out[j] == b[j]); /* (x - mean) = 0 exactly */
        }
    }
}

/* dx, dweight, dbias vs FD of L = sum c out (dout = c). norm = (x - mean) rstd carries an
 * absolute error rstd * (mean's error) <= A U besides its relative one, hence the (1 + |norm|)
 * factors. Element scales (floors):
 *   dx_j = rstd (dn_j - mean(dn) - norm_j mean(dn norm)), dn = w c:
 *          rstd (|dn_j| + mean|dn| (1 + |norm_j|) + |norm_j| mean|dn norm|); bound
 *          (A + cols + 24) U (the statistics from the float forward, the two row sums, the rest)
 *   dweight_j = sum_r norm_rj c_rj: sum_r |c_rj| (1 + |norm_rj|); bound (A + rows + 8) U
 *   dbias_j = sum_r c_rj: sum_r |c_rj|; bound (rows + 4) U
 * Accumulation adds one rounding (U) relative to the preset added into the floor. */
static void test_layernorm_backward_fd(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas);
    for (size_t s = 0; s < N_LN_SHAPES; s++) {
        for (int fam = 0; fam < N_LN_FAMILIES; fam++) {
            ln_case k;
            int rows = LN_SHAPES[s][0], cols = LN_SHAPES[s][1];
            size_t n = (size_t)rows * cols;
            ln_case_make(&k, rows, cols, fam, 700 + 100 * s + (uint64_t)fam, 1);
            float *out = alloc_off(n), *mean = alloc_off((size_t)rows), *rstd = alloc_off((size_t)rows);
            float *dx = alloc_off(n), *dw = alloc_off((size_t)cols), *db = alloc_off((size_t)cols);
            float *dx0 = alloc_off(n), *dw0 = alloc_off((size_t)cols), *db0 = alloc_off((size_t)cols);
            double *flx = dalloc(n), *flw = dalloc((size_t)cols), *flb = dalloc((size_t)cols);
            double *ax = dalloc(n), *aw = dalloc((size_t)cols), *ab = dalloc((size_t)cols);
            double *aflx = dalloc(n), *aflw = dalloc((size_t)cols), *aflb = dalloc((size_t)cols);
            fill_seq(dx0, n, -1.0f, 1.0f, 9000 + s);
            fill_seq(dw0, (size_t)cols, -1.0f, 1.0f, 9100 + s);
            fill_seq(db0, (size_t)cols, -1.0f, 1.0f, 9200 + s);
            for (int r = 0; r < rows; r++) {
                double mdn = 0.0, mdnn = 0.0;
                for (int j = 0; j < cols; j++) {
                    size_t i = (size_t)r * cols + j;
                    double norm = ((double)k.x[i] - k.mean[r]) * k.rstd[r], dn = (double)k.w[j] * k.c[i];
                    mdn += fabs(dn) / cols;
                    mdnn += fabs(dn * norm) / cols;
                    flw[j] += fabs((double)k.c[i]) * (1.0 + fabs(norm));
                    flb[j] += fabs((double)k.c[i]);
                }
                for (int j = 0; j < cols; j++) {
                    size_t i = (size_t)r * cols + j;
                    double norm = ((double)k.x[i] - k.mean[r]) * k.rstd[r];
                    flx[i] = k.rstd[r] * (fabs((double)k.w[j] * k.c[i]) + mdn * (1.0 + fabs(norm)) +
                                          fabs(norm) * mdnn) + 1e-30;
                    /* presets of the gradient's own size, so the += is judged on that scale */
                    dx0[i] *= (float)flx[i];
                    ax[i] = (double)dx0[i] + k.gx[i];
                    aflx[i] = flx[i] + fabs((double)dx0[i]);
                }
            }
            for (int j = 0; j < cols; j++) {
                flw[j] += 1e-30;
                flb[j] += 1e-30;
                dw0[j] *= (float)flw[j];
                db0[j] *= (float)flb[j];
                aw[j] = (double)dw0[j] + k.gw[j];
                ab[j] = (double)db0[j] + k.gb[j];
                aflw[j] = flw[j] + fabs((double)dw0[j]);
                aflb[j] = flb[j] + fabs((double)db0[j]);
            }
            double bx = (k.A + cols + 24.0) * U, bw = (k.A + rows + 8.0) * U, bb = (rows + 4.0) * U;
            for (int ii = 0; ii < ni; ii++) {
                char what[128];
                const char *isa = ab_isa_name(isas[ii]);
                TU_SET_ISA(isas[ii]);
                assert_int_equal(ab_layernorm_forward(out, mean, rstd, k.x, k.w, k.b, rows, cols, k.eps), AB_OK);
                memset(dx, 0, n * sizeof(float));
                memset(dw, 0, (size_t)cols * sizeof(float));
                memset(db, 0, (size_t)cols * sizeof(float));
                assert_int_equal(ab_layernorm_backward(dx, dw, db, k.c, k.x, k.w, mean, rstd, rows, cols), AB_OK);
                snprintf(what, sizeof what, "layernorm dx %dx%d fam%d [%s] vs FD", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(dx, k.gx, flx, n), bx);
                snprintf(what, sizeof what, "layernorm dweight %dx%d fam%d [%s] vs FD", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(dw, k.gw, flw, (size_t)cols), bw);
                snprintf(what, sizeof what, "layernorm dbias %dx%d fam%d [%s] vs FD", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(db, k.gb, flb, (size_t)cols), bb);
                /* NULL dweight / dbias skip them; dx is the same bits */
                float *dx_a = alloc_off(n), *dx_b = alloc_off(n), *dx_c = alloc_off(n);
                float *dw_b = copy_of(dw0, (size_t)cols), *db_a = copy_of(db0, (size_t)cols);
                assert_int_equal(ab_layernorm_backward(dx_a, NULL, db_a, k.c, k.x, k.w, mean, rstd, rows, cols), AB_OK);
                assert_int_equal(ab_layernorm_backward(dx_b, dw_b, NULL, k.c, k.x, k.w, mean, rstd, rows, cols), AB_OK);
                assert_int_equal(ab_layernorm_backward(dx_c, NULL, NULL, k.c, k.x, k.w, mean, rstd, rows, cols), AB_OK);
                assert_memory_equal(dx_a, dx, n * sizeof(float));
                assert_memory_equal(dx_b, dx, n * sizeof(float));
                assert_memory_equal(dx_c, dx, n * sizeof(float));
                snprintf(what, sizeof what, "layernorm dbias (dweight NULL) %dx%d fam%d [%s] +=", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(db_a, ab, aflb, (size_t)cols), bb + U);
                snprintf(what, sizeof what, "layernorm dweight (dbias NULL) %dx%d fam%d [%s] +=", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(dw_b, aw, aflw, (size_t)cols), bw + U);
                free_off(dx_a);
                free_off(dx_b);
                free_off(dx_c);
                free_off(dw_b);
                free_off(db_a);
                /* accumulation into all three */
                memcpy(dx, dx0, n * sizeof(float));
                memcpy(dw, dw0, (size_t)cols * sizeof(float));
                memcpy(db, db0, (size_t)cols * sizeof(float));
                assert_int_equal(ab_layernorm_backward(dx, dw, db, k.c, k.x, k.w, mean, rstd, rows, cols), AB_OK);
                snprintf(what, sizeof what, "layernorm dx %dx%d fam%d [%s] += vs d0+FD", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(dx, ax, aflx, n), bx + U);
                snprintf(what, sizeof what, "layernorm dweight %dx%d fam%d [%s] += vs d0+FD", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(dw, aw, aflw, (size_t)cols), bw + U);
                snprintf(what, sizeof what, "layernorm dbias %dx%d fam%d [%s] += vs d0+FD", rows, cols, fam, isa);
                TU_ASSERT_ERR(what, tu_max_err_floor(db, ab, aflb, (size_t)cols), bb + U);
            }
            free_off(out);
            free_off(mean);
            free_off(rstd);
            free_off(dx);
            free_off(dw);
            free_off(db);
            free_off(dx0);
            free_off(dw0);
            free_off(db0);
            free(flx);
            free(flw);
            free(flb);
            free(ax);
            free(aw);
            free(ab);
            free(aflx);
            free(aflw);
            free(aflb);
            ln_case_free(&k);
        }
    }
}

static void test_layernorm_args(void **state) {
    (void)state;
    float x[6] = {1, 2, 3, 4, 5, 6}, w[3] = {1, 1, 1}, b[3] = {0}, out[6], m[2], r[2], dx[6] = {0};
    float dw[3] = {0}, db[3] = {0};
    /* forward */
    assert_int_equal(ab_layernorm_forward(NULL, m, r, x, w, b, 2, 3, 1e-5f), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_forward(out, m, r, NULL, w, b, 2, 3, 1e-5f), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, NULL, b, 2, 3, 1e-5f), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, NULL, 2, 3, 1e-5f), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, b, -1, 3, 1e-5f), AB_ERR_SHAPE);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, b, 2, 0, 1e-5f), AB_ERR_SHAPE);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, b, 2, -3, 1e-5f), AB_ERR_SHAPE);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, b, 2, 3, 0.0f), AB_ERR_ARG);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, b, 2, 3, -1e-5f), AB_ERR_ARG);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, b, 2, 3, NAN), AB_ERR_ARG);
    assert_int_equal(ab_layernorm_forward(NULL, NULL, NULL, NULL, NULL, NULL, 0, 3, 1e-5f), AB_OK);
    assert_int_equal(ab_layernorm_forward(out, NULL, NULL, x, w, b, 2, 3, 1e-5f), AB_OK);
    assert_int_equal(ab_layernorm_forward(out, m, r, x, w, b, 2, 3, 1e-5f), AB_OK);
    /* backward */
    assert_int_equal(ab_layernorm_backward(NULL, dw, db, x, x, w, m, r, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, NULL, x, w, m, r, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, x, NULL, w, m, r, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, x, x, NULL, m, r, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, x, x, w, NULL, r, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, x, x, w, m, NULL, 2, 3), AB_ERR_NULL);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, x, x, w, m, r, -2, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, x, x, w, m, r, 2, 0), AB_ERR_SHAPE);
    assert_int_equal(ab_layernorm_backward(dx, dw, db, x, x, w, m, r, 2, -3), AB_ERR_SHAPE);
    assert_int_equal(ab_layernorm_backward(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 3), AB_OK);
    assert_int_equal(ab_layernorm_backward(dx, NULL, NULL, x, x, w, m, r, 2, 3), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* GELU (tanh form)                                                                               */

static double ref_gelu(double x) {
    return 0.5 * x * (1.0 + tanh(GELU_K * (x + GELU_C * x * x * x)));
}
/* d/dx from the definition: 0.5 (1 + tanh u) + 0.5 x sech^2(u) u', u' = K (1 + 3 C x^2) */
static double ref_gelu_grad(double x) {
    double u = GELU_K * (x + GELU_C * x * x * x), t = tanh(u), ch = cosh(u);
    double sech2 = isfinite(ch) ? 1.0 / (ch * ch) : 0.0;
    return 0.5 * (1.0 + t) + 0.5 * x * sech2 * GELU_K * (1.0 + 3.0 * GELU_C * x * x);
}
static double gsl_gelu(double x, void *params) {
    (void)params;
    return ref_gelu(x);
}

/* x: a 1/64 grid over [-8, 8], random values in [-10, 10], and large finite values (with_huge:
 * also +-1e20 and +-3e38, where x^2 overflows float) */
static float *gelu_args(size_t *count, int with_huge) {
    size_t n_grid = 16 * 64 + 1, n_rand = (size_t)TU_SIZE(4000, 500);
    static const float big[] = {0.0f, -0.0f, 1e-30f, -1e-30f, FLT_MIN, -FLT_MIN, 20.0f, -20.0f,
                                30.0f, -30.0f, 100.0f, -100.0f, 1e4f, -1e4f, 1e12f, -1e12f,
                                1e20f, -1e20f, 3e38f, -3e38f};
    size_t n_big = sizeof big / sizeof big[0] - (with_huge ? 0 : 4);
    float *x = alloc_off(n_grid + n_rand + n_big);
    size_t c = 0;
    for (size_t i = 0; i < n_grid; i++) x[c++] = -8.0f + (float)i / 64.0f;
    fill_seq(x + c, n_rand, -10.0f, 10.0f, 31337);
    c += n_rand;
    for (size_t i = 0; i < n_big; i++) x[c++] = big[i];
    *count = c; /* not a multiple of 8 or 16 */
    return x;
}

/* out vs double, floor 0.5|x| (the size of the x Phi(x) factor; the tanh form's 1 + tanh(u)
 * cancels for negative x, so relative to 0.5|x| is what any float evaluation delivers): tanh or
 * exp (<= 4U), u (3U |u| into tanh, damped by sech^2(u) |u| <= 0.45), 1 + t, the products:
 * bound 16 U. */
static void test_gelu_forward_vs_double(void **state) {
    (void)state;
    size_t n;
    float *x = gelu_args(&n, 1), *out = alloc_off(n);
    double *want = dalloc(n), *fl = dalloc(n);
    for (size_t i = 0; i < n; i++) {
        want[i] = ref_gelu((double)x[i]);
        fl[i] = 0.5 * fabs((double)x[i]) + 1e-300;
    }
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas);
    for (int ii = 0; ii < ni; ii++) {
        TU_SET_ISA(isas[ii]);
        for (size_t i = 0; i < n; i++) out[i] = NAN;
        assert_int_equal(ab_gelu_forward(out, x, n), AB_OK);
        for (size_t i = 0; i < n; i++)
            if (!isfinite(out[i])) fail_msg("gelu(%g) = %g [%s]", (double)x[i], (double)out[i], ab_isa_name(isas[ii]));
        char what[96];
        snprintf(what, sizeof what, "gelu_forward [%s] vs double", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, tu_max_err_floor(out, want, fl, n), 16 * U);
        /* every prefix length 0..40 and unaligned starts give the same values as the long call */
        for (size_t len = 0; len <= 40; len++) {
            float *o = alloc_off(len + 1);
            assert_int_equal(ab_gelu_forward(o, x + 100, len), AB_OK);
            if (len) assert_memory_equal(o, out + 100, len * sizeof(float));
            free_off(o);
        }
    }
    free_off(x);
    free_off(out);
    free(want);
    free(fl);
}

/* dx += dout * gelu'(x) vs gsl_deriv_central of the double GELU (checked against the derivative
 * from the definition). Floor |dout| (1 + 0.5 |x| u'(x)): the tanh form's sech^2 = 1 - tanh^2
 * is only known to a few U absolute, multiplied by 0.5 x u'. Bound 16 U. */
static void test_gelu_backward_vs_gsl(void **state) {
    (void)state;
    size_t n;
    float *x = gelu_args(&n, 0), *dout = alloc_off(n), *dx = alloc_off(n), *d0 = alloc_off(n);
    double *want = dalloc(n), *fl = dalloc(n), *acc = dalloc(n), *fla = dalloc(n);
    fill_seq(dout, n, -2.0f, 2.0f, 4242);
    fill_seq(d0, n, -1.0f, 1.0f, 4343);
    gsl_function F = {gsl_gelu, NULL};
    double worst_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double xi = x[i], g, err;
        if (fabs(xi) <= 30.0) {
            double h = FD_REL_STEP * fmax(1.0, fabs(xi));
            assert_int_equal(gsl_deriv_central(&F, xi, h, &g, &err), GSL_SUCCESS);
            /* the reference against itself: GSL's derivative vs the definition's */
            tu_worst(&worst_ref, fabs(g - ref_gelu_grad(xi)) / (fabs(ref_gelu_grad(xi)) + 1.0));
        } else {
            g = ref_gelu_grad(xi); /* 0 or 1 to double precision; FD of x^3 terms overflows */
        }
        double scale = 1.0 + 0.5 * fabs(xi) * GELU_K * (1.0 + 3.0 * GELU_C * xi * xi);
        if (fabs(xi) > 30.0) scale = 1.0; /* tanh(u) is exactly +-1 in float: sech^2 = 0 exactly */
        want[i] = (double)dout[i] * g;
        fl[i] = fabs((double)dout[i]) * scale + 1e-300;
        d0[i] *= (float)fl[i];
        acc[i] = (double)d0[i] + want[i];
        fla[i] = fl[i] + fabs((double)d0[i]);
    }
    /* GSL's estimate and the analytic derivative agree to ~1e-10 absolute (GELU' is O(1)): the
     * reference is ~1e-3 U accurate on the floor used below */
    TU_ASSERT_ERR("gelu' gsl_deriv_central vs definition (reference)", worst_ref, 1e-9);
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas);
    for (int ii = 0; ii < ni; ii++) {
        char what[96];
        TU_SET_ISA(isas[ii]);
        memset(dx, 0, n * sizeof(float));
        assert_int_equal(ab_gelu_backward(dx, x, dout, n), AB_OK);
        snprintf(what, sizeof what, "gelu_backward [%s] vs gsl_deriv_central", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, tu_max_err_floor(dx, want, fl, n), 16 * U);
        memcpy(dx, d0, n * sizeof(float)); /* accumulates */
        assert_int_equal(ab_gelu_backward(dx, x, dout, n), AB_OK);
        snprintf(what, sizeof what, "gelu_backward [%s] += vs d0+gsl", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, tu_max_err_floor(dx, acc, fla, n), 17 * U);
        for (size_t len = 0; len <= 40; len++) { /* tails: the same values as the long call */
            float *o = alloc_off(len + 1);
            if (len) memcpy(o, d0 + 200, len * sizeof(float));
            assert_int_equal(ab_gelu_backward(o, x + 200, dout + 200, len), AB_OK);
            if (len) assert_memory_equal(o, dx + 200, len * sizeof(float));
            free_off(o);
        }
    }
    free_off(x);
    free_off(dout);
    free_off(dx);
    free_off(d0);
    free(want);
    free(fl);
    free(acc);
    free(fla);
}

/* GELU'(x) for huge finite |x| is exactly 1 (x > 0) or 0 (x < 0) to float precision, but the
 * library returns NaN: u'(x) = K (1 + 3 C x^2) overflows to inf and is multiplied by
 * sech^2(u) = 0 (scalar: (3C x) x overflows for |x| > ~5.0e19; AVX2/AVX-512 form x^2 first and
 * overflow for |x| > ~1.85e19). Reported to the lead; with GELU_HUGE_NAN_KNOWN_BUG 1 a NaN here
 * is reported as a skip with a NOTE, any other wrong value still fails. Set it to 0 once fixed. */
#ifndef GELU_HUGE_NAN_KNOWN_BUG
#define GELU_HUGE_NAN_KNOWN_BUG 0
#endif
static void test_gelu_backward_huge_inputs(void **state) {
    (void)state;
    enum { N = 21 }; /* the values land in the vector body and the tail */
    const float huge[4] = {1.9e19f, 1e20f, -1e20f, 3e38f};
    float x[N], dout[N], dx[N];
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas), nan_seen = 0;
    for (int ii = 0; ii < ni; ii++) {
        TU_SET_ISA(isas[ii]);
        for (int i = 0; i < N; i++) {
            x[i] = huge[i % 4];
            dout[i] = 1.0f;
            dx[i] = 0.5f;
        }
        assert_int_equal(ab_gelu_backward(dx, x, dout, N), AB_OK);
        for (int i = 0; i < N; i++) {
            double want = 0.5 + (x[i] > 0 ? 1.0 : 0.0); /* 0.5 + GELU'(x) */
            if (isnan(dx[i]) && GELU_HUGE_NAN_KNOWN_BUG) {
                nan_seen++;
                continue;
            }
            if (!(fabs(dx[i] - want) <= 2 * U))
                fail_msg("gelu_backward(x=%g) [%s]: dx = %g, want %g", (double)x[i],
                         ab_isa_name(isas[ii]), (double)dx[i], want);
        }
    }
    if (nan_seen) {
        printf("NOTE known library bug: ab_gelu_backward gives NaN for huge finite |x| (%d cases)\n",
               nan_seen);
        skip();
    }
}

static void test_gelu_args(void **state) {
    (void)state;
    float x[3] = {1, 2, 3}, y[3];
    assert_int_equal(ab_gelu_forward(NULL, x, 3), AB_ERR_NULL);
    assert_int_equal(ab_gelu_forward(y, NULL, 3), AB_ERR_NULL);
    assert_int_equal(ab_gelu_forward(NULL, NULL, 0), AB_OK);
    assert_int_equal(ab_gelu_backward(NULL, x, x, 3), AB_ERR_NULL);
    assert_int_equal(ab_gelu_backward(y, NULL, x, 3), AB_ERR_NULL);
    assert_int_equal(ab_gelu_backward(y, x, NULL, 3), AB_ERR_NULL);
    assert_int_equal(ab_gelu_backward(NULL, NULL, NULL, 0), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* residual                                                                                       */

/* IEEE addition is correctly rounded, so every path must give a + b bit for bit. */
static void test_residual_exact(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas);
    size_t lens[48], n_lens = 0;
    for (size_t l = 0; l <= 40; l++) lens[n_lens++] = l;
    const size_t more[] = {63, 64, 65, 1000, 1001, 4099};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) lens[n_lens++] = more[i];
    for (int ii = 0; ii < ni; ii++) {
        TU_SET_ISA(isas[ii]);
        for (size_t li = 0; li < n_lens; li++) {
            size_t n = lens[li];
            float *a = alloc_off(n), *b = alloc_off(n), *out = alloc_off(n + 1), *dout = alloc_off(n);
            float *da = alloc_off(n), *db = alloc_off(n);
            fill_seq(a, n, -3.0f, 3.0f, 10 + n);
            fill_seq(b, n, -1e-3f, 1e-3f, 20 + n); /* different magnitudes: the sum rounds */
            fill_seq(dout, n, -1.0f, 1.0f, 30 + n);
            fill_seq(da, n, -1.0f, 1.0f, 40 + n);
            fill_seq(db, n, -1e4f, 1e4f, 50 + n);
            out[n] = 777.0f; /* guard */
            assert_int_equal(ab_residual_forward(out, a, b, n), AB_OK);
            for (size_t i = 0; i < n; i++) assert_true(out[i] == a[i] + b[i]);
            assert_true(out[n] == 777.0f);
            float *a2 = copy_of(a, n); /* out == a */
            assert_int_equal(ab_residual_forward(a2, a2, b, n), AB_OK);
            if (n) assert_memory_equal(a2, out, n * sizeof(float));
            float *da0 = copy_of(da, n), *db0 = copy_of(db, n);
            assert_int_equal(ab_residual_backward(da, db, dout, n), AB_OK);
            for (size_t i = 0; i < n; i++) {
                assert_true(da[i] == da0[i] + dout[i]); /* += , one rounding */
                assert_true(db[i] == db0[i] + dout[i]);
            }
            free_off(a);
            free_off(b);
            free_off(out);
            free_off(dout);
            free_off(da);
            free_off(db);
            free_off(a2);
            free_off(da0);
            free_off(db0);
        }
    }
}

static void test_residual_args(void **state) {
    (void)state;
    float a[2] = {1, 2}, b[2] = {3, 4}, o[2];
    assert_int_equal(ab_residual_forward(NULL, a, b, 2), AB_ERR_NULL);
    assert_int_equal(ab_residual_forward(o, NULL, b, 2), AB_ERR_NULL);
    assert_int_equal(ab_residual_forward(o, a, NULL, 2), AB_ERR_NULL);
    assert_int_equal(ab_residual_forward(NULL, NULL, NULL, 0), AB_OK);
    assert_int_equal(ab_residual_backward(NULL, b, a, 2), AB_ERR_NULL);
    assert_int_equal(ab_residual_backward(a, NULL, a, 2), AB_ERR_NULL);
    assert_int_equal(ab_residual_backward(a, b, NULL, 2), AB_ERR_NULL);
    assert_int_equal(ab_residual_backward(NULL, NULL, NULL, 0), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* embedding                                                                                      */

static const int EMB_DIMS[] = {1, 7, 16, 33, 64};
#define N_EMB_DIMS (sizeof EMB_DIMS / sizeof EMB_DIMS[0])

static void test_embedding_forward_backward(void **state) {
    (void)state;
    enum { VOCAB = 11, T = 29 };
    ab_isa isas[AB_ISA_COUNT];
    int ni = tu_isas(isas);
    int ids[T];
    ab_rng rng;
    ab_rng_seed(&rng, 99, 5);
    for (int t = 0; t < T; t++) ids[t] = (int)ab_rng_below(&rng, 7); /* ids 7..10 never used */
    ids[3] = ids[9] = ids[20] = ids[28] = 4;                         /* and 4 used often */
    ids[0] = 0;
    ids[T - 1] = VOCAB - 1; /* both ends of the range */
    for (int ii = 0; ii < ni; ii++) {
        TU_SET_ISA(isas[ii]);
        for (size_t di = 0; di < N_EMB_DIMS; di++) {
            int dim = EMB_DIMS[di];
            size_t tn = (size_t)VOCAB * dim, on = (size_t)T * dim;
            float *table = alloc_off(tn), *out = alloc_off(on), *dout = alloc_off(on);
            float *dtable = alloc_off(tn), *want = alloc_off(tn);
            fill_seq(table, tn, -1.0f, 1.0f, 60 + di);
            fill_seq(dout, on, -1.0f, 1.0f, 70 + di);
            fill_seq(dtable, tn, -1.0f, 1.0f, 80 + di);
            memcpy(want, dtable, tn * sizeof(float));
            assert_int_equal(ab_embedding_forward(out, ids, table, T, VOCAB, dim), AB_OK);
            for (int t = 0; t < T; t++) /* an exact copy of the row */
                assert_memory_equal(out + (size_t)t * dim, table + (size_t)ids[t] * dim, dim * sizeof(float));
            /* backward: dtable[ids[t]] += dout[t] in token order, one float add per token */
            for (int t = 0; t < T; t++)
                for (int j = 0; j < dim; j++) want[(size_t)ids[t] * dim + j] += dout[(size_t)t * dim + j];
            assert_int_equal(ab_embedding_backward(dtable, dout, ids, T, VOCAB, dim), AB_OK);
            assert_memory_equal(dtable, want, tn * sizeof(float)); /* unused rows untouched too */
            /* the repeated id really did collect all its tokens (not just the last) */
            double s = 0.0;
            for (int t = 0; t < T; t++)
                if (ids[t] == 4) s += dout[(size_t)t * dim];
            memset(dtable, 0, tn * sizeof(float));
            assert_int_equal(ab_embedding_backward(dtable, dout, ids, T, VOCAB, dim), AB_OK);
            assert_true(fabs(dtable[4 * dim] - s) <= 8 * U * (fabs(s) + 4.0));
            free_off(table);
            free_off(out);
            free_off(dout);
            free_off(dtable);
            free_off(want);
        }
    }
}

static void test_embedding_args(void **state) {
    (void)state;
    float table[4 * 3] = {0}, out[2 * 3], dt[4 * 3] = {0}, dout[2 * 3] = {0};
    int ids[2] = {1, 3}, hi[2] = {1, 4}, neg[2] = {-1, 0};
    /* forward */
    assert_int_equal(ab_embedding_forward(out, hi, table, 2, 4, 3), AB_ERR_ARG);
    assert_int_equal(ab_embedding_forward(out, neg, table, 2, 4, 3), AB_ERR_ARG);
    assert_int_equal(ab_embedding_forward(out, ids, table, -1, 4, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_forward(out, ids, table, 2, 0, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_forward(out, ids, table, 2, -4, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_forward(out, ids, table, 2, 4, 0), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_forward(out, ids, table, 2, 4, -3), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_forward(NULL, ids, table, 2, 4, 3), AB_ERR_NULL);
    assert_int_equal(ab_embedding_forward(out, NULL, table, 2, 4, 3), AB_ERR_NULL);
    assert_int_equal(ab_embedding_forward(out, ids, NULL, 2, 4, 3), AB_ERR_NULL);
    assert_int_equal(ab_embedding_forward(NULL, NULL, NULL, 0, 4, 3), AB_OK);
    assert_int_equal(ab_embedding_forward(out, ids, table, 2, 4, 3), AB_OK);
    /* backward */
    assert_int_equal(ab_embedding_backward(dt, dout, hi, 2, 4, 3), AB_ERR_ARG);
    assert_int_equal(ab_embedding_backward(dt, dout, neg, 2, 4, 3), AB_ERR_ARG);
    assert_int_equal(ab_embedding_backward(dt, dout, ids, -1, 4, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_backward(dt, dout, ids, 2, 0, 3), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_backward(dt, dout, ids, 2, 4, 0), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_backward(dt, dout, ids, 2, 4, -3), AB_ERR_SHAPE);
    assert_int_equal(ab_embedding_backward(NULL, dout, ids, 2, 4, 3), AB_ERR_NULL);
    assert_int_equal(ab_embedding_backward(dt, NULL, ids, 2, 4, 3), AB_ERR_NULL);
    assert_int_equal(ab_embedding_backward(dt, dout, NULL, 2, 4, 3), AB_ERR_NULL);
    assert_int_equal(ab_embedding_backward(NULL, NULL, NULL, 0, 4, 3), AB_OK);
    assert_int_equal(ab_embedding_backward(dt, dout, ids, 2, 4, 3), AB_OK);
}

int main(void) {
    gsl_set_error_handler_off(); /* GSL reports through return codes, never abort() */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm_forward_vs_double),
        cmocka_unit_test(test_layernorm_eps_and_constant_rows),
        cmocka_unit_test(test_layernorm_backward_fd),
        cmocka_unit_test(test_layernorm_args),
        cmocka_unit_test(test_gelu_forward_vs_double),
        cmocka_unit_test(test_gelu_backward_vs_gsl),
        cmocka_unit_test(test_gelu_backward_huge_inputs),
        cmocka_unit_test(test_gelu_args),
        cmocka_unit_test(test_residual_exact),
        cmocka_unit_test(test_residual_args),
        cmocka_unit_test(test_embedding_forward_backward),
        cmocka_unit_test(test_embedding_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
