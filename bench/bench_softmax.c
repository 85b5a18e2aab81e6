/* bench/bench_softmax.c - row softmax (ab_softmax) against the loop a C programmer would write with
 * glibc's expf. See bench/bench.h for the options and the measurement protocol.
 *
 * Cases (unit Gelem/s: matrix elements per second, higher is better)
 *   softmax_<rows>x<cols>        cols = 64 ... 4096, rows = ROWS; ours = ab_softmax on the best path
 *                                (AVX-512 here), ref glibc_expf = three passes per row in plain C:
 *                                max, y = expf(x - max) with the sum, y *= 1/sum.
 *   softmax_avx2_<rows>x<cols>   the same with our AVX2 path forced (for the record).
 * Inputs are uniform in [-10, 10); ours is checked against the glibc loop before timing.
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include <float.h>
#include <math.h>

/* 256 rows: a block of attention scores or a batch of logits; 256 x 4096 floats (4 MiB in, 4 MiB
 * out) is the largest case, so every case fits L3 and the comparison is about the arithmetic. */
#define ROWS 256

typedef struct softmax_ctx {
    const float *x;
    float *y;
    int rows, cols;
} softmax_ctx;

static void run_ours(void *p) {
    softmax_ctx *c = (softmax_ctx *)p;
    ab_softmax(c->y, c->x, c->rows, c->cols, 0);
}

/* The reference: the straightforward three-pass loop over glibc expf (a scalar libm call per
 * element; this file builds without -ffast-math, so no vector libm is substituted). */
static void run_glibc(void *p) {
    softmax_ctx *c = (softmax_ctx *)p;
    for (int r = 0; r < c->rows; r++) {
        const float *x = c->x + (size_t)r * c->cols;
        float *y = c->y + (size_t)r * c->cols;
        float mx = x[0];
        for (int j = 1; j < c->cols; j++) mx = x[j] > mx ? x[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j < c->cols; j++) {
            y[j] = expf(x[j] - mx);
            sum += y[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < c->cols; j++) y[j] *= inv;
    }
}

/* ours vs the glibc loop: both are within a few ulp of exp per term, and the row sums differ by the
 * summation order (~sqrt(cols) eps); 1e-5 relative flags a broken kernel, not rounding. */
static void check(softmax_ctx *ours, const char *name) {
    softmax_ctx ref = *ours;
    size_t n = (size_t)ours->rows * ours->cols;
    ref.y = (float *)ab_aligned_alloc(n * sizeof(float));
    if (!ref.y) exit(1);
    run_ours(ours);
    run_glibc(&ref);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)ours->y[i] - ref.y[i]) / (fabs((double)ref.y[i]) + 1e-30);
        if (!(e <= worst)) worst = e;
    }
    ab_aligned_free(ref.y);
    if (!(worst <= 1e-5)) {
        fprintf(stderr, "bench_softmax: %s: ours differs from the glibc loop by %.3g (rel)\n", name, worst);
        exit(1);
    }
}

static void run_case(ab_isa isa, const char *tag, int cols, ab_rng *rng) {
    char name[96];
    snprintf(name, sizeof name, "softmax_%s%dx%d", tag, ROWS, cols);
    if (!bench_want(name, 1)) return;
    if (ab_set_isa(isa) != AB_OK) {
        bench_skip(name, "glibc_expf", "ISA_not_available");
        return;
    }
    size_t n = (size_t)ROWS * cols;
    softmax_ctx c;
    float *x = (float *)ab_aligned_alloc(n * sizeof(float));
    c.y = (float *)ab_aligned_alloc(n * sizeof(float));
    if (!x || !c.y) {
        fprintf(stderr, "bench_softmax: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) x[i] = 20.0f * ab_rng_uniform(rng) - 10.0f;
    c.x = x;
    c.rows = ROWS;
    c.cols = cols;
    check(&c, name);
    bench_entry e[2] = {{.ref = "ours", .fn = run_ours, .ctx = &c},
                        {.ref = "glibc_expf", .fn = run_glibc, .ctx = &c}};
    bench_compare(name, "Gelem/s", (double)n * 1e-9, 1, e, 2);
    ab_aligned_free(x);
    ab_aligned_free(c.y);
}

int main(int argc, char **argv) {
    bench_init(argc, argv);
    if (ab_init() != AB_OK) {
        fprintf(stderr, "bench_softmax: ab_init: %s\n", ab_last_error());
        return 1;
    }
    ab_isa best = ab_best_isa();
    printf("# bench_softmax: ours = ab_softmax on the %s path, ref = glibc expf loop; rounds = %d "
           "(median)\n",
           ab_isa_name(best), bench_cfg.iters);
    ab_rng rng;
    ab_rng_seed(&rng, 42, 3);
    for (int cols = 64; cols <= 4096; cols *= 2) run_case(best, "", cols, &rng);
    if (best > AB_ISA_AVX2) run_case(AB_ISA_AVX2, "avx2_", 1024, &rng);
    return 0;
}
