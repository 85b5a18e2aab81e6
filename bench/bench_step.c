/* bench/bench_step.c - one full training step of the model (zero_grad, forward, backward, AdamW),
 * ours (the best ISA path) against the same model forced onto the scalar path with ab_set_isa, in
 * the same run, at 1 and 2 threads; and 2 threads against 1 under a competing process. See
 * bench/bench.h for the options and the protocol.
 *
 * Models and batches (all weights trained, random tokens, every target in the loss):
 *   tiny   the lab's model at full context: vocab 512, n_ctx 64, 4 layers, d_model 128, 4 heads,
 *          B = 16, T = 64 (1024 tokens per step).
 *   lab    the same model at the shapes the lab trains on: the lab's vocabulary (556 words), B = 16,
 *          T = 22 (lab_batch_pack trims a batch to its longest sample; SST-2 samples are 15-22
 *          tokens), 352 tokens per step.
 *   labmix the lab's user batches at p = 0.2: B = 16 samples of 15-22 tokens (SST-2) or, one in
 *          five, 31-39 (harmful), trimmed to the longest (T = 39), given with their lengths and
 *          mask 0 beyond them: a packed batch, so ours computes only the real tokens (361 of
 *          624); the v0.1.1 peer, which has no packing, computes all B x T. Its tokens/s count the
 *          real tokens for every entry, so the ratio is the ratio of step times.
 *   gpt2   GPT-2-small-shaped: vocab 50304, n_ctx 1024, 12 layers, d_model 768, 12 heads (124M
 *          parameters), B = 4, T = 64.
 * Cases (unit tokens/s = B * T / seconds per step; higher is better):
 *   step_<model>_t<n>        ours on n threads; ref=scalar (and ref=v<version>, another build's
 *                            step linked in by `make bench-v011`, bench/step_peer.c).
 *   step_gpt2_t<n>_of_limit  unit GFLOP/s: ours = the step's floating-point work (every GEMM,
 *                            counted from the shapes: 191.6 GFLOP) / its median time, ref =
 *                            fma_peak (n = 1) or fma_peak_t2 (n = 2) measured in this run, so ratio
 *                            = the fraction of the machine's limit.
 *   contended_step_<model>   ours on 2 threads, ref=t1 ours on 1 thread, both while a forked
 *                            busy-loop process competes for the CPUs: ratio = 2 threads / 1 thread.
 * The GPT-2 cases run only when --case names them (`make bench-gpt2`): a scalar GPT-2 step takes
 * about a minute, so they use a lighter protocol with the same spirit: one warm-up step per entry
 * (page faults of ~2.5 GB of buffers), then min(--iters, 2) rounds (1 with --quick; 3 for the
 * contended case) in which every entry runs one step, the first entry rotating, median reported.
 * The tiny and lab cases use bench_compare (interleaved, median).
 *
 * After each case two more kinds of line (not BENCH lines):
 *   SPLIT case=<name> path=<isa> step_s=<seconds per step> matmul=<s>(<%>) attention=... layernorm=...
 *         gelu=... softmax_ce=... adamw=... psnorm=... other=...   (model's own profiler, averaged
 *         over every measured step of that path; other = step time minus the profiled parts:
 *         embedding, residual adds, bias and LayerNorm-free gradient sums, memsets)
 *   MEMORY case=<config> params=<MiB> grads=... moments=... acts=... grad_acts=... other=...
 *         maxrss=<MiB>  (the model's buffers, ab_model_memory_usage, and getrusage's peak RSS)
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include "antibody_gpt.h"
#include "peak.h"
#include "gpt2_case.h"
#include <sys/resource.h>
#ifdef BENCH_STEP_PEER
#include "step_peer.h"
#endif

typedef struct step_ctx {
    ab_model *model;
    ab_batch batch;
    ab_isa isa;
    int threads;
    ab_adamw_cfg opt;
    void *peer;                 /* another build's step (step_peer.c), or NULL: ours */
    double prof[AB_PROF_COUNT]; /* accumulated over this entry's steps */
    double seconds;             /* total time of this entry's steps */
    long steps;
} step_ctx;

static void check(ab_status st, const char *what) {
    if (st != AB_OK) {
        fprintf(stderr, "bench_step: %s: %s\n", what, ab_last_error());
        exit(1);
    }
}

/* One training step of ctx's entry; its profile is added to ctx's. */
static void run_step(void *p) {
    step_ctx *c = (step_ctx *)p;
    double t0 = bench_now();
#ifdef BENCH_STEP_PEER
    if (c->peer) {
        if (step_peer_run(c->peer, c->threads)) exit(1);
        c->seconds += bench_now() - t0;
        c->steps++;
        return;
    }
#endif
    check(ab_set_isa(c->isa), "ab_set_isa");
    check(ab_set_threads(c->threads), "ab_set_threads");
    check(ab_model_profile_reset(c->model), "profile_reset");
    t0 = bench_now();
    check(ab_model_zero_grad(c->model), "zero_grad");
    check(ab_model_forward(c->model, &c->batch, NULL, NULL, NULL, NULL), "forward");
    check(ab_model_backward(c->model, NULL), "backward");
    check(ab_model_adamw_step(c->model, &c->opt), "adamw");
    c->seconds += bench_now() - t0;
    double sec[AB_PROF_COUNT];
    check(ab_model_profile(c->model, sec), "profile");
    for (int i = 0; i < AB_PROF_COUNT; i++) c->prof[i] += sec[i];
    c->steps++;
}

static void reset_stats(step_ctx *c) {
    memset(c->prof, 0, sizeof c->prof);
    c->seconds = 0.0;
    c->steps = 0;
}

static void print_split(const char *case_name, const step_ctx *c) {
    if (c->steps == 0 || c->peer) return;
    double step = c->seconds / (double)c->steps, profiled = 0.0;
    char line[512];
    int len = snprintf(line, sizeof line, "SPLIT case=%s path=%s threads=%d step_s=%.4g", case_name,
                       ab_isa_name(c->isa), c->threads, step);
    for (int i = 0; i < AB_PROF_COUNT; i++) {
        double s = c->prof[i] / (double)c->steps;
        profiled += s;
        len += snprintf(line + len, sizeof line - (size_t)len, " %s=%.4g(%.1f%%)",
                        ab_prof_name((ab_prof_kind)i), s, 100.0 * s / step);
    }
    double other = step - profiled;
    snprintf(line + len, sizeof line - (size_t)len, " other=%.4g(%.1f%%)\n", other, 100.0 * other / step);
    bench_emit("%s", line);
}

static void print_memory(const char *config, const ab_model *m) {
    ab_model_memory mem;
    check(ab_model_memory_usage(m, &mem), "memory_usage");
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double mib = 1.0 / (1024.0 * 1024.0);
    bench_emit("MEMORY case=step_%s params=%.1fMiB grads=%.1fMiB moments=%.1fMiB acts=%.1fMiB "
               "grad_acts=%.1fMiB other=%.1fMiB maxrss=%.1fMiB\n",
               config, mem.params * mib, mem.grads * mib, mem.moments * mib, mem.acts * mib,
               mem.grad_acts * mib, mem.other * mib, (double)ru.ru_maxrss / 1024.0);
}

/* The slow protocol (see the top): one warm-up step per entry, then `rounds` rounds of one step
 * per entry, the first entry rotating. Prints one BENCH line per peer; returns ours' median. */
static double compare_slow(const char *case_name, double tokens, step_ctx **e, int n, int rounds) {
    double samples[4][8], gap = bench_cfg.gap_s;
    for (int i = 0; i < n; i++) {
        run_step(e[i]);
        reset_stats(e[i]);
        bench_sleep(gap);
    }
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < n; k++) {
            step_ctx *c = e[(r + k) % n];
            double before = c->seconds;
            run_step(c);
            samples[(r + k) % n][r] = tokens / (c->seconds - before);
            bench_sleep(gap);
        }
    }
    double ours = bench_median(samples[0], rounds);
    bench_require_positive(case_name, "ours", "median", ours);
    for (int i = 1; i < n; i++) {
        double peer = bench_median(samples[i], rounds);
        bench_require_positive(case_name, "peer", "median", peer);
        const char *ref = e[i]->isa == AB_ISA_SCALAR ? "scalar" : "t1";
        bench_line(case_name, "tokens/s", ours, ref, peer);
    }
    return ours;
}

typedef struct step_config {
    const char *name;
    ab_model_config cfg;
    int B, T, slow;
    int mix; /* 1: a packed batch of the lab's lengths (labmix) */
} step_config;

/* The batch of a config: random tokens, every target of a real token in the loss. With mix, the
 * lab's user batches at p = 0.2: each sample harmful with probability 0.2 (31-39 tokens, else an
 * SST-2 sample of 15-22), the batch trimmed to its longest (T), mask 0 beyond each length, and the
 * lengths given, so the step computes only the real tokens (a packed batch, antibody_gpt.h);
 * *lens is then [B], else NULL. Returns the real tokens. */
static size_t make_batch(const step_config *sc, int *in, int *tg, float *mask, int *lens) {
    ab_rng rng;
    ab_rng_seed(&rng, 2, 0);
    size_t N = (size_t)sc->B * sc->T, real = 0;
    bench_random_tokens(&rng, in, tg, mask, N, sc->cfg.n_vocab);
    if (!sc->mix) return N;
    for (int b = 0; b < sc->B; b++) {
        int harmful = ab_rng_uniform(&rng) < 0.2f;
        lens[b] = harmful ? 31 + (int)ab_rng_below(&rng, 9) : 15 + (int)ab_rng_below(&rng, 8);
        if (b == 0) lens[b] = sc->T; /* the longest: the batch is trimmed to it */
        for (int t = lens[b]; t < sc->T; t++) mask[(size_t)b * sc->T + t] = 0.0f;
        real += (size_t)lens[b];
    }
    return real;
}

/* Floating-point work of one step: every GEMM, counted from the shapes (2 flops per multiply-add).
 * Linear layers and the tied LM head: forward, input gradient and weight gradient, 3 x 2 N P for
 * N tokens and P weights in products; attention: q k^T and att v forward (2 x 2 B T^2 d per layer),
 * four products backward. Everything else (LayerNorm, GELU, softmax, AdamW) is not counted. */
static double step_gflop(const step_config *sc) {
    double N = (double)sc->B * sc->T, d = sc->cfg.d_model, L = sc->cfg.n_layer, V = sc->cfg.n_vocab;
    double linear = 6.0 * N * (12.0 * d * d * L + V * d);
    double attention = 12.0 * sc->B * (double)sc->T * sc->T * d * L;
    return (linear + attention) * 1e-9;
}

/* The step's GFLOP/s against the FMA peak of `threads` threads, measured now (best sample). */
static void print_of_limit(const step_config *sc, int threads, double tokens_per_s) {
    char name[64];
    snprintf(name, sizeof name, "step_%s_t%d_of_limit", sc->name, threads);
    bench_entry peak[1] = {{.ref = "ours", .fn = threads > 1 ? run_peak_zmm_t2 : run_peak_zmm}};
    double flop = threads > 1 ? 2.0 * PEAK_FLOP_ZMM : PEAK_FLOP_ZMM;
    bench_compare(threads > 1 ? "fma_peak_t2" : "fma_peak", "GFLOP/s", flop, threads, peak, 1);
    double tokens = (double)sc->B * sc->T, gflops = step_gflop(sc) * tokens_per_s / tokens;
    bench_line(name, "GFLOP/s", gflops, threads > 1 ? "fma_peak_t2" : "fma_peak", peak[0].best);
    bench_emit("LIMIT case=%s gflop_per_step=%.1f step_s=%.4f limit_s=%.4f\n", name, step_gflop(sc),
               tokens / tokens_per_s, step_gflop(sc) / peak[0].best);
}

/* The model's cases; peer: another build's step for the same config, or NULL. */
static void run_config(const step_config *sc, ab_isa best, void *peer, const char *peer_name) {
    char names[3][64];
    int wanted = 0;
    for (int t = 1; t <= 2; t++) {
        snprintf(names[t - 1], sizeof names[0], "step_%s_t%d", sc->name, t);
        wanted |= bench_want(names[t - 1], t);
    }
    snprintf(names[2], sizeof names[2], "contended_step_%s", sc->name);
    wanted |= bench_want(names[2], 2);
    if (!wanted) return;
    ab_model *m = NULL;
    check(ab_set_isa(best), "ab_set_isa");
    check(ab_model_create(&m, &sc->cfg, 1), "ab_model_create");
    size_t N = (size_t)sc->B * sc->T;
    int *in = (int *)malloc(N * sizeof(int)), *tg = (int *)malloc(N * sizeof(int));
    int *lens = (int *)malloc((size_t)sc->B * sizeof(int));
    float *mask = (float *)malloc(N * sizeof(float));
    if (!in || !tg || !mask || !lens) check(AB_ERR_ALLOC, "batch");
    N = make_batch(sc, in, tg, mask, lens); /* the real tokens */
    step_ctx ours, ref, alt;
    memset(&ours, 0, sizeof ours);
    ours.model = m;
    ours.batch.B = sc->B, ours.batch.T = sc->T;
    ours.batch.inputs = in, ours.batch.targets = tg, ours.batch.mask = mask;
    ours.batch.weights = NULL, ours.batch.lengths = sc->mix ? lens : NULL;
    ours.isa = best;
    ours.opt = ab_adamw_default();
    ours.opt.lr = 1e-5f; /* many steps on random tokens: keep the weights where they are */
    ref = ours;
    ref.isa = AB_ISA_SCALAR;
    alt = ours;
    alt.peer = peer;
    check(ab_model_set_clock(m, bench_now), "set_clock");
    for (int t = 1; t <= 2; t++) {
        if (!bench_want(names[t - 1], t)) continue;
        ours.threads = ref.threads = alt.threads = t;
        reset_stats(&ours);
        reset_stats(&ref);
        if (sc->slow) {
            step_ctx *e[2] = {&ours, &ref};
            int rounds = bench_cfg.quick ? 1 : bench_cfg.iters < 2 ? bench_cfg.iters : 2;
            double tps = compare_slow(names[t - 1], (double)N, e, 2, rounds);
            print_of_limit(sc, t, tps);
        } else {
            bench_entry e[3] = {{.ref = "ours", .fn = run_step, .ctx = &ours},
                                {.ref = "scalar", .fn = run_step, .ctx = &ref},
                                {.ref = peer_name, .fn = run_step, .ctx = &alt}};
            bench_compare(names[t - 1], "tokens/s", (double)N, t, e, peer ? 3 : 2);
        }
        print_split(names[t - 1], &ours);
        print_split(names[t - 1], &ref);
    }
    if (bench_want(names[2], 2)) {
        step_ctx t1 = ours;
        ours.threads = 2, t1.threads = 1;
        reset_stats(&ours);
        reset_stats(&t1);
        bench_competitor_start();
        if (sc->slow) {
            step_ctx *e[2] = {&ours, &t1};
            compare_slow(names[2], (double)N, e, 2, bench_cfg.quick ? 1 : 3);
        } else {
            bench_entry e[2] = {{.ref = "ours", .fn = run_step, .ctx = &ours},
                                {.ref = "t1", .fn = run_step, .ctx = &t1}};
            bench_compare(names[2], "tokens/s", (double)N, 2, e, 2);
        }
        bench_competitor_stop();
        print_split(names[2], &ours);
        print_split(names[2], &t1);
    }
    print_memory(sc->name, m);
    ab_model_free(m);
    free(in);
    free(tg);
    free(lens);
    free(mask);
}

int main(int argc, char **argv) {
    bench_init(argc, argv);
    check(ab_init(), "ab_init");
    ab_isa best = ab_best_isa();
    step_config configs[4];
    memset(configs, 0, sizeof configs);
    configs[0].name = "tiny";
    configs[0].cfg.n_vocab = 512, configs[0].cfg.n_ctx = 64, configs[0].cfg.n_layer = 4;
    configs[0].cfg.n_head = 4, configs[0].cfg.d_model = 128;
    configs[0].B = 16, configs[0].T = 64;
    configs[1] = configs[0];
    configs[1].name = "lab";
    configs[1].cfg.n_vocab = 556, configs[1].T = 22;
    configs[2].name = "gpt2";
    gpt2_case_config(&configs[2].cfg); /* bench/gpt2_case.h: also gpt2_gemms' */
    configs[2].B = GPT2_CASE_B, configs[2].T = GPT2_CASE_T, configs[2].slow = 1;
    configs[3] = configs[1];
    configs[3].name = "labmix", configs[3].T = 39, configs[3].mix = 1;
    printf("# bench_step: ours = %s, ref = scalar (same model, ab_set_isa)", ab_isa_name(best));
#ifdef BENCH_STEP_PEER
    char peer_name[32];
    snprintf(peer_name, sizeof peer_name, "v%s", step_peer_version());
    printf(" and %s (bench/step_peer.c)", peer_name);
#else
    const char *peer_name = "none";
#endif
    printf(", threads 1 and 2; contended: 2 threads vs 1 under a busy process\n");
    for (int c = 0; c < 4; c++) {
        const step_config *sc = &configs[c];
        /* GPT-2 only when asked for by name: its scalar peer takes minutes */
        if (sc->slow && !(bench_cfg.case_filter && strstr(bench_cfg.case_filter, sc->name))) continue;
        void *peer = NULL;
#ifdef BENCH_STEP_PEER
        size_t N = (size_t)sc->B * sc->T;
        int *pin = (int *)malloc(N * sizeof(int)), *ptg = (int *)malloc(N * sizeof(int));
        int plens[64];
        float *pmask = (float *)malloc(N * sizeof(float));
        if (!pin || !ptg || !pmask || sc->B > 64) check(AB_ERR_ALLOC, "batch");
        if (!sc->slow) {
            make_batch(sc, pin, ptg, pmask, plens); /* the same batch as ours, without the lengths */
            step_peer_config pc = {sc->cfg.n_vocab, sc->cfg.n_ctx, sc->cfg.n_layer, sc->cfg.n_head,
                                   sc->cfg.d_model, sc->B, sc->T, pin, ptg, pmask, 1e-5f};
            peer = step_peer_create(&pc);
            if (!peer) return 1;
        }
#endif
        run_config(sc, best, peer, peer_name);
#ifdef BENCH_STEP_PEER
        step_peer_free(peer);
        free(pin);
        free(ptg);
        free(pmask);
#endif
    }
    return 0;
}
