/* examples/quickstart.c - the kernels at work on a small problem: a softmax classifier on
 * synthetic Gaussian clusters, trained with AdamW and a SAM-style step (perturb the weights along
 * the normalised gradient, take the gradient there, restore bit-exactly), with per-sample gradient
 * norms printed for the last batch. Everything is seeded: two runs print the same numbers.
 *
 *   make run            (or: build/examples/quickstart [--seed N] [--steps N] [--rho R])
 */
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

enum { N_CLASSES = 4, DIM = 16, BATCH = 32, N_TEST = 512 };

/* A point of class c: the class centre plus unit Gaussian noise. */
static void sample(ab_rng *rng, const float *centres, float *x, int *label) {
    int c = (int)ab_rng_below(rng, N_CLASSES);
    for (int j = 0; j < DIM; j++) x[j] = centres[c * DIM + j] + ab_rng_normal(rng);
    *label = c;
}

/* loss and (if dW != NULL) gradient of the mean CE of logits = X W^T + b */
static ab_status forward_backward(const float *W, const float *b, const float *X, const int *y,
                                  int n, float *dW, float *db, float *dlogits, float *loss) {
    float logits[BATCH * N_CLASSES], losses[BATCH];
    ab_status st = ab_sgemm(AB_NO_TRANS, AB_TRANS, n, N_CLASSES, DIM, 1.0f, X, DIM, W, DIM, 0.0f,
                            logits, N_CLASSES);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < N_CLASSES; c++) logits[i * N_CLASSES + c] += b[c];
    if (dlogits) memset(dlogits, 0, sizeof(float) * (size_t)n * N_CLASSES);
    if (st == AB_OK)
        st = ab_cross_entropy(losses, dlogits, logits, y, NULL, n, N_CLASSES, 1.0f / (float)n);
    if (st != AB_OK) return st;
    *loss = 0.0f;
    for (int i = 0; i < n; i++) *loss += losses[i] / (float)n;
    if (!dW) return AB_OK;
    memset(db, 0, sizeof(float) * N_CLASSES);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < N_CLASSES; c++) db[c] += dlogits[i * N_CLASSES + c];
    /* dW = dlogits^T X: the weight-gradient product, no explicit transpose */
    return ab_sgemm(AB_TRANS, AB_NO_TRANS, N_CLASSES, DIM, n, 1.0f, dlogits, N_CLASSES, X, DIM,
                    0.0f, dW, DIM);
}

int main(int argc, char **argv) {
    unsigned long seed = 1;
    int steps = 300;
    float rho = 0.05f;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rho") && i + 1 < argc) rho = (float)atof(argv[++i]);
        else {
            printf("usage: %s [--seed N] [--steps N] [--rho R]\n"
                   "  Trains a softmax classifier on 4 Gaussian clusters in 16 dimensions with AdamW\n"
                   "  (lr 1e-2) and a SAM-style step of radius R (default 0.05; 0 disables it).\n"
                   "  Defaults: --seed 1 --steps 300.\n", argv[0]);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (ab_init() != AB_OK) { fprintf(stderr, "quickstart: %s\n", ab_last_error()); return 1; }
    printf("antibody.h %s quickstart: isa=%s threads=%d seed=%lu\n", AB_VERSION_STRING,
           ab_isa_name(ab_get_isa()), ab_get_threads(), seed);

    ab_rng rng;
    ab_rng_seed(&rng, seed, 7);
    /* Parameters W (classes x dim) and b in one flat buffer, as the library's models do, so
     * AdamW, clipping and the SAM step are single calls over it. */
    enum { N_PARAMS = N_CLASSES * DIM + N_CLASSES };
    static float theta[N_PARAMS], grad[N_PARAMS], saved[N_PARAMS], m[N_PARAMS], v[N_PARAMS];
    float centres[N_CLASSES * DIM], X[BATCH * DIM], dlogits[BATCH * N_CLASSES];
    int y[BATCH];
    for (int j = 0; j < N_CLASSES * DIM; j++) centres[j] = 1.5f * ab_rng_normal(&rng);
    for (int j = 0; j < N_CLASSES * DIM; j++) theta[j] = 0.01f * ab_rng_normal(&rng);
    float *W = theta, *b = theta + N_CLASSES * DIM, *dW = grad, *db = grad + N_CLASSES * DIM;
    ab_adamw_cfg opt = ab_adamw_default();
    opt.lr = 1e-2f;
    opt.weight_decay = 0.01f;
    ab_status st = AB_OK;
    float loss = 0.0f;
    for (int step = 1; step <= steps && st == AB_OK; step++) {
        for (int i = 0; i < BATCH; i++) sample(&rng, centres, X + i * DIM, &y[i]);
        st = forward_backward(W, b, X, y, BATCH, dW, db, dlogits, &loss);
        if (st == AB_OK && rho > 0.0f) { /* SAM: gradient at theta + rho g/|g|, then restore */
            st = ab_sam_step(theta, saved, grad, N_PARAMS, rho, NULL);
            float loss_adv;
            if (st == AB_OK) st = forward_backward(W, b, X, y, BATCH, dW, db, dlogits, &loss_adv);
            if (st == AB_OK) st = ab_sam_restore(theta, saved, N_PARAMS);
        }
        if (st == AB_OK) st = ab_clip_grad_norm(grad, N_PARAMS, 1.0f, NULL);
        if (st == AB_OK) st = ab_adamw_step(theta, grad, m, v, N_PARAMS, step, &opt);
        if (st == AB_OK && (step % 50 == 0 || step == 1)) printf("step %4d  train loss %.4f\n", step, loss);
    }
    /* per-sample gradient norms of the last batch, without forming per-sample gradients */
    float w_sq[BATCH] = {0}, b_sq[BATCH] = {0};
    if (st == AB_OK)
        st = ab_psnorm_linear(w_sq, b_sq, X, dlogits, BATCH, 1, DIM, N_CLASSES, AB_PSNORM_AUTO);
    int correct = 0;
    for (int i = 0; i < N_TEST && st == AB_OK; i++) {
        float x[DIM], logits[N_CLASSES];
        int label;
        sample(&rng, centres, x, &label);
        st = ab_sgemm(AB_NO_TRANS, AB_TRANS, 1, N_CLASSES, DIM, 1.0f, x, DIM, W, DIM, 0.0f, logits, N_CLASSES);
        int best = 0;
        for (int c = 1; c < N_CLASSES; c++)
            if (logits[c] + b[c] > logits[best] + b[best]) best = c;
        correct += best == label;
    }
    if (st != AB_OK) { fprintf(stderr, "quickstart: %s\n", ab_last_error()); return 1; }
    float max_norm = 0.0f;
    for (int i = 0; i < BATCH; i++) max_norm = w_sq[i] + b_sq[i] > max_norm ? w_sq[i] + b_sq[i] : max_norm;
    printf("final train loss %.4f, test accuracy %.1f%% (%d/%d), largest per-sample grad norm %.3e\n",
           loss, 100.0 * correct / N_TEST, correct, N_TEST, (double)sqrtf(max_norm));
    return 0;
}
