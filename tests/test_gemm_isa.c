/* tests/test_gemm_isa.c - ab_sgemm on every ISA path this machine runs, against the GEMM definition
 * evaluated in double precision (the scalar oracle's formula, without its float rounding).
 *
 * Error bound, elementwise (a rounding-error analysis of a k-term dot product, with room for the
 * final alpha/beta update and the different FMA/summation order of each path):
 *     |ours - ref| <= 2 k FLT_EPSILON (|alpha| sum_p |a_ip| |b_pj| + |beta c_ij|)
 * Shapes sit on the block boundaries of kernels/gemm.h: MR/NR = 14/32 (AVX-512) and 6/16 (AVX2),
 * KC = 512 / 384, NC = 256 / 512 (AVX-512 / AVX2) and MC = 2016 (keep the lists below in sync when
 * those change), plus tiny ones.
 * Every call uses padded leading dimensions, small ones (operands read in place) and >= 1024
 * (operands packed); the padding of C must come back untouched. beta == 0 runs start from a
 * NaN-filled C, which must not leak. Results must be bitwise identical for 1, 2 and 3 threads, and
 * for 2 asked from inside a parallel region (granted 1). Under AB_TEST_SMALL=1 (valgrind) the big
 * shapes shrink.
 */
#include <float.h>
#include "testutil.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* Extra columns in every leading dimension. The kernel reads operands in place when their rows
 * are under 1024 floats apart and packs them otherwise, so tests run with both paddings. */
#define PAD_SMALL 3
#define PAD_PACKED 1029
static int g_pad = PAD_SMALL;
#define SENTINEL 1234.5f      /* value of C's padding, which must survive */

typedef struct gemm_case {
    int ta, tb, m, n, k;
    float alpha, beta;
} gemm_case;

/* Random op(A), op(B), C with padded strides; C padding = SENTINEL; C = NaN if beta == 0. */
typedef struct gemm_data {
    gemm_case c;
    int lda, ldb, ldc;
    float *A, *B, *C, *C0;
} gemm_data;

static void data_make(gemm_data *d, gemm_case c, uint64_t seed) {
    ab_rng rng;
    ab_rng_seed(&rng, seed, 11);
    d->c = c;
    int a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
    int b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
    d->lda = a_cols + g_pad;
    d->ldb = b_cols + g_pad;
    d->ldc = c.n + PAD_SMALL;
    d->A = tu_alloc((size_t)a_rows * d->lda);
    d->B = tu_alloc((size_t)b_rows * d->ldb);
    d->C = tu_alloc((size_t)c.m * d->ldc);
    d->C0 = tu_alloc((size_t)c.m * d->ldc);
    tu_fill_uniform(d->A, (size_t)a_rows * d->lda, -1.0f, 1.0f, &rng);
    tu_fill_uniform(d->B, (size_t)b_rows * d->ldb, -1.0f, 1.0f, &rng);
    for (int i = 0; i < c.m; i++)
        for (int j = 0; j < d->ldc; j++)
            d->C0[(size_t)i * d->ldc + j] =
                j >= c.n ? SENTINEL : c.beta == 0.0f ? NAN : 2.0f * ab_rng_uniform(&rng) - 1.0f;
}

static void data_free(gemm_data *d) {
    free(d->A);
    free(d->B);
    free(d->C);
    free(d->C0);
}

static void data_run(gemm_data *d) {
    const gemm_case *c = &d->c;
    memcpy(d->C, d->C0, sizeof(float) * (size_t)c->m * d->ldc);
    assert_int_equal(ab_sgemm(c->ta ? AB_TRANS : AB_NO_TRANS, c->tb ? AB_TRANS : AB_NO_TRANS, c->m,
                              c->n, c->k, c->alpha, d->A, d->lda, d->B, d->ldb, c->beta, d->C,
                              d->ldc),
                     AB_OK);
}

/* max over elements of |ours - ref| / bound (<= 1 passes); fails on a touched padding. */
static double data_check(const gemm_data *d) {
    const gemm_case *c = &d->c;
    double worst = 0.0;
    for (int i = 0; i < c->m; i++) {
        for (int j = 0; j < c->n; j++) {
            double dot = 0.0, mag = 0.0;
            for (int p = 0; p < c->k; p++) {
                double a = c->ta ? d->A[(size_t)p * d->lda + i] : d->A[(size_t)i * d->lda + p];
                double b = c->tb ? d->B[(size_t)j * d->ldb + p] : d->B[(size_t)p * d->ldb + j];
                dot += a * b;
                mag += fabs(a * b);
            }
            double c0 = c->beta == 0.0f ? 0.0 : (double)d->C0[(size_t)i * d->ldc + j];
            double ref = (double)c->alpha * dot + (double)c->beta * c0;
            double bound = 2.0 * c->k * FLT_EPSILON * (fabs((double)c->alpha) * mag + fabs(c->beta * c0));
            double err = fabs((double)d->C[(size_t)i * d->ldc + j] - ref);
            double r = bound > 0 ? err / bound : (err == 0 ? 0.0 : 2.0);
            if (!(r <= worst) && !isnan(worst)) worst = r; /* a NaN sticks */
        }
        for (int j = c->n; j < d->ldc; j++)
            if (d->C[(size_t)i * d->ldc + j] != SENTINEL)
                fail_msg("%dx%dx%d: C padding at row %d col %d was overwritten", c->m, c->n, c->k, i, j);
    }
    return worst;
}

/* Run one case on the current ISA and check it against the double reference. */
static void check_case(gemm_case c, uint64_t seed) {
    gemm_data d;
    data_make(&d, c, seed);
    data_run(&d);
    char what[160];
    snprintf(what, sizeof what, "sgemm %s %c%c %dx%dx%d a=%g b=%g (err/bound)",
             ab_isa_name(ab_get_isa()), c.ta ? 't' : 'n', c.tb ? 't' : 'n', c.m, c.n, c.k,
             (double)c.alpha, (double)c.beta);
    TU_ASSERT_ERR(what, data_check(&d), 1.0);
    data_free(&d);
}

/* Every transpose combination x the given shapes x alpha/beta variants, on every ISA. */
static void check_shapes(const int (*shapes)[3], int n_shapes, int all_scalings) {
    static const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.5f, 2.0f}, {2.0f, 0.0f},
                                  {0.75f, -0.25f}};
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    uint64_t seed = 1;
    for (int s = 0; s < n_isas; s++) {
        TU_SET_ISA(isas[s]);
        for (int i = 0; i < n_shapes; i++)
            for (int t = 0; t < 4; t++)
                for (int v = 0; v < (all_scalings ? 5 : 2); v++) {
                    /* without all_scalings: overwrite (beta = 0) and a general alpha/beta */
                    int vi = all_scalings ? v : (v == 0 ? 0 : 2);
                    gemm_case c = {t >> 1, t & 1, shapes[i][0], shapes[i][1], shapes[i][2],
                                   ab[vi][0], ab[vi][1]};
                    check_case(c, seed++);
                }
    }
    TU_SET_ISA(ab_best_isa());
}

static void test_tiny_shapes(void **state) {
    (void)state;
    static const int shapes[][3] = {{1, 1, 1}, {1, 1, 5}, {1, 7, 1}, {7, 1, 1}, {2, 3, 4},
                                    {3, 2, 1}, {5, 5, 5}, {1, 40, 3}, {40, 1, 3}, {9, 17, 2}};
    check_shapes(shapes, (int)(sizeof shapes / sizeof shapes[0]), 1);
}

/* MR and NR edges of both ISAs (AVX-512 14 x 32, AVX2 6 x 16), small k. */
static void test_register_tile_edges(void **state) {
    (void)state;
    static const int shapes[][3] = {
        {13, 31, 9}, {14, 32, 9}, {15, 33, 9}, {29, 64, 3}, {28, 65, 4},  /* AVX-512 MR, NR */
        {5, 15, 8},  {6, 16, 8},  {7, 17, 8},  {12, 48, 5}, {19, 47, 6},  /* AVX2 MR, NR */
        {1, 100, 11}, {100, 1, 11}, {43, 21, 1},
    };
    check_shapes(shapes, (int)(sizeof shapes / sizeof shapes[0]), 1);
}

/* KC edges of both ISAs with beta != 0, which the later KC blocks must not re-apply. AVX-512
 * (KC = 512): k = 511 and 512 one block, 513 two balanced blocks, 1025 three; AVX2 (KC = 384):
 * 383 and 384 one block, 385 two, 769 three. */
static void test_kc_edges(void **state) {
    (void)state;
    int m = TU_SIZE(17, 15), n = TU_SIZE(35, 33);
    const int shapes[][3] = {{m, n, 383}, {m, n, 384},  {m, n, 385}, {m, n, 511},
                             {m, n, 512}, {m, n, 513},  {m, n, 769}, {m, n, 1025}};
    check_shapes(shapes, 8, 0);
}

/* NC and MC edges: n = 255 / 256 / 257 (AVX-512) and 511 / 512 / 513 (AVX2), m = 2015 / 2016 /
 * 2017, around one block. */
static void test_cache_block_edges(void **state) {
    (void)state;
    int k = TU_SIZE(24, 5), other = TU_SIZE(29, 15);
    const int shapes[][3] = {{other, 255, k},  {other, 256, k},  {other, 257, k},
                             {other, 511, k},  {other, 512, k},  {other, 513, k},
                             {2015, other, k}, {2016, other, k}, {2017, other, k}};
    check_shapes(shapes, 9, 0);
}

/* The packed path (leading dimensions >= 1024): register-tile, KC and NC edges and a medium shape
 * on every layout and scaling. */
static void test_packed_path(void **state) {
    (void)state;
    const int shapes[][3] = {{13, 31, 9}, {15, 33, 9}, {7, 17, 8}, {1, 1, 1},
                             {TU_SIZE(17, 15), TU_SIZE(35, 33), 385},
                             {TU_SIZE(17, 15), TU_SIZE(35, 33), 513},
                             {TU_SIZE(29, 15), 257, TU_SIZE(24, 5)},
                             {TU_SIZE(29, 15), 513, TU_SIZE(24, 5)},
                             {TU_SIZE(130, 45), TU_SIZE(150, 70), TU_SIZE(170, 100)}};
    g_pad = PAD_PACKED;
    check_shapes(shapes, (int)(sizeof shapes / sizeof shapes[0]), 1);
    g_pad = PAD_SMALL;
}

/* beta == 0 with NaN in C: the result must be exactly alpha*A*B, no NaN. Covered by every case
 * above (beta = 0 starts from NaN); this one also checks that NaN never appears on an edge tile
 * whatever the ISA, with alpha != 1. */
static void test_beta_zero_ignores_nan(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    for (int s = 0; s < n_isas; s++) {
        TU_SET_ISA(isas[s]);
        gemm_case c = {0, 1, 31, 47, 19, -3.0f, 0.0f};
        gemm_data d;
        data_make(&d, c, 99);
        data_run(&d);
        for (int i = 0; i < c.m; i++)
            for (int j = 0; j < c.n; j++) assert_false(isnan(d.C[(size_t)i * d.ldc + j]));
        TU_ASSERT_ERR("sgemm beta=0 over NaN (err/bound)", data_check(&d), 1.0);
        data_free(&d);
    }
    TU_SET_ISA(ab_best_isa());
}

/* Results do not depend on the thread count: bitwise (+0 == -0) for 1, 2, 3 threads and a nested
 * call, on shapes the kernel splits by rows and by columns, with ragged edges, every layout. */
static void test_threads_bitwise(void **state) {
    (void)state;
    int saved_threads = ab_get_threads();
    /* All above the kernel's 1M multiply-add threading threshold: rows split (two KC blocks on
     * both ISAs);
     * rows split, narrow; rows split because n is under two NR panels; columns split (few rows). */
    const int shapes[][3] = {{TU_SIZE(150, 100), TU_SIZE(333, 120), TU_SIZE(601, 90)},
                             {TU_SIZE(301, 130), TU_SIZE(70, 60), TU_SIZE(390, 140)},
                             {TU_SIZE(301, 130), TU_SIZE(20, 12), TU_SIZE(390, 700)},
                             {20, TU_SIZE(333, 300), TU_SIZE(401, 200)}};
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    for (int s = 0; s < n_isas; s++) {
        TU_SET_ISA(isas[s]);
        for (int i = 0; i < 8; i++)
            for (int t = 0; t < 4; t++) {
                g_pad = i < 4 ? PAD_SMALL : PAD_PACKED; /* in place, then packed */
                gemm_case c = {t >> 1, t & 1, shapes[i % 4][0], shapes[i % 4][1], shapes[i % 4][2],
                               1.5f, 0.5f};
                gemm_data d;
                data_make(&d, c, 1000 + (uint64_t)(10 * i + t));
                size_t count = (size_t)c.m * d.ldc;
                float *first = tu_alloc(count);
                for (int threads = 1; threads <= 4; threads++) {
                    /* 4: two threads asked for from inside a parallel region, which (nested
                     * parallelism being off) grants a team of one */
                    assert_int_equal(ab_set_threads(threads == 4 ? 2 : threads), AB_OK);
                    if (threads == 4) {
#ifdef _OPENMP
#pragma omp parallel num_threads(2)
#pragma omp single
#endif
                        data_run(&d);
                    } else {
                        data_run(&d);
                    }
                    if (threads == 1) {
                        memcpy(first, d.C, count * sizeof(float));
                        continue;
                    }
                    for (size_t e = 0; e < count; e++)
                        if (!(d.C[e] == first[e]))
                            fail_msg("%s %dx%dx%d: element %zu differs with %d threads (%.9g vs %.9g)",
                                     ab_isa_name(isas[s]), c.m, c.n, c.k, e, threads,
                                     (double)d.C[e], (double)first[e]);
                }
                free(first);
                data_free(&d);
            }
    }
    g_pad = PAD_SMALL;
    assert_int_equal(ab_set_threads(saved_threads), AB_OK);
    TU_SET_ISA(ab_best_isa());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_shapes),
        cmocka_unit_test(test_register_tile_edges),
        cmocka_unit_test(test_kc_edges),
        cmocka_unit_test(test_cache_block_edges),
        cmocka_unit_test(test_packed_path),
        cmocka_unit_test(test_beta_zero_ignores_nan),
        cmocka_unit_test(test_threads_bitwise),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
#ifdef _OPENMP
    /* Join OpenMP's idle worker threads: memcheck would report their thread-local storage as
     * "possibly lost" at exit. */
    omp_pause_resource_all(omp_pause_hard);
#endif
    return failed;
}
