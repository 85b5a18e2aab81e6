/* tests/repro.c - the promise of DESIGN.md ("Numerics and reproducibility") that valgrind changes
 * nothing: the same computation on the AVX2 path gives the same bits natively and under valgrind
 * memcheck. `make valgrind` runs this binary natively first, then under memcheck with
 * AB_REPRO_WANT set to the native run's CRC, and the one test compares.
 *
 * The computation: the lab's model shape (vocabulary 556, context 64, 4 layers of width 128,
 * 4 heads, LoRA rank 4) from a fixed seed, then random batches of 2 sequences of 32 tokens with
 * prompt and padding masks, packed as the lab's are (lengths given, sample 1 ends after 20): an AdamW step with per-sample clipping (ghost norms) and global
 * clipping; a SAM step (ab_sam_step, gradient at the perturbed point, ab_sam_restore) followed by
 * AdamW; a LoRA step on the adapters, then merge (about a minute under memcheck). The result is
 * the CRC-32 of the parameter buffer with -0 read as +0 (DESIGN.md: valgrind's FMA emulation may
 * flip the sign of an exact zero).
 * One thread (results do not depend on it; memcheck runs threads one at a time anyway).
 * Without AB_REPRO_WANT the test only prints the CRC ("NOTE repro: crc32 ..."). */
#include "testutil.h"

enum { BATCH = 2, SEQ = 32, CTX = 64, VOCAB = 556 };

typedef struct repro_batch {
    int inputs[BATCH * SEQ], targets[BATCH * SEQ];
    float mask[BATCH * SEQ];
    int lengths[BATCH];
    ab_batch batch;
} repro_batch;

/* Random tokens; mask 0 on an 8-token prompt, and on padding after 20 tokens in sample 1: a
 * packed batch (antibody_gpt.h), only the 52 real tokens computed. */
static void random_batch(repro_batch *b, ab_rng *rng) {
    for (int i = 0; i < BATCH * SEQ; i++) {
        int t = i % SEQ, sample = i / SEQ;
        b->inputs[i] = (int)ab_rng_below(rng, VOCAB);
        b->targets[i] = (int)ab_rng_below(rng, VOCAB);
        b->mask[i] = t >= 8 && !(sample == 1 && t >= 20) ? 1.0f : 0.0f;
    }
    b->lengths[0] = SEQ, b->lengths[1] = 20;
    b->batch = (ab_batch){BATCH, SEQ, b->inputs, b->targets, b->mask, NULL, b->lengths, AB_LOSS_TOKEN_MEAN};
}

/* One forward and backward on a fresh random batch (gradients zeroed first), per-sample clipping. */
static void forward_backward(ab_model *m, ab_rng *rng) {
    repro_batch b;
    float norms[BATCH], loss = 0.0f;
    random_batch(&b, rng);
    ab_backward_opts opts = {norms, 1.0f, AB_PSNORM_AUTO, NULL};
    assert_int_equal(ab_model_zero_grad(m), AB_OK);
    assert_int_equal(ab_model_forward(m, &b.batch, NULL, &loss, NULL, NULL), AB_OK);
    assert_int_equal(ab_model_backward(m, &opts), AB_OK);
    assert_true(isfinite(loss));
}

static void clip_and_step(ab_model *m, const ab_adamw_cfg *cfg) {
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    assert_int_equal(ab_clip_grad_norm(v.grads, v.count, 1.0f, NULL), AB_OK);
    assert_int_equal(ab_model_adamw_step(m, cfg), AB_OK);
}

static uint32_t params_crc(ab_model *m) {
    float *p;
    size_t n;
    assert_int_equal(ab_model_params(m, &p, &n), AB_OK);
    uint32_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        float x = p[i] == 0.0f ? 0.0f : p[i]; /* -0 -> +0 */
        crc = ab_crc32(crc, &x, sizeof x);
    }
    return crc;
}

static void test_training_steps_same_bits(void **state) {
    (void)state;
    if (!ab_cpu_supports(AB_ISA_AVX2) || !ab_isa_compiled(AB_ISA_AVX2)) {
        printf("SKIP repro: no AVX2 path on this machine\n");
        skip();
    }
    TU_SET_ISA(AB_ISA_AVX2);
    assert_int_equal(ab_set_threads(1), AB_OK);
    ab_model_config cfg = ab_model_config_default();
    cfg.n_vocab = VOCAB, cfg.n_ctx = CTX, cfg.n_layer = 4, cfg.d_model = 128, cfg.n_head = 4;
    cfg.lora_rank = 4, cfg.lora_alpha = 8.0f;
    ab_model *m = NULL;
    assert_int_equal(ab_model_create(&m, &cfg, 7), AB_OK);
    ab_adamw_cfg adam = ab_adamw_default();
    adam.weight_decay = 0.1f;
    ab_rng rng;
    ab_rng_seed(&rng, 14, 1);
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_BASE), AB_OK);
    forward_backward(m, &rng);
    clip_and_step(m, &adam);
    /* SAM: descend along the normalised gradient, take the gradient there, come back, step */
    ab_model_view v;
    assert_int_equal(ab_model_trainable(m, &v), AB_OK);
    float *saved = (float *)malloc(v.count * sizeof(float));
    assert_non_null(saved);
    forward_backward(m, &rng);
    assert_int_equal(ab_sam_step(v.params, saved, v.grads, v.count, -0.05f, NULL), AB_OK);
    forward_backward(m, &rng);
    assert_int_equal(ab_sam_restore(v.params, saved, v.count), AB_OK);
    clip_and_step(m, &adam);
    free(saved);
    /* LoRA: fresh adapters, one step on them, merged into the weights */
    assert_int_equal(ab_model_lora_init(m, &rng), AB_OK);
    assert_int_equal(ab_model_set_train_mode(m, AB_TRAIN_LORA), AB_OK);
    forward_backward(m, &rng);
    clip_and_step(m, &adam);
    assert_int_equal(ab_model_lora_merge(m), AB_OK);

    uint32_t crc = params_crc(m);
    printf("NOTE repro: crc32 %08x of the parameters after 3 training steps on the avx2 path\n", crc);
    const char *want = getenv("AB_REPRO_WANT");
    if (want) {
        char *end;
        unsigned long w = strtoul(want, &end, 16);
        if (!*want || *end) fail_msg("AB_REPRO_WANT='%s' is not the native run's CRC", want);
        if ((uint32_t)w != crc) fail_msg("crc32 %08x differs from the native run's %08lx", crc, w);
    }
    ab_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_training_steps_same_bits)};
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    ab_set_threads(1); /* join the pool's workers: alive at exit they look "possibly lost" to memcheck */
    return failed;
}
