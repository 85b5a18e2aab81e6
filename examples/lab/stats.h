/* examples/lab/stats.h - the lab's statistics and its result records (not part of the library).
 *
 * A figure of the lab is a mean over seeds with its 95% t-interval, and a defence's effect is the
 * PAIRED difference against SFT (the same seed draws the same user data for both), with its own
 * t-interval (ALGORITHMS.md, "Reporting"). With K seeds:
 *     mean = sum x_k / K,  sd = sqrt(sum (x_k - mean)^2 / (K - 1)),
 *     interval = mean -+ t_{0.975, K-1} sd / sqrt(K)
 * and no interval for K = 1 (lo = hi = NaN). t_{0.975, df} comes from a table for df <= 30 and a
 * Cornish-Fisher expansion beyond (within 2e-4 of the exact quantile there).
 *
 * RECORDS. A flow job (one seed) writes one line per measurement, `KEY field=value ...` with
 * space-separated fields, no spaces inside values:
 *     JOB     seed= p= n= task= epochs= lr= base_crc= version= isa= rows=  (what was run)
 *     ALIGNED seed= method= hs= fa= refused= broken= nll_gap= seconds=     (after alignment)
 *     SEED    seed= row= hs= fa= refused= broken= nll_gap= seconds= w_harm= w_benign= harm_infl=
 *     END     seed= lines= crc=                                             (CRC-32 of the lines above)
 * The END line makes a job's output self-checking: a file without it, or with a wrong CRC, is an
 * unfinished or damaged job (stats_read_job). Values are printed with %.6g; NaN as "nan".
 */
#ifndef LAB_STATS_H
#define LAB_STATS_H
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* t_{0.975, df}, the two-sided 95% quantile of Student's t; df >= 1 (NaN below). */
double stats_t975(int df);

/* Mean and 95% t-interval of x[0..k-1]; k == 1 gives lo = hi = NaN; NaN values are skipped
 * (counted out of k). *n_used (may be NULL) gets the number of finite values used. */
typedef struct stats_ci {
    double mean, lo, hi;
    int n;
} stats_ci;
stats_ci stats_interval(const double *x, int k);
/* The interval of the paired differences a[i] - b[i] (pairs with a NaN skipped). */
stats_ci stats_paired(const double *a, const double *b, int k);
/* Decided by an interval: +1 when the whole interval satisfies x > bound (or x >= bound when
 * inclusive), -1 when the whole interval violates it, 0 when it straddles the bound or is missing.
 * For an upper bound (x < bound) pass the negated interval and bound. */
int stats_decide_above(stats_ci ci, double bound, int inclusive);

/* A record line: "KEY a=1 b=x ...". stats_field copies field `name`'s value into out (cap bytes)
 * and returns 1, or returns 0 when the line has no such field. stats_num gives it as a double
 * (NaN when missing or not a number). */
int stats_field(const char *line, const char *name, char *out, size_t cap);
double stats_num(const char *line, const char *name);

/* Writes `line` (no newline) to f and folds it into *crc and *n_lines; the job's END line uses them. */
void stats_emit(FILE *f, unsigned *crc, int *n_lines, const char *line);
void stats_end(FILE *f, int seed, unsigned crc, int n_lines);

/* Reads a job's output file: 1 if it ends with a valid END line (its CRC and line count match the
 * lines before it), else 0. On 1, *lines gets a malloc'd, NUL-terminated copy of the record lines
 * (END excluded), to be freed by the caller. */
int stats_read_job(const char *path, char **lines);

#ifdef __cplusplus
}
#endif
#endif /* LAB_STATS_H */
