/* kernels/kernels.h - the kernel contract shared by every ISA family (part of antibody.h).
 *
 * Included by antibody.h inside its implementation section; not a public header. Each ISA family
 * provides functions with the signatures below; ab__kernels_fill() builds the table for one ISA
 * by starting from the scalar oracle and overriding the entries that family implements, so a new
 * kernel can land one ISA at a time. The public wrappers in antibody.h validate every argument;
 * kernels may assume: dimensions > 0, pointers valid, no aliasing unless stated.
 *
 * Kernels never call up into the core: everything a kernel needs (a workspace, a thread count)
 * is an argument (a threaded GEMM is planned as independent pieces that the core runs on its
 * threads), and the target-attribute macros and shared constants are defined here, once.
 */
#ifndef AB_KERNELS_H
#define AB_KERNELS_H

/* Per-function target attributes: the kernels compile without -mavx2/-mavx512f and are chosen at
 * run time (valgrind 3.19 hides AVX-512 and dies on EVEX code, so nothing may assume it). */
#define AB__T_AVX2 __attribute__((target("avx2,fma")))
#define AB__T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define AB__ALWAYS_INLINE inline __attribute__((always_inline))
#define AB__INL_AVX2 static AB__ALWAYS_INLINE AB__T_AVX2
#define AB__INL_AVX512 static AB__ALWAYS_INLINE AB__T_AVX512
/* Fully unroll a loop with a small constant trip count (the register tiles and transposes depend
 * on it: an accumulator array indexed in a rolled loop lives on the stack). GCC takes a bound,
 * clang 14 reads "GCC unroll 16" on a 14-trip loop as a partial factor and leaves it rolled. */
#if defined(__clang__)
#define AB__UNROLL _Pragma("clang loop unroll(full)")
#else
#define AB__UNROLL _Pragma("GCC unroll 16")
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* One GEMM call, C = alpha*op(A)*op(B) + beta*C with m, n, k > 0 and alpha != 0 (beta == 0 must
 * not read C), and the plan the GEMM kernel makes for it. */
typedef struct ab__gemm_job {
    int trans_a, trans_b, m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    /* Epilogue (linear layers), all NULL for a plain GEMM. bias [n]: C starts as bias in every
     * row, then C = fma(alpha, acc, C) as with beta = 1 (beta is ignored). After the last k
     * block, resid [m][ldr] (may not alias C): C += resid; then gelu [m][ldg]: GELU(C). Each
     * the same bits as a separate pass of the ISA's add and gelu_forward kernels. */
    const float *bias, *resid;
    float *gelu;
    int ldr, ldg;
    /* the plan, filled by sgemm_plan: */
    int parts;        /* independent pieces of C (>= 1) */
    size_t ws_floats; /* workspace one piece needs (0: none) */
    int a_inplace, b_inplace, b_prefetch, kc_step, split_n, units; /* the GEMM kernels' own */
    size_t a_floats;
} ab__gemm_job;

typedef struct ab__kernels {
    /* sgemm_plan plans the job for up to n_threads threads (from the shapes, leading dimensions
     * and n_threads only, never the data). sgemm_part computes piece `part` of C with `workspace`
     * (ws_floats floats, 64-byte aligned, allocated by the caller; pieces running at the same
     * time need separate ones). The pieces may run in any order on any threads: the result is
     * the same, and does not depend on n_threads either. Kernels never start threads. */
    void (*sgemm_plan)(ab__gemm_job *job, int n_threads);
    void (*sgemm_part)(const ab__gemm_job *job, int part, float *workspace);
    void (*vexpf)(float *y, const float *x, size_t n); /* y may equal x */
    void (*softmax)(float *y, const float *x, int rows, int cols, int causal); /* y may equal x */
    void (*softmax_backward)(float *dx, const float *y, const float *dy, int rows, int cols);
    void (*log_softmax)(float *y, const float *x, int rows, int cols); /* y may equal x */
    /* targets already range-checked wherever the weight is non-zero */
    void (*cross_entropy)(float *losses, float *dlogits, const float *logits, const int *targets,
                          const float *weights, int rows, int vocab, float dscale);
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *x,
                              const float *weight, const float *bias, int rows, int cols,
                              float eps);
    void (*layernorm_backward)(float *dx, float *dweight, float *dbias, const float *dout,
                               const float *x, const float *weight, const float *mean,
                               const float *rstd, int rows, int cols);
    void (*gelu_forward)(float *out, const float *x, size_t n);
    void (*gelu_backward)(float *dx, const float *x, const float *dout, size_t n);
    void (*add)(float *out, const float *a, const float *b, size_t n); /* out may equal a */
    /* 1 if no x[i] is NaN or +-Inf (the optimiser steps check their gradient with it first) */
    int (*all_finite)(const float *x, size_t n);
    /* AdamW with precomputed 1/(1-beta^t) bias corrections */
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float inv_bc1, float inv_bc2);
    /* One block of a fixed-order reduction (any length; callers pass AB_REDUCE_BLOCK pieces). */
    double (*sumsq_block)(const float *x, size_t n);
    double (*dot_block)(const float *x, const float *y, size_t n);
    void (*scale)(float *x, size_t n, float s);
    /* saved = theta (if saved != NULL); theta += s * g. One pass. */
    void (*axpy_save)(float *theta, float *saved, const float *g, size_t n, float s);
    /* Ghost norm of one sample: <A A^T, G G^T>_F = sum_{t,s} (a_t . a_s)(g_t . g_s) for row-major
     * A (T x d_in) and G (T x d_out). Only pairs t <= s are formed (symmetry: t < s counted twice);
     * each Gram entry is a float dot product, the products and their sum are in double. */
    double (*ghost_sq)(const float *A, const float *G, int T, int d_in, int d_out);
} ab__kernels;

#ifdef __cplusplus
}
#endif

#include "scalar.h" /* AB_AMALGAMATE */
#if AB__X86
#include <immintrin.h>
#include "avx2.h" /* AB_AMALGAMATE */
#include "avx512.h" /* AB_AMALGAMATE */
#include "gemm.h" /* AB_AMALGAMATE */
#endif

#ifdef __cplusplus
extern "C" {
#endif

static void ab__kernels_fill(ab__kernels *k, ab_isa isa) {
    ab__scalar_fill(k);
#if AB__X86
    if (isa >= AB_ISA_AVX2) ab__avx2_fill(k);
    if (isa >= AB_ISA_AVX512) ab__avx512_fill(k);
    if (isa >= AB_ISA_AVX2) ab__gemm_fill(k, isa);
#else
    (void)isa;
#endif
}

#ifdef __cplusplus
}
#endif

#endif /* AB_KERNELS_H */
