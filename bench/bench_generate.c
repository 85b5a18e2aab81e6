/* bench/bench_generate.c - batched greedy generation (ab_model_generate_batch) against the same
 * prompts generated one at a time (ab_model_generate), in the same run. See bench/bench.h for the
 * options and the protocol.
 *
 * Cases (unit tokens/s = generated tokens per second; higher is better), ref=one_at_a_time:
 *   generate_lab200_t<n>   the lab's model shape (vocab 512, n_ctx 64, 4 layers, d_model 128,
 *                          4 heads, random GPT-2-style init) and its evaluation: 200 prompts of 8-20
 *                          tokens, up to 40 new tokens each, stop token 3 (the lab's <eos>; random
 *                          weights rarely emit it, so nearly every prompt gets all 40), at 1 and 2
 *                          threads. ours = all 200 in one ab_model_generate_batch call with the
 *                          default batch (AB_MODEL_GEN_BATCH slots), ref = a loop of
 *                          ab_model_generate. Both emit the same tokens: checked before timing.
 * At 2 threads the batched steps' GEMMs and LayerNorms are large enough for the library's parallel
 * regions (its thread pool), while one prompt at a time mostly stays below their thresholds.
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include "antibody_gpt.h"

#define N_PROMPTS 200
#define MAX_NEW 40
#define STOP_TOKEN 3

typedef struct gen_ctx {
    ab_model *model;
    const int *const *prompts;
    const int *lens;
    int *out, *n_out;
} gen_ctx;

static void check(ab_status st, const char *what) {
    if (st != AB_OK) {
        fprintf(stderr, "bench_generate: %s: %s\n", what, ab_last_error());
        exit(1);
    }
}

static void run_batch(void *p) {
    gen_ctx *c = (gen_ctx *)p;
    check(ab_model_generate_batch(c->model, c->prompts, c->lens, N_PROMPTS, MAX_NEW, STOP_TOKEN, NULL,
                                  c->out, c->n_out),
          "generate_batch");
}

static void run_one_at_a_time(void *p) {
    gen_ctx *c = (gen_ctx *)p;
    for (int i = 0; i < N_PROMPTS; i++)
        check(ab_model_generate(c->model, c->prompts[i], c->lens[i], MAX_NEW, 0.0f, STOP_TOKEN, NULL,
                                c->out + (size_t)i * MAX_NEW, &c->n_out[i]),
              "generate");
}

int main(int argc, char **argv) {
    bench_init(argc, argv);
    check(ab_init(), "ab_init");
    ab_model_config cfg = ab_model_config_default(); /* the lab's shape */
    cfg.n_vocab = 512, cfg.n_ctx = 64, cfg.n_layer = 4, cfg.n_head = 4, cfg.d_model = 128;
    cfg.lora_rank = 0, cfg.lora_alpha = 0.0f;
    ab_model *m = NULL;
    check(ab_model_create(&m, &cfg, 1), "ab_model_create");
    static int ids[N_PROMPTS][20], lens[N_PROMPTS], out[2][N_PROMPTS * MAX_NEW], n_out[2][N_PROMPTS];
    const int *prompts[N_PROMPTS];
    ab_rng rng;
    ab_rng_seed(&rng, 3, 0);
    for (int i = 0; i < N_PROMPTS; i++) {
        lens[i] = 8 + (int)ab_rng_below(&rng, 13);
        for (int t = 0; t < lens[i]; t++) ids[i][t] = 4 + (int)ab_rng_below(&rng, (uint32_t)cfg.n_vocab - 4);
        prompts[i] = ids[i];
    }
    gen_ctx ours = {m, prompts, lens, out[0], n_out[0]}, ref = {m, prompts, lens, out[1], n_out[1]};
    run_batch(&ours);
    run_one_at_a_time(&ref);
    long tokens = 0;
    for (int i = 0; i < N_PROMPTS; i++) {
        if (n_out[0][i] != n_out[1][i] ||
            memcmp(out[0] + i * MAX_NEW, out[1] + i * MAX_NEW, sizeof(int) * (size_t)n_out[0][i]) != 0) {
            fprintf(stderr, "bench_generate: prompt %d: batched and one-at-a-time tokens differ\n", i);
            return 1;
        }
        tokens += n_out[0][i];
    }
    printf("# bench_generate: %s, %d prompts of 8-20 tokens, %ld tokens generated (%.1f per prompt), "
           "batch %d\n", ab_isa_name(ab_get_isa()), N_PROMPTS, tokens, (double)tokens / N_PROMPTS,
           AB_MODEL_GEN_BATCH);
    for (int t = 1; t <= 2; t++) {
        char name[64];
        snprintf(name, sizeof name, "generate_lab200_t%d", t);
        if (!bench_want(name, t)) continue;
        check(ab_set_threads(t), "ab_set_threads");
        bench_entry e[2];
        memset(e, 0, sizeof e);
        e[0].ref = "ours", e[0].fn = run_batch, e[0].ctx = &ours;
        e[1].ref = "one_at_a_time", e[1].fn = run_one_at_a_time, e[1].ctx = &ref;
        bench_compare(name, "tokens/s", (double)tokens, t, e, 2);
    }
    ab_model_free(m);
    return 0;
}
