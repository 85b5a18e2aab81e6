/* kernels/avx2.h - AVX2+FMA kernels except GEMM (part of antibody.h). Every function carries
 * __attribute__((target("avx2,fma"))); the file compiles without -mavx2. */
#ifndef AB_KERNELS_AVX2_H
#define AB_KERNELS_AVX2_H
static void ab__avx2_fill(ab__kernels *k) { (void)k; }
#endif
