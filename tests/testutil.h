/* tests/testutil.h - helpers shared by the cmocka test binaries. */
#ifndef AB_TESTUTIL_H
#define AB_TESTUTIL_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>
#include "antibody.h"
#include "antibody_gpt.h"
#include "antibody_defence.h"

/* AB_TEST_SMALL=1 (set by `make valgrind`) shrinks shapes so memcheck finishes quickly. */
static inline int tu_small(void) {
    const char *s = getenv("AB_TEST_SMALL");
    return s && *s && strcmp(s, "0") != 0;
}
/* Pick the full-size value normally, the small one under valgrind. */
#define TU_SIZE(full, small) (tu_small() ? (small) : (full))

static inline void tu_fill_uniform(float *x, size_t n, float lo, float hi, ab_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * ab_rng_uniform(rng);
}

static inline float *tu_alloc(size_t n) { /* calloc'd floats; the test fails if it returns NULL */
    float *p = (float *)calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

/* max over i of |got - want| / (|want| + abs_floor): a relative error that does not blow up where
 * the reference is near zero. */
static inline double tu_max_rel_err(const float *got, const double *want, size_t n, double abs_floor) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / (fabs(want[i]) + abs_floor);
        if (e != e) return e; /* NaN is the worst error: keep it */
        if (e > worst) worst = e;
    }
    return worst;
}
static inline double tu_max_rel_err_f(const float *got, const float *want, size_t n, double abs_floor) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]) / (fabs((double)want[i]) + abs_floor);
        if (e != e) return e;
        if (e > worst) worst = e;
    }
    return worst;
}

/* Assert err <= bound, and print the measured error so the figure is visible in the test log
 * (lines starting "REF" are kept by tests/run.sh). */
#define TU_ASSERT_ERR(what, err, bound)                                                            \
    do {                                                                                           \
        double tu_e_ = (err), tu_b_ = (bound);                                                    \
        if (getenv("AB_TEST_VERBOSE")) printf("REF %-48s err=%.3e bound=%.1e\n", (what), tu_e_, tu_b_); \
        if (!(tu_e_ <= tu_b_)) fail_msg("%s: error %.3e exceeds bound %.1e", (what), tu_e_, tu_b_); \
    } while (0)

/* *worst = max(*worst, e); a NaN, once seen, stays the worst. */
static inline void tu_worst(double *worst, double e) {
    if (*worst != *worst) return;
    if (!(e <= *worst)) *worst = e;
}

/* element-wise tu_max_rel_err with a per-element floor (the natural size of that element's
 * rounding errors); returns the worst ratio */
static inline double tu_max_err_floor(const float *got, const double *want, const double *floor, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) tu_worst(&worst, tu_max_rel_err(got + i, want + i, 1, floor[i]));
    return worst;
}

/* d f / d v_j by the 4th-order central difference (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h, with
 * h adjusted so that v_j +- h is exact in double. Truncation O(h^4), rounding ~1e-16 |f| / h. */
typedef double (*tu_fd_fn)(const double *v, const void *ctx);
static inline double tu_fd_partial(tu_fd_fn f, const void *ctx, double *v, int j, double h) {
    double v0 = v[j];
    volatile double vh = v0 + h;
    h = vh - v0;
    v[j] = v0 + h;
    double fp1 = f(v, ctx);
    v[j] = v0 - h;
    double fm1 = f(v, ctx);
    v[j] = v0 + 2.0 * h;
    double fp2 = f(v, ctx);
    v[j] = v0 - 2.0 * h;
    double fm2 = f(v, ctx);
    v[j] = v0;
    return (8.0 * (fp1 - fm1) - (fp2 - fm2)) / (12.0 * h);
}

/* Every ISA this CPU and build can run: tests loop over them and compare with the scalar oracle. */
static inline int tu_isas(ab_isa *out) {
    int n = 0;
    for (int i = 0; i < AB_ISA_COUNT; i++)
        if (ab_isa_compiled((ab_isa)i) && ab_cpu_supports((ab_isa)i)) out[n++] = (ab_isa)i;
    return n;
}
#define TU_SET_ISA(isa) assert_int_equal(ab_set_isa(isa), AB_OK)

/* POSIX helpers (child processes, temporary directories, file-size limits) for the tests of
 * dispatch, savers and loaders: define TU_POSIX_HELPERS (and _POSIX_C_SOURCE 200809L) before
 * including this header. */
#ifdef TU_POSIX_HELPERS
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Seconds on the monotonic clock. */
static inline double tu_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Waits for the child pid (through EINTR): its exit code, or 128 + the signal that killed it. */
static inline int tu_wait_child(pid_t pid) {
    int status = 0;
    pid_t w;
    do {
        w = waitpid(pid, &status, 0);
    } while (w < 0 && errno == EINTR);
    assert_int_equal(w, pid);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* A fresh directory /tmp/ab_test_<tag>_XXXXXX in out. */
static inline void tu_temp_dir(char *out, size_t n, const char *tag) {
    snprintf(out, n, "/tmp/ab_test_%s_XXXXXX", tag);
    assert_non_null(mkdtemp(out));
}

/* Removes dir and the plain files in it (the tests create nothing deeper). */
static inline void tu_remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        assert_int_equal(unlink(path), 0);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}

/* Entries of dir other than . and .. (a failed save must leave no temporary file behind). */
static inline int tu_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* A save (save(ctx), writing to /dev/null) must be refused with AB_ERR_IO and leave /dev/null the
 * same character device: the tests run as root in CI, where a removed or replaced /dev/null would
 * break the machine. */
static inline void tu_save_refused_by_dev_null(ab_status (*save)(void *), void *ctx) {
    struct stat before, after;
    assert_int_equal(stat("/dev/null", &before), 0);
    assert_true(S_ISCHR(before.st_mode));
    assert_int_equal(save(ctx), AB_ERR_IO);
    if (!strstr(ab_last_error(), "character device")) fail_msg("message: %s", ab_last_error());
    assert_int_equal(stat("/dev/null", &after), 0);
    assert_true(S_ISCHR(after.st_mode));
    assert_true(after.st_rdev == before.st_rdev && after.st_ino == before.st_ino);
}

/* Runs fn(ctx) in a forked child whose file-size limit is `bytes` (RLIMIT_FSIZE) with SIGXFSZ
 * ignored, so a write past the limit fails with EFBIG, as on a full disk. Returns the status fn
 * returned (the child's exit code); the child prints ab_last_error() on stderr. */
static inline ab_status tu_with_file_size_limit(rlim_t bytes, ab_status (*fn)(void *), void *ctx) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit lim = {bytes, bytes};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(100);
        ab_status st = fn(ctx);
        if (st != AB_OK) fprintf(stderr, "NOTE child with a %ld-byte file limit: %s\n", (long)bytes, ab_last_error());
        _exit((int)st);
    }
    int code = tu_wait_child(pid);
    assert_true(code < 100); /* an ab_status, not setrlimit's failure or a signal */
    return (ab_status)code;
}
#endif

#endif
