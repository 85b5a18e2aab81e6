/* bench/step_peer.c - one training step of ANOTHER build of antibody.h, linked into bench_step as a
 * peer (see `make bench-v011`): the same model, batch and step as bench_step's, timed in the same
 * process and interleaved with ours, so the ratio is not a comparison of two runs on a drifting
 * machine. Compiled against that build's headers (-I its source tree) with ANTIBODY_STATIC, so its
 * functions cannot clash with ours; only the STEP_PEER_* functions below are exported. Works with
 * the v0.1.x API (the model in antibody.h, config field `vocab`) and v0.2+ (antibody_gpt.h,
 * `n_vocab`). v0.1.x threads with OpenMP: build it with -fopenmp.
 */
#define ANTIBODY_STATIC
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#if AB_VERSION_MAJOR == 0 && AB_VERSION_MINOR < 2
#define PEER_VOCAB vocab
#else
#include "antibody_gpt.h"
#define PEER_VOCAB n_vocab
#endif
#include <stdio.h>
#include <stdlib.h>
#include "step_peer.h"

typedef struct peer_step {
    ab_model *model;
    ab_batch batch;
    ab_adamw_cfg opt;
} peer_step;

const char *step_peer_version(void) { return AB_VERSION_STRING; }

void *step_peer_create(const step_peer_config *c) {
    ab_model_config cfg = ab_model_config_default();
    cfg.PEER_VOCAB = c->n_vocab, cfg.n_ctx = c->n_ctx, cfg.n_layer = c->n_layer;
    cfg.n_head = c->n_head, cfg.d_model = c->d_model, cfg.lora_rank = 0, cfg.lora_alpha = 0.0f;
    peer_step *p = (peer_step *)calloc(1, sizeof *p);
    if (!p || ab_model_create(&p->model, &cfg, 1) != AB_OK) {
        fprintf(stderr, "step_peer: %s\n", ab_last_error());
        free(p);
        return NULL;
    }
    p->batch.B = c->B, p->batch.T = c->T;
    p->batch.inputs = c->inputs, p->batch.targets = c->targets, p->batch.mask = c->mask;
    p->batch.weights = NULL, p->batch.lengths = NULL;
    p->opt = ab_adamw_default();
    p->opt.lr = c->lr;
    return p;
}

int step_peer_run(void *ctx, int n_threads) {
    peer_step *p = (peer_step *)ctx;
    if (ab_set_threads(n_threads) != AB_OK || ab_model_zero_grad(p->model) != AB_OK ||
        ab_model_forward(p->model, &p->batch, NULL, NULL, NULL, NULL) != AB_OK ||
        ab_model_backward(p->model, NULL) != AB_OK || ab_model_adamw_step(p->model, &p->opt) != AB_OK) {
        fprintf(stderr, "step_peer: %s\n", ab_last_error());
        return 1;
    }
    return 0;
}

void step_peer_free(void *ctx) {
    peer_step *p = (peer_step *)ctx;
    if (p) ab_model_free(p->model);
    free(p);
}
