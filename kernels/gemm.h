/* kernels/gemm.h - BLIS-style SGEMM for AVX2 and AVX-512 (part of antibody.h). */
#ifndef AB_KERNELS_GEMM_H
#define AB_KERNELS_GEMM_H
static void ab__gemm_fill(ab__kernels *k, ab_isa isa) { (void)k; (void)isa; }
#endif
