/* examples/lab/stats.c - the lab's statistics and result records (see stats.h). */
#include "stats.h"
#include "../../antibody.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* t_{0.975, df} for df = 1..30 (to 9 digits). */
static const double stats__t975[30] = {
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
    2.306004135,  2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
    2.131449546,  2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
    2.073873068,  2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
    2.045229642,  2.042272456};

double stats_t975(int df) {
    if (df < 1) return NAN;
    if (df <= 30) return stats__t975[df - 1];
    /* Cornish-Fisher expansion of t around the normal quantile z (Abramowitz & Stegun 26.7.5) */
    const double z = 1.959963984540054, v = (double)df;
    double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
    double g1 = (z3 + z) / 4.0, g2 = (5.0 * z5 + 16.0 * z3 + 3.0 * z) / 96.0;
    double g3 = (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / 384.0;
    return z + g1 / v + g2 / (v * v) + g3 / (v * v * v);
}

stats_ci stats_interval(const double *x, int k) {
    stats_ci ci = {NAN, NAN, NAN, 0};
    double sum = 0.0;
    for (int i = 0; i < k; i++)
        if (isfinite(x[i])) sum += x[i], ci.n++;
    if (ci.n == 0) return ci;
    ci.mean = sum / ci.n;
    if (ci.n < 2) return ci;
    double ss = 0.0;
    for (int i = 0; i < k; i++)
        if (isfinite(x[i])) ss += (x[i] - ci.mean) * (x[i] - ci.mean);
    double half = stats_t975(ci.n - 1) * sqrt(ss / (ci.n - 1)) / sqrt((double)ci.n);
    ci.lo = ci.mean - half;
    ci.hi = ci.mean + half;
    return ci;
}

stats_ci stats_paired(const double *a, const double *b, int k) {
    double *d = (double *)malloc(sizeof(double) * (size_t)(k > 0 ? k : 1));
    stats_ci ci = {NAN, NAN, NAN, 0};
    if (!d) return ci;
    for (int i = 0; i < k; i++) d[i] = isfinite(a[i]) && isfinite(b[i]) ? a[i] - b[i] : NAN;
    ci = stats_interval(d, k);
    free(d);
    return ci;
}

int stats_decide_above(stats_ci ci, double bound, int inclusive) {
    if (!isfinite(ci.lo) || !isfinite(ci.hi)) return 0;
    if (inclusive ? ci.lo >= bound : ci.lo > bound) return 1;
    if (inclusive ? ci.hi < bound : ci.hi <= bound) return -1;
    return 0;
}

int stats_field(const char *line, const char *name, char *out, size_t cap) {
    size_t len = strlen(name);
    for (const char *p = line; (p = strstr(p, name)) != NULL; p += len) {
        if ((p != line && p[-1] != ' ') || p[len] != '=') continue;
        const char *v = p + len + 1;
        size_t n = strcspn(v, " \n");
        if (cap == 0) return 1;
        if (n >= cap) n = cap - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return 1;
    }
    return 0;
}

double stats_num(const char *line, const char *name) {
    char buf[64], *end;
    if (!stats_field(line, name, buf, sizeof buf)) return NAN;
    double v = strtod(buf, &end);
    return end != buf && *end == '\0' ? v : NAN;
}

void stats_emit(FILE *f, unsigned *crc, int *n_lines, const char *line) {
    fprintf(f, "%s\n", line);
    *crc = ab_crc32(*crc, line, strlen(line));
    *crc = ab_crc32(*crc, "\n", 1);
    ++*n_lines;
}

void stats_end(FILE *f, int seed, unsigned crc, int n_lines) {
    fprintf(f, "END seed=%d lines=%d crc=%08x\n", seed, n_lines, crc);
    fflush(f);
}

int stats_read_job(const char *path, char **lines) {
    *lines = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t cap = 1 << 14, len = 0;
    char *buf = (char *)malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *bigger = cap < ((size_t)1 << 26) ? (char *)realloc(buf, cap * 2) : NULL;
            if (!bigger) { /* a job's records are a few kB: anything this large is not one */
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger, cap *= 2;
        }
    }
    fclose(f);
    if (!buf) return 0;
    buf[len] = '\0';
    /* the END line is the last line */
    if (len < 2 || buf[len - 1] != '\n') { free(buf); return 0; }
    size_t end = len - 1;
    while (end > 0 && buf[end - 1] != '\n') end--;
    const char *last = buf + end;
    unsigned want = 0;
    int want_lines = -1;
    char field[32];
    if (strncmp(last, "END ", 4) != 0 || !stats_field(last, "crc", field, sizeof field) ||
        sscanf(field, "%x", &want) != 1 || !stats_field(last, "lines", field, sizeof field) ||
        sscanf(field, "%d", &want_lines) != 1) {
        free(buf);
        return 0;
    }
    unsigned crc = ab_crc32(0, buf, end);
    int n_lines = 0;
    for (size_t i = 0; i < end; i++) n_lines += buf[i] == '\n';
    if (crc != want || n_lines != want_lines) { free(buf); return 0; }
    buf[end] = '\0';
    *lines = buf;
    return 1;
}
