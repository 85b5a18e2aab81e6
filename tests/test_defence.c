/* tests/test_defence.c - the defences: the core's array primitives and antibody_defence.h (ALGORITHMS.md):
 *   - model-free primitives against hand-computed values: Antibody's weights and lambda average,
 *     the cosine, Antidote's masks (scores, ties, rounding, top-not-bottom), random masks, mask
 *     application, Lisa's proximal term; every error path;
 *   - Antidote on a tiny model: the pruned parameter buffer equals the original with exactly the
 *     entries of ab_antidote_mask (or the seeded random masks) zeroed, for q/k/v, every linear
 *     layer and the LoRA matrices;
 *   - the training steps against manual steps built from the model API, bit for bit: Antibody's
 *     weighted fine-tuning, SFT, Lisa (schedule, anchors, proximal penalty), the alignment methods
 *     (SFT, Booster, Antibody with its SAM-style attack, the degenerate Booster/Antibody/Vaccine
 *     settings that must equal SFT), the harmful sharpness, and the step logs;
 *   - the trainer's fixed trainable view (a changed train mode is AB_ERR_STATE), growing batches.
 * The batches come from the lab's fixture (labfixture.h); the lab's own packing and evaluation
 * loops are tested in test_lab.c.
 * Every model here is tiny (d_model 16, 1-2 layers, 2 heads), so the file runs in about a second
 * natively and well under a minute in valgrind (one thread there: AB_TEST_SMALL). */
#include "testutil.h"
#include "labfixture.h"

/* ------------------------------------------------------------------------------------------------ */
/* helpers                                                                                          */
/* LoRA B is 0 at creation: give it values (so the adapters matter and can be pruned). */
static void fill_lora_b(ab_model *m, ab_rng *rng, float std) {
    ab_model_config c;
    assert_int_equal(ab_model_get_config(m, &c), AB_OK);
    const ab_tensor_kind kinds[3] = {AB_T_LORA_Q_B, AB_T_LORA_K_B, AB_T_LORA_V_B};
    for (int l = 0; l < c.n_layer; l++)
        for (int k = 0; k < 3; k++) {
            ab_tensor_info t;
            assert_int_equal(ab_model_tensor_of(m, kinds[k], l, &t), AB_OK);
            for (size_t j = 0; j < t.size; j++) t.data[j] = std * ab_rng_normal(rng);
        }
}

/* Moves every parameter away from the GPT-2 init (LayerNorm weights near 1, vectors small). */
static void randomize(ab_model *m, ab_rng *rng, float std) {
    int n = ab_model_n_tensors(m);
    for (int i = 0; i < n; i++) {
        ab_tensor_info t;
        assert_int_equal(ab_model_tensor(m, i, &t), AB_OK);
        int is_ln_w = t.kind == AB_T_LN1_W || t.kind == AB_T_LN2_W || t.kind == AB_T_LNF_W;
        for (size_t j = 0; j < t.size; j++) {
            float z = ab_rng_normal(rng);
            t.data[j] = is_ln_w ? 1.0f + 0.2f * z : t.rows == 1 ? 0.1f * z : std * z;
        }
    }
}

static float *params_copy(ab_model *m, size_t *count) {
    float *p;
    assert_int_equal(ab_model_params(m, &p, count), AB_OK);
    float *c = tu_alloc(*count);
    memcpy(c, p, *count * sizeof(float));
    return c;
}

/* Bitwise equality of two float arrays, with the first difference in the message. */
static void assert_floats_identical(const float *a, const float *b, size_t n, const char *what) {
    if (memcmp(a, b, n * sizeof(float)) == 0) return;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            fail_msg("%s: element %zu differs: %.9g vs %.9g", what, i, (double)a[i], (double)b[i]);
}
static void assert_trainable_identical(ab_model *a, ab_model *b, const char *what) {
    ab_model_view va, vb;
    assert_int_equal(ab_model_trainable(a, &va), AB_OK);
    assert_int_equal(ab_model_trainable(b, &vb), AB_OK);
    assert_int_equal(va.count, vb.count);
    assert_floats_identical(va.params, vb.params, va.count, what);
}
static int trainable_differ(ab_model *a, ab_model *b) {
    ab_model_view va, vb;
    assert_int_equal(ab_model_trainable(a, &va), AB_OK);
    assert_int_equal(ab_model_trainable(b, &vb), AB_OK);
    assert_int_equal(va.count, vb.count);
    return memcmp(va.params, vb.params, va.count * sizeof(float)) != 0;
}

/* A hand-made batch of random tokens: sample i's first 1 + i % 3 positions are "prompt" (mask 0). */
typedef struct tbatch {
    int *in, *tg, *len;
    float *mask;
    ab_batch b;
} tbatch;
static void mk_batch(tbatch *tb, int B, int T, int V, ab_rng *rng) {
    tb->in = (int *)calloc((size_t)B * T, sizeof(int));
    tb->tg = (int *)calloc((size_t)B * T, sizeof(int));
    tb->len = (int *)calloc((size_t)B, sizeof(int));
    tb->mask = tu_alloc((size_t)B * T);
    assert_non_null(tb->in);
    assert_non_null(tb->tg);
    assert_non_null(tb->len);
    for (int i = 0; i < B; i++) {
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)i * T + t;
            tb->in[r] = (int)ab_rng_below(rng, (uint32_t)V);
            tb->tg[r] = (int)ab_rng_below(rng, (uint32_t)V);
            tb->mask[r] = t >= 1 + i % 3 ? 1.0f : 0.0f;
        }
        tb->len[i] = T - i % 2;
    }
    tb->b.B = B, tb->b.T = T;
    tb->b.inputs = tb->in, tb->b.targets = tb->tg, tb->b.mask = tb->mask;
    tb->b.weights = NULL;
    tb->b.lengths = tb->len;
    tb->b.loss_norm = AB_LOSS_TOKEN_MEAN;
}
static void free_batch(tbatch *tb) {
    free(tb->in);
    free(tb->tg);
    free(tb->len);
    free(tb->mask);
}

/* The lab batches used by the step tests. */
typedef struct fixture_batches {
    lab_batch_buf ub, urv, ab, hb, hrv;
    ab_batch user, user_rv;   /* user fine-tuning batch and its refusal view */
    ab_batch align;           /* harmful prompt -> refusal, plus benign samples */
    ab_batch harmful, harm_rv; /* harmful prompt -> harmful answer, and its refusal view */
} fixture_batches;
static const int USER_IDX[4] = {0, 1, 4, 6};
static const unsigned char USER_HARM[4] = {1, 0, 1, 0};
static void lab_batches_make(fixture_batches *lb, const fixture *L) {
    memset(lb, 0, sizeof *lb);
    const int ref4[4] = {0, 1, 2, 3}, align_idx[4] = {2, 9, 1, 6}, harm_idx[3] = {0, 4, 8};
    const int ref3[3] = {4, 5, 6};
    pack(&lb->ub, &lb->user, L, USER_IDX, 4, NULL);
    pack(&lb->urv, &lb->user_rv, L, USER_IDX, 4, ref4);
    pack(&lb->ab, &lb->align, L, align_idx, 4, NULL);
    pack(&lb->hb, &lb->harmful, L, harm_idx, 3, NULL);
    pack(&lb->hrv, &lb->harm_rv, L, harm_idx, 3, ref3);
}
static void lab_batches_free(fixture_batches *lb) {
    lab_batch_buf_free(&lb->ub);
    lab_batch_buf_free(&lb->urv);
    lab_batch_buf_free(&lb->ab);
    lab_batch_buf_free(&lb->hb);
    lab_batch_buf_free(&lb->hrv);
}

/* zero_grad, forward (loss out), backward: the gradient of one batch in the model's buffer. */
static void grad_of(ab_model *m, const ab_batch *b, float *loss) {
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_forward(m, b, NULL, loss, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_backward(m, NULL), AB_OK);
}
/* clip the trainable gradient's global norm (if clip > 0), then AdamW. */
static void apply_update(ab_model *m, float clip, const ab_adamw_cfg *adamw, float *norm) {
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    float n = 0.0f;
    if (clip > 0.0f) assert_int_equal(ab_clip_grad_norm(v.grads, v.count, clip, &n), AB_OK);
    else assert_int_equal(ab_l2_norm(v.grads, v.count, &n), AB_OK);
    if (norm) *norm = n;
    assert_int_equal(ab_model_adamw_step(m, adamw), AB_OK);
}
/* One manual fine-tuning step with per-sample weights w (NULL: SFT, the batch's own loss_norm).
 * Weighted steps are Antibody's: sum_i w_i l_i over per-sample mean losses. */
static void manual_step(ab_model *m, const ab_batch *batch, const float *w, float clip,
                        const ab_adamw_cfg *adamw, float *loss, float *norm) {
    ab_batch b = *batch;
    b.weights = w;
    if (w) b.loss_norm = AB_LOSS_SAMPLE_MEAN;
    grad_of(m, &b, loss);
    apply_update(m, clip, adamw, norm);
}
/* Antibody's weights for a batch with the model's current parameters. */
static void manual_weights(ab_model *m, const ab_batch *batch, const ab_batch *rv, float tau, float *w) {
    float c[16], q[16];
    assert_true(batch->B <= 16);
    assert_int_equal(ab_model_score(m, batch, NULL, c, NULL), AB_OK);
    assert_int_equal(ab_model_score(m, rv, NULL, q, NULL), AB_OK);
    assert_int_equal(ab_antibody_weights(w, c, q, batch->B, tau), AB_OK);
}

/* ------------------------------------------------------------------------------------------------ */
/* 1. Antibody's per-sample weights                                                                 */
static void test_antibody_weights(void **state) {
    (void)state;
    const float c[4] = {1.0f, 2.0f, 0.5f, 3.0f}, q[4] = {3.0f, 2.5f, 0.5f, 1.0f};
    float w[4];
    /* tau = 1: z = q - c = {2, 0.5, 0, -2}; e^z = {7.3890561, 1.6487213, 1, 0.1353353}, sum
     * 10.1731127; w = e^z / sum (computed in double, rounded to 7 digits here). */
    const double want1[4] = {0.7263319, 0.1620666, 0.0982983, 0.0133032};
    assert_int_equal(ab_antibody_weights(w, c, q, 4, 1.0f), AB_OK);
    for (int i = 0; i < 4; i++)
        if (!(fabs(w[i] - want1[i]) <= 1e-6)) fail_msg("tau 1: w[%d] = %.8f, want %.7f", i, (double)w[i], want1[i]);
    double s = 0.0;
    for (int i = 0; i < 4; i++) s += w[i];
    TU_ASSERT_ERR("antibody weights sum to 1 (tau 1)", fabs(s - 1.0), 1e-6);
    /* tau = 2: z = {1, 0.25, 0, -1}; e^z = {2.7182818, 1.2840254, 1, 0.3678794}, sum 5.3701867 */
    const double want2[4] = {0.5061801, 0.2391026, 0.1862133, 0.0685040};
    assert_int_equal(ab_antibody_weights(w, c, q, 4, 2.0f), AB_OK);
    for (int i = 0; i < 4; i++)
        if (!(fabs(w[i] - want2[i]) <= 1e-6)) fail_msg("tau 2: w[%d] = %.8f, want %.7f", i, (double)w[i], want2[i]);
    s = 0.0;
    for (int i = 0; i < 4; i++) s += w[i];
    TU_ASSERT_ERR("antibody weights sum to 1 (tau 2)", fabs(s - 1.0), 1e-6);
    /* one sample: weight 1 */
    assert_int_equal(ab_antibody_weights(w, c, q, 1, 1.0f), AB_OK);
    assert_true(w[0] == 1.0f);
    /* shift invariance: adding 0.25 to every q (or to every c) is exact, z - max(z) is the same */
    float w0[4], ws[4], cs[4], qs[4];
    assert_int_equal(ab_antibody_weights(w0, c, q, 4, 1.0f), AB_OK);
    for (int i = 0; i < 4; i++) qs[i] = q[i] + 0.25f, cs[i] = c[i] + 0.25f;
    assert_int_equal(ab_antibody_weights(ws, c, qs, 4, 1.0f), AB_OK);
    assert_memory_equal(ws, w0, sizeof w0);
    assert_int_equal(ab_antibody_weights(ws, cs, qs, 4, 1.0f), AB_OK);
    assert_memory_equal(ws, w0, sizeof w0);
    /* and a large inexact shift: equal to rounding */
    for (int i = 0; i < 4; i++) qs[i] = q[i] + 1000.3f, cs[i] = c[i] + 1000.3f;
    assert_int_equal(ab_antibody_weights(ws, cs, qs, 4, 1.0f), AB_OK);
    TU_ASSERT_ERR("antibody weights, shift by 1000.3", tu_max_rel_err_f(ws, w0, 4, 1e-3), 1e-3);
    /* huge differences (1e4 nats): no overflow, no NaN, the winner takes all */
    const float ch[3] = {0.0f, 0.0f, 0.0f}, qh[3] = {1e4f, 0.0f, -1e4f};
    assert_int_equal(ab_antibody_weights(w, ch, qh, 3, 1.0f), AB_OK);
    assert_true(w[0] == 1.0f && w[1] == 0.0f && w[2] == 0.0f);
    const float ch2[3] = {-1e4f, 1e4f, 3e4f}, qh2[3] = {1e4f, -1e4f, 3e4f};
    assert_int_equal(ab_antibody_weights(w, ch2, qh2, 3, 1.0f), AB_OK); /* z = {2e4, -2e4, 0} */
    assert_true(w[0] == 1.0f && w[1] == 0.0f && w[2] == 0.0f);
    /* equal z at huge magnitude: split evenly */
    const float qe[2] = {1e4f, 1e4f}, ce[2] = {-1e4f, -1e4f};
    assert_int_equal(ab_antibody_weights(w, ce, qe, 2, 1e-3f), AB_OK);
    assert_true(w[0] == 0.5f && w[1] == 0.5f);
    /* errors */
    float bad[4] = {1.0f, NAN, 0.5f, 3.0f};
    assert_int_equal(ab_antibody_weights(w, bad, q, 4, 1.0f), AB_ERR_NAN);
    assert_int_equal(ab_antibody_weights(w, c, bad, 4, 1.0f), AB_ERR_NAN);
    bad[1] = INFINITY;
    assert_int_equal(ab_antibody_weights(w, c, bad, 4, 1.0f), AB_ERR_NAN);
    assert_int_equal(ab_antibody_weights(w, c, q, 4, 0.0f), AB_ERR_ARG);
    assert_int_equal(ab_antibody_weights(w, c, q, 4, -1.0f), AB_ERR_ARG);
    assert_int_equal(ab_antibody_weights(w, c, q, 4, NAN), AB_ERR_ARG);
    assert_int_equal(ab_antibody_weights(w, c, q, 4, INFINITY), AB_ERR_ARG);
    assert_int_equal(ab_antibody_weights(w, c, q, 0, 1.0f), AB_ERR_SHAPE);
    assert_int_equal(ab_antibody_weights(w, c, q, -1, 1.0f), AB_ERR_SHAPE);
    assert_int_equal(ab_antibody_weights(NULL, c, q, 4, 1.0f), AB_ERR_NULL);
    assert_int_equal(ab_antibody_weights(w, NULL, q, 4, 1.0f), AB_ERR_NULL);
    assert_int_equal(ab_antibody_weights(w, c, NULL, 4, 1.0f), AB_ERR_NULL);
    assert_true(strlen(ab_last_error()) > 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* 2. Antibody's lambda average                                                                     */
static void test_antibody_lambda(void **state) {
    (void)state;
    ab_lambda_ema st = {0.0f, 0};
    float raw = -1.0f;
    /* first update initialises: max(0, 5 - 0.5) = 4.5 */
    assert_int_equal(ab_antibody_lambda(&st, 0.5f, 5.0f, 1.0f, 0.99f, &raw), AB_OK);
    assert_true(st.initialised);
    assert_true(raw == 4.5f);
    assert_true(st.value == 4.5f);
    /* then the EMA: 0.99 * 4.5 + 0.01 * (5 - (-0.5)) = 4.455 + 0.055 = 4.51 */
    assert_int_equal(ab_antibody_lambda(&st, -0.5f, 5.0f, 1.0f, 0.99f, &raw), AB_OK);
    assert_true(raw == 5.5f);
    TU_ASSERT_ERR("lambda EMA step 2", fabs(st.value - 4.51), 1e-6);
    /* raw below 0 clamps: max(0, 0.5 - 0.9) = 0; EMA 0.99 * 4.51 + 0 = 4.4649 */
    assert_int_equal(ab_antibody_lambda(&st, 0.9f, 0.5f, 1.0f, 0.99f, &raw), AB_OK);
    assert_true(raw == 0.0f);
    TU_ASSERT_ERR("lambda EMA with clamped raw", fabs(st.value - 4.4649), 1e-6);
    /* a fresh average whose first raw is clamped starts at 0; NULL lambda_raw is fine */
    ab_lambda_ema st2 = {123.0f, 0};
    assert_int_equal(ab_antibody_lambda(&st2, 0.9f, -10.0f, 1.0f, 0.99f, NULL), AB_OK);
    assert_true(st2.initialised && st2.value == 0.0f);
    /* decay 0 follows raw, decay 1 freezes the value */
    assert_int_equal(ab_antibody_lambda(&st2, 0.0f, 2.0f, 1.0f, 0.0f, NULL), AB_OK);
    assert_true(st2.value == 2.0f);
    assert_int_equal(ab_antibody_lambda(&st2, 0.0f, 7.0f, 1.0f, 1.0f, NULL), AB_OK);
    assert_true(st2.value == 2.0f);
    /* errors leave the state alone */
    ab_lambda_ema before = st;
    assert_int_equal(ab_antibody_lambda(&st, NAN, 5.0f, 1.0f, 0.99f, &raw), AB_ERR_NAN);
    assert_int_equal(ab_antibody_lambda(&st, INFINITY, 5.0f, 1.0f, 0.99f, &raw), AB_ERR_NAN);
    assert_int_equal(ab_antibody_lambda(&st, 0.5f, NAN, 1.0f, 0.99f, &raw), AB_ERR_ARG);
    assert_int_equal(ab_antibody_lambda(&st, 0.5f, 5.0f, 1.0f, 1.5f, &raw), AB_ERR_ARG);
    assert_int_equal(ab_antibody_lambda(&st, 0.5f, 5.0f, 1.0f, -0.1f, &raw), AB_ERR_ARG);
    assert_int_equal(ab_antibody_lambda(NULL, 0.5f, 5.0f, 1.0f, 0.99f, &raw), AB_ERR_NULL);
    assert_int_equal(ab_antibody_lambda(&st, 0.5f, 5.0f, -1.0f, 0.99f, &raw), AB_ERR_ARG);
    assert_int_equal(ab_antibody_lambda(&st, 0.5f, 5.0f, NAN, 0.99f, &raw), AB_ERR_ARG);
    assert_memory_equal(&st, &before, sizeof st);
    /* the published shape, scaled: lambda_raw = s max(0, 5 - cos), so lambda stays near 5 s and
     * only moves with cos; s = 0 switches the term off */
    ab_lambda_ema st3 = {0.0f, 0};
    assert_int_equal(ab_antibody_lambda(&st3, 0.25f, 5.0f, 0.2f, 0.99f, &raw), AB_OK);
    TU_ASSERT_ERR("lambda_raw = 0.2 (5 - 0.25)", fabs(raw - 0.95), 1e-7);
    assert_true(st3.value == raw);
    assert_int_equal(ab_antibody_lambda(&st3, -1.0f, 5.0f, 0.2f, 0.99f, &raw), AB_OK);
    TU_ASSERT_ERR("lambda_raw = 0.2 (5 + 1)", fabs(raw - 1.2), 1e-7);
    TU_ASSERT_ERR("EMA of the scaled values", fabs(st3.value - (0.99 * 0.95 + 0.01 * 1.2)), 1e-6);
    assert_int_equal(ab_antibody_lambda(&st3, 0.5f, 5.0f, 0.0f, 0.0f, &raw), AB_OK);
    assert_true(raw == 0.0f && st3.value == 0.0f);
}

/* ------------------------------------------------------------------------------------------------ */
/* 3. cosine                                                                                        */
static void test_cosine(void **state) {
    (void)state;
    const float x[2] = {1.0f, 0.0f}, y[2] = {1.0f, 1.0f}, o[2] = {0.0f, 3.0f};
    float c = -5.0f;
    assert_int_equal(ab_cosine(x, y, 2, 0.0f, &c), AB_OK);
    TU_ASSERT_ERR("cos((1,0),(1,1)) = 1/sqrt 2", fabs(c - 0.70710678118654752), 1e-7);
    assert_int_equal(ab_cosine(x, o, 2, 0.0f, &c), AB_OK);
    assert_true(c == 0.0f);
    /* eps in the denominator: 1 / (sqrt 2 + 1) */
    assert_int_equal(ab_cosine(x, y, 2, 1.0f, &c), AB_OK);
    TU_ASSERT_ERR("cos with eps 1", fabs(c - 0.41421356237309505), 1e-7);
    /* opposite and parallel (scale-free) */
    const float xn[2] = {-2.0f, 0.0f};
    assert_int_equal(ab_cosine(x, xn, 2, 0.0f, &c), AB_OK);
    assert_true(c == -1.0f);
    /* a zero vector with eps > 0 gives 0 */
    const float z[2] = {0.0f, 0.0f};
    assert_int_equal(ab_cosine(x, z, 2, 1e-8f, &c), AB_OK);
    assert_true(c == 0.0f);
    /* a long random pair against a double reference */
    ab_rng rng;
    ab_rng_seed(&rng, 3, 0);
    const size_t n = 10000;
    float *a = tu_alloc(n), *b = tu_alloc(n);
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        a[i] = ab_rng_normal(&rng), b[i] = 0.5f * a[i] + ab_rng_normal(&rng);
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    }
    assert_int_equal(ab_cosine(a, b, n, 1e-8f, &c), AB_OK);
    TU_ASSERT_ERR("cosine of 10000 random pairs", fabs(c - ab / (sqrt(aa) * sqrt(bb) + 1e-8)), 1e-6);
    a[17] = NAN;
    assert_int_equal(ab_cosine(a, b, n, 1e-8f, &c), AB_ERR_NAN);
    free(a);
    free(b);
    assert_int_equal(ab_cosine(x, y, 2, -1.0f, &c), AB_ERR_ARG);
    assert_int_equal(ab_cosine(NULL, y, 2, 0.0f, &c), AB_ERR_NULL);
    assert_int_equal(ab_cosine(x, y, 2, 0.0f, NULL), AB_ERR_NULL);
}

/* ------------------------------------------------------------------------------------------------ */
/* 4. Antidote's masks, random masks, mask application                                              */
static int row_count(const unsigned char *p, int d_in) {
    int k = 0;
    for (int j = 0; j < d_in; j++) k += p[j] != 0;
    return k;
}

static void test_antidote_mask(void **state) {
    (void)state;
    /* W = [[1,-2,0.5,3,-1],[0.1,0.2,-0.3,4,0]], sqrt(in_sumsq) = {2,1,4,0.5,3}.
     * Row 0 scores |W| sqrt(s) = {2,2,2,1.5,3}; row 1 {0.2,0.2,1.2,2,0}. alpha 0.4: k = 2 per row.
     * Row 0: col 4 (3), then the tie at 2 goes to the lowest column, 0. Row 1: cols 3 (2), 2 (1.2). */
    const float W[10] = {1.0f, -2.0f, 0.5f, 3.0f, -1.0f, 0.1f, 0.2f, -0.3f, 4.0f, 0.0f};
    const double s[5] = {4.0, 1.0, 16.0, 0.25, 9.0};
    const unsigned char want[10] = {1, 0, 0, 0, 1, 0, 0, 1, 1, 0};
    unsigned char p[10];
    size_t np = 0;
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, s, 0.4f, &np), AB_OK);
    assert_memory_equal(p, want, sizeof want);
    assert_int_equal(np, 4);
    /* any positive scale of s gives the same mask */
    double s7[5];
    for (int j = 0; j < 5; j++) s7[j] = 7.0 * s[j];
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, s7, 0.4f, NULL), AB_OK);
    assert_memory_equal(p, want, sizeof want);
    /* it prunes the HIGHEST scores (Wanda prunes the lowest): W = {1..5}, s = 1 */
    const float up[5] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f}, down[5] = {-5.0f, 4.0f, -3.0f, 2.0f, -1.0f};
    const double ones[5] = {1, 1, 1, 1, 1};
    const unsigned char top_up[5] = {0, 0, 0, 1, 1}, top_down[5] = {1, 1, 0, 0, 0};
    assert_int_equal(ab_antidote_mask(p, up, 1, 5, ones, 0.4f, &np), AB_OK);
    assert_memory_equal(p, top_up, 5);
    assert_int_equal(ab_antidote_mask(p, down, 1, 5, ones, 0.4f, &np), AB_OK);
    assert_memory_equal(p, top_down, 5);
    /* the activation statistic decides: the largest weight with a silent input survives */
    const double silent[5] = {1, 1, 1, 1, 0};
    const unsigned char top_silent[5] = {0, 0, 1, 1, 0};
    assert_int_equal(ab_antidote_mask(p, up, 1, 5, silent, 0.4f, &np), AB_OK);
    assert_memory_equal(p, top_silent, 5);
    /* rounding: k = round(alpha d_in), half up */
    struct { float alpha; int d_in, k; } rc[] = {
        {0.3f, 5, 2},   /* 1.5 -> 2 */
        {0.1f, 5, 1},   /* 0.5 -> 1 */
        {0.5f, 5, 3},   /* 2.5 exactly -> 3 */
        {0.25f, 2, 1},  /* 0.5 exactly -> 1 */
        {0.2f, 2, 0},   /* 0.4 -> 0 */
        {0.0f, 5, 0},
        {1.0f, 5, 5},
        {0.05f, 16, 1}, /* 0.8 -> 1 */
        {0.1f, 16, 2},  /* 1.6 -> 2 */
    };
    float Wr[3 * 16];
    double sr[16];
    for (int j = 0; j < 3 * 16; j++) Wr[j] = (float)((j * 7) % 11) - 5.0f;
    for (int j = 0; j < 16; j++) sr[j] = 1.0 + j % 4;
    unsigned char pr[3 * 16];
    for (size_t i = 0; i < sizeof rc / sizeof rc[0]; i++) {
        assert_int_equal(ab_antidote_mask(pr, Wr, 3, rc[i].d_in, sr, rc[i].alpha, &np), AB_OK);
        if (np != (size_t)(3 * rc[i].k))
            fail_msg("alpha %g on %d columns: %zu pruned, want %d", (double)rc[i].alpha, rc[i].d_in, np, 3 * rc[i].k);
        for (int r = 0; r < 3; r++) assert_int_equal(row_count(pr + r * rc[i].d_in, rc[i].d_in), rc[i].k);
        unsigned char prr[3 * 16];
        ab_rng rng;
        ab_rng_seed(&rng, 9, 1);
        assert_int_equal(ab_random_mask(prr, 3, rc[i].d_in, rc[i].alpha, &rng, &np), AB_OK);
        assert_int_equal(np, (size_t)(3 * rc[i].k));
        for (int r = 0; r < 3; r++) assert_int_equal(row_count(prr + r * rc[i].d_in, rc[i].d_in), rc[i].k);
    }
    /* errors */
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, s, -0.1f, &np), AB_ERR_ARG);
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, s, 1.01f, &np), AB_ERR_ARG);
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, s, NAN, &np), AB_ERR_ARG);
    float Wn[10];
    memcpy(Wn, W, sizeof W);
    Wn[7] = NAN;
    assert_int_equal(ab_antidote_mask(p, Wn, 2, 5, s, 0.4f, &np), AB_ERR_NAN);
    Wn[7] = -INFINITY;
    assert_int_equal(ab_antidote_mask(p, Wn, 2, 5, s, 0.4f, &np), AB_ERR_NAN);
    double sn[5];
    memcpy(sn, s, sizeof s);
    sn[2] = -1.0;
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, sn, 0.4f, &np), AB_ERR_NAN);
    sn[2] = NAN;
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, sn, 0.4f, &np), AB_ERR_NAN);
    sn[2] = INFINITY;
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, sn, 0.4f, &np), AB_ERR_NAN);
    assert_int_equal(ab_antidote_mask(p, W, 0, 5, s, 0.4f, &np), AB_ERR_SHAPE);
    assert_int_equal(ab_antidote_mask(p, W, 2, 0, s, 0.4f, &np), AB_ERR_SHAPE);
    assert_int_equal(ab_antidote_mask(p, W, -2, 5, s, 0.4f, &np), AB_ERR_SHAPE);
    assert_int_equal(ab_antidote_mask(p, W, 2, -5, s, 0.4f, &np), AB_ERR_SHAPE);
    assert_int_equal(ab_antidote_mask(NULL, W, 2, 5, s, 0.4f, &np), AB_ERR_NULL);
    assert_int_equal(ab_antidote_mask(p, NULL, 2, 5, s, 0.4f, &np), AB_ERR_NULL);
    assert_int_equal(ab_antidote_mask(p, W, 2, 5, NULL, 0.4f, &np), AB_ERR_NULL);
}

static void test_random_mask(void **state) {
    (void)state;
    const int R = 64, D = 40; /* k = round(0.25 * 40) = 10 per row */
    unsigned char *a = (unsigned char *)malloc((size_t)R * D), *b = (unsigned char *)malloc((size_t)R * D);
    assert_non_null(a);
    assert_non_null(b);
    ab_rng r1, r2;
    size_t np = 0;
    ab_rng_seed(&r1, 42, 7);
    assert_int_equal(ab_random_mask(a, R, D, 0.25f, &r1, &np), AB_OK);
    assert_int_equal(np, (size_t)R * 10);
    for (int r = 0; r < R; r++) assert_int_equal(row_count(a + (size_t)r * D, D), 10);
    for (int i = 0; i < R * D; i++) assert_true(a[i] == 0 || a[i] == 1);
    /* same seed, same mask; the rng advanced */
    ab_rng_seed(&r2, 42, 7);
    assert_int_equal(ab_random_mask(b, R, D, 0.25f, &r2, NULL), AB_OK);
    assert_memory_equal(a, b, (size_t)R * D);
    assert_memory_equal(&r1, &r2, sizeof r1);
    ab_rng fresh;
    ab_rng_seed(&fresh, 42, 7);
    assert_memory_not_equal(&r1, &fresh, sizeof r1);
    /* a different seed gives a different mask */
    ab_rng_seed(&r2, 43, 7);
    assert_int_equal(ab_random_mask(b, R, D, 0.25f, &r2, NULL), AB_OK);
    assert_memory_not_equal(a, b, (size_t)R * D);
    /* the next call of the same rng gives a different mask too */
    assert_int_equal(ab_random_mask(b, R, D, 0.25f, &r1, NULL), AB_OK);
    assert_memory_not_equal(a, b, (size_t)R * D);
    /* every column is reachable, and roughly uniformly: 400 rows x 10 columns, k = 1 */
    const int R2 = 400, D2 = 10;
    unsigned char *c = (unsigned char *)malloc((size_t)R2 * D2);
    assert_non_null(c);
    ab_rng_seed(&r1, 5, 0);
    assert_int_equal(ab_random_mask(c, R2, D2, 0.1f, &r1, &np), AB_OK);
    assert_int_equal(np, (size_t)R2);
    int hits[10] = {0};
    for (int r = 0; r < R2; r++) {
        assert_int_equal(row_count(c + (size_t)r * D2, D2), 1);
        for (int j = 0; j < D2; j++) hits[j] += c[(size_t)r * D2 + j];
    }
    for (int j = 0; j < D2; j++)
        if (hits[j] < 15 || hits[j] > 70) fail_msg("column %d picked %d times of 400 (expected ~40)", j, hits[j]);
    /* alpha 1 marks everything, alpha 0 nothing */
    assert_int_equal(ab_random_mask(c, 3, 7, 1.0f, &r1, &np), AB_OK);
    assert_int_equal(np, 21);
    for (int i = 0; i < 21; i++) assert_int_equal(c[i], 1);
    assert_int_equal(ab_random_mask(c, 3, 7, 0.0f, &r1, &np), AB_OK);
    assert_int_equal(np, 0);
    for (int i = 0; i < 21; i++) assert_int_equal(c[i], 0);
    /* errors */
    assert_int_equal(ab_random_mask(c, 3, 7, 0.5f, NULL, &np), AB_ERR_NULL);
    assert_int_equal(ab_random_mask(NULL, 3, 7, 0.5f, &r1, &np), AB_ERR_NULL);
    assert_int_equal(ab_random_mask(c, 0, 7, 0.5f, &r1, &np), AB_ERR_SHAPE);
    assert_int_equal(ab_random_mask(c, 3, 0, 0.5f, &r1, &np), AB_ERR_SHAPE);
    assert_int_equal(ab_random_mask(c, 3, 7, 1.5f, &r1, &np), AB_ERR_ARG);
    assert_int_equal(ab_random_mask(c, 3, 7, NAN, &r1, &np), AB_ERR_ARG);
    free(a);
    free(b);
    free(c);
}

static void test_mask_apply(void **state) {
    (void)state;
    float W[12], orig[12];
    unsigned char p[12] = {1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1};
    for (int i = 0; i < 12; i++) W[i] = orig[i] = (float)(i + 1) * (i % 2 ? -0.5f : 0.75f);
    W[5] = orig[5] = -0.0f; /* an unmarked negative zero stays negative zero */
    assert_int_equal(ab_mask_apply(W, p, 12), AB_OK);
    for (int i = 0; i < 12; i++) {
        if (p[i]) assert_true(W[i] == 0.0f);
        else assert_memory_equal(&W[i], &orig[i], sizeof(float));
    }
    /* any non-zero byte marks the entry */
    float V[3] = {1.0f, 2.0f, 3.0f};
    const unsigned char q[3] = {0, 255, 2};
    assert_int_equal(ab_mask_apply(V, q, 3), AB_OK);
    assert_true(V[0] == 1.0f && V[1] == 0.0f && V[2] == 0.0f);
    /* n = 0 touches nothing (NULL allowed); otherwise NULL is an error */
    assert_int_equal(ab_mask_apply(NULL, NULL, 0), AB_OK);
    assert_int_equal(ab_mask_apply(NULL, p, 12), AB_ERR_NULL);
    assert_int_equal(ab_mask_apply(W, NULL, 12), AB_ERR_NULL);
}

/* ------------------------------------------------------------------------------------------------ */
/* 5. Antidote on a model                                                                           */
/* Applies to the copy `want` (of the whole parameter buffer p) the Antidote masks of the given
 * linear kinds of every layer, computed from the model's current weights and statistics. */
static size_t expected_prune(ab_model *m, const float *p, float *want, const ab_linear_kind *kinds,
                             int n_kinds, float alpha, ab_rng *rng) {
    ab_model_config c;
    assert_int_equal(ab_model_get_config(m, &c), AB_OK);
    size_t total = 0;
    for (int i = 0; i < c.n_layer * n_kinds; i++) {
        ab_linear_info li;
        assert_int_equal(ab_model_linear(m, kinds[i % n_kinds], i / n_kinds, &li), AB_OK);
        size_t n = (size_t)li.d_out * li.d_in, k = 0;
        unsigned char *mask = (unsigned char *)malloc(n);
        assert_non_null(mask);
        if (rng) {
            assert_int_equal(ab_random_mask(mask, li.d_out, li.d_in, alpha, rng, &k), AB_OK);
        } else {
            assert_non_null(li.in_sumsq);
            assert_true(li.n_seq > 0);
            assert_int_equal(ab_antidote_mask(mask, li.weight, li.d_out, li.d_in, li.in_sumsq, alpha, &k), AB_OK);
        }
        size_t off = (size_t)(li.weight - p);
        assert_int_equal(ab_mask_apply(want + off, mask, n), AB_OK);
        total += k;
        free(mask);
    }
    return total;
}
/* Number of entries that differ between two buffers. */
static size_t n_changed(const float *a, const float *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return k;
}

static void test_antidote_prune(void **state) {
    (void)state;
    const float alpha = 0.1f; /* d_model 16: k = round(1.6) = 2 per row */
    ab_rng rng;
    ab_rng_seed(&rng, 11, 0);
    tbatch tb;
    mk_batch(&tb, 3, 10, TINY_V, &rng);
    ab_model *m = tiny_model(0, 101);
    size_t count, np = 99;
    float *p;
    assert_int_equal(ab_model_params(m, &p, &count), AB_OK);
    float *orig = params_copy(m, &count);
    /* no statistics: refused, nothing changed */
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_QKV, NULL, &np), AB_ERR_STATE);
    assert_int_equal(np, 0);
    assert_int_equal(ab_model_act_stats_enable(m, 1), AB_OK);
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_QKV, NULL, &np), AB_ERR_STATE); /* no forward yet */
    assert_floats_identical(p, orig, count, "refused prune");
    assert_int_equal(ab_model_score(m, &tb.b, NULL, NULL, NULL), AB_OK);
    /* bad alpha: an error before any mask is applied */
    assert_int_equal(ab_antidote_prune(m, 1.5f, AB_PRUNE_QKV, NULL, &np), AB_ERR_ARG);
    assert_int_equal(ab_antidote_prune(m, alpha, (ab_prune_target)99, NULL, &np), AB_ERR_ARG);
    assert_int_equal(ab_antidote_prune(NULL, alpha, AB_PRUNE_QKV, NULL, &np), AB_ERR_NULL);
    assert_floats_identical(p, orig, count, "failed prune");
    /* q/k/v: exactly the entries of ab_antidote_mask, nothing else anywhere */
    float *want = params_copy(m, &count);
    const ab_linear_kind qkv[1] = {AB_LIN_QKV};
    size_t want_n = expected_prune(m, p, want, qkv, 1, alpha, NULL);
    assert_int_equal(want_n, (size_t)TINY_L * 3 * TINY_C * 2);
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_QKV, NULL, &np), AB_OK);
    assert_int_equal(np, want_n);
    assert_floats_identical(p, want, count, "Antidote q/k/v prune");
    assert_int_equal(n_changed(p, orig, count), want_n); /* every pruned weight was non-zero */

    /* the random control prunes the same count, as the seeded random masks say, without statistics */
    ab_model *mr = tiny_model(0, 101);
    float *pr;
    assert_int_equal(ab_model_params(mr, &pr, &count), AB_OK);
    float *want_r = params_copy(mr, &count);
    ab_rng ctl, ctl_copy;
    ab_rng_seed(&ctl, 77, 3);
    ctl_copy = ctl;
    size_t want_rn = expected_prune(mr, pr, want_r, qkv, 1, alpha, &ctl_copy);
    assert_int_equal(ab_antidote_prune(mr, alpha, AB_PRUNE_QKV, &ctl, &np), AB_OK);
    assert_int_equal(np, want_rn);
    assert_int_equal(np, want_n);
    assert_floats_identical(pr, want_r, count, "random-control prune");
    assert_int_equal(n_changed(pr, orig, count), want_n);
    assert_true(n_changed(pr, p, count) > 0); /* not the same entries as Antidote's */
    ab_model_free(mr);

    /* every base linear layer (AUTO on a model without LoRA is q/k/v) */
    ab_model *ml = tiny_model(0, 102);
    assert_int_equal(ab_model_act_stats_enable(ml, 1), AB_OK);
    assert_int_equal(ab_model_score(ml, &tb.b, NULL, NULL, NULL), AB_OK);
    float *pl;
    assert_int_equal(ab_model_params(ml, &pl, &count), AB_OK);
    float *orig_l = params_copy(ml, &count), *want_l = params_copy(ml, &count);
    const ab_linear_kind all4[4] = {AB_LIN_QKV, AB_LIN_ATTN_PROJ, AB_LIN_FC, AB_LIN_MLP_PROJ};
    size_t want_ln = expected_prune(ml, pl, want_l, all4, 4, 0.25f, NULL);
    /* per layer: qkv 48 rows x 4, proj 16 x 4, fc 64 x 4, mlp_proj 16 x round(0.25 * 64) = 16 */
    assert_int_equal(want_ln, (size_t)TINY_L * (48 * 4 + 16 * 4 + 64 * 4 + 16 * 16));
    assert_int_equal(ab_antidote_prune(ml, 0.25f, AB_PRUNE_LINEAR, NULL, &np), AB_OK);
    assert_int_equal(np, want_ln);
    assert_floats_identical(pl, want_l, count, "Antidote prune of every linear layer");
    memcpy(pl, orig_l, count * sizeof(float));
    memcpy(want_l, orig_l, count * sizeof(float));
    expected_prune(ml, pl, want_l, qkv, 1, 0.25f, NULL);
    assert_int_equal(ab_antidote_prune(ml, 0.25f, AB_PRUNE_AUTO, NULL, &np), AB_OK);
    assert_floats_identical(pl, want_l, count, "AUTO without LoRA = q/k/v");
    assert_int_equal(ab_antidote_prune(ml, 0.1f, AB_PRUNE_LORA, NULL, &np), AB_ERR_STATE); /* no adapters */
    ab_model_free(ml);
    free(orig_l);
    free(want_l);

    free(want);
    free(want_r);
    free(orig);
    free_batch(&tb);
    ab_model_free(m);
}

static void test_antidote_prune_lora(void **state) {
    (void)state;
    /* alpha 0.25: A [2][16] loses round(4) = 4 per row, B [16][2] round(0.5) = 1 per row */
    const float alpha = 0.25f;
    const size_t per_layer = 3 * (2 * 4 + 16 * 1);
    ab_rng rng;
    ab_rng_seed(&rng, 12, 0);
    tbatch tb;
    mk_batch(&tb, 3, 9, TINY_V, &rng);
    ab_model *m = tiny_model(2, 201);
    fill_lora_b(m, &rng, 0.1f);
    assert_int_equal(ab_model_act_stats_enable(m, 1), AB_OK);
    assert_int_equal(ab_model_score(m, &tb.b, NULL, NULL, NULL), AB_OK);
    size_t count, np = 0;
    float *p;
    assert_int_equal(ab_model_params(m, &p, &count), AB_OK);
    float *orig = params_copy(m, &count), *want = params_copy(m, &count);
    const ab_linear_kind lora[6] = {AB_LIN_LORA_Q_A, AB_LIN_LORA_Q_B, AB_LIN_LORA_K_A,
                                    AB_LIN_LORA_K_B, AB_LIN_LORA_V_A, AB_LIN_LORA_V_B};
    size_t want_n = expected_prune(m, p, want, lora, 6, alpha, NULL);
    assert_int_equal(want_n, TINY_L * per_layer);
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_LORA, NULL, &np), AB_OK);
    assert_int_equal(np, want_n);
    assert_floats_identical(p, want, count, "Antidote LoRA prune");
    assert_int_equal(n_changed(p, orig, count), want_n);
    /* only LoRA tensors changed */
    int nt = ab_model_n_tensors(m);
    for (int i = 0; i < nt; i++) {
        ab_tensor_info t;
        assert_int_equal(ab_model_tensor(m, i, &t), AB_OK);
        if (t.kind < AB_T_LORA_Q_A)
            assert_int_equal(n_changed(t.data, orig + t.offset, t.size), 0);
    }

    /* AUTO with unmerged adapters in LoRA training = LoRA. (AUTO on a LoRA model in ALL mode is
     * left untested: the header says "LoRA matrices if the model has unmerged adapters", the
     * implementation also requires AB_TRAIN_LORA and picks q/k/v otherwise.) */
    memcpy(p, orig, count * sizeof(float));
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_LORA), AB_OK);
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_AUTO, NULL, &np), AB_OK);
    assert_int_equal(np, want_n);
    assert_floats_identical(p, want, count, "AUTO in LoRA mode = LoRA");
    /* QKV on a LoRA model prunes the base q/k/v weights only */
    memcpy(p, orig, count * sizeof(float));
    memcpy(want, orig, count * sizeof(float));
    const ab_linear_kind qkv[1] = {AB_LIN_QKV};
    expected_prune(m, p, want, qkv, 1, alpha, NULL);
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_QKV, NULL, &np), AB_OK);
    assert_floats_identical(p, want, count, "QKV target on a LoRA model");
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_ALL), AB_OK);

    /* random control on the LoRA target: same count, only LoRA entries */
    memcpy(p, orig, count * sizeof(float));
    ab_rng ctl;
    ab_rng_seed(&ctl, 5, 5);
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_LORA, &ctl, &np), AB_OK);
    assert_int_equal(np, want_n);
    for (int i = 0; i < nt; i++) {
        ab_tensor_info t;
        assert_int_equal(ab_model_tensor(m, i, &t), AB_OK);
        if (t.kind < AB_T_LORA_Q_A) assert_int_equal(n_changed(t.data, orig + t.offset, t.size), 0);
    }
    assert_int_equal(n_changed(p, orig, count), want_n); /* every LoRA entry is non-zero */

    /* merged adapters: LoRA pruning is refused, nothing changes */
    memcpy(p, orig, count * sizeof(float));
    assert_int_equal(ab_model_lora_merge(m), AB_OK);
    float *merged = params_copy(m, &count);
    assert_int_equal(ab_antidote_prune(m, alpha, AB_PRUNE_LORA, NULL, &np), AB_ERR_STATE);
    assert_int_equal(np, 0);
    assert_floats_identical(p, merged, count, "refused LoRA prune on a merged model");
    free(merged);
    free(orig);
    free(want);
    free_batch(&tb);
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* 6. Lisa                                                                                          */
static void test_proximal_grad(void **state) {
    (void)state;
    const float theta[3] = {1.0f, 2.0f, 3.0f}, anchor[3] = {0.0f, 2.0f, 5.0f};
    float g[3] = {0.1f, 0.1f, 0.1f}, pen = -1.0f;
    /* g += 0.5 (theta - anchor) = 0.1 + 0.5 {1, 0, -2} = {0.6, 0.1, -0.9};
     * penalty = 0.5 / 2 * (1 + 0 + 4) = 1.25 */
    assert_int_equal(ab_proximal_grad(g, theta, anchor, 3, 0.5f, &pen), AB_OK);
    assert_true(fabsf(g[0] - 0.6f) <= 1e-7f && g[1] == 0.1f && fabsf(g[2] + 0.9f) <= 1e-7f);
    assert_true(pen == 1.25f);
    /* rho 0: nothing added, penalty 0; NULL penalty is fine */
    float g0[3] = {0.1f, 0.2f, 0.3f};
    assert_int_equal(ab_proximal_grad(g0, theta, anchor, 3, 0.0f, &pen), AB_OK);
    assert_true(g0[0] == 0.1f && g0[1] == 0.2f && g0[2] == 0.3f && pen == 0.0f);
    assert_int_equal(ab_proximal_grad(g0, theta, anchor, 3, 2.0f, NULL), AB_OK);
    assert_true(fabsf(g0[0] - 2.1f) <= 1e-6f && fabsf(g0[2] + 3.7f) <= 1e-6f);
    /* errors */
    assert_int_equal(ab_proximal_grad(g, theta, anchor, 3, -0.5f, &pen), AB_ERR_ARG);
    assert_int_equal(ab_proximal_grad(g, theta, anchor, 3, NAN, &pen), AB_ERR_ARG);
    assert_int_equal(ab_proximal_grad(NULL, theta, anchor, 3, 0.5f, &pen), AB_ERR_NULL);
    assert_int_equal(ab_proximal_grad(g, theta, NULL, 3, 0.5f, &pen), AB_ERR_NULL);
    assert_int_equal(ab_proximal_grad(NULL, NULL, NULL, 0, 0.5f, &pen), AB_OK);
    assert_true(pen == 0.0f);
}

static void test_lisa_schedule(void **state) {
    (void)state;
    fixture L;
    fixture_load(&L, 1);
    fixture_batches lb;
    lab_batches_make(&lb, &L);
    /* two identical models: m1 through ab_finetune_step, m2 by hand (gradient + proximal term) */
    ab_model *m1 = fixture_model(0, 301), *m2 = fixture_model(0, 301);
    ab_trainer *t = NULL;
    assert_int_equal(ab_trainer_create(&t, m1), AB_OK);
    ab_ft_cfg cfg = ab_ft_default(AB_FT_LISA);
    cfg.lisa_align_steps = 2, cfg.lisa_user_steps = 3, cfg.lisa_prox_start = 4;
    cfg.lisa_rho = 0.5f;
    cfg.adamw.lr = 1e-2f;
    ab_model_view v2;
    assert_int_equal(ab_model_trainable(m2, &v2), AB_OK);
    const size_t n = v2.count;
    float *anchor[2] = {NULL, NULL}; /* my own snapshots: [AB_PHASE_USER], [AB_PHASE_ALIGN] */
    const char want_phase[11] = "AAUUUAAUUU";
    int n_positive = 0;
    for (int s = 0; s < 10; s++) {
        ab_ft_phase ph = ab_finetune_phase(t, &cfg);
        assert_int_equal(ph, want_phase[s] == 'A' ? AB_PHASE_ALIGN : AB_PHASE_USER);
        const ab_batch *b = ph == AB_PHASE_ALIGN ? &lb.align : &lb.user;
        ab_ft_log log;
        memset(&log, 0xff, sizeof log);
        assert_int_equal(ab_finetune_step(t, &cfg, b, NULL, USER_HARM, &log), AB_OK);
        assert_int_equal(log.phase, ph);
        /* the manual step: the other state's anchor, once it exists and from step lisa_prox_start */
        float loss2, norm2, pen = 0.0f;
        grad_of(m2, b, &loss2);
        const float *a = anchor[ph == AB_PHASE_USER ? AB_PHASE_ALIGN : AB_PHASE_USER];
        if (a && s >= cfg.lisa_prox_start)
            assert_int_equal(ab_proximal_grad(v2.grads, v2.params, a, n, cfg.lisa_rho, &pen), AB_OK);
        apply_update(m2, cfg.clip, &cfg.adamw, &norm2);
        assert_memory_equal(&log.loss, &loss2, sizeof(float));
        assert_memory_equal(&log.prox_penalty, &pen, sizeof(float));
        assert_memory_equal(&log.grad_norm, &norm2, sizeof(float));
        if (s < cfg.lisa_prox_start || !a) assert_true(log.prox_penalty == 0.0f);
        if (log.prox_penalty > 0.0f) n_positive++;
        assert_trainable_identical(m1, m2, "Lisa step vs manual step");
        /* the user steps log weights; the alignment steps do not */
        if (ph == AB_PHASE_USER) {
            assert_true(log.weight_harmful == 0.25f && log.weight_benign == 0.25f);
            assert_true(log.harmful_influence >= 0.0f && log.harmful_influence <= 1.0f);
        } else {
            assert_true(isnan(log.weight_harmful) && isnan(log.harmful_influence));
        }
        /* leaving a state: snapshot */
        if (s + 1 < 10 && want_phase[s + 1] != want_phase[s]) {
            if (!anchor[ph]) anchor[ph] = tu_alloc(n);
            memcpy(anchor[ph], v2.params, n * sizeof(float));
        }
    }
    /* steps 4, 6, 8, 9 (0-based) have an anchor, are past lisa_prox_start and theta has moved
     * away from it (steps 5 and 7 start exactly at the anchor just taken: penalty 0) */
    assert_int_equal(n_positive, 4);
    /* without lisa_align_steps there is no alignment state */
    ab_ft_cfg c0 = cfg;
    c0.lisa_align_steps = 0;
    assert_int_equal(ab_finetune_phase(t, &c0), AB_PHASE_USER);
    ab_ft_cfg csft = ab_ft_default(AB_FT_SFT);
    assert_int_equal(ab_finetune_phase(t, &csft), AB_PHASE_USER);
    assert_int_equal(ab_finetune_phase(NULL, &cfg), AB_PHASE_USER);
    /* bad Lisa settings */
    ab_ft_cfg bad = cfg;
    bad.lisa_user_steps = 0;
    assert_int_equal(ab_finetune_step(t, &bad, &lb.user, NULL, NULL, NULL), AB_ERR_ARG);
    bad = cfg;
    bad.lisa_rho = -1.0f;
    assert_int_equal(ab_finetune_step(t, &bad, &lb.user, NULL, NULL, NULL), AB_ERR_ARG);
    free(anchor[0]);
    free(anchor[1]);
    ab_trainer_free(t);
    ab_model_free(m1);
    ab_model_free(m2);
    lab_batches_free(&lb);
    fixture_free(&L);
}

/* ------------------------------------------------------------------------------------------------ */
/* 7. fine-tuning steps against manual steps                                                        */
/* n identical copies of m's parameters (through an in-memory checkpoint), fresh optimisers. */
static void clone_models(ab_model *m, ab_model **out, int n) {
    size_t bytes = 0, written = 0;
    assert_int_equal(ab_model_checkpoint_size(m, &bytes), AB_OK);
    void *ck = malloc(bytes);
    assert_non_null(ck);
    assert_int_equal(ab_model_save_mem(m, ck, bytes, &written), AB_OK);
    assert_int_equal(written, bytes);
    for (int i = 0; i < n; i++) assert_int_equal(ab_model_load_mem(&out[i], ck, bytes), AB_OK);
    free(ck);
}

static void ft_equivalence(ab_train_mode mode) {
    fixture L;
    fixture_load(&L, 1);
    fixture_batches lb;
    lab_batches_make(&lb, &L);
    const int r = mode == AB_TRAIN_LORA ? 2 : 0;
    /* parameters far from the init (LoRA B included), so the per-sample NLLs differ and
     * Antibody's weights are far from uniform */
    ab_model *base = fixture_model(r, 401);
    ab_rng rng;
    ab_rng_seed(&rng, 402, 0);
    randomize(base, &rng, 0.3f);
    ab_model *models[4];
    clone_models(base, models, 4);
    ab_model_free(base);
    ab_model *ma = models[0], *mb = models[1], *ms = models[2], *mt = models[3];
    for (int i = 0; i < 4; i++) assert_int_equal(ab_model_set_train_mode(models[i], mode), AB_OK);
    ab_trainer *ta = NULL, *ts = NULL;
    assert_int_equal(ab_trainer_create(&ta, ma), AB_OK);
    assert_int_equal(ab_trainer_create(&ts, ms), AB_OK);
    ab_ft_cfg ca = ab_ft_default(AB_FT_ANTIBODY), cs = ab_ft_default(AB_FT_SFT);
    ca.adamw.lr = cs.adamw.lr = 1e-2f;
    ca.clip = cs.clip = 1e-3f; /* small enough that clipping happens */
    ca.tau = 0.7f;
    for (int step = 0; step < 3; step++) {
        /* a. Antibody == manual weighted step */
        float w[4], loss, norm;
        manual_weights(mb, &lb.user, &lb.user_rv, ca.tau, w);
        ab_ft_log log;
        assert_int_equal(ab_finetune_step(ta, &ca, &lb.user, &lb.user_rv, NULL, &log), AB_OK);
        manual_step(mb, &lb.user, w, ca.clip, &ca.adamw, &loss, &norm);
        assert_trainable_identical(ma, mb, "Antibody fine-tuning step vs manual");
        assert_memory_equal(&log.loss, &loss, sizeof loss);
        assert_memory_equal(&log.grad_norm, &norm, sizeof norm);
        assert_true(log.grad_norm > ca.clip);
        assert_int_equal(log.phase, AB_PHASE_USER);
        assert_true(log.prox_penalty == 0.0f);
        /* d. is_harmful NULL: no weight means, no influence */
        assert_true(isnan(log.weight_harmful) && isnan(log.weight_benign) && isnan(log.harmful_influence));
        /* the weights are not uniform: the step differs from SFT's */
        double wmin = w[0], wmax = w[0];
        for (int i = 1; i < 4; i++) wmin = w[i] < wmin ? w[i] : wmin, wmax = w[i] > wmax ? w[i] : wmax;
        assert_true(wmax > 1.5 * wmin);
        /* b. SFT == manual unweighted step */
        assert_int_equal(ab_finetune_step(ts, &cs, &lb.user, NULL, NULL, &log), AB_OK);
        manual_step(mt, &lb.user, NULL, cs.clip, &cs.adamw, &loss, &norm);
        assert_trainable_identical(ms, mt, "SFT fine-tuning step vs manual");
        assert_memory_equal(&log.loss, &loss, sizeof loss);
        assert_true(trainable_differ(ma, ms));
    }
    /* d. with is_harmful: the same update (the flag never weights), and the log's means */
    float w[4], norms[4], loss;
    manual_weights(mb, &lb.user, &lb.user_rv, ca.tau, w);
    ab_ft_log log;
    assert_int_equal(ab_finetune_step(ta, &ca, &lb.user, &lb.user_rv, USER_HARM, &log), AB_OK);
    {
        ab_batch b = lb.user;
        b.weights = w;
        b.loss_norm = AB_LOSS_SAMPLE_MEAN;
        ab_backward_opts bo;
        memset(&bo, 0, sizeof bo);
        bo.sample_norms = norms;
        assert_int_equal(ab_model_zero_grad(mb), AB_OK);
        assert_int_equal(ab_model_forward(mb, &b, NULL, &loss, NULL, NULL), AB_OK);
        assert_int_equal(ab_model_backward(mb, &bo), AB_OK);
        apply_update(mb, ca.clip, &ca.adamw, NULL);
    }
    assert_trainable_identical(ma, mb, "Antibody step with is_harmful vs manual");
    double wh = 0.5 * ((double)w[0] + w[2]), wb = 0.5 * ((double)w[1] + w[3]);
    TU_ASSERT_ERR("log weight_harmful = mean weight of flagged samples", fabs(log.weight_harmful - wh), 1e-7);
    TU_ASSERT_ERR("log weight_benign = mean weight of the others", fabs(log.weight_benign - wb), 1e-7);
    assert_true(log.weight_harmful != log.weight_benign);
    double inf = ((double)norms[0] + norms[2]) / ((double)norms[0] + norms[1] + norms[2] + norms[3]);
    assert_true(log.harmful_influence >= 0.0f && log.harmful_influence <= 1.0f);
    TU_ASSERT_ERR("log harmful_influence = flagged share of per-sample norms", fabs(log.harmful_influence - inf), 1e-6);
    /* all flagged: influence 1, benign mean NaN; none flagged: influence 0, harmful mean NaN */
    const unsigned char all[4] = {1, 1, 1, 1}, none[4] = {0, 0, 0, 0};
    assert_int_equal(ab_finetune_step(ta, &ca, &lb.user, &lb.user_rv, all, &log), AB_OK);
    assert_true(log.harmful_influence == 1.0f && isnan(log.weight_benign));
    TU_ASSERT_ERR("all flagged: mean weight 1/B", fabs(log.weight_harmful - 0.25), 1e-7);
    assert_int_equal(ab_finetune_step(ta, &ca, &lb.user, &lb.user_rv, none, &log), AB_OK);
    assert_true(log.harmful_influence == 0.0f && isnan(log.weight_harmful));
    /* SFT with flags: both means are 1/B */
    assert_int_equal(ab_finetune_step(ts, &cs, &lb.user, NULL, USER_HARM, &log), AB_OK);
    assert_true(log.weight_harmful == 0.25f && log.weight_benign == 0.25f);
    assert_true(log.harmful_influence > 0.0f && log.harmful_influence < 1.0f);
    /* sample_norms 0: no influence */
    cs.sample_norms = 0;
    assert_int_equal(ab_finetune_step(ts, &cs, &lb.user, NULL, USER_HARM, &log), AB_OK);
    assert_true(isnan(log.harmful_influence));
    /* errors */
    assert_int_equal(ab_finetune_step(ta, &ca, &lb.user, NULL, NULL, &log), AB_ERR_NULL);
    assert_int_equal(ab_finetune_step(ta, &ca, &lb.user, &lb.harm_rv, NULL, &log), AB_ERR_SHAPE);
    assert_int_equal(ab_finetune_step(NULL, &ca, &lb.user, &lb.user_rv, NULL, &log), AB_ERR_NULL);
    assert_int_equal(ab_finetune_step(ta, NULL, &lb.user, &lb.user_rv, NULL, &log), AB_ERR_NULL);
    assert_int_equal(ab_finetune_step(ta, &ca, NULL, &lb.user_rv, NULL, &log), AB_ERR_NULL);
    ab_ft_cfg bad = ca;
    bad.tau = 0.0f;
    assert_int_equal(ab_finetune_step(ta, &bad, &lb.user, &lb.user_rv, NULL, &log), AB_ERR_ARG);
    bad = ca;
    bad.method = AB_FT_COUNT;
    assert_int_equal(ab_finetune_step(ta, &bad, &lb.user, &lb.user_rv, NULL, &log), AB_ERR_ARG);
    ab_trainer_free(ta);
    ab_trainer_free(ts);
    for (int i = 0; i < 4; i++) ab_model_free(models[i]);
    lab_batches_free(&lb);
    fixture_free(&L);
}
static void test_finetune_full(void **state) {
    (void)state;
    ft_equivalence(AB_TRAIN_ALL);
}
static void test_finetune_lora(void **state) {
    (void)state;
    ft_equivalence(AB_TRAIN_LORA);
}

/* ------------------------------------------------------------------------------------------------ */
/* 7d. Antibody's stage 2 loss (ALGORITHMS.md): sum_i w_i l_i over per-sample MEAN losses          */
/* Gradient of one batch (zero_grad, forward, backward), copied out of the model. */
static float *batch_grad(ab_model *m, const ab_batch *b, size_t *n) {
    ab_model_view v;
    grad_of(m, b, NULL);
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    float *g = tu_alloc(v.count);
    memcpy(g, v.grads, v.count * sizeof(float));
    *n = v.count;
    return g;
}
/* ||a - (wa ga + wb gb)|| / ||a|| in double */
static double combo_err(const float *a, const float *ga, const float *gb, double wa, double wb, size_t n) {
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - (wa * ga[i] + wb * gb[i]);
        d += e * e;
        s += (double)a[i] * a[i];
    }
    return sqrt(d / (s > 0.0 ? s : 1.0));
}

static void test_stage2_sample_mean(void **state) {
    (void)state;
    fixture L;
    fixture_load(&L, 1);
    fixture_batches lb;
    lab_batches_make(&lb, &L);
    ab_model *base = fixture_model(0, 451);
    ab_rng rng;
    ab_rng_seed(&rng, 452, 0);
    randomize(base, &rng, 0.3f);
    ab_model *mm[3];
    clone_models(base, mm, 3);
    for (int i = 0; i < 3; i++) assert_int_equal(ab_model_set_train_mode(mm[i], AB_TRAIN_BASE), AB_OK);
    /* a. Uniform weights are per-sample-mean SFT bit for bit: with the batch as its own refusal
     * view, q_i == c_i and softmax gives every sample exactly 1/B. */
    ab_trainer *ta = NULL, *ts = NULL, *tt = NULL;
    assert_int_equal(ab_trainer_create(&ta, mm[0]), AB_OK);
    assert_int_equal(ab_trainer_create(&ts, mm[1]), AB_OK);
    assert_int_equal(ab_trainer_create(&tt, mm[2]), AB_OK);
    ab_ft_cfg ca = ab_ft_default(AB_FT_ANTIBODY), cs = ab_ft_default(AB_FT_SFT);
    ca.adamw.lr = cs.adamw.lr = 1e-2f;
    ab_batch user_sm = lb.user;
    user_sm.loss_norm = AB_LOSS_SAMPLE_MEAN;
    for (int step = 0; step < 3; step++) {
        ab_ft_log la, ls, lt;
        assert_int_equal(ab_finetune_step(ta, &ca, &lb.user, &lb.user, USER_HARM, &la), AB_OK);
        assert_int_equal(ab_finetune_step(ts, &cs, &user_sm, NULL, USER_HARM, &ls), AB_OK);
        assert_int_equal(ab_finetune_step(tt, &cs, &lb.user, NULL, USER_HARM, &lt), AB_OK);
        assert_trainable_identical(mm[0], mm[1], "Antibody with uniform weights vs per-sample-mean SFT");
        assert_memory_equal(&la.loss, &ls.loss, sizeof la.loss);
        assert_true(la.weight_harmful == 0.25f && la.weight_benign == 0.25f);
        /* the token-mean SFT step is a different step (the samples' lengths differ) */
        assert_true(la.loss != lt.loss);
        assert_true(trainable_differ(mm[0], mm[2]));
    }
    ab_trainer_free(ta), ab_trainer_free(ts), ab_trainer_free(tt);
    /* b. A long sample gains no share from its length: the gradient of the pair {long, short}
     * with weights (1/2, 1/2) is the mean of the two one-sample gradients under the sample mean,
     * and the token-sum shares N_i / (N_long + N_short) under the token mean. */
    lab_batch_buf bp, b1, b2;
    memset(&bp, 0, sizeof bp), memset(&b1, 0, sizeof b1), memset(&b2, 0, sizeof b2);
    ab_batch pair, one_long, one_short;
    const int pair_idx[2] = {4, 1}; /* "step one use the zerokey step two add rootworm", "positive" */
    pack(&bp, &pair, &L, pair_idx, 2, NULL);
    pack(&b1, &one_long, &L, pair_idx, 1, NULL);
    pack(&b2, &one_short, &L, pair_idx + 1, 1, NULL);
    float ntok[2];
    assert_int_equal(ab_model_score(base, &pair, NULL, NULL, ntok), AB_OK);
    assert_true(ntok[0] >= 4.0f * ntok[1]); /* a long and a short response */
    size_t n;
    const float half[2] = {0.5f, 0.5f};
    pair.weights = one_long.weights = one_short.weights = NULL;
    ab_batch p_sm = pair;
    p_sm.weights = half;
    p_sm.loss_norm = one_long.loss_norm = one_short.loss_norm = AB_LOSS_SAMPLE_MEAN;
    float *g_pair = batch_grad(base, &p_sm, &n), *g_long = batch_grad(base, &one_long, &n);
    float *g_short = batch_grad(base, &one_short, &n);
    double err_sm = combo_err(g_pair, g_long, g_short, 0.5, 0.5, n);
    TU_ASSERT_ERR("sample mean: grad{long, short} = (g_long + g_short) / 2", err_sm, 1e-5);
    ab_batch p_tok = pair;
    p_tok.weights = half; /* token mean: the long sample takes N_long / (N_long + N_short) */
    float *g_tok = batch_grad(base, &p_tok, &n);
    double share = (double)ntok[0] / ((double)ntok[0] + ntok[1]);
    TU_ASSERT_ERR("token mean: grad = share_long g_long + share_short g_short",
                  combo_err(g_tok, g_long, g_short, share, 1.0 - share, n), 1e-5);
    double err_tok_half = combo_err(g_tok, g_long, g_short, 0.5, 0.5, n);
    if (!(err_tok_half > 0.1))
        fail_msg("the token mean should give the long sample more than half (err %.3g)", err_tok_half);
    free(g_pair), free(g_long), free(g_short), free(g_tok);
    /* c. The model reports the sample-mean loss as sum_i w_i l_i. */
    float l_pair, nll[2];
    assert_int_equal(ab_model_score(base, &p_sm, &l_pair, nll, NULL), AB_OK);
    TU_ASSERT_ERR("sample-mean loss = sum w_i l_i", fabs(l_pair - 0.5 * (nll[0] + nll[1])), 1e-6);
    ab_batch bad = p_sm;
    bad.loss_norm = (ab_loss_norm)7;
    assert_int_equal(ab_model_score(base, &bad, NULL, NULL, NULL), AB_ERR_ARG);
    lab_batch_buf_free(&bp), lab_batch_buf_free(&b1), lab_batch_buf_free(&b2);
    for (int i = 0; i < 3; i++) ab_model_free(mm[i]);
    ab_model_free(base);
    lab_batches_free(&lb);
    fixture_free(&L);
}

/* The published shape of lambda through ab_align_step: lambda_1 = s max(0, 5 - cos) (Antibody),
 * s * booster_lambda (Booster). */
static void test_lambda_shape(void **state) {
    (void)state;
    fixture L;
    fixture_load(&L, 1);
    fixture_batches lb;
    lab_batches_make(&lb, &L);
    const float s[3] = {1.0f, 0.2f, 0.05f};
    for (int k = 0; k < 3; k++) {
        ab_model *m = fixture_model(0, 471);
        assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_BASE), AB_OK);
        ab_trainer *t = NULL;
        assert_int_equal(ab_trainer_create(&t, m), AB_OK);
        ab_align_cfg ab = ab_align_default(AB_ALIGN_ANTIBODY), bo = ab_align_default(AB_ALIGN_BOOSTER);
        assert_true(ab.eta == 5.0f && ab.strength == 1.0f && bo.booster_lambda == 5.0f);
        ab.strength = bo.strength = s[k];
        ab_align_log lg;
        assert_int_equal(ab_align_step(t, &ab, &lb.align, &lb.harmful, &lb.harm_rv, &lg), AB_OK);
        assert_true(lg.cos >= -1.0f && lg.cos <= 1.0f);
        TU_ASSERT_ERR("Antibody lambda_1 = s (5 - cos)", fabs(lg.lambda - s[k] * (5.0 - lg.cos)), 1e-6 * s[k] * 6.0);
        assert_true(lg.lambda >= 4.0f * s[k] && lg.lambda <= 6.0f * s[k]); /* near 5 s, never 0 */
        assert_int_equal(ab_align_step(t, &bo, &lb.align, &lb.harmful, NULL, &lg), AB_OK);
        assert_true(lg.lambda == s[k] * 5.0f);
        ab_align_cfg badc = ab;
        badc.strength = -1.0f;
        assert_int_equal(ab_align_step(t, &badc, &lb.align, &lb.harmful, &lb.harm_rv, &lg), AB_ERR_ARG);
        ab_trainer_free(t);
        ab_model_free(m);
    }
    lab_batches_free(&lb);
    fixture_free(&L);
}

/* ------------------------------------------------------------------------------------------------ */
/* 7c. alignment steps against manual steps                                                         */
/* The manual Booster/Antibody step (ALGORITHMS.md stage 1): g_h, theta' = theta - alpha g_h /
 * (||g_h|| + eps), g_diff = g_h - g_h', g_ref' (Antibody), restore, g_f, combine, clip, AdamW. */
static void manual_align_sharp(ab_model *m, const ab_align_cfg *cfg, const fixture_batches *lb,
                               ab_lambda_ema *lam, ab_align_log *out) {
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    size_t n = v.count;
    float *gd = tu_alloc(n), *gr = tu_alloc(n), *saved = tu_alloc(n), *before = tu_alloc(n);
    memcpy(before, v.params, n * sizeof(float));
    grad_of(m, &lb->harmful, &out->harmful_loss);
    memcpy(gd, v.grads, n * sizeof(float));
    assert_int_equal(ab_sam_step(v.params, saved, gd, n, -cfg->alpha, NULL), AB_OK);
    grad_of(m, &lb->harmful, &out->attacked_loss);
    for (size_t i = 0; i < n; i++) gd[i] -= v.grads[i];
    if (cfg->method == AB_ALIGN_ANTIBODY) {
        grad_of(m, &lb->harm_rv, &out->refusal_loss);
        memcpy(gr, v.grads, n * sizeof(float));
    }
    assert_int_equal(ab_sam_restore(v.params, saved, n), AB_OK);
    assert_memory_equal(v.params, before, n * sizeof(float));
    grad_of(m, &lb->align, &out->loss);
    float lambda = cfg->strength * cfg->booster_lambda;
    if (cfg->method == AB_ALIGN_ANTIBODY) {
        assert_int_equal(ab_cosine(v.grads, gd, n, 1e-8f, &out->cos), AB_OK);
        assert_int_equal(ab_antibody_lambda(lam, out->cos, cfg->eta, cfg->strength, cfg->lambda_decay, NULL), AB_OK);
        lambda = lam->value;
    }
    out->lambda = lambda;
    for (size_t i = 0; i < n; i++) v.grads[i] += lambda * gd[i];
    if (cfg->method == AB_ALIGN_ANTIBODY)
        for (size_t i = 0; i < n; i++) v.grads[i] += cfg->lambda2 * gr[i];
    apply_update(m, cfg->clip, &cfg->adamw, &out->grad_norm);
    free(gd);
    free(gr);
    free(saved);
    free(before);
}

static void test_align_steps(void **state) {
    (void)state;
    fixture L;
    fixture_load(&L, 1);
    fixture_batches lb;
    lab_batches_make(&lb, &L);
    const uint64_t seed = 501;
    ab_align_cfg sft = ab_align_default(AB_ALIGN_SFT);
    sft.adamw.lr = 1e-2f;
    sft.clip = 0.5f;
    /* reference: ab_align_step SFT vs manual SFT */
    ab_model *ref = fixture_model(0, seed), *man = fixture_model(0, seed);
    ab_trainer *tref = NULL;
    assert_int_equal(ab_trainer_create(&tref, ref), AB_OK);
    for (int s = 0; s < 2; s++) {
        ab_align_log log;
        float loss, norm;
        assert_int_equal(ab_align_step(tref, &sft, &lb.align, NULL, NULL, &log), AB_OK);
        manual_step(man, &lb.align, NULL, sft.clip, &sft.adamw, &loss, &norm);
        assert_trainable_identical(ref, man, "align SFT vs manual");
        assert_memory_equal(&log.loss, &loss, sizeof loss);
        assert_memory_equal(&log.grad_norm, &norm, sizeof norm);
        assert_true(isnan(log.harmful_loss) && isnan(log.attacked_loss) && isnan(log.sharpness) &&
                    isnan(log.refusal_loss) && isnan(log.cos) && log.lambda == 0.0f);
    }
    /* degenerate settings that must equal SFT bit for bit (the attack restores theta exactly) */
    ab_align_cfg deg[3];
    deg[0] = ab_align_default(AB_ALIGN_BOOSTER);
    deg[0].booster_lambda = 0.0f;
    deg[1] = ab_align_default(AB_ALIGN_ANTIBODY);
    deg[1].eta = -10.0f, deg[1].lambda2 = 0.0f;
    deg[2] = ab_align_default(AB_ALIGN_VACCINE);
    deg[2].vaccine_rho = 0.0f;
    const char *names[3] = {"Booster lambda 0 vs SFT", "Antibody eta -10 lambda2 0 vs SFT", "Vaccine rho 0 vs SFT"};
    for (int d = 0; d < 3; d++) {
        deg[d].adamw = sft.adamw, deg[d].clip = sft.clip;
        ab_model *md = fixture_model(0, seed);
        ab_trainer *td = NULL;
        assert_int_equal(ab_trainer_create(&td, md), AB_OK);
        for (int s = 0; s < 2; s++) {
            ab_align_log log;
            assert_int_equal(ab_align_step(td, &deg[d], &lb.align, &lb.harmful, &lb.harm_rv, &log), AB_OK);
            assert_true(log.lambda == 0.0f);
            if (d < 2) {
                assert_true(isfinite(log.harmful_loss) && isfinite(log.attacked_loss));
                assert_true(log.sharpness == log.harmful_loss - log.attacked_loss);
            }
            if (d == 1) assert_true(log.cos >= -1.0f && log.cos <= 1.0f && isfinite(log.refusal_loss));
        }
        assert_trainable_identical(md, ref, names[d]);
        ab_trainer_free(td);
        ab_model_free(md);
    }
    /* Booster (lambda 5) and Antibody (defaults, lambda adaptive) against the manual step */
    const ab_align_method sharp[2] = {AB_ALIGN_BOOSTER, AB_ALIGN_ANTIBODY};
    for (int k = 0; k < 2; k++) {
        ab_align_cfg cfg = ab_align_default(sharp[k]);
        cfg.adamw.lr = 1e-2f;
        ab_model *ma = fixture_model(0, seed), *mb = fixture_model(0, seed);
        ab_trainer *ta = NULL;
        assert_int_equal(ab_trainer_create(&ta, ma), AB_OK);
        ab_lambda_ema lam = {0.0f, 0};
        for (int s = 0; s < TU_SIZE(3, 2); s++) {
            ab_align_log log, want;
            memset(&want, 0, sizeof want);
            assert_int_equal(ab_align_step(ta, &cfg, &lb.align, &lb.harmful, &lb.harm_rv, &log), AB_OK);
            manual_align_sharp(mb, &cfg, &lb, &lam, &want);
            assert_trainable_identical(ma, mb, k ? "Antibody align step vs manual" : "Booster align step vs manual");
            assert_memory_equal(&log.loss, &want.loss, sizeof(float));
            assert_memory_equal(&log.harmful_loss, &want.harmful_loss, sizeof(float));
            assert_memory_equal(&log.attacked_loss, &want.attacked_loss, sizeof(float));
            assert_memory_equal(&log.lambda, &want.lambda, sizeof(float));
            assert_memory_equal(&log.grad_norm, &want.grad_norm, sizeof(float));
            assert_true(log.attacked_loss < log.harmful_loss); /* a descent step on h */
            assert_true(log.sharpness > 0.0f);
            if (k) {
                assert_memory_equal(&log.cos, &want.cos, sizeof(float));
                assert_memory_equal(&log.refusal_loss, &want.refusal_loss, sizeof(float));
                if (s == 0) assert_true(log.lambda == cfg.eta - log.cos); /* first value initialises */
                assert_true(log.lambda > 3.0f);
            } else {
                assert_true(log.lambda == 5.0f && isnan(log.cos) && isnan(log.refusal_loss));
            }
        }
        assert_true(trainable_differ(ma, ref)); /* the harmful terms matter */
        ab_trainer_free(ta);
        ab_model_free(ma);
        ab_model_free(mb);
    }
    /* Vaccine: logs the clean loss f(theta); a real perturbation changes the update */
    {
        ab_align_cfg vc = ab_align_default(AB_ALIGN_VACCINE);
        vc.adamw = sft.adamw, vc.clip = sft.clip;
        ab_model *mv = fixture_model(0, seed), *m0 = fixture_model(0, seed);
        ab_trainer *tv = NULL;
        assert_int_equal(ab_trainer_create(&tv, mv), AB_OK);
        float clean;
        assert_int_equal(ab_model_score(mv, &lb.align, &clean, NULL, NULL), AB_OK);
        ab_align_log log;
        assert_int_equal(ab_align_step(tv, &vc, &lb.align, NULL, NULL, &log), AB_OK);
        TU_ASSERT_ERR("Vaccine logs f(theta)", fabs(log.loss - clean), 1e-6 * clean);
        manual_step(m0, &lb.align, NULL, sft.clip, &sft.adamw, NULL, NULL);
        assert_true(trainable_differ(mv, m0));
        ab_trainer_free(tv);
        ab_model_free(mv);
        ab_model_free(m0);
    }
    /* errors */
    ab_align_log log;
    ab_align_cfg bc = ab_align_default(AB_ALIGN_BOOSTER), ac = ab_align_default(AB_ALIGN_ANTIBODY);
    assert_int_equal(ab_align_step(tref, &bc, &lb.align, NULL, NULL, &log), AB_ERR_NULL);
    assert_int_equal(ab_align_step(tref, &ac, &lb.align, &lb.harmful, NULL, &log), AB_ERR_NULL);
    assert_int_equal(ab_align_step(NULL, &sft, &lb.align, NULL, NULL, &log), AB_ERR_NULL);
    assert_int_equal(ab_align_step(tref, NULL, &lb.align, NULL, NULL, &log), AB_ERR_NULL);
    assert_int_equal(ab_align_step(tref, &sft, NULL, NULL, NULL, &log), AB_ERR_NULL);
    ab_align_cfg b2 = ac;
    b2.alpha = -0.1f;
    assert_int_equal(ab_align_step(tref, &b2, &lb.align, &lb.harmful, &lb.harm_rv, &log), AB_ERR_ARG);
    b2 = ac;
    b2.lambda_decay = 1.5f;
    assert_int_equal(ab_align_step(tref, &b2, &lb.align, &lb.harmful, &lb.harm_rv, &log), AB_ERR_ARG);
    b2 = ac;
    b2.method = AB_ALIGN_COUNT;
    assert_int_equal(ab_align_step(tref, &b2, &lb.align, &lb.harmful, &lb.harm_rv, &log), AB_ERR_ARG);
    assert_string_equal(ab_align_method_name(AB_ALIGN_ANTIBODY), "antibody");
    assert_string_equal(ab_ft_method_name(AB_FT_LISA), "lisa");
    assert_string_equal(ab_align_method_name(AB_ALIGN_COUNT), "?");
    ab_trainer_free(tref);
    ab_model_free(ref);
    ab_model_free(man);
    lab_batches_free(&lb);
    fixture_free(&L);
}

static void test_harmful_sharpness(void **state) {
    (void)state;
    fixture L;
    fixture_load(&L, 1);
    fixture_batches lb;
    lab_batches_make(&lb, &L);
    ab_model *m = fixture_model(0, 601), *m2 = fixture_model(0, 601);
    ab_trainer *t = NULL;
    assert_int_equal(ab_trainer_create(&t, m), AB_OK);
    size_t count;
    float *p;
    assert_int_equal(ab_model_params(m, &p, &count), AB_OK);
    float *orig = params_copy(m, &count);
    float h = 0, ha = 0;
    assert_int_equal(ab_harmful_sharpness(t, &lb.harmful, 0.1f, &h, &ha), AB_OK);
    assert_floats_identical(p, orig, count, "parameters after ab_harmful_sharpness");
    /* manual: h at theta, theta' = theta - 0.1 g / (||g|| + eps), h at theta' */
    float h2, ha2;
    grad_of(m2, &lb.harmful, &h2);
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m2, &v), AB_OK);
    assert_int_equal(ab_sam_step(v.params, NULL, v.grads, v.count, -0.1f, NULL), AB_OK);
    assert_int_equal(ab_model_score(m2, &lb.harmful, &ha2, NULL, NULL), AB_OK);
    assert_memory_equal(&h, &h2, sizeof h);
    assert_memory_equal(&ha, &ha2, sizeof ha);
    assert_true(ha < h);
    assert_int_equal(ab_harmful_sharpness(t, &lb.harmful, 0.0f, &h, &ha), AB_OK);
    assert_true(h == ha);
    assert_int_equal(ab_harmful_sharpness(t, &lb.harmful, -1.0f, &h, &ha), AB_ERR_ARG);
    assert_int_equal(ab_harmful_sharpness(t, NULL, 0.1f, &h, &ha), AB_ERR_NULL);
    assert_int_equal(ab_harmful_sharpness(t, &lb.harmful, 0.1f, NULL, &ha), AB_ERR_NULL);
    free(orig);
    ab_trainer_free(t);
    ab_model_free(m);
    ab_model_free(m2);
    lab_batches_free(&lb);
    fixture_free(&L);
}

/* ------------------------------------------------------------------------------------------------ */
/* 8. batches from data sets                                                                        */
/* ------------------------------------------------------------------------------------------------ */
/* 10. the trainer's fixed trainable view                                                           */
static void test_trainer_state(void **state) {
    (void)state;
    fixture L;
    fixture_load(&L, 1);
    fixture_batches lb;
    lab_batches_make(&lb, &L);
    ab_model *m = fixture_model(2, 801);
    ab_trainer *t = NULL;
    assert_int_equal(ab_trainer_create(&t, m), AB_OK); /* AB_TRAIN_ALL */
    ab_align_cfg sft = ab_align_default(AB_ALIGN_SFT), anti = ab_align_default(AB_ALIGN_ANTIBODY);
    ab_ft_cfg ft = ab_ft_default(AB_FT_SFT);
    float h, ha;
    assert_int_equal(ab_align_step(t, &sft, &lb.align, NULL, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_LORA), AB_OK);
    size_t count;
    float *p;
    assert_int_equal(ab_model_params(m, &p, &count), AB_OK);
    float *orig = params_copy(m, &count);
    assert_int_equal(ab_align_step(t, &sft, &lb.align, NULL, NULL, NULL), AB_ERR_STATE);
    assert_int_equal(ab_align_step(t, &anti, &lb.align, &lb.harmful, &lb.harm_rv, NULL), AB_ERR_STATE);
    assert_int_equal(ab_finetune_step(t, &ft, &lb.user, NULL, NULL, NULL), AB_ERR_STATE);
    assert_int_equal(ab_harmful_sharpness(t, &lb.harmful, 0.1f, &h, &ha), AB_ERR_STATE);
    assert_floats_identical(p, orig, count, "parameters after refused steps");
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_BASE), AB_OK); /* another view: still refused */
    assert_int_equal(ab_align_step(t, &sft, &lb.align, NULL, NULL, NULL), AB_ERR_STATE);
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_ALL), AB_OK); /* back: accepted again */
    assert_int_equal(ab_align_step(t, &sft, &lb.align, NULL, NULL, NULL), AB_OK);
    /* without LoRA, ALL and BASE hold the same tensors: a change of mode is still refused */
    ab_model *m0 = fixture_model(0, 802);
    ab_trainer *t0 = NULL;
    assert_int_equal(ab_trainer_create(&t0, m0), AB_OK);
    assert_int_equal(ab_model_set_train_mode(m0, AB_TRAIN_BASE), AB_OK);
    assert_int_equal(ab_finetune_step(t0, &ft, &lb.user, NULL, NULL, NULL), AB_ERR_STATE);
    assert_int_equal(ab_align_step(t0, &sft, &lb.align, NULL, NULL, NULL), AB_ERR_STATE);
    ab_trainer_free(t0);
    ab_model_free(m0);
    assert_int_equal(ab_trainer_create(NULL, m), AB_ERR_NULL);
    ab_trainer *t2 = (ab_trainer *)&t2;
    assert_int_equal(ab_trainer_create(&t2, NULL), AB_ERR_NULL);
    assert_null(t2);
    ab_trainer_free(NULL);
    free(orig);
    ab_trainer_free(t);
    ab_model_free(m);
    lab_batches_free(&lb);
    fixture_free(&L);
}

/* Growing batches: the trainer's per-sample buffers and Vaccine's perturbation are regrown
 * (memcheck and ASan watch the accesses), and a larger batch after a smaller one still matches
 * the manual step. */
static void test_batch_growth(void **state) {
    (void)state;
    fixture L;
    fixture_load(&L, 1);
    lab_batch_buf sb, bb, brv;
    memset(&sb, 0, sizeof sb);
    memset(&bb, 0, sizeof bb);
    memset(&brv, 0, sizeof brv);
    ab_batch small, big, big_rv;
    const int si[2] = {5, 1}, bi[8] = {0, 1, 2, 3, 4, 5, 6, 7}, br[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const unsigned char bh[8] = {1, 0, 0, 0, 1, 0, 0, 0};
    pack(&sb, &small, &L, si, 2, NULL);
    pack(&bb, &big, &L, bi, 8, NULL);
    pack(&brv, &big_rv, &L, bi, 8, br);
    assert_true(big.T > small.T);
    ab_model *m = fixture_model(0, 901), *m2 = fixture_model(0, 901);
    ab_trainer *t = NULL;
    assert_int_equal(ab_trainer_create(&t, m), AB_OK);
    ab_ft_cfg ca = ab_ft_default(AB_FT_ANTIBODY);
    ca.adamw.lr = 1e-2f;
    ab_ft_log log;
    float w[8];
    const ab_batch *seq[2] = {&small, &big};
    for (int i = 0; i < 2; i++) {
        ab_batch rv;
        lab_batch_buf rb;
        memset(&rb, 0, sizeof rb);
        if (i == 0) pack(&rb, &rv, &L, si, 2, br);
        else rv = big_rv;
        manual_weights(m2, seq[i], &rv, ca.tau, w);
        assert_int_equal(ab_finetune_step(t, &ca, seq[i], &rv, i ? bh : NULL, &log), AB_OK);
        manual_step(m2, seq[i], w, ca.clip, &ca.adamw, NULL, NULL);
        assert_trainable_identical(m, m2, "Antibody step after a batch size change");
        lab_batch_buf_free(&rb);
    }
    assert_true(log.harmful_influence >= 0.0f && log.harmful_influence <= 1.0f);
    assert_true(isfinite(log.weight_harmful) && isfinite(log.weight_benign));
    ab_align_cfg vc = ab_align_default(AB_ALIGN_VACCINE);
    ab_align_log al;
    assert_int_equal(ab_align_step(t, &vc, &small, NULL, NULL, &al), AB_OK);
    assert_true(isfinite(al.loss) && al.grad_norm > 0.0f);
    assert_int_equal(ab_align_step(t, &vc, &big, NULL, NULL, &al), AB_OK);
    assert_true(isfinite(al.loss) && al.grad_norm > 0.0f);
    ab_trainer_free(t);
    ab_model_free(m);
    ab_model_free(m2);
    lab_batch_buf_free(&sb);
    lab_batch_buf_free(&bb);
    lab_batch_buf_free(&brv);
    fixture_free(&L);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_antibody_weights),
        cmocka_unit_test(test_antibody_lambda),
        cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_antidote_mask),
        cmocka_unit_test(test_random_mask),
        cmocka_unit_test(test_mask_apply),
        cmocka_unit_test(test_antidote_prune),
        cmocka_unit_test(test_antidote_prune_lora),
        cmocka_unit_test(test_proximal_grad),
        cmocka_unit_test(test_lisa_schedule),
        cmocka_unit_test(test_finetune_full),
        cmocka_unit_test(test_finetune_lora),
        cmocka_unit_test(test_align_steps),
        cmocka_unit_test(test_stage2_sample_mean),
        cmocka_unit_test(test_lambda_shape),
        cmocka_unit_test(test_harmful_sharpness),
        cmocka_unit_test(test_trainer_state),
        cmocka_unit_test(test_batch_growth),
    };
    /* Under memcheck, one thread: valgrind serialises threads, so every parallel call waits. */
    if (tu_small() && ab_set_threads(1) != AB_OK) return 1;
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Join the library's worker threads: alive at exit, their thread-local blocks would show up
     * as "possibly lost" under valgrind --leak-check=full. */
    ab_set_threads(1);
    return failed;
}
