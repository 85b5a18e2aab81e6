/* antibody_defence.h - v0.3.2 - the defences of antibody.h on a model - public domain / MIT
 *
 * Alignment (SFT, Booster, Vaccine, Antibody's flatness-regularised alignment), fine-tuning (SFT,
 * Lisa, Antibody's per-sample weighting) and post-fine-tuning (Antidote pruning) on the model of
 * antibody_gpt.h. ALGORITHMS.md is the specification; each function names the step it implements.
 * Written against the model API and a generic batch (ab_batch: tokens, targets, mask, per-sample
 * weights): no vocabulary, no data format, no judge. What goes into the batches (alignment data,
 * harmful samples, their refusal views) is the caller's; examples/lab/ is one such caller.
 * The array-level primitives (ab_antibody_weights, ab_antibody_lambda, ab_cosine, the Antidote
 * masks, ab_proximal_grad, ab_sam_step) are in the core, antibody.h.
 *
 * USING IT
 *   #include "antibody.h"
 *   #include "antibody_gpt.h"
 *   #include "antibody_defence.h"
 *   In exactly one file define ANTIBODY_DEFENCE_IMPLEMENTATION (or ANTIBODY_IMPLEMENTATION) first.
 *
 * API
 *   trainer     ab_trainer_create ab_trainer_free
 *   stage 1     ab_align_default ab_align_method_name ab_align_step ab_harmful_sharpness
 *   stage 2     ab_ft_default ab_ft_method_name ab_finetune_phase ab_finetune_step
 *   stage 3     ab_antidote_prune
 *
 * MODEL-LEVEL STEPS share an ab_trainer (scratch of the size of the trainable view, Antibody's
 * lambda average, Lisa's schedule and snapshots). The trainable view is fixed when the trainer is
 * created: changing the train mode afterwards is AB_ERR_STATE. Each step leaves the model's
 * gradient buffer holding whatever it last computed (not meaningful to the caller).
 *   ab_align_step       one alignment step; batches: align (harmful prompt -> refusal, plus benign
 *                       samples), harmful (harmful prompt -> harmful answer), refusal_view (the
 *                       harmful batch's prompts -> refusals). SFT and Vaccine read align only;
 *                       Booster align + harmful; Antibody all three. Passes per step: SFT 1,
 *                       Vaccine 2, Booster 3, Antibody 4 (forward + backward each).
 *   ab_finetune_step    one fine-tuning step on a user batch (SFT, Lisa, Antibody). Antibody also
 *                       needs refusal_view (same prompts, refusal responses) and trains on
 *                       sum_i w_i l_i, the per-sample MEAN losses weighted (AB_LOSS_SAMPLE_MEAN);
 *                       SFT and Lisa use the batch's own loss_norm (the token mean by default).
 *                       is_harmful (may be NULL) only feeds the log, never the weighting. Lisa alternates states:
 *                       ab_finetune_phase says whether the next step wants a user batch or an
 *                       alignment batch.
 *   ab_harmful_sharpness  h(theta) - h(theta') for a harmful batch, theta' the simulated attack.
 *   ab_antidote_prune   masks every target layer from the activation statistics collected by
 *                       ab_model_act_stats_enable + forwards over calibration data (harmful prompt +
 *                       harmful answer), then applies all masks; with rng != NULL, random masks of
 *                       the same density instead (the control). */
#ifndef ANTIBODY_DEFENCE_H
#define ANTIBODY_DEFENCE_H
#if !defined(ANTIBODY_H) || !defined(ANTIBODY_GPT_H)
#error "antibody_defence.h works on the model: #include \"antibody.h\" and \"antibody_gpt.h\" before it"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* --- stage 1: alignment ------------------------------------------------------------------------ */
typedef enum ab_align_method {
    AB_ALIGN_SFT = 0, /* plain SFT on the alignment set */
    AB_ALIGN_BOOSTER, /* g_f + lambda (g_h - g_h'), constant lambda = s booster_lambda, no refusal term */
    AB_ALIGN_VACCINE, /* gradient at hidden states perturbed by rho G_l / ||(||G_1||..||G_L||)|| */
    AB_ALIGN_ANTIBODY, /* g_f + lambda_t (g_h - g_h') + lambda2 g_ref', lambda_t the EMA of
                          s max(0, eta - cos(g_f, g_diff)) */
    AB_ALIGN_COUNT
} ab_align_method;
typedef struct ab_align_cfg {
    ab_align_method method;
    float alpha;          /* simulated attack step (Booster, Antibody); 0.1 */
    float eta;            /* Antibody: lambda_raw = s max(0, eta - cos); 5 (the paper's shape) */
    float strength;       /* s: scales Antibody's lambda_raw and Booster's lambda; 1 at LLM scale,
                             chosen on a small model by the scaling rule of ALGORITHMS.md */
    float lambda_decay;   /* Antibody: EMA of lambda; 0.99 */
    float lambda2;        /* Antibody: weight of the refusal term at theta'; 0.05 */
    float booster_lambda; /* Booster: constant lambda = strength * booster_lambda; 5 */
    float vaccine_rho;    /* Vaccine: perturbation radius; 5 */
    float clip;           /* global gradient-norm clip; 1.0; 0 = none */
    ab_adamw_cfg adamw;   /* lr 5e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.1 */
} ab_align_cfg;
ABDEF ab_align_cfg ab_align_default(ab_align_method method);
ABDEF const char *ab_align_method_name(ab_align_method method); /* "sft", "booster", ... */
typedef struct ab_align_log {
    float loss;           /* f(theta), the alignment batch loss */
    float harmful_loss;   /* h(theta) (Booster, Antibody; else NaN) */
    float attacked_loss;  /* h(theta') after the simulated attack (Booster, Antibody; else NaN) */
    float sharpness;      /* h(theta) - h(theta') (Booster, Antibody; else NaN) */
    float refusal_loss;   /* r(theta') (Antibody; else NaN) */
    float cos;            /* cos(g_f, g_diff) (Antibody; else NaN) */
    float lambda;         /* lambda used (Booster constant, Antibody lambda_t; else 0) */
    float grad_norm;      /* norm of the combined gradient before clipping */
} ab_align_log;

typedef struct ab_trainer ab_trainer; /* opaque */
ABDEF ab_status ab_trainer_create(ab_trainer **out, ab_model *model);
ABDEF void ab_trainer_free(ab_trainer *trainer); /* NULL is a no-op */
ABDEF ab_status ab_align_step(ab_trainer *trainer, const ab_align_cfg *cfg, const ab_batch *align,
                              const ab_batch *harmful, const ab_batch *refusal_view,
                              ab_align_log *log);
/* theta' = theta - alpha g_h / (||g_h|| + AB_SAM_EPS); theta is restored bit-exact afterwards. */
ABDEF ab_status ab_harmful_sharpness(ab_trainer *trainer, const ab_batch *harmful, float alpha,
                                     float *h, float *h_attacked);

/* --- stage 2: fine-tuning ---------------------------------------------------------------------- */
typedef enum ab_ft_method {
    AB_FT_SFT = 0,  /* plain SFT on the user data */
    AB_FT_LISA,     /* alternating alignment / user states with proximal terms */
    AB_FT_ANTIBODY, /* per-sample weights softmax((q_i - c_i) / tau) on per-sample mean losses */
    AB_FT_COUNT
} ab_ft_method;
typedef enum ab_ft_phase { AB_PHASE_USER = 0, AB_PHASE_ALIGN = 1 } ab_ft_phase;
typedef struct ab_ft_cfg {
    ab_ft_method method;
    float tau;            /* Antibody temperature; 1 */
    int lisa_align_steps; /* Lisa: K_a alignment steps per cycle; 100 (scale to the run) */
    int lisa_user_steps;  /* Lisa: K_f user steps per cycle; 900 */
    float lisa_rho;       /* Lisa: proximal strength; 1 */
    int lisa_prox_start;  /* Lisa: steps before the proximal term switches on (10% of the run) */
    float clip;           /* global gradient-norm clip; 1.0; 0 = none */
    int sample_norms;     /* 1: per-sample gradient norms for the log (harmful influence); 1 */
    ab_adamw_cfg adamw;   /* lr 1e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.1 */
} ab_ft_cfg;
ABDEF ab_ft_cfg ab_ft_default(ab_ft_method method);
ABDEF const char *ab_ft_method_name(ab_ft_method method); /* "sft", "lisa", "antibody" */
typedef struct ab_ft_log {
    ab_ft_phase phase;     /* what this step trained on */
    float loss;            /* the (weighted) batch loss */
    float weight_harmful;  /* mean normalised weight of the harmful samples (weights sum to 1;
                              NaN if the batch has none or is_harmful is NULL); SFT: 1/B */
    float weight_benign;   /* same for the others */
    float harmful_influence; /* sum of harmful samples' gradient norms / sum of all (NaN without
                                sample_norms, is_harmful, or in an alignment step) */
    float prox_penalty;    /* Lisa: rho/2 ||theta - anchor||^2 when active, else 0 */
    float grad_norm;       /* before clipping */
} ab_ft_log;
ABDEF ab_ft_phase ab_finetune_phase(const ab_trainer *trainer, const ab_ft_cfg *cfg);
ABDEF ab_status ab_finetune_step(ab_trainer *trainer, const ab_ft_cfg *cfg, const ab_batch *batch,
                                 const ab_batch *refusal_view, const unsigned char *is_harmful,
                                 ab_ft_log *log);

/* --- stage 3: Antidote ------------------------------------------------------------------------- */
typedef enum ab_prune_target {
    AB_PRUNE_AUTO = 0, /* LoRA matrices if the model trains them (train mode AB_TRAIN_LORA,
                          adapters unmerged: LoRA fine-tuning), else the q/k/v weights */
    AB_PRUNE_QKV,      /* the fused q/k/v weight of every block */
    AB_PRUNE_LORA,     /* every LoRA A and B (unmerged) */
    AB_PRUNE_LINEAR    /* every base linear layer: qkv, attn_proj, fc, mlp_proj */
} ab_prune_target;
ABDEF ab_status ab_antidote_prune(ab_model *model, float alpha, ab_prune_target target,
                                  ab_rng *random_control, size_t *n_pruned);


#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_DEFENCE_H */

/* ============================================================================================== */
/*                                        IMPLEMENTATION                                          */
/* ============================================================================================== */
#if defined(ANTIBODY_DEFENCE_IMPLEMENTATION) || defined(ANTIBODY_IMPLEMENTATION)
#ifndef ANTIBODY_DEFENCE_IMPLEMENTATION_DONE
#define ANTIBODY_DEFENCE_IMPLEMENTATION_DONE

#include <math.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- the trainer ------------------------------------------------------------------------------- */
struct ab_trainer {
    ab_model *model;
    ab_train_mode mode;
    size_t n;                      /* trainable floats */
    float *saved, *g_a, *g_b;      /* theta copy; two gradient stores */
    float *anchor[2];              /* Lisa: snapshot at the end of the last user / align state */
    float *perturb;                /* Vaccine: [L][B][T][C] */
    size_t perturb_cap;
    float *w, *c, *q, *norms;      /* per-sample weights, NLLs, gradient norms */
    int cap_B;
    ab_lambda_ema lambda;
    long ft_step;                  /* fine-tuning steps taken (Lisa's schedule) */
};

ABDEF ab_status ab_trainer_create(ab_trainer **out, ab_model *model) {
    AB_CHECK_PTR(out);
    *out = NULL;
    AB_CHECK_PTR(model);
    ab_model_view v;
    AB_TRY(ab_model_trainable(model, &v));
    ab_trainer *t = (ab_trainer *)ab_aligned_alloc(sizeof *t);
    if (!t) return ab_fail(AB_ERR_ALLOC, "ab_trainer_create: trainer");
    memset(t, 0, sizeof *t);
    t->model = model;
    t->mode = ab_model_get_train_mode(model);
    t->n = v.count;
    t->saved = (float *)ab_aligned_alloc(v.count * sizeof(float));
    t->g_a = (float *)ab_aligned_alloc(v.count * sizeof(float));
    t->g_b = (float *)ab_aligned_alloc(v.count * sizeof(float));
    if (!t->saved || !t->g_a || !t->g_b) {
        ab_trainer_free(t);
        return ab_fail(AB_ERR_ALLOC, "ab_trainer_create: 3 x %zu floats of scratch", v.count);
    }
    *out = t;
    return AB_OK;
}

ABDEF void ab_trainer_free(ab_trainer *t) {
    if (!t) return;
    ab_aligned_free(t->saved);
    ab_aligned_free(t->g_a);
    ab_aligned_free(t->g_b);
    ab_aligned_free(t->anchor[0]);
    ab_aligned_free(t->anchor[1]);
    ab_aligned_free(t->perturb);
    ab_aligned_free(t->w);
    ab_aligned_free(t->c);
    ab_aligned_free(t->q);
    ab_aligned_free(t->norms);
    ab_aligned_free(t);
}

/* The trainable view, checked against the one the trainer was made for. */
static ab_status ab__trainer_view(ab_trainer *t, ab_model_view *v, const char *fn) {
    AB_TRY(ab_model_trainable(t->model, v));
    if (ab_model_get_train_mode(t->model) != t->mode || v->count != t->n)
        return ab_fail(AB_ERR_STATE, "%s: the model's train mode changed since ab_trainer_create", fn);
    return AB_OK;
}

static ab_status ab__trainer_samples(ab_trainer *t, int B) {
    if (B <= t->cap_B) return AB_OK;
    float **bufs[4] = {&t->w, &t->c, &t->q, &t->norms};
    for (int i = 0; i < 4; i++) {
        ab_aligned_free(*bufs[i]);
        *bufs[i] = (float *)ab_aligned_alloc((size_t)B * sizeof(float));
        if (!*bufs[i]) {
            t->cap_B = 0;
            return ab_fail(AB_ERR_ALLOC, "ab_trainer: %d per-sample values", B);
        }
    }
    t->cap_B = B;
    return AB_OK;
}

/* zero_grad, forward, backward: the gradient of one batch loss lands in the model's buffer. */
static ab_status ab__grad_of(ab_model *m, const ab_batch *b, const ab_forward_opts *fo,
                             const ab_backward_opts *bo, float *loss) {
    AB_TRY(ab_model_zero_grad(m));
    AB_TRY(ab_model_forward(m, b, fo, loss, NULL, NULL));
    return ab_model_backward(m, bo);
}

static void ab__axpy(float *y, float a, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* Clip the combined gradient (if clip > 0) and take one AdamW step. */
static ab_status ab__apply_update(ab_model *m, const ab_model_view *v, float clip,
                                  const ab_adamw_cfg *adamw, float *grad_norm) {
    float norm = 0.0f;
    if (clip > 0.0f) AB_TRY(ab_clip_grad_norm(v->grads, v->count, clip, &norm));
    else AB_TRY(ab_l2_norm(v->grads, v->count, &norm));
    if (!isfinite(norm)) return ab_fail(AB_ERR_NAN, "training step: the gradient is not finite");
    if (grad_norm) *grad_norm = norm;
    return ab_model_adamw_step(m, adamw);
}

static const char *const ab__align_names[AB_ALIGN_COUNT] = {"sft", "booster", "vaccine", "antibody"};
ABDEF const char *ab_align_method_name(ab_align_method m) {
    return (int)m >= 0 && m < AB_ALIGN_COUNT ? ab__align_names[m] : "?";
}

ABDEF ab_align_cfg ab_align_default(ab_align_method method) {
    ab_align_cfg c;
    c.method = method;
    c.alpha = 0.1f;
    c.eta = 5.0f;
    c.strength = 1.0f;
    c.lambda_decay = 0.99f;
    c.lambda2 = 0.05f;
    c.booster_lambda = 5.0f;
    c.vaccine_rho = 5.0f;
    c.clip = 1.0f;
    c.adamw = ab_adamw_default();
    c.adamw.lr = 5e-4f;
    c.adamw.weight_decay = 0.1f;
    return c;
}

static ab_status ab__check_align_cfg(const ab_align_cfg *c) {
    if ((int)c->method < 0 || c->method >= AB_ALIGN_COUNT)
        return ab_fail(AB_ERR_ARG, "ab_align_step: unknown method %d", (int)c->method);
    const float v[8] = {c->alpha, c->eta, c->lambda_decay, c->lambda2, c->booster_lambda,
                        c->vaccine_rho, c->clip, c->strength};
    static const char *const names[8] = {"alpha", "eta", "lambda_decay", "lambda2", "booster_lambda",
                                         "vaccine_rho", "clip", "strength"};
    for (int i = 0; i < 8; i++)
        if (!isfinite(v[i]) || (i != 1 && v[i] < 0.0f))
            return ab_fail(AB_ERR_ARG, "ab_align_step: %s = %g must be finite%s", names[i], (double)v[i],
                            i != 1 ? " and >= 0" : "");
    if (c->lambda_decay > 1.0f)
        return ab_fail(AB_ERR_ARG, "ab_align_step: lambda_decay = %g must be <= 1", (double)c->lambda_decay);
    return AB_OK;
}

/* Vaccine: E_l = rho G_l / ||(||G_1||, ..., ||G_L||)||, G_l = dLoss/dH_l, in place over G. */
static ab_status ab__vaccine_perturbation(ab_trainer *t, const ab_batch *b, float rho, float *loss) {
    ab_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    AB_TRY(ab_model_get_config(t->model, &cfg));
    size_t per_layer = (size_t)b->B * b->T * cfg.d_model, need = per_layer * cfg.n_layer;
    if (need > t->perturb_cap) {
        ab_aligned_free(t->perturb);
        t->perturb_cap = 0;
        t->perturb = (float *)ab_aligned_alloc(need * sizeof(float));
        if (!t->perturb) return ab_fail(AB_ERR_ALLOC, "ab_align_step: %zu floats of perturbation", need);
        t->perturb_cap = need;
    }
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    bo.attn_grad = t->perturb;
    AB_TRY(ab__grad_of(t->model, b, NULL, &bo, loss));
    double total; /* = sum over l of ||G_l||^2 */
    AB_TRY(ab_sumsq(t->perturb, need, &total));
    float scale = total > 0.0 ? (float)(rho / sqrt(total)) : 0.0f;
    for (size_t i = 0; i < need; i++) t->perturb[i] *= scale;
    return AB_OK;
}

ABDEF ab_status ab_align_step(ab_trainer *t, const ab_align_cfg *cfg, const ab_batch *align,
                              const ab_batch *harmful, const ab_batch *refusal_view,
                              ab_align_log *log) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(t);
    AB_CHECK_PTR(cfg);
    AB_CHECK_PTR(align);
    AB_TRY(ab__check_align_cfg(cfg));
    int sharp = cfg->method == AB_ALIGN_BOOSTER || cfg->method == AB_ALIGN_ANTIBODY;
    if (sharp) AB_CHECK_PTR(harmful);
    if (cfg->method == AB_ALIGN_ANTIBODY) AB_CHECK_PTR(refusal_view);
    ab_model_view v;
    AB_TRY(ab__trainer_view(t, &v, __func__));
    ab_model *m = t->model;
    ab_align_log lg;
    lg.harmful_loss = lg.attacked_loss = lg.sharpness = lg.refusal_loss = lg.cos = NAN;
    lg.lambda = 0.0f;
    if (sharp) {
        /* 1-3: g_h at theta, the simulated attack theta', g_diff = g_h - g_h' (kept in g_a). */
        AB_TRY(ab__grad_of(m, harmful, NULL, NULL, &lg.harmful_loss));
        memcpy(t->g_a, v.grads, t->n * sizeof(float));
        AB_TRY(ab_sam_step(v.params, t->saved, t->g_a, t->n, -cfg->alpha, NULL));
        ab_status st = ab__grad_of(m, harmful, NULL, NULL, &lg.attacked_loss);
        if (st == AB_OK) {
            for (size_t i = 0; i < t->n; i++) t->g_a[i] -= v.grads[i];
            /* 4: the refusal view at theta' (Antibody). */
            if (cfg->method == AB_ALIGN_ANTIBODY) {
                st = ab__grad_of(m, refusal_view, NULL, NULL, &lg.refusal_loss);
                if (st == AB_OK) memcpy(t->g_b, v.grads, t->n * sizeof(float));
            }
        }
        ab_sam_restore(v.params, t->saved, t->n); /* always: theta back bit-exact, even on error */
        AB_TRY(st);
        lg.sharpness = lg.harmful_loss - lg.attacked_loss;
    }
    /* 5: g_f on the alignment batch (Vaccine: at perturbed hidden states). */
    if (cfg->method == AB_ALIGN_VACCINE) {
        float clean_loss;
        AB_TRY(ab__vaccine_perturbation(t, align, cfg->vaccine_rho, &clean_loss));
        ab_forward_opts fo;
        fo.attn_perturb = t->perturb;
        AB_TRY(ab__grad_of(m, align, &fo, NULL, &lg.loss));
        lg.loss = clean_loss; /* f(theta) itself; the perturbed loss only shapes the gradient */
    } else {
        AB_TRY(ab__grad_of(m, align, NULL, NULL, &lg.loss));
    }
    /* 6-7: combine. */
    if (cfg->method == AB_ALIGN_BOOSTER) {
        lg.lambda = cfg->strength * cfg->booster_lambda;
        ab__axpy(v.grads, lg.lambda, t->g_a, t->n);
    } else if (cfg->method == AB_ALIGN_ANTIBODY) {
        AB_TRY(ab_cosine(v.grads, t->g_a, t->n, 1e-8f, &lg.cos));
        AB_TRY(ab_antibody_lambda(&t->lambda, lg.cos, cfg->eta, cfg->strength, cfg->lambda_decay, NULL));
        lg.lambda = t->lambda.value;
        ab__axpy(v.grads, lg.lambda, t->g_a, t->n);
        ab__axpy(v.grads, cfg->lambda2, t->g_b, t->n);
    }
    AB_TRY(ab__apply_update(m, &v, cfg->clip, &cfg->adamw, &lg.grad_norm));
    if (log) *log = lg;
    return AB_OK;
}

ABDEF ab_status ab_harmful_sharpness(ab_trainer *t, const ab_batch *harmful, float alpha, float *h,
                                     float *h_attacked) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(t);
    AB_CHECK_PTR(harmful);
    AB_CHECK_PTR(h);
    AB_CHECK_PTR(h_attacked);
    if (!isfinite(alpha) || alpha < 0.0f)
        return ab_fail(AB_ERR_ARG, "ab_harmful_sharpness: alpha = %g must be finite and >= 0", (double)alpha);
    ab_model_view v;
    AB_TRY(ab__trainer_view(t, &v, __func__));
    AB_TRY(ab__grad_of(t->model, harmful, NULL, NULL, h));
    AB_TRY(ab_sam_step(v.params, t->saved, v.grads, t->n, -alpha, NULL));
    ab_status st = ab_model_score(t->model, harmful, h_attacked, NULL, NULL);
    ab_sam_restore(v.params, t->saved, t->n);
    return st;
}

/* --- fine-tuning ------------------------------------------------------------------------------- */
static const char *const ab__ft_names[AB_FT_COUNT] = {"sft", "lisa", "antibody"};
ABDEF const char *ab_ft_method_name(ab_ft_method m) {
    return (int)m >= 0 && m < AB_FT_COUNT ? ab__ft_names[m] : "?";
}

ABDEF ab_ft_cfg ab_ft_default(ab_ft_method method) {
    ab_ft_cfg c;
    c.method = method;
    c.tau = 1.0f;
    c.lisa_align_steps = 100;
    c.lisa_user_steps = 900;
    c.lisa_rho = 1.0f;
    c.lisa_prox_start = 0;
    c.clip = 1.0f;
    c.sample_norms = 1;
    c.adamw = ab_adamw_default();
    c.adamw.lr = 1e-5f;
    c.adamw.weight_decay = 0.1f;
    return c;
}

/* Lisa's cycle: K_a alignment steps, then K_f user steps (its trainer starts in alignment). */
ABDEF ab_ft_phase ab_finetune_phase(const ab_trainer *t, const ab_ft_cfg *cfg) {
    if (!t || !cfg || cfg->method != AB_FT_LISA || cfg->lisa_align_steps <= 0) return AB_PHASE_USER;
    long cycle = (long)cfg->lisa_align_steps + (cfg->lisa_user_steps > 0 ? cfg->lisa_user_steps : 0);
    return t->ft_step % cycle < cfg->lisa_align_steps ? AB_PHASE_ALIGN : AB_PHASE_USER;
}

static ab_status ab__check_ft_cfg(const ab_ft_cfg *c) {
    if ((int)c->method < 0 || c->method >= AB_FT_COUNT)
        return ab_fail(AB_ERR_ARG, "ab_finetune_step: unknown method %d", (int)c->method);
    if (!isfinite(c->tau) || !(c->tau > 0.0f))
        return ab_fail(AB_ERR_ARG, "ab_finetune_step: tau = %g must be finite and > 0", (double)c->tau);
    if (!isfinite(c->clip) || c->clip < 0.0f || !isfinite(c->lisa_rho) || c->lisa_rho < 0.0f)
        return ab_fail(AB_ERR_ARG, "ab_finetune_step: clip = %g and lisa_rho = %g must be finite, >= 0",
                        (double)c->clip, (double)c->lisa_rho);
    if (c->method == AB_FT_LISA && (c->lisa_align_steps < 0 || c->lisa_user_steps < 1))
        return ab_fail(AB_ERR_ARG, "ab_finetune_step: Lisa needs lisa_align_steps >= 0 and "
                                    "lisa_user_steps >= 1 (got %d, %d)",
                        c->lisa_align_steps, c->lisa_user_steps);
    return AB_OK;
}

static float ab__mean_weight(const float *w, const unsigned char *is_harmful, int B, int want) {
    double s = 0.0;
    int n = 0;
    for (int i = 0; i < B; i++)
        if ((is_harmful[i] != 0) == want) s += w[i], n++;
    return n ? (float)(s / n) : NAN;
}

ABDEF ab_status ab_finetune_step(ab_trainer *t, const ab_ft_cfg *cfg, const ab_batch *batch,
                                 const ab_batch *refusal_view, const unsigned char *is_harmful,
                                 ab_ft_log *log) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(t);
    AB_CHECK_PTR(cfg);
    AB_CHECK_PTR(batch);
    AB_TRY(ab__check_ft_cfg(cfg));
    ab_ft_phase phase = ab_finetune_phase(t, cfg);
    int weighted = cfg->method == AB_FT_ANTIBODY && phase == AB_PHASE_USER;
    if (weighted) {
        AB_CHECK_PTR(refusal_view);
        if (refusal_view->B != batch->B)
            return ab_fail(AB_ERR_SHAPE, "ab_finetune_step: refusal_view has %d samples, the batch %d",
                            refusal_view->B, batch->B);
    }
    if (batch->B <= 0) return ab_fail(AB_ERR_SHAPE, "ab_finetune_step: batch->B = %d", batch->B);
    ab_model_view v;
    AB_TRY(ab__trainer_view(t, &v, __func__));
    AB_TRY(ab__trainer_samples(t, batch->B));
    ab_model *m = t->model;
    int B = batch->B;
    ab_ft_log lg;
    lg.phase = phase;
    lg.weight_harmful = lg.weight_benign = lg.harmful_influence = NAN;
    lg.prox_penalty = 0.0f;
    /* Antibody: c_i, q_i with the current weights and no gradient; w are constants below, and
     * the loss is sum_i w_i l_i over per-sample mean losses (ALGORITHMS.md stage 2): a sample's
     * share is its weight, whatever its length. Otherwise the batch's own loss_norm with uniform
     * weights (NULL): plain SFT bit for bit. */
    ab_batch b = *batch;
    if (weighted) {
        AB_TRY(ab_model_score(m, batch, NULL, t->c, NULL));
        AB_TRY(ab_model_score(m, refusal_view, NULL, t->q, NULL));
        AB_TRY(ab_antibody_weights(t->w, t->c, t->q, B, cfg->tau));
        b.weights = t->w;
        b.loss_norm = AB_LOSS_SAMPLE_MEAN;
    } else {
        for (int i = 0; i < B; i++) t->w[i] = 1.0f / (float)B;
        b.weights = NULL;
    }
    if (is_harmful && phase == AB_PHASE_USER) {
        lg.weight_harmful = ab__mean_weight(t->w, is_harmful, B, 1);
        lg.weight_benign = ab__mean_weight(t->w, is_harmful, B, 0);
    }
    ab_backward_opts bo;
    memset(&bo, 0, sizeof bo);
    int norms = cfg->sample_norms && is_harmful && phase == AB_PHASE_USER;
    if (norms) bo.sample_norms = t->norms;
    AB_TRY(ab__grad_of(m, &b, NULL, norms ? &bo : NULL, &lg.loss));
    if (norms) {
        double harm = 0.0, all = 0.0;
        for (int i = 0; i < B; i++) {
            all += t->norms[i];
            if (is_harmful[i]) harm += t->norms[i];
        }
        lg.harmful_influence = all > 0.0 ? (float)(harm / all) : 0.0f;
    }
    /* Lisa: proximal pull towards the other state's last snapshot, once it exists and after
     * lisa_prox_start steps. */
    if (cfg->method == AB_FT_LISA) {
        const float *anchor = t->anchor[phase == AB_PHASE_USER ? AB_PHASE_ALIGN : AB_PHASE_USER];
        if (anchor && t->ft_step >= cfg->lisa_prox_start)
            AB_TRY(ab_proximal_grad(v.grads, v.params, anchor, t->n, cfg->lisa_rho, &lg.prox_penalty));
    }
    AB_TRY(ab__apply_update(m, &v, cfg->clip, &cfg->adamw, &lg.grad_norm));
    t->ft_step++;
    /* Leaving a state: snapshot theta as that state's anchor (the other state's proximal target). */
    if (cfg->method == AB_FT_LISA && ab_finetune_phase(t, cfg) != phase) {
        if (!t->anchor[phase]) {
            t->anchor[phase] = (float *)ab_aligned_alloc(t->n * sizeof(float));
            if (!t->anchor[phase]) return ab_fail(AB_ERR_ALLOC, "ab_finetune_step: Lisa snapshot");
        }
        memcpy(t->anchor[phase], v.params, t->n * sizeof(float));
    }
    if (log) *log = lg;
    return AB_OK;
}

/* --- Antidote ---------------------------------------------------------------------------------- */
ABDEF ab_status ab_antidote_prune(ab_model *m, float alpha, ab_prune_target target, ab_rng *rng,
                                  size_t *n_pruned) {
    AB_CHECK_PTR(m);
    if (n_pruned) *n_pruned = 0;
    ab_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    AB_TRY(ab_model_get_config(m, &cfg));
    if (target == AB_PRUNE_AUTO)
        target = cfg.lora_rank > 0 && !ab_model_lora_merged(m) && ab_model_get_train_mode(m) == AB_TRAIN_LORA
                     ? AB_PRUNE_LORA
                     : AB_PRUNE_QKV;
    ab_linear_kind kinds[6];
    int n_kinds = 0;
    switch (target) {
    case AB_PRUNE_QKV: kinds[n_kinds++] = AB_LIN_QKV; break;
    case AB_PRUNE_LINEAR:
        for (int k = AB_LIN_QKV; k <= AB_LIN_MLP_PROJ; k++) kinds[n_kinds++] = (ab_linear_kind)k;
        break;
    case AB_PRUNE_LORA:
        if (cfg.lora_rank == 0 || ab_model_lora_merged(m))
            return ab_fail(AB_ERR_STATE, "ab_antidote_prune: LoRA target, but the model has %s",
                            cfg.lora_rank ? "merged adapters" : "no adapters");
        for (int k = AB_LIN_LORA_Q_A; k <= AB_LIN_LORA_V_B; k++) kinds[n_kinds++] = (ab_linear_kind)k;
        break;
    default: return ab_fail(AB_ERR_ARG, "ab_antidote_prune: unknown target %d", (int)target);
    }
    int n_layers = cfg.n_layer * n_kinds;
    ab_linear_info *info = (ab_linear_info *)ab_aligned_alloc((size_t)n_layers * sizeof *info);
    unsigned char **masks = (unsigned char **)ab_aligned_alloc((size_t)n_layers * sizeof *masks);
    if (!info || !masks) {
        ab_aligned_free(info);
        ab_aligned_free(masks);
        return ab_fail(AB_ERR_ALLOC, "ab_antidote_prune: %d layer records", n_layers);
    }
    memset(masks, 0, (size_t)n_layers * sizeof *masks);
    ab_status st = AB_OK;
    size_t total = 0;
    /* Every mask first (from the unpruned weights and the statistics), then every application. */
    for (int i = 0; i < n_layers && st == AB_OK; i++) {
        st = ab_model_linear(m, kinds[i % n_kinds], i / n_kinds, &info[i]);
        if (st != AB_OK) break;
        if (!rng && (!info[i].in_sumsq || info[i].n_seq == 0)) {
            st = ab_fail(AB_ERR_STATE, "ab_antidote_prune: no activation statistics (enable them with "
                                        "ab_model_act_stats_enable and run the calibration data first)");
            break;
        }
        size_t n = (size_t)info[i].d_out * info[i].d_in, k = 0;
        masks[i] = (unsigned char *)ab_aligned_alloc(n);
        if (!masks[i]) {
            st = ab_fail(AB_ERR_ALLOC, "ab_antidote_prune: %zu-entry mask", n);
            break;
        }
        st = rng ? ab_random_mask(masks[i], info[i].d_out, info[i].d_in, alpha, rng, &k)
                 : ab_antidote_mask(masks[i], info[i].weight, info[i].d_out, info[i].d_in,
                                    info[i].in_sumsq, alpha, &k);
        total += k;
    }
    if (st == AB_OK)
        for (int i = 0; i < n_layers; i++)
            ab_mask_apply(info[i].weight, masks[i], (size_t)info[i].d_out * info[i].d_in);
    for (int i = 0; i < n_layers; i++) ab_aligned_free(masks[i]);
    ab_aligned_free(masks);
    ab_aligned_free(info);
    if (st == AB_OK && n_pruned) *n_pruned = total;
    return st;
}


#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_DEFENCE_IMPLEMENTATION_DONE */
#endif /* ANTIBODY_DEFENCE_IMPLEMENTATION || ANTIBODY_IMPLEMENTATION */
