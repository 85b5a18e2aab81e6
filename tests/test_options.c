/* tests/test_options.c - the compile-time options of the single header: ANTIBODY_STATIC and the
 * AB_MALLOC / AB_FREE allocator override, plus the version macros.
 *
 * This translation unit holds its own implementation (the Makefile does not link tests/impl.o).
 * The allocator counts every AB_MALLOC and AB_FREE and keeps the set of live blocks, so a test can
 * check that the library's allocations go through the override, that every one is freed, and that
 * AB_FREE only ever receives pointers AB_MALLOC returned (ab_aligned_free must hand back the raw
 * block, not the aligned pointer). It can also make the next allocation fail, to check the
 * out-of-memory paths leak nothing.
 */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <pthread.h>
#include <stdlib.h>

/* ---- the counting allocator (defined before the implementation uses it) -------------------- */
#define LIVE_MAX 8192
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* the library's threads may allocate */
static void *g_live[LIVE_MAX];
static int g_n_live, g_live_overflow;
static long g_mallocs, g_frees, g_bad_frees, g_refused;
static long g_fail_countdown = -1; /* -1: never fail; 0: the next allocation fails */
static long g_bad_frees_before; /* g_bad_frees when the current test started */

static void *count_malloc(size_t n) {
    void *p = NULL;
    pthread_mutex_lock(&g_lock);
    if (g_fail_countdown == 0) {
        g_fail_countdown = -1;
        g_refused++;
    } else {
        if (g_fail_countdown > 0) g_fail_countdown--;
        p = malloc(n);
        if (p) {
            g_mallocs++;
            if (g_n_live < LIVE_MAX)
                g_live[g_n_live++] = p;
            else
                g_live_overflow = 1;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return p;
}

static void count_free(void *p) {
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    int found = 0;
    for (int i = g_n_live - 1; i >= 0; i--) {
        if (g_live[i] == p) {
            g_live[i] = g_live[--g_n_live];
            found = 1;
            break;
        }
    }
    if (found || g_live_overflow) {
        g_frees++;
        pthread_mutex_unlock(&g_lock);
        free(p);
        return;
    }
    g_bad_frees++; /* not a block of ours: do not pass it to free() */
    pthread_mutex_unlock(&g_lock);
}

#define ANTIBODY_STATIC
#define AB_MALLOC(sz) count_malloc(sz)
#define AB_FREE(p) count_free(p)
#define ANTIBODY_IMPLEMENTATION
/* No pragmas: under ANTIBODY_STATIC the header must build warning-free with -Wall -Wextra -Werror
 * even though this file calls only some of the public functions. */
#include "testutil.h"

/* ---- version macros: integers usable in #if, and a string literal --------------------------- */
#if !defined(AB_VERSION_MAJOR) || !defined(AB_VERSION_MINOR) || !defined(AB_VERSION_PATCH) ||     \
    !defined(AB_VERSION_STRING)
#error "antibody.h must define AB_VERSION_MAJOR, _MINOR, _PATCH and AB_VERSION_STRING"
#endif
#if AB_VERSION_MAJOR < 0 || AB_VERSION_MINOR < 0 || AB_VERSION_PATCH < 0
#error "negative version number"
#endif

#define XSTR_(x) #x
#define XSTR(x) XSTR_(x)

typedef struct alloc_snapshot {
    long mallocs, frees;
} alloc_snapshot;

static alloc_snapshot snap(void) {
    alloc_snapshot s;
    pthread_mutex_lock(&g_lock);
    s.mallocs = g_mallocs;
    s.frees = g_frees;
    pthread_mutex_unlock(&g_lock);
    return s;
}

/* Every block allocated since `before` has been freed, and nothing foreign was freed. */
static void assert_balanced(alloc_snapshot before, const char *what) {
    alloc_snapshot now = snap();
    long made = now.mallocs - before.mallocs, freed = now.frees - before.frees;
    if (made != freed) fail_msg("%s: %ld AB_MALLOC, %ld AB_FREE", what, made, freed);
    if (g_bad_frees != g_bad_frees_before)
        fail_msg("%s: AB_FREE got %ld pointer(s) AB_MALLOC never returned", what,
                 g_bad_frees - g_bad_frees_before);
    assert_int_equal(g_live_overflow, 0);
}

static int setup(void **state) {
    (void)state;
    g_fail_countdown = -1;
    g_bad_frees_before = g_bad_frees;
    return 0;
}
static int teardown(void **state) {
    (void)state;
    g_fail_countdown = -1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */

static void test_version_macros(void **state) {
    (void)state;
    char buf[64];
    snprintf(buf, sizeof buf, "%d.%d.%d", AB_VERSION_MAJOR, AB_VERSION_MINOR, AB_VERSION_PATCH);
    assert_string_equal(AB_VERSION_STRING, buf);
    static const char literal[] = "v" AB_VERSION_STRING; /* a string literal, concatenable */
    assert_string_equal(literal + 1, buf);
}

/* ABDEF is `static` here, and the static copies work: status strings, dispatch, GEMM, RNG,
 * reductions, softmax. */
static void test_static_functions_work(void **state) {
    (void)state;
    assert_true(strncmp(XSTR(ABDEF), "static", 6) == 0); /* "static", plus unused attribute on GCC */
    assert_non_null(ab_status_str(AB_ERR_SHAPE));
    assert_int_equal(ab_init(), AB_OK);
    assert_true(ab_cpu_supports(ab_get_isa()));
    assert_string_equal(ab_isa_name(AB_ISA_SCALAR), "scalar");

    const float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1};
    float C[4] = {NAN, NAN, NAN, NAN};
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2), AB_OK);
    assert_true(C[0] == 4.0f && C[1] == 5.0f && C[2] == 10.0f && C[3] == 11.0f);
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, NULL, 3, B, 2, 0.0f, C, 2),
                     AB_ERR_NULL);
    assert_non_null(strstr(ab_last_error(), "ab_sgemm"));

    ab_rng rng;
    ab_rng_seed(&rng, 42u, 54u);
    assert_int_equal(ab_rng_u32(&rng), 0xa15c02b7u); /* pcg32-demo's first output */

    const float v[2] = {3.0f, 4.0f};
    float norm = 0.0f;
    assert_int_equal(ab_l2_norm(v, 2, &norm), AB_OK);
    assert_true(norm == 5.0f);

    const float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float y[4];
    assert_int_equal(ab_softmax(y, x, 1, 4, 0), AB_OK);
    for (int i = 0; i < 4; i++) assert_true(fabsf(y[i] - 0.25f) <= 1e-7f);
}

static void test_aligned_alloc_uses_override(void **state) {
    (void)state;
    alloc_snapshot s0 = snap();
    void *p = ab_aligned_alloc(1000);
    assert_non_null(p);
    assert_true((uintptr_t)p % AB_ALIGN == 0);
    alloc_snapshot s1 = snap();
    assert_int_equal(s1.mallocs - s0.mallocs, 1); /* carved out of one AB_MALLOC */
    memset(p, 0x5a, 1000);
    ab_aligned_free(p);
    alloc_snapshot s2 = snap();
    assert_int_equal(s2.frees - s1.frees, 1); /* and that very block handed to AB_FREE */
    ab_aligned_free(NULL);
    assert_int_equal(snap().frees, s2.frees);
    assert_balanced(s0, "ab_aligned_alloc/free");

    /* a refused AB_MALLOC gives NULL, not a crash */
    g_fail_countdown = 0;
    long refused = g_refused;
    assert_null(ab_aligned_alloc(64));
    assert_int_equal(g_refused, refused + 1);
    assert_balanced(s0, "ab_aligned_alloc refused");
}

/* Per-sample squared norms of the weight gradient, sum_t g_t a_t^T, directly in double. */
static void psnorm_reference(double *want, const float *A, const float *G, int n_samples, int T,
                             int d_in, int d_out) {
    for (int s = 0; s < n_samples; s++) {
        double sq = 0.0;
        for (int o = 0; o < d_out; o++)
            for (int i = 0; i < d_in; i++) {
                double g = 0.0;
                for (int t = 0; t < T; t++)
                    g += (double)G[((size_t)s * T + t) * d_out + o] * A[((size_t)s * T + t) * d_in + i];
                sq += g * g;
            }
        want[s] = sq;
    }
}

/* ab_psnorm_linear with T > 1 and the materialising method allocates a workspace: through
 * AB_MALLOC, freed before it returns; a refused allocation gives AB_ERR_ALLOC, leaves the outputs
 * alone and leaks nothing. The ghost method needs no workspace: it allocates nothing, so a refusal
 * cannot reach it. (AUTO materialises here: 2 T^2 = 50 >= DIN DOUT = 42.) */
static void test_psnorm_workspace_uses_override(void **state) {
    (void)state;
    enum { NS = 3, T = 5, DIN = 7, DOUT = 6 };
    float A[NS * T * DIN], G[NS * T * DOUT];
    ab_rng rng;
    ab_rng_seed(&rng, 5, 5);
    tu_fill_uniform(A, NS * T * DIN, -1.0f, 1.0f, &rng);
    tu_fill_uniform(G, NS * T * DOUT, -1.0f, 1.0f, &rng);
    double want[NS];
    psnorm_reference(want, A, G, NS, T, DIN, DOUT);
    const ab_psnorm_method methods[] = {AB_PSNORM_GHOST, AB_PSNORM_MATERIALIZE, AB_PSNORM_AUTO};
    for (int mth = 0; mth < 3; mth++) {
        float w[NS] = {0};
        alloc_snapshot s0 = snap();
        assert_int_equal(ab_psnorm_linear(w, NULL, A, G, NS, T, DIN, DOUT, methods[mth]), AB_OK);
        alloc_snapshot s1 = snap();
        int ghost = methods[mth] == AB_PSNORM_GHOST;
        if (ghost)
            assert_true(s1.mallocs == s0.mallocs);
        else
            assert_true(s1.mallocs - s0.mallocs >= 1);
        assert_balanced(s0, "ab_psnorm_linear");
        double worst = 0.0;
        for (int s = 0; s < NS; s++) {
            double e = fabs(w[s] - want[s]) / want[s];
            tu_worst(&worst, e);
        }
        /* loose: this checks that the static copy computes, not the kernel's accuracy */
        TU_ASSERT_ERR("psnorm_linear (static build) vs double, relative", worst, 1e-5);

        float w2[NS] = {1.0f, 2.0f, 3.0f};
        g_fail_countdown = 0;
        assert_int_equal(ab_psnorm_linear(w2, NULL, A, G, NS, T, DIN, DOUT, methods[mth]),
                         ghost ? AB_OK : AB_ERR_ALLOC);
        if (ghost) {
            assert_int_equal(g_fail_countdown, 0); /* never asked */
            g_fail_countdown = -1;
            for (int s = 0; s < NS; s++) assert_true(w2[s] == (float)(s + 1) + w[s]);
        } else {
            assert_int_equal(g_fail_countdown, -1); /* the refusal was used */
            assert_true(w2[0] == 1.0f && w2[1] == 2.0f && w2[2] == 3.0f);
        }
        assert_balanced(s0, "ab_psnorm_linear refused");
    }
}

/* GEMM packing buffers (SIMD paths) go through the override and are freed, on every ISA, with
 * threads; if the allocation is refused a SIMD path reports AB_ERR_ALLOC and leaves C as it was
 * (never a silent switch to the scalar path), the scalar path needs no workspace; nothing leaks. */
static void test_gemm_buffers_use_override(void **state) {
    (void)state;
    const int m = TU_SIZE(150, 40), n = TU_SIZE(170, 50), k = TU_SIZE(400, 60);
    float *A = tu_alloc((size_t)m * k), *B = tu_alloc((size_t)k * n), *C = tu_alloc((size_t)m * n);
    double *want = (double *)calloc((size_t)m * n, sizeof(double));
    double *mag = (double *)calloc((size_t)m * n, sizeof(double));
    assert_true(want && mag);
    ab_rng rng;
    ab_rng_seed(&rng, 8, 8);
    tu_fill_uniform(A, (size_t)m * k, -1.0f, 1.0f, &rng);
    tu_fill_uniform(B, (size_t)k * n, -1.0f, 1.0f, &rng);
    for (int i = 0; i < m; i++)
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++) {
                want[(size_t)i * n + j] += (double)A[(size_t)i * k + p] * B[(size_t)p * n + j];
                mag[(size_t)i * n + j] += fabs((double)A[(size_t)i * k + p] * B[(size_t)p * n + j]);
            }
    ab_isa isas[AB_ISA_COUNT];
    int n_isas = tu_isas(isas);
    ab_isa initial = ab_get_isa();
    int threads = ab_get_threads();
    assert_int_equal(ab_set_threads(2), AB_OK);
    for (int t = 0; t < n_isas; t++) {
        TU_SET_ISA(isas[t]);
        for (int refuse = 0; refuse < 2; refuse++) {
            alloc_snapshot s0 = snap();
            for (size_t e = 0; e < (size_t)m * n; e++) C[e] = -7.0f; /* a refused call leaves C */
            g_fail_countdown = refuse ? 0 : -1;
            ab_status st = ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, m, n, k, 1.0f, A, k, B, n, 0.0f, C, n);
            long unused_refusal = g_fail_countdown == 0;
            g_fail_countdown = -1;
            assert_balanced(s0, "ab_sgemm");
            if (refuse && isas[t] != AB_ISA_SCALAR) {
                /* the SIMD paths pack into a workspace: refused, the call reports it and does
                 * nothing (no silent switch to another path) */
                if (st != AB_ERR_ALLOC) fail_msg("ab_sgemm %s with AB_MALLOC refused: %s, expected AB_ERR_ALLOC",
                                                 ab_isa_name(isas[t]), ab_status_str(st));
                for (size_t e = 0; e < (size_t)m * n; e++) assert_true(C[e] == -7.0f);
                continue;
            }
            assert_int_equal(st, AB_OK);
            if (refuse) assert_true(unused_refusal); /* the scalar path needs no workspace */
            double worst = 0.0;
            for (size_t e = 0; e < (size_t)m * n; e++) {
                double r = fabs(C[e] - want[e]) / ((k + 2) * FLT_EPSILON * mag[e] + 1e-30);
                tu_worst(&worst, r);
            }
            char what[96];
            snprintf(what, sizeof what, "sgemm %s%s vs double, units of (k+2)eps|A||B|",
                     ab_isa_name(isas[t]), refuse ? " (AB_MALLOC refused)" : "");
            TU_ASSERT_ERR(what, worst, 1.0);
        }
    }
    assert_int_equal(ab_set_threads(threads), AB_OK);
    assert_int_equal(ab_set_isa(initial), AB_OK);
    free(A);
    free(B);
    free(C);
    free(want);
    free(mag);
}

/* A small model's whole life (create, forward, backward, AdamW, free) balances; every refused
 * allocation during ab_model_create gives AB_ERR_ALLOC with nothing leaked. */
static void test_model_allocations_balance(void **state) {
    (void)state;
    ab_model_config cfg = ab_model_config_default();
    cfg.n_vocab = 16;
    cfg.n_ctx = 8;
    cfg.n_layer = 1;
    cfg.n_head = 2;
    cfg.d_model = 8;
    cfg.lora_rank = 2;
    cfg.lora_alpha = 4.0f;
    enum { BATCH = 2, T = 4 };
    int inputs[BATCH * T], targets[BATCH * T];
    float mask[BATCH * T];
    for (int i = 0; i < BATCH * T; i++) {
        inputs[i] = (3 * i + 1) % 16;
        targets[i] = (5 * i + 2) % 16;
        mask[i] = 1.0f;
    }
    ab_batch batch;
    memset(&batch, 0, sizeof batch);
    batch.B = BATCH;
    batch.T = T;
    batch.inputs = inputs;
    batch.targets = targets;
    batch.mask = mask;

    alloc_snapshot s0 = snap();
    ab_model *model = NULL;
    assert_int_equal(ab_model_create(&model, &cfg, 1), AB_OK);
    long create_allocs = snap().mallocs - s0.mallocs;
    assert_true(create_allocs >= 1);
    float loss = 0.0f;
    assert_int_equal(ab_model_zero_grad(model), AB_OK);
    assert_int_equal(ab_model_forward(model, &batch, NULL, &loss, NULL, NULL), AB_OK);
    assert_true(isfinite(loss) && loss > 0.0f);
    assert_int_equal(ab_model_backward(model, NULL), AB_OK);
    ab_adamw_cfg opt = ab_adamw_default();
    assert_int_equal(ab_model_adamw_step(model, &opt), AB_OK);
    assert_true(snap().mallocs - s0.mallocs > create_allocs); /* training buffers came from AB_MALLOC */
    ab_model_free(model);
    assert_balanced(s0, "model lifetime");

    for (long fail_at = 0; fail_at < create_allocs; fail_at++) {
        alloc_snapshot s1 = snap();
        model = (ab_model *)&batch; /* must be reset to NULL on failure */
        g_fail_countdown = fail_at;
        assert_int_equal(ab_model_create(&model, &cfg, 1), AB_ERR_ALLOC);
        g_fail_countdown = -1;
        assert_null(model);
        assert_balanced(s1, "ab_model_create refused");
    }
}

/* ab_model_generate_batch with each of its allocations refused in turn (its buffers, the GEMMs'
 * packing workspace): AB_ERR_ALLOC, nothing leaked, out_lengths 0 for every prompt whose on_done
 * was not called, and the next call, with nothing refused, gives the tokens of a clean run. */
typedef struct gen_done {
    int done[3];
} gen_done;
static void gen_on_done(void *user, int index, const int *tokens, int n_tokens) {
    (void)tokens, (void)n_tokens;
    ((gen_done *)user)->done[index] = 1;
}

static void test_generate_batch_refused(void **state) {
    (void)state;
    ab_model_config cfg = ab_model_config_default();
    cfg.n_vocab = 16, cfg.n_ctx = 8, cfg.n_layer = 1, cfg.n_head = 2, cfg.d_model = 8;
    cfg.lora_rank = 0, cfg.lora_alpha = 0.0f;
    ab_model *model = NULL;
    assert_int_equal(ab_model_create(&model, &cfg, 3), AB_OK);
    const int p0[3] = {1, 2, 3}, p1[1] = {4}, p2[5] = {5, 6, 7, 8, 9};
    const int *prompts[3] = {p0, p1, p2}, lens[3] = {3, 1, 5};
    int want[3 * 4], want_n[3], out[3 * 4], out_n[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(ab_model_generate(model, prompts[i], lens[i], 4, 0.0f, -1, NULL, want + 4 * i,
                                           &want_n[i]), AB_OK);
    ab_generate_opts o;
    memset(&o, 0, sizeof o);
    o.max_batch = 2, o.on_done = gen_on_done;
    int refused = 0;
    for (long fail_at = 0;; fail_at++) {
        alloc_snapshot s0 = snap();
        ab_model *fresh = NULL; /* a new model each time, so its buffers are allocated again */
        assert_int_equal(ab_model_create(&fresh, &cfg, 3), AB_OK);
        gen_done rec = {{0, 0, 0}};
        o.user = &rec;
        g_fail_countdown = fail_at;
        ab_status st = ab_model_generate_batch(fresh, prompts, lens, 3, 4, -1, &o, out, out_n);
        int hit = g_fail_countdown == -1;
        g_fail_countdown = -1;
        if (st == AB_OK && !hit) { /* every allocation of the call got through */
            for (int i = 0; i < 3; i++) {
                assert_int_equal(out_n[i], want_n[i]);
                assert_memory_equal(out + 4 * i, want + 4 * i, sizeof(int) * (size_t)want_n[i]);
            }
            ab_model_free(fresh);
            assert_balanced(s0, "generate_batch");
            break;
        }
        assert_int_equal(st, AB_ERR_ALLOC);
        refused++;
        for (int i = 0; i < 3; i++)
            if (!rec.done[i]) assert_int_equal(out_n[i], 0);
        ab_model_free(fresh);
        assert_balanced(s0, "generate_batch refused");
    }
    assert_true(refused > 3);
    ab_model_free(model);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_version_macros, setup, teardown),
        cmocka_unit_test_setup_teardown(test_static_functions_work, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aligned_alloc_uses_override, setup, teardown),
        cmocka_unit_test_setup_teardown(test_psnorm_workspace_uses_override, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemm_buffers_use_override, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_allocations_balance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generate_batch_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
