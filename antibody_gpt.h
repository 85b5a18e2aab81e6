/* antibody_gpt.h - v0.3.2 - the model layer of antibody.h - public domain / MIT (see antibody.h)
 *
 * A GPT-style decoder with optional LoRA on q/k/v that trains on a CPU in minutes: forward and
 * backward with per-sample weights and masks, per-sample gradient norms and clipping from one
 * backward, Vaccine and Antidote hooks, KV-cache generation (one prompt, or many batched with the
 * same tokens bit for bit), CRC-checked checkpoints (in antibody_gpt_io.h, part of this layer: this
 * file includes it at its end). Built only on the public API of the core (antibody.h), which must
 * be included first.
 *
 * USING IT
 *   #include "antibody.h"
 *   #include "antibody_gpt.h"
 *   In exactly one C or C++ file define ANTIBODY_GPT_IMPLEMENTATION (or ANTIBODY_IMPLEMENTATION,
 *   which implements every antibody header that file includes) before these includes. The same
 *   options apply as in antibody.h (ANTIBODY_STATIC; allocation goes through ab_aligned_alloc, so
 *   the core's AB_MALLOC/AB_FREE cover the model too). Keep antibody_gpt_io.h next to this file:
 *   it is included at the end, declarations and implementation, so nothing else is needed.
 *
 * API
 *   create     ab_model_config_default ab_model_config_check ab_model_create ab_model_free
 *              ab_model_get_config ab_model_n_params ab_model_memory_usage
 *   tensors    ab_model_n_tensors ab_model_tensor ab_model_find_tensor ab_model_tensor_of
 *              ab_model_params
 *   train      ab_model_set_train_mode ab_model_get_train_mode ab_model_trainable (one flat view of
 *              the trainable params, grads and AdamW moments) ab_model_zero_grad ab_model_forward
 *              ab_model_backward (per-sample norms and clipping, dLoss/dH at attention outputs)
 *              ab_model_score ab_model_logits ab_model_adamw_step ab_model_reset_optimizer
 *   LoRA       ab_model_lora_init ab_model_lora_merge ab_model_lora_unmerge ab_model_lora_merged
 *              ab_model_lora_fold
 *   hooks      ab_model_act_stats_enable ab_model_act_stats_reset ab_model_linear (Antidote)
 *   generate   ab_model_decode_reset ab_model_decode ab_model_generate           (KV cache)
 *              ab_model_generate_batch (many prompts at once: ab_model_generate's tokens, bit
 *              for bit, several times faster; a slot of KV cache per sequence)
 *   profile    ab_model_set_clock ab_model_profile ab_model_profile_reset ab_prof_name
 *   files      ab_model_checkpoint_size ab_model_save ab_model_save_mem ab_model_load
 *              ab_model_load_mem     (in antibody_gpt_io.h; format documented at AB_CKPT_VERSION)
 *
 * THE MODEL
 * Architecture: h_0 = wte[x_t] + wpe[t]; each block: h += AttnProj(CausalMHA(LN1(h)) + E_l),
 * h += MlpProj(GELU(Fc(LN2(h)))), Fc width 4*d_model; logits = LNf(h) wte^T (tied LM head).
 * LN eps AB_MODEL_LN_EPS, attention scale 1/sqrt(d_model/n_head), GELU in its tanh form.
 * LoRA (lora_rank r > 0): q += (alpha/r) B_q A_q LN1(h), likewise k and v; A is r x d_model, B is
 * d_model x r. Init: GPT-2 style (weights N(0, 0.02), residual projections attn_proj and mlp_proj
 * N(0, 0.02/sqrt(2*n_layer)), biases 0, LN weight 1), LoRA A ~ U(-1/sqrt(d), 1/sqrt(d)), B = 0.
 *
 * Memory (llm.c style): parameters, gradients, AdamW m and AdamW v are four flat buffers with the
 * same layout, [base tensors | LoRA tensors], each tensor 64-byte aligned (zero padding between
 * them, whose gradient stays 0). The trainable tensors form ONE contiguous segment (ALL: the whole
 * buffer; BASE: the base tensors; LORA: the LoRA tensors), exposed by ab_model_trainable() as one
 * view, so AdamW, clipping and SAM steps are single calls of ab_adamw_step / ab_clip_grad_norm /
 * ab_sam_step. Activations (for backward), output gradients (per layer) and scratch are flat
 * buffers too, allocated on first use and grown when a larger batch arrives.
 *
 * Loss (ALGORITHMS.md): a batch holds B sequences of T <= n_ctx tokens, per-token mask m_it
 * (1 on response tokens, 0 on prompt and padding) and per-sample weights w_i. Two normalisations
 * (ab_batch.loss_norm), with N_i = sum_t m_it and l_i = sum_t m_it CE_it / N_i (0 if N_i = 0):
 *   AB_LOSS_TOKEN_MEAN (default): Loss = sum_i w_i sum_t m_it CE_it / max(1, sum_i w_i N_i),
 *       weights NULL = all 1: the usual token-mean SFT loss, bit for bit.
 *   AB_LOSS_SAMPLE_MEAN: Loss = sum_i w_i l_i, weights NULL = all (float)(1/B): each sample weighs
 *       w_i whatever its length (Antibody's stage 2, whose weights sum to 1; a token sum would hand
 *       a long answer the share w_i N_i). Every response token of sample i gets the gradient
 *       factor w_i / N_i.
 * The per-sample outputs are each sample's mean NLL l_i and N_i, independent of w and the mode.
 *
 * Backward ACCUMULATES into the gradients of the trainable tensors only (ab_model_zero_grad first).
 * It runs in two phases: activation gradients through every layer (storing each linear layer's
 * output gradient), then all weight-gradient products. Between them, optional per-sample gradient
 * norms (ghost norms per linear layer via ab_psnorm_linear, exact per-sample sums for LayerNorm,
 * biases, wpe, and the tied wte, see ab_model_backward) and per-sample clipping, which scales each
 * sample's rows of the stored output gradients: no second backward pass.
 *
 * A model is not thread-safe; the library's own threads (ab_set_threads, ab_parallel_for) never
 * change the results: the same inputs give bitwise identical outputs for any thread count on one
 * ISA path.                                                                                      */
#ifndef ANTIBODY_GPT_H
#define ANTIBODY_GPT_H
#ifndef ANTIBODY_H
#error "antibody_gpt.h is built on the core: #include \"antibody.h\" before it"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define AB_MODEL_LN_EPS 1e-5f
#define AB_MODEL_INIT_STD 0.02f
/* Validation limits of ab_model_config_check (also applied to checkpoint headers). */
#define AB_MODEL_MAX_VOCAB (1 << 24)
#define AB_MODEL_MAX_CTX (1 << 16)
#define AB_MODEL_MAX_LAYER 1024
#define AB_MODEL_MAX_DMODEL (1 << 16)
#define AB_MODEL_MAX_PARAMS ((uint64_t)1 << 32) /* floats, padding included */
#define AB_MODEL_MAX_BATCH (1 << 20)

typedef struct ab_model_config {
    int n_vocab;      /* token ids lie in [0, n_vocab) */
    int n_ctx;        /* maximum sequence length (positions) */
    int n_layer;      /* transformer blocks, >= 1 */
    int n_head;       /* attention heads; d_model % n_head == 0 */
    int d_model;      /* residual width; the MLP is 4 * d_model wide */
    int lora_rank;    /* 0: no LoRA adapters; else 1 <= r <= d_model */
    float lora_alpha; /* LoRA scale = lora_alpha / lora_rank; finite, > 0 when lora_rank > 0 */
} ab_model_config;

typedef struct ab_model ab_model; /* opaque */

/* What backward computes gradients for (and what ab_model_trainable exposes). */
typedef enum ab_train_mode {
    AB_TRAIN_ALL = 0,  /* every tensor, LoRA adapters included when present (the default) */
    AB_TRAIN_BASE = 1, /* every tensor except the LoRA adapters */
    AB_TRAIN_LORA = 2  /* only the LoRA adapters (needs lora_rank > 0) */
} ab_train_mode;

/* Kinds of parameter tensor (one per layer for the per-layer ones). Shapes [rows][cols]. */
typedef enum ab_tensor_kind {
    AB_T_WTE = 0,    /* [vocab][d]   token embedding, also the LM head */
    AB_T_WPE,        /* [n_ctx][d]   position embedding */
    AB_T_LN1_W,      /* [d] */
    AB_T_LN1_B,      /* [d] */
    AB_T_QKV_W,      /* [3d][d]      rows 0..d-1 give q, d..2d-1 k, 2d..3d-1 v */
    AB_T_QKV_B,      /* [3d] */
    AB_T_ATTN_PROJ_W, /* [d][d] */
    AB_T_ATTN_PROJ_B, /* [d] */
    AB_T_LN2_W,      /* [d] */
    AB_T_LN2_B,      /* [d] */
    AB_T_FC_W,       /* [4d][d] */
    AB_T_FC_B,       /* [4d] */
    AB_T_MLP_PROJ_W, /* [d][4d] */
    AB_T_MLP_PROJ_B, /* [d] */
    AB_T_LNF_W,      /* [d] */
    AB_T_LNF_B,      /* [d] */
    AB_T_LORA_Q_A,   /* [r][d] */
    AB_T_LORA_Q_B,   /* [d][r] */
    AB_T_LORA_K_A,
    AB_T_LORA_K_B,
    AB_T_LORA_V_A,
    AB_T_LORA_V_B,
    AB_T_KIND_COUNT
} ab_tensor_kind;

typedef struct ab_tensor_info {
    const char *name;    /* "wte", "wpe", "h0.qkv_w", "h1.lora_v_b", "lnf_b", ... */
    ab_tensor_kind kind;
    int layer;           /* block index, -1 for wte, wpe, lnf_* */
    int rows, cols;      /* shape; vectors have rows == 1 */
    size_t offset;       /* in floats from the start of the parameter buffer */
    size_t size;         /* rows * cols */
    float *data;         /* parameters */
    float *grad;         /* gradient (NULL until the gradient buffer exists, see ab_model_zero_grad) */
    int trainable;       /* under the current ab_train_mode */
} ab_tensor_info;

/* The trainable segment: params, grads, m, v share one layout of `count` floats. */
typedef struct ab_model_view {
    float *params, *grads, *m, *v;
    size_t count;
} ab_model_view;

/* How a batch's token losses are combined (see "Loss" above). */
typedef enum ab_loss_norm {
    AB_LOSS_TOKEN_MEAN = 0, /* sum_i w_i sum_t m_it CE_it / max(1, sum_i w_i N_i) */
    AB_LOSS_SAMPLE_MEAN = 1 /* sum_i w_i l_i, l_i the mean over sample i's response tokens */
} ab_loss_norm;

/* A batch: B sequences of T tokens, row-major [B][T]. inputs: every id in [0, vocab) (use a real
 * id such as 0 for padding). targets: in [0, vocab) wherever mask != 0. mask: finite, >= 0.
 * weights: [B] finite, >= 0, or NULL (all 1 under token mean, all 1/B under sample mean).
 * lengths: [B] real tokens per sequence in [0, T], or NULL (all T). When every position from
 * lengths[i] on has mask 0 (padding), the batch is packed: only the real tokens are computed
 * (the lab's batches: forward and backward cost what the tokens cost, not B x T), with the same
 * loss and gradients up to the summation order of the sums over tokens; so the bits of a step
 * depend on its batch's composition, and are the same for any thread count. Otherwise lengths
 * only tell the activation statistics (Antidote) which tokens to skip. loss_norm: zero (a zero-initialised batch) is the token
 * mean; fields added later keep zero as the old behaviour.                                       */
typedef struct ab_batch {
    int B, T;
    const int *inputs;
    const int *targets;
    const float *mask;
    const float *weights;
    const int *lengths;
    ab_loss_norm loss_norm;
} ab_batch;

/* Forward options (NULL = none). attn_perturb (Vaccine): [n_layer][B][T][d_model], added to every
 * attention block's output (after the attention projection, before the residual add).          */
typedef struct ab_forward_opts {
    const float *attn_perturb;
} ab_forward_opts;

/* Backward options (NULL = plain backward).
 *   sample_norms [B]: written with each sample's gradient L2 norm over the trainable tensors
 *       (the per-sample gradient is sample i's share of the batch-loss gradient, so it carries
 *       w_i / max(1, sum_j w_j N_j) under the token mean, w_i / N_i under the sample mean); before
 *       clipping.
 *   clip_norm > 0: per-sample clipping: sample i's gradient is scaled by min(1, clip/||g_i||)
 *       before it is added to the gradients. 0: no clipping. Norms are computed when either is set.
 *   psnorm_method: for the linear layers (AB_PSNORM_AUTO picks ghost or materialised by cost).
 *   attn_grad [n_layer][B][T][d_model]: written with dLoss/dH_l, the gradient at every attention
 *       block's output (where attn_perturb is added), unclipped (Vaccine).                        */
typedef struct ab_backward_opts {
    float *sample_norms;
    float clip_norm;
    ab_psnorm_method psnorm_method;
    float *attn_grad;
} ab_backward_opts;

/* Linear layers, for the Antidote statistics and pruning (ab_model_linear). LoRA A matrices take
 * the qkv input, so their statistics are AB_LIN_QKV's; LoRA B's input is A's output (rank r).   */
typedef enum ab_linear_kind {
    AB_LIN_QKV = 0,    /* [3d][d], input LN1(h) */
    AB_LIN_ATTN_PROJ,  /* [d][d],  input the attention heads' output */
    AB_LIN_FC,         /* [4d][d], input LN2(h) */
    AB_LIN_MLP_PROJ,   /* [d][4d], input GELU(fc) */
    AB_LIN_LORA_Q_A, AB_LIN_LORA_Q_B, AB_LIN_LORA_K_A, AB_LIN_LORA_K_B,
    AB_LIN_LORA_V_A, AB_LIN_LORA_V_B,
    AB_LIN_KIND_COUNT
} ab_linear_kind;

typedef struct ab_linear_info {
    float *weight;        /* [d_out][d_in], row-major, in the parameter buffer (prune in place) */
    float *bias;          /* [d_out] or NULL (LoRA) */
    int d_out, d_in;
    const double *in_sumsq; /* [d_in] sum over tokens of x_j^2, NULL unless statistics are on */
    int64_t n_seq;        /* sequences accumulated into in_sumsq */
} ab_linear_info;

/* Profiling: seconds per kind of work, accumulated while a clock is set (ab_model_set_clock). */
typedef enum ab_prof_kind {
    AB_PROF_MATMUL = 0, /* every linear layer's GEMMs, LM head and LoRA included */
    AB_PROF_ATTENTION,  /* causal multi-head attention (its GEMMs and softmax) */
    AB_PROF_LAYERNORM,
    AB_PROF_GELU,
    AB_PROF_SOFTMAX_CE, /* the LM head's softmax cross-entropy, forward and backward */
    AB_PROF_ADAMW,      /* ab_model_adamw_step */
    AB_PROF_PSNORM,     /* per-sample norms and clipping */
    AB_PROF_COUNT
} ab_prof_kind;

typedef struct ab_model_memory {
    size_t params, grads, moments; /* bytes: parameters, gradients, AdamW m + v */
    size_t acts, grad_acts;        /* bytes: training activations, stored output gradients */
    size_t other;                  /* bytes: scoring and decoding scratch, KV cache, statistics */
} ab_model_memory;

/* --- config, lifetime, tensors ---------------------------------------------------------------- */
ABDEF ab_model_config ab_model_config_default(void); /* 512 vocab, 64 ctx, 4 x 128, 4 heads, LoRA 8/16 */
ABDEF ab_status ab_model_config_check(const ab_model_config *cfg); /* AB_ERR_ARG with the reason */
ABDEF ab_status ab_model_create(ab_model **out, const ab_model_config *cfg, uint64_t seed);
ABDEF void ab_model_free(ab_model *model); /* NULL is a no-op */
ABDEF ab_status ab_model_get_config(const ab_model *model, ab_model_config *cfg);
ABDEF int ab_model_n_tensors(const ab_model *model);
ABDEF ab_status ab_model_tensor(ab_model *model, int index, ab_tensor_info *info);
ABDEF ab_status ab_model_find_tensor(ab_model *model, const char *name, ab_tensor_info *info);
ABDEF ab_status ab_model_tensor_of(ab_model *model, ab_tensor_kind kind, int layer,
                                   ab_tensor_info *info);
/* The whole parameter buffer (padding included: count >= the parameter count). */
ABDEF ab_status ab_model_params(ab_model *model, float **params, size_t *count);
ABDEF size_t ab_model_n_params(const ab_model *model); /* parameters, padding excluded */
ABDEF ab_status ab_model_memory_usage(const ab_model *model, ab_model_memory *mem);

/* --- training ---------------------------------------------------------------------------------- */
ABDEF ab_status ab_model_set_train_mode(ab_model *model, ab_train_mode mode);
ABDEF ab_train_mode ab_model_get_train_mode(const ab_model *model);
/* The trainable segment (allocates gradients and moments on first use). */
ABDEF ab_status ab_model_trainable(ab_model *model, ab_model_view *view);
ABDEF ab_status ab_model_zero_grad(ab_model *model); /* zeroes the trainable gradients */
/* Training forward: stores activations for ab_model_backward. loss, sample_nll [B] and
 * sample_tokens [B] may each be NULL. AB_ERR_NAN if the loss is not finite.                      */
ABDEF ab_status ab_model_forward(ab_model *model, const ab_batch *batch, const ab_forward_opts *opts,
                                 float *loss, float *sample_nll, float *sample_tokens);
/* Backward of the last ab_model_forward (may be repeated; each call accumulates). AB_ERR_STATE if
 * there is no valid forward (none yet; ab_model_adamw_step, LoRA merge/unmerge/init since; or the
 * last forward failed) or if the LoRA adapters are merged and the train mode includes them.
 * Per-sample norms (opts): linear layers by ab_psnorm_linear (ghost or materialised), biases as
 * ||sum_t g_t||^2, LayerNorms exactly per sample, wpe as sum_t ||g_t||^2. The tied wte is used
 * twice (embedding and LM head), so its per-sample gradient is the SUM of both uses and its norm
 * is ||head||^2 + ||emb||^2 + 2 <head, emb>; the cross term is itself a ghost sum,
 * sum_{t,s} dlogits_t[x_s] (h_t . g_s), O(T^2 d) per sample, so the result is exact and nothing of
 * size vocab x d is materialised per sample, whatever the vocabulary. Parameters may only change
 * between a backward and the next forward (the weight products use the current weights).       */
ABDEF ab_status ab_model_backward(ab_model *model, const ab_backward_opts *opts);
/* Scoring forward: same outputs as ab_model_forward, keeps no activations for backward and leaves
 * those of the last training forward intact (Antibody's weights need two of these per batch).   */
ABDEF ab_status ab_model_score(ab_model *model, const ab_batch *batch, float *loss,
                               float *sample_nll, float *sample_tokens);
/* Logits of the last training forward: [B][T][vocab], or for a packed batch (see ab_batch) the
 * rows of the real tokens only, sequence after sequence: [sum_i lengths[i]][vocab]. */
ABDEF ab_status ab_model_logits(ab_model *model, const float **logits);
/* ab_adamw_step on the trainable view with the model's step counter (incremented first). */
ABDEF ab_status ab_model_adamw_step(ab_model *model, const ab_adamw_cfg *cfg);
ABDEF ab_status ab_model_reset_optimizer(ab_model *model); /* m = v = 0, step = 0 */

/* --- LoRA -------------------------------------------------------------------------------------- */
/* Re-initialise every adapter (A uniform as at creation, B = 0) from rng. Not while merged.      */
ABDEF ab_status ab_model_lora_init(ab_model *model, ab_rng *rng);
/* W_q += scale * B_q A_q (likewise k, v); the forward then skips the adapters. Training the
 * adapters while merged is refused (AB_ERR_STATE). Unmerge subtracts the same product: W returns
 * to its value up to one rounding per element.                                                  */
ABDEF ab_status ab_model_lora_merge(ab_model *model);
ABDEF ab_status ab_model_lora_unmerge(ab_model *model);
ABDEF int ab_model_lora_merged(const ab_model *model);
/* Folds the adapters into the base weights for good (W_q += scale * B_q A_q, likewise k and v,
 * unless already merged), then starts fresh adapters as ab_model_lora_init does, unmerged: how a
 * second LoRA stage (fine-tuning) starts on top of a LoRA-aligned model.                        */
ABDEF ab_status ab_model_lora_fold(ab_model *model, ab_rng *rng);

/* --- hooks for the defences -------------------------------------------------------------------- */
/* Antidote: while on, every forward (training or scoring) adds, for every linear layer, the sum
 * over tokens t < lengths[i] of x_j^2 per input feature j, and counts sequences. Turning it on
 * allocates and zeroes; ab_model_act_stats_reset zeroes.                                          */
ABDEF ab_status ab_model_act_stats_enable(ab_model *model, int on);
ABDEF ab_status ab_model_act_stats_reset(ab_model *model);
ABDEF ab_status ab_model_linear(ab_model *model, ab_linear_kind kind, int layer, ab_linear_info *info);

/* --- generation (KV cache, one sequence) ------------------------------------------------------- */
ABDEF ab_status ab_model_decode_reset(ab_model *model);
/* Appends n_tokens at positions pos..pos+n_tokens-1 (pos = tokens already cached; the total stays
 * <= n_ctx) and writes the logits of the last one to logits [vocab] (may be NULL). The cache holds
 * keys and values of the weights at the time: reset it after changing weights (merge, unmerge and
 * LoRA init reset it themselves; ab_model_generate always starts from an empty cache).           */
ABDEF ab_status ab_model_decode(ab_model *model, const int *tokens, int n_tokens, float *logits);
/* Resets the cache, feeds the prompt, then emits up to max_new tokens into out: greedy
 * (argmax, lowest id on ties) when temperature == 0, else sampled from softmax(logits/temperature)
 * with rng. Stops after emitting stop_token (>= 0; -1: none) or when prompt + output fill n_ctx.
 * *n_out gets the number of tokens written.                                                      */
ABDEF ab_status ab_model_generate(ab_model *model, const int *prompt, int n_prompt, int max_new,
                                  float temperature, int stop_token, ab_rng *rng, int *out,
                                  int *n_out);

/* --- generation, many prompts at once (a KV cache per sequence) -------------------------------- */
/* Sequences decoded together by default: at most AB_MODEL_GEN_BATCH, and no more than fit
 * AB_MODEL_GEN_KV_BYTES of KV cache (at least one). ab_generate_opts.max_batch overrides both. */
#define AB_MODEL_GEN_BATCH 32
#define AB_MODEL_GEN_KV_BYTES ((size_t)64 << 20)

/* Called as each prompt finishes, with its index and its n_tokens tokens (its row of out). */
typedef void (*ab_generate_done_fn)(void *user, int index, const int *tokens, int n_tokens);

typedef struct ab_generate_opts { /* NULL options: greedy, the default batch, no callback */
    float temperature;           /* 0: greedy (argmax, lowest id on ties); > 0: sampled */
    ab_rng *rngs;                /* [n_prompts], needed when temperature > 0: prompt i draws
                                    from rngs[i] only, so its tokens do not depend on the others */
    int max_batch;               /* sequences decoded together: 0 = the default (above), else
                                    1..AB_MODEL_MAX_BATCH */
    ab_generate_done_fn on_done; /* may be NULL */
    void *user;                  /* passed to on_done */
} ab_generate_opts;

/* ab_model_generate for n_prompts prompts at once. Row i of out [n_prompts][max_new] and
 * out_lengths[i] get what ab_model_generate(model, prompts[i], prompt_lengths[i], max_new,
 * temperature, stop_token, &rngs[i], out + i * max_new, &out_lengths[i]) gives, bit for bit, on
 * the same ISA path, for any max_batch and thread count (the rest of each row is left as it was).
 * The prompts go through B = max_batch slots, each with a KV cache of
 *     n_layer x 2 x cap x d_model floats,  cap = min(n_ctx, longest prompt + max_new - 1,
 *                                                   rounded up to a multiple of 32);
 * every decoding step appends one row for each busy slot (its last token) and the prompts of the
 * slots that start, as many as fit B + n_ctx rows in all. A sequence that ends (stop_token
 * emitted, max_new tokens, or the context full) frees its slot for the next prompt, and on_done
 * is called for it then. The caches and the step scratch (about 16 d_model floats per row) stay
 * with the model for the next call (ab_model_memory_usage counts them in `other`; ab_model_free
 * frees them); AB_ERR_ALLOC if they cannot be allocated. ab_model_decode's cache is left alone.
 * Every argument is checked before any work: prompt lengths in [1, n_ctx], ids in [0, vocab).
 * After a failure out_lengths[i] is 0 for every prompt whose on_done was not called.           */
ABDEF ab_status ab_model_generate_batch(ab_model *model, const int *const *prompts,
                                        const int *prompt_lengths, int n_prompts, int max_new,
                                        int stop_token, const ab_generate_opts *opts, int *out,
                                        int *out_lengths);

/* --- profiling --------------------------------------------------------------------------------- */
/* now() returns seconds from any fixed origin (e.g. clock_gettime(CLOCK_MONOTONIC)); NULL stops
 * profiling. The library itself has no clock, so it stays C99 and portable.                      */
ABDEF ab_status ab_model_set_clock(ab_model *model, double (*now)(void));
ABDEF ab_status ab_model_profile(const ab_model *model, double seconds[AB_PROF_COUNT]);
ABDEF ab_status ab_model_profile_reset(ab_model *model);
ABDEF const char *ab_prof_name(ab_prof_kind kind); /* "matmul", "attention", ... */

#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_GPT_H */

/* ============================================================================================== */
/*                                        IMPLEMENTATION                                          */
/* ============================================================================================== */
#if defined(ANTIBODY_GPT_IMPLEMENTATION) || defined(ANTIBODY_IMPLEMENTATION)
#ifndef ANTIBODY_GPT_IMPLEMENTATION_DONE
#define ANTIBODY_GPT_IMPLEMENTATION_DONE

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

static const char *const ab__kind_names[AB_T_KIND_COUNT] = {
    "wte",   "wpe",  "ln1_w",       "ln1_b",       "qkv_w",      "qkv_b",
    "attn_proj_w",   "attn_proj_b", "ln2_w",       "ln2_b",      "fc_w",
    "fc_b",  "mlp_proj_w",          "mlp_proj_b",  "lnf_w",      "lnf_b",
    "lora_q_a",      "lora_q_b",    "lora_k_a",    "lora_k_b",   "lora_v_a",
    "lora_v_b"};

#define AB__PER_LAYER_BASE 12 /* ln1_w ... mlp_proj_b */
#define AB__PER_LAYER_LORA 6  /* lora_q_a ... lora_v_b */
#define AB__ALIGN_FLOATS 16   /* 64 bytes: every tensor and activation starts on a cache line */

typedef struct ab__tensor {
    char name[24];
    ab_tensor_kind kind;
    int layer, rows, cols;
    size_t offset, size;
} ab__tensor;

/* Offsets (floats) of one block's training activations, relative to the block's start. */
typedef struct ab__block_layout {
    size_t ln1, ln1_mean, ln1_rstd, qkv, lora_u, att, atty, res2, ln2, ln2_mean, ln2_rstd, fch,
        fch_gelu, res3, total;
} ab__block_layout;

typedef struct ab__block {
    float *ln1, *ln1_mean, *ln1_rstd; /* LN1 output (= qkv input) and its statistics */
    float *qkv;                       /* [n_tokens][3 d] (d = d_model) */
    float *lora_u;                    /* [3][n_tokens][rank]: A_q x, A_k x, A_v x (unscaled) */
    float *att;                       /* [B][n_head][T][T] softmax probabilities */
    float *atty;                      /* [n_tokens][d] heads' output (= attn proj input) */
    float *res2;                      /* [n_tokens][d] residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* LN2 output (= fc input) */
    float *fch, *fch_gelu;            /* [n_tokens][4 d] fc output before / after GELU */
    float *res3;                      /* [n_tokens][d] block output */
} ab__block;

/* The rows a forward computes. A batch is packed when it gives lengths and every position from
 * lengths[i] on has mask 0 (and some sequence is not empty): sequence i is then its lengths[i]
 * real tokens only, rows off[i] .. off[i+1]-1, and the padding is never computed; otherwise it is
 * T rows from i T. Causal attention never lets a later position reach an earlier one, and the
 * padding carries no loss, so both give the same loss and gradients; only the summation order of
 * the sums over rows (weight gradients) differs, so the bits depend on the batch's composition.
 * in, tg, pos: [R] each (token, target, position in its sequence); off: [B + 1]. */
typedef struct ab__rows {
    int B, T, R, packed;
    const int *in, *tg, *pos, *off;
} ab__rows;

/* Activations of one forward: global tensors plus n blocks (stride 0: one block reused by every
 * layer, the scoring path). */
typedef struct ab__acts {
    float *encoded, *lnf, *lnf_mean, *lnf_rstd, *logits, *losses, *tokw;
    float *blocks;
    size_t block_stride;
    ab__block_layout bl;
} ab__acts;

/* Stored output gradients of one block (phase 1 of backward writes them, phase 2 reads them). */
typedef struct ab__gblock {
    float *dmproj; /* [n_tokens][d]   gradient at the mlp projection's output */
    float *dfch;   /* [n_tokens][4 d] gradient at the fc output (before GELU) */
    float *dln2;   /* [n_tokens][d]   gradient at LN2's output */
    float *daproj; /* [n_tokens][d]   gradient at the attention block's output H_l */
    float *dqkv;   /* [n_tokens][3 d] */
    float *du;     /* [3][n_tokens][rank] gradient at the LoRA A outputs */
    float *dln1;   /* [n_tokens][d] */
} ab__gblock;

struct ab_model {
    ab_model_config cfg;
    int n_vocab, n_ctx, n_layer, n_head, d_model, head_size, lora_rank; /* cfg, and d_model / n_head */
    float lora_scale;
    int n_tensors;
    ab__tensor *tensors;
    size_t n_floats, n_params, base_end; /* LoRA segment: [base_end, n_floats) */
    float *params, *grads, *mom_m, *mom_v;
    int adam_step;
    ab_train_mode mode;
    int merged;
    /* training activations of the last forward */
    float *acts;
    size_t acts_cap;
    int *ibuf; /* the forward's rows (ab__rows): inputs, targets, positions [R] each, offsets [B+1] */
    size_t ibuf_cap;
    int *sibuf; /* the same for the scoring forward, kept apart so scoring leaves training alone */
    size_t sibuf_cap;
    int fwd_valid, fwd_B, fwd_T, fwd_R;
    double fwd_Z;
    ab__acts A;
    /* stored output gradients and backward scratch */
    float *gacts;
    size_t gacts_cap;
    /* scoring activations (one block) */
    float *sacts;
    size_t sacts_cap;
    /* decoding */
    float *kv, *dec;
    size_t dec_cap;
    int dec_pos;
    float *gen; /* ab_model_generate_batch: the slots' caches and the step scratch, kept */
    size_t gen_cap;
    /* Antidote statistics: per layer [d qkv | d attn_proj | d fc | 4d mlp_proj | 3 rank lora B] */
    double *stats;
    int64_t stats_nseq;
    /* profiling */
    double (*now)(void);
    double prof[AB_PROF_COUNT];
};

static size_t ab__align_up(size_t n) {
    return (n + AB__ALIGN_FLOATS - 1) / AB__ALIGN_FLOATS * AB__ALIGN_FLOATS;
}
static size_t ab__bump(size_t *cursor, size_t n) {
    size_t at = *cursor;
    *cursor += ab__align_up(n);
    return at;
}


/* One profiling scope around a layer call: while a clock is set (ab_model_set_clock) the call's
 * seconds go to `kind`; a failing call returns its status from the enclosing function. */
#define AB__PROF(m, kind, call)                                                                    \
    do {                                                                                           \
        double ab__t0_ = (m)->now ? (m)->now() : 0.0;                                              \
        ab_status ab__st_ = (call);                                                                \
        if ((m)->now) (m)->prof[kind] += (m)->now() - ab__t0_;                                     \
        AB_TRY(ab__st_);                                                                           \
    } while (0)

/* --- config and parameter layout ------------------------------------------------------------- */
ABDEF ab_model_config ab_model_config_default(void) {
    ab_model_config c;
    c.n_vocab = 512;
    c.n_ctx = 64;
    c.n_layer = 4;
    c.n_head = 4;
    c.d_model = 128;
    c.lora_rank = 8;
    c.lora_alpha = 16.0f;
    return c;
}

/* Lays the tensors out (tab may be NULL to count only). Sizes in 64-bit: the config limits keep
 * every product below 2^62, so nothing here can overflow. */
static void ab__layout(const ab_model_config *c, ab__tensor *tab, int *n_tensors,
                       uint64_t *n_floats, uint64_t *n_params, uint64_t *base_end) {
    uint64_t cursor = 0, count = 0;
    int n = 0;
    int64_t d = c->d_model, r = c->lora_rank;
    int64_t shapes[AB_T_KIND_COUNT][2];
    shapes[AB_T_WTE][0] = c->n_vocab, shapes[AB_T_WTE][1] = d;
    shapes[AB_T_WPE][0] = c->n_ctx, shapes[AB_T_WPE][1] = d;
    shapes[AB_T_LN1_W][0] = 1, shapes[AB_T_LN1_W][1] = d;
    shapes[AB_T_LN1_B][0] = 1, shapes[AB_T_LN1_B][1] = d;
    shapes[AB_T_QKV_W][0] = 3 * d, shapes[AB_T_QKV_W][1] = d;
    shapes[AB_T_QKV_B][0] = 1, shapes[AB_T_QKV_B][1] = 3 * d;
    shapes[AB_T_ATTN_PROJ_W][0] = d, shapes[AB_T_ATTN_PROJ_W][1] = d;
    shapes[AB_T_ATTN_PROJ_B][0] = 1, shapes[AB_T_ATTN_PROJ_B][1] = d;
    shapes[AB_T_LN2_W][0] = 1, shapes[AB_T_LN2_W][1] = d;
    shapes[AB_T_LN2_B][0] = 1, shapes[AB_T_LN2_B][1] = d;
    shapes[AB_T_FC_W][0] = 4 * d, shapes[AB_T_FC_W][1] = d;
    shapes[AB_T_FC_B][0] = 1, shapes[AB_T_FC_B][1] = 4 * d;
    shapes[AB_T_MLP_PROJ_W][0] = d, shapes[AB_T_MLP_PROJ_W][1] = 4 * d;
    shapes[AB_T_MLP_PROJ_B][0] = 1, shapes[AB_T_MLP_PROJ_B][1] = d;
    shapes[AB_T_LNF_W][0] = 1, shapes[AB_T_LNF_W][1] = d;
    shapes[AB_T_LNF_B][0] = 1, shapes[AB_T_LNF_B][1] = d;
    for (int k = AB_T_LORA_Q_A; k <= AB_T_LORA_V_B; k += 2) {
        shapes[k][0] = r, shapes[k][1] = d;         /* A: r x d */
        shapes[k + 1][0] = d, shapes[k + 1][1] = r; /* B: d x r */
    }
    /* order: wte, wpe, blocks, lnf, then every block's LoRA tensors */
    for (int pass = 0; pass < 4; pass++) {
        int k0, k1, l0 = -1, l1 = -1;
        if (pass == 0) k0 = AB_T_WTE, k1 = AB_T_WPE;
        else if (pass == 1) k0 = AB_T_LN1_W, k1 = AB_T_MLP_PROJ_B, l0 = 0, l1 = c->n_layer - 1;
        else if (pass == 2) k0 = AB_T_LNF_W, k1 = AB_T_LNF_B;
        else {
            if (r == 0) break;
            *base_end = cursor;
            k0 = AB_T_LORA_Q_A, k1 = AB_T_LORA_V_B, l0 = 0, l1 = c->n_layer - 1;
        }
        for (int l = l0; l <= l1; l++) {
            for (int k = k0; k <= k1; k++) {
                uint64_t size = (uint64_t)shapes[k][0] * (uint64_t)shapes[k][1];
                if (tab) {
                    ab__tensor *t = &tab[n];
                    if (l >= 0) snprintf(t->name, sizeof t->name, "h%d.%s", l, ab__kind_names[k]);
                    else snprintf(t->name, sizeof t->name, "%s", ab__kind_names[k]);
                    t->kind = (ab_tensor_kind)k;
                    t->layer = l;
                    t->rows = (int)shapes[k][0];
                    t->cols = (int)shapes[k][1];
                    t->offset = (size_t)cursor;
                    t->size = (size_t)size;
                }
                n++;
                count += size;
                cursor += (size + AB__ALIGN_FLOATS - 1) / AB__ALIGN_FLOATS * AB__ALIGN_FLOATS;
            }
        }
    }
    if (r == 0) *base_end = cursor;
    *n_tensors = n;
    *n_floats = cursor;
    *n_params = count;
}

ABDEF ab_status ab_model_config_check(const ab_model_config *c) {
    AB_CHECK_PTR(c);
    if (c->n_vocab < 1 || c->n_vocab > AB_MODEL_MAX_VOCAB)
        return ab_fail(AB_ERR_ARG, "model config: vocab = %d outside [1, %d]", c->n_vocab,
                        AB_MODEL_MAX_VOCAB);
    if (c->n_ctx < 1 || c->n_ctx > AB_MODEL_MAX_CTX)
        return ab_fail(AB_ERR_ARG, "model config: n_ctx = %d outside [1, %d]", c->n_ctx,
                        AB_MODEL_MAX_CTX);
    if (c->n_layer < 1 || c->n_layer > AB_MODEL_MAX_LAYER)
        return ab_fail(AB_ERR_ARG, "model config: n_layer = %d outside [1, %d]", c->n_layer,
                        AB_MODEL_MAX_LAYER);
    if (c->d_model < 1 || c->d_model > AB_MODEL_MAX_DMODEL)
        return ab_fail(AB_ERR_ARG, "model config: d_model = %d outside [1, %d]", c->d_model,
                        AB_MODEL_MAX_DMODEL);
    if (c->n_head < 1 || c->n_head > c->d_model || c->d_model % c->n_head != 0)
        return ab_fail(AB_ERR_ARG, "model config: n_head = %d must divide d_model = %d",
                        c->n_head, c->d_model);
    if (c->lora_rank < 0 || c->lora_rank > c->d_model)
        return ab_fail(AB_ERR_ARG, "model config: lora_rank = %d outside [0, d_model = %d]",
                        c->lora_rank, c->d_model);
    if (!isfinite(c->lora_alpha) || (c->lora_rank > 0 && !(c->lora_alpha > 0.0f)))
        return ab_fail(AB_ERR_ARG, "model config: lora_alpha = %g must be finite and > 0 with LoRA",
                        (double)c->lora_alpha);
    int n_tensors;
    uint64_t n_floats, n_params, base_end;
    ab__layout(c, NULL, &n_tensors, &n_floats, &n_params, &base_end);
    if (n_floats > AB_MODEL_MAX_PARAMS)
        return ab_fail(AB_ERR_ARG, "model config: %llu parameters exceed the limit %llu",
                        (unsigned long long)n_floats, (unsigned long long)AB_MODEL_MAX_PARAMS);
    return AB_OK;
}

static int ab__tidx(const ab_model *m, ab_tensor_kind kind, int l) {
    if (kind <= AB_T_WPE) return (int)kind;
    if (kind <= AB_T_MLP_PROJ_B) return 2 + AB__PER_LAYER_BASE * l + (int)(kind - AB_T_LN1_W);
    if (kind <= AB_T_LNF_B) return 2 + AB__PER_LAYER_BASE * m->n_layer + (int)(kind - AB_T_LNF_W);
    return 4 + AB__PER_LAYER_BASE * m->n_layer + AB__PER_LAYER_LORA * l + (int)(kind - AB_T_LORA_Q_A);
}
static float *ab__P(const ab_model *m, ab_tensor_kind kind, int l) {
    return m->params + m->tensors[ab__tidx(m, kind, l)].offset;
}
static float *ab__G(const ab_model *m, ab_tensor_kind kind, int l) {
    return m->grads + m->tensors[ab__tidx(m, kind, l)].offset;
}
static int ab__is_lora(ab_tensor_kind kind) { return kind >= AB_T_LORA_Q_A; }
static int ab__trains(const ab_model *m, ab_tensor_kind kind) {
    return ab__is_lora(kind) ? m->mode != AB_TRAIN_BASE : m->mode != AB_TRAIN_LORA;
}
static int ab__lora_active(const ab_model *m) { return m->lora_rank > 0 && !m->merged; }

static void ab__segment(const ab_model *m, size_t *begin, size_t *end) {
    *begin = m->mode == AB_TRAIN_LORA ? m->base_end : 0;
    *end = m->mode == AB_TRAIN_BASE ? m->base_end : m->n_floats;
}

/* Allocation with growth: (re)allocates *buf to hold `need` floats if it holds fewer. */
static ab_status ab__reserve(float **buf, size_t *cap, size_t need, const char *what) {
    if (*cap >= need && *buf) return AB_OK;
    ab_aligned_free(*buf);
    *buf = NULL;
    *cap = 0;
    if (need > ((size_t)-1) / sizeof(float))
        return ab_fail(AB_ERR_ALLOC, "model: %s would need %zu floats", what, need);
    *buf = (float *)ab_aligned_alloc(need * sizeof(float));
    if (!*buf) return ab_fail(AB_ERR_ALLOC, "model: cannot allocate %zu floats for %s", need, what);
    *cap = need;
    return AB_OK;
}

static void ab__lora_init_tensors(ab_model *m, ab_rng *rng) {
    float bound = 1.0f / sqrtf((float)m->d_model); /* PEFT's kaiming_uniform(a=sqrt(5)) on a d-wide input */
    for (int l = 0; l < m->n_layer; l++) {
        for (int k = AB_T_LORA_Q_A; k <= AB_T_LORA_V_B; k += 2) {
            const ab__tensor *a = &m->tensors[ab__tidx(m, (ab_tensor_kind)k, l)];
            const ab__tensor *b = &m->tensors[ab__tidx(m, (ab_tensor_kind)(k + 1), l)];
            float *pa = m->params + a->offset;
            for (size_t i = 0; i < a->size; i++) pa[i] = (2.0f * ab_rng_uniform(rng) - 1.0f) * bound;
            memset(m->params + b->offset, 0, b->size * sizeof(float));
        }
    }
}

/* GPT-2 init in table order from one PCG32 stream. */
static void ab__init_params(ab_model *m, uint64_t seed) {
    ab_rng rng;
    ab_rng_seed(&rng, seed, 0);
    float resid_std = AB_MODEL_INIT_STD / sqrtf(2.0f * (float)m->n_layer);
    for (int i = 0; i < m->n_tensors; i++) {
        const ab__tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        switch (t->kind) {
        case AB_T_WTE: case AB_T_WPE: case AB_T_QKV_W: case AB_T_FC_W:
            for (size_t j = 0; j < t->size; j++) p[j] = AB_MODEL_INIT_STD * ab_rng_normal(&rng);
            break;
        case AB_T_ATTN_PROJ_W: case AB_T_MLP_PROJ_W:
            for (size_t j = 0; j < t->size; j++) p[j] = resid_std * ab_rng_normal(&rng);
            break;
        case AB_T_LN1_W: case AB_T_LN2_W: case AB_T_LNF_W:
            for (size_t j = 0; j < t->size; j++) p[j] = 1.0f;
            break;
        default: /* biases 0; LoRA below */
            break;
        }
    }
    if (m->lora_rank > 0) ab__lora_init_tensors(m, &rng);
}

/* A model with its parameter buffer zeroed (the loader fills it; create initialises it). */
static ab_status ab__model_new(ab_model **out, const ab_model_config *cfg) {
    *out = NULL;
    AB_TRY(ab_model_config_check(cfg));
    ab_model *m = (ab_model *)ab_aligned_alloc(sizeof(ab_model));
    if (!m) return ab_fail(AB_ERR_ALLOC, "ab_model_create: out of memory");
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->n_vocab = cfg->n_vocab, m->n_ctx = cfg->n_ctx, m->n_layer = cfg->n_layer, m->n_head = cfg->n_head;
    m->d_model = cfg->d_model, m->head_size = cfg->d_model / cfg->n_head, m->lora_rank = cfg->lora_rank;
    m->lora_scale = m->lora_rank > 0 ? cfg->lora_alpha / (float)m->lora_rank : 0.0f;
    m->mode = AB_TRAIN_ALL;
    uint64_t n_floats, n_params, base_end;
    ab__layout(cfg, NULL, &m->n_tensors, &n_floats, &n_params, &base_end);
    m->n_floats = (size_t)n_floats, m->n_params = (size_t)n_params, m->base_end = (size_t)base_end;
    m->tensors = (ab__tensor *)ab_aligned_alloc(sizeof(ab__tensor) * (size_t)m->n_tensors);
    size_t cap = 0;
    ab_status st = m->tensors ? ab__reserve(&m->params, &cap, m->n_floats, "parameters")
                              : ab_fail(AB_ERR_ALLOC, "ab_model_create: out of memory");
    if (st != AB_OK) {
        ab_model_free(m);
        return st;
    }
    ab__layout(cfg, m->tensors, &m->n_tensors, &n_floats, &n_params, &base_end);
    memset(m->params, 0, m->n_floats * sizeof(float));
    *out = m;
    return AB_OK;
}

ABDEF ab_status ab_model_create(ab_model **out, const ab_model_config *cfg, uint64_t seed) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(out);
    *out = NULL;
    AB_CHECK_PTR(cfg);
    ab_model *m;
    AB_TRY(ab__model_new(&m, cfg));
    ab__init_params(m, seed);
    *out = m;
    return AB_OK;
}

ABDEF void ab_model_free(ab_model *m) {
    if (!m) return;
    ab_aligned_free(m->params);
    ab_aligned_free(m->grads);
    ab_aligned_free(m->mom_m);
    ab_aligned_free(m->mom_v);
    ab_aligned_free(m->acts);
    ab_aligned_free(m->ibuf);
    ab_aligned_free(m->sibuf);
    ab_aligned_free(m->gacts);
    ab_aligned_free(m->sacts);
    ab_aligned_free(m->kv);
    ab_aligned_free(m->dec);
    ab_aligned_free(m->gen);
    ab_aligned_free(m->stats);
    ab_aligned_free(m->tensors);
    ab_aligned_free(m);
}

ABDEF ab_status ab_model_get_config(const ab_model *m, ab_model_config *cfg) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(cfg);
    *cfg = m->cfg;
    return AB_OK;
}

ABDEF int ab_model_n_tensors(const ab_model *m) { return m ? m->n_tensors : 0; }
ABDEF size_t ab_model_n_params(const ab_model *m) { return m ? m->n_params : 0; }

static void ab__tensor_info(ab_model *m, int i, ab_tensor_info *info) {
    const ab__tensor *t = &m->tensors[i];
    info->name = t->name;
    info->kind = t->kind;
    info->layer = t->layer;
    info->rows = t->rows;
    info->cols = t->cols;
    info->offset = t->offset;
    info->size = t->size;
    info->data = m->params + t->offset;
    info->grad = m->grads ? m->grads + t->offset : NULL;
    info->trainable = ab__trains(m, t->kind);
}

ABDEF ab_status ab_model_tensor(ab_model *m, int index, ab_tensor_info *info) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(info);
    if (index < 0 || index >= m->n_tensors)
        return ab_fail(AB_ERR_ARG, "ab_model_tensor: index %d outside [0, %d)", index, m->n_tensors);
    ab__tensor_info(m, index, info);
    return AB_OK;
}

ABDEF ab_status ab_model_find_tensor(ab_model *m, const char *name, ab_tensor_info *info) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(name);
    AB_CHECK_PTR(info);
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) {
            ab__tensor_info(m, i, info);
            return AB_OK;
        }
    return ab_fail(AB_ERR_ARG, "ab_model_find_tensor: no tensor named '%s'", name);
}

ABDEF ab_status ab_model_tensor_of(ab_model *m, ab_tensor_kind kind, int layer,
                                   ab_tensor_info *info) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(info);
    if ((int)kind < 0 || kind >= AB_T_KIND_COUNT)
        return ab_fail(AB_ERR_ARG, "ab_model_tensor_of: unknown kind %d", (int)kind);
    int per_layer = (kind >= AB_T_LN1_W && kind <= AB_T_MLP_PROJ_B) || ab__is_lora(kind);
    if (ab__is_lora(kind) && m->lora_rank == 0)
        return ab_fail(AB_ERR_ARG, "ab_model_tensor_of: %s requested, but the model has no LoRA",
                        ab__kind_names[kind]);
    if (per_layer && (layer < 0 || layer >= m->n_layer))
        return ab_fail(AB_ERR_ARG, "ab_model_tensor_of: layer %d outside [0, %d)", layer, m->n_layer);
    ab__tensor_info(m, ab__tidx(m, kind, per_layer ? layer : 0), info);
    return AB_OK;
}

ABDEF ab_status ab_model_params(ab_model *m, float **params, size_t *count) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(params);
    AB_CHECK_PTR(count);
    *params = m->params;
    *count = m->n_floats;
    return AB_OK;
}

ABDEF ab_status ab_model_memory_usage(const ab_model *m, ab_model_memory *mem) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(mem);
    size_t f = sizeof(float);
    mem->params = m->n_floats * f;
    mem->grads = m->grads ? m->n_floats * f : 0;
    mem->moments = m->mom_m ? 2 * m->n_floats * f : 0;
    mem->acts = m->acts_cap * f + m->ibuf_cap * sizeof(int);
    mem->grad_acts = m->gacts_cap * f;
    mem->other = (m->sacts_cap + m->dec_cap + m->gen_cap) * f +
                 (m->kv ? (size_t)m->n_layer * 2 * m->n_ctx * m->d_model * f : 0) +
                 (m->stats ? (size_t)m->n_layer * (7 * (size_t)m->d_model + 3 * (size_t)m->lora_rank) * sizeof(double) : 0) +
                 m->sibuf_cap * sizeof(int);
    return AB_OK;
}

/* --- training buffers, modes, optimiser ------------------------------------------------------- */
static ab_status ab__ensure_train_buffers(ab_model *m) {
    size_t cap;
    if (!m->grads) {
        cap = 0;
        AB_TRY(ab__reserve(&m->grads, &cap, m->n_floats, "gradients"));
        memset(m->grads, 0, m->n_floats * sizeof(float));
    }
    if (!m->mom_m) {
        cap = 0;
        AB_TRY(ab__reserve(&m->mom_m, &cap, m->n_floats, "AdamW m"));
        memset(m->mom_m, 0, m->n_floats * sizeof(float));
    }
    if (!m->mom_v) {
        cap = 0;
        AB_TRY(ab__reserve(&m->mom_v, &cap, m->n_floats, "AdamW v"));
        memset(m->mom_v, 0, m->n_floats * sizeof(float));
    }
    return AB_OK;
}

ABDEF ab_status ab_model_set_train_mode(ab_model *m, ab_train_mode mode) {
    AB_CHECK_PTR(m);
    if (mode != AB_TRAIN_ALL && mode != AB_TRAIN_BASE && mode != AB_TRAIN_LORA)
        return ab_fail(AB_ERR_ARG, "ab_model_set_train_mode: unknown mode %d", (int)mode);
    if (mode == AB_TRAIN_LORA && m->lora_rank == 0)
        return ab_fail(AB_ERR_ARG, "ab_model_set_train_mode: LoRA-only training needs lora_rank > 0");
    m->mode = mode;
    return AB_OK;
}

ABDEF ab_train_mode ab_model_get_train_mode(const ab_model *m) { return m ? m->mode : AB_TRAIN_ALL; }

ABDEF ab_status ab_model_trainable(ab_model *m, ab_model_view *view) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(view);
    AB_TRY(ab__ensure_train_buffers(m));
    size_t b, e;
    ab__segment(m, &b, &e);
    view->params = m->params + b;
    view->grads = m->grads + b;
    view->m = m->mom_m + b;
    view->v = m->mom_v + b;
    view->count = e - b;
    return AB_OK;
}

/* memset(p, 0, n floats) in pieces of AB__ZERO_PIECE floats on the library's threads (the
 * gradient buffer of a GPT-2-sized model is 475 MiB). */
#define AB__ZERO_PIECE ((size_t)1 << 18)
typedef struct ab__zero_job {
    float *p;
    size_t n;
} ab__zero_job;
static ab_status ab__zero_chunk(void *ctx, int chunk, int slot) {
    const ab__zero_job *z = (const ab__zero_job *)ctx;
    size_t i0 = (size_t)chunk * AB__ZERO_PIECE, len = z->n - i0 < AB__ZERO_PIECE ? z->n - i0 : AB__ZERO_PIECE;
    (void)slot;
    memset(z->p + i0, 0, len * sizeof(float));
    return AB_OK;
}
static void ab__zero(float *p, size_t n) {
    ab__zero_job z;
    z.p = p, z.n = n;
    size_t pieces = (n + AB__ZERO_PIECE - 1) / AB__ZERO_PIECE;
    if (pieces < 2 || pieces > (size_t)INT_MAX) memset(p, 0, n * sizeof(float));
    else (void)ab_parallel_for((int)pieces, ab__zero_chunk, &z); /* pieces never fail */
}

ABDEF ab_status ab_model_zero_grad(ab_model *m) {
    AB_CHECK_PTR(m);
    AB_TRY(ab__ensure_train_buffers(m));
    size_t b, e;
    ab__segment(m, &b, &e);
    ab__zero(m->grads + b, e - b);
    return AB_OK;
}

ABDEF ab_status ab_model_adamw_step(ab_model *m, const ab_adamw_cfg *cfg) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(cfg);
    ab_model_view v;
    AB_TRY(ab_model_trainable(m, &v));
    AB__PROF(m, AB_PROF_ADAMW, ab_adamw_step(v.params, v.grads, v.m, v.v, v.count, m->adam_step + 1, cfg));
    m->adam_step++;
    m->fwd_valid = 0; /* the stored activations belong to the old weights */
    return AB_OK;
}

ABDEF ab_status ab_model_reset_optimizer(ab_model *m) {
    AB_CHECK_PTR(m);
    AB_TRY(ab__ensure_train_buffers(m));
    memset(m->mom_m, 0, m->n_floats * sizeof(float));
    memset(m->mom_v, 0, m->n_floats * sizeof(float));
    m->adam_step = 0;
    return AB_OK;
}

/* --- forward building blocks ------------------------------------------------------------------ */
/* LayerNorm, GELU and cross-entropy: the core threads them itself (over rows or pieces whose
 * results do not depend on the split), so these are plain calls. */
static ab_status ab__ln_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                            const float *b, int rows, int d_model) {
    return ab_layernorm_forward(out, mean, rstd, x, w, b, rows, d_model, AB_MODEL_LN_EPS);
}

/* dx += LayerNorm input gradient (parameter gradients are taken in phase 2). */
static ab_status ab__ln_bwd_dx(float *dx, const float *dout, const float *x, const float *w,
                               const float *mean, const float *rstd, int rows, int d_model) {
    return ab_layernorm_backward(dx, NULL, NULL, dout, x, w, mean, rstd, rows, d_model);
}

/* GELU forward (out != NULL) or backward (dx += ...). */
static ab_status ab__gelu(float *out, float *dx, const float *x, const float *dout, size_t n) {
    return out ? ab_gelu_forward(out, x, n) : ab_gelu_backward(dx, x, dout, n);
}

static ab_status ab__ce(float *losses, float *dlogits, const float *logits, const int *targets,
                        const float *w, int rows, int n_vocab, float dscale) {
    return ab_cross_entropy(losses, dlogits, logits, targets, w, rows, n_vocab, dscale);
}

/* out[rows][d_out] (row stride ldo) = in[rows][d_in] W^T + bias (bias may be NULL). */
static ab_status ab__linear_fwd(float *out, int ldo, const float *in, const float *W,
                                const float *bias, int rows, int d_in, int d_out) {
    return ab_linear_forward(out, ldo, in, W, bias, NULL, NULL, rows, d_in, d_out);
}

static const float *ab__lora_a(const ab_model *m, int k, int l) {
    return ab__P(m, (ab_tensor_kind)(AB_T_LORA_Q_A + 2 * k), l);
}
static const float *ab__lora_b(const ab_model *m, int k, int l) {
    return ab__P(m, (ab_tensor_kind)(AB_T_LORA_Q_B + 2 * k), l);
}

/* qkv = ln1 Wqkv^T + b, plus for k in q, k, v: u_k = ln1 A_k^T, qkv_k += scale * u_k B_k^T. */
static ab_status ab__qkv_fwd(const ab_model *m, int l, const float *ln1, float *qkv, float *u,
                             int rows) {
    const int d_model = m->d_model, rank = m->lora_rank;
    AB_TRY(ab__linear_fwd(qkv, 3 * d_model, ln1, ab__P(m, AB_T_QKV_W, l), ab__P(m, AB_T_QKV_B, l),
                          rows, d_model, 3 * d_model));
    if (!ab__lora_active(m)) return AB_OK;
    for (int k = 0; k < 3; k++) {
        float *uk = u + (size_t)k * rows * rank;
        AB_TRY(ab_sgemm(AB_NO_TRANS, AB_TRANS, rows, rank, d_model, 1.0f, ln1, d_model,
                        ab__lora_a(m, k, l), d_model, 0.0f, uk, rank));
        AB_TRY(ab_sgemm(AB_NO_TRANS, AB_TRANS, rows, d_model, rank, m->lora_scale, uk, rank,
                        ab__lora_b(m, k, l), rank, 1.0f, qkv + (size_t)k * d_model, 3 * d_model));
    }
    return AB_OK;
}

/* Causal multi-head attention over B sequences of T tokens: att = softmax(q k^T / sqrt(hs)),
 * atty = att v, per (sequence, head). The (sequence, head) pairs are the chunks of one
 * ab_parallel_for: each writes only its own slices, and a GEMM inside a chunk runs on that chunk's
 * thread alone and gives the same bits for any thread count, so the result does not depend on the
 * split. */
typedef struct ab__attn_job {
    const ab_model *m;
    const ab__rows *rw;
    const float *qkv, *att_in, *datty;
    float *att, *atty, *dqkv, *da_all, *dp_all;
    float scale;
} ab__attn_job;

/* Sequence b's rows: n = off[b+1] - off[b] of them from row off[b]; its (b, h) pair's [n][n]
 * attention slice starts at (b n_head + h) T T (the batch's T: room for the longest). */
static ab_status ab__attn_fwd_pair(void *ctx, int bh, int slot) {
    const ab__attn_job *j = (const ab__attn_job *)ctx;
    const int d_model = j->m->d_model, n_head = j->m->n_head, head_size = j->m->head_size;
    int b = bh / n_head, h = bh % n_head, n = j->rw->off[b + 1] - j->rw->off[b];
    const float *q = j->qkv + (size_t)j->rw->off[b] * 3 * d_model + (size_t)h * head_size;
    float *a = j->att + (size_t)bh * j->rw->T * j->rw->T;
    (void)slot;
    if (n == 0) return AB_OK;
    AB_TRY(ab_sgemm(AB_NO_TRANS, AB_TRANS, n, n, head_size, j->scale, q, 3 * d_model, q + d_model,
                    3 * d_model, 0.0f, a, n));
    AB_TRY(ab_softmax(a, a, n, n, 1));
    return ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n, head_size, n, 1.0f, a, n, q + 2 * d_model,
                    3 * d_model, 0.0f, j->atty + (size_t)j->rw->off[b] * d_model + (size_t)h * head_size,
                    d_model);
}

static ab_status ab__attn_fwd(const ab_model *m, const ab__rows *rw, const float *qkv, float *att,
                              float *atty) {
    ab__attn_job j;
    memset(&j, 0, sizeof j);
    j.m = m, j.rw = rw, j.qkv = qkv, j.att = att, j.atty = atty;
    j.scale = 1.0f / sqrtf((float)m->head_size);
    return ab_parallel_for(rw->B * m->n_head, ab__attn_fwd_pair, &j);
}

/* --- activations -------------------------------------------------------------------------------- */
static size_t ab__acts_layout(const ab_model *m, int B, int T, int R, int n_blocks, ab__acts *a,
                              float *base) {
    size_t n_tokens = (size_t)R, d_model = (size_t)m->d_model, cur = 0, bc = 0;
    size_t o_enc = ab__bump(&cur, n_tokens * d_model), o_lnf = ab__bump(&cur, n_tokens * d_model);
    size_t o_lnfm = ab__bump(&cur, n_tokens), o_lnfr = ab__bump(&cur, n_tokens);
    size_t o_logits = ab__bump(&cur, n_tokens * (size_t)m->n_vocab), o_losses = ab__bump(&cur, n_tokens);
    size_t o_tokw = ab__bump(&cur, n_tokens);
    ab__block_layout bl;
    bl.ln1 = ab__bump(&bc, n_tokens * d_model);
    bl.ln1_mean = ab__bump(&bc, n_tokens);
    bl.ln1_rstd = ab__bump(&bc, n_tokens);
    bl.qkv = ab__bump(&bc, n_tokens * 3 * d_model);
    bl.lora_u = ab__bump(&bc, 3 * n_tokens * (size_t)m->lora_rank);
    bl.att = ab__bump(&bc, (size_t)B * m->n_head * T * T);
    bl.atty = ab__bump(&bc, n_tokens * d_model);
    bl.res2 = ab__bump(&bc, n_tokens * d_model);
    bl.ln2 = ab__bump(&bc, n_tokens * d_model);
    bl.ln2_mean = ab__bump(&bc, n_tokens);
    bl.ln2_rstd = ab__bump(&bc, n_tokens);
    bl.fch = ab__bump(&bc, n_tokens * 4 * d_model);
    bl.fch_gelu = ab__bump(&bc, n_tokens * 4 * d_model);
    bl.res3 = ab__bump(&bc, n_tokens * d_model);
    bl.total = bc;
    size_t o_blocks = ab__bump(&cur, bc * (size_t)n_blocks);
    if (a && base) {
        a->encoded = base + o_enc, a->lnf = base + o_lnf;
        a->lnf_mean = base + o_lnfm, a->lnf_rstd = base + o_lnfr;
        a->logits = base + o_logits, a->losses = base + o_losses, a->tokw = base + o_tokw;
        a->blocks = base + o_blocks;
        a->block_stride = n_blocks > 1 ? bc : 0;
        a->bl = bl;
    }
    return cur;
}

static ab__block ab__block_at(const ab__acts *a, int l) {
    float *p = a->blocks + a->block_stride * (size_t)l;
    ab__block k;
    k.ln1 = p + a->bl.ln1, k.ln1_mean = p + a->bl.ln1_mean, k.ln1_rstd = p + a->bl.ln1_rstd;
    k.qkv = p + a->bl.qkv, k.lora_u = p + a->bl.lora_u, k.att = p + a->bl.att;
    k.atty = p + a->bl.atty, k.res2 = p + a->bl.res2, k.ln2 = p + a->bl.ln2;
    k.ln2_mean = p + a->bl.ln2_mean, k.ln2_rstd = p + a->bl.ln2_rstd, k.fch = p + a->bl.fch;
    k.fch_gelu = p + a->bl.fch_gelu, k.res3 = p + a->bl.res3;
    return k;
}

static ab_status ab__check_batch(const ab_model *m, const ab_batch *bt, const char *fn) {
    if (!bt) return ab_fail(AB_ERR_NULL, "%s: 'batch' is NULL", fn);
    if (bt->loss_norm != AB_LOSS_TOKEN_MEAN && bt->loss_norm != AB_LOSS_SAMPLE_MEAN)
        return ab_fail(AB_ERR_ARG, "%s: unknown loss_norm %d", fn, (int)bt->loss_norm);
    if (bt->B < 1 || bt->B > AB_MODEL_MAX_BATCH)
        return ab_fail(AB_ERR_SHAPE, "%s: batch B = %d outside [1, %d]", fn, bt->B, AB_MODEL_MAX_BATCH);
    if (bt->T < 1 || bt->T > m->n_ctx)
        return ab_fail(AB_ERR_SHAPE, "%s: batch T = %d outside [1, n_ctx = %d]", fn, bt->T, m->n_ctx);
    if ((int64_t)bt->B * bt->T > (int64_t)(1 << 30) ||
        (uint64_t)bt->B * (uint64_t)m->n_head * (uint64_t)bt->T * (uint64_t)bt->T > ((uint64_t)1 << 40))
        return ab_fail(AB_ERR_SHAPE, "%s: batch %d x %d is too large", fn, bt->B, bt->T);
    if (!bt->inputs) return ab_fail(AB_ERR_NULL, "%s: 'batch->inputs' is NULL", fn);
    if (!bt->targets) return ab_fail(AB_ERR_NULL, "%s: 'batch->targets' is NULL", fn);
    if (!bt->mask) return ab_fail(AB_ERR_NULL, "%s: 'batch->mask' is NULL", fn);
    for (int i = 0; i < bt->B; i++) {
        for (int t = 0; t < bt->T; t++) {
            size_t r = (size_t)i * bt->T + t;
            int x = bt->inputs[r], y = bt->targets[r];
            float mk = bt->mask[r];
            if (x < 0 || x >= m->n_vocab)
                return ab_fail(AB_ERR_ARG, "%s: inputs[%d][%d] = %d outside [0, vocab = %d)", fn,
                                i, t, x, m->n_vocab);
            if (!isfinite(mk))
                return ab_fail(AB_ERR_NAN, "%s: mask[%d][%d] is not finite", fn, i, t);
            if (mk < 0.0f)
                return ab_fail(AB_ERR_ARG, "%s: mask[%d][%d] = %g is negative", fn, i, t, (double)mk);
            if (mk != 0.0f && (y < 0 || y >= m->n_vocab))
                return ab_fail(AB_ERR_ARG, "%s: targets[%d][%d] = %d outside [0, vocab = %d)",
                                fn, i, t, y, m->n_vocab);
        }
        if (bt->weights) {
            float w = bt->weights[i];
            if (!isfinite(w)) return ab_fail(AB_ERR_NAN, "%s: weights[%d] is not finite", fn, i);
            if (w < 0.0f)
                return ab_fail(AB_ERR_ARG, "%s: weights[%d] = %g is negative", fn, i, (double)w);
        }
        if (bt->lengths && (bt->lengths[i] < 0 || bt->lengths[i] > bt->T))
            return ab_fail(AB_ERR_ARG, "%s: lengths[%d] = %d outside [0, T = %d]", fn, i,
                            bt->lengths[i], bt->T);
    }
    return AB_OK;
}

static ab_status ab__reserve_ints(int **buf, size_t *cap, size_t need) {
    if (*cap >= need && *buf) return AB_OK;
    ab_aligned_free(*buf);
    *cap = 0;
    *buf = (int *)ab_aligned_alloc(need * sizeof(int));
    if (!*buf) return ab_fail(AB_ERR_ALLOC, "model: cannot allocate %zu token ids", need);
    *cap = need;
    return AB_OK;
}

/* The rows of a batch (ab__rows) in *buf: packed when the batch allows it. */
static ab_status ab__rows_build(int **buf, size_t *cap, const ab_batch *bt, ab__rows *rw) {
    const int B = bt->B, T = bt->T;
    int packed = bt->lengths != NULL, R = 0;
    for (int i = 0; i < B && packed; i++) {
        R += bt->lengths[i];
        for (int t = bt->lengths[i]; t < T && packed; t++) packed = bt->mask[(size_t)i * T + t] == 0.0f;
    }
    if (!packed || R == 0) packed = 0, R = B * T;
    AB_TRY(ab__reserve_ints(buf, cap, 3 * (size_t)R + (size_t)B + 1));
    int *in = *buf, *tg = in + R, *pos = tg + R, *off = pos + R, r = 0;
    for (int i = 0; i < B; i++) {
        int n = packed ? bt->lengths[i] : T;
        off[i] = r;
        for (int t = 0; t < n; t++, r++) {
            in[r] = bt->inputs[(size_t)i * T + t], tg[r] = bt->targets[(size_t)i * T + t];
            pos[r] = t;
        }
    }
    off[B] = r;
    rw->B = B, rw->T = T, rw->R = R, rw->packed = packed;
    rw->in = in, rw->tg = tg, rw->pos = pos, rw->off = off;
    return AB_OK;
}
/* The rows of the last training forward, from m->ibuf. */
static ab__rows ab__fwd_rows(const ab_model *m) {
    ab__rows rw;
    rw.B = m->fwd_B, rw.T = m->fwd_T, rw.R = m->fwd_R, rw.packed = m->fwd_R != m->fwd_B * m->fwd_T;
    rw.in = m->ibuf, rw.tg = m->ibuf + rw.R, rw.pos = m->ibuf + 2 * (size_t)rw.R;
    rw.off = m->ibuf + 3 * (size_t)rw.R;
    return rw;
}

/* Antidote statistics of one block: sum over real tokens of x_j^2 per input feature (a packed
 * batch has only real tokens; otherwise lengths, when given, skip the padding). */
static void ab__stats_add(double *s, const float *x, int d, const ab_batch *bt, const ab__rows *rw) {
    for (int i = 0; i < rw->B; i++) {
        int len = bt->lengths ? bt->lengths[i] : rw->T;
        for (int t = 0; t < len; t++) {
            const float *row = x + ((size_t)rw->off[i] + t) * d;
            for (int j = 0; j < d; j++) s[j] += (double)row[j] * (double)row[j];
        }
    }
}
static size_t ab__stats_per_layer(const ab_model *m) { return 7 * (size_t)m->d_model + 3 * (size_t)m->lora_rank; }
static void ab__stats_block(ab_model *m, int l, const ab__block *k, const ab_batch *bt, const ab__rows *rw) {
    size_t d = (size_t)m->d_model, n_tokens = (size_t)rw->R;
    double *s = m->stats + ab__stats_per_layer(m) * l;
    ab__stats_add(s, k->ln1, m->d_model, bt, rw);
    ab__stats_add(s + d, k->atty, m->d_model, bt, rw);
    ab__stats_add(s + 2 * d, k->ln2, m->d_model, bt, rw);
    ab__stats_add(s + 3 * d, k->fch_gelu, 4 * m->d_model, bt, rw);
    if (ab__lora_active(m))
        for (int q = 0; q < 3; q++)
            ab__stats_add(s + 7 * d + (size_t)q * m->lora_rank, k->lora_u + q * n_tokens * m->lora_rank, m->lora_rank, bt, rw);
}

/* The forward pass shared by training (train = 1: n_layer stored blocks) and scoring (one block
 * reused by every layer). */
static ab_status ab__forward(ab_model *m, const ab_batch *bt, const float *perturb, int train,
                             float *loss_out, float *nll_out, float *ntok_out, const char *fn) {
    AB_TRY(ab__check_batch(m, bt, fn));
    const int B = bt->B, T = bt->T, d_model = m->d_model, n_vocab = m->n_vocab;
    const int n_layer = m->n_layer;
    const size_t n_full = (size_t)B * T * d_model; /* floats of one [B][T][d_model] (perturb) */
    if (perturb)
        for (size_t i = 0; i < (size_t)n_layer * n_full; i++)
            if (!isfinite(perturb[i]))
                return ab_fail(AB_ERR_NAN, "%s: attn_perturb[%zu] is not finite", fn, i);
    ab__acts A;
    ab__rows rw;
    if (train) {
        m->fwd_valid = 0;
        AB_TRY(ab__rows_build(&m->ibuf, &m->ibuf_cap, bt, &rw));
        AB_TRY(ab__reserve(&m->acts, &m->acts_cap, ab__acts_layout(m, B, T, rw.R, n_layer, NULL, NULL),
                           "activations"));
        ab__acts_layout(m, B, T, rw.R, n_layer, &A, m->acts);
    } else {
        AB_TRY(ab__rows_build(&m->sibuf, &m->sibuf_cap, bt, &rw));
        AB_TRY(ab__reserve(&m->sacts, &m->sacts_cap, ab__acts_layout(m, B, T, rw.R, 1, NULL, NULL),
                           "scoring activations"));
        ab__acts_layout(m, B, T, rw.R, 1, &A, m->sacts);
    }
    const int n_tokens = rw.R; /* the rows computed: B T, or the real tokens of a packed batch */
    const size_t n_act = (size_t)n_tokens * d_model; /* floats of one [rows][d_model] activation */
    const float *wte = ab__P(m, AB_T_WTE, 0), *wpe = ab__P(m, AB_T_WPE, 0);
    for (int r = 0; r < n_tokens; r++)
        AB_TRY(ab_residual_forward(A.encoded + (size_t)r * d_model, wte + (size_t)rw.in[r] * d_model,
                                   wpe + (size_t)rw.pos[r] * d_model, (size_t)d_model));
    const float *res_in = A.encoded;
    for (int l = 0; l < n_layer; l++) {
        ab__block k = ab__block_at(&A, l);
        AB__PROF(m, AB_PROF_LAYERNORM, ab__ln_fwd(k.ln1, k.ln1_mean, k.ln1_rstd, res_in,
                                                  ab__P(m, AB_T_LN1_W, l), ab__P(m, AB_T_LN1_B, l),
                                                  n_tokens, d_model));
        AB__PROF(m, AB_PROF_MATMUL, ab__qkv_fwd(m, l, k.ln1, k.qkv, k.lora_u, n_tokens));
        AB__PROF(m, AB_PROF_ATTENTION, ab__attn_fwd(m, &rw, k.qkv, k.att, k.atty));
        /* res2 = res_in + H_l (+ E_l): the residual add fused into the projection's output pass
         * (the same bits as the separate add), unless Vaccine's E_l comes first */
        AB__PROF(m, AB_PROF_MATMUL, ab_linear_forward(k.res2, d_model, k.atty, ab__P(m, AB_T_ATTN_PROJ_W, l),
                                                      ab__P(m, AB_T_ATTN_PROJ_B, l), perturb ? NULL : res_in,
                                                      NULL, n_tokens, d_model, d_model));
        if (perturb) { /* H_l + E_l, E_l's rows of each sequence */
            for (int i = 0; i < B; i++)
                AB_TRY(ab_residual_forward(k.res2 + (size_t)rw.off[i] * d_model, k.res2 + (size_t)rw.off[i] * d_model,
                                           perturb + (size_t)l * n_full + (size_t)i * T * d_model,
                                           (size_t)(rw.off[i + 1] - rw.off[i]) * d_model));
            AB_TRY(ab_residual_forward(k.res2, k.res2, res_in, n_act));
        }
        AB__PROF(m, AB_PROF_LAYERNORM, ab__ln_fwd(k.ln2, k.ln2_mean, k.ln2_rstd, k.res2,
                                                  ab__P(m, AB_T_LN2_W, l), ab__P(m, AB_T_LN2_B, l),
                                                  n_tokens, d_model));
        /* fc with GELU, and the MLP projection with the residual add, each in one output pass
         * (forward GELU time is therefore profiled as matmul) */
        AB__PROF(m, AB_PROF_MATMUL, ab_linear_forward(k.fch, 4 * d_model, k.ln2, ab__P(m, AB_T_FC_W, l),
                                                      ab__P(m, AB_T_FC_B, l), NULL, k.fch_gelu,
                                                      n_tokens, d_model, 4 * d_model));
        AB__PROF(m, AB_PROF_MATMUL, ab_linear_forward(k.res3, d_model, k.fch_gelu,
                                                      ab__P(m, AB_T_MLP_PROJ_W, l),
                                                      ab__P(m, AB_T_MLP_PROJ_B, l), k.res2, NULL,
                                                      n_tokens, 4 * d_model, d_model));
        if (m->stats) ab__stats_block(m, l, &k, bt, &rw);
        res_in = k.res3;
    }
    if (m->stats) m->stats_nseq += B;
    AB__PROF(m, AB_PROF_LAYERNORM, ab__ln_fwd(A.lnf, A.lnf_mean, A.lnf_rstd, res_in,
                                              ab__P(m, AB_T_LNF_W, 0), ab__P(m, AB_T_LNF_B, 0),
                                              n_tokens, d_model));
    AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_TRANS, n_tokens, n_vocab, d_model, 1.0f,
                                         A.lnf, d_model, wte, d_model, 0.0f, A.logits, n_vocab));
    /* per-token CE of the response tokens (the mask only selects rows here; w_i enters below);
     * tokw holds the rows' mask until it gets each token's gradient factor */
    for (int i = 0; i < B; i++)
        memcpy(A.tokw + rw.off[i], bt->mask + (size_t)i * T, sizeof(float) * (size_t)(rw.off[i + 1] - rw.off[i]));
    AB__PROF(m, AB_PROF_SOFTMAX_CE, ab__ce(A.losses, NULL, A.logits, rw.tg, A.tokw, n_tokens, n_vocab, 0.0f));
    /* Token mean: Loss = sum_i w_i sum_t m_it CE_it / max(1, sum_i w_i N_i). Sample mean:
     * Loss = sum_i w_i l_i (Z = 1). Sums in double, in sample order. tokw holds each token's
     * gradient factor, the scale 1/Z is applied in the backward. */
    const int sample_mean = bt->loss_norm == AB_LOSS_SAMPLE_MEAN;
    const float uniform = sample_mean ? (float)(1.0 / (double)B) : 1.0f;
    double Z = 0.0, num = 0.0;
    for (int i = 0; i < B; i++) {
        float w_f = bt->weights ? bt->weights[i] : uniform;
        double w = (double)w_f, n_i = 0.0, s_i = 0.0;
        const int r0 = rw.off[i], r1 = rw.off[i + 1];
        for (int r = r0; r < r1; r++) {
            n_i += A.tokw[r];
            s_i += (double)A.tokw[r] * (double)A.losses[r];
        }
        double l_i = n_i > 0.0 ? s_i / n_i : 0.0;
        Z += w * n_i;
        num += sample_mean ? w * l_i : w * s_i;
        if (nll_out) nll_out[i] = (float)l_i;
        if (ntok_out) ntok_out[i] = (float)n_i;
        if (train) {
            float f = sample_mean ? (n_i > 0.0 ? (float)(w / n_i) : 0.0f) : w_f;
            for (int r = r0; r < r1; r++) A.tokw[r] = f * A.tokw[r];
        }
    }
    Z = sample_mean ? 1.0 : (Z > 1.0 ? Z : 1.0);
    float loss = (float)(num / Z);
    if (loss_out) *loss_out = loss;
    if (!isfinite(loss)) return ab_fail(AB_ERR_NAN, "%s: the loss is not finite", fn);
    if (train) {
        m->A = A;
        m->fwd_B = B, m->fwd_T = T, m->fwd_R = rw.R, m->fwd_Z = Z;
        m->fwd_valid = 1;
    }
    return AB_OK;
}

ABDEF ab_status ab_model_forward(ab_model *m, const ab_batch *batch, const ab_forward_opts *opts,
                                 float *loss, float *sample_nll, float *sample_tokens) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    return ab__forward(m, batch, opts ? opts->attn_perturb : NULL, 1, loss, sample_nll,
                       sample_tokens, "ab_model_forward");
}

ABDEF ab_status ab_model_score(ab_model *m, const ab_batch *batch, float *loss, float *sample_nll,
                               float *sample_tokens) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    return ab__forward(m, batch, NULL, 0, loss, sample_nll, sample_tokens, "ab_model_score");
}

ABDEF ab_status ab_model_logits(ab_model *m, const float **logits) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(logits);
    if (!m->fwd_valid)
        return ab_fail(AB_ERR_STATE, "ab_model_logits: no training forward since the last change");
    *logits = m->A.logits;
    return AB_OK;
}

/* --- backward ----------------------------------------------------------------------------------- */
typedef struct ab__gacts {
    float *dlogits;   /* [n_tokens][n_vocab] */
    float *dlnf;      /* [n_tokens][d_model] gradient at the final LN's output (LM head input) */
    float *dres;      /* [n_tokens][d_model] running residual gradient; after phase 1: d encoded */
    float *datty;     /* [n_tokens][d_model] scratch */
    float *dfch_gelu; /* [n_tokens][4 d_model] scratch */
    float *datt, *dpreatt; /* [B][n_head][T][T] scratch */
    float *tmp;       /* [max(n_tokens d_model, T T)] scratch for the per-sample norms */
    /* (n_tokens: the rows of the forward, ab__rows R) */
    float *sq;        /* [B] per-sample squared norms */
    float *blocks;
    size_t stride;
    size_t o_dmproj, o_dfch, o_dln2, o_daproj, o_dqkv, o_du, o_dln1;
} ab__gacts;

static size_t ab__gacts_layout(const ab_model *m, int B, int T, int R, ab__gacts *g, float *base) {
    size_t n_tokens = (size_t)R, n_act = n_tokens * (size_t)m->d_model, TT = (size_t)T * T;
    size_t cur = 0, bc = 0;
    size_t o_dlogits = ab__bump(&cur, n_tokens * (size_t)m->n_vocab), o_dlnf = ab__bump(&cur, n_act);
    size_t o_dres = ab__bump(&cur, n_act), o_datty = ab__bump(&cur, n_act);
    size_t BHTT = (size_t)B * m->n_head * TT;
    size_t o_dfg = ab__bump(&cur, 4 * n_act), o_datt = ab__bump(&cur, BHTT);
    size_t o_dpre = ab__bump(&cur, BHTT), o_tmp = ab__bump(&cur, n_act > TT ? n_act : TT);
    size_t o_sq = ab__bump(&cur, (size_t)B);
    ab__gacts g0;
    g0.o_dmproj = ab__bump(&bc, n_act);
    g0.o_dfch = ab__bump(&bc, 4 * n_act);
    g0.o_dln2 = ab__bump(&bc, n_act);
    g0.o_daproj = ab__bump(&bc, n_act);
    g0.o_dqkv = ab__bump(&bc, 3 * n_act);
    g0.o_du = ab__bump(&bc, 3 * n_tokens * (size_t)m->lora_rank);
    g0.o_dln1 = ab__bump(&bc, n_act);
    size_t o_blocks = ab__bump(&cur, bc * (size_t)m->n_layer);
    if (g && base) {
        *g = g0;
        g->dlogits = base + o_dlogits, g->dlnf = base + o_dlnf, g->dres = base + o_dres;
        g->datty = base + o_datty, g->dfch_gelu = base + o_dfg, g->datt = base + o_datt;
        g->dpreatt = base + o_dpre, g->tmp = base + o_tmp, g->sq = base + o_sq;
        g->blocks = base + o_blocks;
        g->stride = bc;
    }
    return cur;
}

static ab__gblock ab__gblock_at(const ab__gacts *g, int l) {
    float *p = g->blocks + g->stride * (size_t)l;
    ab__gblock k;
    k.dmproj = p + g->o_dmproj, k.dfch = p + g->o_dfch, k.dln2 = p + g->o_dln2;
    k.daproj = p + g->o_daproj, k.dqkv = p + g->o_dqkv, k.du = p + g->o_du, k.dln1 = p + g->o_dln1;
    return k;
}

/* One (sequence, head) pair of the attention backward: dq/dk/dv columns of dqkv accumulate. */
static ab_status ab__attn_bwd_pair(const float *q, const float *a, const float *dy, float *dq,
                                   float *da, float *dp, int T, int d_model, int head_size,
                                   float scale) {
    /* datt = dy v^T; dv += att^T dy */
    AB_TRY(ab_sgemm(AB_NO_TRANS, AB_TRANS, T, T, head_size, 1.0f, dy, d_model, q + 2 * d_model,
                    3 * d_model, 0.0f, da, T));
    AB_TRY(ab_sgemm(AB_TRANS, AB_NO_TRANS, T, head_size, T, 1.0f, a, T, dy, d_model, 1.0f,
                    dq + 2 * d_model, 3 * d_model));
    memset(dp, 0, sizeof(float) * (size_t)T * T);
    AB_TRY(ab_softmax_backward(dp, a, da, T, T)); /* masked entries: att = 0, so dp = 0 */
    /* dq += scale dp k; dk += scale dp^T q */
    AB_TRY(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, T, head_size, T, scale, dp, T, q + d_model,
                    3 * d_model, 1.0f, dq, 3 * d_model));
    return ab_sgemm(AB_TRANS, AB_NO_TRANS, T, head_size, T, scale, dp, T, q, 3 * d_model, 1.0f,
                    dq + d_model, 3 * d_model);
}

/* Backward of ab__attn_fwd for one block: dqkv (zeroed by the caller) accumulates. The
 * (sequence, head) pairs are parallel chunks as in the forward; each owns its dq/dk/dv columns of
 * its sequence and its [T][T] scratch slices of da and dp. */
static ab_status ab__attn_bwd_chunk(void *ctx, int bh, int slot) {
    const ab__attn_job *j = (const ab__attn_job *)ctx;
    const int d_model = j->m->d_model, n_head = j->m->n_head, head_size = j->m->head_size;
    int b = bh / n_head, h = bh % n_head, n = j->rw->off[b + 1] - j->rw->off[b];
    size_t o = (size_t)j->rw->off[b] * 3 * d_model + (size_t)h * head_size;
    size_t tt = (size_t)bh * j->rw->T * j->rw->T;
    (void)slot;
    if (n == 0) return AB_OK;
    return ab__attn_bwd_pair(j->qkv + o, j->att_in + tt,
                             j->datty + (size_t)j->rw->off[b] * d_model + (size_t)h * head_size,
                             j->dqkv + o, j->da_all + tt, j->dp_all + tt, n, d_model, head_size, j->scale);
}

static ab_status ab__attn_bwd(const ab_model *m, const ab__rows *rw, const float *qkv, const float *att,
                              const float *datty, float *dqkv, float *da_all, float *dp_all) {
    ab__attn_job j;
    memset(&j, 0, sizeof j);
    j.m = m, j.rw = rw, j.qkv = qkv, j.att_in = att, j.datty = datty, j.dqkv = dqkv;
    j.da_all = da_all, j.dp_all = dp_all;
    j.scale = 1.0f / sqrtf((float)m->head_size);
    return ab_parallel_for(rw->B * m->n_head, ab__attn_bwd_chunk, &j);
}

/* dW[d_out][d_in] += alpha * G^T X over `rows` rows (G row stride ldg, X row stride ldx). */
static ab_status ab__weight_grad(float *dW, const float *G, int ldg, const float *X, int ldx,
                                 int rows, int d_out, int d_in, float alpha) {
    return ab_sgemm(AB_TRANS, AB_NO_TRANS, d_out, d_in, rows, alpha, G, ldg, X, ldx, 1.0f, dW, d_in);
}
/* Sums over rows (bias and LayerNorm parameter gradients, the position embedding's), threaded by
 * columns: slices of AB__COL_SLICE columns are the chunks of one ab_parallel_for, and each walks
 * every row in order, so every sum keeps the serial order: the same bits for any thread count.
 * Below AB__COL_PAR_MIN elements it is one chunk on the calling thread. */
#define AB__COL_SLICE 32
#define AB__COL_PAR_MIN 65536
typedef struct ab__colsum_job {
    float *dw, *db;             /* dw may be NULL: plain sum into db */
    const float *dout, *x, *mean, *rstd;
    const int *rowpos;          /* non-NULL: row r adds into row rowpos[r] of db (cols wide) */
    int rows, cols;
} ab__colsum_job;

/* One row of a slice: w columns from c0. A full slice has a constant trip count, which lets the
 * compiler vectorise it without changing any operation (no FMA contraction in ISO C mode). */
#if defined(__GNUC__) || defined(__clang__)
#define AB__RESTRICT __restrict /* C99's restrict, also in C++ */
#else
#define AB__RESTRICT
#endif
static void ab__colsum_row(float *AB__RESTRICT dw, float *AB__RESTRICT db, const float *AB__RESTRICT dr,
                           const float *AB__RESTRICT xr, float mu, float rs, int w) {
    if (w == AB__COL_SLICE) {
        if (dw)
            for (int c = 0; c < AB__COL_SLICE; c++) dw[c] += (xr[c] - mu) * rs * dr[c];
        for (int c = 0; c < AB__COL_SLICE; c++) db[c] += dr[c];
        return;
    }
    if (dw)
        for (int c = 0; c < w; c++) dw[c] += (xr[c] - mu) * rs * dr[c];
    for (int c = 0; c < w; c++) db[c] += dr[c];
}

static ab_status ab__colsum_chunk(void *ctx, int chunk, int slot) {
    const ab__colsum_job *j = (const ab__colsum_job *)ctx;
    int j0 = chunk * AB__COL_SLICE, j1 = j0 + AB__COL_SLICE < j->cols ? j0 + AB__COL_SLICE : j->cols;
    (void)slot;
    for (int r = 0; r < j->rows; r++) {
        size_t o = (size_t)r * j->cols + j0;
        float *db = j->db + (j->rowpos ? (size_t)j->rowpos[r] * j->cols : 0) + j0;
        ab__colsum_row(j->dw ? j->dw + j0 : NULL, db, j->dout + o, j->dw ? j->x + o : NULL,
                       j->dw ? j->mean[r] : 0.0f, j->dw ? j->rstd[r] : 0.0f, j1 - j0);
    }
    return AB_OK;
}

static ab_status ab__colsum(ab__colsum_job *j) {
    int slices = (j->cols + AB__COL_SLICE - 1) / AB__COL_SLICE;
    if ((size_t)j->rows * j->cols < AB__COL_PAR_MIN) {
        for (int c = 0; c < slices; c++) AB_TRY(ab__colsum_chunk(j, c, 0));
        return AB_OK;
    }
    return ab_parallel_for(slices, ab__colsum_chunk, j);
}

static ab_status ab__bias_grad(float *db, const float *G, int rows, int d) {
    ab__colsum_job j;
    memset(&j, 0, sizeof j);
    j.db = db, j.dout = G, j.rows = rows, j.cols = d;
    return ab__colsum(&j);
}
/* LayerNorm weight and bias gradients from the stored statistics: dw += xhat * dout, db += dout. */
static ab_status ab__ln_param_grads(float *dw, float *db, const float *dout, const float *x,
                                    const float *mean, const float *rstd, int rows, int d_model) {
    ab__colsum_job j;
    memset(&j, 0, sizeof j);
    j.dw = dw, j.db = db, j.dout = dout, j.x = x, j.mean = mean, j.rstd = rstd;
    j.rows = rows, j.cols = d_model;
    return ab__colsum(&j);
}

/* Per-sample squared norm of a LayerNorm's weight and bias gradients, exact, O(T d) per sample. */
static void ab__psnorm_ln(float *sq, const float *dout, const float *x, const float *mean,
                          const float *rstd, const ab__rows *rw, int d_model, double *ws) {
    for (int i = 0; i < rw->B; i++) {
        double *dw = ws, *db = ws + d_model;
        for (int j = 0; j < 2 * d_model; j++) ws[j] = 0.0;
        for (int r = rw->off[i]; r < rw->off[i + 1]; r++) {
            const float *xr = x + (size_t)r * d_model, *dr = dout + (size_t)r * d_model;
            for (int j = 0; j < d_model; j++) {
                dw[j] += (double)((xr[j] - mean[r]) * rstd[r]) * dr[j];
                db[j] += dr[j];
            }
        }
        double s = 0.0;
        for (int j = 0; j < 2 * d_model; j++) s += ws[j] * ws[j];
        sq[i] += (float)s;
    }
}

/* ab_psnorm_linear and ab_psnorm_embedding over the forward's rows: one call for B sequences of
 * T rows, or one per sequence of a packed batch. */
static ab_status ab__psnorm_lin(float *sq, float *sq_b, const float *X, const float *G,
                                const ab__rows *rw, int d_in, int d_out, ab_psnorm_method method) {
    if (!rw->packed) return ab_psnorm_linear(sq, sq_b, X, G, rw->B, rw->T, d_in, d_out, method);
    for (int i = 0; i < rw->B; i++) {
        int n = rw->off[i + 1] - rw->off[i];
        if (n > 0)
            AB_TRY(ab_psnorm_linear(sq + i, sq_b ? sq_b + i : NULL, X + (size_t)rw->off[i] * d_in,
                                    G + (size_t)rw->off[i] * d_out, 1, n, d_in, d_out, method));
    }
    return AB_OK;
}
static ab_status ab__psnorm_emb(float *sq, const float *G, const ab__rows *rw, int vocab, int dim) {
    if (!rw->packed) return ab_psnorm_embedding(sq, rw->in, G, rw->B, rw->T, vocab, dim);
    for (int i = 0; i < rw->B; i++) {
        int n = rw->off[i + 1] - rw->off[i];
        if (n > 0)
            AB_TRY(ab_psnorm_embedding(sq + i, rw->in + rw->off[i], G + (size_t)rw->off[i] * dim, 1, n,
                                       vocab, dim));
    }
    return AB_OK;
}

/* The per-sample norm of the tied wte and of wpe (base training): the LM head and the embedding
 * use of wte, and their cross term; wpe takes each position once per sample. */
static ab_status ab__psnorm_embeddings(ab_model *m, const ab__gacts *G, float *sq,
                                       ab_psnorm_method method) {
    const ab__acts *A = &m->A;
    const ab__rows rw = ab__fwd_rows(m);
    const int B = rw.B, d_model = m->d_model, n_vocab = m->n_vocab;
    const int *ids = rw.in;
    AB_TRY(ab__psnorm_lin(sq, NULL, A->lnf, G->dlogits, &rw, d_model, n_vocab, method));
    AB_TRY(ab__psnorm_emb(sq, G->dres, &rw, n_vocab, d_model));
    for (int i = 0; i < B; i++) {
        size_t o = (size_t)rw.off[i];
        const int T = rw.off[i + 1] - rw.off[i];
        if (T == 0) continue;
        float *M = G->tmp; /* M[t][s] = h_t . g_s */
        AB_TRY(ab_sgemm(AB_NO_TRANS, AB_TRANS, T, T, d_model, 1.0f, A->lnf + o * d_model, d_model,
                        G->dres + o * d_model, d_model, 0.0f, M, T));
        double cross = 0.0;
        for (int t = 0; t < T; t++) {
            const float *dl = G->dlogits + (o + t) * n_vocab;
            for (int s = 0; s < T; s++) cross += (double)dl[ids[o + s]] * (double)M[(size_t)t * T + s];
        }
        sq[i] += (float)(2.0 * cross);
        double s; /* wpe: each position once per sample */
        AB_TRY(ab_sumsq(G->dres + o * d_model, (size_t)T * d_model, &s));
        sq[i] += (float)s;
    }
    return AB_OK;
}

/* Per-sample squared gradient norms over the trainable tensors, from the stored output gradients.
 * The tied wte is the sum of two uses (LM head: sum_t dl_t h_t^T, embedding: sum_t e_{x_t} g_t^T),
 * so ||G_i||^2 = ||head||^2 + ||emb||^2 + 2 <head, emb>, and the cross term is itself a ghost sum:
 * <head, emb> = sum_{t,s} dl_t[x_s] (h_t . g_s), O(T^2 d) per sample: exact, and nothing of size
 * n_vocab x d is materialised. ws: 2 d_model doubles. */
static ab_status ab__psnorms_ws(ab_model *m, const ab__gacts *G, float *sq, ab_psnorm_method method,
                                double *ws) {
    const ab__acts *A = &m->A;
    const ab__rows rw = ab__fwd_rows(m);
    const int n_tokens = rw.R, d_model = m->d_model;
    const int rank = m->lora_rank, n_layer = m->n_layer;
    int base = ab__trains(m, AB_T_WTE), lora = rank > 0 && ab__trains(m, AB_T_LORA_Q_A);
    if (base) {
        AB_TRY(ab__psnorm_embeddings(m, G, sq, method));
        const float *res_last = ab__block_at(A, n_layer - 1).res3;
        ab__psnorm_ln(sq, G->dlnf, res_last, A->lnf_mean, A->lnf_rstd, &rw, d_model, ws);
    }
    for (int l = 0; l < n_layer; l++) {
        ab__block k = ab__block_at(A, l);
        ab__gblock g = ab__gblock_at(G, l);
        if (base) {
            const float *res_in = l ? ab__block_at(A, l - 1).res3 : A->encoded;
            ab__psnorm_ln(sq, g.dln1, res_in, k.ln1_mean, k.ln1_rstd, &rw, d_model, ws);
            ab__psnorm_ln(sq, g.dln2, k.res2, k.ln2_mean, k.ln2_rstd, &rw, d_model, ws);
            AB_TRY(ab__psnorm_lin(sq, sq, k.ln1, g.dqkv, &rw, d_model, 3 * d_model, method));
            AB_TRY(ab__psnorm_lin(sq, sq, k.atty, g.daproj, &rw, d_model, d_model, method));
            AB_TRY(ab__psnorm_lin(sq, sq, k.ln2, g.dfch, &rw, d_model, 4 * d_model, method));
            AB_TRY(ab__psnorm_lin(sq, sq, k.fch_gelu, g.dmproj, &rw, 4 * d_model, d_model, method));
        }
        for (int q = 0; q < 3 && lora; q++) {
            const float *u = k.lora_u + (size_t)q * n_tokens * rank;
            const float *du = g.du + (size_t)q * n_tokens * rank;
            AB_TRY(ab__psnorm_lin(sq, NULL, k.ln1, du, &rw, d_model, rank, method)); /* A_q */
            for (int row = 0; row < n_tokens; row++) { /* B_q: output grad scale * dq */
                const float *src = g.dqkv + (size_t)row * 3 * d_model + (size_t)q * d_model;
                float *dst = G->tmp + (size_t)row * d_model;
                for (int j = 0; j < d_model; j++) dst[j] = m->lora_scale * src[j];
            }
            AB_TRY(ab__psnorm_lin(sq, NULL, u, G->tmp, &rw, rank, d_model, method));
        }
    }
    return AB_OK;
}

static ab_status ab__psnorms(ab_model *m, const ab__gacts *G, float *sq, ab_psnorm_method method) {
    for (int i = 0; i < m->fwd_B; i++) sq[i] = 0.0f;
    double *ws = (double *)ab_aligned_alloc(sizeof(double) * 2 * (size_t)m->d_model);
    if (!ws) return ab_fail(AB_ERR_ALLOC, "ab_model_backward: per-sample norm workspace");
    ab_status st = ab__psnorms_ws(m, G, sq, method, ws);
    ab_aligned_free(ws);
    return st;
}

/* Per-sample clipping: sample i's rows of every stored output gradient times f_i. */
static ab_status ab__scale_samples(float *buf, const float *f, const ab__rows *rw, size_t width) {
    for (int i = 0; i < rw->B; i++)
        if (f[i] != 1.0f)
            AB_TRY(ab_scale(buf + (size_t)rw->off[i] * width, (size_t)(rw->off[i + 1] - rw->off[i]) * width, f[i]));
    return AB_OK;
}
static ab_status ab__clip_samples(ab_model *m, const ab__gacts *G, const float *f) {
    const ab__rows rw = ab__fwd_rows(m);
    const size_t d_model = (size_t)m->d_model, rank = (size_t)m->lora_rank;
    AB_TRY(ab__scale_samples(G->dlogits, f, &rw, (size_t)m->n_vocab));
    AB_TRY(ab__scale_samples(G->dlnf, f, &rw, d_model));
    AB_TRY(ab__scale_samples(G->dres, f, &rw, d_model));
    for (int l = 0; l < m->n_layer; l++) {
        ab__gblock g = ab__gblock_at(G, l);
        AB_TRY(ab__scale_samples(g.dmproj, f, &rw, d_model));
        AB_TRY(ab__scale_samples(g.dfch, f, &rw, 4 * d_model));
        AB_TRY(ab__scale_samples(g.dln2, f, &rw, d_model));
        AB_TRY(ab__scale_samples(g.daproj, f, &rw, d_model));
        AB_TRY(ab__scale_samples(g.dqkv, f, &rw, 3 * d_model));
        AB_TRY(ab__scale_samples(g.dln1, f, &rw, d_model));
        for (int q = 0; q < 3 && rank > 0 && ab__lora_active(m); q++)
            AB_TRY(ab__scale_samples(g.du + (size_t)q * rw.R * rank, f, &rw, rank));
    }
    return AB_OK;
}

/* Phase 2 for wte, wpe and the final LayerNorm. */
static ab_status ab__weight_grads_top(ab_model *m, const ab__gacts *G) {
    const ab__acts *A = &m->A;
    const ab__rows rw = ab__fwd_rows(m);
    const int n_tokens = rw.R, d_model = m->d_model, n_vocab = m->n_vocab;
    const int *ids = rw.in;
    float *dwte = ab__G(m, AB_T_WTE, 0), *dwpe = ab__G(m, AB_T_WPE, 0);
    AB__PROF(m, AB_PROF_MATMUL, ab__weight_grad(dwte, G->dlogits, n_vocab, A->lnf, d_model, n_tokens,
                                                n_vocab, d_model, 1.0f)); /* LM head */
    /* embedding: rows of dwte in token order; positions: each row adds into its position's row of dwpe */
    AB_TRY(ab_embedding_backward(dwte, G->dres, ids, n_tokens, n_vocab, d_model));
    ab__colsum_job pj;
    memset(&pj, 0, sizeof pj);
    pj.db = dwpe, pj.dout = G->dres, pj.rows = n_tokens, pj.cols = d_model, pj.rowpos = rw.pos;
    AB_TRY(ab__colsum(&pj));
    AB__PROF(m, AB_PROF_LAYERNORM,
             ab__ln_param_grads(ab__G(m, AB_T_LNF_W, 0), ab__G(m, AB_T_LNF_B, 0), G->dlnf,
                                ab__block_at(A, m->n_layer - 1).res3, A->lnf_mean, A->lnf_rstd,
                                n_tokens, d_model));
    return AB_OK;
}

/* Phase 2 for the base tensors of block l. */
static ab_status ab__weight_grads_block(ab_model *m, const ab__gacts *G, int l) {
    const ab__acts *A = &m->A;
    const int n_tokens = m->fwd_R, d_model = m->d_model;
    ab__block k = ab__block_at(A, l);
    ab__gblock g = ab__gblock_at(G, l);
    const float *res_in = l ? ab__block_at(A, l - 1).res3 : A->encoded;
    AB__PROF(m, AB_PROF_LAYERNORM,
             ab__ln_param_grads(ab__G(m, AB_T_LN1_W, l), ab__G(m, AB_T_LN1_B, l), g.dln1, res_in,
                                k.ln1_mean, k.ln1_rstd, n_tokens, d_model));
    AB__PROF(m, AB_PROF_LAYERNORM,
             ab__ln_param_grads(ab__G(m, AB_T_LN2_W, l), ab__G(m, AB_T_LN2_B, l), g.dln2, k.res2,
                                k.ln2_mean, k.ln2_rstd, n_tokens, d_model));
    AB__PROF(m, AB_PROF_MATMUL, ab__weight_grad(ab__G(m, AB_T_QKV_W, l), g.dqkv, 3 * d_model, k.ln1,
                                                d_model, n_tokens, 3 * d_model, d_model, 1.0f));
    AB__PROF(m, AB_PROF_MATMUL, ab__weight_grad(ab__G(m, AB_T_ATTN_PROJ_W, l), g.daproj, d_model,
                                                k.atty, d_model, n_tokens, d_model, d_model, 1.0f));
    AB__PROF(m, AB_PROF_MATMUL, ab__weight_grad(ab__G(m, AB_T_FC_W, l), g.dfch, 4 * d_model, k.ln2,
                                                d_model, n_tokens, 4 * d_model, d_model, 1.0f));
    AB__PROF(m, AB_PROF_MATMUL, ab__weight_grad(ab__G(m, AB_T_MLP_PROJ_W, l), g.dmproj, d_model,
                                                k.fch_gelu, 4 * d_model, n_tokens, d_model,
                                                4 * d_model, 1.0f));
    AB_TRY(ab__bias_grad(ab__G(m, AB_T_QKV_B, l), g.dqkv, n_tokens, 3 * d_model));
    AB_TRY(ab__bias_grad(ab__G(m, AB_T_ATTN_PROJ_B, l), g.daproj, n_tokens, d_model));
    AB_TRY(ab__bias_grad(ab__G(m, AB_T_FC_B, l), g.dfch, n_tokens, 4 * d_model));
    return ab__bias_grad(ab__G(m, AB_T_MLP_PROJ_B, l), g.dmproj, n_tokens, d_model);
}

/* Phase 2 for the LoRA adapters of block l. */
static ab_status ab__weight_grads_lora(ab_model *m, const ab__gacts *G, int l) {
    const int n_tokens = m->fwd_R, d_model = m->d_model, rank = m->lora_rank;
    ab__block k = ab__block_at(&m->A, l);
    ab__gblock g = ab__gblock_at(G, l);
    for (int q = 0; q < 3; q++) {
        const float *u = k.lora_u + (size_t)q * n_tokens * rank;
        const float *du = g.du + (size_t)q * n_tokens * rank;
        AB__PROF(m, AB_PROF_MATMUL, ab__weight_grad(ab__G(m, (ab_tensor_kind)(AB_T_LORA_Q_A + 2 * q), l),
                                                    du, rank, k.ln1, d_model, n_tokens, rank,
                                                    d_model, 1.0f));
        AB__PROF(m, AB_PROF_MATMUL, ab__weight_grad(ab__G(m, (ab_tensor_kind)(AB_T_LORA_Q_B + 2 * q), l),
                                                    g.dqkv + (size_t)q * d_model, 3 * d_model, u,
                                                    rank, n_tokens, d_model, rank, m->lora_scale));
    }
    return AB_OK;
}

/* Phase 2: every trainable tensor's gradient from the stored output gradients. */
static ab_status ab__weight_grads(ab_model *m, const ab__gacts *G) {
    int base = ab__trains(m, AB_T_WTE), lora = m->lora_rank > 0 && ab__trains(m, AB_T_LORA_Q_A);
    if (base) AB_TRY(ab__weight_grads_top(m, G));
    for (int l = 0; l < m->n_layer; l++) {
        if (base) AB_TRY(ab__weight_grads_block(m, G, l));
        if (lora) AB_TRY(ab__weight_grads_lora(m, G, l));
    }
    return AB_OK;
}

/* Phase 1 for block l, top to bottom: G->dres holds dLoss/d(block output) on entry and
 * dLoss/d(block input) on exit; every linear layer's output gradient is stored in its gblock. */
static ab_status ab__backward_block(ab_model *m, ab__gacts *G, int l, float *attn_grad) {
    const ab__acts *A = &m->A;
    const ab__rows rw = ab__fwd_rows(m);
    const int n_tokens = rw.R, d_model = m->d_model;
    const int rank = m->lora_rank;
    const size_t n_act = (size_t)n_tokens * d_model;
    ab__block k = ab__block_at(A, l);
    ab__gblock g = ab__gblock_at(G, l);
    const float *res_in = l ? ab__block_at(A, l - 1).res3 : A->encoded;
    memcpy(g.dmproj, G->dres, sizeof(float) * n_act);
    AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n_tokens, 4 * d_model, d_model,
                                         1.0f, G->dres, d_model, ab__P(m, AB_T_MLP_PROJ_W, l),
                                         4 * d_model, 0.0f, G->dfch_gelu, 4 * d_model));
    memset(g.dfch, 0, sizeof(float) * 4 * n_act);
    AB__PROF(m, AB_PROF_GELU, ab__gelu(NULL, g.dfch, k.fch, G->dfch_gelu, 4 * n_act));
    AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n_tokens, d_model, 4 * d_model,
                                         1.0f, g.dfch, 4 * d_model, ab__P(m, AB_T_FC_W, l), d_model,
                                         0.0f, g.dln2, d_model));
    AB__PROF(m, AB_PROF_LAYERNORM, ab__ln_bwd_dx(G->dres, g.dln2, k.res2, ab__P(m, AB_T_LN2_W, l),
                                                 k.ln2_mean, k.ln2_rstd, n_tokens, d_model));
    memcpy(g.daproj, G->dres, sizeof(float) * n_act); /* dLoss/dH_l */
    if (attn_grad) { /* [B][T][d] per layer: each sequence's rows, zeros on its padding */
        const size_t seq = (size_t)rw.T * d_model;
        float *ag = attn_grad + (size_t)l * rw.B * seq;
        for (int i = 0; i < rw.B; i++) {
            size_t n = (size_t)(rw.off[i + 1] - rw.off[i]) * d_model;
            memcpy(ag + i * seq, G->dres + (size_t)rw.off[i] * d_model, sizeof(float) * n);
            memset(ag + i * seq + n, 0, sizeof(float) * (seq - n));
        }
    }
    AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n_tokens, d_model, d_model, 1.0f,
                                         G->dres, d_model, ab__P(m, AB_T_ATTN_PROJ_W, l), d_model,
                                         0.0f, G->datty, d_model));
    memset(g.dqkv, 0, sizeof(float) * 3 * n_act);
    AB__PROF(m, AB_PROF_ATTENTION, ab__attn_bwd(m, &rw, k.qkv, k.att, G->datty, g.dqkv, G->datt,
                                                G->dpreatt));
    AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n_tokens, d_model, 3 * d_model,
                                         1.0f, g.dqkv, 3 * d_model, ab__P(m, AB_T_QKV_W, l), d_model,
                                         0.0f, g.dln1, d_model));
    for (int q = 0; q < 3 && ab__lora_active(m); q++) { /* du = scale dq B; dln1 += du A */
        float *du = g.du + (size_t)q * n_tokens * rank;
        AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n_tokens, rank, d_model,
                                             m->lora_scale, g.dqkv + (size_t)q * d_model,
                                             3 * d_model, ab__lora_b(m, q, l), rank, 0.0f, du, rank));
        AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n_tokens, d_model, rank, 1.0f,
                                             du, rank, ab__lora_a(m, q, l), d_model, 1.0f, g.dln1,
                                             d_model));
    }
    AB__PROF(m, AB_PROF_LAYERNORM, ab__ln_bwd_dx(G->dres, g.dln1, res_in, ab__P(m, AB_T_LN1_W, l),
                                                 k.ln1_mean, k.ln1_rstd, n_tokens, d_model));
    return AB_OK;
}

ABDEF ab_status ab_model_backward(ab_model *m, const ab_backward_opts *o) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    if (!m->fwd_valid)
        return ab_fail(AB_ERR_STATE, "ab_model_backward: no valid ab_model_forward to differentiate "
                                     "(none yet, or weights/LoRA state changed since)");
    if (m->merged && m->lora_rank > 0 && m->mode != AB_TRAIN_BASE)
        return ab_fail(AB_ERR_STATE, "ab_model_backward: LoRA adapters are merged; unmerge them "
                                     "or train AB_TRAIN_BASE");
    int want_norms = 0;
    ab_psnorm_method method = AB_PSNORM_AUTO;
    if (o) {
        if (!isfinite(o->clip_norm) || o->clip_norm < 0.0f)
            return ab_fail(AB_ERR_ARG, "ab_model_backward: clip_norm = %g must be finite and >= 0",
                           (double)o->clip_norm);
        if (o->psnorm_method != AB_PSNORM_AUTO && o->psnorm_method != AB_PSNORM_GHOST &&
            o->psnorm_method != AB_PSNORM_MATERIALIZE)
            return ab_fail(AB_ERR_ARG, "ab_model_backward: unknown psnorm_method %d",
                           (int)o->psnorm_method);
        method = o->psnorm_method;
        want_norms = o->sample_norms != NULL || o->clip_norm > 0.0f;
    }
    AB_TRY(ab__ensure_train_buffers(m));
    const int B = m->fwd_B, T = m->fwd_T, n_tokens = m->fwd_R, d_model = m->d_model;
    const int n_vocab = m->n_vocab;
    AB_TRY(ab__reserve(&m->gacts, &m->gacts_cap, ab__gacts_layout(m, B, T, n_tokens, NULL, NULL),
                       "output gradients"));
    ab__gacts G;
    ab__gacts_layout(m, B, T, n_tokens, &G, m->gacts);
    const ab__acts *A = &m->A;
    /* phase 1: activation gradients, top to bottom, storing each linear layer's output gradient */
    ab__zero(G.dlogits, (size_t)n_tokens * n_vocab);
    AB__PROF(m, AB_PROF_SOFTMAX_CE, ab__ce(NULL, G.dlogits, A->logits, ab__fwd_rows(m).tg, A->tokw,
                                           n_tokens, n_vocab, (float)(1.0 / m->fwd_Z)));
    AB__PROF(m, AB_PROF_MATMUL, ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n_tokens, d_model, n_vocab, 1.0f,
                                         G.dlogits, n_vocab, ab__P(m, AB_T_WTE, 0), d_model, 0.0f,
                                         G.dlnf, d_model));
    memset(G.dres, 0, sizeof(float) * (size_t)n_tokens * d_model);
    AB__PROF(m, AB_PROF_LAYERNORM,
             ab__ln_bwd_dx(G.dres, G.dlnf, ab__block_at(A, m->n_layer - 1).res3,
                           ab__P(m, AB_T_LNF_W, 0), A->lnf_mean, A->lnf_rstd, n_tokens, d_model));
    for (int l = m->n_layer - 1; l >= 0; l--)
        AB_TRY(ab__backward_block(m, &G, l, o ? o->attn_grad : NULL));
    /* between the phases: per-sample norms and clipping */
    if (want_norms) {
        AB__PROF(m, AB_PROF_PSNORM, ab__psnorms(m, &G, G.sq, method));
        for (int i = 0; i < B; i++) {
            float norm = sqrtf(G.sq[i] > 0.0f ? G.sq[i] : 0.0f);
            if (o->sample_norms) o->sample_norms[i] = norm;
            G.sq[i] = o->clip_norm > 0.0f && norm > o->clip_norm ? o->clip_norm / norm : 1.0f;
        }
        if (o->clip_norm > 0.0f) AB__PROF(m, AB_PROF_PSNORM, ab__clip_samples(m, &G, G.sq));
    }
    /* phase 2 */
    return ab__weight_grads(m, &G);
}

/* --- LoRA ---------------------------------------------------------------------------------------- */
/* W_k += sign * scale * B_k A_k for k in q, k, v (rows k*d .. k*d + d - 1 of the fused qkv).
 * Fails only if a GEMM cannot get its workspace (AB_ERR_ALLOC); the weights are then partly
 * changed, which the caller reports. */
static ab_status ab__lora_apply(ab_model *m, float sign) {
    const int d_model = m->d_model, rank = m->lora_rank;
    m->fwd_valid = 0;
    m->dec_pos = 0; /* the KV cache holds keys and values of the other weights */
    for (int l = 0; l < m->n_layer; l++)
        for (int q = 0; q < 3; q++)
            AB_TRY(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, d_model, d_model, rank, sign * m->lora_scale,
                            ab__lora_b(m, q, l), rank, ab__lora_a(m, q, l), d_model, 1.0f,
                            ab__P(m, AB_T_QKV_W, l) + (size_t)q * d_model * d_model, d_model));
    return AB_OK;
}

ABDEF ab_status ab_model_lora_merge(ab_model *m) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    if (m->lora_rank == 0) return ab_fail(AB_ERR_STATE, "ab_model_lora_merge: the model has no LoRA adapters");
    if (m->merged) return ab_fail(AB_ERR_STATE, "ab_model_lora_merge: already merged");
    AB_TRY(ab__lora_apply(m, 1.0f));
    m->merged = 1;
    return AB_OK;
}

ABDEF ab_status ab_model_lora_unmerge(ab_model *m) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    if (!m->merged) return ab_fail(AB_ERR_STATE, "ab_model_lora_unmerge: the adapters are not merged");
    AB_TRY(ab__lora_apply(m, -1.0f));
    m->merged = 0;
    return AB_OK;
}

ABDEF int ab_model_lora_merged(const ab_model *m) { return m ? m->merged : 0; }

ABDEF ab_status ab_model_lora_fold(ab_model *m, ab_rng *rng) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(rng);
    if (m->lora_rank == 0) return ab_fail(AB_ERR_STATE, "ab_model_lora_fold: the model has no LoRA adapters");
    if (!m->merged) AB_TRY(ab__lora_apply(m, 1.0f));
    m->merged = 0;
    return ab_model_lora_init(m, rng);
}

ABDEF ab_status ab_model_lora_init(ab_model *m, ab_rng *rng) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(rng);
    if (m->lora_rank == 0) return ab_fail(AB_ERR_STATE, "ab_model_lora_init: the model has no LoRA adapters");
    if (m->merged) return ab_fail(AB_ERR_STATE, "ab_model_lora_init: adapters are merged; unmerge first");
    ab__lora_init_tensors(m, rng);
    m->fwd_valid = 0;
    m->dec_pos = 0;
    return AB_OK;
}

/* --- Antidote statistics and linear-layer access ------------------------------------------------ */
ABDEF ab_status ab_model_act_stats_enable(ab_model *m, int on) {
    AB_CHECK_PTR(m);
    if (!on) {
        ab_aligned_free(m->stats);
        m->stats = NULL;
        m->stats_nseq = 0;
        return AB_OK;
    }
    if (!m->stats) {
        size_t n = ab__stats_per_layer(m) * (size_t)m->n_layer;
        m->stats = (double *)ab_aligned_alloc(n * sizeof(double));
        if (!m->stats) return ab_fail(AB_ERR_ALLOC, "ab_model_act_stats_enable: %zu doubles", n);
    }
    return ab_model_act_stats_reset(m);
}

ABDEF ab_status ab_model_act_stats_reset(ab_model *m) {
    AB_CHECK_PTR(m);
    if (m->stats) memset(m->stats, 0, ab__stats_per_layer(m) * (size_t)m->n_layer * sizeof(double));
    m->stats_nseq = 0;
    return AB_OK;
}

ABDEF ab_status ab_model_linear(ab_model *m, ab_linear_kind kind, int layer, ab_linear_info *info) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(info);
    if ((int)kind < 0 || kind >= AB_LIN_KIND_COUNT)
        return ab_fail(AB_ERR_ARG, "ab_model_linear: unknown kind %d", (int)kind);
    if (layer < 0 || layer >= m->n_layer)
        return ab_fail(AB_ERR_ARG, "ab_model_linear: layer %d outside [0, %d)", layer, m->n_layer);
    if (kind >= AB_LIN_LORA_Q_A && m->lora_rank == 0)
        return ab_fail(AB_ERR_ARG, "ab_model_linear: LoRA layer requested, but the model has none");
    size_t d = (size_t)m->d_model, stat_off = 0;
    info->bias = NULL;
    switch (kind) {
    case AB_LIN_QKV:
        info->weight = ab__P(m, AB_T_QKV_W, layer), info->bias = ab__P(m, AB_T_QKV_B, layer);
        info->d_out = 3 * m->d_model, info->d_in = m->d_model, stat_off = 0;
        break;
    case AB_LIN_ATTN_PROJ:
        info->weight = ab__P(m, AB_T_ATTN_PROJ_W, layer), info->bias = ab__P(m, AB_T_ATTN_PROJ_B, layer);
        info->d_out = m->d_model, info->d_in = m->d_model, stat_off = d;
        break;
    case AB_LIN_FC:
        info->weight = ab__P(m, AB_T_FC_W, layer), info->bias = ab__P(m, AB_T_FC_B, layer);
        info->d_out = 4 * m->d_model, info->d_in = m->d_model, stat_off = 2 * d;
        break;
    case AB_LIN_MLP_PROJ:
        info->weight = ab__P(m, AB_T_MLP_PROJ_W, layer), info->bias = ab__P(m, AB_T_MLP_PROJ_B, layer);
        info->d_out = m->d_model, info->d_in = 4 * m->d_model, stat_off = 3 * d;
        break;
    default: {
        int q = ((int)kind - (int)AB_LIN_LORA_Q_A) / 2, is_b = ((int)kind - (int)AB_LIN_LORA_Q_A) % 2;
        info->weight = ab__P(m, (ab_tensor_kind)(AB_T_LORA_Q_A + 2 * q + is_b), layer);
        info->d_out = is_b ? m->d_model : m->lora_rank;
        info->d_in = is_b ? m->lora_rank : m->d_model;
        stat_off = is_b ? 7 * d + (size_t)q * m->lora_rank : 0; /* A reads the qkv input */
        break;
    }
    }
    info->in_sumsq = m->stats ? m->stats + ab__stats_per_layer(m) * layer + stat_off : NULL;
    info->n_seq = m->stats_nseq;
    return AB_OK;
}

/* --- generation with a KV cache --------------------------------------------------------------- */
/* Decoding goes in steps. In a step, every sequence appends n >= 1 new rows (its prompt, or the
 * token it emitted last) after the pos rows already in its cache. The rows of all the step's
 * sequences are stacked, so the linear layers, LayerNorms and GELU run once over all of them, and
 * attention runs per sequence over its own cache. Every row goes through the same operations as
 * when its sequence is decoded alone: a GEMM computes each output element with the same k-order
 * fma chain whatever the number of rows (kernels/gemm.h: the KC split depends on k only, in-place
 * and packed operands feed the same micro-kernel arithmetic, every row count has its own
 * micro-kernel), LayerNorm and GELU are row-local, and a sequence's attention makes the same calls
 * with the same shapes. So ab_model_generate_batch gives ab_model_generate's tokens bit for bit. */

/* One sequence of a step: n new rows at positions pos..pos+n-1. Its cache holds cap <= n_ctx
 * positions at kv: per layer K^T [d_model][cap], then V [cap][d_model]. */
typedef struct ab__dec_seq {
    float *kv;
    int pos, n, cap;
} ab__dec_seq;

/* Scratch of one step: [rows] of everything, lnf and logits [n_seqs], att one head's scores. */
typedef struct ab__dec {
    float *x, *ln, *mean, *rstd, *qkv, *u, *att, *atty, *h, *fch, *fch_gelu, *lnf, *logits;
} ab__dec;

static size_t ab__dec_layout(const ab_model *m, ab__dec *d, float *base, size_t rows, size_t n_seqs) {
    size_t n_ctx = (size_t)m->n_ctx, width = (size_t)m->d_model, cur = 0;
    size_t o[13];
    o[0] = ab__bump(&cur, rows * width), o[1] = ab__bump(&cur, rows * width), o[2] = ab__bump(&cur, rows);
    o[3] = ab__bump(&cur, rows), o[4] = ab__bump(&cur, rows * 3 * width), o[5] = ab__bump(&cur, 3 * rows * m->lora_rank);
    o[6] = ab__bump(&cur, n_ctx * n_ctx), o[7] = ab__bump(&cur, rows * width), o[8] = ab__bump(&cur, rows * width);
    o[9] = ab__bump(&cur, rows * 4 * width), o[10] = ab__bump(&cur, rows * 4 * width);
    o[11] = ab__bump(&cur, n_seqs * width), o[12] = ab__bump(&cur, n_seqs * (size_t)m->n_vocab);
    if (d && base) {
        d->x = base + o[0], d->ln = base + o[1], d->mean = base + o[2], d->rstd = base + o[3];
        d->qkv = base + o[4], d->u = base + o[5], d->att = base + o[6], d->atty = base + o[7];
        d->h = base + o[8], d->fch = base + o[9], d->fch_gelu = base + o[10], d->lnf = base + o[11];
        d->logits = base + o[12];
    }
    return cur;
}

static size_t ab__kv_floats(const ab_model *m, int cap) { /* one sequence's cache */
    return (size_t)m->n_layer * 2 * cap * m->d_model;
}

/* The single-sequence cache and scratch of ab_model_decode and ab_model_generate. */
static ab_status ab__dec_buffers(ab_model *m, ab__dec *d) {
    if (!m->kv) {
        size_t cap = 0;
        AB_TRY(ab__reserve(&m->kv, &cap, ab__kv_floats(m, m->n_ctx), "KV cache"));
        memset(m->kv, 0, sizeof(float) * cap); /* see ab__decode_attn */
    }
    size_t need = ab__dec_layout(m, NULL, NULL, (size_t)m->n_ctx, 1);
    AB_TRY(ab__reserve(&m->dec, &m->dec_cap, need, "decoding scratch"));
    ab__dec_layout(m, d, m->dec, (size_t)m->n_ctx, 1);
    return AB_OK;
}

ABDEF ab_status ab_model_decode_reset(ab_model *m) {
    AB_CHECK_PTR(m);
    m->dec_pos = 0;
    return AB_OK;
}

/* Attention of sequence s (its rows start at row r0) over its cache, after storing its new keys
 * and values. Keys are cached transposed, K^T [d_model][cap], so the score GEMM reads them in
 * place (AB_NO_TRANS) instead of packing len x head_size keys at every step. The scores are
 * bitwise those of ab__attn_fwd's form (AB_TRANS, alpha = scale): the SIMD GEMMs compute each
 * element with the same fma chain either way (kernels/gemm.h), and the scalar GEMM the same
 * sequential sum once the scale is applied after it (its AB_TRANS form computes 0 + alpha * sum;
 * with AB_NO_TRANS it would fold alpha into every term). A single new row scores whole
 * AB__DEC_COLS-column blocks of positions, so the GEMM has no ragged last panel to pack; the
 * positions past len (zeros, or an earlier sequence's keys) are never read after. */
#define AB__DEC_COLS 32 /* a multiple of every GEMM path's NR (AVX-512 32, AVX2 16) */
static ab_status ab__decode_attn(const ab_model *m, const ab__dec *d, const ab__dec_seq *s, int l,
                                 int r0) {
    const int d_model = m->d_model, head_size = m->head_size, cap = s->cap, n = s->n;
    const int len = s->pos + n, rounded = (len + AB__DEC_COLS - 1) / AB__DEC_COLS * AB__DEC_COLS;
    const int cols = n > 1 ? len : rounded < cap ? rounded : cap;
    const float scale = 1.0f / sqrtf((float)head_size);
    const size_t plane = (size_t)cap * d_model;
    float *Kt = s->kv + (size_t)l * 2 * plane, *Vc = Kt + plane;
    const float *qkv = d->qkv + (size_t)r0 * 3 * d_model;
    for (int t = 0; t < n; t++) {
        const float *row = qkv + (size_t)t * 3 * d_model;
        for (int c = 0; c < d_model; c++) Kt[(size_t)c * cap + s->pos + t] = row[d_model + c];
        memcpy(Vc + (size_t)(s->pos + t) * d_model, row + 2 * d_model, sizeof(float) * (size_t)d_model);
    }
    for (int h = 0; h < m->n_head; h++) {
        size_t o = (size_t)h * head_size;
        AB_TRY(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n, cols, head_size, 1.0f, qkv + o, 3 * d_model,
                        Kt + o * cap, cap, 0.0f, d->att, cols));
        for (size_t e = 0; e < (size_t)n * cols; e++) d->att[e] *= scale;
        AB_TRY(ab_softmax(d->att, d->att, n, len, 1)); /* bottom-right aligned causal mask */
        AB_TRY(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, n, head_size, len, 1.0f, d->att, len, Vc + o,
                        d_model, 0.0f, d->atty + (size_t)r0 * d_model + o, d_model));
    }
    return AB_OK;
}

/* The same arithmetic as ab__forward, for the step's rows attending to their caches. */
static ab_status ab__decode_block(const ab_model *m, const ab__dec *d, const ab__dec_seq *seqs,
                                  int n_seqs, int rows, int l) {
    const int d_model = m->d_model;
    const size_t n_act = (size_t)rows * d_model;
    AB_TRY(ab__ln_fwd(d->ln, d->mean, d->rstd, d->x, ab__P(m, AB_T_LN1_W, l),
                      ab__P(m, AB_T_LN1_B, l), rows, d_model));
    AB_TRY(ab__qkv_fwd(m, l, d->ln, d->qkv, d->u, rows));
    for (int s = 0, r0 = 0; s < n_seqs; r0 += seqs[s++].n) AB_TRY(ab__decode_attn(m, d, &seqs[s], l, r0));
    AB_TRY(ab__linear_fwd(d->h, d_model, d->atty, ab__P(m, AB_T_ATTN_PROJ_W, l),
                          ab__P(m, AB_T_ATTN_PROJ_B, l), rows, d_model, d_model));
    AB_TRY(ab_residual_forward(d->x, d->h, d->x, n_act));
    AB_TRY(ab__ln_fwd(d->ln, d->mean, d->rstd, d->x, ab__P(m, AB_T_LN2_W, l),
                      ab__P(m, AB_T_LN2_B, l), rows, d_model));
    AB_TRY(ab__linear_fwd(d->fch, 4 * d_model, d->ln, ab__P(m, AB_T_FC_W, l), ab__P(m, AB_T_FC_B, l),
                          rows, d_model, 4 * d_model));
    AB_TRY(ab__gelu(d->fch_gelu, NULL, d->fch, NULL, 4 * n_act));
    AB_TRY(ab__linear_fwd(d->h, d_model, d->fch_gelu, ab__P(m, AB_T_MLP_PROJ_W, l),
                          ab__P(m, AB_T_MLP_PROJ_B, l), rows, 4 * d_model, d_model));
    return ab_residual_forward(d->x, d->h, d->x, n_act);
}

/* One step: tokens [rows] are the sequences' new rows, in order. logits [n_seqs][vocab] (or NULL)
 * gets each sequence's logits after its last row. The caller advances the positions. */
static ab_status ab__decode_rows(const ab_model *m, const ab__dec *d, const ab__dec_seq *seqs,
                                 int n_seqs, int rows, const int *tokens, float *logits) {
    const int d_model = m->d_model;
    const float *wte = ab__P(m, AB_T_WTE, 0), *wpe = ab__P(m, AB_T_WPE, 0);
    for (int s = 0, r = 0; s < n_seqs; s++)
        for (int t = 0; t < seqs[s].n; t++, r++)
            AB_TRY(ab_residual_forward(d->x + (size_t)r * d_model, wte + (size_t)tokens[r] * d_model,
                                       wpe + (size_t)(seqs[s].pos + t) * d_model, (size_t)d_model));
    for (int l = 0; l < m->n_layer; l++) AB_TRY(ab__decode_block(m, d, seqs, n_seqs, rows, l));
    if (!logits) return AB_OK;
    for (int s = 0, r0 = 0; s < n_seqs; r0 += seqs[s++].n) /* each sequence's last row */
        memcpy(d->h + (size_t)s * d_model, d->x + (size_t)(r0 + seqs[s].n - 1) * d_model,
               sizeof(float) * (size_t)d_model);
    AB_TRY(ab__ln_fwd(d->lnf, d->mean, d->rstd, d->h, ab__P(m, AB_T_LNF_W, 0), ab__P(m, AB_T_LNF_B, 0),
                      n_seqs, d_model));
    return ab_sgemm(AB_NO_TRANS, AB_TRANS, n_seqs, m->n_vocab, d_model, 1.0f, d->lnf, d_model, wte,
                    d_model, 0.0f, logits, m->n_vocab);
}

/* n tokens into the single-sequence cache, after the m->dec_pos cached ones. */
static ab_status ab__decode_cached(ab_model *m, const ab__dec *d, const int *tokens, int n,
                                   float *logits) {
    ab__dec_seq seq;
    seq.kv = m->kv, seq.pos = m->dec_pos, seq.n = n, seq.cap = m->n_ctx;
    ab_status st = ab__decode_rows(m, d, &seq, 1, n, tokens, logits);
    m->dec_pos = st == AB_OK ? seq.pos + n : 0; /* a failed step leaves a partial cache: start over */
    return st;
}

ABDEF ab_status ab_model_decode(ab_model *m, const int *tokens, int n_tokens, float *logits) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    AB_CHECK_POS(n_tokens);
    AB_CHECK_PTR(tokens);
    if (n_tokens > m->n_ctx - m->dec_pos)
        return ab_fail(AB_ERR_ARG, "ab_model_decode: %d cached + %d new tokens exceed n_ctx = %d",
                        m->dec_pos, n_tokens, m->n_ctx);
    AB_TRY(ab__check_ids(__func__, tokens, (size_t)n_tokens, m->n_vocab));
    ab__dec d;
    AB_TRY(ab__dec_buffers(m, &d));
    return ab__decode_cached(m, &d, tokens, n_tokens, logits);
}

/* The lowest j with x[j] > x[i] for no i (NaN entries skipped; 0 if x[0] is NaN), as the loop
 * `if (x[j] > x[best]) best = j` finds it, in two passes: the maximum over 8 independent
 * running maxima (a maximum is exact in any order; +0 and -0 compare equal below), then the first
 * index holding it. */
static int ab__argmax(const float *x, int n) {
    float mx[8];
    if (isnan(x[0])) return 0;
    for (int k = 0; k < 8; k++) mx[k] = x[0];
    int j = 1;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) mx[k] = x[j + k] > mx[k] ? x[j + k] : mx[k];
    for (; j < n; j++) mx[0] = x[j] > mx[0] ? x[j] : mx[0];
    for (int k = 1; k < 8; k++) mx[0] = mx[k] > mx[0] ? mx[k] : mx[0];
    for (j = 0; j < n; j++)
        if (x[j] == mx[0]) break;
    return j;
}

/* argmax (lowest id on ties) or a draw from softmax(logits / temperature), sums in double. */
static int ab__pick_token(const float *logits, int n_vocab, float temperature, ab_rng *rng) {
    int best = ab__argmax(logits, n_vocab);
    if (temperature == 0.0f) return best;
    double sum = 0.0, acc = 0.0, mx = logits[best], inv_t = 1.0 / (double)temperature;
    for (int j = 0; j < n_vocab; j++) sum += exp(((double)logits[j] - mx) * inv_t);
    double u = (double)ab_rng_uniform(rng) * sum;
    for (int j = 0; j < n_vocab; j++) {
        acc += exp(((double)logits[j] - mx) * inv_t);
        if (u < acc) return j;
    }
    return best; /* u rounded onto the total: take the mode */
}

/* The checks ab_model_generate and ab_model_generate_batch share. */
static ab_status ab__check_sampling(const ab_model *m, const char *fn, float temperature,
                                    const void *rng, const char *rng_name, int stop_token) {
    if (!isfinite(temperature) || temperature < 0.0f)
        return ab_fail(AB_ERR_ARG, "%s: temperature = %g must be finite and >= 0", fn,
                        (double)temperature);
    if (temperature > 0.0f && !rng)
        return ab_fail(AB_ERR_NULL, "%s: sampling (temperature > 0) needs %s", fn, rng_name);
    if (stop_token < -1 || stop_token >= m->n_vocab)
        return ab_fail(AB_ERR_ARG, "%s: stop_token = %d outside [-1, vocab)", fn, stop_token);
    return AB_OK;
}

ABDEF ab_status ab_model_generate(ab_model *m, const int *prompt, int n_prompt, int max_new,
                                  float temperature, int stop_token, ab_rng *rng, int *out,
                                  int *n_out) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(n_out);
    *n_out = 0;
    AB_CHECK_PTR(prompt);
    AB_CHECK_POS(n_prompt);
    AB_CHECK_DIM(max_new);
    if (n_prompt > m->n_ctx)
        return ab_fail(AB_ERR_ARG, "ab_model_generate: prompt of %d tokens exceeds n_ctx = %d",
                        n_prompt, m->n_ctx);
    AB_TRY(ab__check_sampling(m, __func__, temperature, rng, "rng", stop_token));
    if (max_new > 0) AB_CHECK_PTR(out);
    AB_TRY(ab__check_ids(__func__, prompt, (size_t)n_prompt, m->n_vocab));
    ab__dec d;
    AB_TRY(ab__dec_buffers(m, &d));
    m->dec_pos = 0;
    AB_TRY(ab__decode_cached(m, &d, prompt, n_prompt, d.logits));
    int count = 0;
    while (count < max_new) {
        int tok = ab__pick_token(d.logits, m->n_vocab, temperature, rng);
        out[count++] = tok;
        if (tok == stop_token || n_prompt + count >= m->n_ctx) break;
        AB_TRY(ab__decode_cached(m, &d, &tok, 1, d.logits));
    }
    *n_out = count;
    return AB_OK;
}

/* --- generation, many prompts at once ---------------------------------------------------------- */
/* One ab_model_generate_batch call. Slot s decodes prompt slot[s] (-1: free) in cache seq[s].kv;
 * count[s] tokens emitted so far, the last one in feed[s]. */
typedef struct ab__gen {
    ab_model *m;
    const int *const *prompts;
    const int *lens;
    int n_prompts, max_new, stop_token, n_slots, next;
    int max_rows; /* rows of one step at most: n_slots + n_ctx, or fewer if the prompts are short */
    int cap;      /* positions a slot's cache holds: longest prompt + max_new - 1, within n_ctx */
    ab_generate_opts o;
    int *out, *out_lengths;
    int *slot, *count, *feed, *step_slot; /* [n_slots] */
    int *tokens;                          /* [max_rows]: the rows of the current step */
    ab__dec_seq *seq, *step;              /* [n_slots]: every slot's; the current step's */
    ab__dec d;
} ab__gen;

/* Checks every argument of ab_model_generate_batch before any work, then sizes the call:
 * g->cap (a slot caches its prompt and every emitted token but the last, rounded up to whole
 * AB__DEC_COLS blocks, see ab__decode_attn), g->n_slots, and g->max_rows (one row per busy slot
 * plus the prompts admitted in the step, which fit n_slots + n_ctx, so one always does; and at
 * most n_slots times the longest prompt). */
static ab_status ab__gen_check(ab__gen *g) {
    const char *fn = "ab_model_generate_batch";
    const ab_model *m = g->m;
    AB_TRY(ab__check_sampling(m, fn, g->o.temperature, g->o.rngs, "opts->rngs", g->stop_token));
    if (g->o.max_batch < 0 || g->o.max_batch > AB_MODEL_MAX_BATCH)
        return ab_fail(AB_ERR_ARG, "%s: max_batch = %d outside [0, %d]", fn, g->o.max_batch,
                        AB_MODEL_MAX_BATCH);
    int longest = 0;
    for (int i = 0; i < g->n_prompts; i++) {
        if (!g->prompts[i]) return ab_fail(AB_ERR_NULL, "%s: prompts[%d] is NULL", fn, i);
        int len = g->lens[i];
        if (len < 1 || len > m->n_ctx)
            return ab_fail(AB_ERR_ARG, "%s: prompt %d has %d tokens, not in [1, n_ctx = %d]", fn, i,
                            len, m->n_ctx);
        for (int t = 0; t < len; t++)
            if (g->prompts[i][t] < 0 || g->prompts[i][t] >= m->n_vocab)
                return ab_fail(AB_ERR_ARG, "%s: prompts[%d][%d] = %d outside [0, %d)", fn, i, t,
                                g->prompts[i][t], m->n_vocab);
        longest = len > longest ? len : longest;
    }
    int64_t cap = ((int64_t)longest + (g->max_new > 0 ? g->max_new : 1) - 1 + AB__DEC_COLS - 1) /
                  AB__DEC_COLS * AB__DEC_COLS;
    g->cap = (int)(cap < m->n_ctx ? cap : m->n_ctx);
    size_t fit = AB_MODEL_GEN_KV_BYTES / (ab__kv_floats(m, g->cap) * sizeof(float));
    int batch = g->o.max_batch > 0 ? g->o.max_batch
                                   : fit < 1 ? 1 : fit < AB_MODEL_GEN_BATCH ? (int)fit : AB_MODEL_GEN_BATCH;
    g->n_slots = batch < g->n_prompts ? batch : g->n_prompts;
    int64_t most = (int64_t)g->n_slots * longest, budget = (int64_t)g->n_slots + m->n_ctx;
    g->max_rows = (int)(most < budget ? most : budget);
    return AB_OK;
}

/* Slot s emits the token its logits pick; a finished sequence frees its slot. */
static void ab__gen_emit(ab__gen *g, int s, const float *logits) {
    int i = g->slot[s];
    int *out = g->out + (size_t)i * g->max_new;
    int tok = ab__pick_token(logits, g->m->n_vocab, g->o.temperature, g->o.rngs ? &g->o.rngs[i] : NULL);
    out[g->count[s]++] = tok;
    g->feed[s] = tok;
    if (tok == g->stop_token || g->lens[i] + g->count[s] >= g->m->n_ctx || g->count[s] == g->max_new) {
        g->out_lengths[i] = g->count[s];
        g->slot[s] = -1;
        if (g->o.on_done) g->o.on_done(g->o.user, i, out, g->count[s]);
    }
}

/* Free slots take the next prompts, then every busy slot decodes one step (its prompt, or its
 * last token) and emits a token. *busy gets the number of busy slots (0: all done). */
static ab_status ab__gen_step(ab__gen *g, int *busy) {
    int n = 0, rows = 0, free_rows = g->max_rows;
    for (int s = 0; s < g->n_slots; s++) free_rows -= g->slot[s] >= 0; /* one row each */
    for (int s = 0; s < g->n_slots; s++) {
        if (g->slot[s] < 0 && g->next < g->n_prompts && g->lens[g->next] <= free_rows) {
            free_rows -= g->lens[g->next];
            g->slot[s] = g->next++;
            g->seq[s].pos = 0, g->count[s] = 0;
        }
        if (g->slot[s] < 0) continue;
        int i = g->slot[s], len = g->count[s] == 0 ? g->lens[i] : 1;
        memcpy(g->tokens + rows, g->count[s] == 0 ? g->prompts[i] : &g->feed[s], sizeof(int) * (size_t)len);
        g->step[n] = g->seq[s];
        g->step[n].n = len;
        g->step_slot[n++] = s;
        rows += len;
    }
    *busy = n;
    if (n == 0) return AB_OK;
    AB_TRY(ab__decode_rows(g->m, &g->d, g->step, n, rows, g->tokens, g->d.logits));
    for (int j = 0; j < n; j++) {
        int s = g->step_slot[j];
        g->seq[s].pos += g->step[j].n;
        ab__gen_emit(g, s, g->d.logits + (size_t)j * g->m->n_vocab);
    }
    return AB_OK;
}

/* The slots' caches and the step scratch live in m->gen, kept for the next call (growing it if
 * needed; a new buffer is zeroed, see ab__decode_attn); the bookkeeping is allocated per call.
 * Then every prompt is decoded. */
static ab_status ab__gen_run(ab__gen *g) {
    ab_model *m = g->m;
    const size_t S = (size_t)g->n_slots, kv = ab__kv_floats(m, g->cap);
    size_t scratch = ab__dec_layout(m, NULL, NULL, (size_t)g->max_rows, S);
    if (kv > (((size_t)-1) / sizeof(float) - scratch) / S)
        return ab_fail(AB_ERR_ALLOC, "ab_model_generate_batch: a KV cache of %zu x %zu floats", S, kv);
    const size_t had = m->gen_cap;
    AB_TRY(ab__reserve(&m->gen, &m->gen_cap, S * kv + scratch, "batched generation"));
    if (m->gen_cap != had) memset(m->gen, 0, sizeof(float) * m->gen_cap); /* a new buffer */
    int *ibuf = (int *)ab_aligned_alloc((4 * S + (size_t)g->max_rows) * sizeof(int));
    ab__dec_seq *sbuf = (ab__dec_seq *)ab_aligned_alloc(2 * S * sizeof(ab__dec_seq));
    ab_status st = AB_OK;
    if (!ibuf || !sbuf)
        st = ab_fail(AB_ERR_ALLOC, "ab_model_generate_batch: bookkeeping of %zu slots", S);
    if (st == AB_OK) {
        ab__dec_layout(m, &g->d, m->gen + S * kv, (size_t)g->max_rows, S);
        g->slot = ibuf, g->count = ibuf + S, g->feed = ibuf + 2 * S, g->step_slot = ibuf + 3 * S;
        g->tokens = ibuf + 4 * S;
        g->seq = sbuf, g->step = sbuf + S;
        for (size_t s = 0; s < S; s++)
            g->slot[s] = -1, g->seq[s].kv = m->gen + s * kv, g->seq[s].cap = g->cap;
        for (int busy = 1; busy && st == AB_OK;) st = ab__gen_step(g, &busy);
    }
    ab_aligned_free(sbuf);
    ab_aligned_free(ibuf);
    return st;
}

ABDEF ab_status ab_model_generate_batch(ab_model *m, const int *const *prompts,
                                        const int *prompt_lengths, int n_prompts, int max_new,
                                        int stop_token, const ab_generate_opts *opts, int *out,
                                        int *out_lengths) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(m);
    AB_CHECK_DIM(n_prompts);
    AB_CHECK_DIM(max_new);
    if (n_prompts == 0) return AB_OK;
    AB_CHECK_PTR(out_lengths);
    memset(out_lengths, 0, sizeof(int) * (size_t)n_prompts);
    AB_CHECK_PTR(prompts);
    AB_CHECK_PTR(prompt_lengths);
    if (max_new > 0) AB_CHECK_PTR(out);
    ab__gen g;
    memset(&g, 0, sizeof g);
    g.m = m, g.prompts = prompts, g.lens = prompt_lengths, g.n_prompts = n_prompts;
    g.max_new = max_new, g.stop_token = stop_token, g.out = out, g.out_lengths = out_lengths;
    if (opts) g.o = *opts;
    AB_TRY(ab__gen_check(&g));
    if (max_new == 0) { /* nothing to emit: every prompt is done as it stands */
        for (int i = 0; i < n_prompts; i++)
            if (g.o.on_done) g.o.on_done(g.o.user, i, out, 0);
        return AB_OK;
    }
    return ab__gen_run(&g);
}

/* --- profiling ----------------------------------------------------------------------------------- */
ABDEF ab_status ab_model_set_clock(ab_model *m, double (*now)(void)) {
    AB_CHECK_PTR(m);
    m->now = now;
    return AB_OK;
}
ABDEF ab_status ab_model_profile(const ab_model *m, double seconds[AB_PROF_COUNT]) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(seconds);
    for (int i = 0; i < AB_PROF_COUNT; i++) seconds[i] = m->prof[i];
    return AB_OK;
}
ABDEF ab_status ab_model_profile_reset(ab_model *m) {
    AB_CHECK_PTR(m);
    for (int i = 0; i < AB_PROF_COUNT; i++) m->prof[i] = 0.0;
    return AB_OK;
}
ABDEF const char *ab_prof_name(ab_prof_kind kind) {
    static const char *const names[AB_PROF_COUNT] = {"matmul", "attention", "layernorm", "gelu",
                                                     "softmax_ce", "adamw", "psnorm"};
    return (int)kind >= 0 && kind < AB_PROF_COUNT ? names[kind] : "unknown";
}

#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_GPT_IMPLEMENTATION_DONE */
#endif /* ANTIBODY_GPT_IMPLEMENTATION || ANTIBODY_IMPLEMENTATION */

/* The checkpoints (ab_model_save, ab_model_load, ...): part of this layer, in a file of their own;
 * included here, after this file's implementation, whose internals theirs uses. */
#include "antibody_gpt_io.h" /* AB_AMALGAMATE */
