/* examples/lab/grid.c - the experiment grid's job wrapper and its merge (issue 15). The driver is
 * examples/lab/grid.sh: it makes the shared base model, writes the job list (one shell line per
 * independent flow run: `grid job ...`), runs it with GNU parallel (or Slurm) and calls `grid merge`.
 *
 *   grid job OUT -- FLOW --job ... --seed S --p P --n N --rows R --base-crc C ...
 *       One job of a grid. When OUT already holds this job's finished output (a valid END line and
 *       CRC, and a JOB line with the same seed, p, n, rows and base CRC) it is skipped. Otherwise
 *       FLOW runs with `--job-out OUT.tmp.HOST.PID --job-log LOG.tmp.HOST.PID` appended (LOG: OUT
 *       with -log.tsv for .txt), its stdout and stderr going to OUT's .err file; its output is checked
 *       the same way and renamed to OUT (the log first), so a failed or killed job never leaves a
 *       valid-looking OUT. SIGTERM, SIGINT and SIGHUP are passed on to flow and the temporary files
 *       removed. Exit 0: done or skipped; 1: the job failed; 2: usage.
 *   grid check OUT [-- FLOW ARGS]
 *       Exit 0 when OUT is a finished record file (examples/lab/stats.h) [of the job FLOW ARGS
 *       describe], 1 (with the reason) when not.
 *   grid merge MANIFEST [--csv FILE] [--missing FILE] [--require-complete]
 *       Reads every job of the manifest (grid.sh writes OUT/grid.tsv: one line per job, p, n, alpha,
 *       seed, rows and the output's path relative to the manifest) and writes one CSV row per grid
 *       point x alpha x method, with the statistics flow prints (stats.c): mean and 95% t-interval
 *       over the seeds, and the paired difference against SFT of the same seed and point:
 *         p,n,alpha,method,seeds,hs,hs_lo,hs_hi,fa,fa_lo,fa_hi,refused,broken,nll_gap,
 *         d_hs,d_hs_lo,d_hs_hi,d_fa,d_fa_lo,d_fa_hi,missing_seeds
 *       alpha is empty for the rows that do not depend on it (the manifest's #alpha-rows line names
 *       those that do: the Antidote rows). Rows are sorted by p, n, alpha and method (in the order
 *       of the manifest's rows), so the table depends only on which jobs have finished, never on
 *       their order, host or timing (the seconds are left out). A job that has not finished, or
 *       whose output belongs to another job, is named on a MISSING line (stdout and --missing) and
 *       its seed in the row's missing_seeds; --require-complete then exits 1. Records of the same
 *       point, seed and method in several jobs (SFT is in every Antidote job) must agree; the JOB
 *       lines' settings, library version and ISA path must agree across the grid: a NOTE says
 *       where they do not.
 */
#define _POSIX_C_SOURCE 200809L
#define ANTIBODY_IMPLEMENTATION /* ab_crc32, for stats.c */
#include "../../antibody.h"
#include "stats.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "grid: out of memory\n");
        exit(1);
    }
    return p;
}
static void *xrealloc(void *p, size_t size) {
    p = realloc(p, size ? size : 1);
    if (!p) {
        fprintf(stderr, "grid: out of memory\n");
        exit(1);
    }
    return p;
}

/* Copies src into dst (cap bytes), cut short if need be. */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Puts prefix before the text in buf (cap bytes), cutting the end if need be. */
static void prepend(char *buf, size_t cap, const char *prefix) {
    size_t p = strlen(prefix), n = strlen(buf);
    if (p >= cap) p = cap - 1;
    if (p + n >= cap) n = cap - 1 - p;
    memmove(buf + p, buf, n);
    memcpy(buf, prefix, p);
    buf[p + n] = '\0';
}

/* 1 when item (len bytes) is an item of the comma-separated list. */
static int in_list(const char *list, const char *item, size_t len) {
    for (const char *q = list; *q;) {
        size_t l = strcspn(q, ",");
        if (l == len && !strncmp(q, item, len)) return 1;
        q += l + (q[l] == ',');
    }
    return 0;
}

/* 1 when the comma-separated lists a and b hold the same items (in any order). */
static int same_set(const char *a, const char *b) {
    for (int pass = 0; pass < 2; pass++)
        for (const char *x = pass ? b : a, *y = pass ? a : b; *x;) {
            size_t len = strcspn(x, ",");
            if (!in_list(y, x, len)) return 0;
            x += len + (x[len] == ',');
        }
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* a job's identity: what its flow command asks for, and whether a record file is its output       */
typedef struct job_id {
    int seed, n;
    float p;
    unsigned base_crc;
    char rows[512];
} job_id;

/* From the flow arguments (the last of a repeated option wins, as in flow). Returns 0 with a
 * message when one of --seed, --p, --n, --rows, --base-crc is missing or malformed. */
static int job_id_from_args(int argc, char **argv, job_id *id) {
    const char *seed = NULL, *p = NULL, *n = NULL, *rows = NULL, *crc = NULL;
    for (int i = 0; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--seed")) seed = argv[i + 1];
        else if (!strcmp(argv[i], "--p")) p = argv[i + 1];
        else if (!strcmp(argv[i], "--n")) n = argv[i + 1];
        else if (!strcmp(argv[i], "--rows")) rows = argv[i + 1];
        else if (!strcmp(argv[i], "--base-crc")) crc = argv[i + 1];
    }
    char *end;
    if (!seed || !p || !n || !rows || !crc || strlen(rows) >= sizeof id->rows) {
        fprintf(stderr, "grid: the flow command must give --seed, --p, --n, --rows and --base-crc "
                        "(they name the job; grid.sh writes them)\n");
        return 0;
    }
    id->seed = (int)strtol(seed, &end, 10);
    int ok = *end == '\0';
    id->n = (int)strtol(n, &end, 10);
    ok &= *end == '\0';
    id->p = strtof(p, &end);
    ok &= *end == '\0';
    ok &= sscanf(crc, "%x", &id->base_crc) == 1;
    snprintf(id->rows, sizeof id->rows, "%s", rows);
    if (!ok) fprintf(stderr, "grid: a malformed --seed, --p, --n or --base-crc in the flow command\n");
    return ok;
}

/* 1 when the record text's JOB line (its first) is the job `id`; else 0 with the reason. */
static int job_matches(const char *lines, const job_id *id, char *why, size_t cap) {
    char line[1024], v[512];
    size_t len = strcspn(lines, "\n");
    if (strncmp(lines, "JOB ", 4) || len >= sizeof line) {
        snprintf(why, cap, "no JOB line");
        return 0;
    }
    memcpy(line, lines, len);
    line[len] = '\0';
    unsigned crc = 0;
    if (stats_num(line, "seed") != id->seed) snprintf(why, cap, "it is seed %g, not %d", stats_num(line, "seed"), id->seed);
    else if (stats_num(line, "n") != id->n) snprintf(why, cap, "its n is %g, not %d", stats_num(line, "n"), id->n);
    else if (!stats_field(line, "p", v, sizeof v) || strtof(v, NULL) != id->p)
        snprintf(why, cap, "its p is %s, not %g", v, (double)id->p);
    else if (!stats_field(line, "base_crc", v, sizeof v) || sscanf(v, "%x", &crc) != 1 || crc != id->base_crc)
        snprintf(why, cap, "it was made from base %s, not %08x", v, id->base_crc);
    else if (!stats_field(line, "rows", v, sizeof v) || !same_set(v, id->rows))
        snprintf(why, cap, "its rows are %.200s, not %.200s", v, id->rows);
    else return 1;
    return 0;
}

/* 1 when path is a finished output of the job (id NULL: of any job); else 0 with the reason. */
static int output_ok(const char *path, const job_id *id, char *why, size_t cap) {
    char *lines = NULL;
    if (access(path, F_OK) != 0) {
        snprintf(why, cap, "no output");
        return 0;
    }
    if (!stats_read_job(path, &lines)) {
        snprintf(why, cap, "unfinished or damaged (no valid END line)");
        return 0;
    }
    int ok = !id || job_matches(lines, id, why, cap);
    if (!ok) prepend(why, cap, "the output of another job: ");
    free(lines);
    return ok;
}

/* OUT's companions: its log (x.txt -> x-log.tsv) and its diagnostics (x.txt -> x.err). */
static void companion(char *dst, size_t cap, const char *out, const char *suffix) {
    size_t len = strlen(out);
    if (len > 4 && !strcmp(out + len - 4, ".txt")) len -= 4;
    snprintf(dst, cap, "%.*s%s", (int)len, out, suffix);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

/* The last few lines of a file to stderr (a failed job's diagnostics). */
static void print_tail(const char *path, int n_lines) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char ring[8][512];
    int n = 0;
    while (fgets(ring[n % 8], sizeof ring[0], f)) n++;
    fclose(f);
    if (n_lines > 8) n_lines = 8;
    for (int i = n > n_lines ? n - n_lines : 0; i < n; i++) fprintf(stderr, "  | %s", ring[i % 8]);
}

static int cmd_job(const char *out, int argc, char **argv) {
    job_id id;
    if (!job_id_from_args(argc, argv, &id)) return 2;
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--job-out") || !strcmp(argv[i], "--job-log")) {
            fprintf(stderr, "grid: the flow command must not give %s (the job wrapper does)\n", argv[i]);
            return 2;
        }
    const char *name = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    char why[600];
    if (output_ok(out, &id, why, sizeof why)) {
        printf("grid: %s already done (CRC checked), skipped\n", name);
        return 0;
    }
    if (strcmp(why, "no output")) {
        printf("grid: %s: the existing output is %s; running the job again\n", name, why);
        remove(out);
    }
    char host[128] = "host", log[1100], err[1100], tmp[1200], tmp_log[1200];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    companion(log, sizeof log, out, "-log.tsv");
    companion(err, sizeof err, out, ".err");
    snprintf(tmp, sizeof tmp, "%s.tmp.%s.%ld", out, host, (long)getpid());
    snprintf(tmp_log, sizeof tmp_log, "%s.tmp.%s.%ld", log, host, (long)getpid());

    char **av = xcalloc((size_t)argc + 5, sizeof(char *));
    for (int i = 0; i < argc; i++) av[i] = argv[i];
    av[argc] = "--job-out", av[argc + 1] = tmp, av[argc + 2] = "--job-log", av[argc + 3] = tmp_log;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, err, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: waitpid returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL), sigaction(SIGINT, &sa, NULL), sigaction(SIGHUP, &sa, NULL);

    double t0 = now_s();
    pid_t pid;
    int rc = posix_spawnp(&pid, av[0], &fa, NULL, av, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(av);
    if (rc != 0) {
        fprintf(stderr, "grid: %s: cannot start %s: %s\n", name, argv[0], strerror(rc));
        return 1;
    }
    int status = 0, forwarded = 0;
    for (;;) {
        if (g_signal && !forwarded) kill(pid, g_signal), forwarded = 1;
        if (waitpid(pid, &status, 0) == pid) break;
        if (errno != EINTR) {
            fprintf(stderr, "grid: waitpid: %s\n", strerror(errno));
            status = -1;
            break;
        }
    }
    int done = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && !g_signal;
    if (done && !output_ok(tmp, &id, why, sizeof why)) {
        fprintf(stderr, "grid: %s: flow exited 0 but its output is %s\n", name, why);
        done = 0;
    }
    if (done && access(tmp_log, F_OK) == 0 && rename(tmp_log, log) != 0) {
        fprintf(stderr, "grid: %s: cannot rename the log to %s: %s\n", name, log, strerror(errno));
        done = 0;
    }
    if (done && rename(tmp, out) != 0) {
        fprintf(stderr, "grid: %s: cannot rename the output to %s: %s\n", name, out, strerror(errno));
        done = 0;
    }
    if (!done) {
        remove(tmp), remove(tmp_log);
        if (g_signal) {
            fprintf(stderr, "grid: %s stopped by signal %d; nothing written\n", name, (int)g_signal);
            return 128 + g_signal;
        }
        if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0)
            fprintf(stderr, "grid: %s FAILED: flow exited with status %d; the end of %s:\n", name,
                    WEXITSTATUS(status), err);
        else if (status != -1 && WIFSIGNALED(status))
            fprintf(stderr, "grid: %s FAILED: flow was killed by signal %d; the end of %s:\n", name,
                    WTERMSIG(status), err);
        print_tail(err, 5);
        return 1;
    }
    printf("grid: %s done in %.1f s\n", name, now_s() - t0);
    return 0;
}

static int cmd_check(const char *out, int argc, char **argv) {
    job_id id;
    if (argc > 0 && !job_id_from_args(argc, argv, &id)) return 2;
    char why[600];
    if (output_ok(out, argc > 0 ? &id : NULL, why, sizeof why)) {
        printf("grid: %s is a finished job output (CRC checked)\n", out);
        return 0;
    }
    printf("grid: %s: %s\n", out, why);
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* merge                                                                                           */
typedef struct entry { /* one job of the manifest */
    char p[32], alpha[32], rows[512], out[1024];
    int n, seed, point, ok;
    char why[600];
} entry;

typedef struct point {
    char p[32];
    int n;
} point;

typedef struct value { /* one seed's record of a method at a point */
    int seed, have;
    double hs, fa, refused, broken, gap;
    char raw[256]; /* the record's fields, to compare duplicates */
    char from[1024];
} value;

typedef struct key { /* a row of the table: a point, an alpha ("" when the method ignores it), a method */
    int point, method;
    char alpha[32];
    value *v; /* one per expected seed, in seed order */
    int n_v;
} key;

typedef struct grid {
    entry *e;
    int n_e;
    point *pt;
    int n_pt;
    key *k;
    int n_k;
    char methods[32][48]; /* in the order of the manifest's rows */
    int n_methods;
    char alpha_rows[512];
} grid;

static int method_id(grid *g, const char *name, int add) {
    for (int i = 0; i < g->n_methods; i++)
        if (!strcmp(g->methods[i], name)) return i;
    if (!add || g->n_methods == 32 || strlen(name) >= sizeof g->methods[0]) return -1;
    snprintf(g->methods[g->n_methods], sizeof g->methods[0], "%s", name);
    return g->n_methods++;
}

static int depends_on_alpha(const grid *g, const char *method) {
    return in_list(g->alpha_rows, method, strlen(method));
}

static key *find_key(grid *g, int point, const char *alpha, int method, int add) {
    for (int i = 0; i < g->n_k; i++)
        if (g->k[i].point == point && g->k[i].method == method && !strcmp(g->k[i].alpha, alpha)) return &g->k[i];
    if (!add) return NULL;
    g->k = xrealloc(g->k, sizeof(key) * (size_t)(g->n_k + 1));
    key *k = &g->k[g->n_k++];
    memset(k, 0, sizeof *k);
    k->point = point, k->method = method;
    snprintf(k->alpha, sizeof k->alpha, "%s", alpha);
    return k;
}

static value *find_value(key *k, int seed, int add) {
    for (int i = 0; i < k->n_v; i++)
        if (k->v[i].seed == seed) return &k->v[i];
    if (!add) return NULL;
    k->v = xrealloc(k->v, sizeof(value) * (size_t)(k->n_v + 1));
    int i = k->n_v++;
    while (i > 0 && k->v[i - 1].seed > seed) k->v[i] = k->v[i - 1], i--; /* kept in seed order */
    memset(&k->v[i], 0, sizeof(value));
    k->v[i].seed = seed;
    return &k->v[i];
}

static int read_manifest(const char *path, grid *g) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "grid: cannot read the manifest %s: %s\n", path, strerror(errno));
        return 0;
    }
    char line[2048];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!strncmp(line, "#alpha-rows ", 12)) {
            copy_str(g->alpha_rows, sizeof g->alpha_rows, line + 12);
            continue;
        }
        if (line[0] == '#' || line[0] == '\0') continue;
        entry e;
        memset(&e, 0, sizeof e);
        char *field[6], *save = NULL, *s = line;
        int nf = 0;
        for (char *t = strtok_r(s, "\t", &save); t && nf < 6; t = strtok_r(NULL, "\t", &save)) field[nf++] = t;
        char *end1, *end2;
        if (nf != 6 || strlen(field[0]) >= sizeof e.p || strlen(field[2]) >= sizeof e.alpha ||
            strlen(field[4]) >= sizeof e.rows || strlen(field[5]) >= sizeof e.out) {
            fprintf(stderr, "grid: %s:%d: want p, n, alpha, seed, rows, output separated by tabs\n", path, lineno);
            fclose(f);
            return 0;
        }
        e.n = (int)strtol(field[1], &end1, 10);
        e.seed = (int)strtol(field[3], &end2, 10);
        if (*end1 || *end2) {
            fprintf(stderr, "grid: %s:%d: n and seed must be integers\n", path, lineno);
            fclose(f);
            return 0;
        }
        snprintf(e.p, sizeof e.p, "%s", field[0]);
        snprintf(e.alpha, sizeof e.alpha, "%s", field[2]);
        snprintf(e.rows, sizeof e.rows, "%s", field[4]);
        /* the output's path is relative to the manifest's directory (unless absolute) */
        const char *slash = strrchr(path, '/');
        if (field[5][0] == '/' || !slash) snprintf(e.out, sizeof e.out, "%s", field[5]);
        else snprintf(e.out, sizeof e.out, "%.*s/%s", (int)(slash - path), path, field[5]);
        e.point = -1;
        for (int i = 0; i < g->n_pt; i++)
            if (!strcmp(g->pt[i].p, e.p) && g->pt[i].n == e.n) e.point = i;
        if (e.point < 0) {
            g->pt = xrealloc(g->pt, sizeof(point) * (size_t)(g->n_pt + 1));
            snprintf(g->pt[g->n_pt].p, sizeof g->pt[0].p, "%s", e.p);
            g->pt[g->n_pt].n = e.n;
            e.point = g->n_pt++;
        }
        g->e = xrealloc(g->e, sizeof(entry) * (size_t)(g->n_e + 1));
        g->e[g->n_e++] = e;
    }
    fclose(f);
    return 1;
}

/* The rows of a table: every method each job was asked for, at its point and alpha key. */
static int expect_rows(grid *g) {
    for (int i = 0; i < g->n_e; i++) {
        entry *e = &g->e[i];
        for (const char *q = e->rows; *q;) {
            size_t l = strcspn(q, ",");
            char m[48];
            if (l == 0 || l >= sizeof m) {
                fprintf(stderr, "grid: a bad rows list in the manifest: %s\n", e->rows);
                return 0;
            }
            memcpy(m, q, l);
            m[l] = '\0';
            q += l + (q[l] == ',');
            if (!strcmp(m, "base")) continue; /* the base row is not a job's: flow's driver evaluates it */
            int id = method_id(g, m, 1);
            if (id < 0) {
                fprintf(stderr, "grid: too many methods in the manifest\n");
                return 0;
            }
            key *k = find_key(g, e->point, depends_on_alpha(g, m) ? e->alpha : "", id, 1);
            find_value(k, e->seed, 1);
        }
    }
    return 1;
}

static void fmt(char *dst, size_t cap, double x, int decimals) {
    if (!isfinite(x)) snprintf(dst, cap, "nan");
    else snprintf(dst, cap, "%.*f", decimals, x);
}

static int cmp_num(const char *a, const char *b) {
    if (!*a || !*b) return (*a != '\0') - (*b != '\0'); /* "" first */
    double x = strtod(a, NULL), y = strtod(b, NULL);
    return (x > y) - (x < y);
}

static const grid *g_sort; /* for qsort's comparator */
static int cmp_key(const void *pa, const void *pb) {
    const key *a = pa, *b = pb;
    const point *x = &g_sort->pt[a->point], *y = &g_sort->pt[b->point];
    int c = cmp_num(x->p, y->p);
    if (!c) c = (x->n > y->n) - (x->n < y->n);
    if (!c) c = cmp_num(a->alpha, b->alpha);
    if (!c) c = (a->method > b->method) - (a->method < b->method);
    return c;
}

static int cmd_merge(int argc, char **argv) {
    const char *manifest = NULL, *csv_path = NULL, *missing_path = NULL;
    int require_complete = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv_path = argv[++i];
        else if (!strcmp(argv[i], "--missing") && i + 1 < argc) missing_path = argv[++i];
        else if (!strcmp(argv[i], "--require-complete")) require_complete = 1;
        else if (argv[i][0] != '-' && !manifest) manifest = argv[i];
        else {
            fprintf(stderr, "grid: merge: unknown argument %s (grid --help)\n", argv[i]);
            return 2;
        }
    }
    if (!manifest) {
        fprintf(stderr, "grid: merge needs the manifest (OUT/grid.tsv)\n");
        return 2;
    }
    grid g;
    memset(&g, 0, sizeof g);
    if (!read_manifest(manifest, &g) || !expect_rows(&g)) return 1;
    int sft = method_id(&g, "sft", 0);

    /* every job's records */
    int n_ok = 0, n_disagree = 0, n_settings = 0;
    char settings0[1024] = "", first_from[1024] = "";
    static const char *const setting_fields[] = {"task", "epochs", "lr", "lora", "strength", "vaccine_rho",
                                                 "base_crc", "version", "isa"};
    for (int i = 0; i < g.n_e; i++) {
        entry *e = &g.e[i];
        job_id id = {e->seed, e->n, strtof(e->p, NULL), 0, ""};
        snprintf(id.rows, sizeof id.rows, "%s", e->rows);
        char *lines = NULL;
        e->ok = 0;
        if (access(e->out, F_OK) != 0) snprintf(e->why, sizeof e->why, "no output");
        else if (!stats_read_job(e->out, &lines)) snprintf(e->why, sizeof e->why, "unfinished or damaged (no valid END line)");
        else {
            /* the base CRC is the grid's, checked here against the first job's */
            char v[64] = "";
            stats_field(lines, "base_crc", v, sizeof v);
            sscanf(v, "%x", &id.base_crc);
            e->ok = job_matches(lines, &id, e->why, sizeof e->why);
            if (!e->ok) prepend(e->why, sizeof e->why, "the output of another job: ");
        }
        if (!e->ok) {
            free(lines);
            continue;
        }
        n_ok++;
        char *line = lines;
        while (*line) {
            size_t len = strcspn(line, "\n");
            char rec[1024];
            if (len < sizeof rec) {
                memcpy(rec, line, len);
                rec[len] = '\0';
                if (!strncmp(rec, "JOB ", 4)) {
                    char settings[1024] = "", v[128];
                    for (size_t f = 0; f < sizeof setting_fields / sizeof setting_fields[0]; f++) {
                        if (!stats_field(rec, setting_fields[f], v, sizeof v)) snprintf(v, sizeof v, "?");
                        snprintf(settings + strlen(settings), sizeof settings - strlen(settings), " %s=%s",
                                 setting_fields[f], v);
                    }
                    if (!*settings0) snprintf(settings0, sizeof settings0, "%s", settings), snprintf(first_from, sizeof first_from, "%s", e->out);
                    else if (strcmp(settings, settings0)) {
                        n_settings++;
                        printf("NOTE %s was run with%s; %s with%s\n", e->out, settings, first_from, settings0);
                    }
                }
                char row[64];
                if (!strncmp(rec, "SEED ", 5) && stats_field(rec, "row", row, sizeof row)) {
                    int m = method_id(&g, row, 0);
                    key *k = m < 0 ? NULL : find_key(&g, e->point, depends_on_alpha(&g, row) ? e->alpha : "", m, 0);
                    value *val = k ? find_value(k, e->seed, 0) : NULL;
                    if (val) {
                        char raw[256], f[64];
                        raw[0] = '\0';
                        static const char *const fields[] = {"hs", "fa", "refused", "broken", "nll_gap"};
                        for (int q = 0; q < 5; q++) {
                            if (!stats_field(rec, fields[q], f, sizeof f)) snprintf(f, sizeof f, "?");
                            snprintf(raw + strlen(raw), sizeof raw - strlen(raw), " %s=%s", fields[q], f);
                        }
                        if (!val->have) {
                            val->have = 1;
                            val->hs = stats_num(rec, "hs"), val->fa = stats_num(rec, "fa");
                            val->refused = stats_num(rec, "refused"), val->broken = stats_num(rec, "broken");
                            val->gap = stats_num(rec, "nll_gap");
                            snprintf(val->raw, sizeof val->raw, "%s", raw);
                            snprintf(val->from, sizeof val->from, "%s", e->out);
                        } else if (strcmp(val->raw, raw)) {
                            n_disagree++;
                            printf("NOTE %s seed %d at p=%s n=%d: %s has%s, %s has%s\n", row, e->seed, e->p, e->n,
                                   e->out, raw, val->from, val->raw);
                        }
                    }
                }
            }
            line += len + (line[len] == '\n');
        }
        free(lines);
    }

    /* the table */
    g_sort = &g;
    qsort(g.k, (size_t)g.n_k, sizeof(key), cmp_key);
    FILE *csv = csv_path ? fopen(csv_path, "w") : stdout;
    if (!csv) {
        fprintf(stderr, "grid: cannot write %s: %s\n", csv_path, strerror(errno));
        return 1;
    }
    fprintf(csv, "p,n,alpha,method,seeds,hs,hs_lo,hs_hi,fa,fa_lo,fa_hi,refused,broken,nll_gap,"
                 "d_hs,d_hs_lo,d_hs_hi,d_fa,d_fa_lo,d_fa_hi,missing_seeds\n");
    int incomplete_rows = 0;
    for (int i = 0; i < g.n_k; i++) {
        key *k = &g.k[i];
        int K = k->n_v;
        double *x[7];
        for (int q = 0; q < 7; q++) x[q] = xcalloc((size_t)K, sizeof(double));
        key *ref = sft >= 0 ? find_key(&g, k->point, "", sft, 0) : NULL;
        char missing[512] = "";
        for (int s = 0; s < K; s++) {
            value *v = &k->v[s];
            x[0][s] = v->have ? v->hs : NAN, x[1][s] = v->have ? v->fa : NAN;
            x[2][s] = v->have ? v->refused : NAN, x[3][s] = v->have ? v->broken : NAN;
            x[4][s] = v->have ? v->gap : NAN;
            value *r = ref ? find_value(ref, v->seed, 0) : NULL;
            x[5][s] = r && r->have ? r->hs : NAN, x[6][s] = r && r->have ? r->fa : NAN;
            if (!v->have)
                snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%d", *missing ? ";" : "", v->seed);
        }
        incomplete_rows += *missing != '\0';
        stats_ci hs = stats_interval(x[0], K), fa = stats_interval(x[1], K);
        stats_ci refused = stats_interval(x[2], K), broken = stats_interval(x[3], K), gap = stats_interval(x[4], K);
        char c[16][32];
        fmt(c[0], 32, hs.mean, 2), fmt(c[1], 32, hs.lo, 2), fmt(c[2], 32, hs.hi, 2);
        fmt(c[3], 32, fa.mean, 2), fmt(c[4], 32, fa.lo, 2), fmt(c[5], 32, fa.hi, 2);
        fmt(c[6], 32, refused.mean, 2), fmt(c[7], 32, broken.mean, 2), fmt(c[8], 32, gap.mean, 4);
        char d[256] = ",,,,,"; /* SFT itself: no difference */
        if (k->method != sft) {
            stats_ci dh = stats_paired(x[0], x[5], K), df = stats_paired(x[1], x[6], K);
            fmt(c[9], 32, dh.mean, 2), fmt(c[10], 32, dh.lo, 2), fmt(c[11], 32, dh.hi, 2);
            fmt(c[12], 32, df.mean, 2), fmt(c[13], 32, df.lo, 2), fmt(c[14], 32, df.hi, 2);
            snprintf(d, sizeof d, "%s,%s,%s,%s,%s,%s", c[9], c[10], c[11], c[12], c[13], c[14]);
        }
        fprintf(csv, "%s,%d,%s,%s,%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", g.pt[k->point].p, g.pt[k->point].n,
                k->alpha, g.methods[k->method], hs.n, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], d,
                missing);
        for (int q = 0; q < 7; q++) free(x[q]);
    }
    if (csv != stdout && fclose(csv) != 0) {
        fprintf(stderr, "grid: write error on %s\n", csv_path);
        return 1;
    }

    /* what is missing */
    FILE *mf = missing_path ? fopen(missing_path, "w") : NULL;
    if (missing_path && !mf) fprintf(stderr, "grid: cannot write %s: %s\n", missing_path, strerror(errno));
    for (int i = 0; i < g.n_e; i++) {
        entry *e = &g.e[i];
        if (e->ok) continue;
        for (FILE *f = stdout; f; f = f == stdout ? mf : NULL)
            fprintf(f, "MISSING p=%s n=%d alpha=%s seed=%d rows=%s: %s: %s\n", e->p, e->n, e->alpha, e->seed,
                    e->rows, e->out, e->why);
    }
    if (mf) fclose(mf);
    printf("grid: %d of %d jobs finished; %d table rows (%d points), %d of them missing seeds%s%s\n", n_ok, g.n_e,
           g.n_k, g.n_pt, incomplete_rows, csv_path ? "; wrote " : "", csv_path ? csv_path : "");
    if (n_disagree || n_settings)
        printf("NOTE %d records disagree with another job's copy of them, %d jobs ran with other settings, "
               "library version or ISA path than the first (lines above)\n", n_disagree, n_settings);
    for (int i = 0; i < g.n_k; i++) free(g.k[i].v);
    free(g.k), free(g.e), free(g.pt);
    return require_complete && n_ok < g.n_e ? 1 : 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: grid job OUT -- FLOW ARGS...      run one grid job unless OUT already holds it\n"
            "       grid check OUT [-- FLOW ARGS...]  exit 0 when OUT is a finished job output [of that job]\n"
            "       grid merge MANIFEST [--csv FILE] [--missing FILE] [--require-complete]\n"
            "The experiment grid's job wrapper and merge; examples/lab/grid.sh drives them (see the top of\n"
            "examples/lab/grid.c and the README, \"The experiment grid\").\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "merge")) return cmd_merge(argc - 2, argv + 2);
    if ((!strcmp(argv[1], "job") || !strcmp(argv[1], "check")) && argc >= 3) {
        int is_job = !strcmp(argv[1], "job");
        int rest = 3;
        if (argc > 3 && strcmp(argv[3], "--")) {
            fprintf(stderr, "grid: %s OUT -- FLOW ARGS...: expected -- after OUT\n", argv[1]);
            return 2;
        }
        if (argc > 3) rest = 4;
        if (is_job && rest >= argc) {
            fprintf(stderr, "grid: job OUT -- FLOW ARGS...: the flow command is missing\n");
            return 2;
        }
        return is_job ? cmd_job(argv[2], argc - rest, argv + rest) : cmd_check(argv[2], argc - rest, argv + rest);
    }
    usage(stderr);
    return 2;
}
