/* tests/test_psnorm.c - per-sample gradient norms (ab_psnorm_linear, ab_psnorm_embedding,
 * ab_psnorm_choose) against per-sample gradients materialised one sample at a time in double, and
 * against per-sample gradients of real tiny models obtained by central finite differences. Every
 * comparison runs on every ISA path this machine supports. The ghost kernel against its scalar
 * oracle, path by path, is an entry of the kernel table in tests/test_kernels.c.
 *
 * Error metric: |got - want| / want for squared norms (want > 0 for the random data used here).
 * Bound 1e-4 (the brief's): the ghost path forms T x T Gram matrices in float, the materialising
 * path a d_out x d_in float product, so errors of ~sqrt(d) float ulp are expected.
 */
#include "testutil.h"
#include <float.h>
#include <limits.h>

#define PS_BOUND 1e-4

static double *dalloc(size_t n) {
    double *p = (double *)calloc(n ? n : 1, sizeof(double));
    assert_non_null(p);
    return p;
}

/* Normal entries with a per-token scale 2^[-3, 3]: tokens of very different size, as in a network. */
static void fill_tokens(float *x, int rows, int cols, ab_rng *rng) {
    for (int t = 0; t < rows; t++) {
        float s = ldexpf(1.0f, (int)ab_rng_below(rng, 7) - 3);
        for (int j = 0; j < cols; j++) x[(size_t)t * cols + j] = s * ab_rng_normal(rng);
    }
}

/* Reference: grad_W(i) = sum_t g_t a_t^T (d_out x d_in) and grad_b(i) = sum_t g_t materialised in
 * double, one sample at a time; outputs their squared norms. */
static void ref_linear(double *w_sq, double *b_sq, const float *A, const float *G, int n_samples,
                       int T, int d_in, int d_out) {
    double *gw = dalloc((size_t)d_out * d_in), *gb = dalloc((size_t)d_out);
    for (int i = 0; i < n_samples; i++) {
        const float *Ai = A + (size_t)i * T * d_in, *Gi = G + (size_t)i * T * d_out;
        memset(gw, 0, sizeof(double) * (size_t)d_out * d_in);
        memset(gb, 0, sizeof(double) * (size_t)d_out);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < d_out; j++) {
                double g = Gi[(size_t)t * d_out + j];
                gb[j] += g;
                for (int k = 0; k < d_in; k++) gw[(size_t)j * d_in + k] += g * Ai[(size_t)t * d_in + k];
            }
        double sw = 0.0, sb = 0.0;
        for (size_t q = 0; q < (size_t)d_out * d_in; q++) sw += gw[q] * gw[q];
        for (int j = 0; j < d_out; j++) sb += gb[j] * gb[j];
        w_sq[i] = sw;
        b_sq[i] = sb;
    }
    free(gw);
    free(gb);
}

static double max_rel(const float *got, const double *want, int n) {
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / fabs(want[i]);
        tu_worst(&worst, e);
    }
    return worst;
}

static const char *method_name(ab_psnorm_method m) {
    return m == AB_PSNORM_GHOST ? "ghost" : m == AB_PSNORM_MATERIALIZE ? "materialize" : "auto";
}

/* ---------------------------------------------------------------------------------------------- */

static void test_choose_rule(void **state) {
    (void)state;
    /* 2 T^2 < d_in d_out -> GHOST, otherwise MATERIALIZE (equality included) */
    assert_int_equal(ab_psnorm_choose(4, 4, 8), AB_PSNORM_MATERIALIZE);  /* 32 == 32 */
    assert_int_equal(ab_psnorm_choose(4, 3, 11), AB_PSNORM_GHOST);       /* 32 < 33 */
    assert_int_equal(ab_psnorm_choose(4, 31, 1), AB_PSNORM_MATERIALIZE); /* 32 > 31 */
    assert_int_equal(ab_psnorm_choose(1, 1, 1), AB_PSNORM_MATERIALIZE);  /* 2 > 1 */
    assert_int_equal(ab_psnorm_choose(1, 1, 3), AB_PSNORM_GHOST);        /* 2 < 3 */
    assert_int_equal(ab_psnorm_choose(64, 128, 64), AB_PSNORM_MATERIALIZE); /* 8192 == 8192 */
    assert_int_equal(ab_psnorm_choose(64, 128, 65), AB_PSNORM_GHOST);
    /* no int overflow in 2 T^2 or d_in d_out */
    assert_int_equal(ab_psnorm_choose(40000, 60000, 60000), AB_PSNORM_GHOST); /* 3.2e9 < 3.6e9 */
    assert_int_equal(ab_psnorm_choose(50000, 60000, 60000), AB_PSNORM_MATERIALIZE); /* 5e9 > 3.6e9 */
    assert_int_equal(ab_psnorm_choose(INT_MAX, INT_MAX, INT_MAX), AB_PSNORM_MATERIALIZE);
    assert_int_equal(ab_psnorm_choose(2, INT_MAX, INT_MAX), AB_PSNORM_GHOST);
}

typedef struct {
    int d_in, d_out;
} shape2;

static void test_linear_vs_materialised(void **state) {
    (void)state;
    const int Ts[] = {1, 2, 7, 16, 64};
    const shape2 shapes_full[] = {{1, 1}, {3, 5}, {16, 8}, {33, 70}, {128, 96}};
    const shape2 shapes_small[] = {{1, 1}, {3, 5}, {16, 8}, {33, 70}, {100, 90}};
    const shape2 *shapes = tu_small() ? shapes_small : shapes_full;
    const int n_shapes = 5, n_samples = TU_SIZE(3, 2);
    const ab_psnorm_method methods[] = {AB_PSNORM_GHOST, AB_PSNORM_MATERIALIZE, AB_PSNORM_AUTO};
    int chose_ghost = 0, chose_mat = 0;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double worst_w[3] = {0, 0, 0}, worst_b[3] = {0, 0, 0};
        for (int ti = 0; ti < 5; ti++)
            for (int si = 0; si < n_shapes; si++) {
                int T = Ts[ti], d_in = shapes[si].d_in, d_out = shapes[si].d_out;
                float *A = tu_alloc((size_t)n_samples * T * d_in);
                float *G = tu_alloc((size_t)n_samples * T * d_out);
                ab_rng rng;
                ab_rng_seed(&rng, 1000 + ti * 10 + si, 1);
                fill_tokens(A, n_samples * T, d_in, &rng);
                fill_tokens(G, n_samples * T, d_out, &rng);
                double w_ref[3], b_ref[3];
                ref_linear(w_ref, b_ref, A, G, n_samples, T, d_in, d_out);
                float w[3][4], b[3][4]; /* [method][sample]; index n_samples is a sentinel */
                for (int mi = 0; mi < 3; mi++) {
                    for (int s = 0; s < 4; s++) w[mi][s] = b[mi][s] = 0.0f;
                    w[mi][n_samples] = b[mi][n_samples] = 12345.0f;
                    assert_int_equal(ab_psnorm_linear(w[mi], b[mi], A, G, n_samples, T, d_in,
                                                      d_out, methods[mi]),
                                     AB_OK);
                    assert_true(w[mi][n_samples] == 12345.0f && b[mi][n_samples] == 12345.0f);
                    worst_w[mi] = fmax(worst_w[mi], max_rel(w[mi], w_ref, n_samples));
                    worst_b[mi] = fmax(worst_b[mi], max_rel(b[mi], b_ref, n_samples));
                }
                /* AUTO must do exactly what ab_psnorm_choose says: bitwise the chosen method */
                ab_psnorm_method pick = ab_psnorm_choose(T, d_in, d_out);
                int pi = pick == AB_PSNORM_GHOST ? 0 : 1;
                assert_true(pick == AB_PSNORM_GHOST || pick == AB_PSNORM_MATERIALIZE);
                if (T > 1) *(pick == AB_PSNORM_GHOST ? &chose_ghost : &chose_mat) += 1;
                assert_memory_equal(w[2], w[pi], sizeof(float) * (size_t)n_samples);
                assert_memory_equal(b[2], b[pi], sizeof(float) * (size_t)n_samples);
                /* T == 1: ||g||^2 ||a||^2 */
                if (T == 1)
                    for (int s = 0; s < n_samples; s++) {
                        double na = 0.0, ng = 0.0;
                        for (int k = 0; k < d_in; k++) na += (double)A[s * d_in + k] * A[s * d_in + k];
                        for (int j = 0; j < d_out; j++) ng += (double)G[s * d_out + j] * G[s * d_out + j];
                        assert_true(fabs(w[0][s] - na * ng) <= 4.0 * FLT_EPSILON * na * ng);
                        assert_true(fabs(b[0][s] - ng) <= 4.0 * FLT_EPSILON * ng);
                    }
                free(A);
                free(G);
            }
        for (int mi = 0; mi < 3; mi++) {
            char what[96];
            snprintf(what, sizeof what, "psnorm_linear W %s vs materialised double [%s]",
                     method_name(methods[mi]), ab_isa_name(isas[ii]));
            TU_ASSERT_ERR(what, worst_w[mi], PS_BOUND);
            snprintf(what, sizeof what, "psnorm_linear b %s vs materialised double [%s]",
                     method_name(methods[mi]), ab_isa_name(isas[ii]));
            TU_ASSERT_ERR(what, worst_b[mi], PS_BOUND);
        }
    }
    /* the grid exercised both choices of AUTO */
    assert_true(chose_ghost > 0);
    assert_true(chose_mat > 0);
}

/* The outputs are ADDED to; a NULL output is skipped without affecting the other; A is not needed
 * for the bias alone; n_samples == 0 touches nothing. */
static void test_linear_accumulates_and_skips(void **state) {
    (void)state;
    enum { NS = 4, T = 5, DI = 9, DO = 6 };
    float *A = tu_alloc(NS * T * DI), *G = tu_alloc(NS * T * DO);
    ab_rng rng;
    ab_rng_seed(&rng, 77, 1);
    fill_tokens(A, NS * T, DI, &rng);
    fill_tokens(G, NS * T, DO, &rng);
    const ab_psnorm_method methods[] = {AB_PSNORM_GHOST, AB_PSNORM_MATERIALIZE, AB_PSNORM_AUTO};
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double worst = 0.0;
        for (int mi = 0; mi < 3; mi++) {
            ab_psnorm_method m = methods[mi];
            float w0[NS + 1] = {0}, b0[NS + 1] = {0};
            assert_int_equal(ab_psnorm_linear(w0, b0, A, G, NS, T, DI, DO, m), AB_OK);
            /* pre-filled values preserved: result = pre + fresh (one float addition) */
            float w[NS + 1], b[NS + 1];
            for (int i = 0; i <= NS; i++) {
                w[i] = 1000.5f + (float)i;
                b[i] = -0.25f * (float)i;
            }
            assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, T, DI, DO, m), AB_OK);
            for (int i = 0; i < NS; i++) {
                double ww = 1000.5 + i + w0[i], bb = -0.25 * i + b0[i];
                worst = fmax(worst, fabs(w[i] - ww) / (1000.5 + i + w0[i]));
                worst = fmax(worst, fabs(b[i] - bb) / (0.25 * i + b0[i]));
            }
            assert_true(w[NS] == 1000.5f + NS && b[NS] == -0.25f * NS); /* past the end: untouched */
            /* twice = double */
            float w2[NS] = {0}, b2[NS] = {0};
            assert_int_equal(ab_psnorm_linear(w2, b2, A, G, NS, T, DI, DO, m), AB_OK);
            assert_int_equal(ab_psnorm_linear(w2, b2, A, G, NS, T, DI, DO, m), AB_OK);
            for (int i = 0; i < NS; i++) {
                assert_true(w2[i] == 2.0f * w0[i]);
                assert_true(b2[i] == 2.0f * b0[i]);
            }
            /* NULL w: bias only, bitwise the same as computed together; A may then be NULL */
            float bo[NS] = {0};
            assert_int_equal(ab_psnorm_linear(NULL, bo, NULL, G, NS, T, DI, DO, m), AB_OK);
            assert_memory_equal(bo, b0, sizeof bo);
            /* NULL b: weight only */
            float wo[NS] = {0};
            assert_int_equal(ab_psnorm_linear(wo, NULL, A, G, NS, T, DI, DO, m), AB_OK);
            assert_memory_equal(wo, w0, sizeof wo);
            /* both NULL: nothing to do */
            assert_int_equal(ab_psnorm_linear(NULL, NULL, A, G, NS, T, DI, DO, m), AB_OK);
            /* n_samples == 0: no-op, no data needed */
            float ws[2] = {7.0f, 8.0f}, bs[2] = {9.0f, 10.0f};
            assert_int_equal(ab_psnorm_linear(ws, bs, A, G, 0, T, DI, DO, m), AB_OK);
            assert_int_equal(ab_psnorm_linear(ws, bs, NULL, NULL, 0, T, DI, DO, m), AB_OK);
            assert_int_equal(ab_psnorm_linear(NULL, NULL, NULL, NULL, 0, T, DI, DO, m), AB_OK);
            assert_true(ws[0] == 7.0f && ws[1] == 8.0f && bs[0] == 9.0f && bs[1] == 10.0f);
        }
        char what[96];
        snprintf(what, sizeof what, "psnorm_linear prefill + fresh [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, worst, 2.0 * FLT_EPSILON);
    }
    free(A);
    free(G);
}

static void test_linear_errors(void **state) {
    (void)state;
    enum { NS = 2, T = 3, DI = 4, DO = 5 };
    float A[NS * T * DI], G[NS * T * DO];
    for (int i = 0; i < NS * T * DI; i++) A[i] = 0.1f * (float)i;
    for (int i = 0; i < NS * T * DO; i++) G[i] = 0.2f - 0.01f * (float)i;
    float w[NS] = {3.0f, 4.0f}, b[NS] = {5.0f, 6.0f};
    const ab_psnorm_method M = AB_PSNORM_AUTO;
    assert_int_equal(ab_psnorm_linear(w, b, NULL, G, NS, T, DI, DO, M), AB_ERR_NULL);
    assert_int_equal(ab_psnorm_linear(w, NULL, NULL, G, NS, T, DI, DO, AB_PSNORM_GHOST), AB_ERR_NULL);
    assert_int_equal(ab_psnorm_linear(w, b, A, NULL, NS, T, DI, DO, M), AB_ERR_NULL);
    assert_int_equal(ab_psnorm_linear(NULL, b, A, NULL, NS, T, DI, DO, M), AB_ERR_NULL);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, -1, T, DI, DO, M), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, 0, DI, DO, M), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, -2, DI, DO, M), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, T, 0, DO, M), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, T, -4, DO, M), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, T, DI, 0, M), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, T, DI, -5, M), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, T, DI, DO, (ab_psnorm_method)3), AB_ERR_ARG);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, NS, T, DI, DO, (ab_psnorm_method)-1), AB_ERR_ARG);
    assert_int_equal(ab_psnorm_linear(w, b, A, G, 0, T, DI, DO, (ab_psnorm_method)7), AB_ERR_ARG);
    assert_true(w[0] == 3.0f && w[1] == 4.0f && b[0] == 5.0f && b[1] == 6.0f);
    assert_true(strlen(ab_last_error()) > 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* Embedding                                                                                      */

/* Reference: the per-sample embedding gradient, vocab x dim, rows scattered by ids, in double. */
static void ref_embedding(double *sq, const int *ids, const float *G, int n_samples, int T,
                          int vocab, int dim) {
    double *D = dalloc((size_t)vocab * dim);
    for (int i = 0; i < n_samples; i++) {
        memset(D, 0, sizeof(double) * (size_t)vocab * dim);
        for (int t = 0; t < T; t++) {
            int id = ids[(size_t)i * T + t];
            for (int j = 0; j < dim; j++) D[(size_t)id * dim + j] += G[((size_t)i * T + t) * dim + j];
        }
        double s = 0.0;
        for (size_t q = 0; q < (size_t)vocab * dim; q++) s += D[q] * D[q];
        sq[i] = s;
    }
    free(D);
}

static void test_embedding_vs_materialised(void **state) {
    (void)state;
    const int Ts[] = {1, 2, 7, 16, 64};
    const int dims[] = {1, 7, 64, 129};
    const int vocabs[] = {3, 50};
    const int NS = 3;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double worst = 0.0;
        int repeats_seen = 0;
        for (int ti = 0; ti < 5; ti++)
            for (int di = 0; di < 4; di++)
                for (int vi = 0; vi < 2; vi++) {
                    int T = Ts[ti], dim = dims[di], vocab = vocabs[vi];
                    int *ids = (int *)calloc((size_t)NS * T, sizeof(int));
                    assert_non_null(ids);
                    float *G = tu_alloc((size_t)NS * T * dim);
                    ab_rng rng;
                    ab_rng_seed(&rng, 3000 + ti * 100 + di * 10 + vi, 1);
                    for (int q = 0; q < NS * T; q++) ids[q] = (int)ab_rng_below(&rng, (uint32_t)vocab);
                    for (int t = 0; t < T; t++) ids[t] = vocab - 1; /* sample 0: one id throughout */
                    fill_tokens(G, NS * T, dim, &rng);
                    double want[3];
                    ref_embedding(want, ids, G, NS, T, vocab, dim);
                    float got[4] = {0, 0, 0, -1.0f};
                    assert_int_equal(ab_psnorm_embedding(got, ids, G, NS, T, vocab, dim), AB_OK);
                    assert_true(got[3] == -1.0f);
                    worst = fmax(worst, max_rel(got, want, NS));
                    for (int s = 0; s < NS; s++)
                        for (int t = 1; t < T; t++)
                            if (ids[s * T + t] == ids[s * T]) repeats_seen++;
                    /* adds to what is there */
                    float acc[3] = {0.5f, 100.0f, -2.0f};
                    assert_int_equal(ab_psnorm_embedding(acc, ids, G, NS, T, vocab, dim), AB_OK);
                    assert_true(fabs(acc[0] - (0.5 + got[0])) <= 2.0 * FLT_EPSILON * (0.5 + got[0]));
                    assert_true(fabs(acc[1] - (100.0 + got[1])) <= 2.0 * FLT_EPSILON * (100.0 + got[1]));
                    assert_true(fabs(acc[2] - (-2.0 + got[2])) <= 2.0 * FLT_EPSILON * (2.0 + got[2]));
                    free(ids);
                    free(G);
                }
        assert_true(repeats_seen > 0);
        char what[96];
        snprintf(what, sizeof what, "psnorm_embedding vs materialised double [%s]",
                 ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, worst, PS_BOUND);
    }
}

/* An embedding used as a linear layer on one-hot inputs: both functions must agree. */
static void test_embedding_equals_onehot_linear(void **state) {
    (void)state;
    enum { NS = 2, T = 9, V = 6, D = 5 };
    int ids[NS * T];
    float onehot[NS * T * V], G[NS * T * D];
    ab_rng rng;
    ab_rng_seed(&rng, 91, 1);
    memset(onehot, 0, sizeof onehot);
    for (int q = 0; q < NS * T; q++) {
        ids[q] = (int)ab_rng_below(&rng, V);
        onehot[q * V + ids[q]] = 1.0f;
    }
    fill_tokens(G, NS * T, D, &rng);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        float e[NS] = {0}, wl[NS] = {0};
        assert_int_equal(ab_psnorm_embedding(e, ids, G, NS, T, V, D), AB_OK);
        /* the table is vocab x dim, i.e. grad = sum_t onehot_t g_t^T: A = G, G = onehot */
        assert_int_equal(ab_psnorm_linear(wl, NULL, G, onehot, NS, T, D, V, AB_PSNORM_MATERIALIZE),
                         AB_OK);
        double err = 0.0;
        for (int s = 0; s < NS; s++) err = fmax(err, fabs(e[s] - wl[s]) / wl[s]);
        char what[96];
        snprintf(what, sizeof what, "psnorm_embedding vs one-hot linear [%s]", ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, err, PS_BOUND);
    }
}

static void test_embedding_errors(void **state) {
    (void)state;
    enum { NS = 2, T = 3, V = 4, D = 2 };
    int ids[NS * T] = {0, 1, 2, 3, 2, 1};
    float G[NS * T * D];
    for (int i = 0; i < NS * T * D; i++) G[i] = 0.5f + (float)i;
    float sq[NS] = {1.0f, 2.0f};
    const int bad_ids[] = {V, -1, INT_MAX, INT_MIN};
    for (int k = 0; k < 4; k++)
        for (int pos = 0; pos < NS * T; pos += NS * T - 1) { /* first and last id */
            int keep = ids[pos];
            ids[pos] = bad_ids[k];
            assert_int_equal(ab_psnorm_embedding(sq, ids, G, NS, T, V, D), AB_ERR_ARG);
            ids[pos] = keep;
        }
    assert_true(sq[0] == 1.0f && sq[1] == 2.0f); /* rejected calls wrote nothing */
    assert_int_equal(ab_psnorm_embedding(NULL, ids, G, NS, T, V, D), AB_ERR_NULL);
    assert_int_equal(ab_psnorm_embedding(sq, NULL, G, NS, T, V, D), AB_ERR_NULL);
    assert_int_equal(ab_psnorm_embedding(sq, ids, NULL, NS, T, V, D), AB_ERR_NULL);
    assert_int_equal(ab_psnorm_embedding(sq, ids, G, -1, T, V, D), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_embedding(sq, ids, G, NS, 0, V, D), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_embedding(sq, ids, G, NS, -3, V, D), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_embedding(sq, ids, G, NS, T, 0, D), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_embedding(sq, ids, G, NS, T, V, 0), AB_ERR_SHAPE);
    assert_int_equal(ab_psnorm_embedding(sq, ids, G, NS, T, V, -2), AB_ERR_SHAPE);
    assert_true(sq[0] == 1.0f && sq[1] == 2.0f);
    /* n_samples == 0: no-op, nothing needed */
    assert_int_equal(ab_psnorm_embedding(NULL, NULL, NULL, 0, T, V, D), AB_OK);
    assert_int_equal(ab_psnorm_embedding(sq, ids, G, 0, T, V, D), AB_OK);
    assert_true(sq[0] == 1.0f && sq[1] == 2.0f);
    /* ids at the edges of the range are fine */
    int edge[NS * T] = {0, V - 1, 0, V - 1, V - 1, V - 1};
    assert_int_equal(ab_psnorm_embedding(sq, edge, G, NS, T, V, D), AB_OK);
}

/* ---------------------------------------------------------------------------------------------- */
/* End to end: per-sample gradients of real tiny models, by finite differences of the per-sample
 * loss (one sample at a time, in double), against the norms from ab_psnorm_linear fed with the
 * activations and output gradients of the same models. */

/* Model 1: y = W a + b, batch loss = (1 / sum_j N_j) sum_i sum_t 1/2 ||y_it - target_it||^2. */
enum { M1_NS = 5, M1_T = 4, M1_DI = 6, M1_DO = 3 };

static double m1_sample_loss(const double *W, const double *b, const float *A, const double *Y,
                             int i) {
    double L = 0.0;
    for (int t = 0; t < M1_T; t++) {
        const float *a = A + ((size_t)i * M1_T + t) * M1_DI;
        const double *y = Y + ((size_t)i * M1_T + t) * M1_DO;
        for (int j = 0; j < M1_DO; j++) {
            double o = b[j];
            for (int k = 0; k < M1_DI; k++) o += W[j * M1_DI + k] * a[k];
            L += 0.5 * (o - y[j]) * (o - y[j]);
        }
    }
    return L / (double)(M1_NS * M1_T); /* token-mean over the whole batch */
}

static void test_end_to_end_linear_model(void **state) {
    (void)state;
    double W[M1_DO * M1_DI], b[M1_DO], Y[M1_NS * M1_T * M1_DO];
    float A[M1_NS * M1_T * M1_DI], G[M1_NS * M1_T * M1_DO];
    ab_rng rng;
    ab_rng_seed(&rng, 4242, 1);
    for (int q = 0; q < M1_DO * M1_DI; q++) W[q] = ab_rng_normal(&rng);
    for (int q = 0; q < M1_DO; q++) b[q] = ab_rng_normal(&rng);
    fill_tokens(A, M1_NS * M1_T, M1_DI, &rng);
    for (int q = 0; q < M1_NS * M1_T * M1_DO; q++) Y[q] = 2.0 * ab_rng_normal(&rng);
    /* forward + output gradient dL/dy_t = (y_t - target_t) / sum_j N_j, our own double code */
    for (int q = 0; q < M1_NS * M1_T; q++)
        for (int j = 0; j < M1_DO; j++) {
            double o = b[j];
            for (int k = 0; k < M1_DI; k++) o += W[j * M1_DI + k] * A[q * M1_DI + k];
            G[q * M1_DO + j] = (float)((o - Y[q * M1_DO + j]) / (double)(M1_NS * M1_T));
        }
    /* per-sample gradients by central differences (the loss is quadratic: exact up to rounding) */
    double w_fd[M1_NS], b_fd[M1_NS];
    const double h = 1e-3;
    for (int i = 0; i < M1_NS; i++) {
        double sw = 0.0, sb = 0.0;
        for (int q = 0; q < M1_DO * M1_DI; q++) {
            double keep = W[q];
            W[q] = keep + h;
            double lp = m1_sample_loss(W, b, A, Y, i);
            W[q] = keep - h;
            double lm = m1_sample_loss(W, b, A, Y, i);
            W[q] = keep;
            double d = (lp - lm) / (2.0 * h);
            sw += d * d;
        }
        for (int q = 0; q < M1_DO; q++) {
            double keep = b[q];
            b[q] = keep + h;
            double lp = m1_sample_loss(W, b, A, Y, i);
            b[q] = keep - h;
            double lm = m1_sample_loss(W, b, A, Y, i);
            b[q] = keep;
            double d = (lp - lm) / (2.0 * h);
            sb += d * d;
        }
        w_fd[i] = sw;
        b_fd[i] = sb;
    }
    const ab_psnorm_method methods[] = {AB_PSNORM_GHOST, AB_PSNORM_MATERIALIZE, AB_PSNORM_AUTO};
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        double err = 0.0;
        for (int mi = 0; mi < 3; mi++) {
            float w[M1_NS] = {0}, bb[M1_NS] = {0};
            assert_int_equal(ab_psnorm_linear(w, bb, A, G, M1_NS, M1_T, M1_DI, M1_DO, methods[mi]),
                             AB_OK);
            err = fmax(err, max_rel(w, w_fd, M1_NS));
            err = fmax(err, max_rel(bb, b_fd, M1_NS));
            for (int i = 0; i < M1_NS; i++) { /* the network norm: sqrt of the sum */
                double net = sqrt((double)w[i] + bb[i]), want = sqrt(w_fd[i] + b_fd[i]);
                err = fmax(err, fabs(net - want) / want);
            }
        }
        char what[96];
        snprintf(what, sizeof what, "e2e linear model vs finite differences [%s]",
                 ab_isa_name(isas[ii]));
        TU_ASSERT_ERR(what, err, PS_BOUND);
    }
}

/* Model 2: two layers, h = tanh(W1 a + b1), y = W2 h + b2, same loss. The network's per-sample
 * squared norm is the sum over both layers, accumulated by two calls into one array. */
enum { M2_NS = 4, M2_T = 3, M2_DI = 5, M2_DH = 4, M2_DO = 3 };
enum { M2_NW1 = M2_DH * M2_DI, M2_NP = M2_DH * M2_DI + M2_DH + M2_DO * M2_DH + M2_DO };

static double m2_sample_loss(const double *P, const float *A, const double *Y, int i) {
    const double *W1 = P, *b1 = P + M2_NW1, *W2 = b1 + M2_DH, *b2 = W2 + M2_DO * M2_DH;
    double L = 0.0;
    for (int t = 0; t < M2_T; t++) {
        const float *a = A + ((size_t)i * M2_T + t) * M2_DI;
        const double *y = Y + ((size_t)i * M2_T + t) * M2_DO;
        double hid[M2_DH];
        for (int j = 0; j < M2_DH; j++) {
            double z = b1[j];
            for (int k = 0; k < M2_DI; k++) z += W1[j * M2_DI + k] * a[k];
            hid[j] = tanh(z);
        }
        for (int j = 0; j < M2_DO; j++) {
            double o = b2[j];
            for (int k = 0; k < M2_DH; k++) o += W2[j * M2_DH + k] * hid[k];
            L += 0.5 * (o - y[j]) * (o - y[j]);
        }
    }
    return L / (double)(M2_NS * M2_T);
}

static void test_end_to_end_two_layers(void **state) {
    (void)state;
    double P[M2_NP], Y[M2_NS * M2_T * M2_DO];
    float A1[M2_NS * M2_T * M2_DI], G1[M2_NS * M2_T * M2_DH];
    float A2[M2_NS * M2_T * M2_DH], G2[M2_NS * M2_T * M2_DO];
    ab_rng rng;
    ab_rng_seed(&rng, 777, 1);
    for (int q = 0; q < M2_NP; q++) P[q] = 0.7 * ab_rng_normal(&rng);
    fill_tokens(A1, M2_NS * M2_T, M2_DI, &rng);
    for (int q = 0; q < M2_NS * M2_T * M2_DO; q++) Y[q] = ab_rng_normal(&rng);
    const double *W1 = P, *b1 = P + M2_NW1, *W2 = b1 + M2_DH, *b2 = W2 + M2_DO * M2_DH;
    /* forward and backward through the model, per token, in double */
    for (int q = 0; q < M2_NS * M2_T; q++) {
        double hid[M2_DH], r[M2_DO];
        for (int j = 0; j < M2_DH; j++) {
            double z = b1[j];
            for (int k = 0; k < M2_DI; k++) z += W1[j * M2_DI + k] * A1[q * M2_DI + k];
            hid[j] = tanh(z);
            A2[q * M2_DH + j] = (float)hid[j];
        }
        for (int j = 0; j < M2_DO; j++) {
            double o = b2[j];
            for (int k = 0; k < M2_DH; k++) o += W2[j * M2_DH + k] * hid[k];
            r[j] = (o - Y[q * M2_DO + j]) / (double)(M2_NS * M2_T);
            G2[q * M2_DO + j] = (float)r[j];
        }
        for (int k = 0; k < M2_DH; k++) {
            double dh = 0.0;
            for (int j = 0; j < M2_DO; j++) dh += W2[j * M2_DH + k] * r[j];
            G1[q * M2_DH + k] = (float)(dh * (1.0 - hid[k] * hid[k]));
        }
    }
    /* per-sample full gradient by central differences; h small, the error is O(h^2) */
    double net_fd[M2_NS];
    const double h = 1e-5;
    for (int i = 0; i < M2_NS; i++) {
        double s = 0.0;
        for (int q = 0; q < M2_NP; q++) {
            double keep = P[q];
            P[q] = keep + h;
            double lp = m2_sample_loss(P, A1, Y, i);
            P[q] = keep - h;
            double lm = m2_sample_loss(P, A1, Y, i);
            P[q] = keep;
            double d = (lp - lm) / (2.0 * h);
            s += d * d;
        }
        net_fd[i] = s;
    }
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        TU_SET_ISA(isas[ii]);
        /* both layers ADD into the same two arrays (weights, biases); the network's squared
         * norm is their sum */
        float wsq[M2_NS] = {0}, bsq[M2_NS] = {0};
        assert_int_equal(ab_psnorm_linear(wsq, bsq, A1, G1, M2_NS, M2_T, M2_DI, M2_DH, AB_PSNORM_AUTO),
                         AB_OK);
        assert_int_equal(ab_psnorm_linear(wsq, bsq, A2, G2, M2_NS, M2_T, M2_DH, M2_DO, AB_PSNORM_AUTO),
                         AB_OK);
        double err = 0.0;
        for (int i = 0; i < M2_NS; i++)
            err = fmax(err, fabs(((double)wsq[i] + bsq[i]) - net_fd[i]) / net_fd[i]);
        char what[96];
        snprintf(what, sizeof what, "e2e 2-layer net vs finite differences [%s]",
                 ab_isa_name(isas[ii]));
        /* FD truncation O(h^2) and cancellation O(eps_d / h) are both < 1e-8 here */
        TU_ASSERT_ERR(what, err, PS_BOUND);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose_rule),
        cmocka_unit_test(test_linear_vs_materialised),
        cmocka_unit_test(test_linear_accumulates_and_skips),
        cmocka_unit_test(test_linear_errors),
        cmocka_unit_test(test_embedding_vs_materialised),
        cmocka_unit_test(test_embedding_equals_onehot_linear),
        cmocka_unit_test(test_embedding_errors),
        cmocka_unit_test(test_end_to_end_linear_model),
        cmocka_unit_test(test_end_to_end_two_layers),
    };
    return cmocka_run_group_tests_name("psnorm", tests, NULL, NULL);
}
