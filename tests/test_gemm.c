/* tests/test_gemm.c - ab_sgemm against independent references, on every ISA path this machine runs:
 *   - GSL's gsl_blas_sgemm on GSL's own CBLAS (libgslcblas, a plain reference implementation),
 *   - OpenBLAS cblas_sgemm, loaded at run time with dlopen (skipped if not installed; it is not
 *     linked, because libgslcblas already provides the cblas_ symbols),
 *   - the definition evaluated in double precision.
 * Every combination of trans_a, trans_b in {N, T}, alpha in {1, -0.5, 0}, beta in {0, 1, 0.7} and
 * leading dimensions minimal or padded, on odd, prime and blocked shapes (1x1x1, 1xNxK, Mx1xK,
 * MxNx1, primes, the AVX-512 register tile + 1, KC + 1 and NC + 8 of both ISAs, 1008 + 2 rows,
 * 128x96x200; smaller under AB_TEST_SMALL).
 *
 * Error metric. With S_ij = |alpha| sum_p |a_ip| |b_pj| + |beta| |c_ij| (in double), the standard
 * rounding-error bound of a float GEMM, in any summation order, with or without FMA, is
 *     |fl(C)_ij - C_ij| <= gamma_{k+2} S_ij,   gamma_n = n u / (1 - n u),  u = FLT_EPSILON / 2
 * (k products and sums, plus the alpha and beta scalings). The difference of two such results is
 * at most about (k+2) FLT_EPSILON S_ij. The tests measure
 *     err = max_ij |ours_ij - ref_ij| / ((k+2) FLT_EPSILON S_ij + 1e-30)
 * and require err <= 2: a factor 2 of headroom over the worst case, while a dropped, doubled or
 * misplaced term (an error of order S_ij / k) exceeds the bound by orders of magnitude.
 *
 * Besides the values: with beta == 0 our C starts as NaN (it must be ignored); the padding of A
 * and B (lda/ldb beyond the matrix) is NaN (it must not be read into the result); the padding of C
 * (ldc > n) and a guard zone after C must come back bit for bit; A and B must not be modified.
 * And each row of C is bitwise independent of m and of the other rows (test_rows_independent).
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <float.h>
#include <gsl/gsl_blas.h>
#include <gsl/gsl_errno.h>
#include "testutil.h"

#define GUARD 16            /* floats after C that must stay untouched */
#define SENTINEL 2718.25f   /* C's padding and guard */
#define BOUND 2.0           /* in units of (k+2) FLT_EPSILON S_ij, see above */
#define TINY 1e-30

typedef void (*cblas_sgemm_fn)(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta,
                               enum CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                               const float *A, int lda, const float *B, int ldb, float beta,
                               float *C, int ldc);

enum ref_kind { REF_GSL = 0, REF_OPENBLAS = 1, REF_DOUBLE = 2 };
static const char *const k_ref_names[3] = {"GSL cblas", "OpenBLAS", "double"};

static const float k_alphas[3] = {1.0f, -0.5f, 0.0f};
static const float k_betas[3] = {0.0f, 1.0f, 0.7f};
static const int k_pads[2] = {0, 5};

typedef struct shape {
    int m, n, k;
} shape;

static int make_shapes(shape *s) {
    int n = 0;
    s[n++] = (shape){1, 1, 1};
    s[n++] = (shape){1, 37, 19};  /* 1 x N x K */
    s[n++] = (shape){23, 1, 29};  /* M x 1 x K */
    s[n++] = (shape){19, 27, 1};  /* M x N x 1 */
    s[n++] = (shape){17, 31, 13}; /* primes */
    s[n++] = (shape){67, 5, 89};
    s[n++] = (shape){15, 33, 7};  /* AVX-512 register tile 14 x 32, plus one */
    s[n++] = (shape){7, 9, 385};  /* AVX2 KC = 384, plus one */
    s[n++] = (shape){7, 9, 513};  /* AVX-512 KC = 512, plus one */
    s[n++] = (shape){TU_SIZE(128, 24), TU_SIZE(96, 20), TU_SIZE(200, 36)};
    s[n++] = (shape){TU_SIZE(61, 13), TU_SIZE(520, 35), TU_SIZE(24, 9)};  /* AVX2 NC = 512, plus 8 */
    s[n++] = (shape){TU_SIZE(61, 13), TU_SIZE(264, 35), TU_SIZE(24, 9)};  /* AVX-512 NC = 256, plus 8 */
    s[n++] = (shape){TU_SIZE(1010, 29), TU_SIZE(17, 6), TU_SIZE(16, 5)}; /* 1008 = 72 x MR rows, plus 2 */
    /* B (k x n) over AB__GEMM_PF_MIN = 256K floats, read in place when not transposed: the
     * micro-kernels' prefetching loop */
    s[n++] = (shape){TU_SIZE(33, 3), TU_SIZE(600, 520), TU_SIZE(520, 520)};
    return n;
}
#define MAX_SHAPES 16

/* ---------------------------------------------------------------------------------------------- */
/* OpenBLAS, loaded at run time                                                                    */

static void *g_openblas;
static cblas_sgemm_fn g_openblas_sgemm;
static char g_openblas_why[512];

static int load_openblas(void) {
    if (g_openblas_sgemm) return 1;
    if (g_openblas_why[0]) return 0;
    setenv("OPENBLAS_NUM_THREADS", "1", 0); /* single-threaded reference: quick to start, quiet */
    g_openblas = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!g_openblas) {
        const char *e = dlerror();
        snprintf(g_openblas_why, sizeof g_openblas_why, "dlopen(libopenblas.so.0): %s", e ? e : "?");
        return 0;
    }
    void *sym = dlsym(g_openblas, "cblas_sgemm");
    if (!sym) {
        const char *e = dlerror();
        snprintf(g_openblas_why, sizeof g_openblas_why, "dlsym(cblas_sgemm): %s", e ? e : "?");
        return 0;
    }
    memcpy(&g_openblas_sgemm, &sym, sizeof sym); /* object pointer -> function pointer (POSIX) */
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* problems                                                                                        */

/* The logical problem of one shape: op(A) m x k, op(B) k x n, C0 m x n, and in double the exact
 * dot products and the magnitude sums sum_p |a_ip||b_pj|. Stored layouts are made from it. */
typedef struct problem {
    shape s;
    float *opA, *opB, *C0;
    double *dot, *mag;
} problem;

static void problem_make(problem *p, shape s, uint64_t seed) {
    ab_rng rng;
    ab_rng_seed(&rng, seed, 3);
    p->s = s;
    size_t mk = (size_t)s.m * s.k, kn = (size_t)s.k * s.n, mn = (size_t)s.m * s.n;
    p->opA = tu_alloc(mk);
    p->opB = tu_alloc(kn);
    p->C0 = tu_alloc(mn);
    p->dot = (double *)calloc(mn ? mn : 1, sizeof(double));
    p->mag = (double *)calloc(mn ? mn : 1, sizeof(double));
    assert_true(p->dot && p->mag);
    tu_fill_uniform(p->opA, mk, -1.0f, 1.0f, &rng);
    tu_fill_uniform(p->opB, kn, -1.0f, 1.0f, &rng);
    tu_fill_uniform(p->C0, mn, -1.0f, 1.0f, &rng);
    for (int i = 0; i < s.m; i++)
        for (int q = 0; q < s.k; q++) {
            double a = p->opA[(size_t)i * s.k + q];
            for (int j = 0; j < s.n; j++) {
                double ab = a * p->opB[(size_t)q * s.n + j];
                p->dot[(size_t)i * s.n + j] += ab;
                p->mag[(size_t)i * s.n + j] += fabs(ab);
            }
        }
}

static void problem_free(problem *p) {
    free(p->opA);
    free(p->opB);
    free(p->C0);
    free(p->dot);
    free(p->mag);
}

/* One call's operands as stored: A is m x k (or k x m when transposed) with row stride lda; the
 * stride padding of A and B is NaN; C has ldc columns (padding = SENTINEL) and GUARD floats after. */
typedef struct layout {
    int ta, tb, pad;
    int a_rows, a_cols, lda, b_rows, b_cols, ldb, ldc;
    float *A, *B, *A_copy, *B_copy;
    size_t a_size, b_size, c_size; /* c_size includes the guard */
} layout;

static int max1(int x) { return x > 1 ? x : 1; }

/* *worst = max(*worst, x) where NaN, once seen, stays (a plain `if (!(x <= w)) w = x` would let
 * the next finite value replace it). Returns 1 if *worst changed. */
static int track_max(double *worst, double x) {
    if (isnan(*worst)) return 0;
    if (x <= *worst) return 0;
    *worst = x;
    return 1;
}

static void layout_make(layout *L, const problem *p, int ta, int tb, int pad) {
    const shape s = p->s;
    L->ta = ta, L->tb = tb, L->pad = pad;
    L->a_rows = ta ? s.k : s.m, L->a_cols = ta ? s.m : s.k;
    L->b_rows = tb ? s.n : s.k, L->b_cols = tb ? s.k : s.n;
    L->lda = max1(L->a_cols) + pad;
    L->ldb = max1(L->b_cols) + pad;
    L->ldc = max1(s.n) + pad;
    L->a_size = (size_t)L->a_rows * L->lda;
    L->b_size = (size_t)L->b_rows * L->ldb;
    L->c_size = (size_t)s.m * L->ldc + GUARD;
    L->A = tu_alloc(L->a_size);
    L->B = tu_alloc(L->b_size);
    for (size_t e = 0; e < L->a_size; e++) L->A[e] = NAN;
    for (size_t e = 0; e < L->b_size; e++) L->B[e] = NAN;
    for (int i = 0; i < s.m; i++)
        for (int q = 0; q < s.k; q++) {
            float v = p->opA[(size_t)i * s.k + q];
            if (ta)
                L->A[(size_t)q * L->lda + i] = v;
            else
                L->A[(size_t)i * L->lda + q] = v;
        }
    for (int q = 0; q < s.k; q++)
        for (int j = 0; j < s.n; j++) {
            float v = p->opB[(size_t)q * s.n + j];
            if (tb)
                L->B[(size_t)j * L->ldb + q] = v;
            else
                L->B[(size_t)q * L->ldb + j] = v;
        }
    L->A_copy = tu_alloc(L->a_size);
    L->B_copy = tu_alloc(L->b_size);
    memcpy(L->A_copy, L->A, L->a_size * sizeof(float));
    memcpy(L->B_copy, L->B, L->b_size * sizeof(float));
}

static void layout_free(layout *L) {
    free(L->A);
    free(L->B);
    free(L->A_copy);
    free(L->B_copy);
}

/* C as given to a call: the window is C0, or NaN when nan_window; padding and guard SENTINEL. */
static void c_fill(float *C, const problem *p, const layout *L, int nan_window) {
    for (size_t e = 0; e < L->c_size; e++) C[e] = SENTINEL;
    for (int i = 0; i < p->s.m; i++)
        for (int j = 0; j < p->s.n; j++)
            C[(size_t)i * L->ldc + j] = nan_window ? NAN : p->C0[(size_t)i * p->s.n + j];
}

/* The reference result in double (window only, row stride n). */
static void ref_compute(double *out, enum ref_kind kind, const problem *p, const layout *L,
                        float alpha, float beta, float *cbuf) {
    const shape s = p->s;
    if (kind == REF_DOUBLE) {
        for (size_t e = 0; e < (size_t)s.m * s.n; e++)
            out[e] = (double)alpha * p->dot[e] + (double)beta * p->C0[e];
        return;
    }
    c_fill(cbuf, p, L, 0);
    enum CBLAS_TRANSPOSE cta = L->ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE ctb = L->tb ? CblasTrans : CblasNoTrans;
    if (kind == REF_GSL) {
        gsl_matrix_float_view Av =
            gsl_matrix_float_view_array_with_tda(L->A, (size_t)L->a_rows, (size_t)L->a_cols, (size_t)L->lda);
        gsl_matrix_float_view Bv =
            gsl_matrix_float_view_array_with_tda(L->B, (size_t)L->b_rows, (size_t)L->b_cols, (size_t)L->ldb);
        gsl_matrix_float_view Cv =
            gsl_matrix_float_view_array_with_tda(cbuf, (size_t)s.m, (size_t)s.n, (size_t)L->ldc);
        assert_int_equal(gsl_blas_sgemm(cta, ctb, alpha, &Av.matrix, &Bv.matrix, beta, &Cv.matrix),
                         GSL_SUCCESS);
    } else {
        g_openblas_sgemm(CblasRowMajor, cta, ctb, s.m, s.n, s.k, alpha, L->A, L->lda, L->B, L->ldb,
                         beta, cbuf, L->ldc);
    }
    for (int i = 0; i < s.m; i++)
        for (int j = 0; j < s.n; j++) out[(size_t)i * s.n + j] = cbuf[(size_t)i * L->ldc + j];
}

/* Runs ab_sgemm on the layout, checks everything but the values, returns err (see the top). */
static double run_ours(const problem *p, const layout *L, float alpha, float beta, const double *ref,
                       float *C, double *abs_err) {
    const shape s = p->s;
    c_fill(C, p, L, beta == 0.0f);
    ab_status st = ab_sgemm(L->ta ? AB_TRANS : AB_NO_TRANS, L->tb ? AB_TRANS : AB_NO_TRANS, s.m,
                            s.n, s.k, alpha, L->A, L->lda, L->B, L->ldb, beta, C, L->ldc);
    if (st != AB_OK) fail_msg("ab_sgemm returned %s: %s", ab_status_str(st), ab_last_error());
    /* C outside the m x n window (ldc padding, guard) is untouched, bit for bit */
    for (int i = 0; i < s.m; i++)
        for (int j = s.n; j < L->ldc; j++)
            if (memcmp(&C[(size_t)i * L->ldc + j], &(float){SENTINEL}, sizeof(float)) != 0)
                fail_msg("%dx%dx%d: C padding (%d, %d) overwritten with %g", s.m, s.n, s.k, i, j,
                         (double)C[(size_t)i * L->ldc + j]);
    for (size_t e = (size_t)s.m * L->ldc; e < L->c_size; e++)
        if (memcmp(&C[e], &(float){SENTINEL}, sizeof(float)) != 0)
            fail_msg("%dx%dx%d: written past the end of C", s.m, s.n, s.k);
    /* A and B are inputs only */
    if (memcmp(L->A, L->A_copy, L->a_size * sizeof(float)) != 0 ||
        memcmp(L->B, L->B_copy, L->b_size * sizeof(float)) != 0)
        fail_msg("%dx%dx%d: ab_sgemm modified A or B", s.m, s.n, s.k);
    double worst = 0.0, worst_abs = 0.0;
    for (int i = 0; i < s.m; i++)
        for (int j = 0; j < s.n; j++) {
            size_t e = (size_t)i * s.n + j;
            double S = fabs((double)alpha) * p->mag[e] + fabs((double)beta) * fabs((double)p->C0[e]);
            double d = fabs((double)C[(size_t)i * L->ldc + j] - ref[e]);
            double r = d / ((s.k + 2) * (double)FLT_EPSILON * S + TINY);
            track_max(&worst, r); /* NaN counts as the worst, and stays */
            track_max(&worst_abs, d);
        }
    *abs_err = worst_abs;
    return worst;
}

/* Sweeps run ab_sgemm on one thread. Results are bitwise identical for every thread count (a
 * property the "sgemm threads" entry of tests/test_kernels.c checks), so the threaded path is held
 * to the references by the smaller test_threaded_vs_gsl; one thread keeps the sweeps fast on a busy
 * 2-core machine, where a parallel call can wait for a descheduled worker's claimed part. */
typedef struct sweep_cfg {
    int n_threads;
    double min_fmas;  /* only shapes with m*n*k >= this (0: all) */
    int n_ab;         /* (alpha, beta) pairs: 9 = all of k_alphas x k_betas */
    const int *ab;    /* their indices alpha_index * 3 + beta_index */
    const char *tag;
} sweep_cfg;

static const int k_all_ab[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};

/* Every selected shape x trans_a x trans_b x ld x (alpha, beta) on every ISA, against one
 * reference; one TU_ASSERT_ERR per ISA with the worst case. */
static void sweep(enum ref_kind kind, const sweep_cfg *cfg) {
    shape shapes[MAX_SHAPES];
    int n_shapes = make_shapes(shapes);
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    ab_isa initial = ab_get_isa();
    int threads = ab_get_threads();
    assert_int_equal(ab_set_threads(cfg->n_threads), AB_OK);
    double worst[AB_ISA_COUNT] = {0}, worst_abs[AB_ISA_COUNT] = {0};
    char where[AB_ISA_COUNT][96];
    int n_calls = 0, n_expected = 0;
    for (int t = 0; t < n_isas; t++) snprintf(where[t], sizeof where[t], "-");

    for (int si = 0; si < n_shapes; si++) {
        const shape s = shapes[si];
        if ((double)s.m * s.n * s.k < cfg->min_fmas) continue;
        n_expected += 8 * cfg->n_ab * n_isas;
        problem p;
        problem_make(&p, s, 1000 + (uint64_t)si);
        size_t mn = (size_t)s.m * s.n;
        double *refs = (double *)calloc((size_t)cfg->n_ab * mn, sizeof(double));
        assert_non_null(refs);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int pi = 0; pi < 2; pi++) {
                    layout L;
                    layout_make(&L, &p, ta, tb, k_pads[pi]);
                    float *C = tu_alloc(L.c_size);
                    for (int q = 0; q < cfg->n_ab; q++)
                        ref_compute(refs + q * mn, kind, &p, &L, k_alphas[cfg->ab[q] / 3],
                                    k_betas[cfg->ab[q] % 3], C);
                    for (int t = 0; t < n_isas; t++) {
                        TU_SET_ISA(isas[t]); /* once per layout: ab_set_isa runs CPUID */
                        for (int q = 0; q < cfg->n_ab; q++) {
                            float alpha = k_alphas[cfg->ab[q] / 3], beta = k_betas[cfg->ab[q] % 3];
                            double ae, e = run_ours(&p, &L, alpha, beta, refs + q * mn, C, &ae);
                            n_calls++;
                            track_max(&worst_abs[t], ae);
                            if (track_max(&worst[t], e)) {
                                snprintf(where[t], sizeof where[t],
                                         "%dx%dx%d %c%c alpha=%g beta=%g pad=%d", s.m, s.n, s.k,
                                         ta ? 'T' : 'N', tb ? 'T' : 'N', (double)alpha,
                                         (double)beta, k_pads[pi]);
                            }
                        }
                    }
                    free(C);
                    layout_free(&L);
                }
        free(refs);
        problem_free(&p);
    }
    assert_true(n_expected > 0);
    assert_int_equal(n_calls, n_expected); /* every combination ran */
    assert_int_equal(ab_set_isa(initial), AB_OK);
    assert_int_equal(ab_set_threads(threads), AB_OK);
    for (int t = 0; t < n_isas; t++) {
        char what[512];
        snprintf(what, sizeof what,
                 "sgemm %-6s vs %-9s%s err/((k+2)eps S), max abs %.2e, worst at %s",
                 ab_isa_name(isas[t]), k_ref_names[kind], cfg->tag, worst_abs[t], where[t]);
        TU_ASSERT_ERR(what, worst[t], BOUND);
    }
}

static const sweep_cfg k_full = {1, 0.0, 9, k_all_ab, ""};

static void test_vs_gsl(void **state) {
    (void)state;
    sweep(REF_GSL, &k_full);
}

static void test_vs_openblas(void **state) {
    (void)state;
    if (!load_openblas()) {
        printf("SKIP test_vs_openblas: %s\n", g_openblas_why);
        skip();
    }
    sweep(REF_OPENBLAS, &k_full);
}

static void test_vs_double(void **state) {
    (void)state;
    sweep(REF_DOUBLE, &k_full);
}

/* The multi-threaded path (2 threads; the library threads problems above 48^3 multiply-adds) on the
 * larger shapes, every transpose and ld, alpha -0.5 with beta 0 (NaN in C) and 0.7. */
static void test_threaded_vs_gsl(void **state) {
    (void)state;
    static const int ab[2] = {1 * 3 + 0, 1 * 3 + 2};
    const sweep_cfg cfg = {2, (double)TU_SIZE(48 * 48 * 48, 0), 2, ab, " (2 threads)"};
    sweep(REF_GSL, &cfg);
}

/* ---------------------------------------------------------------------------------------------- */
/* BLAS semantics at the edges                                                                     */

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* m == 0 or n == 0: nothing is touched (C may even be NULL). k == 0: C = beta*C (one float product
 * per element, so exact equality), A and B not referenced (NULL allowed). alpha == 0: the same, even
 * when A and B hold NaN. beta == 0 writes zeros over NaN/Inf. Padding of C untouched throughout. */
static void test_zero_sizes_and_scalars(void **state) {
    (void)state;
    enum { M = 5, N = 7, LDC = 9, K = 4 };
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    ab_isa initial = ab_get_isa();
    float C[M * LDC], C0[M * LDC], Anan[M * K], Bnan[K * N];
    ab_rng rng;
    ab_rng_seed(&rng, 17, 17);
    tu_fill_uniform(C0, M * LDC, -2.0f, 2.0f, &rng);
    for (int e = 0; e < M * K; e++) Anan[e] = NAN;
    for (int e = 0; e < K * N; e++) Bnan[e] = NAN;
    const float betas[4] = {0.0f, 1.0f, 0.7f, -2.5f};

    for (int t = 0; t < n_isas; t++) {
        TU_SET_ISA(isas[t]);
        /* m == 0, n == 0: nothing happens, not even with NULL pointers */
        memcpy(C, C0, sizeof C);
        assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 0, N, K, 1.0f, Anan, K, Bnan, N, 0.0f, C, LDC), AB_OK);
        assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, M, 0, K, 1.0f, Anan, K, Bnan, 1, 0.0f, C, LDC), AB_OK);
        assert_int_equal(ab_sgemm(AB_TRANS, AB_TRANS, 0, 0, K, 1.0f, Anan, 1, Bnan, K, 0.0f, C, 1), AB_OK);
        assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 0, N, K, 1.0f, NULL, K, NULL, N, 0.5f, NULL, N), AB_OK);
        assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, M, 0, K, 1.0f, NULL, K, NULL, 1, 0.5f, NULL, 1), AB_OK);
        assert_memory_equal(C, C0, sizeof C);

        for (int bi = 0; bi < 4; bi++) {
            float beta = betas[bi];
            /* beta == 0 must ignore what C holds, Inf included */
            memcpy(C, C0, sizeof C);
            if (beta == 0.0f)
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) C[i * LDC + j] = (i + j) % 2 ? NAN : -INFINITY;
            float Cin[M * LDC];
            memcpy(Cin, C, sizeof C);
            for (int mode = 0; mode < 4; mode++) {
                memcpy(C, Cin, sizeof C);
                ab_status st;
                if (mode == 0) /* k == 0, A and B NULL */
                    st = ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, M, N, 0, 1.0f, NULL, 1, NULL, N, beta, C, LDC);
                else if (mode == 1) /* k == 0, transposed, A and B NaN-filled (not referenced) */
                    st = ab_sgemm(AB_TRANS, AB_TRANS, M, N, 0, -0.5f, Anan, M, Bnan, 1, beta, C, LDC);
                else if (mode == 2) /* alpha == 0, A and B NULL */
                    st = ab_sgemm(AB_NO_TRANS, AB_TRANS, M, N, K, 0.0f, NULL, K, NULL, K, beta, C, LDC);
                else /* alpha == 0, A and B all NaN: not referenced */
                    st = ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, M, N, K, 0.0f, Anan, K, Bnan, N, beta, C, LDC);
                if (st != AB_OK) fail_msg("mode %d beta %g: %s", mode, (double)beta, ab_last_error());
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < LDC; j++) {
                        float got = C[i * LDC + j], in = Cin[i * LDC + j];
                        if (j >= N) {
                            if (!same_bits(got, in)) fail_msg("padding (%d,%d) touched", i, j);
                        } else if (beta == 1.0f) {
                            if (!same_bits(got, in)) fail_msg("beta 1: C(%d,%d) changed", i, j);
                        } else {
                            float want = beta == 0.0f ? 0.0f : beta * in;
                            if (!(got == want))
                                fail_msg("%s mode %d beta %g: C(%d,%d) = %g, want %g",
                                         ab_isa_name(isas[t]), mode, (double)beta, i, j,
                                         (double)got, (double)want);
                        }
                    }
            }
        }
    }
    assert_int_equal(ab_set_isa(initial), AB_OK);
}

/* beta == 0 on a large, packed, multi-threaded problem: NaN and Inf in C never leak. */
static void test_beta_zero_ignores_nan_large(void **state) {
    (void)state;
    const int m = TU_SIZE(150, 30), n = TU_SIZE(140, 35), k = TU_SIZE(420, 40);
    float *A = tu_alloc((size_t)m * k), *B = tu_alloc((size_t)k * n), *C = tu_alloc((size_t)m * n);
    ab_rng rng;
    ab_rng_seed(&rng, 23, 23);
    tu_fill_uniform(A, (size_t)m * k, -1.0f, 1.0f, &rng);
    tu_fill_uniform(B, (size_t)k * n, -1.0f, 1.0f, &rng);
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    ab_isa initial = ab_get_isa();
    for (int t = 0; t < n_isas; t++) {
        TU_SET_ISA(isas[t]);
        for (size_t e = 0; e < (size_t)m * n; e++) C[e] = e % 3 ? NAN : INFINITY;
        assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_TRANS, m, n, k, 1.0f, A, k, B, k, 0.0f, C, n), AB_OK);
        for (size_t e = 0; e < (size_t)m * n; e++)
            if (!isfinite(C[e])) fail_msg("%s: C[%zu] = %g", ab_isa_name(isas[t]), e, (double)C[e]);
    }
    assert_int_equal(ab_set_isa(initial), AB_OK);
    free(A);
    free(B);
    free(C);
}

/* ---------------------------------------------------------------------------------------------- */
/* argument errors: right status, a message naming the culprit, C untouched                        */

#define EXPECT_ERR(call, status, word)                                                             \
    do {                                                                                           \
        memcpy(C, C0, sizeof C);                                                                   \
        ab_status st_ = (call);                                                                    \
        if (st_ != (status))                                                                       \
            fail_msg("%s: %s returned %s, expected %s", ab_isa_name(isas[t]), #call,               \
                     ab_status_str(st_), ab_status_str(status));                                   \
        if (strstr(ab_last_error(), (word)) == NULL)                             \
            fail_msg("%s: message \"%s\" does not mention %s", #call, ab_last_error(), (word));    \
        assert_memory_equal(C, C0, sizeof C);                                                      \
    } while (0)

static void test_errors(void **state) {
    (void)state;
    enum { M = 3, N = 4, K = 5 };
    float A[K * K], B[K * K], C[M * N], C0[M * N]; /* A, B big enough for every layout below */
    ab_rng rng;
    ab_rng_seed(&rng, 29, 29);
    tu_fill_uniform(A, K * K, -1.0f, 1.0f, &rng);
    tu_fill_uniform(B, K * K, -1.0f, 1.0f, &rng);
    tu_fill_uniform(C0, M * N, -1.0f, 1.0f, &rng);
    const ab_trans NT = AB_NO_TRANS, TT = AB_TRANS;
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    ab_isa initial = ab_get_isa();
    for (int t = 0; t < n_isas; t++) {
        TU_SET_ISA(isas[t]);
        /* NULL where the data is needed */
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 1.0f, NULL, K, B, N, 0.5f, C, N), AB_ERR_NULL, "A");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 1.0f, A, K, NULL, N, 0.5f, C, N), AB_ERR_NULL, "B");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 1.0f, A, K, B, N, 0.5f, NULL, N), AB_ERR_NULL, "C");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, 0, 1.0f, NULL, 1, NULL, N, 0.5f, NULL, N), AB_ERR_NULL, "C");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 0.0f, NULL, K, NULL, N, 0.5f, NULL, N), AB_ERR_NULL, "C");
        /* negative shapes */
        EXPECT_ERR(ab_sgemm(NT, NT, -1, N, K, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_SHAPE, "m");
        EXPECT_ERR(ab_sgemm(NT, NT, M, -1, K, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_SHAPE, "n");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, -1, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_SHAPE, "k");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, -2147483647 - 1, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_SHAPE, "k");
        /* leading dimensions below the stored row length (BLAS: lda >= max(1, cols)) */
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 1.0f, A, K - 1, B, N, 0.5f, C, N), AB_ERR_SHAPE, "lda");
        EXPECT_ERR(ab_sgemm(TT, NT, M, N, K, 1.0f, A, M - 1, B, N, 0.5f, C, N), AB_ERR_SHAPE, "lda");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 1.0f, A, K, B, N - 1, 0.5f, C, N), AB_ERR_SHAPE, "ldb");
        EXPECT_ERR(ab_sgemm(NT, TT, M, N, K, 1.0f, A, K, B, K - 1, 0.5f, C, N), AB_ERR_SHAPE, "ldb");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 1.0f, A, K, B, N, 0.5f, C, N - 1), AB_ERR_SHAPE, "ldc");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, 0, 1.0f, A, 0, B, N, 0.5f, C, N), AB_ERR_SHAPE, "lda");
        EXPECT_ERR(ab_sgemm(NT, NT, M, N, K, 1.0f, A, -K, B, N, 0.5f, C, N), AB_ERR_SHAPE, "lda");
        /* bad transpose flags */
        EXPECT_ERR(ab_sgemm((ab_trans)2, NT, M, N, K, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_ARG, "trans");
        EXPECT_ERR(ab_sgemm(NT, (ab_trans)2, M, N, K, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_ARG, "trans");
        EXPECT_ERR(ab_sgemm((ab_trans)-1, NT, M, N, K, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_ARG, "trans");
        EXPECT_ERR(ab_sgemm(NT, (ab_trans)111, M, N, K, 1.0f, A, K, B, N, 0.5f, C, N), AB_ERR_ARG, "trans");

        /* the minimal leading dimensions are accepted: the stored row length, not k */
        memcpy(C, C0, sizeof C);
        assert_int_equal(ab_sgemm(TT, NT, M, N, K, 1.0f, A, M, B, N, 0.5f, C, N), AB_OK);
        assert_int_equal(ab_sgemm(NT, TT, M, N, K, 1.0f, A, K, B, K, 0.5f, C, N), AB_OK);
        assert_int_equal(ab_sgemm(TT, TT, M, N, K, 1.0f, A, M, B, K, 0.5f, C, N), AB_OK);
        /* NULL A and B are fine when they are not referenced */
        memcpy(C, C0, sizeof C);
        assert_int_equal(ab_sgemm(NT, NT, M, N, 0, 1.0f, NULL, 1, NULL, N, 0.5f, C, N), AB_OK);
        assert_int_equal(ab_sgemm(TT, TT, M, N, K, 0.0f, NULL, M, NULL, K, 2.0f, C, N), AB_OK);
        for (int e = 0; e < M * N; e++) assert_true(C[e] == 2.0f * (0.5f * C0[e]));
    }
    assert_int_equal(ab_set_isa(initial), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* Row independence, bitwise: each row of C is computed by the same operations whatever m and the
 * rows around it. Batched generation relies on it (antibody_gpt.h stacks the rows of many
 * sequences into one GEMM and must give each sequence's tokens of decoding it alone, bit for bit).
 * On every ISA path, for every transpose, alpha 1 and 0.37, beta 0 and 1, A read in place
 * (lda < 1024) and packed (lda >= 1024), k below and above both KC (384, 512), m past the AVX-512
 * micro-panel (14 rows) and past MC (2016), the m-row product at 2 threads must equal, row by row,
 * the 1-row product of that row alone and the 3-row product of it with its neighbours.           */
static void rows_check(int ta, int tb, int m, int n, int k, int lda_pad, float alpha, float beta) {
    const int lda = (ta ? m : k) + lda_pad, ldb = tb ? k : n;
    const size_t a_size = (size_t)(ta ? k : m) * lda, b_size = (size_t)(tb ? n : k) * ldb;
    float *A = tu_alloc(a_size), *B = tu_alloc(b_size), *bias = tu_alloc((size_t)n);
    float *C = tu_alloc((size_t)m * n), *C1 = tu_alloc((size_t)3 * n);
    ab_rng rng;
    ab_rng_seed(&rng, (uint64_t)(m * 7 + n * 3 + k), 21);
    tu_fill_uniform(A, a_size, -1.0f, 1.0f, &rng);
    tu_fill_uniform(B, b_size, -1.0f, 1.0f, &rng);
    tu_fill_uniform(bias, (size_t)n, -1.0f, 1.0f, &rng);
    for (int i = 0; i < m; i++) memcpy(C + (size_t)i * n, bias, sizeof(float) * (size_t)n);
    assert_int_equal(ab_set_threads(2), AB_OK);
    assert_int_equal(ab_sgemm((ab_trans)ta, (ab_trans)tb, m, n, k, alpha, A, lda, B, ldb, beta, C, n), AB_OK);
    assert_int_equal(ab_set_threads(1), AB_OK);
    const int step = TU_SIZE(1, 7); /* under valgrind, every 7th row, and the last */
    for (int i = 0; i < m; i = i == m - 1 ? m : i + step < m ? i + step : m - 1) {
        int rows = i == 0 || i == m - 1 || i % 5 == 1 ? 1 : 3; /* alone, or with its neighbours */
        int first = rows == 1 ? i : i - 1;
        const float *Ai = A + (ta ? (size_t)first : (size_t)first * lda);
        for (int r = 0; r < rows; r++) memcpy(C1 + (size_t)r * n, bias, sizeof(float) * (size_t)n);
        assert_int_equal(ab_sgemm((ab_trans)ta, (ab_trans)tb, rows, n, k, alpha, Ai, lda, B, ldb, beta, C1, n), AB_OK);
        if (memcmp(C1 + (size_t)(i - first) * n, C + (size_t)i * n, sizeof(float) * (size_t)n) != 0)
            fail_msg("sgemm %s %c%c %dx%dx%d lda+%d alpha %g beta %g: row %d differs from it in a "
                     "%d-row product", ab_isa_name(ab_get_isa()), ta ? 'T' : 'N', tb ? 'T' : 'N', m,
                     n, k, lda_pad, (double)alpha, (double)beta, i, rows);
    }
    free(A);
    free(B);
    free(bias);
    free(C);
    free(C1);
}

static void test_rows_independent(void **state) {
    (void)state;
    static const int full[][3] = {{40, 67, 32}, {17, 33, 1024}, {30, 600, 400}, {2100, 20, 9}};
    static const int small[][3] = {{20, 67, 32}, {9, 33, 1024}, {9, 520, 400}, {2030, 20, 9}};
    const int(*shapes)[3] = tu_small() ? small : full;
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    ab_isa initial = ab_get_isa();
    int threads = ab_get_threads();
    for (int t = 0; t < n_isas; t++) {
        TU_SET_ISA(isas[t]);
        for (size_t s = 0; s < sizeof full / sizeof full[0]; s++)
            for (int ta = 0; ta < TU_SIZE(2, 1); ta++) /* valgrind: op(A) = A only (as decoding) */
                for (int tb = 0; tb < 2; tb++)
                    for (int pad = 0; pad < 2; pad++)
                        for (int q = 0; q < 4; q += TU_SIZE(1, 3)) /* small: (1, 0), (0.37, 1) */
                            rows_check(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], pad ? 1030 : 0,
                                       q & 1 ? 0.37f : 1.0f, q & 2 ? 1.0f : 0.0f);
    }
    assert_int_equal(ab_set_isa(initial), AB_OK);
    assert_int_equal(ab_set_threads(threads), AB_OK);
}

int main(void) {
    gsl_set_error_handler_off(); /* a GSL error becomes a status the test asserts, not abort() */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_gsl),
        cmocka_unit_test(test_vs_openblas),
        cmocka_unit_test(test_vs_double),
        cmocka_unit_test(test_threaded_vs_gsl),
        cmocka_unit_test(test_zero_sizes_and_scalars),
        cmocka_unit_test(test_beta_zero_ignores_nan_large),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_rows_independent),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (g_openblas) dlclose(g_openblas);
    return rc;
}
