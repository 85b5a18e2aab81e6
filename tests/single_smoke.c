/* tests/single_smoke.c - `make single` compiles this against the amalgamated one-file headers, as
 * C99 and as C++11, and runs it: proof that dropping one file in works. Against build/antibody.h
 * (every layer) it is built with AB_SMOKE_MODEL and also trains a tiny model for a few steps
 * (forward, backward, an Antibody alignment step, an Antibody fine-tuning step, Antidote),
 * round-trips it through a checkpoint and generates from it (batched and one prompt at a time);
 * against build/antibody_core.h it uses the core alone. With AB_SMOKE_SEPARATE_HEADERS it
 * includes the companion headers itself (tools/install_check.sh).
 * Exits non-zero with a message on any failure. */
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#ifdef AB_SMOKE_SEPARATE_HEADERS /* the installed headers: the companions are files of their own */
#include "antibody_gpt.h"
#include "antibody_defence.h"
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "single_smoke: FAILED %s (line %d): %s\n", #cond, __LINE__,            \
                    ab_last_error());                                                              \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

#ifdef AB_SMOKE_MODEL
/* A tiny model: two alignment steps and a fine-tuning step of Antibody, then Antidote. */
static int smoke_model(void) {
    ab_model_config cfg = ab_model_config_default();
    cfg.n_vocab = 16, cfg.n_ctx = 8, cfg.n_layer = 1, cfg.n_head = 2, cfg.d_model = 16;
    cfg.lora_rank = 0;
    ab_model *m = NULL;
    CHECK(ab_model_create(&m, &cfg, 7) == AB_OK);
    enum { NB = 2, NT = 6 };
    int in[NB * NT], tg[NB * NT];
    float mask[NB * NT];
    for (int i = 0; i < NB * NT; i++) in[i] = 1 + i % 13, tg[i] = 2 + i % 11, mask[i] = i % NT >= 2;
    ab_batch b;
    b.B = NB, b.T = NT, b.inputs = in, b.targets = tg, b.mask = mask, b.weights = NULL, b.lengths = NULL;
    b.loss_norm = AB_LOSS_TOKEN_MEAN;
    float loss = 0.0f;
    CHECK(ab_model_forward(m, &b, NULL, &loss, NULL, NULL) == AB_OK && loss > 0.0f);
    CHECK(ab_model_set_train_mode(m, AB_TRAIN_BASE) == AB_OK);
    ab_trainer *t = NULL;
    CHECK(ab_trainer_create(&t, m) == AB_OK);
    ab_align_cfg ac = ab_align_default(AB_ALIGN_ANTIBODY);
    ab_align_log al;
    for (int s = 0; s < 2; s++) CHECK(ab_align_step(t, &ac, &b, &b, &b, &al) == AB_OK);
    ab_ft_cfg fc = ab_ft_default(AB_FT_ANTIBODY);
    ab_ft_log fl;
    CHECK(ab_finetune_step(t, &fc, &b, &b, NULL, &fl) == AB_OK && fl.loss > 0.0f);
    ab_trainer_free(t);
    CHECK(ab_model_act_stats_enable(m, 1) == AB_OK);
    CHECK(ab_model_score(m, &b, NULL, NULL, NULL) == AB_OK);
    size_t pruned = 0;
    CHECK(ab_antidote_prune(m, 0.25f, AB_PRUNE_QKV, NULL, &pruned) == AB_OK && pruned == 48 * 4);
    size_t bytes = 0;
    CHECK(ab_model_checkpoint_size(m, &bytes) == AB_OK);
    unsigned char *ck = (unsigned char *)malloc(bytes);
    ab_model *m2 = NULL;
    CHECK(ck && ab_model_save_mem(m, ck, bytes, NULL) == AB_OK && ab_model_load_mem(&m2, ck, bytes) == AB_OK);
    float loss2 = 0.0f;
    CHECK(ab_model_forward(m, &b, NULL, &loss, NULL, NULL) == AB_OK);
    CHECK(ab_model_forward(m2, &b, NULL, &loss2, NULL, NULL) == AB_OK && loss == loss2);
    /* batched generation gives the tokens of one prompt at a time */
    const int p0[3] = {1, 2, 3}, p1[2] = {4, 5};
    const int *prompts[2] = {p0, p1}, lens[2] = {3, 2};
    int outs[2 * 4], n_outs[2], one[4], n_one = 0;
    CHECK(ab_model_generate_batch(m2, prompts, lens, 2, 4, -1, NULL, outs, n_outs) == AB_OK);
    CHECK(ab_model_generate(m2, p1, 2, 4, 0.0f, -1, NULL, one, &n_one) == AB_OK && n_one == n_outs[1]);
    for (int k = 0; k < n_one; k++) CHECK(one[k] == outs[4 + k]);
    free(ck);
    ab_model_free(m2);
    ab_model_free(m);
    return 0;
}
#endif

int main(void) {
    CHECK(ab_init() == AB_OK);
    /* 2x3 * 3x2 */
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[4];
    CHECK(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2) == AB_OK);
    CHECK(C[0] == 4 && C[1] == 5 && C[2] == 10 && C[3] == 11);
    /* every path this CPU has gives the same small product */
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        if (!ab_cpu_supports((ab_isa)i)) continue;
        float D[4];
        CHECK(ab_set_isa((ab_isa)i) == AB_OK);
        CHECK(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, D, 2) == AB_OK);
        CHECK(D[0] == 4 && D[1] == 5 && D[2] == 10 && D[3] == 11);
    }
    float x[3] = {1, 2, 3}, y[3];
    CHECK(ab_softmax(y, x, 1, 3, 0) == AB_OK);
    CHECK(fabsf(y[0] + y[1] + y[2] - 1.0f) < 1e-6f && y[2] > y[1] && y[1] > y[0]);
    CHECK(fabsf(ab_expf(1.0f) - 2.7182817f) < 1e-6f);
    /* an error is returned, not a crash */
    CHECK(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, -1, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2) == AB_ERR_SHAPE);
#ifdef AB_SMOKE_MODEL
    CHECK(smoke_model() == 0);
#endif
    printf("single_smoke (%s): ok, isa=%s, version %s\n",
#ifdef __cplusplus
           "C++",
#else
           "C",
#endif
           ab_isa_name(ab_get_isa()), AB_VERSION_STRING);
    return 0;
}
