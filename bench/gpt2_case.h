/* bench/gpt2_case.h - the GPT-2-shaped case that bench_step (its gpt2 cases) and gpt2_gemms both
 * time, defined once so the two measure the same model on the same batch. Include after
 * antibody_gpt.h.
 *   gpt2_case_config(cfg)   vocab 50304, n_ctx 1024, 12 layers, 12 heads, d_model 768 (124M
 *                           parameters); batches of GPT2_CASE_B x GPT2_CASE_T tokens
 *   bench_random_tokens(rng, in, tg, mask, n, vocab)
 *                           n input and target tokens uniform below vocab (drawn in turn, input
 *                           then target), every target in the loss (mask 1); bench_step's batches
 *                           of every model start this way from ab_rng_seed(rng, 2, 0)
 */
#ifndef AB_BENCH_GPT2_CASE_H
#define AB_BENCH_GPT2_CASE_H

#define GPT2_CASE_B 4
#define GPT2_CASE_T 64

static inline void gpt2_case_config(ab_model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->n_vocab = 50304, cfg->n_ctx = 1024, cfg->n_layer = 12, cfg->n_head = 12;
    cfg->d_model = 768;
}

static inline void bench_random_tokens(ab_rng *rng, int *in, int *tg, float *mask, size_t n,
                                       int vocab) {
    for (size_t i = 0; i < n; i++) {
        in[i] = (int)ab_rng_below(rng, (uint32_t)vocab);
        tg[i] = (int)ab_rng_below(rng, (uint32_t)vocab);
        mask[i] = 1.0f;
    }
}

#endif
