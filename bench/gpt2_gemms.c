/* bench/gpt2_gemms.c - where the GPT-2-shaped training step's matmul time goes, product by product
 * (`make bench-gpt2` runs it after bench_step's gpt2 cases; alone: build/bench/gpt2_gemms).
 *
 * The model and batch are bench_step's gpt2 case (bench/gpt2_case.h: vocab 50304, 12 layers,
 * d_model 768, 12 heads, B = 4, T = 64, every weight trained). Every ab_sgemm and ab_linear_forward call that
 * antibody_gpt.h makes on the calling thread is timed: the two names are redirected to timing
 * wrappers for this file's copy of the model code (the macros below, defined between including
 * antibody.h and antibody_gpt.h; the library is not changed). Calls made inside the model's own
 * parallel regions (attention's per-head 64 x 64 products) run on several threads at once and
 * are counted but not timed: the model's profiler reports attention as a whole.
 *
 * For 1 and 2 threads: one warm-up step (page faults of ~2.5 GB), then --steps steps (default 3;
 * sums over them, reported per step). One line per product shape, largest share first:
 *   GEMM threads=<t> shape=<m>x<n>x<k> op=<nt|nn|tn> [epilogue=...] beta=<b> calls=<per step>
 *        ms=<per step> share=<% of the timed matmul> gflops=<GFLOP/s> of_peak=<fraction of the
 *        FMA peak for t threads measured at the start of this run: bench/peak.h's loop, best of
 *        40 back-to-back calls>
 *   GEMMTOTAL threads=<t> step_ms=<the whole step> timed_ms=<the timed products> untimed_calls=...
 *        gflops=... of_peak=... peak=<the FMA peak used, GFLOP/s>
 * Not BENCH lines: there is no peer, and the shares are of one configuration. epilogue=linear
 * marks ab_linear_forward (x W^T with its fused bias, residual and GELU).
 *
 * Then the replay (skipped with --no-replay; ~1 min, ~2 GB): the products of one 1-thread step
 * outside the model's parallel regions (147 calls, 189.8 GFLOP), in the step's order, each on
 * operands of its own so that weight-sized operands come from DRAM as they do in the step, run
 * back to back by ab_sgemm, by OpenBLAS forced to SkylakeX and by OpenBLAS with its own kernels
 * (dlopen'ed as in bench_sgemm; beta as in the step, no fused epilogue for anyone), with the FMA
 * loop as a fourth entry, interleaved by bench_compare (one call of an entry = the whole replay):
 *   BENCH case=gpt2_products_t<t> unit=GFLOP/s ours=<x> ref=openblas_skx|openblas|peak ...
 *   REPLAY threads=<t> ours_of_peak=... openblas_skx_of_peak=... step_ms=<the in-step figure>
 *        step_ms_at_openblas_skx=<the step with its timed products scaled by ours/openblas_skx>
 *        step_ms_at_peak=<the step with its timed products at the FMA peak>
 * The last two answer "how fast could this step be with the best peer's products, or with
 * products at the peak", everything else in the step unchanged. Before timing, ours is checked
 * against openblas_skx on every distinct shape (|diff| <= 2 k^2 eps).
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include "peak.h"
#include <float.h>
#include <math.h>
#include <pthread.h>

/* ---- the timing wrappers -------------------------------------------------------------------- */
typedef struct gemm_key {
    int m, n, k, ta, tb, bias, resid, gelu, linear;
    float beta;
} gemm_key;
typedef struct gemm_row {
    gemm_key key;
    long calls;
    double seconds, flop;
} gemm_row;

#define MAX_ROWS 64
#define MAX_SEQ 1024
static gemm_row g_rows[MAX_ROWS];
/* The timed calls of one step in order (captured during the first measured 1-thread step, outside
 * the model's parallel regions), for the replay against the BLAS peers. */
static gemm_key g_seq[MAX_SEQ];
static int g_n_seq, g_capture, g_seq_overflow;
static int g_n_rows;
static long g_untimed; /* calls on other threads (inside the model's parallel regions) */
static pthread_t g_main;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void record(const gemm_key *key, double seconds) {
    /* not attention's per-head products: the model runs them inside its own parallel regions
     * (antibody.h's ab__in_parallel), and on 2 threads most of them are not timed */
    if (g_capture && !ab__in_parallel) {
        if (g_n_seq < MAX_SEQ) g_seq[g_n_seq++] = *key;
        else g_seq_overflow = 1;
    }
    int i = 0;
    while (i < g_n_rows && memcmp(&g_rows[i].key, key, sizeof *key) != 0) i++;
    if (i == MAX_ROWS) return; /* more shapes than rows: not expected (the step has ~20) */
    if (i == g_n_rows) {
        memset(&g_rows[i], 0, sizeof g_rows[i]);
        g_rows[i].key = *key;
        g_n_rows++;
    }
    g_rows[i].calls++;
    g_rows[i].seconds += seconds;
    g_rows[i].flop += 2.0 * key->m * (double)key->n * key->k;
}

static int on_main(void) {
    if (pthread_equal(pthread_self(), g_main)) return 1;
    pthread_mutex_lock(&g_lock);
    g_untimed++;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

static ab_status timed_sgemm(ab_trans ta, ab_trans tb, int m, int n, int k, float alpha,
                             const float *A, int lda, const float *B, int ldb, float beta, float *C,
                             int ldc) {
    if (!on_main()) return ab_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    gemm_key key;
    memset(&key, 0, sizeof key); /* padding included: keys are compared with memcmp */
    key.m = m, key.n = n, key.k = k, key.ta = ta == AB_TRANS, key.tb = tb == AB_TRANS;
    key.beta = beta;
    double t0 = bench_now();
    ab_status st = ab_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    record(&key, bench_now() - t0);
    return st;
}

static ab_status timed_linear(float *out, int ldo, const float *x, const float *W,
                              const float *bias, const float *residual, float *gelu_out, int rows,
                              int d_in, int d_out) {
    if (!on_main())
        return ab_linear_forward(out, ldo, x, W, bias, residual, gelu_out, rows, d_in, d_out);
    gemm_key key;
    memset(&key, 0, sizeof key);
    key.m = rows, key.n = d_out, key.k = d_in, key.tb = 1, key.linear = 1;
    key.bias = bias != NULL, key.resid = residual != NULL, key.gelu = gelu_out != NULL;
    double t0 = bench_now();
    ab_status st = ab_linear_forward(out, ldo, x, W, bias, residual, gelu_out, rows, d_in, d_out);
    record(&key, bench_now() - t0);
    return st;
}

#define ab_sgemm timed_sgemm
#define ab_linear_forward timed_linear
#include "antibody_gpt.h"
#undef ab_sgemm
#undef ab_linear_forward
#include "gpt2_case.h"

/* ---- the step ------------------------------------------------------------------------------- */
static void check(ab_status st, const char *what) {
    if (st != AB_OK) {
        fprintf(stderr, "gpt2_gemms: %s: %s\n", what, ab_last_error());
        exit(1);
    }
}

static void step(ab_model *m, const ab_batch *b, const ab_adamw_cfg *opt) {
    check(ab_model_zero_grad(m), "zero_grad");
    check(ab_model_forward(m, b, NULL, NULL, NULL, NULL), "forward");
    check(ab_model_backward(m, NULL), "backward");
    check(ab_model_adamw_step(m, opt), "adamw");
}

static int by_seconds(const void *a, const void *b) {
    double x = ((const gemm_row *)a)->seconds, y = ((const gemm_row *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* ---- the replay: the step's products against the BLAS peers -------------------------------- */
/* Every timed call of one step, in the step's order, each on operands of its own (uniform in
 * [-1, 1), tight leading dimensions): ~2 GB in all, so every weight-sized operand comes from
 * DRAM as in the step. Ours is ab_sgemm for every call, ab_linear_forward's too (with beta = 0 and
 * no epilogue), so ours and the peers do the same arithmetic. */
typedef struct replay_call {
    gemm_key key;
    int lda, ldb, ldc;
    float *A, *B, *C;
} replay_call;
typedef struct replay {
    replay_call *calls;
    int n;
    const bench_blas *blas; /* NULL: ours */
} replay;

static float replay_beta(const gemm_key *k) { return k->linear ? 0.0f : k->beta; }

static void replay_one(const replay_call *c, const bench_blas *blas, float *C) {
    const gemm_key *k = &c->key;
    if (!blas) {
        if (ab_sgemm(k->ta ? AB_TRANS : AB_NO_TRANS, k->tb ? AB_TRANS : AB_NO_TRANS, k->m, k->n,
                     k->k, 1.0f, c->A, c->lda, c->B, c->ldb, replay_beta(k), C, c->ldc) != AB_OK) {
            fprintf(stderr, "gpt2_gemms: replay: ab_sgemm: %s\n", ab_last_error());
            exit(1);
        }
        return;
    }
    blas->sgemm(BENCH_CBLAS_ROW_MAJOR, k->ta ? BENCH_CBLAS_TRANS : BENCH_CBLAS_NO_TRANS,
                k->tb ? BENCH_CBLAS_TRANS : BENCH_CBLAS_NO_TRANS, k->m, k->n, k->k, 1.0f, c->A,
                c->lda, c->B, c->ldb, replay_beta(k), C, c->ldc);
}

static void run_replay(void *p) {
    const replay *r = (const replay *)p;
    for (int i = 0; i < r->n; i++) replay_one(&r->calls[i], r->blas, r->calls[i].C);
}

static float *replay_matrix(size_t count, ab_rng *rng) {
    float *x = (float *)ab_aligned_alloc(count * sizeof(float));
    if (!x) {
        fprintf(stderr, "gpt2_gemms: out of memory for the replay's operands\n");
        exit(1);
    }
    for (size_t i = 0; i < count; i++) x[i] = 2.0f * ab_rng_uniform(rng) - 1.0f;
    return x;
}

/* Ours against the peer on each distinct shape of the replay, beta = 0 into two scratch
 * matrices: |diff| <= 2 k eps sum|a||b| <= 2 k^2 eps for inputs in [-1, 1), as bench_sgemm. */
static void replay_check(const replay *r, const bench_blas *peer) {
    for (int i = 0; i < r->n; i++) {
        const replay_call *c = &r->calls[i];
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = memcmp(&r->calls[j].key, &c->key, sizeof c->key) == 0;
        if (seen) continue;
        size_t count = (size_t)c->key.m * c->key.n;
        float *x = (float *)calloc(count, sizeof(float)), *y = (float *)calloc(count, sizeof(float));
        if (!x || !y) {
            fprintf(stderr, "gpt2_gemms: out of memory\n");
            exit(1);
        }
        replay_call zero = *c;
        zero.key.beta = 0.0f;
        replay_one(&zero, NULL, x);
        replay_one(&zero, peer, y);
        double worst = 0.0, bound = 2.0 * c->key.k * (double)c->key.k * FLT_EPSILON;
        for (size_t e = 0; e < count; e++) {
            double d = fabs((double)x[e] - (double)y[e]);
            if (!(d <= worst)) worst = d;
        }
        free(x);
        free(y);
        if (!(worst <= bound)) {
            fprintf(stderr, "gpt2_gemms: replay %dx%dx%d: ours differs from %s by %.3g (bound %.3g)\n",
                    c->key.m, c->key.n, c->key.k, peer->name, worst, bound);
            exit(1);
        }
    }
}

/* The replay on 1 and 2 threads: BENCH case=gpt2_products_t<t> ours=<GFLOP/s> for ref=openblas_skx,
 * ref=openblas (when libopenblas.so.0 loads) and ref=peak (the FMA loop, interleaved), then a
 * REPLAY line with the step time those ratios imply. step_ms/timed_ms: gpt2_gemms' in-step
 * figures per thread count. */
static void replay_run(const double *step_ms, const double *timed_ms) {
    bench_blas blas[2];
    bench_blas_load_openblas(&blas[0]);
    bench_blas_load_openblas_skx(&blas[1], &blas[0]);
    ab_rng rng;
    ab_rng_seed(&rng, 9, 1);
    replay r = {NULL, g_n_seq, NULL};
    r.calls = (replay_call *)calloc((size_t)g_n_seq, sizeof *r.calls);
    if (!r.calls) exit(1);
    double flop = 0.0, floats = 0.0;
    for (int i = 0; i < g_n_seq; i++) {
        replay_call *c = &r.calls[i];
        c->key = g_seq[i];
        const gemm_key *k = &c->key;
        c->lda = k->ta ? k->m : k->k;
        c->ldb = k->tb ? k->k : k->n;
        c->ldc = k->n;
        c->A = replay_matrix((size_t)k->m * k->k, &rng);
        c->B = replay_matrix((size_t)k->k * k->n, &rng);
        c->C = replay_matrix((size_t)k->m * k->n, &rng);
        flop += 2.0 * k->m * (double)k->n * k->k;
        floats += (double)k->m * k->k + (double)k->k * k->n + (double)k->m * k->n;
    }
    printf("# replay: %d calls, %.1f GFLOP, operands %.0f MiB\n", g_n_seq, flop * 1e-9,
           floats * 4.0 / (1024.0 * 1024.0));
    int have_skx = blas[1].handle != NULL;
    if (have_skx) replay_check(&r, &blas[1]);
    for (int threads = 1; threads <= 2; threads++) {
        char name[64];
        snprintf(name, sizeof name, "gpt2_products_t%d", threads);
        check(ab_set_threads(threads), "ab_set_threads");
        bench_entry e[4];
        replay peers[2];
        int n = 0, skx = -1;
        e[n++] = (bench_entry){.ref = "ours", .fn = run_replay, .ctx = &r};
        for (int b = 1; b >= 0; b--) {
            if (!blas[b].handle) {
                bench_skip(name, blas[b].name, blas[b].why);
                continue;
            }
            bench_blas_set_threads(&blas[b], threads);
            peers[b] = r;
            peers[b].blas = &blas[b];
            if (b == 1) skx = n;
            e[n++] = (bench_entry){.ref = blas[b].name, .fn = run_replay, .ctx = &peers[b]};
        }
        int pk = n;
        e[n++] = threads > 1
                     ? (bench_entry){.ref = "peak", .fn = run_peak_zmm_t2, .work = 2.0 * PEAK_FLOP_ZMM}
                     : (bench_entry){.ref = "peak", .fn = run_peak_zmm, .work = PEAK_FLOP_ZMM};
        bench_compare(name, "GFLOP/s", flop * 1e-9, threads, e, n);
        double ours = e[0].value, peak = e[pk].value;
        printf("REPLAY threads=%d ours_of_peak=%.3f", threads, ours / peak);
        if (skx >= 0) {
            double other = step_ms[threads - 1] - timed_ms[threads - 1];
            printf(" openblas_skx_of_peak=%.3f step_ms=%.1f step_ms_at_openblas_skx=%.1f"
                   " step_ms_at_peak=%.1f",
                   e[skx].value / peak, step_ms[threads - 1],
                   other + timed_ms[threads - 1] * ours / e[skx].value, other + 1e3 * flop * 1e-9 / peak);
        }
        printf("\n");
    }
    for (int i = 0; i < g_n_seq; i++) {
        ab_aligned_free(r.calls[i].A);
        ab_aligned_free(r.calls[i].B);
        ab_aligned_free(r.calls[i].C);
    }
    free(r.calls);
    bench_blas_close(&blas[1]);
    bench_blas_close(&blas[0]);
}

int main(int argc, char **argv) {
    int steps = 3, replay = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--no-replay")) {
            replay = 0;
        } else {
            int help = !strcmp(argv[i], "--help");
            fprintf(help ? stdout : stderr,
                    "usage: %s [--steps N] [--no-replay]\n"
                    "  times every product of the GPT-2-shaped training step on 1 and 2\n"
                    "  threads (N steps after a warm-up step, default 3), then replays the\n"
                    "  step's products against OpenBLAS (--no-replay: not); see the top of\n"
                    "  bench/gpt2_gemms.c\n",
                    argv[0]);
            return help ? 0 : 2;
        }
    }
    if (steps < 1 || steps > 100) {
        fprintf(stderr, "gpt2_gemms: --steps must be 1..100\n");
        return 2;
    }
    g_main = pthread_self();
    check(ab_init(), "ab_init");
    /* This run's FMA peak for 1 and 2 threads, before the model exists: the best of 40
     * back-to-back calls (~60 ms). The first 2-thread calls can run on one thread: a new or
     * sleeping worker wakes too late to claim its chunk, which the caller then runs itself, and
     * a new pool's first calls can fall into a contention hold (antibody.h, ~10-20 ms). */
    double peaks[2] = {0.0, 0.0};
    for (int threads = 1; threads <= 2; threads++) {
        check(ab_set_threads(threads), "ab_set_threads");
        for (int r = 0; r < 40; r++) {
            double t0 = bench_now();
            if (threads > 1) run_peak_zmm_t2(NULL);
            else run_peak_zmm(NULL);
            double gf = (threads > 1 ? 2.0 : 1.0) * PEAK_FLOP_ZMM / (bench_now() - t0);
            if (gf > peaks[threads - 1]) peaks[threads - 1] = gf;
        }
    }
    ab_model_config cfg;
    gpt2_case_config(&cfg);
    ab_model *m = NULL;
    check(ab_model_create(&m, &cfg, 1), "ab_model_create");
    enum { B = GPT2_CASE_B, T = GPT2_CASE_T };
    static int in[B * T], tg[B * T];
    static float mask[B * T];
    ab_rng rng;
    ab_rng_seed(&rng, 2, 0); /* bench_step's batch */
    bench_random_tokens(&rng, in, tg, mask, (size_t)B * T, cfg.n_vocab);
    ab_batch batch;
    memset(&batch, 0, sizeof batch);
    batch.B = B, batch.T = T, batch.inputs = in, batch.targets = tg, batch.mask = mask;
    ab_adamw_cfg opt = ab_adamw_default();
    opt.lr = 1e-5f;
    printf("# gpt2_gemms: isa %s, %d steps per thread count after a warm-up step\n",
           ab_isa_name(ab_get_isa()), steps);
    double step_ms[2], timed_ms[2];
    for (int threads = 1; threads <= 2; threads++) {
        check(ab_set_threads(threads), "ab_set_threads");
        double peak = peaks[threads - 1];
        step(m, &batch, &opt); /* warm-up, not counted */
        g_n_rows = 0, g_untimed = 0;
        double t0 = bench_now();
        for (int s = 0; s < steps; s++) {
            g_capture = threads == 1 && s == 0;
            step(m, &batch, &opt);
            g_capture = 0;
        }
        double step_s = (bench_now() - t0) / steps, timed = 0.0, flop = 0.0;
        for (int i = 0; i < g_n_rows; i++) timed += g_rows[i].seconds, flop += g_rows[i].flop;
        qsort(g_rows, (size_t)g_n_rows, sizeof g_rows[0], by_seconds);
        for (int i = 0; i < g_n_rows; i++) {
            const gemm_row *r = &g_rows[i];
            const gemm_key *k = &r->key;
            double gf = r->flop / r->seconds * 1e-9;
            printf("GEMM threads=%d shape=%dx%dx%d op=%c%c%s%s%s%s beta=%g calls=%ld ms=%.2f "
                   "share=%.1f%% gflops=%.1f of_peak=%.3f\n",
                   threads, k->m, k->n, k->k, k->ta ? 't' : 'n', k->tb ? 't' : 'n',
                   k->linear ? " epilogue=linear" : "", k->bias ? "+bias" : "",
                   k->resid ? "+residual" : "", k->gelu ? "+gelu" : "", (double)k->beta,
                   r->calls / steps, 1e3 * r->seconds / steps, 100.0 * r->seconds / timed, gf,
                   gf / peak);
        }
        double gf = flop / timed * 1e-9;
        step_ms[threads - 1] = 1e3 * step_s, timed_ms[threads - 1] = 1e3 * timed / steps;
        printf("GEMMTOTAL threads=%d step_ms=%.1f timed_ms=%.1f (%.1f%% of the step) "
               "untimed_calls=%ld gflops=%.1f of_peak=%.3f peak=%.1f\n",
               threads, 1e3 * step_s, 1e3 * timed / steps, 100.0 * timed / steps / step_s,
               g_untimed / steps, gf, gf / peak, peak);
    }
    ab_model_free(m);
    if (replay && g_seq_overflow) {
        fprintf(stderr, "gpt2_gemms: the step made more than %d products: no replay\n", MAX_SEQ);
        return 1;
    }
    if (replay) replay_run(step_ms, timed_ms);
    return 0;
}
