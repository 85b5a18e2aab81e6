/* kernels/avx512.h - AVX-512 kernels except GEMM (part of antibody.h). Every function carries
 * __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))). */
#ifndef AB_KERNELS_AVX512_H
#define AB_KERNELS_AVX512_H
static void ab__avx512_fill(ab__kernels *k) { (void)k; }
#endif
