/* tests/test_model.c - the tiny transformer (DESIGN.md layer 3): gradient checks against an
 * independent double-precision reference model, per-sample norms and clipping against
 * one-sample-at-a-time gradients, the weighted loss, LoRA (merge, train modes), KV-cache decoding,
 * batched generation against one-at-a-time generation (bit for bit, every ISA path),
 * the defence hooks, reproducibility (runs, threads; full and packed batches), packed batches
 * against the same batches computed in full, a copy task that must train, error paths.
 *
 * Gradient check, and why its bound is sound: the model's float backward is compared with central
 * differences of a separate double-precision implementation of the same network (ref_loss below,
 * written from the architecture, sharing no code with the library). Its forward is first checked
 * against the model's float forward (loss and logits within 2e-5 relative), so both compute the same
 * function. The difference quotient is the 4th-order five-point stencil with h = 1e-4 on parameters
 * of size ~0.3: truncation error ~h^4 f^(5) ~ 1e-16, rounding ~1e-16 * |L| / h ~ 1e-12, so the
 * reference derivative is exact to ~1e-10 absolute and the measured error is the float backward's
 * own rounding. A float gradient element is a sum of O(B T d) products, so its absolute error is
 * ~ 1e-6 of the largest gradients of the same tensor: the check is
 *     |g - fd| <= 2e-4 * (|fd| + 0.05 * max_j |fd_j| over the tensor's sampled elements)
 * and the measured worst case per group is printed (AB_TEST_VERBOSE=1). */
#include "testutil.h"
#include <pthread.h>

/* ------------------------------------------------------------------------------------------------ */
/* helpers                                                                                          */
static ab_model *mk_model(int V, int P, int L, int H, int C, int r, float alpha, uint64_t seed) {
    ab_model_config c;
    c.n_vocab = V, c.n_ctx = P, c.n_layer = L, c.n_head = H, c.d_model = C;
    c.lora_rank = r, c.lora_alpha = alpha;
    ab_model *m = NULL;
    assert_int_equal(ab_model_create(&m, &c, seed), AB_OK);
    assert_non_null(m);
    return m;
}

/* Moves every parameter away from the GPT-2 init so the network is clearly non-linear and the
 * LoRA B matrices are non-zero (their A gradients would be 0 otherwise). */
static void randomize(ab_model *m, ab_rng *rng, float std) {
    int n = ab_model_n_tensors(m);
    for (int i = 0; i < n; i++) {
        ab_tensor_info t;
        assert_int_equal(ab_model_tensor(m, i, &t), AB_OK);
        int is_ln_w = t.kind == AB_T_LN1_W || t.kind == AB_T_LN2_W || t.kind == AB_T_LNF_W;
        int is_vec = t.rows == 1;
        for (size_t j = 0; j < t.size; j++) {
            float z = ab_rng_normal(rng);
            t.data[j] = is_ln_w ? 1.0f + 0.2f * z : is_vec ? 0.1f * z : std * z;
        }
    }
}

typedef struct tbatch {
    int B, T;
    int *in, *tg, *len;
    float *mask, *w;
    ab_batch b;
} tbatch;

/* Random tokens; sample i's first 1 + i % 3 positions are "prompt" (mask 0), the rest response. */
static void mk_batch(tbatch *tb, int B, int T, int V, ab_rng *rng, int weighted) {
    tb->B = B, tb->T = T;
    tb->in = (int *)calloc((size_t)B * T, sizeof(int));
    tb->tg = (int *)calloc((size_t)B * T, sizeof(int));
    tb->len = (int *)calloc((size_t)B, sizeof(int));
    tb->mask = tu_alloc((size_t)B * T);
    tb->w = tu_alloc((size_t)B);
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
        tb->w[i] = weighted ? 0.3f + 1.5f * ab_rng_uniform(rng) : 1.0f;
        tb->len[i] = T - i % 2;
    }
    tb->b.B = B, tb->b.T = T;
    tb->b.inputs = tb->in, tb->b.targets = tb->tg, tb->b.mask = tb->mask;
    tb->b.weights = weighted ? tb->w : NULL;
    tb->b.lengths = NULL;
    tb->b.loss_norm = AB_LOSS_TOKEN_MEAN;
}
static void free_batch(tbatch *tb) {
    free(tb->in);
    free(tb->tg);
    free(tb->len);
    free(tb->mask);
    free(tb->w);
}

/* tb's sample i gets lens[i] real tokens: mask 0 from there on (its ids stay, as garbage). */
static void pack_batch(tbatch *tb, const int *lens) {
    for (int i = 0; i < tb->B; i++) {
        tb->len[i] = lens[i];
        for (int t = lens[i]; t < tb->T; t++) tb->mask[(size_t)i * tb->T + t] = 0.0f;
    }
    tb->b.lengths = tb->len;
}

/* A batch holding only sample i of tb (its weight kept). */
static void sub_batch(const tbatch *tb, int i, ab_batch *out) {
    size_t o = (size_t)i * tb->T;
    out->B = 1, out->T = tb->T;
    out->inputs = tb->in + o, out->targets = tb->tg + o, out->mask = tb->mask + o;
    out->weights = tb->b.weights ? tb->b.weights + i : NULL;
    out->lengths = NULL;
    out->loss_norm = tb->b.loss_norm;
}

/* Copy of the trainable gradients after zero_grad + forward + backward(opts). */
static float *grads_of(ab_model *m, const ab_batch *b, const ab_backward_opts *o, size_t *count) {
    ab_model_view v;
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_forward(m, b, NULL, NULL, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_backward(m, o), AB_OK);
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    float *g = tu_alloc(v.count);
    memcpy(g, v.grads, v.count * sizeof(float));
    *count = v.count;
    return g;
}

/* ------------------------------------------------------------------------------------------------ */
/* the double-precision reference model                                                            */
#define REF_MAX_L 8
typedef struct ref_model {
    int V, P, L, H, C, r, lora;
    double scale;
    const double *p;
    size_t off[AB_T_KIND_COUNT][REF_MAX_L];
} ref_model;

static void ref_init(ref_model *R, ab_model *m, const double *p) {
    ab_model_config c;
    assert_int_equal(ab_model_get_config(m, &c), AB_OK);
    assert_true(c.n_layer <= REF_MAX_L);
    R->V = c.n_vocab, R->P = c.n_ctx, R->L = c.n_layer, R->H = c.n_head, R->C = c.d_model;
    R->r = c.lora_rank, R->lora = c.lora_rank > 0 && !ab_model_lora_merged(m);
    R->scale = c.lora_rank > 0 ? (double)c.lora_alpha / c.lora_rank : 0.0;
    R->p = p;
    for (int i = 0; i < ab_model_n_tensors(m); i++) {
        ab_tensor_info t;
        assert_int_equal(ab_model_tensor(m, i, &t), AB_OK);
        R->off[t.kind][t.layer < 0 ? 0 : t.layer] = t.offset;
    }
}
#define RP(kind, l) (R->p + R->off[kind][l])

static void ref_ln(double *out, const double *x, const double *w, const double *b, int C) {
    double mu = 0.0, var = 0.0;
    for (int j = 0; j < C; j++) mu += x[j];
    mu /= C;
    for (int j = 0; j < C; j++) var += (x[j] - mu) * (x[j] - mu);
    var /= C;
    double rs = 1.0 / sqrt(var + 1e-5);
    for (int j = 0; j < C; j++) out[j] = (x[j] - mu) * rs * w[j] + b[j];
}
/* y[d_out] = W[d_out][d_in] x (+ b) */
static void ref_lin(double *y, const double *W, const double *b, const double *x, int d_out, int d_in) {
    for (int o = 0; o < d_out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < d_in; i++) s += W[(size_t)o * d_in + i] * x[i];
        y[o] = s;
    }
}
static double ref_gelu(double x) {
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

/* Loss of the batch (ALGORITHMS.md formula); E: [L][B][T][C] or NULL; logits_out [B][T][V] or
 * NULL; nll_out [B] or NULL. */
static double ref_loss(const ref_model *R, const ab_batch *b, const double *E, double *logits_out,
                       double *nll_out) {
    const int T = b->T, C = R->C, V = R->V, H = R->H, hs = C / H, r = R->r;
    double *x = (double *)calloc((size_t)T * C, sizeof(double));
    double *ln = (double *)calloc((size_t)T * C, sizeof(double));
    double *qkv = (double *)calloc((size_t)T * 3 * C, sizeof(double));
    double *y = (double *)calloc((size_t)T * C, sizeof(double));
    double *tmp = (double *)calloc((size_t)4 * C + V + T + r + 8, sizeof(double));
    double *f = (double *)calloc((size_t)4 * C, sizeof(double));
    assert_true(x && ln && qkv && y && tmp && f);
    double num = 0.0, Z = 0.0;
    for (int i = 0; i < b->B; i++) {
        const int *ids = b->inputs + (size_t)i * T;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < C; j++)
                x[t * C + j] = RP(AB_T_WTE, 0)[(size_t)ids[t] * C + j] + RP(AB_T_WPE, 0)[(size_t)t * C + j];
        for (int l = 0; l < R->L; l++) {
            for (int t = 0; t < T; t++) {
                ref_ln(ln + t * C, x + t * C, RP(AB_T_LN1_W, l), RP(AB_T_LN1_B, l), C);
                ref_lin(qkv + t * 3 * C, RP(AB_T_QKV_W, l), RP(AB_T_QKV_B, l), ln + t * C, 3 * C, C);
                if (R->lora)
                    for (int q = 0; q < 3; q++) {
                        double *u = tmp, *d = tmp + r;
                        ref_lin(u, RP(AB_T_LORA_Q_A + 2 * q, l), NULL, ln + t * C, r, C);
                        ref_lin(d, RP(AB_T_LORA_Q_B + 2 * q, l), NULL, u, C, r);
                        for (int j = 0; j < C; j++) qkv[t * 3 * C + q * C + j] += R->scale * d[j];
                    }
            }
            for (int h = 0; h < H; h++)
                for (int t = 0; t < T; t++) {
                    double *s = tmp, mx = -1e300, sum = 0.0;
                    for (int u = 0; u <= t; u++) {
                        double d = 0.0;
                        for (int j = 0; j < hs; j++)
                            d += qkv[t * 3 * C + h * hs + j] * qkv[u * 3 * C + C + h * hs + j];
                        s[u] = d / sqrt((double)hs);
                        mx = s[u] > mx ? s[u] : mx;
                    }
                    for (int u = 0; u <= t; u++) sum += (s[u] = exp(s[u] - mx));
                    for (int j = 0; j < hs; j++) {
                        double acc = 0.0;
                        for (int u = 0; u <= t; u++) acc += s[u] / sum * qkv[u * 3 * C + 2 * C + h * hs + j];
                        y[t * C + h * hs + j] = acc;
                    }
                }
            for (int t = 0; t < T; t++) {
                double *o = tmp;
                ref_lin(o, RP(AB_T_ATTN_PROJ_W, l), RP(AB_T_ATTN_PROJ_B, l), y + t * C, C, C);
                for (int j = 0; j < C; j++) {
                    double e = E ? E[(((size_t)l * b->B + i) * T + t) * C + j] : 0.0;
                    x[t * C + j] += o[j] + e;
                }
                ref_ln(ln + t * C, x + t * C, RP(AB_T_LN2_W, l), RP(AB_T_LN2_B, l), C);
                ref_lin(f, RP(AB_T_FC_W, l), RP(AB_T_FC_B, l), ln + t * C, 4 * C, C);
                for (int j = 0; j < 4 * C; j++) f[j] = ref_gelu(f[j]);
                ref_lin(o, RP(AB_T_MLP_PROJ_W, l), RP(AB_T_MLP_PROJ_B, l), f, C, 4 * C);
                for (int j = 0; j < C; j++) x[t * C + j] += o[j];
            }
        }
        double s_i = 0.0, n_i = 0.0, w = b->weights ? b->weights[i] : 1.0;
        for (int t = 0; t < T; t++) {
            double *lg = tmp, mx = -1e300, sum = 0.0;
            ref_ln(ln + t * C, x + t * C, RP(AB_T_LNF_W, 0), RP(AB_T_LNF_B, 0), C);
            ref_lin(lg, RP(AB_T_WTE, 0), NULL, ln + t * C, V, C);
            if (logits_out) memcpy(logits_out + ((size_t)i * T + t) * V, lg, sizeof(double) * V);
            for (int v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
            for (int v = 0; v < V; v++) sum += exp(lg[v] - mx);
            double mk = b->mask[(size_t)i * T + t];
            if (mk != 0.0) s_i += mk * (mx + log(sum) - lg[b->targets[(size_t)i * T + t]]);
            n_i += mk;
        }
        if (nll_out) nll_out[i] = n_i > 0 ? s_i / n_i : 0.0;
        num += w * s_i;
        Z += w * n_i;
    }
    free(x);
    free(ln);
    free(qkv);
    free(y);
    free(tmp);
    free(f);
    return num / (Z > 1.0 ? Z : 1.0);
}

/* ------------------------------------------------------------------------------------------------ */
/* gradient check                                                                                   */
typedef struct gc_stats {
    double err[AB_T_KIND_COUNT];
    int n[AB_T_KIND_COUNT];
} gc_stats;

/* Five-point derivative of the reference loss in element k of `what` (the double parameters R->p
 * or the perturbation E). */
static double fd5(ref_model *R, double *what, size_t k, const ab_batch *b, double *E) {
    const double h = 1e-4;
    double *x = what + k, x0 = *x, f[4];
    const double steps[4] = {2 * h, h, -h, -2 * h};
    for (int s = 0; s < 4; s++) {
        *x = x0 + steps[s];
        f[s] = ref_loss(R, b, E, NULL, NULL);
    }
    *x = x0;
    return (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * h);
}

static void gradcheck_model(ab_model *m, const char *label, int with_perturb, gc_stats *gs) {
    ab_model_config c;
    assert_int_equal(ab_model_get_config(m, &c), AB_OK);
    ab_rng rng;
    ab_rng_seed(&rng, 99, 1);
    tbatch tb;
    const int B = 3, T = c.n_ctx - 1;
    mk_batch(&tb, B, T, c.n_vocab, &rng, 1);
    size_t n_e = (size_t)c.n_layer * B * T * c.d_model;
    float *Ef = tu_alloc(n_e), *Gh = tu_alloc(n_e);
    double *Ed = (double *)calloc(n_e, sizeof(double));
    assert_non_null(Ed);
    for (size_t i = 0; i < n_e; i++) Ed[i] = Ef[i] = with_perturb ? 0.2f * ab_rng_normal(&rng) : 0.0f;
    ab_forward_opts fo;
    fo.attn_perturb = with_perturb ? Ef : NULL;
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.attn_grad = Gh;
    float loss, nll[3], ntok[3];
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_forward(m, &tb.b, &fo, &loss, nll, ntok), AB_OK);
    assert_int_equal(ab_model_backward(m, &bo), AB_OK);
    /* double copy of the parameters, and the reference forward against the float forward */
    float *pf;
    size_t np;
    assert_int_equal(ab_model_params(m, &pf, &np), AB_OK);
    double *pd = (double *)calloc(np, sizeof(double));
    assert_non_null(pd);
    for (size_t i = 0; i < np; i++) pd[i] = pf[i];
    ref_model R;
    ref_init(&R, m, pd);
    double *ref_logits = (double *)calloc((size_t)B * T * c.n_vocab, sizeof(double)), ref_nll[3];
    assert_non_null(ref_logits);
    double L_ref = ref_loss(&R, &tb.b, Ed, ref_logits, ref_nll);
    const float *logits;
    assert_int_equal(ab_model_logits(m, &logits), AB_OK);
    char what[96];
    snprintf(what, sizeof what, "%s: forward loss vs double reference", label);
    TU_ASSERT_ERR(what, fabs(loss - L_ref) / fabs(L_ref), 2e-5);
    snprintf(what, sizeof what, "%s: forward logits vs double reference", label);
    TU_ASSERT_ERR(what, tu_max_rel_err(logits, ref_logits, (size_t)B * T * c.n_vocab, 1.0), 2e-5);
    for (int i = 0; i < B; i++) assert_true(fabs(nll[i] - ref_nll[i]) <= 2e-5 * fabs(ref_nll[i]) + 1e-6);
    /* sample elements of every tensor: first, last, and 3 random ones */
    for (int ti = 0; ti < ab_model_n_tensors(m); ti++) {
        ab_tensor_info t;
        assert_int_equal(ab_model_tensor(m, ti, &t), AB_OK);
        size_t picks[5] = {0, t.size - 1, 0, 0, 0};
        for (int s = 2; s < 5; s++) picks[s] = ab_rng_below(&rng, (uint32_t)t.size);
        double fd[5], gmax = 0.0;
        for (int s = 0; s < 5; s++) {
            fd[s] = fd5(&R, pd, t.offset + picks[s], &tb.b, Ed);
            gmax = fabs(fd[s]) > gmax ? fabs(fd[s]) : gmax;
        }
        for (int s = 0; s < 5; s++) {
            double g = t.grad[picks[s]];
            double e = fabs(g - fd[s]) / (fabs(fd[s]) + 0.05 * gmax + 1e-12);
            tu_worst(&gs->err[t.kind], e);
            gs->n[t.kind]++;
        }
    }
    /* the Vaccine hook: dLoss/dH_l against the derivative in the perturbation */
    double herr = 0.0, hmax = 0.0, fdh[6];
    size_t hk[6];
    for (int s = 0; s < 6; s++) {
        hk[s] = ab_rng_below(&rng, (uint32_t)n_e);
        fdh[s] = fd5(&R, Ed, hk[s], &tb.b, Ed);
        hmax = fabs(fdh[s]) > hmax ? fabs(fdh[s]) : hmax;
    }
    for (int s = 0; s < 6; s++) {
        double e = fabs(Gh[hk[s]] - fdh[s]) / (fabs(fdh[s]) + 0.05 * hmax + 1e-12);
        herr = e > herr ? e : herr;
    }
    snprintf(what, sizeof what, "%s: attn_grad (dLoss/dH_l)", label);
    TU_ASSERT_ERR(what, herr, 2e-4);
    free(ref_logits);
    free(pd);
    free(Ed);
    free(Ef);
    free(Gh);
    free_batch(&tb);
}

static void report_groups(const char *label, const gc_stats *gs) {
    for (int k = 0; k < AB_T_KIND_COUNT; k++) {
        if (gs->n[k] == 0) continue;
        char what[96];
        static const char *const names[AB_T_KIND_COUNT] = {
            "wte", "wpe", "ln1_w", "ln1_b", "qkv_w", "qkv_b", "attn_proj_w", "attn_proj_b",
            "ln2_w", "ln2_b", "fc_w", "fc_b", "mlp_proj_w", "mlp_proj_b", "lnf_w", "lnf_b",
            "lora_q_a", "lora_q_b", "lora_k_a", "lora_k_b", "lora_v_a", "lora_v_b"};
        snprintf(what, sizeof what, "gradcheck %s %s (%d elements)", label, names[k], gs->n[k]);
        TU_ASSERT_ERR(what, gs->err[k], 2e-4);
    }
}

static void test_gradcheck_no_lora(void **state) {
    (void)state;
    ab_model *m = mk_model(11, 7, 2, 2, 8, 0, 0.0f, 5);
    ab_rng rng;
    ab_rng_seed(&rng, 7, 0);
    randomize(m, &rng, 0.3f);
    gc_stats gs;
    memset(&gs, 0, sizeof gs);
    gradcheck_model(m, "no-LoRA", 1, &gs);
    report_groups("no-LoRA", &gs);
    for (int k = 0; k < AB_T_LORA_Q_A; k++) assert_true(gs.n[k] > 0); /* every base group seen */
    ab_model_free(m);
}

static void test_gradcheck_lora(void **state) {
    (void)state;
    ab_model *m = mk_model(11, 7, 2, 2, 8, 2, 4.0f, 6);
    ab_rng rng;
    ab_rng_seed(&rng, 8, 0);
    randomize(m, &rng, 0.3f);
    gc_stats gs;
    memset(&gs, 0, sizeof gs);
    gradcheck_model(m, "LoRA", 1, &gs);
    report_groups("LoRA", &gs);
    for (int k = 0; k < AB_T_KIND_COUNT; k++) assert_true(gs.n[k] > 0);
    /* LoRA-only training: the same adapter gradients, bit for bit, and nothing else touched */
    ab_rng_seed(&rng, 99, 1);
    tbatch tb;
    mk_batch(&tb, 3, 6, 11, &rng, 1);
    size_t n_all, n_lora;
    float *g_all = grads_of(m, &tb.b, NULL, &n_all);
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_LORA), AB_OK);
    float *g_lora = grads_of(m, &tb.b, NULL, &n_lora);
    ab_tensor_info a0;
    assert_int_equal(ab_model_tensor_of(m, AB_T_LORA_Q_A, 0, &a0), AB_OK);
    assert_true(n_lora < n_all);
    assert_memory_equal(g_lora, g_all + a0.offset, n_lora * sizeof(float));
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    assert_ptr_equal(v.params, a0.data);
    ab_tensor_info wte;
    assert_int_equal(ab_model_tensor_of(m, AB_T_WTE, 0, &wte), AB_OK);
    assert_false(wte.trainable);
    assert_true(a0.trainable);
    /* base-only training: the base part of the all-gradient */
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_BASE), AB_OK);
    size_t n_base;
    float *g_base = grads_of(m, &tb.b, NULL, &n_base);
    assert_int_equal(n_base, a0.offset);
    assert_memory_equal(g_base, g_all, n_base * sizeof(float));
    free(g_all);
    free(g_lora);
    free(g_base);
    free_batch(&tb);
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* per-sample norms and clipping                                                                    */
static void psnorm_case(ab_model *m, ab_train_mode mode, ab_psnorm_method method, int T,
                        const char *label) {
    ab_model_config c;
    assert_int_equal(ab_model_get_config(m, &c), AB_OK);
    assert_int_equal(ab_model_set_train_mode(m, mode), AB_OK);
    ab_rng rng;
    ab_rng_seed(&rng, 1234, 0);
    const int B = 4;
    tbatch tb;
    mk_batch(&tb, B, T, c.n_vocab, &rng, 1);
    if (T == 1)
        for (int i = 0; i < B; i++) tb.mask[i] = 1.0f; /* one token: make it a response token */
    float norms[4], tok[4];
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.sample_norms = norms;
    bo.psnorm_method = method;
    size_t n;
    float *g_plain = grads_of(m, &tb.b, NULL, &n);
    float *g_norms = grads_of(m, &tb.b, &bo, &n);
    /* computing norms without clipping leaves the gradient bit for bit */
    assert_memory_equal(g_plain, g_norms, n * sizeof(float));
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, NULL, NULL, tok), AB_OK);
    double Z = 0.0;
    for (int i = 0; i < B; i++) Z += (double)tb.w[i] * tok[i];
    Z = Z > 1.0 ? Z : 1.0;
    /* one sample at a time: B = 1 batches, rescaled from their own normaliser to the batch's */
    float **gi = (float **)calloc(B, sizeof(float *));
    double worst = 0.0, fsc[4];
    for (int i = 0; i < B; i++) {
        ab_batch one;
        sub_batch(&tb, i, &one);
        double zi = (double)tb.w[i] * tok[i];
        fsc[i] = (zi > 1.0 ? zi : 1.0) / Z;
        gi[i] = grads_of(m, &one, NULL, &n);
        double s = 0.0;
        for (size_t j = 0; j < n; j++) s += (double)gi[i][j] * gi[i][j];
        double want = sqrt(s) * fsc[i];
        double e = fabs(norms[i] - want) / want;
        worst = e > worst ? e : worst;
    }
    char what[96];
    snprintf(what, sizeof what, "psnorm %s vs one-at-a-time", label);
    TU_ASSERT_ERR(what, worst, 1e-4);
    /* per-sample clipping at the median norm: sum_i min(1, c/|g_i|) g_i */
    float sorted[4];
    memcpy(sorted, norms, sizeof sorted);
    for (int a = 0; a < B; a++)
        for (int b2 = a + 1; b2 < B; b2++)
            if (sorted[b2] < sorted[a]) {
                float t = sorted[a];
                sorted[a] = sorted[b2];
                sorted[b2] = t;
            }
    bo.clip_norm = 0.5f * (sorted[1] + sorted[2]);
    float *g_clip = grads_of(m, &tb.b, &bo, &n);
    double gmax = 0.0, emax = 0.0;
    for (size_t j = 0; j < n; j++) {
        double want = 0.0;
        for (int i = 0; i < B; i++) {
            double f = norms[i] > bo.clip_norm ? bo.clip_norm / norms[i] : 1.0;
            want += f * fsc[i] * gi[i][j];
        }
        gmax = fabs(want) > gmax ? fabs(want) : gmax;
        emax = fabs(g_clip[j] - want) > emax ? fabs(g_clip[j] - want) : emax;
    }
    snprintf(what, sizeof what, "per-sample clipping %s vs one-at-a-time", label);
    TU_ASSERT_ERR(what, emax / gmax, 1e-4);
    /* a batch of one: its per-sample gradient is the whole gradient */
    ab_batch one;
    sub_batch(&tb, 0, &one); /* sample 0 has response tokens at every T */
    float norm1;
    bo.sample_norms = &norm1;
    bo.clip_norm = 0.0f;
    float *g1 = grads_of(m, &one, &bo, &n);
    double s1 = 0.0;
    for (size_t j = 0; j < n; j++) s1 += (double)g1[j] * g1[j];
    snprintf(what, sizeof what, "psnorm %s, B = 1 vs gradient norm", label);
    TU_ASSERT_ERR(what, fabs(norm1 - sqrt(s1)) / sqrt(s1), 1e-5);
    free(g1);
    for (int i = 0; i < B; i++) free(gi[i]);
    free(gi);
    free(g_plain);
    free(g_norms);
    free(g_clip);
    free_batch(&tb);
}

static void test_psnorm(void **state) {
    (void)state;
    int C = TU_SIZE(32, 16), T = TU_SIZE(12, 6);
    ab_model *m = mk_model(TU_SIZE(67, 23), T, 2, 2, C, 4, 8.0f, 11);
    ab_rng rng;
    ab_rng_seed(&rng, 3, 0);
    randomize(m, &rng, 0.2f);
    psnorm_case(m, AB_TRAIN_ALL, AB_PSNORM_AUTO, T, "all (LoRA present), auto");
    psnorm_case(m, AB_TRAIN_ALL, AB_PSNORM_GHOST, T, "all, ghost");
    psnorm_case(m, AB_TRAIN_ALL, AB_PSNORM_MATERIALIZE, T, "all, materialise");
    psnorm_case(m, AB_TRAIN_LORA, AB_PSNORM_AUTO, T, "LoRA only");
    psnorm_case(m, AB_TRAIN_BASE, AB_PSNORM_AUTO, T, "base only");
    psnorm_case(m, AB_TRAIN_ALL, AB_PSNORM_AUTO, 1, "all, T = 1");
    psnorm_case(m, AB_TRAIN_ALL, AB_PSNORM_AUTO, 2, "all, T = 2 (shorter than n_ctx)");
    ab_model_free(m);
    m = mk_model(TU_SIZE(67, 23), T, 2, 4, C, 0, 0.0f, 12);
    ab_rng_seed(&rng, 4, 0);
    randomize(m, &rng, 0.2f);
    psnorm_case(m, AB_TRAIN_ALL, AB_PSNORM_AUTO, T, "no LoRA");
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* the weighted loss                                                                                */
static void test_weights(void **state) {
    (void)state;
    ab_model *m = mk_model(29, 10, 2, 2, 16, 2, 4.0f, 21);
    ab_rng rng;
    ab_rng_seed(&rng, 5, 0);
    randomize(m, &rng, 0.2f);
    tbatch tb;
    mk_batch(&tb, 4, 10, 29, &rng, 1);
    float l_sft, l_w, nll_sft[4], nll_w[4], tok_sft[4], tok_w[4];
    size_t n;
    /* uniform weights 1 (and 0.25, a power of two) are plain SFT bit for bit */
    tb.b.weights = NULL;
    float *g_sft = grads_of(m, &tb.b, NULL, &n);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &l_sft, nll_sft, tok_sft), AB_OK);
    const float uniform[2] = {1.0f, 0.25f};
    for (int u = 0; u < 2; u++) {
        for (int i = 0; i < 4; i++) tb.w[i] = uniform[u];
        tb.b.weights = tb.w;
        float *g = grads_of(m, &tb.b, NULL, &n);
        assert_int_equal(ab_model_forward(m, &tb.b, NULL, &l_w, nll_w, tok_w), AB_OK);
        assert_memory_equal(&l_w, &l_sft, sizeof(float));
        assert_memory_equal(nll_w, nll_sft, sizeof nll_w);
        assert_memory_equal(tok_w, tok_sft, sizeof tok_w);
        assert_memory_equal(g, g_sft, n * sizeof(float));
        free(g);
    }
    /* 1/3 (not a power of two): equal to rounding */
    for (int i = 0; i < 4; i++) tb.w[i] = 1.0f / 3.0f;
    float *g3 = grads_of(m, &tb.b, NULL, &n);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &l_w, NULL, NULL), AB_OK);
    assert_true(fabsf(l_w - l_sft) <= 1e-6f * l_sft);
    double gsft_max = 0.0;
    for (size_t j = 0; j < n; j++) gsft_max = fabs(g_sft[j]) > gsft_max ? fabs(g_sft[j]) : gsft_max;
    TU_ASSERT_ERR("weights 1/3 vs SFT gradient", tu_max_rel_err_f(g3, g_sft, n, gsft_max), 1e-6);
    free(g3);
    /* non-uniform weights: grad = sum_i w_i max(1, N_i)/Z * g_i, g_i the unit-weight grad of i */
    const float wv[4] = {0.2f, 1.7f, 0.0f, 0.9f};
    double Z = 0.0;
    for (int i = 0; i < 4; i++) tb.w[i] = wv[i], Z += (double)wv[i] * tok_sft[i];
    Z = Z > 1.0 ? Z : 1.0;
    float *gw = grads_of(m, &tb.b, NULL, &n);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &l_w, nll_w, NULL), AB_OK);
    double want_loss = 0.0;
    for (int i = 0; i < 4; i++) want_loss += (double)wv[i] * nll_sft[i] * tok_sft[i] / Z;
    assert_true(fabs(l_w - want_loss) <= 1e-6 * want_loss);
    assert_memory_equal(nll_w, nll_sft, sizeof nll_w); /* the per-sample NLLs ignore w */
    double *want = (double *)calloc(n, sizeof(double));
    assert_non_null(want);
    for (int i = 0; i < 4; i++) {
        ab_batch one;
        sub_batch(&tb, i, &one);
        one.weights = NULL;
        float *g = grads_of(m, &one, NULL, &n);
        double f = (double)wv[i] * (tok_sft[i] > 1.0f ? tok_sft[i] : 1.0) / Z;
        for (size_t j = 0; j < n; j++) want[j] += f * g[j];
        free(g);
    }
    double gmax = 0.0, emax = 0.0;
    for (size_t j = 0; j < n; j++) {
        gmax = fabs(want[j]) > gmax ? fabs(want[j]) : gmax;
        emax = fabs(gw[j] - want[j]) > emax ? fabs(gw[j] - want[j]) : emax;
    }
    TU_ASSERT_ERR("weighted gradient vs sum_i w_i/Z g_i", emax / gmax, 1e-5);
    /* scoring equals the training forward bit for bit and leaves its activations alone */
    float l_s, nll_s[4], tok_s[4];
    assert_int_equal(ab_model_score(m, &tb.b, &l_s, nll_s, tok_s), AB_OK);
    assert_memory_equal(&l_s, &l_w, sizeof l_s);
    assert_memory_equal(nll_s, nll_w, sizeof nll_s);
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, NULL, NULL, NULL), AB_OK);
    tbatch other;
    mk_batch(&other, 3, 7, 29, &rng, 0);
    assert_int_equal(ab_model_score(m, &other.b, NULL, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_backward(m, NULL), AB_OK);
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    assert_memory_equal(v.grads, gw, n * sizeof(float));
    /* backward accumulates (piece by piece, so 2 g to rounding) */
    assert_int_equal(ab_model_backward(m, NULL), AB_OK);
    for (size_t j = 0; j < n; j++) assert_true(fabs(v.grads[j] - 2.0 * gw[j]) <= 1e-6 * gmax);
    free(want);
    free(gw);
    free(g_sft);
    free_batch(&other);
    free_batch(&tb);
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* LoRA merge                                                                                       */
static void test_lora_merge(void **state) {
    (void)state;
    ab_model *m = mk_model(37, 12, 2, 2, 16, 4, 8.0f, 31);
    ab_rng rng;
    ab_rng_seed(&rng, 6, 0);
    randomize(m, &rng, 0.2f);
    tbatch tb;
    mk_batch(&tb, 2, 12, 37, &rng, 0);
    const float *lg;
    size_t nl = (size_t)2 * 12 * 37;
    float *before = tu_alloc(nl), loss_u, loss_m;
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss_u, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_logits(m, &lg), AB_OK);
    memcpy(before, lg, nl * sizeof(float));
    ab_tensor_info qkv;
    assert_int_equal(ab_model_tensor_of(m, AB_T_QKV_W, 1, &qkv), AB_OK);
    float *w0 = tu_alloc(qkv.size);
    memcpy(w0, qkv.data, qkv.size * sizeof(float));
    assert_int_equal(ab_model_lora_merge(m), AB_OK);
    assert_true(ab_model_lora_merged(m));
    assert_int_equal(ab_model_lora_merge(m), AB_ERR_STATE);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss_m, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_logits(m, &lg), AB_OK);
    double scale = 0.0;
    for (size_t i = 0; i < nl; i++) scale = fabs(before[i]) > scale ? fabs(before[i]) : scale;
    TU_ASSERT_ERR("merged LoRA logits vs unmerged", tu_max_rel_err_f(lg, before, nl, scale), 1e-5);
    assert_true(fabsf(loss_m - loss_u) <= 1e-5f * loss_u);
    /* the merged weights differ, training the adapters is refused, base training is allowed */
    assert_true(memcmp(w0, qkv.data, qkv.size * sizeof(float)) != 0);
    assert_int_equal(ab_model_backward(m, NULL), AB_ERR_STATE);
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_BASE), AB_OK);
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_backward(m, NULL), AB_OK);
    assert_int_equal(ab_model_lora_init(m, &rng), AB_ERR_STATE);
    assert_int_equal(ab_model_lora_unmerge(m), AB_OK);
    assert_int_equal(ab_model_lora_unmerge(m), AB_ERR_STATE);
    double wscale = 0.0;
    for (size_t i = 0; i < qkv.size; i++) wscale = fabs(w0[i]) > wscale ? fabs(w0[i]) : wscale;
    TU_ASSERT_ERR("unmerge restores W (to rounding)", tu_max_rel_err_f(qkv.data, w0, qkv.size, wscale), 1e-6);
    /* LoRA re-init: B = 0, so the adapters contribute nothing */
    assert_int_equal(ab_model_lora_init(m, &rng), AB_OK);
    ab_tensor_info bq;
    assert_int_equal(ab_model_tensor_of(m, AB_T_LORA_V_B, 1, &bq), AB_OK);
    for (size_t i = 0; i < bq.size; i++) assert_true(bq.data[i] == 0.0f);
    free(before);
    free(w0);
    free_batch(&tb);
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* KV-cache decoding and generation                                                                 */
static int argmax_row(const float *x, int n) {
    int b = 0;
    for (int j = 1; j < n; j++)
        if (x[j] > x[b]) b = j;
    return b;
}

static void test_kv_cache(void **state) {
    (void)state;
    const int V = 41, P = TU_SIZE(24, 12);
    for (int with_lora = 0; with_lora < 2; with_lora++) {
        ab_model *m = mk_model(V, P, 2, 2, 16, with_lora ? 4 : 0, 8.0f, 41);
        ab_rng rng;
        ab_rng_seed(&rng, 9, 0);
        randomize(m, &rng, 0.25f);
        int *seq = (int *)calloc((size_t)P, sizeof(int));
        float *ones = tu_alloc((size_t)P), *lg = tu_alloc((size_t)V);
        assert_non_null(seq);
        for (int t = 0; t < P; t++) seq[t] = (int)ab_rng_below(&rng, V), ones[t] = 1.0f;
        ab_batch b;
        b.B = 1, b.T = P, b.inputs = seq, b.targets = seq, b.mask = ones, b.weights = NULL, b.lengths = NULL;
        b.loss_norm = AB_LOSS_TOKEN_MEAN;
        const float *full;
        assert_int_equal(ab_model_forward(m, &b, NULL, NULL, NULL, NULL), AB_OK);
        assert_int_equal(ab_model_logits(m, &full), AB_OK);
        double worst = 0.0;
        /* token by token */
        assert_int_equal(ab_model_decode_reset(m), AB_OK);
        for (int t = 0; t < P; t++) {
            assert_int_equal(ab_model_decode(m, seq + t, 1, lg), AB_OK);
            double e = tu_max_rel_err_f(lg, full + (size_t)t * V, (size_t)V, 1.0);
            worst = e > worst ? e : worst;
            assert_int_equal(argmax_row(lg, V), argmax_row(full + (size_t)t * V, V));
        }
        assert_int_equal(ab_model_decode(m, seq, 1, lg), AB_ERR_ARG); /* context full */
        /* prefill 5, then one at a time */
        assert_int_equal(ab_model_decode_reset(m), AB_OK);
        assert_int_equal(ab_model_decode(m, seq, 5, lg), AB_OK);
        double e = tu_max_rel_err_f(lg, full + 4 * (size_t)V, (size_t)V, 1.0);
        worst = e > worst ? e : worst;
        for (int t = 5; t < P; t++) {
            assert_int_equal(ab_model_decode(m, seq + t, 1, lg), AB_OK);
            e = tu_max_rel_err_f(lg, full + (size_t)t * V, (size_t)V, 1.0);
            worst = e > worst ? e : worst;
        }
        TU_ASSERT_ERR(with_lora ? "KV-cache logits vs full forward (LoRA)" : "KV-cache logits vs full forward",
                      worst, 1e-5);
        /* greedy generation == argmax of full recomputation at every step */
        int out[64], n_out = 0;
        const int n_prompt = 4;
        assert_int_equal(ab_model_generate(m, seq, n_prompt, P, 0.0f, -1, NULL, out, &n_out), AB_OK);
        assert_int_equal(n_out, P - n_prompt); /* stops when the context is full */
        int *cur = (int *)calloc((size_t)P, sizeof(int));
        assert_non_null(cur);
        memcpy(cur, seq, n_prompt * sizeof(int));
        for (int k = 0; k < n_out; k++) {
            int len = n_prompt + k;
            ab_batch g;
            g.B = 1, g.T = len, g.inputs = cur, g.targets = cur, g.mask = ones, g.weights = NULL, g.lengths = NULL;
            g.loss_norm = AB_LOSS_TOKEN_MEAN;
            assert_int_equal(ab_model_forward(m, &g, NULL, NULL, NULL, NULL), AB_OK);
            assert_int_equal(ab_model_logits(m, &full), AB_OK);
            int want = argmax_row(full + (size_t)(len - 1) * V, V);
            assert_int_equal(out[k], want);
            cur[len] = want;
        }
        /* stop token: generation ends right after emitting it */
        int stop = out[2];
        assert_int_equal(ab_model_generate(m, seq, n_prompt, P, 0.0f, stop, NULL, out, &n_out), AB_OK);
        assert_true(n_out <= 3 && out[n_out - 1] == stop);
        /* sampling: reproducible from the seed, tokens in range */
        int s1[64], s2[64], n1, n2;
        ab_rng r1, r2;
        ab_rng_seed(&r1, 77, 3);
        ab_rng_seed(&r2, 77, 3);
        assert_int_equal(ab_model_generate(m, seq, n_prompt, 6, 1.3f, -1, &r1, s1, &n1), AB_OK);
        assert_int_equal(ab_model_generate(m, seq, n_prompt, 6, 1.3f, -1, &r2, s2, &n2), AB_OK);
        assert_int_equal(n1, 6);
        assert_int_equal(n1, n2);
        assert_memory_equal(s1, s2, (size_t)n1 * sizeof(int));
        for (int k = 0; k < n1; k++) assert_true(s1[k] >= 0 && s1[k] < V);
        free(cur);
        free(seq);
        free(ones);
        free(lg);
        ab_model_free(m);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* batched generation: ab_model_generate_batch gives ab_model_generate's tokens bit for bit        */
typedef struct gen_case {
    int n, max_new, stop;  /* prompts; ab_model_generate's arguments */
    float temperature;     /* > 0: prompt i samples from an rng seeded with (1000 + i, 5) */
    int **prompts, *lens;
    int *want, *want_n;    /* [n][max_new], [n]: one prompt at a time */
} gen_case;

typedef struct done_rec {
    int calls, bad, n, max_new;
    const int *out;
    int *got_n; /* [n]: n_tokens of each call, -1 before */
} done_rec;

static void on_gen_done(void *user, int index, const int *tokens, int n_tokens) {
    done_rec *r = (done_rec *)user;
    r->calls++;
    if (index < 0 || index >= r->n || r->got_n[index] != -1 || n_tokens < 0 || n_tokens > r->max_new ||
        (r->max_new > 0 && tokens != r->out + (size_t)index * r->max_new)) {
        r->bad++;
        return;
    }
    r->got_n[index] = n_tokens;
}

static void seed_rngs(ab_rng *rngs, int n) {
    for (int i = 0; i < n; i++) ab_rng_seed(&rngs[i], 1000 + (uint64_t)i, 5);
}

/* Random prompts of lengths 1..P: prompt 0 fills the context, 1 leaves one position, 2 has one token. */
static void gen_prompts(gen_case *c, int n, int V, int P, ab_rng *rng) {
    c->n = n;
    c->prompts = (int **)calloc((size_t)n, sizeof(int *));
    c->lens = (int *)calloc((size_t)n, sizeof(int));
    assert_non_null(c->prompts);
    assert_non_null(c->lens);
    for (int i = 0; i < n; i++) {
        c->lens[i] = i == 0 ? P : i == 1 ? P - 1 : i == 2 ? 1 : 1 + (int)ab_rng_below(rng, (uint32_t)P);
        c->prompts[i] = (int *)calloc((size_t)P, sizeof(int));
        assert_non_null(c->prompts[i]);
        for (int t = 0; t < c->lens[i]; t++) c->prompts[i][t] = (int)ab_rng_below(rng, (uint32_t)V);
    }
}

static void gen_free(gen_case *c) {
    for (int i = 0; i < c->n; i++) free(c->prompts[i]);
    free(c->prompts);
    free(c->lens);
    free(c->want);
    free(c->want_n);
    memset(c, 0, sizeof *c);
}

/* The expected tokens of c's settings, one prompt at a time. */
static void gen_reference(ab_model *m, gen_case *c, int max_new, int stop, float temperature) {
    c->max_new = max_new, c->stop = stop, c->temperature = temperature;
    free(c->want);
    free(c->want_n);
    c->want = (int *)calloc((size_t)c->n * (max_new ? max_new : 1), sizeof(int));
    c->want_n = (int *)calloc((size_t)c->n, sizeof(int));
    assert_non_null(c->want);
    assert_non_null(c->want_n);
    ab_rng *rngs = (ab_rng *)calloc((size_t)c->n, sizeof(ab_rng));
    assert_non_null(rngs);
    seed_rngs(rngs, c->n);
    for (int i = 0; i < c->n; i++)
        assert_int_equal(ab_model_generate(m, c->prompts[i], c->lens[i], max_new, temperature, stop,
                                           &rngs[i], c->want + (size_t)i * max_new, &c->want_n[i]),
                         AB_OK);
    free(rngs);
}

/* The most frequent token of the expected outputs: a stop token that ends many of them early. */
static int gen_common_token(const gen_case *c, int V) {
    int *freq = (int *)calloc((size_t)V, sizeof(int)), best = 0;
    assert_non_null(freq);
    for (int i = 0; i < c->n; i++)
        for (int k = 0; k < c->want_n[i]; k++) freq[c->want[(size_t)i * c->max_new + k]]++;
    for (int v = 1; v < V; v++)
        if (freq[v] > freq[best]) best = v;
    free(freq);
    return best;
}

/* Batched generation with max_batch (0: the default) must reproduce c's expected tokens exactly,
 * leave the rest of each output row untouched and call on_done once per prompt. */
static void gen_check(ab_model *m, const gen_case *c, int max_batch, const char *what) {
    const int n = c->n, max_new = c->max_new, stride = max_new ? max_new : 1;
    int *out = (int *)malloc(sizeof(int) * (size_t)n * stride), *out_n = (int *)malloc(sizeof(int) * (size_t)n);
    int *got_n = (int *)malloc(sizeof(int) * (size_t)n);
    ab_rng *rngs = (ab_rng *)calloc((size_t)n, sizeof(ab_rng));
    assert_true(out && out_n && got_n && rngs);
    for (size_t k = 0; k < (size_t)n * stride; k++) out[k] = -7;
    for (int i = 0; i < n; i++) out_n[i] = -5, got_n[i] = -1;
    seed_rngs(rngs, n);
    done_rec rec = {0, 0, n, max_new, out, got_n};
    ab_generate_opts o;
    memset(&o, 0, sizeof o);
    o.temperature = c->temperature, o.rngs = c->temperature > 0.0f ? rngs : NULL;
    o.max_batch = max_batch, o.on_done = on_gen_done, o.user = &rec;
    ab_status st = ab_model_generate_batch(m, (const int *const *)c->prompts, c->lens, n, max_new,
                                           c->stop, &o, max_new ? out : NULL, out_n);
    if (st != AB_OK) fail_msg("%s, max_batch %d: %s", what, max_batch, ab_last_error());
    assert_int_equal(rec.calls, n);
    assert_int_equal(rec.bad, 0);
    for (int i = 0; i < n; i++) {
        if (out_n[i] != c->want_n[i] || got_n[i] != out_n[i])
            fail_msg("%s, max_batch %d: prompt %d gave %d tokens (on_done %d), one at a time %d", what,
                     max_batch, i, out_n[i], got_n[i], c->want_n[i]);
        for (int k = 0; k < max_new; k++) {
            int want = k < c->want_n[i] ? c->want[(size_t)i * max_new + k] : -7;
            if (out[(size_t)i * max_new + k] != want)
                fail_msg("%s, max_batch %d: prompt %d token %d is %d, one at a time %d", what, max_batch,
                         i, k, out[(size_t)i * max_new + k], want);
        }
    }
    free(out);
    free(out_n);
    free(got_n);
    free(rngs);
}

/* Every setting of c's prompts (greedy to the end of the context, with a stop token, 3 tokens,
 * sampled, none) against batch sizes 1, 3, 16 (more than the AVX-512 micro-kernel's 14 rows) and
 * all prompts at once (also at 1 thread for greedy decoding). brief: the first two settings only,
 * batch sizes 3 and all (a slow model). Under valgrind: greedy and sampled, sizes 3 and all. */
static void gen_check_all(ab_model *m, gen_case *c, int V, int P, int brief, const char *what) {
    const int sizes[] = {3, c->n, 1, 16};
    const int n_sizes = brief || tu_small() ? 2 : 4, n_modes = brief ? 2 : 5;
    char label[160];
    for (int mode = 0; mode < n_modes; mode++) {
        if (tu_small() && mode != 0 && mode != 3) continue; /* under valgrind */
        int max_new = mode == 2 ? 3 : mode == 4 ? 0 : P;
        int stop = mode == 1 || mode == 3 ? gen_common_token(c, V) : -1;
        float temperature = mode == 3 ? 1.3f : 0.0f;
        gen_reference(m, c, max_new, stop, temperature);
        snprintf(label, sizeof label, "%s, %s, max_new %d, stop %d, temperature %g", what,
                 ab_isa_name(ab_get_isa()), max_new, stop, (double)temperature);
        for (int s = 0; s < n_sizes; s++) gen_check(m, c, sizes[s], label);
        if (mode == 0) {
            assert_int_equal(ab_set_threads(1), AB_OK);
            gen_check(m, c, c->n, label);
            assert_int_equal(ab_set_threads(2), AB_OK);
        }
        if (mode == 0) gen_reference(m, c, P, -1, 0.0f); /* mode 1's stop token comes from these */
    }
}

static void test_generate_batch(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT], saved = ab_get_isa();
    int n_isa = tu_isas(isas);
    /* Model A is the lab's kind of shape scaled down. Model B has d_model 256, so the MLP
     * projection's input rows are 1024 floats apart (packed, not read in place) and its k = 1024
     * is split into KC blocks. */
    const int VA = 67, PA = TU_SIZE(24, 8), VB = 40, PB = TU_SIZE(12, 6);
    static const char *names[4] = {"model A", "model A with LoRA", "model A, LoRA merged", "model B"};
    for (int k = 0; k < n_isa; k++) {
        TU_SET_ISA(isas[k]);
        for (int variant = 0; variant < 4; variant++) { /* A plain, A LoRA, A LoRA merged, B */
            int is_b = variant == 3, V = is_b ? VB : VA, P = is_b ? PB : PA;
            if (tu_small() && variant >= 2) continue; /* valgrind: memory errors, not the GEMM */
            ab_model *m = is_b ? mk_model(V, P, 1, 4, 256, 0, 0.0f, 45)
                               : mk_model(V, P, 2, 2, 32, variant ? 4 : 0, 8.0f, 43);
            ab_rng rng;
            ab_rng_seed(&rng, 11 + (uint64_t)variant, 0);
            randomize(m, &rng, is_b ? 0.08f : 0.25f);
            if (variant == 2) assert_int_equal(ab_model_lora_merge(m), AB_OK);
            gen_case c;
            memset(&c, 0, sizeof c);
            gen_prompts(&c, is_b ? TU_SIZE(8, 4) : TU_SIZE(40, 8), V, P, &rng);
            gen_reference(m, &c, P, -1, 0.0f);
            gen_check_all(m, &c, V, P, is_b, names[variant]);
            gen_free(&c);
            if (variant == 0) {
                /* 200 prompts: more than the default batch's slots (each slot serves several
                 * prompts in turn), and all at once */
                gen_prompts(&c, TU_SIZE(200, 34), V, P, &rng);
                gen_reference(m, &c, P, -1, 0.0f);
                gen_check(m, &c, 0, "model A, 200 prompts");
                gen_check(m, &c, c.n, "model A, 200 prompts");
                gen_free(&c);
            }
            ab_model_free(m);
        }
    }
    TU_SET_ISA(saved);
}

/* ab_model_decode's cache survives a batched generation; argument errors are clear and early. */
static void test_generate_batch_errors(void **state) {
    (void)state;
    const int V = 13, P = 8;
    ab_model *m = mk_model(V, P, 1, 2, 8, 0, 0.0f, 47);
    int seq[8] = {1, 2, 3, 4, 5, 6, 7, 8}, p0[3] = {1, 2, 3}, p1[2] = {4, 5};
    float lg_a[13], lg_b[13];
    assert_int_equal(ab_model_decode_reset(m), AB_OK);
    assert_int_equal(ab_model_decode(m, seq, 5, NULL), AB_OK);
    assert_int_equal(ab_model_decode(m, seq + 5, 1, lg_a), AB_OK);
    assert_int_equal(ab_model_decode_reset(m), AB_OK);
    assert_int_equal(ab_model_decode(m, seq, 5, NULL), AB_OK);
    const int *prompts[2] = {p0, p1};
    int lens[2] = {3, 2}, out[2 * 4], out_n[2] = {9, 9};
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, -1, NULL, out, out_n), AB_OK);
    assert_int_equal(out_n[0], 4);
    assert_int_equal(out_n[1], 4);
    assert_int_equal(ab_model_decode(m, seq + 5, 1, lg_b), AB_OK);
    assert_memory_equal(lg_a, lg_b, sizeof lg_a);
    /* nothing to do */
    assert_int_equal(ab_model_generate_batch(m, NULL, NULL, 0, 4, -1, NULL, NULL, NULL), AB_OK);
    out_n[0] = out_n[1] = 9;
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 0, -1, NULL, NULL, out_n), AB_OK);
    assert_true(out_n[0] == 0 && out_n[1] == 0);
    /* NULL */
    assert_int_equal(ab_model_generate_batch(NULL, prompts, lens, 2, 4, -1, NULL, out, out_n), AB_ERR_NULL);
    assert_int_equal(ab_model_generate_batch(m, NULL, lens, 2, 4, -1, NULL, out, out_n), AB_ERR_NULL);
    assert_int_equal(ab_model_generate_batch(m, prompts, NULL, 2, 4, -1, NULL, out, out_n), AB_ERR_NULL);
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, -1, NULL, NULL, out_n), AB_ERR_NULL);
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, -1, NULL, out, NULL), AB_ERR_NULL);
    const int *holey[2] = {p0, NULL};
    out_n[0] = out_n[1] = 9;
    assert_int_equal(ab_model_generate_batch(m, holey, lens, 2, 4, -1, NULL, out, out_n), AB_ERR_NULL);
    assert_true(out_n[0] == 0 && out_n[1] == 0); /* zeroed before anything else */
    assert_non_null(strstr(ab_last_error(), "prompts[1]"));
    ab_generate_opts o;
    memset(&o, 0, sizeof o);
    o.temperature = 0.5f; /* sampling without rngs */
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, -1, &o, out, out_n), AB_ERR_NULL);
    /* shapes and values */
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, -1, 4, -1, NULL, out, out_n), AB_ERR_SHAPE);
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, -1, -1, NULL, out, out_n), AB_ERR_SHAPE);
    int bad_lens[3][2] = {{0, 2}, {3, -2}, {3, P + 1}};
    for (int k = 0; k < 3; k++)
        assert_int_equal(ab_model_generate_batch(m, prompts, bad_lens[k], 2, 4, -1, NULL, out, out_n), AB_ERR_ARG);
    int bad_ids[2][2] = {{1, -1}, {V, 0}};
    for (int k = 0; k < 2; k++) {
        const int *bp[2] = {p0, bad_ids[k]};
        assert_int_equal(ab_model_generate_batch(m, bp, lens, 2, 4, -1, NULL, out, out_n), AB_ERR_ARG);
        assert_non_null(strstr(ab_last_error(), "prompts[1]"));
    }
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, V, NULL, out, out_n), AB_ERR_ARG);
    assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, -2, NULL, out, out_n), AB_ERR_ARG);
    float bad_t[2] = {-1.0f, NAN};
    ab_rng rngs[2];
    seed_rngs(rngs, 2);
    o.rngs = rngs;
    for (int k = 0; k < 2; k++) {
        o.temperature = bad_t[k];
        assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, -1, &o, out, out_n), AB_ERR_ARG);
    }
    o.temperature = 0.0f;
    int bad_batch[2] = {-1, AB_MODEL_MAX_BATCH + 1};
    for (int k = 0; k < 2; k++) {
        o.max_batch = bad_batch[k];
        assert_int_equal(ab_model_generate_batch(m, prompts, lens, 2, 4, -1, &o, out, out_n), AB_ERR_ARG);
    }
    /* a prompt that fills the context emits one token, as ab_model_generate does */
    const int *full[1] = {seq};
    int full_len = P;
    assert_int_equal(ab_model_generate_batch(m, full, &full_len, 1, 4, -1, NULL, out, out_n), AB_OK);
    assert_int_equal(out_n[0], 1);
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* Antidote statistics                                                                              */
static void test_act_stats(void **state) {
    (void)state;
    const int V = 19, T = 6, C = 8;
    ab_model *m = mk_model(V, T, 2, 2, C, 2, 4.0f, 51);
    ab_rng rng;
    ab_rng_seed(&rng, 10, 0);
    randomize(m, &rng, 0.3f);
    tbatch tb;
    mk_batch(&tb, 3, T, V, &rng, 0);
    tb.len[0] = T, tb.len[1] = 2, tb.len[2] = 0;
    tb.b.lengths = tb.len;
    ab_linear_info li;
    assert_int_equal(ab_model_linear(m, AB_LIN_QKV, 0, &li), AB_OK);
    assert_null(li.in_sumsq);
    assert_int_equal(ab_model_act_stats_enable(m, 1), AB_OK);
    assert_int_equal(ab_model_score(m, &tb.b, NULL, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, NULL, NULL, NULL), AB_OK); /* counts too */
    assert_int_equal(ab_model_linear(m, AB_LIN_QKV, 0, &li), AB_OK);
    assert_int_equal(li.n_seq, 6);
    assert_int_equal(li.d_out, 3 * C);
    assert_int_equal(li.d_in, C);
    /* layer 0's qkv input is LN1(wte[x] + wpe[t]): recompute it for the real tokens */
    ab_tensor_info wte, wpe, lw, lb;
    assert_int_equal(ab_model_tensor_of(m, AB_T_WTE, 0, &wte), AB_OK);
    assert_int_equal(ab_model_tensor_of(m, AB_T_WPE, 0, &wpe), AB_OK);
    assert_int_equal(ab_model_tensor_of(m, AB_T_LN1_W, 0, &lw), AB_OK);
    assert_int_equal(ab_model_tensor_of(m, AB_T_LN1_B, 0, &lb), AB_OK);
    double want[8] = {0};
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < tb.len[i]; t++) {
            float x[8], y[8];
            for (int j = 0; j < C; j++)
                x[j] = wte.data[(size_t)tb.in[i * T + t] * C + j] + wpe.data[(size_t)t * C + j];
            assert_int_equal(ab_layernorm_forward(y, NULL, NULL, x, lw.data, lb.data, 1, C, 1e-5f), AB_OK);
            for (int j = 0; j < C; j++) want[j] += 2.0 * y[j] * y[j]; /* two forwards */
        }
    float got[8];
    for (int j = 0; j < C; j++) got[j] = (float)li.in_sumsq[j];
    TU_ASSERT_ERR("Antidote statistics, qkv input of layer 0", tu_max_rel_err(got, want, 8, 1e-6), 1e-5);
    /* LoRA A shares the qkv statistics; LoRA B has its own rank-wide ones */
    ab_linear_info la, lbq, fc, mp;
    assert_int_equal(ab_model_linear(m, AB_LIN_LORA_K_A, 0, &la), AB_OK);
    assert_ptr_equal(la.in_sumsq, li.in_sumsq);
    assert_int_equal(la.d_out, 2);
    assert_int_equal(ab_model_linear(m, AB_LIN_LORA_K_B, 1, &lbq), AB_OK);
    assert_int_equal(lbq.d_in, 2);
    assert_null(lbq.bias);
    assert_true(lbq.in_sumsq[0] > 0.0 && lbq.in_sumsq[1] > 0.0);
    assert_int_equal(ab_model_linear(m, AB_LIN_FC, 1, &fc), AB_OK);
    assert_int_equal(ab_model_linear(m, AB_LIN_MLP_PROJ, 1, &mp), AB_OK);
    assert_int_equal(mp.d_in, 4 * C);
    assert_true(fc.in_sumsq[3] > 0.0 && mp.in_sumsq[4 * C - 1] >= 0.0);
    ab_tensor_info fcw;
    assert_int_equal(ab_model_tensor_of(m, AB_T_FC_W, 1, &fcw), AB_OK);
    assert_ptr_equal(fc.weight, fcw.data);
    assert_int_equal(ab_model_act_stats_reset(m), AB_OK);
    assert_int_equal(ab_model_linear(m, AB_LIN_QKV, 0, &li), AB_OK);
    assert_int_equal(li.n_seq, 0);
    assert_true(li.in_sumsq[0] == 0.0);
    assert_int_equal(ab_model_act_stats_enable(m, 0), AB_OK);
    assert_int_equal(ab_model_linear(m, AB_LIN_QKV, 0, &li), AB_OK);
    assert_null(li.in_sumsq);
    assert_int_equal(ab_model_linear(m, AB_LIN_KIND_COUNT, 0, &li), AB_ERR_ARG);
    assert_int_equal(ab_model_linear(m, AB_LIN_QKV, 2, &li), AB_ERR_ARG);
    free_batch(&tb);
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* reproducibility                                                                                  */
/* N training steps (per-sample clipping included) from a fixed seed; returns the parameters. */
static float *train_steps(int n_threads, int steps, int packed, size_t *count) {
    assert_int_equal(ab_set_threads(n_threads), AB_OK);
    /* full size: N = 256 rows, so the GEMMs, GELU (N 4C), cross-entropy (N V) and, with B H = 16
     * pairs, attention run split over threads (LayerNorm at N C = 32K elements stays on one) */
    const int V = TU_SIZE(256, 32), T = TU_SIZE(64, 8), C = TU_SIZE(128, 16), B = 4;
    ab_model *m = mk_model(V, T, 2, 4, C, 4, 8.0f, 61);
    ab_rng rng;
    ab_rng_seed(&rng, 62, 0);
    tbatch tb;
    mk_batch(&tb, B, T, V, &rng, 1);
    const int lens[4] = {T, T - 3, T / 2, 2};
    if (packed) pack_batch(&tb, lens); /* 2 T + T / 2 - 1 rows */
    ab_adamw_cfg cfg = ab_adamw_default();
    cfg.weight_decay = 0.1f;
    float norms[4];
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.sample_norms = norms;
    bo.clip_norm = 0.05f;
    for (int s = 0; s < steps; s++) {
        assert_int_equal(ab_model_set_train_mode(m, s % 2 ? AB_TRAIN_LORA : AB_TRAIN_ALL), AB_OK);
        assert_int_equal(ab_model_zero_grad(m), AB_OK);
        assert_int_equal(ab_model_forward(m, &tb.b, NULL, NULL, NULL, NULL), AB_OK);
        assert_int_equal(ab_model_backward(m, s % 3 ? &bo : NULL), AB_OK);
        ab_model_view v;
        assert_int_equal(ab_model_trainable(m, &v), AB_OK);
        assert_int_equal(ab_clip_grad_norm(v.grads, v.count, 1.0f, NULL), AB_OK);
        assert_int_equal(ab_model_adamw_step(m, &cfg), AB_OK);
    }
    float *p;
    assert_int_equal(ab_model_params(m, &p, count), AB_OK);
    float *copy = tu_alloc(*count);
    memcpy(copy, p, *count * sizeof(float));
    free_batch(&tb);
    ab_model_free(m);
    return copy;
}

/* A thread of the test's own that spins until told to stop: it competes with the library's
 * threads for the CPUs, so chunks get claimed by whichever thread is running (late workers). */
static volatile int spin_stop;
static void *spin_thread(void *arg) {
    (void)arg;
    volatile unsigned long x = 0;
    while (!spin_stop) x++;
    return NULL;
}

static void test_reproducible(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    ab_isa saved = ab_get_isa();
    int steps = TU_SIZE(4, 3);
    for (int kp = 0; kp < 2 * n_isa; kp++) {
        int k = kp / 2, packed = kp % 2; /* full and packed batches */
        TU_SET_ISA(isas[k]);
        size_t n1, n2, n3, n4, n5;
        float *a = train_steps(1, steps, packed, &n1);
        float *b = train_steps(1, steps, packed, &n2);
        float *c = train_steps(2, steps, packed, &n3);
        float *d = train_steps(3, steps, packed, &n4);
        /* 2 threads while a busy thread competes for the CPUs */
        pthread_t spinner;
        spin_stop = 0;
        assert_int_equal(pthread_create(&spinner, NULL, spin_thread, NULL), 0);
        float *e = train_steps(2, steps, packed, &n5);
        spin_stop = 1;
        assert_int_equal(pthread_join(spinner, NULL), 0);
        assert_int_equal(n1, n2);
        assert_int_equal(n1, n3);
        assert_int_equal(n1, n4);
        assert_int_equal(n1, n5);
        assert_memory_equal(a, b, n1 * sizeof(float)); /* two runs */
        for (size_t i = 0; i < n1; i++) { /* 1 vs 2, 3 and contended 2 threads (+0 == -0 allowed) */
            if (!(a[i] == c[i])) fail_msg("%s%s: 1 vs 2 threads differ at %zu", ab_isa_name(isas[k]), packed ? " packed" : "", i);
            if (!(a[i] == d[i])) fail_msg("%s%s: 1 vs 3 threads differ at %zu", ab_isa_name(isas[k]), packed ? " packed" : "", i);
            if (!(a[i] == e[i]))
                fail_msg("%s%s: 1 vs 2 contended threads differ at %zu", ab_isa_name(isas[k]), packed ? " packed" : "", i);
        }
        free(a);
        free(b);
        free(c);
        free(d);
        free(e);
    }
    TU_SET_ISA(saved);
    assert_int_equal(ab_set_threads(2), AB_OK);
}

/* ------------------------------------------------------------------------------------------------ */
/* packed batches: lengths with mask 0 beyond them compute only the real tokens                     */

typedef struct packed_out {
    float loss, nll[8], ntok[8], norms[8], score_nll[8];
    float *grads, *attn_grad, *logits; /* logits: [B][T][V] gathered from either layout */
    size_t count;
} packed_out;

/* One forward + backward (norms, clipping, attn_grad; Vaccine's E when given) and a score. */
static void packed_run(ab_model *m, const tbatch *tb, const ab_batch *b, const float *E, int V,
                       int n_layer, int C, int expect_packed, packed_out *o) {
    const int B = tb->B, T = tb->T;
    ab_forward_opts fo = {E};
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.sample_norms = o->norms;
    bo.clip_norm = 0.05f;
    o->attn_grad = tu_alloc((size_t)n_layer * B * T * C);
    for (size_t i = 0; i < (size_t)n_layer * B * T * C; i++) o->attn_grad[i] = 7.0f; /* overwritten */
    bo.attn_grad = o->attn_grad;
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_forward(m, b, E ? &fo : NULL, &o->loss, o->nll, o->ntok), AB_OK);
    const float *lg;
    assert_int_equal(ab_model_logits(m, &lg), AB_OK);
    o->logits = tu_alloc((size_t)B * T * V);
    for (int i = 0, r = 0; i < B; i++) { /* packed: sequence i's real rows follow sequence i-1's */
        int n = expect_packed ? tb->len[i] : T;
        for (int t = 0; t < n; t++, r++)
            memcpy(o->logits + ((size_t)i * T + t) * V, lg + (size_t)r * V, sizeof(float) * (size_t)V);
    }
    assert_int_equal(ab_model_backward(m, &bo), AB_OK);
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    o->count = v.count;
    o->grads = tu_alloc(v.count);
    memcpy(o->grads, v.grads, v.count * sizeof(float));
    assert_int_equal(ab_model_score(m, b, NULL, o->score_nll, NULL), AB_OK);
}
static void packed_free(packed_out *o) {
    free(o->grads);
    free(o->attn_grad);
    free(o->logits);
}

static double max_abs_f(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs((double)x[i]) > m ? fabs((double)x[i]) : m;
    return m;
}

/* A packed batch (lengths, mask 0 beyond) against the same batch computed in full (lengths NULL):
 * the same loss, per-sample NLLs and token counts, logits of the real tokens, gradients,
 * per-sample norms (with clipping), Vaccine's attn_grad (zeros on the padding) and scores, for
 * both loss norms, base+LoRA and LoRA-only training, with and without Vaccine's perturbation,
 * an empty sequence and a full one; the rows really are packed (the logits' layout says so).
 * A batch whose mask is not 0 beyond its lengths is computed in full. */
static void test_packed(void **state) {
    (void)state;
    const int V = 23, T = 10, C = 16, L = 2, B = 5;
    const int lens[5] = {7, 10, 0, 3, 9};
    char what[160];
    for (int cfg = 0; cfg < 8; cfg++) {
        int sample_mean = cfg & 1, lora_only = (cfg >> 1) & 1, vaccine = (cfg >> 2) & 1;
        ab_model *m = mk_model(V, T, L, 2, C, 2, 4.0f, 81);
        ab_rng rng;
        ab_rng_seed(&rng, 82, (uint64_t)cfg);
        randomize(m, &rng, 0.3f);
        assert_int_equal(ab_model_set_train_mode(m, lora_only ? AB_TRAIN_LORA : AB_TRAIN_ALL), AB_OK);
        tbatch tb;
        mk_batch(&tb, B, T, V, &rng, 1);
        tb.b.loss_norm = sample_mean ? AB_LOSS_SAMPLE_MEAN : AB_LOSS_TOKEN_MEAN;
        pack_batch(&tb, lens);
        float *E = NULL;
        if (vaccine) {
            E = tu_alloc((size_t)L * B * T * C);
            tu_fill_uniform(E, (size_t)L * B * T * C, -0.3f, 0.3f, &rng);
        }
        packed_out p, f;
        memset(&p, 0, sizeof p), memset(&f, 0, sizeof f);
        packed_run(m, &tb, &tb.b, E, V, L, C, 1, &p);
        ab_batch full = tb.b;
        full.lengths = NULL;
        packed_run(m, &tb, &full, E, V, L, C, 0, &f);
        snprintf(what, sizeof what, "packed vs full (%s, %s%s)", sample_mean ? "sample mean" : "token mean",
                 lora_only ? "LoRA only" : "base + LoRA", vaccine ? ", Vaccine E" : "");
        double want_loss = f.loss;
        TU_ASSERT_ERR(what, tu_max_rel_err(&p.loss, &want_loss, 1, 1e-30), 1e-6);
        TU_ASSERT_ERR(what, tu_max_rel_err_f(p.nll, f.nll, B, 1e-6), 1e-6);
        TU_ASSERT_ERR(what, tu_max_rel_err_f(p.score_nll, f.score_nll, B, 1e-6), 1e-6);
        assert_memory_equal(p.ntok, f.ntok, sizeof(float) * B);
        assert_true(p.ntok[2] == 0.0f && p.nll[2] == 0.0f && p.norms[2] == 0.0f); /* the empty one */
        for (int i = 0; i < B; i++)
            for (int t = 0; t < lens[i]; t++) {
                size_t o = ((size_t)i * T + t) * V;
                TU_ASSERT_ERR(what, tu_max_rel_err_f(p.logits + o, f.logits + o, (size_t)V, 1e-6), 1e-5);
            }
        assert_int_equal(p.count, f.count);
        TU_ASSERT_ERR(what, tu_max_rel_err_f(p.grads, f.grads, p.count, 1e-3 * max_abs_f(f.grads, f.count)), 1e-4);
        TU_ASSERT_ERR(what, tu_max_rel_err_f(p.norms, f.norms, B, 1e-7), 1e-4);
        size_t seq = (size_t)T * C;
        for (int l = 0; l < L; l++)
            for (int i = 0; i < B; i++) {
                const float *pa = p.attn_grad + ((size_t)l * B + i) * seq;
                const float *fa = f.attn_grad + ((size_t)l * B + i) * seq;
                size_t n = (size_t)lens[i] * C;
                if (n) TU_ASSERT_ERR(what, tu_max_rel_err_f(pa, fa, n, 1e-3 * max_abs_f(f.attn_grad, (size_t)L * B * seq)), 1e-4);
                for (size_t j = n; j < seq; j++)
                    if (pa[j] != 0.0f || fa[j] != 0.0f) fail_msg("%s: attn_grad on the padding at %zu", what, j);
            }
        packed_free(&p), packed_free(&f);
        /* a mask that is not 0 beyond lengths: the batch is computed in full, [B][T] logits */
        tb.mask[(size_t)0 * T + T - 1] = 1.0f;
        packed_run(m, &tb, &full, E, V, L, C, 0, &f);
        packed_run(m, &tb, &tb.b, E, V, L, C, 0, &p);
        assert_memory_equal(p.logits, f.logits, sizeof(float) * (size_t)B * T * V);
        assert_memory_equal(p.grads, f.grads, sizeof(float) * p.count);
        packed_free(&p), packed_free(&f);
        free(E);
        free_batch(&tb);
        ab_model_free(m);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* a copy task: "x1 .. xk SEP" -> "x1 .. xk"; loss over the copied half                             */
static void test_copy_task(void **state) {
    (void)state;
    const int K = TU_SIZE(4, 2), V = TU_SIZE(12, 8), T = 2 * K, B = TU_SIZE(16, 8), SEP = 1;
    int steps = TU_SIZE(400, 160);
    /* Under memcheck, one thread: valgrind serialises threads, which makes every parallel call
     * wait for a time slice (thread counts are covered by test_reproducible). */
    int threads = ab_get_threads();
    if (tu_small()) assert_int_equal(ab_set_threads(1), AB_OK);
    ab_model *m = mk_model(V, T, TU_SIZE(2, 1), 2, TU_SIZE(32, 16), 0, 0.0f, 71);
    ab_rng rng;
    ab_rng_seed(&rng, 72, 0);
    int *in = (int *)calloc((size_t)B * T, sizeof(int)), *tg = (int *)calloc((size_t)B * T, sizeof(int));
    float *mask = tu_alloc((size_t)B * T), loss = 0.0f;
    assert_true(in && tg);
    ab_batch b;
    b.B = B, b.T = T, b.inputs = in, b.targets = tg, b.mask = mask, b.weights = NULL, b.lengths = NULL;
        b.loss_norm = AB_LOSS_TOKEN_MEAN;
    ab_adamw_cfg cfg = ab_adamw_default();
    cfg.lr = TU_SIZE(3e-3f, 1e-2f);
    float first = 0.0f;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < B; i++) {
            int seq[64];
            for (int k = 0; k < K; k++) seq[k] = 2 + (int)ab_rng_below(&rng, V - 2);
            seq[K] = SEP;
            for (int k = 0; k < K; k++) seq[K + 1 + k] = seq[k];
            for (int t = 0; t < T; t++) {
                in[i * T + t] = seq[t];
                tg[i * T + t] = seq[t + 1];
                mask[i * T + t] = t >= K ? 1.0f : 0.0f; /* predict the copied tokens */
            }
        }
        assert_int_equal(ab_model_zero_grad(m), AB_OK);
        assert_int_equal(ab_model_forward(m, &b, NULL, &loss, NULL, NULL), AB_OK);
        if (s == 0) first = loss;
        assert_int_equal(ab_model_backward(m, NULL), AB_OK);
        assert_int_equal(ab_model_adamw_step(m, &cfg), AB_OK);
    }
    if (getenv("AB_TEST_VERBOSE")) printf("REF copy task: loss %.4f -> %.4f after %d steps\n", first, loss, steps);
    assert_true(first > 1.5f);
    assert_true(loss < 0.05f);
    /* and greedy generation copies */
    int prompt[16], out[16], n_out;
    for (int k = 0; k < K; k++) prompt[k] = 2 + (int)ab_rng_below(&rng, V - 2);
    prompt[K] = SEP;
    assert_int_equal(ab_model_generate(m, prompt, K + 1, K, 0.0f, -1, NULL, out, &n_out), AB_OK);
    assert_int_equal(n_out, K - 1); /* context: K + 1 prompt + K - 1 outputs fill n_ctx = 2K */
    for (int k = 0; k < n_out; k++) assert_int_equal(out[k], prompt[k]);
    assert_int_equal(ab_set_threads(threads), AB_OK);
    free(in);
    free(tg);
    free(mask);
    ab_model_free(m);
}

/* ------------------------------------------------------------------------------------------------ */
/* config, API surface and error paths                                                              */
static void test_config(void **state) {
    (void)state;
    ab_model_config c = ab_model_config_default();
    assert_int_equal(ab_model_config_check(&c), AB_OK);
    ab_model *m = NULL;
    assert_int_equal(ab_model_create(&m, &c, 1), AB_OK);
    /* table: names, contiguity of the trainable segment, init statistics */
    ab_tensor_info t;
    assert_int_equal(ab_model_find_tensor(m, "h3.lora_v_b", &t), AB_OK);
    assert_int_equal(t.kind, AB_T_LORA_V_B);
    assert_int_equal(t.layer, 3);
    assert_int_equal(t.rows, 128);
    assert_int_equal(t.cols, 8);
    assert_int_equal(ab_model_find_tensor(m, "nope", &t), AB_ERR_ARG);
    assert_int_equal(ab_model_find_tensor(m, "h1.attn_proj_w", &t), AB_OK);
    double s2 = 0.0;
    for (size_t i = 0; i < t.size; i++) s2 += (double)t.data[i] * t.data[i];
    double want_std = 0.02 / sqrt(2.0 * 4);
    assert_true(fabs(sqrt(s2 / t.size) - want_std) < 0.05 * want_std); /* residual scaling */
    assert_int_equal(ab_model_find_tensor(m, "wte", &t), AB_OK);
    s2 = 0.0;
    for (size_t i = 0; i < t.size; i++) s2 += (double)t.data[i] * t.data[i];
    assert_true(fabs(sqrt(s2 / t.size) - 0.02) < 0.001);
    assert_int_equal(ab_model_find_tensor(m, "h0.ln2_w", &t), AB_OK);
    assert_true(t.data[0] == 1.0f && t.data[127] == 1.0f);
    size_t np = 0;
    for (int i = 0; i < ab_model_n_tensors(m); i++) {
        assert_int_equal(ab_model_tensor(m, i, &t), AB_OK);
        assert_true(t.offset % 16 == 0);
        np += t.size;
    }
    assert_int_equal(np, ab_model_n_params(m));
    /* 4 layers x (12 d^2 + 13 d) + (512 + 64) d + 2 d + LoRA 4 x 6 x 8 x 128 */
    assert_int_equal(np, (size_t)4 * (12 * 128 * 128 + 13 * 128) + (512 + 64) * 128 + 256 + 4 * 6 * 8 * 128);
    assert_int_equal(ab_model_tensor(m, -1, &t), AB_ERR_ARG);
    assert_int_equal(ab_model_tensor(m, ab_model_n_tensors(m), &t), AB_ERR_ARG);
    assert_int_equal(ab_model_tensor_of(m, AB_T_QKV_W, 4, &t), AB_ERR_ARG);
    assert_int_equal(ab_model_tensor_of(m, AB_T_KIND_COUNT, 0, &t), AB_ERR_ARG);
    assert_int_equal(ab_model_tensor_of(m, AB_T_LNF_B, 17, &t), AB_OK); /* layer ignored */
    /* same seed, same weights; another seed, other weights */
    ab_model *m2 = NULL, *m3 = NULL;
    assert_int_equal(ab_model_create(&m2, &c, 1), AB_OK);
    assert_int_equal(ab_model_create(&m3, &c, 2), AB_OK);
    float *p1, *p2, *p3;
    size_t n1, n2, n3;
    assert_int_equal(ab_model_params(m, &p1, &n1), AB_OK);
    assert_int_equal(ab_model_params(m2, &p2, &n2), AB_OK);
    assert_int_equal(ab_model_params(m3, &p3, &n3), AB_OK);
    assert_memory_equal(p1, p2, n1 * sizeof(float));
    assert_true(memcmp(p1, p3, n1 * sizeof(float)) != 0);
    ab_model_memory mem;
    assert_int_equal(ab_model_memory_usage(m, &mem), AB_OK);
    assert_int_equal(mem.params, n1 * sizeof(float));
    assert_int_equal(mem.grads, 0); /* allocated on first use */
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    assert_int_equal(v.count, n1);
    assert_int_equal(ab_model_memory_usage(m, &mem), AB_OK);
    assert_int_equal(mem.moments, 2 * n1 * sizeof(float));
    ab_model_free(m2);
    ab_model_free(m3);
    ab_model_free(m);
    ab_model_free(NULL);
    /* invalid configurations */
    const struct { int field; int value; } bad[] = {
        {0, 0}, {0, -3}, {0, (1 << 24) + 1}, {1, 0}, {1, 1 << 20}, {2, 0}, {2, 1 << 30},
        {3, 0}, {3, 3}, {3, 256}, {4, 0}, {4, -128}, {4, 1 << 20}, {5, -1}, {5, 129}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ab_model_config b = ab_model_config_default();
        int *f[6] = {&b.n_vocab, &b.n_ctx, &b.n_layer, &b.n_head, &b.d_model, &b.lora_rank};
        *f[bad[k].field] = bad[k].value;
        assert_int_equal(ab_model_config_check(&b), AB_ERR_ARG);
        m = (ab_model *)&b; /* must be reset to NULL on failure */
        assert_int_equal(ab_model_create(&m, &b, 1), AB_ERR_ARG);
        assert_null(m);
        assert_true(strlen(ab_last_error()) > 10);
    }
    ab_model_config b = ab_model_config_default();
    b.lora_alpha = NAN;
    assert_int_equal(ab_model_config_check(&b), AB_ERR_ARG);
    b.lora_alpha = 0.0f;
    assert_int_equal(ab_model_config_check(&b), AB_ERR_ARG);
    b.lora_rank = 0;
    assert_int_equal(ab_model_config_check(&b), AB_OK); /* alpha unused without LoRA */
    b = ab_model_config_default();
    b.n_vocab = 1 << 24, b.d_model = 1 << 12, b.n_head = 1; /* 2^36 parameters: over the limit */
    assert_int_equal(ab_model_config_check(&b), AB_ERR_ARG);
    assert_non_null(strstr(ab_last_error(), "parameters"));
    assert_int_equal(ab_model_config_check(NULL), AB_ERR_NULL);
    assert_int_equal(ab_model_create(NULL, &c, 1), AB_ERR_NULL);
    assert_int_equal(ab_model_create(&m, NULL, 1), AB_ERR_NULL);
}

static void test_errors(void **state) {
    (void)state;
    ab_model *m = mk_model(13, 8, 1, 2, 8, 0, 0.0f, 81);
    ab_rng rng;
    ab_rng_seed(&rng, 82, 0);
    tbatch tb;
    mk_batch(&tb, 2, 8, 13, &rng, 1);
    float loss;
    /* backward before any forward */
    assert_int_equal(ab_model_backward(m, NULL), AB_ERR_STATE);
    const float *lg;
    assert_int_equal(ab_model_logits(m, &lg), AB_ERR_STATE);
    assert_int_equal(ab_model_forward(NULL, &tb.b, NULL, &loss, NULL, NULL), AB_ERR_NULL);
    assert_int_equal(ab_model_forward(m, NULL, NULL, &loss, NULL, NULL), AB_ERR_NULL);
    ab_batch b = tb.b;
    b.inputs = NULL;
    assert_int_equal(ab_model_forward(m, &b, NULL, &loss, NULL, NULL), AB_ERR_NULL);
    b = tb.b, b.targets = NULL;
    assert_int_equal(ab_model_score(m, &b, &loss, NULL, NULL), AB_ERR_NULL);
    b = tb.b, b.mask = NULL;
    assert_int_equal(ab_model_forward(m, &b, NULL, &loss, NULL, NULL), AB_ERR_NULL);
    b = tb.b, b.T = 9; /* > n_ctx */
    assert_int_equal(ab_model_forward(m, &b, NULL, &loss, NULL, NULL), AB_ERR_SHAPE);
    b = tb.b, b.T = 0;
    assert_int_equal(ab_model_forward(m, &b, NULL, &loss, NULL, NULL), AB_ERR_SHAPE);
    b = tb.b, b.B = 0;
    assert_int_equal(ab_model_score(m, &b, &loss, NULL, NULL), AB_ERR_SHAPE);
    tb.in[3] = 13; /* token >= vocab */
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_ERR_ARG);
    assert_non_null(strstr(ab_last_error(), "inputs[0][3]"));
    tb.in[3] = -1;
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_ERR_ARG);
    tb.in[3] = 0;
    tb.tg[5] = 99; /* target out of range where the mask is on */
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_ERR_ARG);
    tb.tg[5] = 1;
    tb.tg[0] = -1; /* ... and allowed where it is off (position 0 is prompt) */
    assert_true(tb.mask[0] == 0.0f);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_OK);
    tb.mask[4] = NAN;
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_ERR_NAN);
    tb.mask[4] = -1.0f;
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_ERR_ARG);
    tb.mask[4] = 1.0f;
    tb.w[1] = INFINITY;
    assert_int_equal(ab_model_score(m, &tb.b, &loss, NULL, NULL), AB_ERR_NAN);
    tb.w[1] = -0.5f;
    assert_int_equal(ab_model_score(m, &tb.b, &loss, NULL, NULL), AB_ERR_ARG);
    tb.w[1] = 1.0f;
    tb.b.lengths = tb.len;
    tb.len[0] = 9;
    assert_int_equal(ab_model_score(m, &tb.b, &loss, NULL, NULL), AB_ERR_ARG);
    tb.b.lengths = NULL;
    /* NaN in the Vaccine perturbation, and NaN weights making the loss non-finite */
    float *E = tu_alloc((size_t)2 * 8 * 8);
    E[17] = NAN;
    ab_forward_opts fo;
    fo.attn_perturb = E;
    assert_int_equal(ab_model_forward(m, &tb.b, &fo, &loss, NULL, NULL), AB_ERR_NAN);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_backward(m, NULL), AB_OK);
    ab_tensor_info w;
    assert_int_equal(ab_model_tensor_of(m, AB_T_FC_W, 0, &w), AB_OK);
    float keep = w.data[3];
    w.data[3] = NAN;
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_ERR_NAN);
    assert_int_equal(ab_model_backward(m, NULL), AB_ERR_STATE); /* the failed forward is not kept */
    w.data[3] = keep;
    /* backward options */
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, &loss, NULL, NULL), AB_OK);
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.clip_norm = -1.0f;
    assert_int_equal(ab_model_backward(m, &bo), AB_ERR_ARG);
    bo.clip_norm = NAN;
    assert_int_equal(ab_model_backward(m, &bo), AB_ERR_ARG);
    bo.clip_norm = 0.0f;
    bo.psnorm_method = (ab_psnorm_method)7;
    assert_int_equal(ab_model_backward(m, &bo), AB_ERR_ARG);
    /* the optimiser step invalidates the stored forward */
    ab_adamw_cfg cfg = ab_adamw_default();
    assert_int_equal(ab_model_adamw_step(m, &cfg), AB_OK);
    assert_int_equal(ab_model_backward(m, NULL), AB_ERR_STATE);
    cfg.beta1 = 1.5f;
    assert_int_equal(ab_model_adamw_step(m, &cfg), AB_ERR_ARG);
    assert_int_equal(ab_model_reset_optimizer(m), AB_OK);
    /* modes, LoRA on a model without it */
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_LORA), AB_ERR_ARG);
    assert_int_equal(ab_model_set_train_mode(m, (ab_train_mode)9), AB_ERR_ARG);
    assert_int_equal(ab_model_get_train_mode(m), AB_TRAIN_ALL);
    assert_int_equal(ab_model_lora_merge(m), AB_ERR_STATE);
    assert_int_equal(ab_model_lora_init(m, &rng), AB_ERR_STATE);
    ab_linear_info li;
    assert_int_equal(ab_model_linear(m, AB_LIN_LORA_Q_B, 0, &li), AB_ERR_ARG);
    /* decoding and generation */
    int toks[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, out[10], n_out;
    assert_int_equal(ab_model_decode(m, toks, 9, NULL), AB_ERR_ARG);
    assert_int_equal(ab_model_decode(m, toks, 0, NULL), AB_ERR_SHAPE);
    assert_int_equal(ab_model_decode(m, NULL, 1, NULL), AB_ERR_NULL);
    toks[2] = 13;
    assert_int_equal(ab_model_decode(m, toks, 3, NULL), AB_ERR_ARG);
    toks[2] = 3;
    assert_int_equal(ab_model_generate(m, toks, 3, 2, 0.5f, -1, NULL, out, &n_out), AB_ERR_NULL);
    assert_int_equal(ab_model_generate(m, toks, 3, 2, -1.0f, -1, &rng, out, &n_out), AB_ERR_ARG);
    assert_int_equal(ab_model_generate(m, toks, 9, 2, 0.0f, -1, NULL, out, &n_out), AB_ERR_ARG);
    assert_int_equal(ab_model_generate(m, toks, 3, 2, 0.0f, 13, NULL, out, &n_out), AB_ERR_ARG);
    assert_int_equal(ab_model_generate(m, toks, 3, 0, 0.0f, -1, NULL, NULL, &n_out), AB_OK);
    assert_int_equal(n_out, 0);
    /* profiling: names, and a clock that counts calls */
    assert_string_equal(ab_prof_name(AB_PROF_MATMUL), "matmul");
    assert_string_equal(ab_prof_name(AB_PROF_COUNT), "unknown");
    double sec[AB_PROF_COUNT];
    assert_int_equal(ab_model_profile(m, sec), AB_OK);
    for (int i = 0; i < AB_PROF_COUNT; i++) assert_true(sec[i] == 0.0);
    free(E);
    free_batch(&tb);
    ab_model_free(m);
}

static double fake_clock_value = 0.0;
static double fake_clock(void) { return fake_clock_value += 1.0; }

static void test_profile(void **state) {
    (void)state;
    ab_model *m = mk_model(13, 8, 1, 2, 8, 2, 2.0f, 91);
    ab_rng rng;
    ab_rng_seed(&rng, 92, 0);
    tbatch tb;
    mk_batch(&tb, 2, 8, 13, &rng, 0);
    assert_int_equal(ab_model_set_clock(m, fake_clock), AB_OK);
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, NULL, NULL, NULL), AB_OK);
    float norms[2];
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.sample_norms = norms;
    assert_int_equal(ab_model_backward(m, &bo), AB_OK);
    ab_adamw_cfg cfg = ab_adamw_default();
    assert_int_equal(ab_model_adamw_step(m, &cfg), AB_OK);
    double sec[AB_PROF_COUNT];
    assert_int_equal(ab_model_profile(m, sec), AB_OK);
    for (int i = 0; i < AB_PROF_COUNT; i++) assert_true(sec[i] >= 1.0); /* every kind was timed */
    assert_int_equal(ab_model_profile_reset(m), AB_OK);
    assert_int_equal(ab_model_set_clock(m, NULL), AB_OK);
    assert_int_equal(ab_model_forward(m, &tb.b, NULL, NULL, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_profile(m, sec), AB_OK);
    for (int i = 0; i < AB_PROF_COUNT; i++) assert_true(sec[i] == 0.0);
    ab_model_memory mem;
    assert_int_equal(ab_model_memory_usage(m, &mem), AB_OK);
    assert_true(mem.acts > 0 && mem.grad_acts > 0 && mem.grads > 0);
    free_batch(&tb);
    ab_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_gradcheck_no_lora),
        cmocka_unit_test(test_gradcheck_lora),
        cmocka_unit_test(test_psnorm),
        cmocka_unit_test(test_weights),
        cmocka_unit_test(test_lora_merge),
        cmocka_unit_test(test_kv_cache),
        cmocka_unit_test(test_generate_batch),
        cmocka_unit_test(test_generate_batch_errors),
        cmocka_unit_test(test_act_stats),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_packed),
        cmocka_unit_test(test_copy_task),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_profile),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Join the library's worker threads: alive at exit, their thread-local blocks would show up
     * as "possibly lost" under valgrind --leak-check=full. */
    ab_set_threads(1);
    return failed;
}
