/* bench/bench_psnorm.c - per-sample gradient norms of a linear layer without materialising the
 * per-sample gradients (ab_psnorm_linear), against materialising them. See bench/bench.h for the
 * options and the measurement protocol.
 *
 * Cases (unit samples/s, higher is better)
 *   psnorm_T<T>_d<d>   T tokens per sample, d_in = d_out = d = 256, N_SAMPLES samples per call.
 *     ours         ab_psnorm_linear(..., AB_PSNORM_AUTO): ghost (<A A^T, G G^T>_F, the pairs t <= s
 *                  of the two T x T Gram matrices fused with their product, one kernel call per
 *                  sample) when 2 T^2 < d_in d_out, else materialising; T = 1: ||g||^2 ||a||^2.
 *     materialize  what one would do without the identity: for each sample, its gradient G^T A
 *                  (d_out x d_in) with ab_sgemm (our own fast GEMM), then ab_l2_norm of it, squared.
 * Both compute the weight term only (no bias). The results are checked against each other first.
 * At T = 256, d = 256, 2 T^2 > d^2, so AUTO materialises too and the ratio is ~1 by design.
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include <math.h>

#define D 256
#define N_SAMPLES 64

typedef struct ps_ctx {
    const float *A, *G;
    float *sq;
    float *work; /* d_out x d_in gradient for the materialising reference */
    int T;
} ps_ctx;

static void run_ours(void *p) {
    ps_ctx *c = (ps_ctx *)p;
    memset(c->sq, 0, N_SAMPLES * sizeof(float)); /* the API accumulates */
    ab_psnorm_linear(c->sq, NULL, c->A, c->G, N_SAMPLES, c->T, D, D, AB_PSNORM_AUTO);
}

static void run_materialize(void *p) {
    ps_ctx *c = (ps_ctx *)p;
    for (int i = 0; i < N_SAMPLES; i++) {
        const float *Ai = c->A + (size_t)i * c->T * D, *Gi = c->G + (size_t)i * c->T * D;
        /* grad_W(i) = G_i^T A_i: d_out x d_in, K = T */
        ab_sgemm(AB_TRANS, AB_NO_TRANS, D, D, c->T, 1.0f, Gi, D, Ai, D, 0.0f, c->work, D);
        float nrm;
        ab_l2_norm(c->work, (size_t)D * D, &nrm);
        c->sq[i] = nrm * nrm;
    }
}

static void run_case(int T, ab_rng *rng) {
    char name[64];
    snprintf(name, sizeof name, "psnorm_T%d_d%d", T, D);
    if (!bench_want(name, 1)) return;
    size_t n = (size_t)N_SAMPLES * T * D;
    float *A = (float *)ab_aligned_alloc(n * sizeof(float)), *G = (float *)ab_aligned_alloc(n * sizeof(float));
    float *sq_ours = (float *)ab_aligned_alloc(N_SAMPLES * sizeof(float));
    float *sq_ref = (float *)ab_aligned_alloc(N_SAMPLES * sizeof(float));
    float *work = (float *)ab_aligned_alloc((size_t)D * D * sizeof(float));
    if (!A || !G || !sq_ours || !sq_ref || !work) {
        fprintf(stderr, "bench_psnorm: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        A[i] = 2.0f * ab_rng_uniform(rng) - 1.0f;
        G[i] = 1e-3f * (2.0f * ab_rng_uniform(rng) - 1.0f);
    }
    ps_ctx ours = {A, G, sq_ours, NULL, T}, ref = {A, G, sq_ref, work, T};
    run_ours(&ours);
    run_materialize(&ref);
    /* Both are float computations of the same sum of squares (in different orders): agree to
     * ~1e-5 relative; anything larger is a bug. */
    for (int i = 0; i < N_SAMPLES; i++) {
        double e = fabs((double)sq_ours[i] - sq_ref[i]) / (fabs((double)sq_ref[i]) + 1e-30);
        if (!(e <= 1e-4)) {
            fprintf(stderr, "bench_psnorm: %s sample %d: ours %.9g vs materialised %.9g\n", name, i,
                    (double)sq_ours[i], (double)sq_ref[i]);
            exit(1);
        }
    }
    bench_entry e[2] = {{.ref = "ours", .fn = run_ours, .ctx = &ours},
                        {.ref = "materialize", .fn = run_materialize, .ctx = &ref}};
    bench_compare(name, "samples/s", (double)N_SAMPLES, 1, e, 2);
    ab_aligned_free(A);
    ab_aligned_free(G);
    ab_aligned_free(sq_ours);
    ab_aligned_free(sq_ref);
    ab_aligned_free(work);
}

int main(int argc, char **argv) {
    bench_init(argc, argv);
    if (ab_init() != AB_OK) {
        fprintf(stderr, "bench_psnorm: ab_init: %s\n", ab_last_error());
        return 1;
    }
    ab_set_threads(1);
    printf("# bench_psnorm: ab_psnorm_linear (AUTO) vs per-sample ab_sgemm + ab_l2_norm, %s path, "
           "1 thread, %d samples of d_in = d_out = %d per call; rounds = %d (median)\n",
           ab_isa_name(ab_get_isa()), N_SAMPLES, D, bench_cfg.iters);
    ab_rng rng;
    ab_rng_seed(&rng, 42, 9);
    const int Ts[] = {1, 16, 64, 256};
    for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) run_case(Ts[i], &rng);
    return 0;
}
