/* tests/test_kernels.c - every kernel on every ISA path this machine runs (tu_isas), through the
 * public API, as ONE table in the manner of ggml's test-backend-ops.
 *
 * The table (TABLE, at the end) lists entries of op x shapes. An op (kt_op) says how to make its
 * inputs for a shape from a seeded ab_rng (make), how to run them through the public API on the
 * path in use (run), and which checks (kt_check) hold its output: each check states its error
 * metric (kt_metric) and its bound, with a comment on why the bound is what it is. The runner
 * (kt_run_entry) takes each shape (and each of the op's variants of it: causal or not, transposes,
 * ...), makes the inputs once, runs the scalar oracle (AB_ISA_SCALAR) and then every path on those
 * identical inputs, and measures each check on each path. It reports, per check and path, the
 * worst error with the shape where it occurred through TU_ASSERT_ERR (AB_TEST_VERBOSE=1 prints
 * them). Each entry is one cmocka test. A check may instead compare the path's output with an
 * exact reference computed in double (GEMM, exp, GELU), or with a second output of the same path
 * (in place against out of place, 2 threads against 1).
 *
 * Shapes. Lengths straddle the vector widths (8 floats for AVX2, 16 for AVX-512, and the
 * 2x-unrolled 16/32-float main loops): 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4099.
 * Row kernels use odd and even column counts and causal masks. GEMM shapes sit on the block
 * boundaries of kernels/gemm.h: MR/NR = 14/32 (AVX-512) and 6/16 (AVX2), KC = 512 / 384,
 * NC = 256 / 512 (AVX-512 / AVX2) and MC = 2016 (keep the lists below in sync when those change),
 * plus tiny ones, with leading dimensions padded a little (operands read in place) or >= 1024
 * (operands packed). Every input and output buffer starts one float into an allocation of exactly
 * its size (kt_floats), so no path can rely on 32- or 64-byte alignment, and an overread shows up
 * under valgrind and ASan. Every output buffer is NaN-filled before each run, so an output a path
 * leaves unwritten fails. Under AB_TEST_SMALL=1 (valgrind) the big shapes shrink.
 *
 * Metrics, and why the bounds are what they are (each bound is stated again at its check):
 *   - KT_BITS: elements whose bit pattern differs from the reference; bound 0. For one IEEE
 *     operation per element (add), copies, untouched or masked entries, and outputs that must not
 *     depend on how they are asked for (in place, NULL statistics, thread count).
 *   - KT_ULP: distance in ulps (ordered bit patterns, so subnormal steps count as ulps). exp: both
 *     paths are within 1.2 ulp of the exact value (tools/exp_sweep), so they may differ by 2; each
 *     is also held to AB_EXPF_MAX_ULP against exp in double where results are normal.
 *   - KT_REL: |got - want| / scale, where scale is the magnitude of the terms that the scalar
 *     formula rounds (e.g. |x| for GELU, whose scalar tanh form loses the bits of 1 + tanh(u) near
 *     -1). This is the natural size of the rounding errors of either path. Row kernels (softmax,
 *     CE, layernorm) sum a row in a different order on each path (lanes vs a sequential float
 *     sum); for the random rows here that difference is ~sqrt(n) eps/2 relative to the sum of
 *     magnitudes (~4e-6 at n = 4099), which sets their bounds. Reductions accumulate in double and
 *     round to float once: <= 1 float ulp apart (relative).
 *   - KT_GEMM: |got - exact| / (gamma_{k+2} (|alpha| sum_p |a_ip| |b_pj| + |beta c_ij|)), exact =
 *     the GEMM definition in double, gamma_n = n u / (1 - n u), u = FLT_EPSILON / 2; bound 1. This
 *     is the rounding-error bound of a k-term dot product plus the alpha/beta update, and it holds
 *     on every path: each term of C is rounded at most k + 2 times (scalar: alpha*a, the product,
 *     k additions; SIMD: the fma chain of its KC block, fma(alpha, acc, beta*C), one fma per later
 *     block), and beta*c at most k + 1 times. It is tighter at every k than the 2 k FLT_EPSILON of
 *     the previous test_gemm_isa.c (which is 4 gamma_{k+2} at large k); measured worst ~0.7, at
 *     k = 1. (In test_gemm.c's units of (k+2) FLT_EPSILON this bound is about 0.5.)
 *   - KT_PROPERTY: elements breaking an exact property the check states (NaN in -> NaN out,
 *     x > AB_EXPF_MAX_X -> +inf, masked entries exactly +0, ...); bound 0.
 */
#include "testutil.h"
#include <float.h>

#define EPS ((double)FLT_EPSILON) /* 2^-23 */
#define OFF 1                     /* every buffer starts one float in: unaligned for every width */

/* ---------------------------------------------------------------------------------------------- */
/* The table's types                                                                              */

typedef enum kt_metric {
    KT_BITS,     /* elements whose bit pattern differs from the reference (bound 0) */
    KT_ULP,      /* largest distance in ulps */
    KT_REL,      /* largest |got - ref| / scale, the scale stated with the check */
    KT_GEMM,     /* largest |got - exact| / (gamma_{k+2} (|alpha| sum |a||b| + |beta c|)) */
    KT_PROPERTY, /* elements breaking a stated exact property (bound 0) */
    KT_METRIC_COUNT
} kt_metric;
static const char *const KT_METRIC_NAME[KT_METRIC_COUNT] = {"bits", "ulp", "rel", "gemm",
                                                            "property"};

/* rows x cols x depth: vectors are 1 x n, GEMM m x n x k, ghost T x d_in x d_out */
typedef struct kt_shape {
    int rows, cols, depth;
} kt_shape;

#define KT_MAX_MEM 16
/* One shape and variant of an op, with the oracle's output and one path's output. */
typedef struct kt_case {
    kt_shape shape;
    int variant;       /* 0 .. op->n_variants - 1: what it selects is the op's (causal, ...) */
    ab_isa isa;        /* the path got came from */
    const void *in;    /* the op's inputs: its own struct, made by op->make */
    size_t n_out;      /* floats in want and got */
    const float *want; /* the scalar oracle's output */
    const float *got;  /* the output on isa */
    void *mem[KT_MAX_MEM];
    int n_mem;
} kt_case;

typedef struct kt_check {
    const char *what; /* what is compared with what, and the scale for KT_REL */
    kt_metric metric;
    double bound;
    double (*measure)(const kt_case *c); /* the error of c->got, in the metric's unit */
    int simd_only;                       /* a property of the SIMD paths only: skip scalar */
} kt_check;

#define KT_MAX_CHECKS 4
typedef struct kt_op {
    const char *name;
    int n_variants; /* runs per shape (0 counts as 1) */
    /* Makes the inputs for c->shape and c->variant into c->in (on the scalar path, so inputs
     * that are another kernel's outputs come from the oracle); returns the output length. */
    size_t (*make)(kt_case *c, ab_rng *rng);
    /* Runs the inputs through the public API on the path in use; writes all n_out floats. */
    void (*run)(const kt_case *c, float *out);
    kt_check checks[KT_MAX_CHECKS]; /* ended by a NULL measure */
} kt_op;

#define KT_MAX_SHAPES 128
typedef struct kt_entry {
    const kt_op *op;
    int (*shapes)(kt_shape *out); /* writes its shapes (<= KT_MAX_SHAPES), returns how many */
} kt_entry;

/* ---------------------------------------------------------------------------------------------- */
/* Case memory: everything a case allocates is freed with it.                                    */

static void *kt_mem(kt_case *c, size_t bytes) {
    assert_true(c->n_mem < KT_MAX_MEM);
    void *p = calloc(1, bytes ? bytes : 1);
    assert_non_null(p);
    c->mem[c->n_mem++] = p;
    return p;
}

/* n floats, zeroed, one float into a buffer of exactly n + 1 */
static float *kt_floats(kt_case *c, size_t n) {
    return (float *)kt_mem(c, (n + OFF) * sizeof(float)) + OFF;
}

static void kt_free(kt_case *c) {
    for (int i = 0; i < c->n_mem; i++) free(c->mem[i]);
    c->n_mem = 0;
}

static size_t kt_len(const kt_case *c) { return (size_t)c->shape.rows * (size_t)c->shape.cols; }

/* ---------------------------------------------------------------------------------------------- */
/* The runner                                                                                     */

typedef struct kt_worst {
    double err;
    int shape, variant, seen;
} kt_worst;

static void kt_use_isa(ab_isa isa) {
    TU_SET_ISA(isa);
    assert_int_equal(ab_get_isa(), isa); /* each path runs its own kernels */
}

/* the worst error so far and where; a NaN, once seen, stays the worst */
static void kt_record(kt_worst *w, double err, int shape, int variant) {
    if (w->seen && (isnan(w->err) || err <= w->err)) return;
    *w = (kt_worst){err, shape, variant, 1};
}

static uint64_t kt_seed(const char *name) { /* FNV-1a of the op's name */
    uint64_t h = 1469598103934665603ull;
    for (; *name; name++) h = (h ^ (uint8_t)*name) * 1099511628211ull;
    return h;
}

static int kt_n_checks(const kt_op *op) {
    int n = 0;
    while (n < KT_MAX_CHECKS && op->checks[n].measure) n++;
    return n;
}

static void kt_nan_fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

/* One shape and variant: inputs made once, the oracle run once, then every path on the same
 * inputs; each check's error goes to worst[check][path]. */
static void kt_run_case(const kt_op *op, const kt_shape *shape, int si, int variant,
                        const ab_isa *isas, int n_isa, kt_worst (*worst)[AB_ISA_COUNT]) {
    kt_case c = {.shape = *shape, .variant = variant};
    ab_rng rng;
    ab_rng_seed(&rng, kt_seed(op->name) + (uint64_t)si, (uint64_t)variant);
    kt_use_isa(AB_ISA_SCALAR);
    c.n_out = op->make(&c, &rng);
    float *want = kt_floats(&c, c.n_out), *got = kt_floats(&c, c.n_out);
    kt_nan_fill(want, c.n_out);
    op->run(&c, want);
    c.want = want;
    c.got = got;
    for (int ii = 0; ii < n_isa; ii++) {
        kt_use_isa(isas[ii]);
        kt_nan_fill(got, c.n_out);
        op->run(&c, got);
        c.isa = isas[ii];
        for (int k = 0; k < kt_n_checks(op); k++) {
            const kt_check *chk = &op->checks[k];
            if (chk->simd_only && isas[ii] == AB_ISA_SCALAR) continue;
            kt_record(&worst[k][ii], chk->measure(&c), si, variant);
        }
    }
    kt_free(&c);
}

/* "op: check [path] (metric; worst at shape #variant)" */
static void kt_describe(char *what, size_t size, const kt_op *op, const kt_check *chk, ab_isa isa,
                        const kt_worst *w, const kt_shape *shapes) {
    const kt_shape *s = &shapes[w->shape];
    char where[64] = "";
    if (w->err != 0.0)
        snprintf(where, sizeof where, "; worst at %dx%dx%d #%d", s->rows, s->cols, s->depth,
                 w->variant);
    snprintf(what, size, "%s: %s [%s] (%s%s)", op->name, chk->what, ab_isa_name(isa),
             KT_METRIC_NAME[chk->metric], where);
}

/* Every check on every path through TU_ASSERT_ERR; failures are all listed before the first one
 * fails the test. */
static void kt_report(const kt_op *op, kt_worst (*worst)[AB_ISA_COUNT], const ab_isa *isas,
                      int n_isa, const kt_shape *shapes) {
    char what[240], first_fail[240] = "";
    double fail_err = 0.0, fail_bound = 0.0;
    for (int k = 0; k < kt_n_checks(op); k++)
        for (int ii = 0; ii < n_isa; ii++) {
            const kt_check *chk = &op->checks[k];
            const kt_worst *w = &worst[k][ii];
            if (!w->seen) continue; /* a SIMD-only check on the scalar path */
            kt_describe(what, sizeof what, op, chk, isas[ii], w, shapes);
            if (w->err <= chk->bound) {
                TU_ASSERT_ERR(what, w->err, chk->bound);
            } else if (first_fail[0]) {
                print_error("%s: error %.3e exceeds bound %.1e\n", what, w->err, chk->bound);
            } else {
                snprintf(first_fail, sizeof first_fail, "%s", what);
                fail_err = w->err;
                fail_bound = chk->bound;
            }
        }
    if (first_fail[0]) TU_ASSERT_ERR(first_fail, fail_err, fail_bound);
}

/* One cmocka test: an entry's op x its shapes x the op's variants x every path here. */
static void kt_run_entry(void **state) {
    const kt_entry *e = (const kt_entry *)*state;
    const kt_op *op = e->op;
    kt_shape shapes[KT_MAX_SHAPES];
    int n_shapes = e->shapes(shapes);
    assert_true(n_shapes > 0 && n_shapes <= KT_MAX_SHAPES);
    ab_isa isas[AB_ISA_COUNT];
    int n_isa = tu_isas(isas);
    kt_worst worst[KT_MAX_CHECKS][AB_ISA_COUNT];
    memset(worst, 0, sizeof worst);
    for (int si = 0; si < n_shapes; si++)
        for (int v = 0; v < (op->n_variants ? op->n_variants : 1); v++)
            kt_run_case(op, &shapes[si], si, v, isas, n_isa, worst);
    kt_report(op, worst, isas, n_isa, shapes);
}

/* ---------------------------------------------------------------------------------------------- */
/* Measures shared by several ops                                                                 */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ulps between two floats: bit patterns mapped to a monotone integer line (+0 and -0 coincide).
 * NaN vs anything is "infinitely" far unless both are NaN. */
static double ulp_dist(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0.0 : INFINITY;
    int64_t ia = (int32_t)f2u(a), ib = (int32_t)f2u(b);
    if (ia < 0) ia = (int64_t)INT32_MIN - ia;
    if (ib < 0) ib = (int64_t)INT32_MIN - ib;
    return (double)(ia > ib ? ia - ib : ib - ia);
}

/* |got - exact| in ulps of the exact value's float binade (as tools/exp_sweep.c measures). */
static double ulp_err_exact(float got, double exact) {
    int e;
    frexp(exact, &e);
    return fabs((double)got - exact) / ldexp(1.0, e - 24);
}

/* |got - want| / scale; NaN where the reference is finite counts as infinitely wrong, NaN in both
 * as equal (the scalar oracle defines where NaN comes out). */
static double rel(float got, float want, double scale) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got) ? 0.0 : INFINITY;
    if (got == want) return 0.0; /* also equal infinities */
    return fabs((double)got - (double)want) / scale;
}

/* elements of got[0, n) whose bit pattern differs from ref[0, n) */
static double bits_differ(const float *got, const float *ref, size_t n) {
    double count = 0.0;
    for (size_t i = 0; i < n; i++) count += f2u(got[i]) != f2u(ref[i]);
    return count;
}

/* the whole output, bit for bit against the oracle */
static double measure_bits(const kt_case *c) { return bits_differ(c->got, c->want, c->n_out); }

/* the whole output, in ulps from the oracle */
static double measure_ulp(const kt_case *c) {
    double worst = 0.0;
    for (size_t i = 0; i < c->n_out; i++) tu_worst(&worst, ulp_dist(c->got[i], c->want[i]));
    return worst;
}

/* outputs laid out as [out of place | in place]: the halves bit for bit */
static double measure_in_place(const kt_case *c) {
    size_t half = c->n_out / 2;
    return bits_differ(c->got + half, c->got, half);
}

/* ---------------------------------------------------------------------------------------------- */
/* exp                                                                                            */

typedef struct exp_in {
    float *x;
} exp_in;

/* Arguments spread over the whole domain: the normal range, the subnormal range, overflow. */
static size_t make_vexpf(kt_case *c, ab_rng *rng) {
    exp_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    in->x = kt_floats(c, n);
    for (size_t i = 0; i < n; i++) {
        switch (ab_rng_below(rng, 4)) {
        case 0: in->x[i] = -110.0f + 200.0f * ab_rng_uniform(rng); break; /* all, with 0 and inf */
        case 1: in->x[i] = -2.0f + 4.0f * ab_rng_uniform(rng); break;     /* around 1 */
        case 2: in->x[i] = -104.0f + 17.0f * ab_rng_uniform(rng); break;  /* subnormal results */
        default: in->x[i] = 80.0f + 9.0f * ab_rng_uniform(rng); break;    /* near overflow */
        }
    }
    c->in = in;
    return 2 * n;
}

/* [out of place | in place] */
static void run_vexpf_both(const kt_case *c, float *out) {
    const exp_in *in = c->in;
    size_t n = c->n_out / 2;
    assert_int_equal(ab_vexpf(out, in->x, n), AB_OK);
    memcpy(out + n, in->x, n * sizeof(float));
    assert_int_equal(ab_vexpf(out + n, out + n, n), AB_OK);
}

static void run_vexpf(const kt_case *c, float *out) {
    const exp_in *in = c->in;
    assert_int_equal(ab_vexpf(out, in->x, c->n_out), AB_OK);
}

/* the documented accuracy on this path too, where results are normal */
static double measure_vexpf_exact(const kt_case *c) {
    const exp_in *in = c->in;
    double worst = 0.0;
    for (size_t i = 0; i < c->n_out / 2; i++)
        if (in->x[i] >= AB_EXPF_MIN_NORMAL_X && in->x[i] <= AB_EXPF_MAX_X)
            tu_worst(&worst, ulp_err_exact(c->got[i], exp((double)in->x[i])));
    return worst;
}

static const kt_op OP_VEXPF = {
    "vexpf", 0, make_vexpf, run_vexpf_both,
    {{"y vs oracle", KT_ULP, 2.0, measure_ulp, 0}, /* both within 1.2 ulp of exact: <= 2 apart */
     {"y vs double exp (normal results)", KT_ULP, (double)AB_EXPF_MAX_ULP, measure_vexpf_exact, 0},
     {"in place = out of place", KT_BITS, 0.0, measure_in_place, 0}}};

/* NaN in -> NaN out, +-inf, overflow, underflow, the range ends, 0: at every position of a vector
 * (head, middle, masked or buffered tail). Variant v puts the specials from position 3 v on. */
static size_t make_vexpf_special(kt_case *c, ab_rng *rng) {
    (void)rng;
    const float sp[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 88.7f, AB_EXPF_MAX_X,
                        nextafterf(AB_EXPF_MAX_X, INFINITY), 89.0f, 1e30f, -1e30f, -FLT_MAX,
                        FLT_MAX, AB_EXPF_MIN_NORMAL_X, nextafterf(AB_EXPF_MIN_NORMAL_X, -INFINITY),
                        -103.97f, -103.972084045410f, -103.98f, -104.0f, -150.0f, 1e-30f, -1e-30f};
    exp_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c), pos = 3 * (size_t)c->variant;
    in->x = kt_floats(c, n);
    for (size_t i = 0; i < n; i++) in->x[i] = 0.25f * (float)i - 4.0f;
    for (size_t s = 0; s < sizeof sp / sizeof sp[0]; s++)
        in->x[(pos + 5 * s) % n] = sp[s]; /* 5, 37 coprime */
    c->in = in;
    return n;
}

/* Every float of [-104.5, -103.972084) (variant 0: exp is +0) or (AB_EXPF_MAX_X, 89.5] (variant 1:
 * +inf). The SIMD paths clamp x to [-104, 89] and rely on the arithmetic giving exactly 0 and
 * +inf there. */
static size_t make_vexpf_clamp(kt_case *c, ab_rng *rng) {
    (void)rng;
    float lo = c->variant ? nextafterf(AB_EXPF_MAX_X, INFINITY) : -104.5f;
    float end = c->variant ? nextafterf(89.5f, INFINITY) : -103.972084045410f;
    size_t n = 0;
    for (float v = lo; v < end; v = nextafterf(v, INFINITY)) n++;
    assert_true(n > 1000 && n < 160000);
    exp_in *in = kt_mem(c, sizeof *in);
    in->x = kt_floats(c, n);
    n = 0;
    for (float v = lo; v < end; v = nextafterf(v, INFINITY)) in->x[n++] = v;
    c->in = in;
    return n;
}

/* NaN -> NaN; +inf and x > AB_EXPF_MAX_X -> +inf; x < -103.972084 -> +0 exactly; 0 -> 1 */
static double measure_vexpf_properties(const kt_case *c) {
    const exp_in *in = c->in;
    double bad = 0.0;
    for (size_t i = 0; i < c->n_out; i++) {
        float x = in->x[i], y = c->got[i];
        if (isnan(x)) bad += !isnan(y);
        if (x == INFINITY || x > AB_EXPF_MAX_X) bad += y != INFINITY;
        if (x < -103.972084045410f) bad += f2u(y) != 0u;
        if (x == 0.0f) bad += y != 1.0f;
    }
    return bad;
}

static const kt_op OP_VEXPF_SPECIAL = {
    "vexpf special values", 13, make_vexpf_special, run_vexpf,
    {{"y vs oracle", KT_ULP, 2.0, measure_ulp, 0}, /* as for vexpf */
     {"NaN, inf, overflow, underflow, exp(0)", KT_PROPERTY, 0.0, measure_vexpf_properties, 0}}};

static const kt_op OP_VEXPF_CLAMP = {
    "vexpf clamp ranges", 2, make_vexpf_clamp, run_vexpf,
    {{"y vs oracle", KT_ULP, 2.0, measure_ulp, 0}, /* as for vexpf */
     {"+0 below -103.972084, +inf above AB_EXPF_MAX_X", KT_PROPERTY, 0.0, measure_vexpf_properties,
      0}}};

/* Each SIMD path runs its own kernels: exp of values where the FMA and the scalar rounding differ
 * must differ somewhere (otherwise this file would be testing the scalar path twice). */
static size_t make_vexpf_spread(kt_case *c, ab_rng *rng) {
    exp_in *in = kt_mem(c, sizeof *in);
    in->x = kt_floats(c, kt_len(c));
    tu_fill_uniform(in->x, kt_len(c), -80.0f, 80.0f, rng);
    c->in = in;
    return kt_len(c);
}

static double measure_differs_from_oracle(const kt_case *c) {
    return memcmp(c->got, c->want, c->n_out * sizeof(float)) == 0 ? 1.0 : 0.0;
}

static const kt_op OP_PATHS_DISTINCT = {
    "paths are distinct (vexpf)", 0, make_vexpf_spread, run_vexpf,
    {{"y identical to the oracle's bits", KT_PROPERTY, 0.0, measure_differs_from_oracle, 1}}};

/* ---------------------------------------------------------------------------------------------- */
/* softmax, softmax backward, log-softmax                                                         */

typedef struct softmax_in {
    float *x;
    int causal;
} softmax_in;

/* Variant: causal (bit 1) x spread (bit 0). Spread 30: terms span e^-60 .. 1; spread 3000: huge
 * logits, most terms 0. */
static size_t make_softmax(kt_case *c, ab_rng *rng) {
    softmax_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    float spread = (c->variant & 1) ? 3000.0f : 30.0f;
    in->x = kt_floats(c, n);
    in->causal = c->variant >> 1;
    tu_fill_uniform(in->x, n, -spread, spread, rng);
    c->in = in;
    return 2 * n;
}

/* [out of place | in place] */
static void run_softmax(const kt_case *c, float *out) {
    const softmax_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c);
    assert_int_equal(ab_softmax(out, in->x, rows, cols, in->causal), AB_OK);
    memcpy(out + n, in->x, n * sizeof(float));
    assert_int_equal(ab_softmax(out + n, out + n, rows, cols, in->causal), AB_OK);
}

static int softmax_valid(const kt_case *c, int r) {
    const softmax_in *in = c->in;
    return in->causal ? r + c->shape.cols - c->shape.rows + 1 : c->shape.cols;
}

/* Unmasked outputs relative to the output, with a floor of 1e-30 so outputs that are (sub)normal
 * crumbs of exp compare absolutely; and |row sum - 1| / (valid + 8). */
static double measure_softmax(const kt_case *c) {
    double worst = 0.0;
    for (int r = 0; r < c->shape.rows; r++) {
        double row_sum = 0.0;
        for (int j = 0; j < softmax_valid(c, r); j++) {
            size_t k = (size_t)r * c->shape.cols + j;
            tu_worst(&worst, rel(c->got[k], c->want[k], fabs(c->want[k]) + 1e-30));
            row_sum += c->got[k];
        }
        tu_worst(&worst, fabs(row_sum - 1.0) / (double)(softmax_valid(c, r) + 8)); /* sums to 1 */
    }
    return worst;
}

static double measure_softmax_masked(const kt_case *c) { /* masked entries: exactly +0 */
    double bad = 0.0;
    for (int r = 0; r < c->shape.rows; r++)
        for (int j = softmax_valid(c, r); j < c->shape.cols; j++)
            bad += f2u(c->got[(size_t)r * c->shape.cols + j]) != 0u;
    return bad;
}

/* Bound: exp differs by <= 2 ulp per term (2.4e-7) and the row sums by the difference of two float
 * summation orders, ~sqrt(n) eps/2 for a sum of n positive random terms (3.8e-6 at n = 4099);
 * 5e-6 covers both (measured ~6e-7). */
#define SOFTMAX_BOUND 5e-6

static const kt_op OP_SOFTMAX = {
    "softmax", 4, make_softmax, run_softmax,
    {{"y vs oracle, rel to |y| + 1e-30; |row sum - 1| / (valid + 8)", KT_REL, SOFTMAX_BOUND,
      measure_softmax, 0},
     {"masked entries are +0", KT_PROPERTY, 0.0, measure_softmax_masked, 0},
     {"in place = out of place", KT_BITS, 0.0, measure_in_place, 0}}};

/* Masking with -inf or -1e30 (what attention masks use), huge logits, NaN. -inf and -1e30 entries
 * give exactly 0; a NaN anywhere in a row makes the whole row NaN (the sum is NaN); a row of all
 * -inf gives exactly +0 everywhere (antibody.h, NON-FINITE VALUES). */
enum { SM_SPECIAL_ROWS = 6, SM_SPECIAL_COLS = 37 };

static size_t make_softmax_special(kt_case *c, ab_rng *rng) {
    softmax_in *in = kt_mem(c, sizeof *in);
    const int C = SM_SPECIAL_COLS;
    float *x = in->x = kt_floats(c, kt_len(c));
    tu_fill_uniform(x, kt_len(c), -5.0f, 5.0f, rng);
    for (int j = 0; j < C; j += 3) x[0 * C + j] = -INFINITY; /* row 0: -inf masking */
    for (int j = 1; j < C; j += 2) x[1 * C + j] = -1e30f;    /* row 1: -1e30 masking */
    x[2 * C + 5] = 3e38f;                                    /* row 2: huge logits */
    x[2 * C + 36] = -3e38f;
    x[2 * C + 20] = 2.9e38f;
    x[3 * C + 33] = NAN;                                     /* row 3: NaN in the tail */
    for (int j = 0; j < C; j++) x[4 * C + j] = -INFINITY;    /* row 4: fully masked */
    for (int j = 0; j < C; j++) x[5 * C + j] = 7.0f;         /* row 5: uniform */
    c->in = in;
    return kt_len(c);
}

static void run_softmax_plain(const kt_case *c, float *out) {
    const softmax_in *in = c->in;
    assert_int_equal(ab_softmax(out, in->x, c->shape.rows, c->shape.cols, 0), AB_OK);
}

static double measure_softmax_all(const kt_case *c) {
    double worst = 0.0;
    for (size_t k = 0; k < c->n_out; k++)
        tu_worst(&worst, rel(c->got[k], c->want[k], fabs(c->want[k]) + 1e-30));
    return worst;
}

static double measure_softmax_special(const kt_case *c) {
    const int C = SM_SPECIAL_COLS;
    const float *y = c->got;
    double bad = 0.0;
    for (int j = 0; j < C; j++) {
        if (j % 3 == 0) bad += y[0 * C + j] != 0.0f;
        if (j % 2 == 1) bad += y[1 * C + j] != 0.0f;
        bad += !isnan(y[3 * C + j]);
        bad += f2u(y[4 * C + j]) != 0u;
        bad += y[5 * C + j] != 1.0f / (float)C; /* exp(0) = 1 exactly */
    }
    bad += !(y[2 * C + 5] > 0.5f && y[2 * C + 36] == 0.0f);
    return bad;
}

/* the bound: softmax's */
static const kt_op OP_SOFTMAX_SPECIAL = {
    "softmax special values", 0, make_softmax_special, run_softmax_plain,
    {{"y vs oracle, rel to |y| + 1e-30", KT_REL, SOFTMAX_BOUND, measure_softmax_all, 0},
     {"-inf/-1e30 -> 0, NaN row, all -inf row +0, uniform row = 1/cols", KT_PROPERTY, 0.0,
      measure_softmax_special, 0}}};

/* Fully masked rows through every row kernel: rows 0, 3, 6, ... are all -inf, the others random.
 * Softmax (also causal, where the row's unmasked part is -inf and the rest random) gives +0,
 * log_softmax -inf, cross-entropy loss +inf and dlogits d0 except d0 - g at the target (softmax 0
 * adds g * 0 = +0 exactly: d0 is never -0). The other rows stay finite. */
typedef struct masked_in {
    float *x, *x_causal, *d0;
    int *targets;
} masked_in;

static int masked_row(int r) { return r % 3 == 0; }

static size_t make_masked_rows(kt_case *c, ab_rng *rng) {
    masked_in *in = kt_mem(c, sizeof *in);
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c);
    in->x = kt_floats(c, n);
    in->x_causal = kt_floats(c, n);
    in->d0 = kt_floats(c, n);
    in->targets = kt_mem(c, (size_t)rows * sizeof(int));
    tu_fill_uniform(in->x, n, -6.0f, 6.0f, rng);
    tu_fill_uniform(in->x_causal, n, -6.0f, 6.0f, rng);
    tu_fill_uniform(in->d0, n, 0.5f, 1.0f, rng);
    for (int r = 0; r < rows; r++) {
        in->targets[r] = (int)ab_rng_below(rng, (uint32_t)cols);
        if (!masked_row(r)) continue;
        for (int j = 0; j < cols; j++) in->x[(size_t)r * cols + j] = -INFINITY;
        for (int j = 0; j <= r + cols - rows; j++) in->x_causal[(size_t)r * cols + j] = -INFINITY;
    }
    c->in = in;
    return 4 * n + (size_t)rows;
}

#define MASKED_DSCALE 0.25f

/* [softmax | causal softmax | log_softmax | dlogits | losses] */
static void run_masked_rows(const kt_case *c, float *out) {
    const masked_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c);
    assert_int_equal(ab_softmax(out, in->x, rows, cols, 0), AB_OK);
    assert_int_equal(ab_softmax(out + n, in->x_causal, rows, cols, 1), AB_OK);
    assert_int_equal(ab_log_softmax(out + 2 * n, in->x, rows, cols), AB_OK);
    memcpy(out + 3 * n, in->d0, n * sizeof(float));
    assert_int_equal(ab_cross_entropy(out + 4 * n, out + 3 * n, in->x, in->targets, NULL, rows, cols,
                                      MASKED_DSCALE), AB_OK);
}

static double measure_masked_rows(const kt_case *c) {
    const masked_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c);
    double bad = 0.0;
    for (int r = 0; r < rows; r++) {
        size_t row = (size_t)r * cols;
        if (!masked_row(r)) {
            for (int j = 0; j < cols; j++)
                for (int k = 0; k < 4; k++) bad += !isfinite(c->got[k * n + row + j]);
            bad += !isfinite(c->got[4 * n + r]);
            continue;
        }
        for (int j = 0; j < cols; j++) {
            float d = j == in->targets[r] ? in->d0[row + j] - MASKED_DSCALE : in->d0[row + j];
            bad += f2u(c->got[row + j]) != 0u;
            bad += f2u(c->got[n + row + j]) != 0u;
            bad += c->got[2 * n + row + j] != -INFINITY;
            bad += f2u(c->got[3 * n + row + j]) != f2u(d);
        }
        bad += c->got[4 * n + r] != INFINITY;
    }
    return bad;
}

static const kt_op OP_MASKED_ROWS = {
    "softmax, log_softmax, cross_entropy fully masked rows", 0, make_masked_rows, run_masked_rows,
    {{"-inf rows: softmax +0, log_softmax -inf, loss +inf, dlogits softmax 0", KT_PROPERTY, 0.0,
      measure_masked_rows, 0}}};

typedef struct softmax_bwd_in {
    float *y, *dy, *dx0;
} softmax_bwd_in;

static size_t make_softmax_backward(kt_case *c, ab_rng *rng) {
    softmax_bwd_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    float *x = kt_floats(c, n);
    in->y = kt_floats(c, n);
    in->dy = kt_floats(c, n);
    in->dx0 = kt_floats(c, n);
    tu_fill_uniform(x, n, -4.0f, 4.0f, rng);
    /* y is the oracle's softmax of x */
    assert_int_equal(ab_softmax(in->y, x, c->shape.rows, c->shape.cols, 0), AB_OK);
    tu_fill_uniform(in->dy, n, -1.0f, 1.0f, rng);
    tu_fill_uniform(in->dx0, n, -1.0f, 1.0f, rng);
    c->in = in;
    return n;
}

static void run_softmax_backward(const kt_case *c, float *out) {
    const softmax_bwd_in *in = c->in;
    memcpy(out, in->dx0, c->n_out * sizeof(float));
    assert_int_equal(ab_softmax_backward(out, in->y, in->dy, c->shape.rows, c->shape.cols), AB_OK);
}

/* dx += y * (dy - sum(y dy)): relative to |dx0| + y (|dy| + sum|y dy|), the terms rounded. */
static double measure_softmax_backward(const kt_case *c) {
    const softmax_bwd_in *in = c->in;
    int cols = c->shape.cols;
    double worst = 0.0;
    for (int r = 0; r < c->shape.rows; r++) {
        size_t row = (size_t)r * cols;
        double abs_dot = 0.0;
        for (int j = 0; j < cols; j++) abs_dot += fabs((double)in->y[row + j] * in->dy[row + j]);
        for (int j = 0; j < cols; j++) {
            size_t k = row + j;
            double scale = fabs(in->dx0[k]) + in->y[k] * (fabs(in->dy[k]) + abs_dot);
            tu_worst(&worst, rel(c->got[k], c->want[k], scale));
        }
    }
    return worst;
}

static const kt_op OP_SOFTMAX_BACKWARD = {
    "softmax_backward", 0, make_softmax_backward, run_softmax_backward,
    /* the dot is a float sum over the row (<= ~cols eps of sum|y dy|); measured ~1e-7 */
    {{"dx vs oracle, rel to |dx0| + y (|dy| + sum|y dy|)", KT_REL, 1e-5, measure_softmax_backward,
      0}}};

/* Variant: spread 8 or 1000. */
static size_t make_log_softmax(kt_case *c, ab_rng *rng) {
    softmax_in *in = kt_mem(c, sizeof *in);
    float spread = c->variant ? 1000.0f : 8.0f;
    in->x = kt_floats(c, kt_len(c));
    tu_fill_uniform(in->x, kt_len(c), -spread, spread, rng);
    c->in = in;
    return 2 * kt_len(c);
}

/* [out of place | in place] */
static void run_log_softmax(const kt_case *c, float *out) {
    const softmax_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c);
    assert_int_equal(ab_log_softmax(out, in->x, rows, cols), AB_OK);
    memcpy(out + n, in->x, n * sizeof(float));
    assert_int_equal(ab_log_softmax(out + n, out + n, rows, cols), AB_OK);
}

static double measure_log_softmax(const kt_case *c) {
    double worst = 0.0;
    for (size_t k = 0; k < kt_len(c); k++)
        tu_worst(&worst, rel(c->got[k], c->want[k], fabs(c->want[k]) + 1.0));
    return worst;
}

static const kt_op OP_LOG_SOFTMAX = {
    "log_softmax", 2, make_log_softmax, run_log_softmax,
    /* y = x - max - log(sum exp(x - max)): absolute error ~ eps |x - max| + the relative error of
     * the row sum (log turns it into an absolute one), so relative to |y| + 1 */
    {{"y vs oracle, rel to |y| + 1", KT_REL, 4e-6, measure_log_softmax, 0},
     {"in place = out of place", KT_BITS, 0.0, measure_in_place, 0}}};

/* ---------------------------------------------------------------------------------------------- */
/* cross-entropy                                                                                  */

typedef struct ce_in {
    float *logits, *d0, *weights;
    int *targets;
    float dscale;
    int use_weights, split_calls;
} ce_in;

/* Variant 0: weights NULL; 1: weights, every third row 0; 2: huge logits; 3: losses only, then
 * gradients only (two calls). */
static size_t make_cross_entropy(kt_case *c, ab_rng *rng) {
    ce_in *in = kt_mem(c, sizeof *in);
    int rows = c->shape.rows, vocab = c->shape.cols;
    size_t n = kt_len(c);
    in->logits = kt_floats(c, n);
    in->d0 = kt_floats(c, n);
    in->weights = kt_floats(c, (size_t)rows);
    in->targets = kt_mem(c, (size_t)rows * sizeof(int));
    float spread = c->variant == 2 ? 2e4f : 6.0f;
    tu_fill_uniform(in->logits, n, -spread, spread, rng);
    tu_fill_uniform(in->d0, n, -0.01f, 0.01f, rng);
    for (int r = 0; r < rows; r++) {
        in->targets[r] = (int)ab_rng_below(rng, (uint32_t)vocab);
        in->weights[r] = (r % 3 == 1) ? 0.0f : 0.5f + ab_rng_uniform(rng);
    }
    in->dscale = 1.0f / (float)rows;
    in->use_weights = c->variant != 0;
    in->split_calls = c->variant == 3;
    c->in = in;
    return (size_t)rows + n;
}

/* [losses (rows) | dlogits (rows x vocab)] */
static void run_cross_entropy(const kt_case *c, float *out) {
    const ce_in *in = c->in;
    int rows = c->shape.rows, vocab = c->shape.cols;
    float *losses = out, *dlogits = out + rows;
    const float *w = in->use_weights ? in->weights : NULL;
    memcpy(dlogits, in->d0, kt_len(c) * sizeof(float));
    if (in->split_calls) {
        assert_int_equal(ab_cross_entropy(losses, NULL, in->logits, in->targets, w, rows, vocab,
                                          in->dscale), AB_OK);
        assert_int_equal(ab_cross_entropy(NULL, dlogits, in->logits, in->targets, w, rows, vocab,
                                          in->dscale), AB_OK);
    } else {
        assert_int_equal(ab_cross_entropy(losses, dlogits, in->logits, in->targets, w, rows, vocab,
                                          in->dscale), AB_OK);
    }
}

static float ce_weight(const ce_in *in, int r) { return in->use_weights ? in->weights[r] : 1.0f; }

static double measure_ce_loss(const kt_case *c) {
    const ce_in *in = c->in;
    double worst = 0.0;
    for (int r = 0; r < c->shape.rows; r++) {
        if (ce_weight(in, r) == 0.0f) continue;
        double x_t = fabs(in->logits[(size_t)r * c->shape.cols + in->targets[r]]);
        tu_worst(&worst, rel(c->got[r], c->want[r], fabs(c->want[r]) + 1.0 + x_t));
    }
    return worst;
}

static double measure_ce_dlogits(const kt_case *c) {
    const ce_in *in = c->in;
    int rows = c->shape.rows, vocab = c->shape.cols;
    double worst = 0.0;
    for (int r = 0; r < rows; r++) {
        if (ce_weight(in, r) == 0.0f) continue;
        double g = fabs((double)in->dscale * ce_weight(in, r));
        for (int j = 0; j < vocab; j++) {
            size_t k = (size_t)r * vocab + j;
            double want = c->want[rows + k], d0 = in->d0[k];
            double p = fabs(want - d0) / g; /* ~ softmax + onehot */
            double scale = fabs(d0) + g * (p + (j == in->targets[r]) + 1e-30);
            tu_worst(&worst, rel(c->got[rows + k], (float)want, scale));
        }
    }
    return worst;
}

/* rows with weight 0: loss exactly +0, dlogits untouched */
static double measure_ce_zero_rows(const kt_case *c) {
    const ce_in *in = c->in;
    int rows = c->shape.rows, vocab = c->shape.cols;
    double bad = 0.0;
    for (int r = 0; r < rows; r++) {
        if (ce_weight(in, r) != 0.0f) continue;
        size_t row = (size_t)r * vocab;
        bad += f2u(c->got[r]) != 0u;
        bad += bits_differ(c->got + rows + row, in->d0 + row, (size_t)vocab);
    }
    return bad;
}

static const kt_op OP_CROSS_ENTROPY = {
    "cross_entropy", 4, make_cross_entropy, run_cross_entropy,
    /* losses: absolute error ~ eps (|max| + |x_t|) + the row sum's relative error, so relative to
     * |loss| + 1 + |x_t|. dlogits: relative to |d0| + |g| (p + onehot), the terms added. */
    {{"loss vs oracle, rel to |loss| + 1 + |x_t|", KT_REL, 1e-5, measure_ce_loss, 0},
     {"dlogits vs oracle, rel to |d0| + |g| (p + onehot)", KT_REL, 2e-5, measure_ce_dlogits, 0},
     {"weight-0 rows: loss +0, dlogits untouched", KT_PROPERTY, 0.0, measure_ce_zero_rows, 0}}};

/* ---------------------------------------------------------------------------------------------- */
/* layernorm                                                                                      */

#define LN_EPS 1e-5f

typedef struct ln_in {
    float *x, *w, *b;
} ln_in;

static size_t make_layernorm(kt_case *c, ab_rng *rng) {
    ln_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c), cols = (size_t)c->shape.cols;
    in->x = kt_floats(c, n);
    in->w = kt_floats(c, cols);
    in->b = kt_floats(c, cols);
    tu_fill_uniform(in->x, n, -2.0f, 3.0f, rng);
    tu_fill_uniform(in->w, cols, -1.5f, 1.5f, rng);
    tu_fill_uniform(in->b, cols, -1.0f, 1.0f, rng);
    c->in = in;
    return 2 * n + 2 * (size_t)c->shape.rows;
}

/* [out | mean (rows) | rstd (rows) | out with mean and rstd NULL (inference)] */
static void run_layernorm(const kt_case *c, float *out) {
    const ln_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c);
    float *mean = out + n, *rstd = mean + rows, *again = rstd + rows;
    const float *x = in->x, *w = in->w, *b = in->b;
    assert_int_equal(ab_layernorm_forward(out, mean, rstd, x, w, b, rows, cols, LN_EPS), AB_OK);
    assert_int_equal(ab_layernorm_forward(again, NULL, NULL, x, w, b, rows, cols, LN_EPS), AB_OK);
}

/* out relative to |w| (|norm| + 1) + |b|, norm from the oracle's mean and rstd */
static double measure_layernorm_out(const kt_case *c) {
    const ln_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    const float *mw = c->want + kt_len(c), *rw = mw + rows;
    double worst = 0.0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)r * cols + j;
            double nrm = fabs(((double)in->x[k] - mw[r]) * rw[r]);
            double scale = fabs(in->w[j]) * (nrm + 1.0) + fabs(in->b[j]);
            tu_worst(&worst, rel(c->got[k], c->want[k], scale));
        }
    return worst;
}

/* mean relative to mean|x|, rstd relative */
static double measure_layernorm_stats(const kt_case *c) {
    const ln_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c);
    double worst = 0.0;
    for (int r = 0; r < rows; r++) {
        double mean_abs = 0.0;
        for (int j = 0; j < cols; j++) mean_abs += fabs(in->x[(size_t)r * cols + j]);
        mean_abs /= cols;
        tu_worst(&worst, rel(c->got[n + r], c->want[n + r], mean_abs));
        float rw = c->want[n + rows + r];
        tu_worst(&worst, rel(c->got[n + rows + r], rw, fabs(rw)));
    }
    return worst;
}

static double measure_layernorm_no_stats(const kt_case *c) {
    size_t n = kt_len(c);
    return bits_differ(c->got + n + 2 * (size_t)c->shape.rows, c->got, n);
}

static const kt_op OP_LAYERNORM_FORWARD = {
    "layernorm_forward", 0, make_layernorm, run_layernorm,
    /* out = (x - mu) rstd w + b: mu and var are float row sums (error ~ cols eps of the
     * magnitudes); measured ~3e-7 */
    {{"out vs oracle, rel to |w| (|norm| + 1) + |b|", KT_REL, 1e-5, measure_layernorm_out, 0},
     {"mean (rel to mean|x|), rstd (rel) vs oracle", KT_REL, 1e-5, measure_layernorm_stats, 0},
     {"mean/rstd NULL: same out", KT_BITS, 0.0, measure_layernorm_no_stats, 0}}};

typedef struct ln_bwd_in {
    float *x, *w, *dout, *mean, *rstd, *dx0, *dw0, *db0;
    int nulls;
} ln_bwd_in;

/* Variant 1: dweight and dbias NULL. */
static size_t make_layernorm_backward(kt_case *c, ab_rng *rng) {
    ln_bwd_in *in = kt_mem(c, sizeof *in);
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c), cn = (size_t)cols;
    float *b = kt_floats(c, cn), *out = kt_floats(c, n);
    in->x = kt_floats(c, n);
    in->w = kt_floats(c, cn);
    in->dout = kt_floats(c, n);
    in->mean = kt_floats(c, (size_t)rows);
    in->rstd = kt_floats(c, (size_t)rows);
    in->dx0 = kt_floats(c, n);
    in->dw0 = kt_floats(c, cn);
    in->db0 = kt_floats(c, cn);
    tu_fill_uniform(in->x, n, -2.0f, 3.0f, rng);
    tu_fill_uniform(in->w, cn, -1.5f, 1.5f, rng);
    tu_fill_uniform(b, cn, -1.0f, 1.0f, rng);
    tu_fill_uniform(in->dout, n, -1.0f, 1.0f, rng);
    tu_fill_uniform(in->dx0, n, -0.5f, 0.5f, rng);
    tu_fill_uniform(in->dw0, cn, -0.5f, 0.5f, rng);
    tu_fill_uniform(in->db0, cn, -0.5f, 0.5f, rng);
    assert_int_equal(ab_layernorm_forward(out, in->mean, in->rstd, in->x, in->w, b, rows, cols,
                                          LN_EPS), AB_OK);
    in->nulls = c->variant;
    c->in = in;
    return n + 2 * cn;
}

/* [dx | dweight | dbias], each accumulated onto its initial value */
static void run_layernorm_backward(const kt_case *c, float *out) {
    const ln_bwd_in *in = c->in;
    int rows = c->shape.rows, cols = c->shape.cols;
    size_t n = kt_len(c), cn = (size_t)cols;
    float *dx = out, *dw = out + n, *db = dw + cn;
    memcpy(dx, in->dx0, n * sizeof(float));
    memcpy(dw, in->dw0, cn * sizeof(float));
    memcpy(db, in->db0, cn * sizeof(float));
    assert_int_equal(ab_layernorm_backward(dx, in->nulls ? NULL : dw, in->nulls ? NULL : db,
                                           in->dout, in->x, in->w, in->mean, in->rstd, rows, cols),
                     AB_OK);
}

/* max |got - want| / max (|want - init| + |init|) over a vector; a NaN is infinitely wrong */
static double normwise(const float *got, const float *want, const float *init, size_t n) {
    double diff = 0.0, mag = 0.0;
    for (size_t j = 0; j < n; j++) {
        if (isnan(got[j])) diff = INFINITY;
        diff = fmax(diff, fabs((double)got[j] - want[j]));
        mag = fmax(mag, fabs((double)want[j] - init[j]) + fabs(init[j]));
    }
    return diff / mag;
}

/* dx per row and dweight: normwise, which bounds sums over the row / over rows without dividing
 * by cancelled entries */
static double measure_layernorm_grads(const kt_case *c) {
    const ln_bwd_in *in = c->in;
    size_t cols = (size_t)c->shape.cols, n = kt_len(c);
    double worst = 0.0;
    for (int r = 0; r < c->shape.rows; r++) {
        size_t row = (size_t)r * cols;
        tu_worst(&worst, normwise(c->got + row, c->want + row, in->dx0 + row, cols));
    }
    tu_worst(&worst, normwise(c->got + n, c->want + n, in->dw0, cols));
    return worst;
}

static double measure_layernorm_dbias(const kt_case *c) {
    size_t off = kt_len(c) + (size_t)c->shape.cols;
    return bits_differ(c->got + off, c->want + off, (size_t)c->shape.cols);
}

static double measure_layernorm_nulls(const kt_case *c) {
    const ln_bwd_in *in = c->in;
    size_t n = kt_len(c), cols = (size_t)c->shape.cols;
    if (!in->nulls) return 0.0;
    return bits_differ(c->got + n, in->dw0, cols) + bits_differ(c->got + n + cols, in->db0, cols);
}

static const kt_op OP_LAYERNORM_BACKWARD = {
    "layernorm_backward", 2, make_layernorm_backward, run_layernorm_backward,
    /* dx, dweight accumulate float sums over the row / over rows; measured ~2e-7 */
    {{"dx (per row), dweight vs oracle, normwise rel", KT_REL, 1e-5, measure_layernorm_grads, 0},
     /* the same float additions in the same order on every path */
     {"dbias = oracle", KT_BITS, 0.0, measure_layernorm_dbias, 0},
     {"NULL dweight/dbias untouched", KT_BITS, 0.0, measure_layernorm_nulls, 0}}};

/* ---------------------------------------------------------------------------------------------- */
/* GELU                                                                                           */

/* References in double, from the float x, in the sigmoid form (1 + tanh u = 2 / (1 + e^-2u)): the
 * tanh form cancels to 0 even in double for u < -19. */
static double gelu_du(double v) { return 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * v * v); }
static double gelu_ref(double v) {
    double u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    return v / (1.0 + exp(-2.0 * u));
}
static double gelu_grad_ref(double v) {
    double u = 0.7978845608028654 * (v + 0.044715 * v * v * v), ch = cosh(u);
    return 1.0 / (1.0 + exp(-2.0 * u)) + 0.5 * v * gelu_du(v) / (ch * ch);
}

typedef struct gelu_in {
    float *x, *dout, *dx0;
} gelu_in;

/* Inputs in [-12, 12] plus a few large ones. */
static size_t make_gelu(kt_case *c, ab_rng *rng) {
    gelu_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    in->x = kt_floats(c, n);
    in->dout = kt_floats(c, n);
    in->dx0 = kt_floats(c, n);
    tu_fill_uniform(in->x, n, -12.0f, 12.0f, rng);
    for (size_t i = 5; i < n; i += 23)
        in->x[i] = (i & 1) ? 3e3f * ab_rng_uniform(rng) : -3e3f * ab_rng_uniform(rng);
    tu_fill_uniform(in->dout, n, -1.0f, 1.0f, rng);
    tu_fill_uniform(in->dx0, n, -1.0f, 1.0f, rng);
    c->in = in;
    return 2 * n;
}

/* [forward | backward accumulated onto dx0] */
static void run_gelu(const kt_case *c, float *out) {
    const gelu_in *in = c->in;
    size_t n = c->n_out / 2;
    assert_int_equal(ab_gelu_forward(out, in->x, n), AB_OK);
    memcpy(out + n, in->dx0, n * sizeof(float));
    assert_int_equal(ab_gelu_backward(out + n, in->x, in->dout, n), AB_OK);
}

static double measure_gelu_forward(const kt_case *c) {
    const gelu_in *in = c->in;
    double worst = 0.0;
    for (size_t i = 0; i < c->n_out / 2; i++)
        tu_worst(&worst, rel(c->got[i], c->want[i], fabs(c->want[i]) + fabs(in->x[i])));
    return worst;
}

static double measure_gelu_backward(const kt_case *c) {
    const gelu_in *in = c->in;
    size_t n = c->n_out / 2;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = in->x[i];
        double scale = fabs(in->dx0[i]) + fabs(in->dout[i]) * (1.0 + fabs(v) * gelu_du(v));
        tu_worst(&worst, rel(c->got[n + i], c->want[n + i], scale));
    }
    return worst;
}

static double measure_gelu_forward_exact(const kt_case *c) {
    const gelu_in *in = c->in;
    double worst = 0.0;
    for (size_t i = 0; i < c->n_out / 2; i++) {
        if (!(fabs(in->x[i]) <= 12.0)) continue;
        double rf = gelu_ref(in->x[i]);
        tu_worst(&worst, fabs(c->got[i] - rf) / (fabs(rf) + 1e-37));
    }
    return worst;
}

/* backward vs double: relative to the accumulated terms */
static double measure_gelu_backward_exact(const kt_case *c) {
    const gelu_in *in = c->in;
    size_t n = c->n_out / 2;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(in->x[i]) <= 12.0)) continue;
        double rb = gelu_grad_ref(in->x[i]), want = in->dx0[i] + in->dout[i] * rb;
        double scale = fabs(in->dx0[i]) + fabs(in->dout[i]) * (fabs(rb) + 1e-7);
        tu_worst(&worst, fabs(c->got[n + i] - want) / scale);
    }
    return worst;
}

/* The scalar oracle's 1 + tanhf(u) keeps only the bits of tanh near -1, an absolute error of ~eps
 * |x| in GELU and ~eps |x| du in its derivative, so vs scalar the error is relative to |want| + |x|
 * (forward) and to |dx0| + |dout| (1 + |x| du) (backward). The SIMD paths use the sigmoid form,
 * so they are also checked against double: relative error <= 2e-5 for |x| <= 12 (exp's 2 ulp grow
 * with |2u| ~ 2e2 in the tail). */
static const kt_op OP_GELU = {
    "gelu", 0, make_gelu, run_gelu,
    {{"forward vs oracle, rel to |y| + |x|", KT_REL, 4.0 * EPS, measure_gelu_forward, 0},
     {"backward vs oracle, rel to |dx0| + |dout| (1 + |x| du)", KT_REL, 4.0 * EPS,
      measure_gelu_backward, 0},
     {"forward vs double (|x| <= 12)", KT_REL, 2e-5, measure_gelu_forward_exact, 1},
     {"backward vs double, rel to the terms (|x| <= 12)", KT_REL, 2e-5, measure_gelu_backward_exact,
      1}}};

/* Large |x|, infinities and NaN: the tanh form's limits (gelu(x) -> x, -> -0) without overflow,
 * and the same non-finite results as the oracle. */
static const float GELU_SPECIAL[] = {1e3f, -1e3f, 1e10f, -1e10f, 1e20f, -1e20f, FLT_MAX, -FLT_MAX,
                                     INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 40.0f, -40.0f, 10.0f,
                                     -10.0f};

static size_t make_gelu_special(kt_case *c, ab_rng *rng) {
    (void)rng;
    gelu_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    assert_true(n == sizeof GELU_SPECIAL / sizeof GELU_SPECIAL[0]);
    in->x = kt_floats(c, n);
    in->dout = kt_floats(c, n);
    in->dx0 = kt_floats(c, n); /* zeros */
    memcpy(in->x, GELU_SPECIAL, sizeof GELU_SPECIAL);
    for (size_t i = 0; i < n; i++) in->dout[i] = 1.0f;
    c->in = in;
    return 2 * n;
}

/* NaN where the oracle has NaN; |x| >= 20: tanh(u) is +-1 in float, gelu is x or 0, its derivative
 * 1 or 0 (or NaN), exactly the oracle's; gelu(1e3) = 1e3, gelu(-1e3) = 0, gelu(inf) = inf. */
static double measure_gelu_special(const kt_case *c) {
    const gelu_in *in = c->in;
    size_t n = c->n_out / 2;
    const float *f = c->got, *b = c->got + n, *wf = c->want, *wb = c->want + n;
    double bad = 0.0;
    for (size_t i = 0; i < n; i++) {
        bad += isnan(f[i]) != isnan(wf[i]);
        bad += isnan(b[i]) != isnan(wb[i]);
        if (isnan(wf[i]) || fabsf(in->x[i]) < 20.0f) continue;
        bad += f[i] != wf[i];
        bad += !(b[i] == wb[i] || (isnan(b[i]) && isnan(wb[i])));
    }
    bad += !(f[0] == 1e3f && f[1] == 0.0f && f[8] == INFINITY);
    return bad;
}

static const kt_op OP_GELU_SPECIAL = {
    "gelu special values", 0, make_gelu_special, run_gelu,
    {{"limits and non-finite results as the oracle's", KT_PROPERTY, 0.0, measure_gelu_special, 0}}};

/* ---------------------------------------------------------------------------------------------- */
/* residual add, AdamW                                                                            */

typedef struct add_in {
    float *a, *b;
} add_in;

static size_t make_add(kt_case *c, ab_rng *rng) {
    add_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    in->a = kt_floats(c, n);
    in->b = kt_floats(c, n);
    tu_fill_uniform(in->a, n, -1e3f, 1e3f, rng);
    tu_fill_uniform(in->b, n, -1.0f, 1.0f, rng);
    if (n > 3) in->a[n - 2] = NAN;
    c->in = in;
    return 3 * n;
}

/* [a + b | da, db: a accumulated with dout = b, in place] */
static void run_add(const kt_case *c, float *out) {
    const add_in *in = c->in;
    size_t n = c->n_out / 3;
    assert_int_equal(ab_residual_forward(out, in->a, in->b, n), AB_OK);
    memcpy(out + n, in->a, n * sizeof(float));
    memcpy(out + 2 * n, in->a, n * sizeof(float));
    assert_int_equal(ab_residual_backward(out + n, out + 2 * n, in->b, n), AB_OK);
}

static double measure_add_backward(const kt_case *c) {
    size_t n = c->n_out / 3;
    return bits_differ(c->got + n, c->want, n) + bits_differ(c->got + 2 * n, c->want, n);
}

static const kt_op OP_ADD = {
    "residual add", 0, make_add, run_add,
    /* one IEEE add per element on every path */
    {{"forward, backward vs oracle", KT_BITS, 0.0, measure_bits, 0},
     {"backward (accumulating in place) = forward", KT_BITS, 0.0, measure_add_backward, 0}}};

enum { ADAMW_STEPS = 3 };

typedef struct adamw_in {
    float *p0, *g; /* g: one gradient per step */
    ab_adamw_cfg cfg;
} adamw_in;

static size_t make_adamw(kt_case *c, ab_rng *rng) {
    adamw_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    in->p0 = kt_floats(c, n);
    in->g = kt_floats(c, ADAMW_STEPS * n);
    tu_fill_uniform(in->p0, n, -1.0f, 1.0f, rng);
    tu_fill_uniform(in->g, ADAMW_STEPS * n, -1.0f, 1.0f, rng);
    if (n > 2) in->g[n + n - 1] = 0.0f; /* step 2, a zero gradient: 0 / (0 + eps) */
    in->cfg = ab_adamw_default();
    in->cfg.lr = 1e-2f;
    in->cfg.weight_decay = 0.1f;
    c->in = in;
    return ADAMW_STEPS * 3 * n;
}

/* [p, m, v after step 1 | after step 2 | after step 3], from p0 and m = v = 0 */
static void run_adamw(const kt_case *c, float *out) {
    const adamw_in *in = c->in;
    size_t n = kt_len(c);
    for (int step = 1; step <= ADAMW_STEPS; step++) {
        float *p = out + (size_t)(step - 1) * 3 * n, *m = p + n, *v = m + n;
        if (step == 1) {
            memcpy(p, in->p0, n * sizeof(float));
            memset(m, 0, 2 * n * sizeof(float));
        } else {
            memcpy(p, p - 3 * n, 3 * n * sizeof(float));
        }
        const float *g = in->g + (size_t)(step - 1) * n;
        assert_int_equal(ab_adamw_step(p, g, m, v, n, step, &in->cfg), AB_OK);
    }
}

/* The paths differ by FMA contractions only, so each of m, v, p is compared relative to the
 * magnitude of the terms that formed it, tracked along the steps from the oracle's state:
 * m_scale = b1 m_scale + (1-b1)|g|; v (a sum of positive terms); and
 * p_scale = |p0| + sum lr (m_scale/bc1 / (sqrt(v/bc2) + eps) + wd |p|). */
static double measure_adamw(const kt_case *c) {
    const adamw_in *in = c->in;
    const ab_adamw_cfg *cfg = &in->cfg;
    size_t n = kt_len(c);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double ms = 0.0, ps = fabs(in->p0[i]);
        for (int step = 1; step <= ADAMW_STEPS; step++) {
            size_t p = (size_t)(step - 1) * 3 * n + i, m = p + n, v = m + n;
            double bc1 = 1.0 - pow(cfg->beta1, step), bc2 = 1.0 - pow(cfg->beta2, step);
            ms = cfg->beta1 * ms + (1.0 - cfg->beta1) * fabs(in->g[(size_t)(step - 1) * n + i]);
            ps += cfg->lr * (ms / bc1 / (sqrt(c->want[v] / bc2) + cfg->eps) +
                             cfg->weight_decay * fabs(c->want[p]));
            tu_worst(&worst, rel(c->got[m], c->want[m], ms + 1e-30));
            tu_worst(&worst, rel(c->got[v], c->want[v], c->want[v] + 1e-30));
            tu_worst(&worst, rel(c->got[p], c->want[p], ps));
        }
    }
    return worst;
}

static const kt_op OP_ADAMW = {
    "adamw", 0, make_adamw, run_adamw,
    /* a few roundings of eps/2 per step, three steps feeding forward */
    {{"p, m, v after each step vs oracle, rel to the terms", KT_REL, 8.0 * EPS, measure_adamw, 0}}};

/* A NaN or +-Inf anywhere in g: AB_ERR_NAN, and p, m, v bit for bit as before the call. Variant
 * 0: NaN first; 1: +Inf in the middle; 2: -Inf last (after the SIMD main loops: the tail). */
typedef struct adamw_bad_in {
    float *p0, *m0, *v0, *g;
} adamw_bad_in;

static size_t make_adamw_nonfinite(kt_case *c, ab_rng *rng) {
    adamw_bad_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    in->p0 = kt_floats(c, n);
    in->m0 = kt_floats(c, n);
    in->v0 = kt_floats(c, n);
    in->g = kt_floats(c, n);
    tu_fill_uniform(in->p0, n, -1.0f, 1.0f, rng);
    tu_fill_uniform(in->m0, n, -0.1f, 0.1f, rng);
    tu_fill_uniform(in->v0, n, 0.0f, 0.01f, rng);
    tu_fill_uniform(in->g, n, -1.0f, 1.0f, rng);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    size_t at[3] = {0, n / 2, n - 1};
    in->g[at[c->variant]] = bad[c->variant];
    c->in = in;
    return 3 * n;
}

/* [p | m | v] after the refused step */
static void run_adamw_nonfinite(const kt_case *c, float *out) {
    const adamw_bad_in *in = c->in;
    size_t n = kt_len(c);
    memcpy(out, in->p0, n * sizeof(float));
    memcpy(out + n, in->m0, n * sizeof(float));
    memcpy(out + 2 * n, in->v0, n * sizeof(float));
    ab_adamw_cfg cfg = ab_adamw_default();
    cfg.weight_decay = 0.1f;
    assert_int_equal(ab_adamw_step(out, in->g, out + n, out + 2 * n, n, 3, &cfg), AB_ERR_NAN);
    assert_non_null(strstr(ab_last_error(), "grads["));
}

static double measure_adamw_untouched(const kt_case *c) {
    const adamw_bad_in *in = c->in;
    size_t n = kt_len(c);
    return bits_differ(c->got, in->p0, n) + bits_differ(c->got + n, in->m0, n) +
           bits_differ(c->got + 2 * n, in->v0, n);
}

static const kt_op OP_ADAMW_NONFINITE = {
    "adamw non-finite gradient", 3, make_adamw_nonfinite, run_adamw_nonfinite,
    {{"AB_ERR_NAN; p, m, v untouched", KT_BITS, 0.0, measure_adamw_untouched, 0}}};

/* ---------------------------------------------------------------------------------------------- */
/* reductions, clipping (scale), SAM step (axpy_save)                                             */

typedef struct reduce_in {
    float *x, *y, *x_nan, *x_inf; /* x_nan, x_inf: x with NaN / inf as its last element */
} reduce_in;

static size_t make_reduce(kt_case *c, ab_rng *rng) {
    reduce_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    in->x = kt_floats(c, n);
    in->y = kt_floats(c, n);
    in->x_nan = kt_floats(c, n);
    in->x_inf = kt_floats(c, n);
    for (size_t i = 0; i < n; i++) {
        in->x[i] = ldexpf(ab_rng_uniform(rng) - 0.5f, (int)ab_rng_below(rng, 40) - 20);
        in->y[i] = ab_rng_uniform(rng) - 0.5f;
    }
    memcpy(in->x_nan, in->x, n * sizeof(float));
    memcpy(in->x_inf, in->x, n * sizeof(float));
    in->x_nan[n - 1] = NAN;
    in->x_inf[n - 1] = INFINITY;
    c->in = in;
    return 4;
}

/* [||x||, x.y, ||x_nan||, ||x_inf||] */
static void run_reduce(const kt_case *c, float *out) {
    const reduce_in *in = c->in;
    size_t n = kt_len(c);
    assert_int_equal(ab_l2_norm(in->x, n, &out[0]), AB_OK);
    assert_int_equal(ab_dot(in->x, in->y, n, &out[1]), AB_OK);
    assert_int_equal(ab_l2_norm(in->x_nan, n, &out[2]), AB_OK);
    assert_int_equal(ab_l2_norm(in->x_inf, n, &out[3]), AB_OK);
}

/* For dot products the order can matter relative to the result when terms cancel, so the bound is
 * relative to |dot| + 2^-30 sum|x y|. */
static double measure_reduce(const kt_case *c) {
    const reduce_in *in = c->in;
    double abs_dot = 0.0, worst = 0.0;
    for (size_t i = 0; i < kt_len(c); i++) abs_dot += fabs((double)in->x[i] * in->y[i]);
    tu_worst(&worst, rel(c->got[0], c->want[0], fabs(c->want[0])));
    tu_worst(&worst, rel(c->got[1], c->want[1], fabs(c->want[1]) + 0x1p-30 * abs_dot));
    return worst;
}

/* NaN / inf in the tail reach the result */
static double measure_reduce_nonfinite(const kt_case *c) {
    return (double)!isnan(c->got[2]) + (double)!isinf(c->got[3]);
}

static const kt_op OP_REDUCE = {
    "l2_norm, dot", 0, make_reduce, run_reduce,
    /* both paths accumulate x*x (exact in double) in double, in different orders, and round to
     * float once: within 1 float ulp of each other */
    {{"norm (rel), dot (rel to |dot| + 2^-30 sum|xy|) vs oracle", KT_REL, EPS, measure_reduce, 0},
     {"NaN -> NaN, inf -> inf", KT_PROPERTY, 0.0, measure_reduce_nonfinite, 0}}};

typedef struct clip_in {
    float *g;
} clip_in;

static size_t make_clip(kt_case *c, ab_rng *rng) {
    clip_in *in = kt_mem(c, sizeof *in);
    in->g = kt_floats(c, kt_len(c));
    tu_fill_uniform(in->g, kt_len(c), -3.0f, 3.0f, rng);
    c->in = in;
    return 1 + kt_len(c);
}

/* [norm before | g clipped to norm 0.125] */
static void run_clip(const kt_case *c, float *out) {
    const clip_in *in = c->in;
    size_t n = kt_len(c);
    memcpy(out + 1, in->g, n * sizeof(float));
    assert_int_equal(ab_clip_grad_norm(out + 1, n, 0.125f, &out[0]), AB_OK);
}

static double measure_clip(const kt_case *c) {
    double worst = rel(c->got[0], c->want[0], fabs(c->want[0]));
    for (size_t i = 1; i < c->n_out; i++)
        tu_worst(&worst, rel(c->got[i], c->want[i], fabs(c->want[i]) + 1e-30));
    return worst;
}

static const kt_op OP_CLIP = {
    "clip_grad_norm (scale)", 0, make_clip, run_clip,
    /* one multiply per element, by a factor that may differ by an ulp between paths (the norm) */
    {{"norm, g vs oracle, rel", KT_REL, 3.0 * EPS, measure_clip, 0}}};

typedef struct sam_in {
    float *th0, *g;
    float rho;
    int with_saved;
} sam_in;

/* Variant 0: no saved copy, rho = 0.05; 1: saved, rho = -0.1. */
static size_t make_sam(kt_case *c, ab_rng *rng) {
    sam_in *in = kt_mem(c, sizeof *in);
    size_t n = kt_len(c);
    in->th0 = kt_floats(c, n);
    in->g = kt_floats(c, n);
    tu_fill_uniform(in->th0, n, -1.0f, 1.0f, rng);
    tu_fill_uniform(in->g, n, -1.0f, 1.0f, rng);
    in->with_saved = c->variant;
    in->rho = c->variant ? -0.1f : 0.05f;
    c->in = in;
    return 1 + 3 * n;
}

/* [||g|| | theta' | saved | theta restored from saved]; without saved, the last two are theta0.
 * saved starts 2 + n floats into its allocation: unaligned for the streaming length. */
static void run_sam(const kt_case *c, float *out) {
    const sam_in *in = c->in;
    size_t n = kt_len(c);
    float *theta = out + 1, *saved = theta + n, *restored = saved + n;
    memcpy(theta, in->th0, n * sizeof(float));
    assert_int_equal(ab_sam_step(theta, in->with_saved ? saved : NULL, in->g, n, in->rho, &out[0]),
                     AB_OK);
    if (!in->with_saved) {
        memcpy(saved, in->th0, n * sizeof(float));
        memcpy(restored, in->th0, n * sizeof(float));
        return;
    }
    memcpy(restored, theta, n * sizeof(float));
    assert_int_equal(ab_sam_restore(restored, saved, n), AB_OK);
}

/* theta' = theta + s g with s = rho / (||g|| + eps) (FMA on the SIMD paths: one rounding instead of
 * two, and s may differ by an ulp through the norm), relative to |theta| + |s g| */
static double measure_sam_theta(const kt_case *c) {
    const sam_in *in = c->in;
    double s = fabs((double)in->rho / c->want[0]), worst = 0.0;
    for (size_t i = 0; i < kt_len(c); i++)
        tu_worst(&worst, rel(c->got[1 + i], c->want[1 + i], fabs(in->th0[i]) + s * fabs(in->g[i])));
    return worst;
}

static double measure_sam_saved(const kt_case *c) { /* saved = theta0 and restore gives it back */
    const sam_in *in = c->in;
    size_t n = kt_len(c);
    return bits_differ(c->got + 1 + n, in->th0, n) + bits_differ(c->got + 1 + 2 * n, in->th0, n);
}

static const kt_op OP_SAM = {
    "sam_step", 2, make_sam, run_sam,
    {{"theta vs oracle, rel to |theta| + |s g|", KT_REL, 2.0 * EPS, measure_sam_theta, 0},
     {"saved = theta, restore = theta", KT_BITS, 0.0, measure_sam_saved, 0}}};

/* ---------------------------------------------------------------------------------------------- */
/* SGEMM, against the GEMM definition in double                                                   */

/* Extra columns in every leading dimension. The kernel reads operands in place when their rows
 * are under 1024 floats apart and packs them otherwise, so tests run with both paddings. */
#define PAD_SMALL 3
#define PAD_PACKED 1029
#define SENTINEL 1234.5f /* value of C's padding, which must survive */

typedef struct gemm_in {
    int ta, tb, m, n, k, lda, ldb, ldc;
    float alpha, beta;
    float *A, *B, *C0; /* C0: C before the call; padding SENTINEL, NaN where beta == 0 */
    double *exact;     /* alpha op(A) op(B) + beta C0 */
    double *scale;     /* gamma_{k+2} (|alpha| sum|a||b| + |beta c|) */
} gemm_in;

static double gemm_a(const gemm_in *g, int i, int p) {
    return g->ta ? g->A[(size_t)p * g->lda + i] : g->A[(size_t)i * g->lda + p];
}
static double gemm_b(const gemm_in *g, int p, int j) {
    return g->tb ? g->B[(size_t)j * g->ldb + p] : g->B[(size_t)p * g->ldb + j];
}

static void gemm_exact(gemm_in *g) {
    double u = (double)FLT_EPSILON / 2.0, gamma = (g->k + 2) * u / (1.0 - (g->k + 2) * u);
    for (int i = 0; i < g->m; i++)
        for (int j = 0; j < g->n; j++) {
            double dot = 0.0, mag = 0.0;
            for (int p = 0; p < g->k; p++) {
                double ab = gemm_a(g, i, p) * gemm_b(g, p, j);
                dot += ab;
                mag += fabs(ab);
            }
            double c0 = g->beta == 0.0f ? 0.0 : (double)g->C0[(size_t)i * g->ldc + j];
            g->exact[(size_t)i * g->n + j] = (double)g->alpha * dot + (double)g->beta * c0;
            g->scale[(size_t)i * g->n + j] =
                gamma * (fabs((double)g->alpha) * mag + fabs(g->beta * c0));
        }
}

/* Random op(A), op(B), C with padded strides; returns the floats of C (m x ldc). */
static size_t gemm_make(kt_case *c, ab_rng *rng, int trans, float alpha, float beta, int pad) {
    gemm_in *g = kt_mem(c, sizeof *g);
    *g = (gemm_in){.ta = trans >> 1, .tb = trans & 1, .m = c->shape.rows, .n = c->shape.cols,
                   .k = c->shape.depth, .alpha = alpha, .beta = beta};
    int a_rows = g->ta ? g->k : g->m, a_cols = g->ta ? g->m : g->k;
    int b_rows = g->tb ? g->n : g->k, b_cols = g->tb ? g->k : g->n;
    g->lda = a_cols + pad;
    g->ldb = b_cols + pad;
    g->ldc = g->n + PAD_SMALL;
    g->A = kt_floats(c, (size_t)a_rows * g->lda);
    g->B = kt_floats(c, (size_t)b_rows * g->ldb);
    g->C0 = kt_floats(c, (size_t)g->m * g->ldc);
    g->exact = kt_mem(c, (size_t)g->m * g->n * sizeof(double));
    g->scale = kt_mem(c, (size_t)g->m * g->n * sizeof(double));
    tu_fill_uniform(g->A, (size_t)a_rows * g->lda, -1.0f, 1.0f, rng);
    tu_fill_uniform(g->B, (size_t)b_rows * g->ldb, -1.0f, 1.0f, rng);
    for (int i = 0; i < g->m; i++)
        for (int j = 0; j < g->ldc; j++)
            g->C0[(size_t)i * g->ldc + j] =
                j >= g->n ? SENTINEL : beta == 0.0f ? NAN : 2.0f * ab_rng_uniform(rng) - 1.0f;
    gemm_exact(g);
    c->in = g;
    return (size_t)g->m * g->ldc;
}

/* (alpha, beta): overwrite, accumulate, general, scaled overwrite, general, and a negative alpha
 * over a NaN-filled C (which beta == 0 must ignore) */
static const float GEMM_SCALINGS[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f},   {-0.5f, 2.0f},
                                         {2.0f, 0.0f}, {0.75f, -0.25f}, {-3.0f, 0.0f}};
#define N_SCALINGS 6

/* Variant: transposes (v / N_SCALINGS: nn, nt, tn, tt) x scaling (v % N_SCALINGS). */
static size_t make_sgemm(kt_case *c, ab_rng *rng) {
    const float *ab = GEMM_SCALINGS[c->variant % N_SCALINGS];
    return gemm_make(c, rng, c->variant / N_SCALINGS, ab[0], ab[1], PAD_SMALL);
}
static size_t make_sgemm_packed(kt_case *c, ab_rng *rng) {
    const float *ab = GEMM_SCALINGS[c->variant % N_SCALINGS];
    return gemm_make(c, rng, c->variant / N_SCALINGS, ab[0], ab[1], PAD_PACKED);
}

static void gemm_call(const gemm_in *g, float *C) {
    memcpy(C, g->C0, (size_t)g->m * g->ldc * sizeof(float));
    assert_int_equal(ab_sgemm(g->ta ? AB_TRANS : AB_NO_TRANS, g->tb ? AB_TRANS : AB_NO_TRANS, g->m,
                              g->n, g->k, g->alpha, g->A, g->lda, g->B, g->ldb, g->beta, C, g->ldc),
                     AB_OK);
}

static void run_sgemm(const kt_case *c, float *out) { gemm_call(c->in, out); }

/* the first C of the output against the definition; a bound of 0 (all terms 0) allows only 0 */
static double measure_gemm(const kt_case *c) {
    const gemm_in *g = c->in;
    double worst = 0.0;
    for (int i = 0; i < g->m; i++)
        for (int j = 0; j < g->n; j++) {
            size_t e = (size_t)i * g->n + j;
            double err = fabs((double)c->got[(size_t)i * g->ldc + j] - g->exact[e]);
            tu_worst(&worst, g->scale[e] > 0 ? err / g->scale[e] : (err == 0 ? 0.0 : 2.0));
        }
    return worst;
}

/* every C of the output (one per thread count for the threads op) */
static int gemm_copies(const kt_case *c) {
    const gemm_in *g = c->in;
    return (int)(c->n_out / ((size_t)g->m * g->ldc));
}

static double measure_gemm_padding(const kt_case *c) { /* columns n .. ldc-1 of C untouched */
    const gemm_in *g = c->in;
    double bad = 0.0;
    for (int r = 0; r < gemm_copies(c) * g->m; r++)
        for (int j = g->n; j < g->ldc; j++) bad += c->got[(size_t)r * g->ldc + j] != SENTINEL;
    return bad;
}

static double measure_gemm_no_nan(const kt_case *c) { /* C's NaN must not leak (beta == 0) */
    const gemm_in *g = c->in;
    double bad = 0.0;
    for (int r = 0; r < gemm_copies(c) * g->m; r++)
        for (int j = 0; j < g->n; j++) bad += isnan(c->got[(size_t)r * g->ldc + j]);
    return bad;
}

#define GEMM_CHECKS                                                                                \
    {"C vs the definition in double", KT_GEMM, 1.0, measure_gemm, 0},                             \
        {"C padding untouched", KT_PROPERTY, 0.0, measure_gemm_padding, 0},                        \
        {"no NaN in C (from NaN C0 when beta = 0)", KT_PROPERTY, 0.0, measure_gemm_no_nan, 0}

/* KT_GEMM's bound 1 is the rigorous gamma_{k+2} bound of every path (header comment). */
static const kt_op OP_SGEMM = {"sgemm", 4 * N_SCALINGS, make_sgemm, run_sgemm, {GEMM_CHECKS}};
static const kt_op OP_SGEMM_PACKED = {"sgemm packed", 4 * N_SCALINGS, make_sgemm_packed, run_sgemm,
                                      {GEMM_CHECKS}};

/* Variant: transposes (v % 4) x operands in place / packed (v / 4); alpha 1.5, beta 0.5. */
static size_t make_sgemm_threads(kt_case *c, ab_rng *rng) {
    int pad = c->variant < 4 ? PAD_SMALL : PAD_PACKED;
    return 4 * gemm_make(c, rng, c->variant % 4, 1.5f, 0.5f, pad);
}

/* The nested call: chunk 0 of a 2-chunk ab_parallel_for runs the GEMM (which then gets one thread). */
static ab_status gemm_in_chunk(void *ctx, int chunk, int slot) {
    void **args = (void **)ctx;
    (void)slot;
    if (chunk == 0) gemm_call((const gemm_in *)args[0], (float *)args[1]);
    return AB_OK;
}

/* [C on 1 thread | 2 | 3 | 2 asked for from inside a parallel chunk, which runs on one thread] */
static void run_sgemm_threads(const kt_case *c, float *out) {
    const gemm_in *g = c->in;
    size_t count = (size_t)g->m * g->ldc;
    int saved_threads = ab_get_threads();
    for (int t = 0; t < 4; t++) {
        float *C = out + (size_t)t * count;
        assert_int_equal(ab_set_threads(t == 3 ? 2 : t + 1), AB_OK);
        if (t < 3) {
            gemm_call(g, C);
            continue;
        }
        void *args[2] = {(void *)g, C};
        assert_int_equal(ab_parallel_for(2, gemm_in_chunk, args), AB_OK);
    }
    assert_int_equal(ab_set_threads(saved_threads), AB_OK);
}

static double measure_gemm_threads(const kt_case *c) {
    size_t count = c->n_out / 4;
    double bad = 0.0;
    for (int t = 1; t < 4; t++) bad += bits_differ(c->got + (size_t)t * count, c->got, count);
    return bad;
}

static const kt_op OP_SGEMM_THREADS = {
    "sgemm threads", 8, make_sgemm_threads, run_sgemm_threads,
    /* each C element lies in the same register tile whatever the thread count (kernels/gemm.h) */
    {{"C on 2, 3 and nested threads = C on 1", KT_BITS, 0.0, measure_gemm_threads, 0},
     GEMM_CHECKS}};

/* ab_linear_forward: out = x W^T + bias (+ residual), gelu_out = GELU(out), fused in the GEMM's
 * output pass, against the unfused sequence on the same path (bias preset, ab_sgemm beta 1,
 * ab_residual_forward, ab_gelu_forward): the same bits. Variant: (bias, residual, GELU) in
 * {none, bias, bias + residual, bias + GELU, all} x threads {1, 2}. Shapes: m x d_out x d_in. */
typedef struct linear_in {
    int rows, d_in, d_out, ldo, bias, resid, gelu, threads;
    float *x, *W, *b, *r;
} linear_in;

static size_t make_linear(kt_case *c, ab_rng *rng) {
    static const int feats[5][3] = {{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {1, 0, 1}, {1, 1, 1}};
    linear_in *l = kt_mem(c, sizeof *l);
    const int *f = feats[c->variant % 5];
    *l = (linear_in){.rows = c->shape.rows, .d_out = c->shape.cols, .d_in = c->shape.depth,
                     .bias = f[0], .resid = f[1], .gelu = f[2], .threads = 1 + c->variant / 5};
    l->ldo = l->d_out + PAD_SMALL;
    l->x = kt_floats(c, (size_t)l->rows * l->d_in);
    l->W = kt_floats(c, (size_t)l->d_out * l->d_in);
    l->b = kt_floats(c, (size_t)l->d_out);
    l->r = kt_floats(c, (size_t)l->rows * l->ldo);
    tu_fill_uniform(l->x, (size_t)l->rows * l->d_in, -2.0f, 2.0f, rng);
    tu_fill_uniform(l->W, (size_t)l->d_out * l->d_in, -1.0f, 1.0f, rng);
    tu_fill_uniform(l->b, (size_t)l->d_out, -1.0f, 1.0f, rng);
    tu_fill_uniform(l->r, (size_t)l->rows * l->ldo, -1.0f, 1.0f, rng);
    c->in = l;
    return 4 * (size_t)l->rows * l->ldo;
}

/* [out fused | gelu fused | out unfused | gelu unfused], padding columns SENTINEL */
static void run_linear(const kt_case *c, float *out) {
    const linear_in *l = c->in;
    size_t count = (size_t)l->rows * l->ldo;
    for (size_t i = 0; i < 4 * count; i++) out[i] = SENTINEL;
    int saved = ab_get_threads();
    assert_int_equal(ab_set_threads(l->threads), AB_OK);
    float *o = out, *g = out + count, *o2 = out + 2 * count, *g2 = out + 3 * count;
    assert_int_equal(ab_linear_forward(o, l->ldo, l->x, l->W, l->bias ? l->b : NULL,
                                       l->resid ? l->r : NULL, l->gelu ? g : NULL, l->rows, l->d_in,
                                       l->d_out),
                     AB_OK);
    for (int i = 0; i < l->rows; i++)
        for (int j = 0; j < l->d_out; j++) o2[(size_t)i * l->ldo + j] = l->bias ? l->b[j] : 0.0f;
    assert_int_equal(ab_sgemm(AB_NO_TRANS, AB_TRANS, l->rows, l->d_out, l->d_in, 1.0f, l->x, l->d_in,
                              l->W, l->d_in, 1.0f, o2, l->ldo),
                     AB_OK);
    for (int i = 0; i < l->rows; i++) {
        float *row = o2 + (size_t)i * l->ldo;
        if (l->resid)
            assert_int_equal(ab_residual_forward(row, row, l->r + (size_t)i * l->ldo, (size_t)l->d_out), AB_OK);
        if (l->gelu)
            assert_int_equal(ab_gelu_forward(g2 + (size_t)i * l->ldo, row, (size_t)l->d_out), AB_OK);
    }
    assert_int_equal(ab_set_threads(saved), AB_OK);
}

static double measure_linear_fused(const kt_case *c) { /* fused == unfused, padding included */
    size_t half = c->n_out / 2;
    return bits_differ(c->got, c->got + half, half);
}

static double measure_linear_oracle(const kt_case *c) { /* out vs the scalar oracle's, relative */
    const linear_in *l = c->in;
    double worst = 0.0;
    for (int i = 0; i < l->rows; i++)
        for (int j = 0; j < l->d_out; j++) {
            size_t e = (size_t)i * l->ldo + j;
            tu_worst(&worst, fabs((double)c->got[e] - (double)c->want[e]) / (1.0 + fabs((double)c->want[e])));
        }
    return worst;
}

static const kt_op OP_LINEAR = {
    "linear forward (fused)", 10, make_linear, run_linear,
    {{"fused out and GELU = bias preset + sgemm + add + gelu, same path", KT_BITS, 0.0,
      measure_linear_fused, 0},
     /* the paths' FMA chains differ from the oracle's (k <= 600, |x| <= 2, |W| <= 1) */
     {"out vs the scalar oracle, rel to 1 + |out|", KT_REL, 1e-4, measure_linear_oracle, 0}}};


/* ---------------------------------------------------------------------------------------------- */
/* The ghost per-sample norm kernel (ab_psnorm_linear, AB_PSNORM_GHOST)                           */

typedef struct ghost_in {
    float *A, *G;
    double scale; /* S (2.1 (d_in + d_out) + 1) eps */
} ghost_in;

/* Normal entries with a per-token scale 2^[-3, 3]: tokens of very different size, as in a net. */
static void fill_tokens(float *x, int rows, int cols, ab_rng *rng) {
    for (int t = 0; t < rows; t++) {
        float s = ldexpf(1.0f, (int)ab_rng_below(rng, 7) - 3);
        for (int j = 0; j < cols; j++) x[(size_t)t * cols + j] = s * ab_rng_normal(rng);
    }
}

/* S = sum_{t,s} (sum_k |a_tk a_sk|) (sum_k |g_tk g_sk|) */
static double ghost_magnitude(const float *A, const float *G, int T, int d_in, int d_out) {
    double S = 0.0;
    for (int t = 0; t < T; t++)
        for (int u = 0; u < T; u++) {
            double sa = 0.0, sg = 0.0;
            for (int k = 0; k < d_in; k++) sa += fabs((double)A[t * d_in + k] * A[u * d_in + k]);
            for (int k = 0; k < d_out; k++) sg += fabs((double)G[t * d_out + k] * G[u * d_out + k]);
            S += sa * sg;
        }
    return S;
}

/* one sample of T tokens: A is T x d_in, G is T x d_out */
static size_t make_ghost(kt_case *c, ab_rng *rng) {
    ghost_in *in = kt_mem(c, sizeof *in);
    int T = c->shape.rows, d_in = c->shape.cols, d_out = c->shape.depth;
    in->A = kt_floats(c, (size_t)T * d_in);
    in->G = kt_floats(c, (size_t)T * d_out);
    fill_tokens(in->A, T, d_in, rng);
    fill_tokens(in->G, T, d_out, rng);
    in->scale = ghost_magnitude(in->A, in->G, T, d_in, d_out) * (2.1 * (d_in + d_out) + 1.0) * EPS;
    c->in = in;
    return 1;
}

static void run_ghost(const kt_case *c, float *out) {
    const ghost_in *in = c->in;
    out[0] = 0.0f; /* the norm is added to what is there */
    assert_int_equal(ab_psnorm_linear(out, NULL, in->A, in->G, 1, c->shape.rows, c->shape.cols,
                                      c->shape.depth, AB_PSNORM_GHOST), AB_OK);
}

static double measure_ghost(const kt_case *c) {
    const ghost_in *in = c->in;
    return rel(c->got[0], c->want[0], in->scale);
}

/* Each float Gram entry of either path is within gamma_d = d eps / (1 - d eps) of the exact one
 * relative to its sum of |terms|, the products and their sum are in double, so the paths differ by
 * at most ~2 (d_in + d_out) eps relative to S (5% slack for the first-order expansion), plus the
 * one float rounding of each result (<= eps/2 of S each): the scale, bound 1. */
static const kt_op OP_GHOST = {
    "psnorm ghost kernel", 0, make_ghost, run_ghost,
    {{"||grad W||^2 vs oracle, rel to S (2.1 (d_in + d_out) + 1) eps", KT_REL, 1.0, measure_ghost,
      0}}};

/* ---------------------------------------------------------------------------------------------- */
/* Shapes                                                                                         */

static int kt_put(kt_shape *out, int n, int rows, int cols, int depth) {
    assert_true(n < KT_MAX_SHAPES);
    out[n] = (kt_shape){rows, cols, depth};
    return n + 1;
}

static const int LENS[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 4099};
#define N_LENS ((int)(sizeof LENS / sizeof LENS[0]))

static int shapes_lens(kt_shape *out) {
    int n = 0;
    for (int i = 0; i < N_LENS; i++) n = kt_put(out, n, 1, LENS[i], 0);
    return n;
}

/* LENS and one length above them (AdamW) */
static int shapes_lens_big(kt_shape *out) {
    return kt_put(out, shapes_lens(out), 1, TU_SIZE(100003, 5003), 0);
}

/* LENS and one length above the SIMD paths' streaming-store threshold (4M floats): the aligned
 * head, the streaming middle and the tail all run (SAM) */
static int shapes_lens_stream(kt_shape *out) {
    return kt_put(out, shapes_lens(out), 1, TU_SIZE((1 << 22) + 37, 5003), 0);
}

/* LENS plus lengths around the reduction block and several blocks */
static int shapes_reduce(kt_shape *out) {
    int n = shapes_lens(out);
    n = kt_put(out, n, 1, AB_REDUCE_BLOCK - 1, 0);
    n = kt_put(out, n, 1, AB_REDUCE_BLOCK, 0);
    n = kt_put(out, n, 1, AB_REDUCE_BLOCK + 1, 0);
    return kt_put(out, n, 1, 3 * AB_REDUCE_BLOCK + 29, 0);
}

/* Row kernels: odd and even column counts around the widths; rows <= cols so every shape also runs
 * causal. */
static int shapes_rows(kt_shape *out) {
    static const int rc[][2] = {{1, 1},  {3, 7},  {4, 8},   {5, 9},   {6, 15},   {2, 16},  {7, 17},
                                {9, 31}, {3, 33}, {33, 33}, {17, 65}, {4, 1000}, {3, 1025}};
    int n = 0;
    for (size_t i = 0; i < sizeof rc / sizeof rc[0]; i++) n = kt_put(out, n, rc[i][0], rc[i][1], 0);
    return n;
}

static int shapes_exp_special(kt_shape *out) { return kt_put(out, 0, 1, 37, 0); } /* 2 x 16 + 5 */
static int shapes_clamp(kt_shape *out) { return kt_put(out, 0, 1, 0, 0); } /* length: the range */
static int shapes_distinct(kt_shape *out) { return kt_put(out, 0, 1, 4096, 0); }
static int shapes_softmax_special(kt_shape *out) {
    return kt_put(out, 0, SM_SPECIAL_ROWS, SM_SPECIAL_COLS, 0);
}
static int shapes_gelu_special(kt_shape *out) {
    return kt_put(out, 0, 1, (int)(sizeof GELU_SPECIAL / sizeof GELU_SPECIAL[0]), 0);
}

static int kt_put_list(kt_shape *out, int n, const int (*mnk)[3], int count) {
    for (int i = 0; i < count; i++) n = kt_put(out, n, mnk[i][0], mnk[i][1], mnk[i][2]);
    return n;
}

/* SGEMM, operands in place: tiny shapes; MR and NR edges of both ISAs (AVX-512 14 x 32, AVX2
 * 6 x 16), small k; KC edges of both ISAs with beta != 0, which the later KC blocks must not
 * re-apply (AVX-512, KC = 512: k = 511 and 512 one block, 513 two balanced blocks, 1025 three;
 * AVX2, KC = 384: 383 and 384 one block, 385 two, 769 three); NC edges n = 255 / 256 / 257
 * (AVX-512) and 511 / 512 / 513 (AVX2) and MC edges m = 2015 / 2016 / 2017, around one block. */
static int shapes_gemm(kt_shape *out) {
    static const int tiny[][3] = {{1, 1, 1}, {1, 1, 5}, {1, 7, 1},  {7, 1, 1},  {2, 3, 4},
                                  {3, 2, 1}, {5, 5, 5}, {1, 40, 3}, {40, 1, 3}, {9, 17, 2}};
    static const int tile[][3] = {
        {13, 31, 9},  {14, 32, 9},  {15, 33, 9}, {29, 64, 3}, {28, 65, 4}, /* AVX-512 MR, NR */
        {5, 15, 8},   {6, 16, 8},   {7, 17, 8},  {12, 48, 5}, {19, 47, 6}, /* AVX2 MR, NR */
        {1, 100, 11}, {100, 1, 11}, {43, 21, 1}, {31, 47, 19}};
    int m = TU_SIZE(17, 15), n = TU_SIZE(35, 33), k = TU_SIZE(24, 5), other = TU_SIZE(29, 15);
    const int kc[][3] = {{m, n, 383}, {m, n, 384}, {m, n, 385}, {m, n, 511},
                         {m, n, 512}, {m, n, 513}, {m, n, 769}, {m, n, 1025}};
    const int nc_mc[][3] = {{other, 255, k},  {other, 256, k},  {other, 257, k},
                            {other, 511, k},  {other, 512, k},  {other, 513, k},
                            {2015, other, k}, {2016, other, k}, {2017, other, k}};
    int count = kt_put_list(out, 0, tiny, 10);
    count = kt_put_list(out, count, tile, 14);
    count = kt_put_list(out, count, kc, 8);
    return kt_put_list(out, count, nc_mc, 9);
}

/* SGEMM, operands packed (leading dimensions >= 1024): register-tile, KC and NC edges and a
 * medium shape. */
static int shapes_gemm_packed(kt_shape *out) {
    const int mnk[][3] = {{13, 31, 9}, {15, 33, 9}, {7, 17, 8}, {1, 1, 1},
                          {TU_SIZE(17, 15), TU_SIZE(35, 33), 385},
                          {TU_SIZE(17, 15), TU_SIZE(35, 33), 513},
                          {TU_SIZE(29, 15), 257, TU_SIZE(24, 5)},
                          {TU_SIZE(29, 15), 513, TU_SIZE(24, 5)},
                          {TU_SIZE(130, 45), TU_SIZE(150, 70), TU_SIZE(170, 100)}};
    return kt_put_list(out, 0, mnk, 9);
}

/* All above the kernel's 1M multiply-add threading threshold: rows split (two KC blocks on both
 * ISAs); rows split, narrow; rows split because n is under two NR panels; columns split (few
 * rows). */
static int shapes_gemm_threads(kt_shape *out) {
    const int mnk[][3] = {{TU_SIZE(150, 100), TU_SIZE(333, 120), TU_SIZE(601, 90)},
                          {TU_SIZE(301, 130), TU_SIZE(70, 60), TU_SIZE(390, 140)},
                          {TU_SIZE(301, 130), TU_SIZE(20, 12), TU_SIZE(390, 700)},
                          {20, TU_SIZE(333, 300), TU_SIZE(401, 200)}};
    return kt_put_list(out, 0, mnk, 4);
}

/* Linear layers: tile edges, a k > KC split (the bias preset only in the first block, the
 * epilogue after the last), and shapes big enough to run on 2 threads. */
static int shapes_linear(kt_shape *out) {
    const int mnk[][3] = {{1, 1, 1},     {13, 31, 9},  {15, 33, 9},          {7, 17, 8},
                          {29, 65, 4},   {19, 47, 6},  {TU_SIZE(17, 15), 35, 600},
                          {TU_SIZE(150, 100), TU_SIZE(333, 120), TU_SIZE(128, 90)}};
    return kt_put_list(out, 0, mnk, 8);
}

/* Ghost kernel: T straddles the register tiles (2 x 4 rows for AVX2, 4 x 4 for AVX-512, rows past
 * T padded) and d the vector widths (8, 16: tails). */
static int shapes_ghost(kt_shape *out) {
    static const int Ts[] = {2, 3, 4, 5, 7, 8, 9, 16, 17, 33};
    static const int ds[] = {1, 7, 8, 9, 15, 16, 17, 33, 64};
    int n = 0;
    for (int ti = 0; ti < 10; ti++)
        for (int di = 0; di < 9; di++) n = kt_put(out, n, Ts[ti], ds[di], ds[(di + 3 + ti) % 9]);
    return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* The table                                                                                      */

static const kt_entry TABLE[] = {
    {&OP_VEXPF, shapes_lens},
    {&OP_VEXPF_SPECIAL, shapes_exp_special},
    {&OP_VEXPF_CLAMP, shapes_clamp},
    {&OP_PATHS_DISTINCT, shapes_distinct},
    {&OP_SOFTMAX, shapes_rows},
    {&OP_SOFTMAX_SPECIAL, shapes_softmax_special},
    {&OP_MASKED_ROWS, shapes_rows},
    {&OP_SOFTMAX_BACKWARD, shapes_rows},
    {&OP_LOG_SOFTMAX, shapes_rows},
    {&OP_CROSS_ENTROPY, shapes_rows},
    {&OP_LAYERNORM_FORWARD, shapes_rows},
    {&OP_LAYERNORM_BACKWARD, shapes_rows},
    {&OP_GELU, shapes_lens},
    {&OP_GELU_SPECIAL, shapes_gelu_special},
    {&OP_ADD, shapes_lens},
    {&OP_ADAMW, shapes_lens_big},
    {&OP_ADAMW_NONFINITE, shapes_lens_big},
    {&OP_REDUCE, shapes_reduce},
    {&OP_CLIP, shapes_lens},
    {&OP_SAM, shapes_lens_stream},
    {&OP_SGEMM, shapes_gemm},
    {&OP_SGEMM_PACKED, shapes_gemm_packed},
    {&OP_SGEMM_THREADS, shapes_gemm_threads},
    {&OP_LINEAR, shapes_linear},
    {&OP_GHOST, shapes_ghost},
};
#define N_ENTRIES (sizeof TABLE / sizeof TABLE[0])

/* ---------------------------------------------------------------------------------------------- */
/* Dispatch outside the table                                                                     */

/* Asking for an ISA the CPU lacks is an error, not a crash. */
static void test_unavailable_isa_refused(void **state) {
    (void)state;
    ab_isa isas[AB_ISA_COUNT];
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        if (ab_cpu_supports((ab_isa)i)) continue;
        assert_int_equal(ab_set_isa((ab_isa)i), AB_ERR_ISA);
        printf("NOTE %s not available here: ab_set_isa returns AB_ERR_ISA\n",
               ab_isa_name((ab_isa)i));
    }
    if (tu_isas(isas) == 1)
        printf("SKIP no SIMD path on this machine: only scalar vs scalar was checked\n");
}

static int teardown_isa(void **state) {
    (void)state;
    ab_set_isa(ab_best_isa());
    return 0;
}

int main(void) {
    struct CMUnitTest tests[N_ENTRIES + 1];
    for (size_t i = 0; i < N_ENTRIES; i++)
        tests[i] =
            (struct CMUnitTest){TABLE[i].op->name, kt_run_entry, NULL, NULL, (void *)&TABLE[i]};
    tests[N_ENTRIES] = (struct CMUnitTest)cmocka_unit_test(test_unavailable_isa_refused);
    int failed = cmocka_run_group_tests_name("kernels", tests, NULL, teardown_isa);
    /* Join the library's worker threads: alive at exit, their thread-local blocks would show up
     * as "possibly lost" under valgrind --leak-check=full. */
    ab_set_threads(1);
    return failed;
}
