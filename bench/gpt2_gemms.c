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
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include "peak.h"
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
static gemm_row g_rows[MAX_ROWS];
static int g_n_rows;
static long g_untimed; /* calls on other threads (inside the model's parallel regions) */
static pthread_t g_main;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void record(const gemm_key *key, double seconds) {
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

int main(int argc, char **argv) {
    int steps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atoi(argv[++i]);
        } else {
            int help = !strcmp(argv[i], "--help");
            fprintf(help ? stdout : stderr,
                    "usage: %s [--steps N]\n"
                    "  times every product of the GPT-2-shaped training step on 1 and 2\n"
                    "  threads (N steps after a warm-up step, default 3; see the top of\n"
                    "  bench/gpt2_gemms.c)\n",
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
    for (int threads = 1; threads <= 2; threads++) {
        check(ab_set_threads(threads), "ab_set_threads");
        double peak = peaks[threads - 1];
        step(m, &batch, &opt); /* warm-up, not counted */
        g_n_rows = 0, g_untimed = 0;
        double t0 = bench_now();
        for (int s = 0; s < steps; s++) step(m, &batch, &opt);
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
        printf("GEMMTOTAL threads=%d step_ms=%.1f timed_ms=%.1f (%.1f%% of the step) "
               "untimed_calls=%ld gflops=%.1f of_peak=%.3f peak=%.1f\n",
               threads, 1e3 * step_s, 1e3 * timed / steps, 100.0 * timed / steps / step_s,
               g_untimed / steps, gf, gf / peak, peak);
    }
    ab_model_free(m);
    return 0;
}
