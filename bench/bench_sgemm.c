/* bench/bench_sgemm.c - ab_sgemm against OpenBLAS (its default kernels and SkylakeX), GSL's CBLAS
 * and this machine's measured FMA peak. See bench/bench.h for the options and the protocol.
 *
 * Cases
 *   fma_peak          single-core FMA throughput: 24 independent zmm accumulators (>= 2 pipes x
 *                     4-cycle latency), ref = the same loop on ymm (the AVX2 ceiling). Best
 *                     sample, not median: it is a ceiling, and any sample is a lower bound of it.
 *   fma_peak_t2       the same loop on 2 threads, ref = fma_peak
 *   sgemm_<M>x<N>x<K>[_<ab>]_t<T>
 *                     ours (ab_sgemm, AVX-512 path when the CPU has it) on T threads. <ab> is the
 *                     layout, omitted for the squares (nn): nt = X*W^T (forward), nn = dY*W (input
 *                     gradient), tn = dY^T*X (weight gradient, K = tokens). Peers: openblas,
 *                     openblas_skx (same thread count), gslcblas (always 1 thread; skipped above
 *                     512^3 multiply-adds: at ~2 GFLOP/s one call would take seconds), peak
 *                     (ratio = fraction of the FMA peak for T threads: the fma_peak loop is a
 *                     peer of its own, timed in the same interleaved rounds as the others, so a
 *                     clock change on the shared host moves both sides of the ratio).
 *   sgemm_avx2_1024x1024x1024_t1
 *                     our AVX2 path, peak = the AVX2 (ymm) FMA loop.
 *   contended_sgemm_<M>x<N>x<K>
 *                     ours on 2 threads, ref t1 = ours on 1 thread, both while a forked busy-loop
 *                     process competes for the CPUs (ratio >= 0.9 is the target: threads must
 *                     not hurt); 64^3 to 2048^3 and the tiny model's qkv product.
 * Every case computes C = A*B with alpha = 1, beta = 0, tight leading dimensions, inputs uniform
 * in [-1, 1). Before timing, ours is checked against openblas_skx (or scalar) on the same inputs.
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include <float.h>
#include <math.h>
#include "peak.h"

/* ---- GEMM calls ------------------------------------------------------------------------------ */
typedef struct gemm_ctx {
    int ta, tb, m, n, k, lda, ldb, ldc;
    const float *A, *B;
    float *C;
    const bench_blas *blas;
} gemm_ctx;

static void run_ours(void *p) {
    gemm_ctx *g = (gemm_ctx *)p;
    ab_sgemm(g->ta ? AB_TRANS : AB_NO_TRANS, g->tb ? AB_TRANS : AB_NO_TRANS, g->m, g->n, g->k, 1.0f,
             g->A, g->lda, g->B, g->ldb, 0.0f, g->C, g->ldc);
}

static void run_blas(void *p) {
    gemm_ctx *g = (gemm_ctx *)p;
    g->blas->sgemm(BENCH_CBLAS_ROW_MAJOR, g->ta ? BENCH_CBLAS_TRANS : BENCH_CBLAS_NO_TRANS,
                   g->tb ? BENCH_CBLAS_TRANS : BENCH_CBLAS_NO_TRANS, g->m, g->n, g->k, 1.0f, g->A,
                   g->lda, g->B, g->ldb, 0.0f, g->C, g->ldc);
}

typedef struct shape {
    int m, n, k, ta, tb;
    const char *layout; /* "" for squares, else nt / nn / tn */
} shape;

static const shape shapes[] = {
    /* squares */
    {64, 64, 64, 0, 0, ""}, {128, 128, 128, 0, 0, ""}, {256, 256, 256, 0, 0, ""},
    {512, 512, 512, 0, 0, ""}, {1024, 1024, 1024, 0, 0, ""}, {2048, 2048, 2048, 0, 0, ""},
    /* GPT-2 small, 512 tokens, width 768: forward X*W^T (qkv, fc, proj) */
    {512, 2304, 768, 0, 1, "nt"}, {512, 3072, 768, 0, 1, "nt"}, {512, 768, 3072, 0, 1, "nt"},
    /* input gradients dY*W */
    {512, 768, 2304, 0, 0, "nn"}, {512, 768, 3072, 0, 0, "nn"}, {512, 3072, 768, 0, 0, "nn"},
    /* weight gradients dY^T*X, K = tokens */
    {2304, 768, 512, 1, 0, "tn"}, {3072, 768, 512, 1, 0, "tn"}, {768, 3072, 512, 1, 0, "tn"},
    /* tiny model, 256 tokens, width 128: forward qkv, attn proj, fc, fc proj */
    {256, 384, 128, 0, 1, "nt"}, {256, 128, 128, 0, 1, "nt"}, {256, 512, 128, 0, 1, "nt"},
    {256, 128, 512, 0, 1, "nt"},
    /* input gradients of fc and qkv */
    {256, 128, 512, 0, 0, "nn"}, {256, 128, 384, 0, 0, "nn"},
    /* weight gradients (K = tokens): fc proj, fc, qkv */
    {128, 512, 256, 1, 0, "tn"}, {512, 128, 256, 1, 0, "tn"}, {384, 128, 256, 1, 0, "tn"},
};

#define GSL_MAX_FMA (512.0 * 512.0 * 512.0)

static float *random_matrix(size_t count, ab_rng *rng) {
    float *x = (float *)ab_aligned_alloc(count * sizeof(float));
    if (!x) {
        fprintf(stderr, "bench_sgemm: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < count; i++) x[i] = 2.0f * ab_rng_uniform(rng) - 1.0f;
    return x;
}

/* Ours against a second implementation on the same inputs: |diff| <= 2 k eps sum|a||b|, with
 * sum|a||b| <= k for inputs in [-1, 1). A gross failure means a broken kernel, so it stops. */
static void check_against(gemm_ctx *ours, gemm_ctx *other, void (*run_other)(void *), float *C2,
                          const char *name) {
    gemm_ctx o = *other;
    o.C = C2;
    run_ours(ours);
    run_other(&o);
    double worst = 0.0, bound = 2.0 * ours->k * FLT_EPSILON * ours->k;
    for (size_t i = 0; i < (size_t)ours->m * ours->n; i++) {
        double d = fabs((double)ours->C[i] - (double)C2[i]);
        if (!(d <= worst)) worst = d;
    }
    if (!(worst <= bound)) {
        fprintf(stderr, "bench_sgemm: %s: ours differs from the reference by %.3g (bound %.3g)\n",
                name, worst, bound);
        exit(1);
    }
}

/* Ours on 2 threads against ours on 1, both while a forked busy-loop process competes for the
 * 2 CPUs (DESIGN.md: threads must never make a run slower than one thread). */
typedef struct threaded_ctx {
    gemm_ctx *g;
    int threads;
} threaded_ctx;
static void run_ours_threads(void *p) {
    threaded_ctx *t = (threaded_ctx *)p;
    ab_set_threads(t->threads);
    run_ours(t->g);
}

static void run_contended(const shape *s, ab_isa isa, ab_rng *rng) {
    char name[128];
    snprintf(name, sizeof name, "contended_sgemm_%dx%dx%d", s->m, s->n, s->k);
    if (!bench_want(name, 2)) return;
    if (ab_set_isa(isa) != AB_OK) return;
    gemm_ctx g = {s->ta, s->tb, s->m, s->n, s->k, s->ta ? s->m : s->k, s->tb ? s->k : s->n, s->n,
                  NULL, NULL, NULL, NULL};
    g.A = random_matrix((size_t)s->m * s->k, rng);
    g.B = random_matrix((size_t)s->k * s->n, rng);
    g.C = random_matrix((size_t)s->m * s->n, rng);
    threaded_ctx t2 = {&g, 2}, t1 = {&g, 1};
    bench_entry e[2] = {{.ref = "ours", .fn = run_ours_threads, .ctx = &t2},
                        {.ref = "t1", .fn = run_ours_threads, .ctx = &t1}};
    bench_competitor_start();
    bench_compare(name, "GFLOP/s", 2.0 * (double)s->m * s->n * s->k * 1e-9, 2, e, 2);
    bench_competitor_stop();
    ab_aligned_free((void *)g.A);
    ab_aligned_free((void *)g.B);
    ab_aligned_free(g.C);
}

/* peak: the FMA-peak loop as a peer entry (ref "peak", its own GFLOP per call in .work). */
static void run_shape(const shape *s, int threads, ab_isa isa, const char *isa_tag,
                      bench_entry peak, bench_blas *blas, int n_blas, ab_rng *rng) {
    char name[128];
    snprintf(name, sizeof name, "sgemm_%s%dx%dx%d%s%s_t%d", isa_tag, s->m, s->n, s->k,
             *s->layout ? "_" : "", s->layout, threads);
    if (!bench_want(name, threads)) return;
    if (ab_set_isa(isa) != AB_OK || ab_set_threads(threads) != AB_OK) {
        bench_skip(name, "all", "ISA or thread count not available");
        return;
    }
    gemm_ctx g;
    g.ta = s->ta;
    g.tb = s->tb;
    g.m = s->m;
    g.n = s->n;
    g.k = s->k;
    g.lda = s->ta ? s->m : s->k;
    g.ldb = s->tb ? s->k : s->n;
    g.ldc = s->n;
    g.A = random_matrix((size_t)s->m * s->k, rng);
    g.B = random_matrix((size_t)s->k * s->n, rng);
    g.C = random_matrix((size_t)s->m * s->n, rng);
    float *C2 = random_matrix((size_t)s->m * s->n, rng);
    g.blas = NULL;

    bench_entry e[8];
    gemm_ctx peer_ctx[8];
    int n = 0;
    e[n++] = (bench_entry){.ref = "ours", .fn = run_ours, .ctx = &g};
    double fmas = (double)s->m * s->n * s->k;
    for (int b = 0; b < n_blas; b++) {
        if (!blas[b].handle) {
            bench_skip(name, blas[b].name, blas[b].why);
            continue;
        }
        if (!blas[b].set_threads && fmas > GSL_MAX_FMA) {
            bench_skip(name, blas[b].name, "gslcblas_skipped_above_512^3_(too_slow)");
            continue;
        }
        bench_blas_set_threads(&blas[b], threads);
        peer_ctx[n] = g;
        peer_ctx[n].blas = &blas[b];
        e[n] = (bench_entry){.ref = blas[b].name, .fn = run_blas, .ctx = &peer_ctx[n]};
        n++;
    }
    /* correctness first: against OpenBLAS-SkylakeX if loaded, else whatever peer there is */
    if (n > 1) check_against(&g, &peer_ctx[n > 2 ? 2 : 1], run_blas, C2, name);
    e[n++] = peak;
    bench_compare(name, "GFLOP/s", 2.0 * fmas * 1e-9, threads, e, n);
    ab_aligned_free((void *)g.A);
    ab_aligned_free((void *)g.B);
    ab_aligned_free(g.C);
    ab_aligned_free(C2);
}

int main(int argc, char **argv) {
    bench_init(argc, argv);
    if (ab_init() != AB_OK) {
        fprintf(stderr, "bench_sgemm: ab_init: %s\n", ab_last_error());
        return 1;
    }
    ab_isa best = ab_best_isa();
    int have512 = best >= AB_ISA_AVX512, have256 = best >= AB_ISA_AVX2;
    bench_blas blas[3];
    bench_blas_load_openblas(&blas[0]);
    bench_blas_load_openblas_skx(&blas[1], &blas[0]);
    bench_blas_load_gslcblas(&blas[2]);
    printf("# bench_sgemm: ours = ab_sgemm on the %s path; openblas core = %s, openblas_skx core = "
           "%s; rounds = %d (median)\n",
           ab_isa_name(best), blas[0].handle ? blas[0].core : "-",
           blas[1].handle ? blas[1].core : "-", bench_cfg.iters);
    if (!have256) {
        bench_skip("sgemm", "all", "no_AVX2_on_this_CPU");
        return 0;
    }

    /* The peaks on their own (fma_peak, fma_peak_t2); each sgemm case times the same loops again
     * as its `peak` peer, interleaved with ours. */
    double flop_zmm = PEAK_FLOP_ZMM, flop_ymm = PEAK_FLOP_YMM;
    bench_entry ymm[1] = {{.ref = "ours", .fn = run_peak_ymm}};
    bench_compare("fma_peak_avx2", "GFLOP/s", flop_ymm, 1, ymm, 1);
    double peak_avx2 = ymm[0].best, peak1 = peak_avx2, peak2 = 2.0 * peak_avx2;
    bench_entry p_ymm = {.ref = "peak", .fn = run_peak_ymm, .work = flop_ymm}, p1 = p_ymm, p2 = p_ymm;
    if (have512) { /* a ceiling: the best sample, not the median */
        bench_entry zmm[1] = {{.ref = "ours", .fn = run_peak_zmm}};
        bench_entry zmm2[1] = {{.ref = "ours", .fn = run_peak_zmm_t2}};
        bench_compare("fma_peak", "GFLOP/s", flop_zmm, 1, zmm, 1);
        bench_compare("fma_peak_t2", "GFLOP/s", 2.0 * flop_zmm, 2, zmm2, 1);
        peak1 = zmm[0].best;
        peak2 = zmm2[0].best;
        p1 = (bench_entry){.ref = "peak", .fn = run_peak_zmm, .work = flop_zmm};
        p2 = (bench_entry){.ref = "peak", .fn = run_peak_zmm_t2, .work = 2.0 * flop_zmm};
    }
    if (bench_want("fma_peak", 1)) bench_line("fma_peak", "GFLOP/s", peak1, "avx2_fma", peak_avx2);
    if (bench_want("fma_peak_t2", 2)) bench_line("fma_peak_t2", "GFLOP/s", peak2, "fma_peak", peak1);

    ab_rng rng;
    ab_rng_seed(&rng, 42, 7);
    int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int threads = 1; threads <= 2; threads++)
        for (int i = 0; i < n_shapes; i++)
            run_shape(&shapes[i], threads, best, "", threads == 1 ? p1 : p2, blas, 3, &rng);
    if (have512) { /* our AVX2 path on the same machine, for the record */
        shape sq = {1024, 1024, 1024, 0, 0, ""};
        run_shape(&sq, 1, AB_ISA_AVX2, "avx2_", p_ymm, blas, 3, &rng);
    }
    static const shape contended[] = {{64, 64, 64, 0, 0, ""},       {256, 128, 128, 0, 0, ""},
                                      {256, 384, 128, 0, 1, "nt"}, {512, 512, 512, 0, 0, ""},
                                      {1024, 1024, 1024, 0, 0, ""}, {2048, 2048, 2048, 0, 0, ""}};
    for (int i = 0; i < (int)(sizeof contended / sizeof contended[0]); i++)
        run_contended(&contended[i], best, &rng);
    return 0;
}
