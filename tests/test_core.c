/* tests/test_core.c - the core of antibody.h: status codes and error messages, ISA names and
 * dispatch (ab_set_isa, the AB_ISA environment variable, what valgrind hides), threads, the PCG32
 * generator and aligned allocation.
 *
 * AB_ISA is read once per process by ab_init(), so it is tested by re-executing this binary
 * (/proc/self/exe) with "--ab-core-child MODE" and AB_ISA set; the child checks what it sees and
 * reports through its exit code (CHILD_OK, CHILD_OK_UNSUPPORTED or the number of the failed check).
 * The one case this machine may not reach natively - AB_ISA=avx512 where AVX-512 is missing - is
 * also run in a child started under `valgrind --tool=none`, which hides AVX-512 from CPUID/XCR0.
 *
 * Statistical checks use fixed seeds (so they are reproducible) and bounds at tail probabilities of
 * about 1e-6 (so a correct generator would pass them for almost every seed, and a biased one fails).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <float.h>
#include <pthread.h>
#include <sched.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <gsl/gsl_cdf.h>
#define TU_POSIX_HELPERS
#include "testutil.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TC_HAVE_VALGRIND_H 1
#endif
#endif

#define CHILD_FLAG "--ab-core-child"
#define CHILD_OK 0
#define CHILD_OK_UNSUPPORTED 3 /* the requested ISA is missing and the error path behaved */
#define CHILD_EXEC_FAILED 127

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                         */

static int on_valgrind(void) {
#ifdef TC_HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND ? 1 : 0;
#else
    const char *p = getenv("LD_PRELOAD"); /* valgrind preloads its vgpreload_*.so into the client */
    return p && strstr(p, "vgpreload") != NULL;
#endif
}

/* 1 if `word` occurs in s delimited by non-identifier characters (so "A" does not match "AB_"). */
static int has_word(const char *s, const char *word) {
    size_t n = strlen(word);
    for (const char *p = s; (p = strstr(p, word)) != NULL; p++) {
        int left_ok = p == s || !(p[-1] == '_' || (p[-1] >= '0' && p[-1] <= '9') ||
                                  (p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z'));
        char r = p[n];
        int right_ok = !(r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') ||
                         (r >= 'A' && r <= 'Z'));
        if (left_ok && right_ok) return 1;
    }
    return 0;
}

#define ASSERT_MSG_HAS(word)                                                                       \
    do {                                                                                           \
        const char *m_ = ab_last_error();                                                          \
        assert_non_null(m_);                                                                       \
        if (!has_word(m_, (word))) fail_msg("ab_last_error() = \"%s\" does not name '%s'", m_, (word)); \
    } while (0)

/* The "flags" line of /proc/cpuinfo: the kernel's view of the CPU (CPUID bits it also enabled in
 * XCR0). Returns 0 if there is no such file (non-Linux). */
static int read_cpu_flags(char *buf, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0;
    int found = 0;
    while (fgets(buf, (int)cap, f)) {
        if (strncmp(buf, "flags", 5) == 0) {
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}
static int flag_on(const char *flags, const char *name) {
    const char *colon = strchr(flags, ':');
    return has_word(colon ? colon : flags, name);
}

/* ---------------------------------------------------------------------------------------------- */
/* status codes and messages                                                                       */

static const struct {
    ab_status st;
    const char *name;
} k_codes[] = {
    {AB_OK, "AB_OK"},           {AB_ERR_NULL, "AB_ERR_NULL"},   {AB_ERR_SHAPE, "AB_ERR_SHAPE"},
    {AB_ERR_ARG, "AB_ERR_ARG"}, {AB_ERR_ALLOC, "AB_ERR_ALLOC"}, {AB_ERR_ISA, "AB_ERR_ISA"},
    {AB_ERR_IO, "AB_ERR_IO"},   {AB_ERR_FORMAT, "AB_ERR_FORMAT"}, {AB_ERR_NAN, "AB_ERR_NAN"},
    {AB_ERR_STATE, "AB_ERR_STATE"},
};
#define N_CODES ((int)(sizeof k_codes / sizeof k_codes[0]))

static void test_status_str(void **state) {
    (void)state;
    assert_int_equal(AB_OK, 0);
    for (int i = 0; i < N_CODES; i++) {
        const char *s = ab_status_str(k_codes[i].st);
        assert_non_null(s);
        /* starts with the enum's name, as a whole word ("AB_ERR_NULL", not "AB_ERR_NULLX") */
        size_t n = strlen(k_codes[i].name);
        if (strncmp(s, k_codes[i].name, n) != 0 || (s[n] != '\0' && s[n] != ' '))
            fail_msg("ab_status_str(%d) = \"%s\" does not start with %s", (int)k_codes[i].st, s,
                     k_codes[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(s, ab_status_str(k_codes[j].st)) == 0)
                fail_msg("ab_status_str(%d) == ab_status_str(%d) = \"%s\"", (int)k_codes[i].st,
                         (int)k_codes[j].st, s);
    }
    /* a value outside the enum still gets a string, distinct from every real code's */
    const char *unknown = ab_status_str((ab_status)1234);
    assert_non_null(unknown);
    for (int i = 0; i < N_CODES; i++) assert_string_not_equal(unknown, ab_status_str(k_codes[i].st));
}

static void test_last_error_names_function_and_argument(void **state) {
    (void)state;
    float A[4] = {1, 2, 3, 4}, B[4] = {1, 0, 0, 1}, C[4] = {0};
    assert_non_null(ab_last_error());

    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 2, 1.0f, NULL, 2, B, 2, 0.0f, C, 2),
                     AB_ERR_NULL);
    ASSERT_MSG_HAS("ab_sgemm");
    ASSERT_MSG_HAS("A");
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 2, 1.0f, A, 2, NULL, 2, 0.0f, C, 2),
                     AB_ERR_NULL);
    ASSERT_MSG_HAS("ab_sgemm");
    ASSERT_MSG_HAS("B");
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, NULL, 2),
                     AB_ERR_NULL);
    ASSERT_MSG_HAS("C");
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, -1, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2),
                     AB_ERR_SHAPE);
    ASSERT_MSG_HAS("ab_sgemm");
    ASSERT_MSG_HAS("m");
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 2, 1.0f, A, 1, B, 2, 0.0f, C, 2),
                     AB_ERR_SHAPE);
    ASSERT_MSG_HAS("lda");
    assert_int_equal(ab_set_threads(0), AB_ERR_ARG);
    ASSERT_MSG_HAS("ab_set_threads");
    assert_int_equal(ab_set_isa((ab_isa)77), AB_ERR_ARG);
    ASSERT_MSG_HAS("ab_set_isa");
    ab_isa isa;
    assert_int_equal(ab_isa_from_name(NULL, &isa), AB_ERR_NULL);
    ASSERT_MSG_HAS("ab_isa_from_name");
    ASSERT_MSG_HAS("name");
    assert_int_equal(ab_isa_from_name("neon", &isa), AB_ERR_ARG);
    ASSERT_MSG_HAS("neon");
    float norm;
    assert_int_equal(ab_l2_norm(NULL, 4, &norm), AB_ERR_NULL);
    ASSERT_MSG_HAS("ab_l2_norm");
    ASSERT_MSG_HAS("x");
}

/* The message is per thread: a failure on another thread leaves this thread's message alone. */
static void *fail_on_other_thread(void *arg) {
    (void)arg;
    (void)ab_set_threads(-5);
    return NULL;
}
static void test_last_error_is_thread_local(void **state) {
    (void)state;
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 1, 1, -7, 1.0f, NULL, 1, NULL, 1, 0.0f,
                              NULL, 1),
                     AB_ERR_SHAPE);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", ab_last_error());
    assert_true(has_word(mine, "k"));
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fail_on_other_thread, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_string_equal(ab_last_error(), mine);
}

/* ---------------------------------------------------------------------------------------------- */
/* ISA names, dispatch                                                                             */

static void test_isa_names(void **state) {
    (void)state;
    static const char *const names[AB_ISA_COUNT] = {"scalar", "avx2", "avx512"};
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        ab_isa got = (ab_isa)-1;
        assert_string_equal(ab_isa_name((ab_isa)i), names[i]);
        assert_int_equal(ab_isa_from_name(names[i], &got), AB_OK);
        assert_int_equal(got, i);
    }
    static const char *const bad[] = {"", "bogus", "avx", "avx5", "avx5120", "avx2 ", " scalar",
                                      "scalar\n", "sse2", "avx512f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ab_isa got = AB_ISA_AVX2;
        if (ab_isa_from_name(bad[i], &got) != AB_ERR_ARG)
            fail_msg("ab_isa_from_name(\"%s\") accepted a bad name", bad[i]);
    }
    ab_isa got;
    assert_int_equal(ab_isa_from_name("scalar", NULL), AB_ERR_NULL);
    assert_int_equal(ab_isa_from_name(NULL, &got), AB_ERR_NULL);
    /* AB_ISA_COUNT (ab_get_isa when no path is usable) is "none", which names no path */
    assert_string_equal(ab_isa_name(AB_ISA_COUNT), "none");
    assert_int_equal(ab_isa_from_name("none", &got), AB_ERR_ARG);
    /* an out-of-range value has a name (never NULL) that is none of the real ones */
    const char *unk = ab_isa_name((ab_isa)9);
    assert_non_null(unk);
    assert_int_equal(ab_isa_from_name(unk, &got), AB_ERR_ARG);
}

static void test_set_isa_out_of_range(void **state) {
    (void)state;
    ab_isa before = ab_get_isa();
    const int bad[] = {-1, AB_ISA_COUNT, AB_ISA_COUNT + 1, 1000, -2147483647 - 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ab_set_isa((ab_isa)bad[i]), AB_ERR_ARG);
        assert_int_equal(ab_get_isa(), before);
    }
}

/* For every ISA: AB_OK exactly when this build and CPU/OS can run it, otherwise AB_ERR_ISA with the
 * path in use unchanged. Under valgrind AVX-512 is hidden, which is checked without trusting
 * ab_cpu_supports: valgrind says it is running (client request), so AVX-512 must be refused. */
static void test_set_isa_each(void **state) {
    (void)state;
    ab_isa initial = ab_get_isa();
    assert_true(ab_cpu_supports(initial));
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        ab_isa isa = (ab_isa)i, before = ab_get_isa();
        int usable = ab_isa_compiled(isa) && ab_cpu_supports(isa);
        ab_status st = ab_set_isa(isa);
        if (usable) {
            assert_int_equal(st, AB_OK);
            assert_int_equal(ab_get_isa(), isa);
        } else {
            assert_int_equal(st, AB_ERR_ISA);
            assert_int_equal(ab_get_isa(), before);
            ASSERT_MSG_HAS(ab_isa_name(isa));
        }
    }
    if (on_valgrind()) {
        assert_int_equal(ab_cpu_supports(AB_ISA_AVX512), 0);
        ab_isa before = ab_get_isa();
        assert_int_equal(ab_set_isa(AB_ISA_AVX512), AB_ERR_ISA);
        assert_int_equal(ab_get_isa(), before);
        assert_int_not_equal(ab_best_isa(), AB_ISA_AVX512);
    }
    assert_int_equal(ab_set_isa(initial), AB_OK);
    assert_int_equal(ab_get_isa(), initial);
}

/* ab_cpu_supports against facts it does not compute: the scalar path always works; AVX-512 implies
 * AVX2; gcc's own CPUID reading agrees on the instruction bits; natively, the kernel's /proc/cpuinfo
 * flags (cleared by Linux when XCR0 state is off) give exactly the same answer; under valgrind
 * AVX-512 is off. ab_best_isa is the highest usable path. */
static void test_cpu_supports_facts(void **state) {
    (void)state;
    assert_int_equal(ab_cpu_supports(AB_ISA_SCALAR), 1);
    assert_int_equal(ab_isa_compiled(AB_ISA_SCALAR), 1);
    if (ab_cpu_supports(AB_ISA_AVX512)) assert_int_equal(ab_cpu_supports(AB_ISA_AVX2), 1);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (ab_cpu_supports(AB_ISA_AVX2)) {
        assert_true(__builtin_cpu_supports("avx2"));
        assert_true(__builtin_cpu_supports("fma"));
    }
    if (ab_cpu_supports(AB_ISA_AVX512)) {
        assert_true(__builtin_cpu_supports("avx512f"));
        assert_true(__builtin_cpu_supports("avx512bw"));
        assert_true(__builtin_cpu_supports("avx512dq"));
        assert_true(__builtin_cpu_supports("avx512vl"));
    }
#endif
    char flags[8192];
    if (on_valgrind()) {
        assert_int_equal(ab_cpu_supports(AB_ISA_AVX512), 0);
    } else if (read_cpu_flags(flags, sizeof flags)) {
        int avx2 = flag_on(flags, "avx") && flag_on(flags, "avx2") && flag_on(flags, "fma") &&
                   flag_on(flags, "xsave");
        int avx512 = avx2 && flag_on(flags, "avx512f") && flag_on(flags, "avx512bw") &&
                     flag_on(flags, "avx512dq") && flag_on(flags, "avx512vl");
        assert_int_equal(ab_cpu_supports(AB_ISA_AVX2), avx2);
        assert_int_equal(ab_cpu_supports(AB_ISA_AVX512), avx512);
    }
    ab_isa best = ab_best_isa();
    assert_true(ab_isa_compiled(best) && ab_cpu_supports(best));
    for (int i = best + 1; i < AB_ISA_COUNT; i++)
        assert_false(ab_isa_compiled((ab_isa)i) && ab_cpu_supports((ab_isa)i));
}

/* ---------------------------------------------------------------------------------------------- */
/* AB_ISA through a fresh process                                                                  */

/* 2x3 * 3x2 with known answer; returns the status, checks the product when AB_OK. */
static int child_small_gemm(ab_status *st_out) {
    const float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1};
    const float want[4] = {4, 5, 10, 11};
    float C[4] = {-7, -7, -7, -7};
    ab_status st = ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
    *st_out = st;
    for (int i = 0; i < 4; i++) {
        if (st == AB_OK && C[i] != want[i]) return 0;
        if (st != AB_OK && C[i] != -7.0f) return 0; /* a refused call must not write C */
    }
    return 1;
}

/* A GEMM whose rounding depends on the kernel (FMA, blocking): the env-selected path must give the
 * same bits as the explicitly selected one. */
static int child_same_bits_as(ab_isa isa) {
    enum { M = 3, N = 5, K = 777 };
    static float A[M * K], B[K * N], C1[M * N], C2[M * N];
    ab_rng rng;
    ab_rng_seed(&rng, 7, 1);
    for (int i = 0; i < M * K; i++) A[i] = 2.0f * ab_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < K * N; i++) B[i] = 2.0f * ab_rng_uniform(&rng) - 1.0f;
    if (ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, M, N, K, 0.3f, A, K, B, N, 0.0f, C1, N) != AB_OK) return 0;
    if (ab_set_isa(isa) != AB_OK) return 0;
    if (ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, M, N, K, 0.3f, A, K, B, N, 0.0f, C2, N) != AB_OK) return 0;
    return memcmp(C1, C2, sizeof C1) == 0;
}

#define CHILD_CHECK(cond, code)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child %s (AB_ISA=%s): check failed: %s [%s]\n", mode,                 \
                    getenv("AB_ISA") ? getenv("AB_ISA") : "(unset)", #cond, ab_last_error());      \
            return (code);                                                                         \
        }                                                                                          \
    } while (0)

/* An ISA requested through AB_ISA: in use if usable, otherwise ab_init and every kernel call
 * return AB_ERR_ISA (and the message names the ISA). */
static int child_requested(const char *mode, ab_isa isa) {
    ab_status st;
    if (ab_isa_compiled(isa) && ab_cpu_supports(isa)) {
        CHILD_CHECK(ab_init() == AB_OK, 20);
        CHILD_CHECK(ab_get_isa() == isa, 21);
        CHILD_CHECK(child_small_gemm(&st) && st == AB_OK, 22);
        CHILD_CHECK(child_same_bits_as(isa), 23);
        return CHILD_OK;
    }
    CHILD_CHECK(ab_init() == AB_ERR_ISA, 30);
    char init_msg[512];
    snprintf(init_msg, sizeof init_msg, "%s", ab_last_error());
    CHILD_CHECK(strstr(init_msg, "AB_ISA") != NULL && strstr(init_msg, ab_isa_name(isa)) != NULL, 31);
    /* ab_init's message carries ab_set_isa's reason intact (it must not be garbled by formatting
     * the message buffer into itself) */
    CHILD_CHECK(ab_set_isa(isa) == AB_ERR_ISA, 34);
    if (!strstr(init_msg, ab_last_error()))
        fprintf(stderr, "child %s: ab_init message \"%s\" lacks ab_set_isa's reason \"%s\"\n", mode,
                init_msg, ab_last_error());
    CHILD_CHECK(strstr(init_msg, ab_last_error()) != NULL, 35);
    CHILD_CHECK(child_small_gemm(&st) && st == AB_ERR_ISA, 32);
    CHILD_CHECK(ab_init() == AB_ERR_ISA, 33); /* still refused: no silent fallback */
    CHILD_CHECK(ab_get_isa() == AB_ISA_COUNT, 36);
    return CHILD_OK_UNSUPPORTED;
}

static int child_main(const char *mode) {
    ab_status st;
    if (strcmp(mode, "default") == 0) { /* AB_ISA unset: the best path */
        CHILD_CHECK(getenv("AB_ISA") == NULL, 10);
        CHILD_CHECK(ab_init() == AB_OK, 11);
        CHILD_CHECK(ab_get_isa() == ab_best_isa(), 12);
        CHILD_CHECK(child_small_gemm(&st) && st == AB_OK, 13);
        return CHILD_OK;
    }
    if (strcmp(mode, "scalar") == 0) {
        CHILD_CHECK(ab_init() == AB_OK, 10);
        CHILD_CHECK(ab_get_isa() == AB_ISA_SCALAR, 11);
        CHILD_CHECK(ab_init() == AB_OK && ab_get_isa() == AB_ISA_SCALAR, 12); /* idempotent */
        CHILD_CHECK(child_small_gemm(&st) && st == AB_OK, 13);
        CHILD_CHECK(child_same_bits_as(AB_ISA_SCALAR), 14); /* the scalar kernel really ran */
        return CHILD_OK;
    }
    if (strcmp(mode, "bogus") == 0) {
        /* no path in use: ab_get_isa says "none" (not a path every call then refuses) and the
         * message says why */
        CHILD_CHECK(ab_get_isa() == AB_ISA_COUNT, 17);
        CHILD_CHECK(strcmp(ab_isa_name(ab_get_isa()), "none") == 0, 18);
        CHILD_CHECK(strstr(ab_last_error(), "bogus") != NULL, 19);
        CHILD_CHECK(ab_init() == AB_ERR_ARG, 10);
        CHILD_CHECK(strstr(ab_last_error(), "AB_ISA") != NULL, 11);
        CHILD_CHECK(strstr(ab_last_error(), "bogus") != NULL, 12);
        CHILD_CHECK(child_small_gemm(&st) && st == AB_ERR_ARG, 13); /* refused, C untouched */
        float x[3] = {1, 2, 2}, norm = -1.0f;
        CHILD_CHECK(ab_l2_norm(x, 3, &norm) == AB_ERR_ARG && norm == -1.0f, 14);
        /* an explicit choice recovers */
        CHILD_CHECK(ab_set_isa(AB_ISA_SCALAR) == AB_OK, 15);
        CHILD_CHECK(child_small_gemm(&st) && st == AB_OK, 16);
        CHILD_CHECK(ab_get_isa() == AB_ISA_SCALAR, 20);
        return CHILD_OK;
    }
    if (strcmp(mode, "avx2") == 0) return child_requested(mode, AB_ISA_AVX2);
    if (strcmp(mode, "avx512") == 0) return child_requested(mode, AB_ISA_AVX512);
    if (strcmp(mode, "avx512-hidden") == 0) { /* started under valgrind: AVX-512 must be missing */
        CHILD_CHECK(on_valgrind(), 10);
        CHILD_CHECK(ab_cpu_supports(AB_ISA_AVX512) == 0, 11);
        int rc = child_requested(mode, AB_ISA_AVX512);
        CHILD_CHECK(rc == CHILD_OK_UNSUPPORTED, rc ? rc : 12);
        return CHILD_OK;
    }
    fprintf(stderr, "child: unknown mode '%s'\n", mode);
    return 99;
}

/* Runs this binary again as "--ab-core-child MODE" with AB_ISA = isa_env (NULL: unset), optionally
 * under `valgrind --tool=none`. Returns the exit code (128 + signal if killed). */
static int run_child(const char *mode, const char *isa_env, int under_valgrind) {
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        snprintf(exe, sizeof exe, "/proc/self/exe");
    } else {
        exe[len] = '\0';
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (isa_env)
            setenv("AB_ISA", isa_env, 1);
        else
            unsetenv("AB_ISA");
        if (under_valgrind) {
            char *argv[] = {(char *)"valgrind", (char *)"--tool=none", (char *)"-q", exe,
                            (char *)CHILD_FLAG, (char *)mode, NULL};
            execvp(argv[0], argv);
        } else {
            char *argv[] = {exe, (char *)CHILD_FLAG, (char *)mode, NULL};
            execv(exe, argv);
        }
        _exit(CHILD_EXEC_FAILED);
    }
    return tu_wait_child(pid);
}

static void test_env_default_scalar_bogus(void **state) {
    (void)state;
    assert_int_equal(run_child("default", NULL, 0), CHILD_OK);
    assert_int_equal(run_child("scalar", "scalar", 0), CHILD_OK);
    assert_int_equal(run_child("bogus", "bogus", 0), CHILD_OK);
}

/* The child runs natively even when this process is under valgrind (no --trace-children), so its
 * answer is predicted from ab_cpu_supports natively and from /proc/cpuinfo under valgrind. */
static void test_env_avx2_avx512(void **state) {
    (void)state;
    int native_avx2 = -1, native_avx512 = -1;
    char flags[8192];
    if (!on_valgrind()) {
        native_avx2 = ab_cpu_supports(AB_ISA_AVX2) && ab_isa_compiled(AB_ISA_AVX2);
        native_avx512 = ab_cpu_supports(AB_ISA_AVX512) && ab_isa_compiled(AB_ISA_AVX512);
    } else if (read_cpu_flags(flags, sizeof flags) && ab_isa_compiled(AB_ISA_AVX512)) {
        native_avx2 = flag_on(flags, "avx") && flag_on(flags, "avx2") && flag_on(flags, "fma") &&
                      flag_on(flags, "xsave");
        native_avx512 = native_avx2 && flag_on(flags, "avx512f") && flag_on(flags, "avx512bw") &&
                        flag_on(flags, "avx512dq") && flag_on(flags, "avx512vl");
    }
    int rc2 = run_child("avx2", "avx2", 0), rc512 = run_child("avx512", "avx512", 0);
    if (native_avx2 >= 0) {
        assert_int_equal(rc2, native_avx2 ? CHILD_OK : CHILD_OK_UNSUPPORTED);
        assert_int_equal(rc512, native_avx512 ? CHILD_OK : CHILD_OK_UNSUPPORTED);
    } else {
        assert_true(rc2 == CHILD_OK || rc2 == CHILD_OK_UNSUPPORTED);
        assert_true(rc512 == CHILD_OK || rc512 == CHILD_OK_UNSUPPORTED);
    }
}

/* AB_ISA=avx512 where AVX-512 is missing, on any machine: the child runs under valgrind's "none"
 * tool, which hides AVX-512. */
static void test_env_avx512_hidden_by_valgrind(void **state) {
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    printf("SKIP test_env_avx512_hidden_by_valgrind: an ASan binary cannot run under valgrind\n");
    skip();
#else
    int rc = run_child("avx512-hidden", "avx512", 1);
    if (rc == CHILD_EXEC_FAILED) {
        printf("SKIP test_env_avx512_hidden_by_valgrind: valgrind is not installed\n");
        skip();
    }
    assert_int_equal(rc, CHILD_OK);
#endif
}

/* ---------------------------------------------------------------------------------------------- */
/* threads                                                                                         */

static void test_threads(void **state) {
    (void)state;
    int orig = ab_get_threads();
    assert_true(orig >= 1);
    assert_int_equal(ab_set_threads(0), AB_ERR_ARG);
    assert_int_equal(ab_get_threads(), orig);
    assert_int_equal(ab_set_threads(-3), AB_ERR_ARG);
    assert_int_equal(ab_get_threads(), orig);
    assert_int_equal(ab_set_threads(2), AB_OK);
#ifndef AB_NO_THREADS
    assert_int_equal(ab_get_threads(), 2);
    assert_int_equal(ab_set_threads(3), AB_OK);
    assert_int_equal(ab_get_threads(), 3);
#else
    assert_int_equal(ab_get_threads(), 1);
#endif
    assert_int_equal(ab_set_threads(1), AB_OK);
    assert_int_equal(ab_get_threads(), 1);
    assert_int_equal(ab_set_threads(orig), AB_OK);
    assert_int_equal(ab_get_threads(), orig);
}

/* A stalled worker (antibody.h, ab__contended): a chunk run by a worker sleeps 30 ms, as a thread
 * the OS has descheduled would, while the caller finishes every other chunk and then has to wait
 * for it. The calls right after must run all their chunks on the caller (slot 0), and every call
 * computes the same thing whoever runs it. Regions are repeated until a worker has run a chunk.
 * The hold lasts >= 10 ms (AB__HOLD_TICKS at a TSC of <= 5 GHz), so only calls that start within
 * 4 ms of the stalled region's end are judged; on a machine so loaded that none does, the whole
 * attempt is repeated (up to 10 times), and at least one call must have been judged. */
enum { STALL_CHUNKS = 64 };
typedef struct stall_ctx {
    int slept;                 /* atomic: a worker's chunk has slept */
    int judging;               /* atomic: the calls after the stall, which are judged, run */
    int slot_of[STALL_CHUNKS]; /* the slot that ran each chunk */
    double out[STALL_CHUNKS];
} stall_ctx;

static ab_status stall_chunk(void *ctx, int chunk, int slot) {
    stall_ctx *s = ctx;
    s->slot_of[chunk] = slot;
    if (slot != 0 && !__atomic_exchange_n(&s->slept, 1, __ATOMIC_ACQ_REL)) {
        struct timespec ts = {0, 30 * 1000 * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    } else if (slot == 0 && (__atomic_load_n(&s->judging, __ATOMIC_ACQUIRE) ||
                             !__atomic_load_n(&s->slept, __ATOMIC_ACQUIRE))) {
        /* The caller offers a worker the CPU at its chunks, so that a worker that may take
         * chunks does take some. Before the stall: valgrind (one thread at a time, rare
         * switches) let a worker wait 1.3-9.4 s for a turn inside a region (10 runs here; once,
         * in a make check, over 20 s). In the judged calls: a call not held on the caller then
         * shows chunks on a worker (without the yield, the test passed 3 of 6 runs with the hold
         * disabled). Not in the stalled region once the worker sleeps: the caller's time per
         * chunk there is what the stall is measured against. */
        sched_yield();
    }
    double x = chunk;
    for (int i = 0; i < 4000; i++) x = x * 0.999 + 1.0; /* ~ microseconds of work */
    s->out[chunk] = x;
    return AB_OK;
}

static void test_threads_stall(void **state) {
    (void)state;
#if defined(AB_NO_THREADS) || !(defined(__x86_64__) || defined(__i386__))
    skip(); /* no pool, or no TSC to time the stall with */
#else
    int orig = ab_get_threads();
    assert_int_equal(ab_set_threads(2), AB_OK);
    stall_ctx *s = calloc(1, sizeof *s);
    assert_non_null(s);
    double expect[STALL_CHUNKS];
    for (int c = 0; c < STALL_CHUNKS; c++) {
        double x = c;
        for (int i = 0; i < 4000; i++) x = x * 0.999 + 1.0;
        expect[c] = x;
    }
    int after = on_valgrind() ? 1 : 4, judged = 0;
    for (int attempt = 0; attempt < 10 && judged == 0; attempt++) {
        __atomic_store_n(&s->slept, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&s->judging, 0, __ATOMIC_RELEASE);
        double t0 = tu_now_s();
        while (!__atomic_load_n(&s->slept, __ATOMIC_ACQUIRE) && tu_now_s() - t0 < 20.0) {
            assert_int_equal(ab_parallel_for(STALL_CHUNKS, stall_chunk, s), AB_OK);
            assert_memory_equal(s->out, expect, sizeof expect);
        }
        assert_true(__atomic_load_n(&s->slept, __ATOMIC_ACQUIRE)); /* a worker ran a chunk */
        double t_end = tu_now_s();
        __atomic_store_n(&s->judging, 1, __ATOMIC_RELEASE);
        for (int k = 0; k < after && tu_now_s() - t_end < 0.004; k++) {
            memset(s->out, 0, sizeof s->out);
            assert_int_equal(ab_parallel_for(STALL_CHUNKS, stall_chunk, s), AB_OK);
            int on_workers = 0;
            for (int c = 0; c < STALL_CHUNKS; c++) on_workers += s->slot_of[c] != 0;
            assert_int_equal(on_workers, 0);
            assert_memory_equal(s->out, expect, sizeof expect);
            judged++;
        }
    }
    assert_true(judged > 0);
    free(s);
    assert_int_equal(ab_set_threads(orig), AB_OK);
#endif
}

/* ---------------------------------------------------------------------------------------------- */
/* RNG                                                                                             */

/* pcg32-demo (pcg-c-basic / pcg-c check-pcg32.out), round 1: pcg32_srandom_r(42, 54), six
 * pcg32_random_r, then 65 coins (pcg32_boundedrand_r(2): H if 1) and 33 dice (boundedrand(6)+1). */
static void test_rng_pcg_reference(void **state) {
    (void)state;
    static const uint32_t want[6] = {0xa15c02b7u, 0x7b47f409u, 0xba1d3330u,
                                     0x83d2f293u, 0xbfa4784bu, 0xcbed606eu};
    static const char coins[] = "HHTTTHTHHHTHTTTHHHHHTTTHHHTHTHTHTTHTTTHHHHHHTTTTHHTTTTTHTTTTTTTHT";
    static const int rolls[33] = {3, 4, 1, 1, 2, 2, 3, 2, 4, 3, 2, 4, 3, 3, 5, 2, 3,
                                  1, 3, 1, 5, 1, 4, 1, 5, 6, 4, 6, 6, 2, 6, 3, 3};
    ab_rng rng;
    ab_rng_seed(&rng, 42u, 54u);
    for (int i = 0; i < 6; i++) {
        uint32_t got = ab_rng_u32(&rng);
        if (got != want[i]) fail_msg("output %d: 0x%08x, expected 0x%08x", i, got, want[i]);
    }
    assert_int_equal(strlen(coins), 65);
    for (int i = 0; i < 65; i++) assert_int_equal(ab_rng_below(&rng, 2) ? 'H' : 'T', coins[i]);
    for (int i = 0; i < 33; i++) assert_int_equal((int)ab_rng_below(&rng, 6) + 1, rolls[i]);
}

static void test_rng_determinism(void **state) {
    (void)state;
    enum { N = 1000 };
    ab_rng a, b, c, d;
    ab_rng_seed(&a, 12345, 7);
    ab_rng_seed(&b, 12345, 7);
    ab_rng_seed(&c, 12346, 7); /* other seed */
    ab_rng_seed(&d, 12345, 8); /* other stream */
    int same_c = 0, same_d = 0;
    for (int i = 0; i < N; i++) {
        uint32_t x = ab_rng_u32(&a);
        assert_int_equal(x, ab_rng_u32(&b));
        same_c += x == ab_rng_u32(&c);
        same_d += x == ab_rng_u32(&d);
    }
    /* unrelated sequences agree by chance in ~N/2^32 places */
    assert_true(same_c <= 2);
    assert_true(same_d <= 2);
    /* re-seeding restarts the sequence; the state is a plain value that can be copied */
    ab_rng_seed(&a, 12345, 7);
    ab_rng saved = a;
    uint32_t first = ab_rng_u32(&a);
    assert_int_equal(first, ab_rng_u32(&saved));
}

/* Pearson chi-square of counts against equal expected counts. */
static double chi_square(const long *counts, int n_bins, long n_draws) {
    double expect = (double)n_draws / n_bins, chi2 = 0.0;
    for (int b = 0; b < n_bins; b++) chi2 += (counts[b] - expect) * (counts[b] - expect) / expect;
    return chi2;
}

static void test_rng_below(void **state) {
    (void)state;
    ab_rng rng;
    ab_rng_seed(&rng, 2024, 3);
    /* range, for bounds that do and do not divide 2^32 */
    static const uint32_t bounds[] = {1, 2, 3, 6, 7, 10, 1000, 65537, 0x80000000u, 0x80000001u,
                                      0xC0000000u, 0xFFFFFFFFu};
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++)
        for (int i = 0; i < 2000; i++) {
            uint32_t v = ab_rng_below(&rng, bounds[b]);
            if (v >= bounds[b]) fail_msg("ab_rng_below(%u) returned %u", bounds[b], v);
        }

    /* uniformity over 10 values: chi-square with 9 degrees of freedom, tail probability 1e-6 */
    long n = TU_SIZE(200000, 40000);
    long counts[10] = {0};
    for (long i = 0; i < n; i++) counts[ab_rng_below(&rng, 10)]++;
    double crit9 = gsl_cdf_chisq_Qinv(1e-6, 9);
    TU_ASSERT_ERR("ab_rng_below(10) chi-square, 9 dof", chi_square(counts, 10, n), crit9);

    /* bound 3*2^30: plain modulo maps 2^32 values onto it so that [0, 2^30) is hit twice as often
     * (probabilities 1/2, 1/4, 1/4 for the three 2^30-wide thirds); rejection makes them equal.
     * The same statistic on a modulo generator must fail: the test has the power to see bias. */
    const uint32_t big = 0xC0000000u;
    long thirds[3] = {0}, naive[3] = {0};
    long n3 = TU_SIZE(60000, 15000);
    ab_rng raw;
    ab_rng_seed(&raw, 99, 4);
    for (long i = 0; i < n3; i++) {
        thirds[ab_rng_below(&rng, big) >> 30]++;
        naive[(ab_rng_u32(&raw) % big) >> 30]++;
    }
    double crit2 = gsl_cdf_chisq_Qinv(1e-6, 2);
    TU_ASSERT_ERR("ab_rng_below(3*2^30) chi-square, 2 dof", chi_square(thirds, 3, n3), crit2);
    assert_true(chi_square(naive, 3, n3) > crit2);
}

static void test_rng_uniform(void **state) {
    (void)state;
    ab_rng rng;
    ab_rng_seed(&rng, 31337, 2);
    long n = TU_SIZE(200000, 40000);
    enum { BINS = 32 };
    long counts[BINS] = {0};
    double sum = 0.0;
    for (long i = 0; i < n; i++) {
        float u = ab_rng_uniform(&rng);
        if (!(u >= 0.0f && u < 1.0f)) fail_msg("ab_rng_uniform returned %.9g", (double)u);
        float scaled = u * 16777216.0f; /* 24 random bits: an exact multiple of 2^-24 */
        assert_true(scaled == floorf(scaled));
        sum += u;
        counts[(int)(u * BINS)]++;
    }
    /* mean within 5 standard errors (sd of U(0,1) = 1/sqrt(12)) */
    double mean_err = fabs(sum / (double)n - 0.5);
    TU_ASSERT_ERR("ab_rng_uniform |mean - 1/2|", mean_err, 5.0 / sqrt(12.0 * (double)n));
    TU_ASSERT_ERR("ab_rng_uniform chi-square, 31 dof", chi_square(counts, BINS, n),
                  gsl_cdf_chisq_Qinv(1e-6, BINS - 1));
}

/* N(0,1): mean, variance and P(|x| < 1) within 5 standard errors. Var(sample variance) of a normal
 * is 2/n; P(|x| < 1) = erf(1/sqrt 2) = 0.682689 has binomial standard error sqrt(p(1-p)/n). A
 * uniform or Laplace variable scaled to unit variance would fail the last check (0.577, 0.757). */
static void test_rng_normal(void **state) {
    (void)state;
    ab_rng rng;
    ab_rng_seed(&rng, 777, 5);
    long n = TU_SIZE(200000, 30000);
    double sum = 0.0, sumsq = 0.0;
    long inside = 0;
    for (long i = 0; i < n; i++) {
        float x = ab_rng_normal(&rng);
        if (!isfinite(x)) fail_msg("ab_rng_normal returned %g", (double)x);
        sum += x;
        sumsq += (double)x * x;
        inside += fabsf(x) < 1.0f;
    }
    double mean = sum / (double)n, var = sumsq / (double)n - mean * mean;
    double p1 = erf(1.0 / sqrt(2.0)), frac = (double)inside / (double)n;
    TU_ASSERT_ERR("ab_rng_normal |mean|", fabs(mean), 5.0 / sqrt((double)n));
    TU_ASSERT_ERR("ab_rng_normal |variance - 1|", fabs(var - 1.0), 5.0 * sqrt(2.0 / (double)n));
    TU_ASSERT_ERR("ab_rng_normal |P(|x|<1) - 0.6827|", fabs(frac - p1),
                  5.0 * sqrt(p1 * (1.0 - p1) / (double)n));
}

/* ---------------------------------------------------------------------------------------------- */
/* aligned allocation                                                                              */

static void test_aligned_alloc(void **state) {
    (void)state;
    static const size_t sizes[] = {1, 3, 8, 63, 64, 65, 100, 1000, 4096, 100003, (size_t)1 << 20};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = (unsigned char *)ab_aligned_alloc(sizes[i]);
        assert_non_null(p[i]);
        if ((uintptr_t)p[i] % AB_ALIGN != 0) fail_msg("ab_aligned_alloc(%zu) = %p", sizes[i], (void *)p[i]);
        memset(p[i], 0xA0 + i, sizes[i]); /* the whole buffer is writable (ASan/memcheck check it) */
    }
    assert_int_equal(AB_ALIGN, 64);
    for (int i = 0; i < N; i++) { /* buffers do not overlap: each still holds its own pattern */
        for (size_t j = 0; j < sizes[i]; j++)
            if (p[i][j] != (unsigned char)(0xA0 + i)) fail_msg("buffer %d overwritten at %zu", i, j);
        ab_aligned_free(p[i]);
    }
    /* 0 bytes: NULL or a freeable aligned pointer */
    void *z = ab_aligned_alloc(0);
    assert_true(z == NULL || (uintptr_t)z % AB_ALIGN == 0);
    ab_aligned_free(z);
    ab_aligned_free(NULL); /* no-op */
    /* a size whose padding would wrap around size_t must fail, not return a tiny buffer */
    assert_null(ab_aligned_alloc((size_t)-1));
    assert_null(ab_aligned_alloc((size_t)-1 - 8));
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], CHILD_FLAG) == 0) return child_main(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_str),
        cmocka_unit_test(test_last_error_names_function_and_argument),
        cmocka_unit_test(test_last_error_is_thread_local),
        cmocka_unit_test(test_isa_names),
        cmocka_unit_test(test_set_isa_out_of_range),
        cmocka_unit_test(test_set_isa_each),
        cmocka_unit_test(test_cpu_supports_facts),
        cmocka_unit_test(test_env_default_scalar_bogus),
        cmocka_unit_test(test_env_avx2_avx512),
        cmocka_unit_test(test_env_avx512_hidden_by_valgrind),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_threads_stall),
        cmocka_unit_test(test_rng_pcg_reference),
        cmocka_unit_test(test_rng_determinism),
        cmocka_unit_test(test_rng_below),
        cmocka_unit_test(test_rng_uniform),
        cmocka_unit_test(test_rng_normal),
        cmocka_unit_test(test_aligned_alloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
