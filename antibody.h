/* antibody.h - v0.1.0 - public domain / MIT (see end of file)
 *
 * A single-header C library: scalar, AVX2 and AVX-512 kernels for training small transformers on a
 * CPU, and the reference implementation of the Antibody and Antidote defences against harmful
 * fine-tuning.
 *
 * USING IT
 *   In exactly ONE C or C++ file:
 *       #define ANTIBODY_IMPLEMENTATION
 *       #include "antibody.h"
 *   Everywhere else just #include "antibody.h". Link with -lm. Add -fopenmp for multi-threading
 *   (optional; results are bitwise identical for every thread count). Never build with -ffast-math.
 *   The repository keeps kernels/ next to this file; `make single` writes build/antibody.h, one
 *   self-contained file with the kernels inlined: drop that one into your project.
 *
 * OPTIONS (define before the implementation include)
 *   ANTIBODY_STATIC       every public function becomes static (private copy per translation unit)
 *   AB_MALLOC(sz) / AB_FREE(p)
 *                         your allocator; define both or neither. Aligned buffers (ab_aligned_alloc)
 *                         are carved out of AB_MALLOC, so nothing else needs overriding.
 *   AB_ASSERT(x)          internal invariant checks (default: assert). Never used for input checks:
 *                         bad input returns an ab_status.
 *   AB_NO_SIMD            compile only the scalar kernels.
 *
 * CONVENTIONS
 *   - Every public function returns ab_status (AB_OK == 0). On error, ab_last_error() gives a
 *     human-readable message (thread-local). The library never prints and never exits.
 *   - Matrices are row-major. Shapes are int; negative shapes, NULL pointers where data is needed,
 *     out-of-range ids and inconsistent leading dimensions are errors, never crashes.
 *   - *_backward functions ACCUMULATE (+=) into their gradient outputs, as in llm.c, so gradients
 *     from several uses of a tensor add up. Zero them yourself before a fresh backward pass.
 *   - Runtime dispatch: ab_init() (called lazily) picks the best ISA the CPU *and* the OS support
 *     (CPUID + XCR0). Override with the environment variable AB_ISA=scalar|avx2|avx512 or with
 *     ab_set_isa(); asking for an ISA that is not available is an error (AB_ERR_ISA).
 *     Under valgrind (which hides AVX-512) the AVX2 path is chosen by itself.
 *   - Reductions (norms, dot products) use a fixed blocked order (AB_REDUCE_BLOCK elements per
 *     block, double accumulation, blocks combined in index order): identical results for any
 *     thread count on one ISA path.
 *
 * API OVERVIEW
 *   core       ab_init ab_set_isa ab_get_isa ab_best_isa ab_cpu_supports ab_isa_name
 *              ab_set_threads ab_get_threads ab_status_str ab_last_error
 *              ab_aligned_alloc ab_aligned_free
 *   rng        ab_rng_seed ab_rng_u32 ab_rng_below ab_rng_uniform ab_rng_normal     (PCG32)
 *   gemm       ab_sgemm                        C = alpha*op(A)*op(B) + beta*C, BLAS semantics
 *   softmax    ab_expf ab_vexpf ab_softmax ab_softmax_backward ab_log_softmax ab_cross_entropy
 *   layers     ab_layernorm_forward/_backward ab_gelu_forward/_backward
 *              ab_residual_forward/_backward ab_embedding_forward/_backward
 *   optimiser  ab_adamw_step ab_clip_grad_norm
 *   reduce     ab_l2_norm ab_dot
 *   SAM step   ab_sam_step ab_sam_restore
 *   per-sample ab_psnorm_linear ab_psnorm_embedding ab_psnorm_choose
 *
 * EXAMPLE
 *   float A[2*3] = {1,2,3,4,5,6}, B[3*2] = {1,0,0,1,1,1}, C[2*2];
 *   ab_status st = ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
 *   if (st != AB_OK) fprintf(stderr, "sgemm: %s\n", ab_last_error());
 *
 * CHANGELOG
 *   0.1.0  foundation: core, dispatch, PCG32, scalar reference kernels.
 */
#ifndef ANTIBODY_H
#define ANTIBODY_H

#define AB_VERSION_MAJOR 0
#define AB_VERSION_MINOR 1
#define AB_VERSION_PATCH 0
#define AB_VERSION_STRING "0.1.0"

#include <stddef.h>
#include <stdint.h>

#ifdef ANTIBODY_STATIC
#define ABDEF static
#else
#define ABDEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------- */
/* Status codes                                                                                    */
typedef enum ab_status {
    AB_OK = 0,
    AB_ERR_NULL = 1,     /* a required pointer was NULL */
    AB_ERR_SHAPE = 2,    /* a negative, zero-where-forbidden or inconsistent shape */
    AB_ERR_ARG = 3,      /* an argument out of its range (an id >= vocab, a bad option) */
    AB_ERR_ALLOC = 4,    /* memory allocation failed */
    AB_ERR_ISA = 5,      /* the requested instruction set is not available here */
    AB_ERR_IO = 6,       /* a file could not be read or written */
    AB_ERR_FORMAT = 7,   /* a file or data set is malformed */
    AB_ERR_NAN = 8,      /* NaN or Inf where finite numbers are required */
    AB_ERR_STATE = 9     /* an object used in the wrong state */
} ab_status;

ABDEF const char *ab_status_str(ab_status st); /* "AB_OK", "AB_ERR_SHAPE", ... never NULL */
ABDEF const char *ab_last_error(void);         /* message of the last error on this thread */

/* ---------------------------------------------------------------------------------------------- */
/* Instruction sets and dispatch                                                                   */
typedef enum ab_isa {
    AB_ISA_SCALAR = 0, /* portable C, the oracle */
    AB_ISA_AVX2 = 1,   /* AVX2 + FMA */
    AB_ISA_AVX512 = 2, /* AVX-512 F/BW/DQ/VL */
    AB_ISA_COUNT = 3
} ab_isa;

ABDEF ab_status ab_init(void);            /* idempotent; reads AB_ISA from the environment */
ABDEF ab_status ab_set_isa(ab_isa isa);   /* AB_ERR_ISA if the CPU/OS lacks it */
ABDEF ab_isa ab_get_isa(void);            /* the path in use */
ABDEF ab_isa ab_best_isa(void);           /* the best path the CPU and OS support */
ABDEF int ab_cpu_supports(ab_isa isa);    /* 1 if usable: CPUID bits and XCR0 state enabled */
ABDEF int ab_isa_compiled(ab_isa isa);    /* 1 if this build contains kernels for it */
ABDEF const char *ab_isa_name(ab_isa isa);                   /* "scalar", "avx2", "avx512" */
ABDEF ab_status ab_isa_from_name(const char *name, ab_isa *out);

/* Threads (OpenMP when built with -fopenmp, otherwise always 1). Results never depend on it. */
ABDEF ab_status ab_set_threads(int n_threads); /* n_threads >= 1 */
ABDEF int ab_get_threads(void);

/* ---------------------------------------------------------------------------------------------- */
/* Memory: 64-byte aligned buffers carved out of AB_MALLOC. ab_aligned_free(NULL) is a no-op.       */
#define AB_ALIGN 64
ABDEF void *ab_aligned_alloc(size_t bytes);
ABDEF void ab_aligned_free(void *p);

/* ---------------------------------------------------------------------------------------------- */
/* RNG: PCG32 (O'Neill 2014, pcg32 XSH-RR, 64-bit LCG state, 32-bit output). Every random choice of
 * a run flows from one seed. The stream id selects one of 2^63 independent sequences.              */
typedef struct ab_rng {
    uint64_t state;
    uint64_t inc;
} ab_rng;
ABDEF void ab_rng_seed(ab_rng *rng, uint64_t seed, uint64_t stream);
ABDEF uint32_t ab_rng_u32(ab_rng *rng);
ABDEF uint32_t ab_rng_below(ab_rng *rng, uint32_t bound); /* unbiased, in [0, bound); bound > 0 */
ABDEF float ab_rng_uniform(ab_rng *rng);                  /* in [0, 1), 24 random bits */
ABDEF float ab_rng_normal(ab_rng *rng);                   /* N(0,1), Box-Muller */

/* ---------------------------------------------------------------------------------------------- */
/* GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
 * op(A) is m x k, op(B) is k x n, C is m x n. lda is the row stride of A as stored (>= k without
 * transpose, >= m with), likewise ldb, ldc >= n. BLAS semantics: m == 0 or n == 0 does nothing;
 * k == 0 or alpha == 0 only scales C; beta == 0 overwrites C without reading it (NaN in C ignored). */
typedef enum ab_trans { AB_NO_TRANS = 0, AB_TRANS = 1 } ab_trans;
ABDEF ab_status ab_sgemm(ab_trans trans_a, ab_trans trans_b, int m, int n, int k, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc);

/* ---------------------------------------------------------------------------------------------- */
/* exp and softmax.
 * ab_expf: Cody-Waite reduction x = n*ln2 + r, |r| <= ln2/2, degree-7 polynomial, scale by 2^n.
 *   Error <= AB_EXPF_MAX_ULP ulp for x in [AB_EXPF_MIN_NORMAL_X, AB_EXPF_MAX_X] (normal results;
 *   checked by an exhaustive sweep, tools/exp_sweep.c). Below that, results are subnormal with
 *   absolute error <= 2^-149 (one subnormal step), and 0 below -103.98. Above AB_EXPF_MAX_X: +inf.
 *   NaN in, NaN out. ab_vexpf applies it to an array on the fastest path (in-place allowed).      */
#define AB_EXPF_MAX_ULP 2
#define AB_EXPF_MAX_X 88.72283172607421875f
#define AB_EXPF_MIN_NORMAL_X (-87.33654022216796875f)
ABDEF float ab_expf(float x);
ABDEF ab_status ab_vexpf(float *y, const float *x, size_t n);

/* Row softmax of a rows x cols matrix (in-place allowed). causal != 0 masks row r to the columns
 * [0, r + cols - rows] (bottom-right aligned, so it also serves a KV cache); masked entries get 0.
 * causal requires rows <= cols. Rows are max-subtracted: no overflow for any finite input.       */
ABDEF ab_status ab_softmax(float *y, const float *x, int rows, int cols, int causal);
/* dx += y * (dy - sum(dy * y)) per row, where y is the softmax output. */
ABDEF ab_status ab_softmax_backward(float *dx, const float *y, const float *dy, int rows, int cols);
/* y = x - logsumexp(x) per row (in-place allowed). */
ABDEF ab_status ab_log_softmax(float *y, const float *x, int rows, int cols);

/* Fused softmax cross-entropy over `rows` positions of `vocab` logits.
 *   losses[r]   = -log softmax(logits[r])[targets[r]]    (written; 0 where weights[r] == 0)
 *   dlogits[r] += dscale * weights[r] * (softmax(logits[r]) - onehot(targets[r]))
 * weights may be NULL (all 1): a per-token mask times per-sample weights. losses or dlogits may be
 * NULL to skip that output. A target outside [0, vocab) where the weight is non-zero is an error.  */
ABDEF ab_status ab_cross_entropy(float *losses, float *dlogits, const float *logits,
                                 const int *targets, const float *weights, int rows, int vocab,
                                 float dscale);

/* ---------------------------------------------------------------------------------------------- */
/* Layers (llm.c shapes: rows = tokens, cols = channels).                                         */
/* out = (x - mean) * rstd * weight + bias per row; mean/rstd (rows each) are saved for backward
 * and may be NULL in inference. eps > 0 (1e-5 is the usual value).                                */
ABDEF ab_status ab_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                     const float *weight, const float *bias, int rows, int cols,
                                     float eps);
/* dx, dweight, dbias accumulate; dweight/dbias may be NULL to skip them. */
ABDEF ab_status ab_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                      const float *x, const float *weight, const float *mean,
                                      const float *rstd, int rows, int cols);
/* GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
ABDEF ab_status ab_gelu_forward(float *out, const float *x, size_t n);
ABDEF ab_status ab_gelu_backward(float *dx, const float *x, const float *dout, size_t n);
/* out = a + b; backward: da += dout, db += dout. */
ABDEF ab_status ab_residual_forward(float *out, const float *a, const float *b, size_t n);
ABDEF ab_status ab_residual_backward(float *da, float *db, const float *dout, size_t n);
/* out[t] = table[ids[t]] for n_tokens ids; every id must lie in [0, vocab). */
ABDEF ab_status ab_embedding_forward(float *out, const int *ids, const float *table, int n_tokens,
                                     int vocab, int dim);
/* dtable[ids[t]] += dout[t], in token order (deterministic). */
ABDEF ab_status ab_embedding_backward(float *dtable, const float *dout, const int *ids,
                                      int n_tokens, int vocab, int dim);

/* ---------------------------------------------------------------------------------------------- */
/* Optimiser and reductions over flat buffers.                                                    */
/* One AdamW step (decoupled weight decay, bias-corrected moments); step counts from 1.            */
typedef struct ab_adamw_cfg {
    float lr, beta1, beta2, eps, weight_decay;
} ab_adamw_cfg;
ABDEF ab_adamw_cfg ab_adamw_default(void); /* lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0.0 */
ABDEF ab_status ab_adamw_step(float *params, const float *grads, float *m, float *v, size_t n,
                              int step, const ab_adamw_cfg *cfg);

#define AB_REDUCE_BLOCK 4096 /* elements per block of the fixed-order reductions */
/* ||x||_2 and x.y, blocked fixed-order double accumulation, result rounded to float. */
ABDEF ab_status ab_l2_norm(const float *x, size_t n, float *norm);
ABDEF ab_status ab_dot(const float *x, const float *y, size_t n, float *dot);
/* If ||g|| > max_norm, g *= max_norm / ||g||. *norm_before (may be NULL) gets ||g|| before. */
ABDEF ab_status ab_clip_grad_norm(float *g, size_t n, float max_norm, float *norm_before);

/* SAM-style step: saved = theta (if saved != NULL), then theta += rho * g / (||g|| + AB_SAM_EPS).
 * rho < 0 is a descent step (Antibody's simulated attack uses rho = -alpha). *gnorm (may be NULL)
 * gets ||g||. ab_sam_restore copies saved back: bit-exact.                                        */
#define AB_SAM_EPS 1e-7f
ABDEF ab_status ab_sam_step(float *theta, float *saved, const float *g, size_t n, float rho,
                            float *gnorm);
ABDEF ab_status ab_sam_restore(float *theta, const float *saved, size_t n);

/* ---------------------------------------------------------------------------------------------- */
/* Per-sample gradient norms without materialising per-sample gradients.
 * Linear layer y_t = W a_t + b applied to n_samples sequences of T tokens each:
 *   A: [n_samples][T][d_in] inputs, G: [n_samples][T][d_out] gradients of the loss w.r.t. y.
 * ADDS ||grad_W(i)||_F^2 to w_sqnorm[i] and ||grad_b(i)||^2 to b_sqnorm[i] (either may be NULL), so
 * calls for all layers of a network sum into one array: the network norm is sqrt of the sum.
 * GHOST computes <A A^T, G G^T>_F, O(T^2 (d_in + d_out)); MATERIALIZE forms G^T A,
 * O(T d_in d_out); AUTO picks ghost when 2 T^2 < d_in d_out (ab_psnorm_choose). T == 1 reduces to
 * ||g||^2 ||a||^2. Per-sample gradients carry whatever scaling G carries (for a token-mean batch
 * loss, 1 / total tokens).                                                                        */
typedef enum ab_psnorm_method {
    AB_PSNORM_AUTO = 0,
    AB_PSNORM_GHOST = 1,
    AB_PSNORM_MATERIALIZE = 2
} ab_psnorm_method;
ABDEF ab_psnorm_method ab_psnorm_choose(int T, int d_in, int d_out);
ABDEF ab_status ab_psnorm_linear(float *w_sqnorm, float *b_sqnorm, const float *A, const float *G,
                                 int n_samples, int T, int d_in, int d_out,
                                 ab_psnorm_method method);
/* Embedding row lookup with ids [n_samples][T]: ADDS sum_{t,s} [x_t == x_s] g_t . g_s. */
ABDEF ab_status ab_psnorm_embedding(float *sqnorm, const int *ids, const float *G, int n_samples,
                                    int T, int vocab, int dim);

#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_H */

/* ============================================================================================== */
/*                                        IMPLEMENTATION                                          */
/* ============================================================================================== */
#ifdef ANTIBODY_IMPLEMENTATION
#ifndef ANTIBODY_IMPLEMENTATION_DONE
#define ANTIBODY_IMPLEMENTATION_DONE

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(AB_MALLOC) && defined(AB_FREE)
#elif !defined(AB_MALLOC) && !defined(AB_FREE)
#define AB_MALLOC(sz) malloc(sz)
#define AB_FREE(p) free(p)
#else
#error "antibody.h: define both AB_MALLOC and AB_FREE, or neither"
#endif

#ifndef AB_ASSERT
#include <assert.h>
#define AB_ASSERT(x) assert(x)
#endif

#if !defined(AB_NO_SIMD) && (defined(__x86_64__) || defined(_M_X64)) &&                          \
    (defined(__GNUC__) || defined(__clang__))
#define AB__X86 1
#else
#define AB__X86 0
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__cplusplus)
#define AB__THREAD_LOCAL thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define AB__THREAD_LOCAL _Thread_local
#elif defined(__GNUC__)
#define AB__THREAD_LOCAL __thread
#else
#define AB__THREAD_LOCAL
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* --- errors ----------------------------------------------------------------------------------- */
static AB__THREAD_LOCAL char ab__errmsg[256];

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static ab_status ab__fail(ab_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ab__errmsg, sizeof ab__errmsg, fmt, ap);
    va_end(ap);
    return st;
}

/* Argument checks used by every entry point: on failure they set the message and return. */
#define AB__CHECK_PTR(p)                                                                           \
    do {                                                                                           \
        if (!(p)) return ab__fail(AB_ERR_NULL, "%s: '%s' is NULL", __func__, #p);                  \
    } while (0)
#define AB__CHECK_DIM(d)                                                                           \
    do {                                                                                           \
        if ((d) < 0) return ab__fail(AB_ERR_SHAPE, "%s: %s = %d is negative", __func__, #d, (int)(d)); \
    } while (0)
#define AB__CHECK_POS(d)                                                                           \
    do {                                                                                           \
        if ((d) <= 0)                                                                              \
            return ab__fail(AB_ERR_SHAPE, "%s: %s = %d must be positive", __func__, #d, (int)(d)); \
    } while (0)
#define AB__TRY(expr)                                                                              \
    do {                                                                                           \
        ab_status ab__st_ = (expr);                                                                \
        if (ab__st_ != AB_OK) return ab__st_;                                                      \
    } while (0)

ABDEF const char *ab_status_str(ab_status st) {
    switch (st) {
    case AB_OK: return "AB_OK";
    case AB_ERR_NULL: return "AB_ERR_NULL (required pointer is NULL)";
    case AB_ERR_SHAPE: return "AB_ERR_SHAPE (bad or inconsistent shape)";
    case AB_ERR_ARG: return "AB_ERR_ARG (argument out of range)";
    case AB_ERR_ALLOC: return "AB_ERR_ALLOC (out of memory)";
    case AB_ERR_ISA: return "AB_ERR_ISA (instruction set not available)";
    case AB_ERR_IO: return "AB_ERR_IO (file could not be read or written)";
    case AB_ERR_FORMAT: return "AB_ERR_FORMAT (malformed file or data)";
    case AB_ERR_NAN: return "AB_ERR_NAN (NaN or Inf where finite numbers are required)";
    case AB_ERR_STATE: return "AB_ERR_STATE (object used in the wrong state)";
    }
    return "AB_ERR_? (unknown status)";
}

ABDEF const char *ab_last_error(void) { return ab__errmsg[0] ? ab__errmsg : "no error"; }

/* --- threads -------------------------------------------------------------------------------- */
static int ab__n_threads = 0; /* 0: not set, use the OpenMP default */

static int ab__threads(void) {
#ifdef _OPENMP
    return ab__n_threads > 0 ? ab__n_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

ABDEF ab_status ab_set_threads(int n_threads) {
    if (n_threads < 1) return ab__fail(AB_ERR_ARG, "ab_set_threads: n_threads = %d < 1", n_threads);
    ab__n_threads = n_threads;
    return AB_OK;
}

ABDEF int ab_get_threads(void) { return ab__threads(); }

/* --- memory ----------------------------------------------------------------------------------- */
/* Over-allocate by AB_ALIGN + sizeof(void*), store the raw pointer just below the aligned one. */
ABDEF void *ab_aligned_alloc(size_t bytes) {
    size_t extra = AB_ALIGN + sizeof(void *);
    if (bytes > (size_t)-1 - extra) return NULL;
    unsigned char *raw = (unsigned char *)AB_MALLOC(bytes + extra);
    if (!raw) return NULL;
    uintptr_t aligned = ((uintptr_t)(raw + extra)) & ~(uintptr_t)(AB_ALIGN - 1);
    ((void **)aligned)[-1] = raw;
    return (void *)aligned;
}

ABDEF void ab_aligned_free(void *p) {
    if (p) AB_FREE(((void **)p)[-1]);
}

/* --- RNG: PCG32 ------------------------------------------------------------------------------- */
ABDEF uint32_t ab_rng_u32(ab_rng *rng) {
    uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ULL + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

ABDEF void ab_rng_seed(ab_rng *rng, uint64_t seed, uint64_t stream) {
    rng->state = 0u;
    rng->inc = (stream << 1u) | 1u;
    (void)ab_rng_u32(rng);
    rng->state += seed;
    (void)ab_rng_u32(rng);
}

/* Lemire-style rejection: draws until the value falls outside the biased low zone. */
ABDEF uint32_t ab_rng_below(ab_rng *rng, uint32_t bound) {
    if (bound == 0) return 0;
    uint32_t threshold = (uint32_t)(-bound) % bound;
    for (;;) {
        uint32_t r = ab_rng_u32(rng);
        if (r >= threshold) return r % bound;
    }
}

ABDEF float ab_rng_uniform(ab_rng *rng) { return (float)(ab_rng_u32(rng) >> 8) * (1.0f / 16777216.0f); }

ABDEF float ab_rng_normal(ab_rng *rng) {
    /* u1 in (0, 1] so log(u1) is finite. */
    double u1 = ((double)(ab_rng_u32(rng) >> 8) + 1.0) * (1.0 / 16777216.0);
    double u2 = (double)(ab_rng_u32(rng) >> 8) * (1.0 / 16777216.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#ifdef __cplusplus
}
#endif

/* --- kernels: one file per ISA family, same contract (see struct ab__kernels) ----------------- */
#include "kernels/kernels.h" /* AB_AMALGAMATE */

#ifdef __cplusplus
extern "C" {
#endif

/* --- dispatch --------------------------------------------------------------------------------- */
static int ab__initialised = 0;
static ab_isa ab__isa = AB_ISA_SCALAR;
static ab__kernels ab__k;

#if AB__X86
#include <cpuid.h>
static uint64_t ab__xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

/* CPUID says what the core implements; XCR0 says which register state the OS saves on a context
 * switch. Both must agree: valgrind 3.19 clears the AVX-512 bits, an OS may disable them. */
ABDEF int ab_cpu_supports(ab_isa isa) {
    if (isa == AB_ISA_SCALAR) return 1;
#if AB__X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx || !fma) return 0;
    uint64_t xcr0 = ab__xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0; /* XMM and YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (isa == AB_ISA_AVX2) return avx2;
    if (isa == AB_ISA_AVX512) {
        int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
        int zmm_state = (xcr0 & 0xE0) == 0xE0; /* opmask, ZMM_Hi256, Hi16_ZMM */
        return avx2 && f && dq && bw && vl && zmm_state;
    }
#endif
    return 0;
}

ABDEF int ab_isa_compiled(ab_isa isa) {
    if (isa == AB_ISA_SCALAR) return 1;
#if AB__X86
    if (isa == AB_ISA_AVX2 || isa == AB_ISA_AVX512) return 1;
#endif
    return 0;
}

ABDEF ab_isa ab_best_isa(void) {
    if (ab_isa_compiled(AB_ISA_AVX512) && ab_cpu_supports(AB_ISA_AVX512)) return AB_ISA_AVX512;
    if (ab_isa_compiled(AB_ISA_AVX2) && ab_cpu_supports(AB_ISA_AVX2)) return AB_ISA_AVX2;
    return AB_ISA_SCALAR;
}

ABDEF const char *ab_isa_name(ab_isa isa) {
    switch (isa) {
    case AB_ISA_SCALAR: return "scalar";
    case AB_ISA_AVX2: return "avx2";
    case AB_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

ABDEF ab_status ab_isa_from_name(const char *name, ab_isa *out) {
    AB__CHECK_PTR(name);
    AB__CHECK_PTR(out);
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        if (strcmp(name, ab_isa_name((ab_isa)i)) == 0) {
            *out = (ab_isa)i;
            return AB_OK;
        }
    }
    return ab__fail(AB_ERR_ARG, "unknown ISA name '%s' (expected scalar, avx2 or avx512)", name);
}

ABDEF ab_status ab_set_isa(ab_isa isa) {
    if ((int)isa < 0 || isa >= AB_ISA_COUNT)
        return ab__fail(AB_ERR_ARG, "ab_set_isa: %d is not an ab_isa value", (int)isa);
    if (!ab_isa_compiled(isa))
        return ab__fail(AB_ERR_ISA, "ab_set_isa: this build has no %s kernels", ab_isa_name(isa));
    if (!ab_cpu_supports(isa))
        return ab__fail(AB_ERR_ISA, "ab_set_isa: this CPU/OS does not support %s (CPUID/XCR0)",
                        ab_isa_name(isa));
    ab__kernels_fill(&ab__k, isa);
    ab__isa = isa;
    ab__initialised = 1;
    return AB_OK;
}

/* Idempotent. Not thread-safe on its very first call: call it once before spawning threads. */
ABDEF ab_status ab_init(void) {
    if (ab__initialised) return AB_OK;
    const char *env = getenv("AB_ISA");
    if (env && *env) {
        ab_isa want;
        if (ab_isa_from_name(env, &want) != AB_OK)
            return ab__fail(AB_ERR_ARG, "AB_ISA='%s' is not one of scalar, avx2, avx512", env);
        ab_status st = ab_set_isa(want);
        if (st != AB_OK)
            return ab__fail(st, "AB_ISA=%s requested, but %s", env, ab_last_error());
        return AB_OK;
    }
    return ab_set_isa(ab_best_isa());
}

ABDEF ab_isa ab_get_isa(void) {
    if (ab_init() != AB_OK) return AB_ISA_SCALAR;
    return ab__isa;
}

#define AB__INIT() AB__TRY(ab_init())

/* --- GEMM ------------------------------------------------------------------------------------- */
ABDEF ab_status ab_sgemm(ab_trans trans_a, ab_trans trans_b, int m, int n, int k, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc) {
    AB__INIT();
    if ((trans_a != AB_NO_TRANS && trans_a != AB_TRANS) ||
        (trans_b != AB_NO_TRANS && trans_b != AB_TRANS))
        return ab__fail(AB_ERR_ARG, "ab_sgemm: transpose flags must be AB_NO_TRANS or AB_TRANS");
    AB__CHECK_DIM(m);
    AB__CHECK_DIM(n);
    AB__CHECK_DIM(k);
    int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    if (lda < (a_cols > 1 ? a_cols : 1))
        return ab__fail(AB_ERR_SHAPE, "ab_sgemm: lda = %d < %d (row length of A as stored)", lda,
                        a_cols > 1 ? a_cols : 1);
    if (ldb < (b_cols > 1 ? b_cols : 1))
        return ab__fail(AB_ERR_SHAPE, "ab_sgemm: ldb = %d < %d (row length of B as stored)", ldb,
                        b_cols > 1 ? b_cols : 1);
    if (ldc < (n > 1 ? n : 1))
        return ab__fail(AB_ERR_SHAPE, "ab_sgemm: ldc = %d < %d (n)", ldc, n > 1 ? n : 1);
    if (m == 0 || n == 0) return AB_OK;
    AB__CHECK_PTR(C);
    int use_ab = k > 0 && alpha != 0.0f;
    if (use_ab) {
        AB__CHECK_PTR(A);
        AB__CHECK_PTR(B);
    }
    if (!use_ab) {
        ab__scale_matrix(C, m, n, ldc, beta);
        return AB_OK;
    }
    ab__k.sgemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return AB_OK;
}

/* --- exp / softmax / cross-entropy ------------------------------------------------------------ */
ABDEF float ab_expf(float x) { return ab__scalar_expf(x); }

ABDEF ab_status ab_vexpf(float *y, const float *x, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(y);
    AB__CHECK_PTR(x);
    ab__k.vexpf(y, x, n);
    return AB_OK;
}

static ab_status ab__check_matrix(const char *fn, const void *p, const char *pname, int rows,
                                  int cols) {
    if (rows < 0 || cols < 0)
        return ab__fail(AB_ERR_SHAPE, "%s: shape %d x %d has a negative dimension", fn, rows, cols);
    if (rows > 0 && cols > 0 && !p) return ab__fail(AB_ERR_NULL, "%s: '%s' is NULL", fn, pname);
    return AB_OK;
}
#define AB__CHECK_MAT(p, r, c) AB__TRY(ab__check_matrix(__func__, (p), #p, (r), (c)))

ABDEF ab_status ab_softmax(float *y, const float *x, int rows, int cols, int causal) {
    AB__INIT();
    AB__CHECK_MAT(y, rows, cols);
    AB__CHECK_MAT(x, rows, cols);
    if (causal && rows > cols)
        return ab__fail(AB_ERR_SHAPE, "ab_softmax: causal needs rows <= cols (got %d x %d)", rows,
                        cols);
    if (rows == 0 || cols == 0) return AB_OK;
    ab__k.softmax(y, x, rows, cols, causal);
    return AB_OK;
}

ABDEF ab_status ab_softmax_backward(float *dx, const float *y, const float *dy, int rows, int cols) {
    AB__INIT();
    AB__CHECK_MAT(dx, rows, cols);
    AB__CHECK_MAT(y, rows, cols);
    AB__CHECK_MAT(dy, rows, cols);
    if (rows == 0 || cols == 0) return AB_OK;
    ab__k.softmax_backward(dx, y, dy, rows, cols);
    return AB_OK;
}

ABDEF ab_status ab_log_softmax(float *y, const float *x, int rows, int cols) {
    AB__INIT();
    AB__CHECK_MAT(y, rows, cols);
    AB__CHECK_MAT(x, rows, cols);
    if (rows == 0 || cols == 0) return AB_OK;
    ab__k.log_softmax(y, x, rows, cols);
    return AB_OK;
}

ABDEF ab_status ab_cross_entropy(float *losses, float *dlogits, const float *logits,
                                 const int *targets, const float *weights, int rows, int vocab,
                                 float dscale) {
    AB__INIT();
    AB__CHECK_DIM(rows);
    AB__CHECK_POS(vocab);
    if (rows == 0) return AB_OK;
    AB__CHECK_PTR(logits);
    AB__CHECK_PTR(targets);
    for (int r = 0; r < rows; r++) {
        float w = weights ? weights[r] : 1.0f;
        if (w != 0.0f && (targets[r] < 0 || targets[r] >= vocab))
            return ab__fail(AB_ERR_ARG, "ab_cross_entropy: targets[%d] = %d outside [0, %d)", r,
                            targets[r], vocab);
        if (!isfinite(w))
            return ab__fail(AB_ERR_NAN, "ab_cross_entropy: weights[%d] is not finite", r);
    }
    ab__k.cross_entropy(losses, dlogits, logits, targets, weights, rows, vocab, dscale);
    return AB_OK;
}

/* --- layers ----------------------------------------------------------------------------------- */
ABDEF ab_status ab_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                     const float *weight, const float *bias, int rows, int cols,
                                     float eps) {
    AB__INIT();
    AB__CHECK_DIM(rows);
    AB__CHECK_POS(cols);
    if (!(eps > 0.0f)) return ab__fail(AB_ERR_ARG, "ab_layernorm_forward: eps must be > 0");
    if (rows == 0) return AB_OK;
    AB__CHECK_PTR(out);
    AB__CHECK_PTR(x);
    AB__CHECK_PTR(weight);
    AB__CHECK_PTR(bias);
    ab__k.layernorm_forward(out, mean, rstd, x, weight, bias, rows, cols, eps);
    return AB_OK;
}

ABDEF ab_status ab_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                      const float *x, const float *weight, const float *mean,
                                      const float *rstd, int rows, int cols) {
    AB__INIT();
    AB__CHECK_DIM(rows);
    AB__CHECK_POS(cols);
    if (rows == 0) return AB_OK;
    AB__CHECK_PTR(dx);
    AB__CHECK_PTR(dout);
    AB__CHECK_PTR(x);
    AB__CHECK_PTR(weight);
    AB__CHECK_PTR(mean);
    AB__CHECK_PTR(rstd);
    ab__k.layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
    return AB_OK;
}

ABDEF ab_status ab_gelu_forward(float *out, const float *x, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(out);
    AB__CHECK_PTR(x);
    ab__k.gelu_forward(out, x, n);
    return AB_OK;
}

ABDEF ab_status ab_gelu_backward(float *dx, const float *x, const float *dout, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(dx);
    AB__CHECK_PTR(x);
    AB__CHECK_PTR(dout);
    ab__k.gelu_backward(dx, x, dout, n);
    return AB_OK;
}

ABDEF ab_status ab_residual_forward(float *out, const float *a, const float *b, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(out);
    AB__CHECK_PTR(a);
    AB__CHECK_PTR(b);
    ab__k.add(out, a, b, n);
    return AB_OK;
}

ABDEF ab_status ab_residual_backward(float *da, float *db, const float *dout, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(da);
    AB__CHECK_PTR(db);
    AB__CHECK_PTR(dout);
    ab__k.add(da, da, dout, n);
    ab__k.add(db, db, dout, n);
    return AB_OK;
}

static ab_status ab__check_ids(const char *fn, const int *ids, size_t count, int vocab) {
    for (size_t t = 0; t < count; t++)
        if (ids[t] < 0 || ids[t] >= vocab)
            return ab__fail(AB_ERR_ARG, "%s: ids[%zu] = %d outside [0, %d)", fn, t, ids[t], vocab);
    return AB_OK;
}

ABDEF ab_status ab_embedding_forward(float *out, const int *ids, const float *table, int n_tokens,
                                     int vocab, int dim) {
    AB__CHECK_DIM(n_tokens);
    AB__CHECK_POS(vocab);
    AB__CHECK_POS(dim);
    if (n_tokens == 0) return AB_OK;
    AB__CHECK_PTR(out);
    AB__CHECK_PTR(ids);
    AB__CHECK_PTR(table);
    AB__TRY(ab__check_ids(__func__, ids, (size_t)n_tokens, vocab));
    for (int t = 0; t < n_tokens; t++)
        memcpy(out + (size_t)t * dim, table + (size_t)ids[t] * dim, sizeof(float) * (size_t)dim);
    return AB_OK;
}

ABDEF ab_status ab_embedding_backward(float *dtable, const float *dout, const int *ids,
                                      int n_tokens, int vocab, int dim) {
    AB__INIT();
    AB__CHECK_DIM(n_tokens);
    AB__CHECK_POS(vocab);
    AB__CHECK_POS(dim);
    if (n_tokens == 0) return AB_OK;
    AB__CHECK_PTR(dtable);
    AB__CHECK_PTR(dout);
    AB__CHECK_PTR(ids);
    AB__TRY(ab__check_ids(__func__, ids, (size_t)n_tokens, vocab));
    for (int t = 0; t < n_tokens; t++) {
        float *row = dtable + (size_t)ids[t] * dim;
        ab__k.add(row, row, dout + (size_t)t * dim, (size_t)dim);
    }
    return AB_OK;
}

/* --- optimiser, reductions, SAM step ---------------------------------------------------------- */
ABDEF ab_adamw_cfg ab_adamw_default(void) {
    ab_adamw_cfg cfg;
    cfg.lr = 1e-3f;
    cfg.beta1 = 0.9f;
    cfg.beta2 = 0.999f;
    cfg.eps = 1e-8f;
    cfg.weight_decay = 0.0f;
    return cfg;
}

ABDEF ab_status ab_adamw_step(float *params, const float *grads, float *m, float *v, size_t n,
                              int step, const ab_adamw_cfg *cfg) {
    AB__INIT();
    AB__CHECK_PTR(cfg);
    if (step < 1) return ab__fail(AB_ERR_ARG, "ab_adamw_step: step = %d, steps count from 1", step);
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f && cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
        return ab__fail(AB_ERR_ARG, "ab_adamw_step: betas must lie in [0, 1)");
    if (!(cfg->eps > 0.0f) || !isfinite(cfg->lr) || !isfinite(cfg->weight_decay))
        return ab__fail(AB_ERR_ARG, "ab_adamw_step: eps must be > 0, lr and weight_decay finite");
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(params);
    AB__CHECK_PTR(grads);
    AB__CHECK_PTR(m);
    AB__CHECK_PTR(v);
    /* Bias corrections in double: for large steps beta^t underflows gracefully to 0. */
    float bc1 = (float)(1.0 - pow((double)cfg->beta1, (double)step));
    float bc2 = (float)(1.0 - pow((double)cfg->beta2, (double)step));
    ab__k.adamw(params, grads, m, v, n, cfg->lr, cfg->beta1, cfg->beta2, cfg->eps,
                cfg->weight_decay, 1.0f / bc1, 1.0f / bc2);
    return AB_OK;
}

/* Fixed-order blocked reduction: block b covers [b*AB_REDUCE_BLOCK, ...); each block's partial is a
 * double computed by the ISA kernel; partials are added in block order. A threaded caller computes
 * the same partials in any split and adds them in the same order, so the result does not depend on
 * the thread count. */
static double ab__reduce_blocked(const float *x, const float *y, size_t n) {
    double total = 0.0;
    for (size_t start = 0; start < n; start += AB_REDUCE_BLOCK) {
        size_t len = n - start < AB_REDUCE_BLOCK ? n - start : AB_REDUCE_BLOCK;
        total += y ? ab__k.dot_block(x + start, y + start, len) : ab__k.sumsq_block(x + start, len);
    }
    return total;
}

ABDEF ab_status ab_l2_norm(const float *x, size_t n, float *norm) {
    AB__INIT();
    AB__CHECK_PTR(norm);
    *norm = 0.0f;
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(x);
    *norm = (float)sqrt(ab__reduce_blocked(x, NULL, n));
    return AB_OK;
}

ABDEF ab_status ab_dot(const float *x, const float *y, size_t n, float *dot) {
    AB__INIT();
    AB__CHECK_PTR(dot);
    *dot = 0.0f;
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(x);
    AB__CHECK_PTR(y);
    *dot = (float)ab__reduce_blocked(x, y, n);
    return AB_OK;
}

ABDEF ab_status ab_clip_grad_norm(float *g, size_t n, float max_norm, float *norm_before) {
    AB__INIT();
    if (!(max_norm > 0.0f))
        return ab__fail(AB_ERR_ARG, "ab_clip_grad_norm: max_norm must be > 0");
    float norm = 0.0f;
    if (n > 0) {
        AB__CHECK_PTR(g);
        norm = (float)sqrt(ab__reduce_blocked(g, NULL, n));
    }
    if (norm_before) *norm_before = norm;
    if (!isfinite(norm))
        return ab__fail(AB_ERR_NAN, "ab_clip_grad_norm: the gradient norm is not finite");
    if (norm > max_norm) ab__k.scale(g, n, max_norm / norm);
    return AB_OK;
}

ABDEF ab_status ab_sam_step(float *theta, float *saved, const float *g, size_t n, float rho,
                            float *gnorm) {
    AB__INIT();
    if (!isfinite(rho)) return ab__fail(AB_ERR_ARG, "ab_sam_step: rho must be finite");
    if (gnorm) *gnorm = 0.0f;
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(theta);
    AB__CHECK_PTR(g);
    float norm = (float)sqrt(ab__reduce_blocked(g, NULL, n));
    if (gnorm) *gnorm = norm;
    if (!isfinite(norm)) return ab__fail(AB_ERR_NAN, "ab_sam_step: the gradient norm is not finite");
    ab__k.axpy_save(theta, saved, g, n, rho / (norm + AB_SAM_EPS));
    return AB_OK;
}

ABDEF ab_status ab_sam_restore(float *theta, const float *saved, size_t n) {
    if (n == 0) return AB_OK;
    AB__CHECK_PTR(theta);
    AB__CHECK_PTR(saved);
    memcpy(theta, saved, n * sizeof(float));
    return AB_OK;
}

/* --- per-sample gradient norms ---------------------------------------------------------------- */
ABDEF ab_psnorm_method ab_psnorm_choose(int T, int d_in, int d_out) {
    return 2.0 * (double)T * (double)T < (double)d_in * (double)d_out ? AB_PSNORM_GHOST
                                                                      : AB_PSNORM_MATERIALIZE;
}

ABDEF ab_status ab_psnorm_linear(float *w_sqnorm, float *b_sqnorm, const float *A, const float *G,
                                 int n_samples, int T, int d_in, int d_out,
                                 ab_psnorm_method method) {
    AB__INIT();
    AB__CHECK_DIM(n_samples);
    AB__CHECK_POS(T);
    AB__CHECK_POS(d_in);
    AB__CHECK_POS(d_out);
    if (method != AB_PSNORM_AUTO && method != AB_PSNORM_GHOST && method != AB_PSNORM_MATERIALIZE)
        return ab__fail(AB_ERR_ARG, "ab_psnorm_linear: unknown method %d", (int)method);
    if (n_samples == 0 || (!w_sqnorm && !b_sqnorm)) return AB_OK;
    AB__CHECK_PTR(G);
    if (w_sqnorm) AB__CHECK_PTR(A);
    if (method == AB_PSNORM_AUTO) method = ab_psnorm_choose(T, d_in, d_out);
    /* Workspace: ghost needs two T x T Gram matrices, materialise one d_out x d_in gradient. */
    size_t ws_floats = method == AB_PSNORM_GHOST ? 2 * (size_t)T * T : (size_t)d_out * d_in;
    float *ws = NULL;
    if (w_sqnorm && T > 1) {
        ws = (float *)ab_aligned_alloc(ws_floats * sizeof(float));
        if (!ws) return ab__fail(AB_ERR_ALLOC, "ab_psnorm_linear: %zu floats of workspace", ws_floats);
    }
    for (int i = 0; i < n_samples; i++) {
        const float *Gi = G + (size_t)i * T * d_out;
        if (b_sqnorm) b_sqnorm[i] += ab__psnorm_bias(Gi, T, d_out);
        if (!w_sqnorm) continue;
        const float *Ai = A + (size_t)i * T * d_in;
        float sq;
        if (T == 1) {
            sq = (float)(ab__k.sumsq_block(Ai, (size_t)d_in) * ab__k.sumsq_block(Gi, (size_t)d_out));
        } else if (method == AB_PSNORM_GHOST) {
            float *gram_a = ws, *gram_g = ws + (size_t)T * T;
            ab__k.sgemm(AB_NO_TRANS, AB_TRANS, T, T, d_in, 1.0f, Ai, d_in, Ai, d_in, 0.0f, gram_a, T);
            ab__k.sgemm(AB_NO_TRANS, AB_TRANS, T, T, d_out, 1.0f, Gi, d_out, Gi, d_out, 0.0f, gram_g, T);
            sq = (float)ab__reduce_blocked(gram_a, gram_g, (size_t)T * T);
        } else {
            ab__k.sgemm(AB_TRANS, AB_NO_TRANS, d_out, d_in, T, 1.0f, Gi, d_out, Ai, d_in, 0.0f, ws, d_in);
            sq = (float)ab__reduce_blocked(ws, NULL, (size_t)d_out * d_in);
        }
        w_sqnorm[i] += sq;
    }
    ab_aligned_free(ws);
    return AB_OK;
}

ABDEF ab_status ab_psnorm_embedding(float *sqnorm, const int *ids, const float *G, int n_samples,
                                    int T, int vocab, int dim) {
    AB__INIT();
    AB__CHECK_DIM(n_samples);
    AB__CHECK_POS(T);
    AB__CHECK_POS(vocab);
    AB__CHECK_POS(dim);
    if (n_samples == 0) return AB_OK;
    AB__CHECK_PTR(sqnorm);
    AB__CHECK_PTR(ids);
    AB__CHECK_PTR(G);
    AB__TRY(ab__check_ids(__func__, ids, (size_t)n_samples * T, vocab));
    for (int i = 0; i < n_samples; i++) {
        const int *x = ids + (size_t)i * T;
        const float *Gi = G + (size_t)i * T * dim;
        /* Pairs t < s counted twice; the diagonal once. */
        double sq = 0.0;
        for (int t = 0; t < T; t++) {
            const float *gt = Gi + (size_t)t * dim;
            sq += ab__k.sumsq_block(gt, (size_t)dim);
            for (int s = t + 1; s < T; s++)
                if (x[s] == x[t]) sq += 2.0 * ab__k.dot_block(gt, Gi + (size_t)s * dim, (size_t)dim);
        }
        sqnorm[i] += (float)sq;
    }
    return AB_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_IMPLEMENTATION_DONE */
#endif /* ANTIBODY_IMPLEMENTATION */

/*
------------------------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the antibody.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions: The above copyright notice and this
permission notice shall be included in all copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain. Anyone is free to copy,
modify, publish, use, compile, sell, or distribute this software, either in source code form or as
a compiled binary, for any purpose, commercial or non-commercial, and by any means.
------------------------------------------------------------------------------------------------
*/
