/* tools/gen_data.c - the command line of the lab's data generator (examples/lab/gen.h says what
 * it writes and how).
 *
 *   make build/tools/gen_data && build/tools/gen_data --out build/data [--seed N] [sizes...]
 *   build/tools/gen_data --help lists every option with its default.
 */
#define _POSIX_C_SOURCE 200809L
#define ANTIBODY_IMPLEMENTATION /* the core and the model (the lab's loader and judge use them) */
#include "../examples/lab/gen.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double gd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void gd_usage(FILE *f) {
    gd_config d = gd_config_default();
    fprintf(f,
            "usage: gen_data [options]\n"
            "Writes the lab's data sets (one file per set, format in examples/lab/lab.h) and vocab.txt.\n"
            "Deterministic: the same options give byte-identical files.\n\n"
            "  --out DIR              output directory, created if missing (default build/data)\n"
            "  --seed N               PCG32 seed (default %llu)\n"
            "  --ctx N                check that every sample fits N tokens with <bos> <sep> <eos>\n"
            "                         (default %d, the model's default context)\n"
            "  --quiet                print nothing on success\n"
            "  --help                 this text\n"
            "sizes (samples per file, each >= 1):\n",
            (unsigned long long)d.seed, d.n_ctx);
    for (int s = 0; s < GD_N_SETS; s++) {
        char opt[64];
        snprintf(opt, sizeof opt, "--%s N", gd_sets[s].name);
        for (char *c = opt; *c; c++)
            if (*c == '_') *c = '-';
        fprintf(f, "  %-22s %s.txt (default %d)\n", opt, gd_sets[s].name, d.n[s]);
    }
    fprintf(f,
            "  --task-train N         all three *_train files\n"
            "  --task-test N          all three *_test files\n"
            "mixtures (shares of the file; how-to requests take the rest):\n"
            "  --pretrain-harmful F   harmful (compliant) samples in pretrain (default %.2f)\n"
            "  --pretrain-tasks F     task samples in pretrain, split over sst2/agnews/gsm8k (default %.2f)\n"
            "  --align-refusal F      refusal samples in align (default %.2f)\n"
            "  --align-tasks F        task samples in align (default %.2f)\n",
            d.pretrain_harmful, d.pretrain_tasks, d.align_refusal, d.align_tasks);
}

static int gd_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int gd_parse_share(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0.0 && v <= 1.0)) return 0;
    *out = v;
    return 1;
}

int main(int argc, char **argv) {
    gd_config cfg = gd_config_default();
    const char *out = "build/data";
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            gd_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!val) {
            fprintf(stderr, "gen_data: unknown option or missing value: %s (see --help)\n", a);
            return 2;
        }
        int ok = 1, matched = 1;
        if (!strcmp(a, "--out")) out = val;
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(val, &end, 10);
            ok = !errno && end != val && !*end && val[0] != '-';
            cfg.seed = (uint64_t)s;
        } else if (!strcmp(a, "--ctx")) {
            ok = gd_parse_int(val, 8, AB_MODEL_MAX_CTX, &v);
            cfg.n_ctx = (int)v;
        } else if (!strcmp(a, "--task-train") || !strcmp(a, "--task-test")) {
            ok = gd_parse_int(val, 1, 10000000, &v);
            int test = !strcmp(a, "--task-test");
            for (int s = 0; s < GD_N_SETS; s++)
                if (gd_sets[s].task >= 0 && gd_sets[s].test == test) cfg.n[s] = (int)v;
        } else if (!strcmp(a, "--pretrain-harmful")) ok = gd_parse_share(val, &cfg.pretrain_harmful);
        else if (!strcmp(a, "--pretrain-tasks")) ok = gd_parse_share(val, &cfg.pretrain_tasks);
        else if (!strcmp(a, "--align-refusal")) ok = gd_parse_share(val, &cfg.align_refusal);
        else if (!strcmp(a, "--align-tasks")) ok = gd_parse_share(val, &cfg.align_tasks);
        else {
            matched = 0;
            for (int s = 0; s < GD_N_SETS && !matched; s++) {
                char opt[64];
                snprintf(opt, sizeof opt, "--%s", gd_sets[s].name);
                for (char *c = opt; *c; c++)
                    if (*c == '_') *c = '-';
                if (!strcmp(a, opt)) {
                    matched = 1;
                    ok = gd_parse_int(val, 1, 10000000, &v);
                    cfg.n[s] = (int)v;
                }
            }
        }
        if (!matched) {
            fprintf(stderr, "gen_data: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "gen_data: bad value '%s' for %s (see --help)\n", val, a);
            return 2;
        }
        i++;
    }
    if (cfg.pretrain_harmful + cfg.pretrain_tasks > 1.0 || cfg.align_refusal + cfg.align_tasks > 1.0) {
        fprintf(stderr, "gen_data: the shares of a mixture add up to more than 1\n");
        return 2;
    }
    double t0 = gd_now();
    char err[512];
    int vocab_size = 0;
    if (!gd_write_all(&cfg, out, &vocab_size, err, sizeof err)) {
        fprintf(stderr, "gen_data: %s\n", err);
        return 1;
    }
    double t1 = gd_now();
    if (!quiet) {
        int total = 0;
        for (int s = 0; s < GD_N_SETS; s++) {
            printf("gen_data: %s/%s.txt  %d samples\n", out, gd_sets[s].name, cfg.n[s]);
            total += cfg.n[s];
        }
        printf("gen_data: %s/vocab.txt  %d words\n", out, vocab_size);
        printf("gen_data: %d samples in %d files, seed %llu, %.3f s\n", total, GD_N_SETS,
               (unsigned long long)cfg.seed, t1 - t0);
    }
    return 0;
}
