/* bench/bench.h - the benchmark harness shared by every bench/bench_*.c (see DESIGN.md,
 * "Performance method"). Header-only; include it FIRST in the bench (it defines _GNU_SOURCE for
 * clock_gettime, setenv, mkstemp and dladdr).
 *
 * WHAT IT GIVES A BENCH
 *   bench_init(argc, argv)        parse the common options (below) into bench_cfg; --help prints them
 *   bench_want(name, threads)     1 if the case passes --case and --threads
 *   bench_now()                   monotonic seconds (CLOCK_MONOTONIC)
 *   bench_compare(case, unit, work, threads, entries, n)
 *                                 measure entries[0] ("ours") and every peer entries[1..n-1]
 *                                 INTERLEAVED in one loop, take the MEDIAN throughput of each, and
 *                                 print one line per peer, exactly DESIGN.md's format:
 *     BENCH case=<name> unit=<unit> ours=<x> ref=<peer> peer=<y> ratio=<x/y>
 *                                 Throughputs = work / seconds per call (so pass work in the unit's
 *                                 numerator: GFLOP for GFLOP/s, GB for GB/s), higher is better.
 *                                 A peer with fn == NULL is a constant throughput (e.g. a measured
 *                                 peak or bandwidth) given in .value.
 *   bench_skip(case, ref, reason) print "SKIP case=<name> ref=<peer> reason=<why>" (not a failure)
 *   bench_competitor_start/stop() a forked busy-loop process for the contended_* cases
 *   bench_blas_load_*()           peers loaded at run time with dlopen (no link-time dependency,
 *                                 so `make all` needs only a C compiler): OpenBLAS with its own
 *                                 kernel choice, OpenBLAS forced to SkylakeX, GSL's CBLAS.
 *
 * COMMON OPTIONS
 *   --case S     run only cases whose name contains S
 *   --iters N    interleaved rounds per case (default 7; the median is reported)
 *   --threads N  run only the cases that use N threads
 *   --quick      3 rounds and short samples: a smoke run, noisier numbers
 *
 * MEASUREMENT PROTOCOL (why: absolute times on a shared 2-core machine drift, ratios of
 * interleaved medians do not drift much)
 *   1. warm-up: one call of every entry (page faults, lazy init, thread pools);
 *   2. calibration: the calls are doubled until they last half a sample, then scaled so one
 *      sample of back-to-back calls lasts >= bench_cfg.sample_s (20 ms; 4 ms with --quick);
 *   3. bench_cfg.iters rounds; each round times one sample of every entry, the starting entry
 *      rotating from round to round so no entry always runs right after another;
 *   4. a round during which other processes (or the hypervisor: steal time) used more than 5% of
 *      a CPU (plus 2 clock ticks per CPU of accounting slack), judged from /proc/stat, is redone,
 *      up to `iters` extra rounds; a NOTE line reports disturbed rounds. (Two threads on a 2-core
 *      machine with a third busy process spend most of each call waiting at the OpenMP join for
 *      a time slice, 100x slower: not a measurement of the code.)
 *   5. multi-threaded cases sleep bench_cfg.gap_s after every sample: an OpenMP runtime spins its
 *      idle workers for a few ms after a parallel region, and that must not eat into the next
 *      entry's sample. OpenBLAS's idle workers spin for 2^28 cycles (~80 ms) by default, so the
 *      loaders set OPENBLAS_THREAD_TIMEOUT=20 (2^20 cycles, ~0.3 ms; kept if already set): still
 *      warm between back-to-back calls, asleep before the next entry starts.
 *   The median of each entry's kept samples is reported; ratio = ours / peer.
 *
 * AB_BENCH_VERBOSE=1 also prints every sample of every entry (lines starting with '#').
 * Every BENCH and SKIP line is also appended to the file named by $AB_BENCH_LOG, if set, so a
 * script can collect all benches' lines into bench/results.md.
 */
#ifndef AB_BENCH_H
#define AB_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#ifndef RTLD_DEFAULT /* a GNU extension: missing if a system header came before _GNU_SOURCE */
#error "bench/bench.h must be included before any other header (it needs _GNU_SOURCE)"
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------------------------- */
typedef struct bench_options {
    const char *case_filter; /* --case: substring of the case name, NULL = all */
    int iters;               /* --iters: interleaved rounds per case */
    int threads;             /* --threads: only cases with this thread count, 0 = all */
    int quick;               /* --quick */
    double sample_s;         /* minimum duration of one timed sample */
    double gap_s;            /* sleep after each sample of a multi-threaded case */
    int competitors;         /* busy processes the bench started itself (contended_* cases) */
} bench_options;

static bench_options __attribute__((unused)) bench_cfg = {NULL, 7, 0, 0, 0.02, 0.008, 0};

static inline void bench_usage(const char *prog) {
    printf("usage: %s [--case SUBSTRING] [--iters N] [--threads N] [--quick]\n"
           "  --case S     run only the cases whose name contains S\n"
           "  --iters N    interleaved rounds per case, median reported (default 7)\n"
           "  --threads N  run only the cases that use N threads\n"
           "  --quick      3 rounds, short samples (smoke run)\n"
           "Output: BENCH case=<name> unit=<unit> ours=<x> ref=<peer> peer=<y> ratio=<x/y>\n",
           prog);
}

/* Parses the common options; exits with status 2 on a bad one (benches are programs, not the
 * library, so exiting here is fine). */
static inline void bench_init(int argc, char **argv) {
    int iters_set = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(a, "--case") == 0 && has_value) {
            bench_cfg.case_filter = argv[++i];
        } else if (strcmp(a, "--iters") == 0 && has_value) {
            bench_cfg.iters = atoi(argv[++i]);
            iters_set = 1;
            if (bench_cfg.iters < 1) {
                fprintf(stderr, "%s: --iters must be >= 1\n", argv[0]);
                exit(2);
            }
        } else if (strcmp(a, "--threads") == 0 && has_value) {
            bench_cfg.threads = atoi(argv[++i]);
            if (bench_cfg.threads < 1) {
                fprintf(stderr, "%s: --threads must be >= 1\n", argv[0]);
                exit(2);
            }
        } else if (strcmp(a, "--quick") == 0) {
            bench_cfg.quick = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bench_usage(argv[0]);
            exit(0);
        } else {
            fprintf(stderr, "%s: unknown or incomplete option '%s'\n", argv[0], a);
            bench_usage(argv[0]);
            exit(2);
        }
    }
    if (bench_cfg.quick) {
        if (!iters_set) bench_cfg.iters = 3;
        bench_cfg.sample_s = 0.004;
    }
}

static inline int bench_want(const char *name, int threads) {
    if (bench_cfg.case_filter && !strstr(name, bench_cfg.case_filter)) return 0;
    if (bench_cfg.threads > 0 && threads != bench_cfg.threads) return 0;
    return 1;
}

/* ---- time ---------------------------------------------------------------------------------- */
static inline double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline void bench_sleep(double seconds) {
    if (seconds <= 0) return;
    struct timespec t;
    t.tv_sec = (time_t)seconds;
    t.tv_nsec = (long)((seconds - (double)t.tv_sec) * 1e9);
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of x[0..n) (sorts x in place). */
static inline double bench_median(double *x, int n) {
    qsort(x, (size_t)n, sizeof(double), bench_cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* ---- output -------------------------------------------------------------------------------- */
static inline void bench_emit(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fputs(line, stdout);
    fflush(stdout);
    const char *log = getenv("AB_BENCH_LOG");
    if (log && *log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fputs(line, f);
            fclose(f);
        }
    }
}

/* Throughput with enough digits whatever its magnitude (GFLOP/s ~ 100, Gelem/s ~ 1). */
static inline void bench_fmt(char *out, size_t size, double v) {
    if (v >= 100.0)
        snprintf(out, size, "%.1f", v);
    else if (v >= 1.0)
        snprintf(out, size, "%.3f", v);
    else
        snprintf(out, size, "%.4g", v);
}

static inline void bench_line(const char *case_name, const char *unit, double ours, const char *ref,
                       double peer) {
    char o[32], p[32];
    bench_fmt(o, sizeof o, ours);
    bench_fmt(p, sizeof p, peer);
    bench_emit("BENCH case=%s unit=%s ours=%s ref=%s peer=%s ratio=%.3f\n", case_name, unit, o, ref,
               p, peer > 0 ? ours / peer : 0.0);
}

static inline void bench_skip(const char *case_name, const char *ref, const char *reason) {
    bench_emit("SKIP case=%s ref=%s reason=%s\n", case_name, ref, reason);
}

/* ---- interleaved measurement --------------------------------------------------------------- */
typedef void (*bench_fn)(void *ctx);

typedef struct bench_entry {
    const char *ref; /* peer name in the output (ignored for entries[0], which is ours) */
    bench_fn fn;     /* one call of the operation; NULL: a constant throughput in .value */
    void *ctx;
    double value;    /* fn == NULL: the peer's throughput; after bench_compare: the median */
    double best;     /* after bench_compare: the highest sample (for ceilings such as a peak) */
    double work;     /* > 0: this entry's own work per call (a peer doing other work, such as an
                        FMA-peak loop); 0: the case's work */
} bench_entry;
/* Initialise entries with designated initialisers, {.ref = "ours", .fn = f, .ctx = &c}: every
 * field left out is 0. bench_compare refuses (exit 1) an entry whose work, constant value or
 * measured median is not finite and positive. */

#define BENCH_MAX_ENTRIES 16

#define BENCH_MAX_OTHER 0.05 /* CPUs' worth of other processes tolerated during a round */

/* CPU seconds spent so far, machine-wide, by everything except this process: busy time from
 * /proc/stat (user, nice, system, irq, softirq and steal, i.e. the hypervisor running someone
 * else) minus this process's own CPU time. -1 if /proc/stat is unreadable. Resolution: one
 * clock tick (10 ms), so it judges whole rounds, not single samples. */
static inline double bench_other_cpu(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1.0;
    unsigned long long v[8] = {0};
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got < 8) return -1.0;
    double busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return busy - ((double)t.tv_sec + 1e-9 * (double)t.tv_nsec);
}

/* Seconds for `calls` back-to-back calls of e. */
static inline double bench_time_calls(const bench_entry *e, long calls) {
    double t0 = bench_now();
    for (long c = 0; c < calls; c++) e->fn(e->ctx);
    return bench_now() - t0;
}

/* Measures entries[0..n) interleaved (see the protocol at the top), stores each median throughput
 * (work / seconds per call) in entries[i].value, the best sample in .best, and prints one BENCH
 * line per peer. threads > 1
 * turns on the cool-down gap between samples. Returns ours' median. */
/* A work or throughput that is not finite and positive is a bug in the bench (an entry not
 * initialised, a broken kernel): refuse it rather than print a number. */
static inline void bench_require_positive(const char *case_name, const char *ref, const char *what,
                                          double x) {
    if (x > 0 && x <= 1.7976931348623157e308) return; /* false for NaN, 0, negatives, inf */
    fprintf(stderr, "bench: case %s, entry %s: %s = %g is not finite and positive\n", case_name, ref,
            what, x);
    exit(1);
}

static inline double bench_compare(const char *case_name, const char *unit, double work, int threads,
                            bench_entry *entries, int n) {
    long calls[BENCH_MAX_ENTRIES];
    double *samples[BENCH_MAX_ENTRIES];
    int iters = bench_cfg.iters;
    double gap = threads > 1 ? bench_cfg.gap_s : 0.0;
    if (n > BENCH_MAX_ENTRIES) n = BENCH_MAX_ENTRIES;
    for (int e = 0; e < n; e++) { /* every entry's work (its own or the case's), or its constant */
        const char *ref = e ? entries[e].ref : "ours";
        if (!entries[e].fn)
            bench_require_positive(case_name, ref, "value", entries[e].value);
        else if (entries[e].work != 0)
            bench_require_positive(case_name, ref, "work", entries[e].work);
        else
            bench_require_positive(case_name, ref, "work", work);
    }
    for (int e = 0; e < n; e++) {
        samples[e] = (double *)calloc((size_t)iters, sizeof(double));
        calls[e] = 1;
        if (!entries[e].fn) continue;
        bench_time_calls(&entries[e], 1); /* warm-up: page faults, lazy init, thread pools */
        /* calibrate: double the calls until a sample lasts >= half the target, then scale */
        for (;;) {
            double dt = bench_time_calls(&entries[e], calls[e]);
            if (dt >= bench_cfg.sample_s / 2 || calls[e] >= (1L << 30)) {
                double want = bench_cfg.sample_s / (dt > 0 ? dt : 1e-9) * (double)calls[e];
                calls[e] = want > (double)calls[e] ? (long)want + 1 : calls[e];
                break;
            }
            calls[e] *= 2;
        }
        bench_sleep(gap);
    }
    /* Rounds during which other processes (or the hypervisor) took more than BENCH_MAX_OTHER of
     * one CPU are redone, up to `iters` extra rounds; if the machine never calms down the last
     * samples are kept and a NOTE says so. */
    int kept = 0, tried = 0, disturbed = 0;
    while (kept < iters && tried < 2 * iters) {
        int r = tried++;
        double other0 = bench_other_cpu(), t0 = bench_now();
        for (int s = 0; s < n; s++) {
            int e = (r + s) % n;
            if (!entries[e].fn) continue;
            double dt = bench_time_calls(&entries[e], calls[e]);
            double w = entries[e].work > 0 ? entries[e].work : work;
            samples[e][kept] = dt > 0 ? w * (double)calls[e] / dt : 0.0;
            bench_sleep(gap);
        }
        double other = bench_other_cpu() - other0, wall = bench_now() - t0;
        /* /proc/stat counts whole clock ticks per CPU, our own time is exact: allow 2 ticks per
         * CPU of accounting skew on top of the tolerated share */
        double skew = 2.0 * (double)sysconf(_SC_NPROCESSORS_ONLN) / (double)sysconf(_SC_CLK_TCK);
        double allowed = (BENCH_MAX_OTHER + bench_cfg.competitors) * wall + skew; /* ours: expected */
        int quiet = other0 < 0 || other <= allowed;
        if (!quiet) disturbed++;
        if (quiet || 2 * iters - tried < iters - kept) kept++; /* out of retries: keep it */
    }
    iters = kept;
    if (disturbed)
        bench_emit("NOTE case=%s disturbed_rounds=%d of %d (other processes used > %.0f%% of a CPU; "
                   "redone while retries lasted)\n", case_name, disturbed, tried, 100 * BENCH_MAX_OTHER);
    if (getenv("AB_BENCH_VERBOSE")) /* every sample, for judging the noise */
        for (int e = 0; e < n; e++) {
            if (!entries[e].fn) continue;
            printf("# %s %s calls=%ld samples:", case_name, e ? entries[e].ref : "ours", calls[e]);
            for (int r = 0; r < iters; r++) printf(" %.4g", samples[e][r]);
            printf("\n");
        }
    for (int e = 0; e < n; e++) {
        if (entries[e].fn) entries[e].value = bench_median(samples[e], iters); /* sorts */
        entries[e].best = entries[e].fn ? samples[e][iters - 1] : entries[e].value;
        free(samples[e]);
        bench_require_positive(case_name, e ? entries[e].ref : "ours", "median", entries[e].value);
    }
    for (int e = 1; e < n; e++) bench_line(case_name, unit, entries[0].value, entries[e].ref, entries[e].value);
    return entries[0].value;
}

/* ---- a competing process (the contended_* cases) ---------------------------------------------- */
/* A forked child that spins on one CPU until bench_competitor_stop (or until the bench dies: it
 * asks the kernel for SIGKILL when its parent exits). While it runs, the disturbance check
 * expects one more CPU's worth of other work. The contended cases compare 2 threads with 1, both
 * under the competitor: a parallel region must never make a run slower than one thread when
 * another process holds a core (DESIGN.md, Performance method). */
static pid_t bench_competitor_pid;

static inline void bench_competitor_start(void) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(0);
        volatile unsigned long spin = 0;
        for (;;) spin++;
    }
    if (pid < 0) {
        fprintf(stderr, "bench: fork of the competitor failed\n");
        exit(1);
    }
    bench_competitor_pid = pid;
    bench_cfg.competitors++;
    bench_sleep(0.05); /* let it start spinning */
}

static inline void bench_competitor_stop(void) {
    if (bench_competitor_pid <= 0) return;
    kill(bench_competitor_pid, SIGKILL);
    waitpid(bench_competitor_pid, NULL, 0);
    bench_competitor_pid = 0;
    bench_cfg.competitors--;
}

/* ---- BLAS peers loaded at run time ------------------------------------------------------------ */
enum { BENCH_CBLAS_ROW_MAJOR = 101, BENCH_CBLAS_NO_TRANS = 111, BENCH_CBLAS_TRANS = 112 };
typedef void (*bench_cblas_sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k,
                                     float alpha, const float *A, int lda, const float *B, int ldb,
                                     float beta, float *C, int ldc);

typedef struct bench_blas {
    const char *name;           /* "openblas", "openblas_skx", "gslcblas": the ref= name */
    void *handle;               /* NULL: not available, see why */
    bench_cblas_sgemm_fn sgemm; /* cblas_sgemm */
    void (*set_threads)(int);   /* openblas_set_num_threads; NULL for single-threaded GSL */
    char core[64];              /* openblas_get_corename(), "" for GSL */
    char why[256];              /* reason it is unavailable */
} bench_blas;

/* dlsym into a function pointer without the object/function pointer cast warning. */
static inline void *bench_sym(void *handle, const char *name) { return handle ? dlsym(handle, name) : NULL; }

static inline void bench_blas_init(bench_blas *b, const char *name) {
    memset(b, 0, sizeof *b);
    b->name = name;
}

static inline int bench_blas_finish(bench_blas *b, const char *lib) {
    void *s = bench_sym(b->handle, "cblas_sgemm");
    if (!s) {
        snprintf(b->why, sizeof b->why, "no cblas_sgemm in %s", lib);
        if (b->handle) dlclose(b->handle);
        b->handle = NULL;
        return 0;
    }
    memcpy(&b->sgemm, &s, sizeof s);
    void *st = bench_sym(b->handle, "openblas_set_num_threads");
    if (st) memcpy(&b->set_threads, &st, sizeof st);
    void *cn = bench_sym(b->handle, "openblas_get_corename");
    if (cn) {
        char *(*corename)(void);
        memcpy(&corename, &cn, sizeof cn);
        snprintf(b->core, sizeof b->core, "%s", corename());
    }
    return 1;
}

/* Loads with OPENBLAS_CORETYPE = coretype for the duration of dlopen, which is when OpenBLAS reads
 * it, then restores the caller's value. coretype NULL leaves the environment as it is: the
 * caller's OPENBLAS_CORETYPE, if any, is part of "OpenBLAS's default choice" on this machine. */
static inline void *bench_dlopen_coretype(const char *path, const char *coretype) {
    const char *old = getenv("OPENBLAS_CORETYPE");
    char *saved = old ? strdup(old) : NULL;
    if (coretype) setenv("OPENBLAS_CORETYPE", coretype, 1);
    setenv("OPENBLAS_THREAD_TIMEOUT", "20", 0); /* see the protocol notes at the top */
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (coretype) {
        if (saved)
            setenv("OPENBLAS_CORETYPE", saved, 1);
        else
            unsetenv("OPENBLAS_CORETYPE");
    }
    free(saved);
    return h;
}

/* OpenBLAS with its default kernel choice for this CPU. */
static inline int bench_blas_load_openblas(bench_blas *b) {
    bench_blas_init(b, "openblas");
    b->handle = bench_dlopen_coretype("libopenblas.so.0", NULL);
    if (!b->handle) {
        snprintf(b->why, sizeof b->why, "dlopen libopenblas.so.0 failed: %s", dlerror());
        return 0;
    }
    return bench_blas_finish(b, "libopenblas.so.0");
}

/* Copies file src to a fresh temporary path (written into out); 1 on success. */
static inline int bench_copy_to_temp(const char *src, char *out, size_t size) {
    snprintf(out, size, "/tmp/ab_bench_blas_XXXXXX");
    int fd = mkstemp(out);
    if (fd < 0) return 0;
    FILE *in = fopen(src, "rb");
    int ok = in != NULL;
    char buf[1 << 16];
    size_t got;
    while (ok && (got = fread(buf, 1, sizeof buf, in)) > 0)
        if (write(fd, buf, got) != (ssize_t)got) ok = 0;
    if (in) fclose(in);
    if (close(fd) != 0) ok = 0;
    if (!ok) unlink(out);
    return ok;
}

/* A second, independent OpenBLAS instance with OPENBLAS_CORETYPE=SkylakeX. The dynamic loader
 * maps one file once, so the library is copied to a temporary path and loaded from there; the
 * copy is unlinked right after dlopen (the mapping stays valid). `reference` is an already loaded
 * OpenBLAS whose file is copied; the core name is checked to be SkylakeX. */
static inline int bench_blas_load_openblas_skx(bench_blas *b, const bench_blas *reference) {
    bench_blas_init(b, "openblas_skx");
    if (!reference || !reference->handle) {
        snprintf(b->why, sizeof b->why, "libopenblas.so.0 not available");
        return 0;
    }
    Dl_info info;
    void *s = bench_sym(reference->handle, "cblas_sgemm");
    if (!s || !dladdr(s, &info) || !info.dli_fname) {
        snprintf(b->why, sizeof b->why, "cannot locate the OpenBLAS file (dladdr)");
        return 0;
    }
    char tmp[64];
    if (!bench_copy_to_temp(info.dli_fname, tmp, sizeof tmp)) {
        snprintf(b->why, sizeof b->why, "cannot copy %s to /tmp", info.dli_fname);
        return 0;
    }
    b->handle = bench_dlopen_coretype(tmp, "SkylakeX");
    const char *err = b->handle ? NULL : dlerror();
    unlink(tmp);
    if (!b->handle) {
        snprintf(b->why, sizeof b->why, "dlopen of the copy failed: %s", err ? err : "?");
        return 0;
    }
    if (!bench_blas_finish(b, tmp)) return 0;
    if (strcmp(b->core, "SkylakeX") != 0) {
        snprintf(b->why, sizeof b->why, "OPENBLAS_CORETYPE=SkylakeX gave core '%s'", b->core);
        dlclose(b->handle);
        b->handle = NULL;
        return 0;
    }
    return 1;
}

/* GSL's reference CBLAS (plain C loops, single-threaded). */
static inline int bench_blas_load_gslcblas(bench_blas *b) {
    bench_blas_init(b, "gslcblas");
    b->handle = dlopen("libgslcblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!b->handle) {
        snprintf(b->why, sizeof b->why, "dlopen libgslcblas.so.0 failed: %s", dlerror());
        return 0;
    }
    return bench_blas_finish(b, "libgslcblas.so.0");
}

static inline void bench_blas_set_threads(const bench_blas *b, int threads) {
    if (b->handle && b->set_threads) b->set_threads(threads);
}

static inline void bench_blas_close(bench_blas *b) {
    if (b->handle) dlclose(b->handle);
    b->handle = NULL;
}

#endif /* AB_BENCH_H */
