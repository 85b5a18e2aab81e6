/* bench/bench_step.c - one full training step of the model (zero_grad, forward, backward, AdamW),
 * ours (the best ISA path) against the same model forced onto the scalar path with ab_set_isa, in
 * the same run, at 1 and 2 threads. See bench/bench.h for the options and the protocol.
 *
 * Cases (unit tokens/s = B * T / seconds per step; higher is better), ref=scalar:
 *   step_tiny_t<n>   the lab's model: vocab 512, n_ctx 64, 4 layers, d_model 128, 4 heads,
 *                    B = 16, T = 64 (1024 tokens per step), all weights trained.
 *   step_gpt2_t<n>   GPT-2-small-shaped, random weights: vocab 50304, n_ctx 1024, 12 layers,
 *                    d_model 768, 12 heads (124M parameters), B = 4, T = 64, all weights trained.
 * The tiny cases use bench_compare (interleaved, median). A scalar GPT-2 step takes about a minute,
 * so the GPT-2 cases use a lighter protocol with the same spirit: one warm-up step on our path
 * (page faults of ~2.5 GB of buffers), then min(--iters, 2) rounds (1 with --quick) alternating
 * which path goes first, median reported. Running everything takes about 5 minutes; use
 * --case step_tiny for a quick look.
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
#include <sys/resource.h>

typedef struct step_ctx {
    ab_model *model;
    ab_batch batch;
    ab_isa isa;
    ab_adamw_cfg opt;
    double prof[AB_PROF_COUNT]; /* accumulated over this path's steps */
    double seconds;             /* total time of this path's steps */
    long steps;
} step_ctx;

static void check(ab_status st, const char *what) {
    if (st != AB_OK) {
        fprintf(stderr, "bench_step: %s: %s\n", what, ab_last_error());
        exit(1);
    }
}

/* One training step on ctx's path; its profile is added to ctx's. */
static void run_step(void *p) {
    step_ctx *c = (step_ctx *)p;
    check(ab_set_isa(c->isa), "ab_set_isa");
    check(ab_model_profile_reset(c->model), "profile_reset");
    double t0 = bench_now();
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
    if (c->steps == 0) return;
    double step = c->seconds / (double)c->steps, profiled = 0.0;
    char line[512];
    int len = snprintf(line, sizeof line, "SPLIT case=%s path=%s step_s=%.4g", case_name,
                       ab_isa_name(c->isa), step);
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

/* The GPT-2 protocol (see the top): warm-up on ours, then `rounds` alternating rounds. */
static void compare_slow(const char *case_name, double tokens, int threads, step_ctx *ours,
                         step_ctx *ref, int rounds) {
    double so[8], sr[8], gap = threads > 1 ? bench_cfg.gap_s : 0.0;
    run_step(ours);
    reset_stats(ours);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            step_ctx *c = (k == 0) == (r % 2 == 0) ? ours : ref;
            double before = c->seconds;
            run_step(c);
            (c == ours ? so : sr)[r] = tokens / (c->seconds - before);
            bench_sleep(gap);
        }
    }
    bench_line(case_name, "tokens/s", bench_median(so, rounds), "scalar", bench_median(sr, rounds));
}

typedef struct step_config {
    const char *name;
    ab_model_config cfg;
    int B, T, slow;
} step_config;

int main(int argc, char **argv) {
    bench_init(argc, argv);
    check(ab_init(), "ab_init");
    ab_isa best = ab_best_isa();
    step_config configs[2];
    configs[0].name = "tiny";
    configs[0].cfg.n_vocab = 512, configs[0].cfg.n_ctx = 64, configs[0].cfg.n_layer = 4;
    configs[0].cfg.n_head = 4, configs[0].cfg.d_model = 128;
    configs[0].cfg.lora_rank = 0, configs[0].cfg.lora_alpha = 0.0f;
    configs[0].B = 16, configs[0].T = 64, configs[0].slow = 0;
    configs[1].name = "gpt2";
    configs[1].cfg.n_vocab = 50304, configs[1].cfg.n_ctx = 1024, configs[1].cfg.n_layer = 12;
    configs[1].cfg.n_head = 12, configs[1].cfg.d_model = 768;
    configs[1].cfg.lora_rank = 0, configs[1].cfg.lora_alpha = 0.0f;
    configs[1].B = 4, configs[1].T = 64, configs[1].slow = 1;
    printf("# bench_step: ours = %s, ref = scalar (same model, ab_set_isa), threads 1 and 2\n",
           ab_isa_name(best));
    for (int c = 0; c < 2; c++) {
        const step_config *sc = &configs[c];
        char names[2][64];
        int wanted = 0;
        for (int t = 1; t <= 2; t++) {
            snprintf(names[t - 1], sizeof names[0], "step_%s_t%d", sc->name, t);
            wanted |= bench_want(names[t - 1], t);
        }
        if (!wanted) continue;
        ab_model *m = NULL;
        check(ab_model_create(&m, &sc->cfg, 1), "ab_model_create");
        size_t N = (size_t)sc->B * sc->T;
        int *in = (int *)malloc(N * sizeof(int)), *tg = (int *)malloc(N * sizeof(int));
        float *mask = (float *)malloc(N * sizeof(float));
        if (!in || !tg || !mask) check(AB_ERR_ALLOC, "batch");
        ab_rng rng;
        ab_rng_seed(&rng, 2, 0);
        for (size_t i = 0; i < N; i++) {
            in[i] = (int)ab_rng_below(&rng, (uint32_t)sc->cfg.n_vocab);
            tg[i] = (int)ab_rng_below(&rng, (uint32_t)sc->cfg.n_vocab);
            mask[i] = 1.0f;
        }
        step_ctx ours, ref;
        memset(&ours, 0, sizeof ours);
        ours.model = m;
        ours.batch.B = sc->B, ours.batch.T = sc->T;
        ours.batch.inputs = in, ours.batch.targets = tg, ours.batch.mask = mask;
        ours.batch.weights = NULL, ours.batch.lengths = NULL;
        ours.isa = best;
        ours.opt = ab_adamw_default();
        ours.opt.lr = 1e-5f; /* many steps on random tokens: keep the weights where they are */
        ref = ours;
        ref.isa = AB_ISA_SCALAR;
        check(ab_model_set_clock(m, bench_now), "set_clock");
        for (int t = 1; t <= 2; t++) {
            if (!bench_want(names[t - 1], t)) continue;
            check(ab_set_threads(t), "ab_set_threads");
            reset_stats(&ours);
            reset_stats(&ref);
            if (sc->slow) {
                int rounds = bench_cfg.quick ? 1 : bench_cfg.iters < 2 ? bench_cfg.iters : 2;
                compare_slow(names[t - 1], (double)N, t, &ours, &ref, rounds);
            } else {
                bench_entry e[2];
                e[0].ref = "ours", e[0].fn = run_step, e[0].ctx = &ours, e[0].value = 0.0;
                e[1].ref = "scalar", e[1].fn = run_step, e[1].ctx = &ref, e[1].value = 0.0;
                bench_compare(names[t - 1], "tokens/s", (double)N, t, e, 2);
            }
            print_split(names[t - 1], &ours);
            print_split(names[t - 1], &ref);
        }
        print_memory(sc->name, m);
        ab_model_free(m);
        free(in);
        free(tg);
        free(mask);
    }
    return 0;
}
