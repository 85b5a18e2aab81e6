/* bench/peak.h - this machine's FMA peak, for bench_sgemm (fma_peak, fma_peak_t2, the `peak` peer)
 * and bench_step (the GPT-2 step's fraction of the limit). Include after bench.h and antibody.h.
 *   fma_loop_zmm / _ymm   24 (12) independent accumulators, >= 2 pipes x 4-cycle latency with
 *                         headroom, PEAK_STEPS steps; PEAK_FLOP_ZMM / _YMM GFLOP per call
 *   run_peak_zmm, run_peak_ymm, run_peak_zmm_t2   bench_fn entries; _t2 runs the zmm loop on each of
 *                         2 threads of the library's pool (ab_set_threads(2), 2 chunks).
 */
#ifndef AB_BENCH_PEAK_H
#define AB_BENCH_PEAK_H
#include <immintrin.h>

#define PEAK_ACC 24 /* independent accumulators: >= 2 pipes x 4 cycles x 3 for headroom */
#define PEAK_STEPS 200000L

__attribute__((target("avx512f"), noinline)) static float fma_loop_zmm(long steps) {
    __m512 acc[PEAK_ACC];
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < PEAK_ACC; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long s = 0; s < steps; s++) {
#pragma GCC unroll 24
        for (int i = 0; i < PEAK_ACC; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
        __asm__ volatile("" : "+v"(x)); /* x unknown each step: no folding of the chain */
    }
    __m512 s = acc[0];
    for (int i = 1; i < PEAK_ACC; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"), noinline)) static float fma_loop_ymm(long steps) {
    __m256 acc[12]; /* 16 ymm registers: 12 accumulators */
    __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long s = 0; s < steps; s++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
        __asm__ volatile("" : "+x"(x));
    }
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

static volatile float peak_sink;
static void run_peak_zmm(void *ctx) __attribute__((unused));
static void run_peak_ymm(void *ctx) __attribute__((unused));
static void run_peak_zmm(void *ctx) { (void)ctx; peak_sink = fma_loop_zmm(PEAK_STEPS); }
static void run_peak_ymm(void *ctx) { (void)ctx; peak_sink = fma_loop_ymm(PEAK_STEPS); }
static ab_status peak_chunk(void *ctx, int chunk, int slot) {
    (void)ctx, (void)chunk, (void)slot;
    peak_sink = fma_loop_zmm(PEAK_STEPS);
    return AB_OK;
}
/* The loop on each of 2 threads of the library's pool (the caller and a worker each claim one). */
static void run_peak_zmm_t2(void *ctx) {
    (void)ctx;
    ab_set_threads(2);
    ab_parallel_for(2, peak_chunk, NULL);
}

#define PEAK_FLOP_ZMM (2.0 * 16 * PEAK_ACC * PEAK_STEPS * 1e-9)
#define PEAK_FLOP_YMM (2.0 * 8 * 12 * PEAK_STEPS * 1e-9)

#endif
