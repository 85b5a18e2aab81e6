/* kernels/kernels.h - the kernel contract shared by every ISA family (part of antibody.h).
 *
 * Included by antibody.h inside its implementation section; not a public header. Each ISA family
 * provides functions with the signatures below; ab__kernels_fill() builds the table for one ISA
 * by starting from the scalar oracle and overriding the entries that family implements, so a new
 * kernel can land one ISA at a time. The public wrappers in antibody.h validate every argument;
 * kernels may assume: dimensions > 0, pointers valid, no aliasing unless stated.
 */
#ifndef AB_KERNELS_H
#define AB_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ab__kernels {
    /* C = alpha*op(A)*op(B) + beta*C; m, n, k > 0; alpha != 0; beta == 0 must not read C. */
    void (*sgemm)(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc);
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
