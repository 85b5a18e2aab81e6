/* kernels/gemm.h - BLIS-style SGEMM for AVX2+FMA and AVX-512 (part of antibody.h).
 *
 * C = alpha*op(A)*op(B) + beta*C, row-major, same contract as ab__scalar_sgemm.
 *
 * Five loops around an MR x NR register micro-kernel (Goto & van de Geijn 2008; Van Zee & van de
 * Geijn, "BLIS", 2015), written in row-major terms:
 *
 *   loop 5  ic over m in MC rows       pack A block  (MC x KC, MR-row micro-panels)   -> L3
 *   loop 4  pc over k in KC            (inside ic: every packed A block is packed once)
 *   loop 3  jc over n in NC columns    pack B block  (KC x NC, NR-column micro-panels) -> L2
 *   loop 2  ir over the block's rows in MR steps: the A micro-panel (MR x KC) stays in L1
 *   loop 1  jr over the block's columns in NR steps: B micro-panels stream from L2
 *           micro-kernel: an MR x NR tile of C in registers, kc rank-1 updates
 *
 * The micro-kernel loads NR consecutive floats of a packed B row (NR/16 zmm or NR/8 ymm) and
 * broadcasts MR floats of a packed A column, so C is updated along its contiguous rows. Packing does
 * the transposes: op(A) = A is packed by an in-register transpose, op(A) = A^T by row copies, and
 * the other way round for B, so X*W^T (forward), dY*W (input gradient) and dY^T*X (weight gradient)
 * run on the same kernel with no explicit transpose.
 *
 * Edges: the last micro-panel of A may have fewer than MR rows (micro-kernels exist for every row
 * count 1..MR, so no work is wasted on padding rows); the last B micro-panel is zero-padded to NR
 * columns and the C update is masked (AVX-512 mask registers; AVX2 goes through a copy-out buffer
 * so memcheck never sees partial vector accesses).
 *
 * Numerics: every element of C is computed as
 *     C = fma(alpha, acc_0, beta*C)  then  C = fma(alpha, acc_b, C)  for each later KC block b,
 * acc_b being the fma chain over that block's k in increasing order. The KC split depends only on
 * k, and each C element lies in the same register tile whatever the thread count (threads own
 * disjoint, MR/NR-aligned ranges of C), so results are bitwise identical for every thread count.
 * beta == 0 writes alpha*acc_0 without reading C (NaN in C is ignored, as in BLAS).
 *
 * Threads: the kernel starts none. sgemm_plan cuts C into `parts` (one per thread the core offers,
 * for problems above ~1M multiply-adds): contiguous ranges of whole MR-row or NR-column tiles,
 * whichever split has the shorter estimated critical path (rows duplicate the packing of B,
 * columns that of A); sgemm_part runs the five loops on one range with the packing buffers it is
 * given. The core runs the parts on its thread pool, any part on any thread, with no
 * synchronisation but the end of its parallel call.
 *
 * Unpacked operands: an operand already in micro-kernel order is read in place when its rows are
 * under 4 KiB apart (op(B) = B: rows of B are panel rows; op(A) = A^T: rows of A^T are panel
 * columns; op(A) = A: a micro-kernel variant broadcasts along rows of A with a run-time stride).
 * This covers every small shape and measured faster than packing at every such shape here; only
 * the ragged last B panel is then packed (zero-padded). Larger strides are packed: at multiples of
 * 4 KiB all rows of a micro-panel map to one L1 set, and in-place reads measured 3-6% slower at
 * strides of 1100-1536 floats.
 */
#ifndef AB_KERNELS_GEMM_H
#define AB_KERNELS_GEMM_H

#ifdef __cplusplus
extern "C" {
#endif


/* ---- blocking ----------------------------------------------------------------------------------
 * AVX-512 (Zen 5: 2 x 512-bit FMA pipes, 4-cycle latency -> 8 independent FMAs in flight per pipe;
 * 48 KiB 12-way L1D, 1 MiB L2 per core, L3 shared).                                              */
/* 14 x 32: 28 zmm accumulators (>= 16 chains for 2 pipes x 4 cycles), 2 for B, 1 for the A
 * broadcast: 31 of 32 registers. Per k step 28 FMAs need 2 vector loads + 14 broadcast loads, well
 * under Zen 5's 2 loads/cycle at 2 FMAs/cycle. */
#define AB__G512_MR 14
#define AB__G512_NR 32
/* KC and NC were chosen by measurement: bench_sgemm, ratio to openblas_skx, medians of 5
 * interleaved runs. KC x NC = 256 x 512, 256 x 1024, 384 x 256, 448 x 256, 512 x 128, 512 x 384,
 * 640 x 192 and 768 x 256 were tried at 2048^3 against the earlier 384 x 512, the best four on
 * every 1-thread shape. 512 x 256 gained 1-3% wherever k or n >= 512 (2048^3 0.984 -> 1.000,
 * 512^3 1.028 -> 1.046, 512x3072x768 nn 1.010 -> 1.042) and was even elsewhere. Our reading: a
 * larger KC spreads the C tile's load and store (28 zmm each way, once per KC block) over more
 * FMAs, and a smaller NC keeps the B block well inside L2.
 * KC: the A micro-panel (MR x KC x 4 B = 28 KiB at 512) stays in L1, being read every k step,
 * while the B micro-panel (KC x NR x 4 B = 64 KiB) streams past it from L2. */
#define AB__G512_KC 512
/* NC: the packed B block (KC x NC x 4 B = 512 KiB at 256) takes half of the 1 MiB L2 and is
 * swept once per A micro-panel; the other half holds the A panels and C tiles passing through.
 * 512 (1 MiB at KC = 512) would not fit; 128 measured the same as 256 at 2048^3 but 1% lower at
 * 256^3. */
#define AB__G512_NC 256
/* MC: the packed A block (MC x KC x 4 B = 4 MiB at 2016) lives in the L3 (32 MiB per CCD on
 * Zen 5 EPYC, shared) and is reused for every NC block of B; large so that B is packed only once
 * for every m <= 2016 (every training shape here; 1008 cost 2-3% at 1024^3 by packing B twice).
 * A multiple of MR. */
#define AB__G512_MC 2016

/* AVX2 (16 ymm). 6 x 16: 12 ymm accumulators (>= 8 chains for 2 pipes x 4 cycles), 2 for B, 1 for
 * the broadcast; the BLIS Haswell shape. */
#define AB__G256_MR 6
#define AB__G256_NR 16
/* KC: A micro-panel 6 x 384 x 4 B = 9 KiB and one B micro-panel 384 x 16 x 4 B = 24 KiB together
 * fit the 48 KiB L1. */
#define AB__G256_KC 384
/* NC: B block 384 x 512 x 4 B = 768 KiB in the 1 MiB L2. */
#define AB__G256_NC 512
/* MC: A block 2016 x 384 x 4 B = 3 MiB in L3, as for AVX-512 (a multiple of MR). */
#define AB__G256_MC 2016

/* Problems up to this many multiply-adds run in one part: a parallel call costs a few us on the
 * 2-vCPU Zen 5 VM (an OpenMP fork/join measured ~3 us), ~10 us of single-core work here, so a
 * second thread gains little below it (and lost at 64^3: 110 against 210 GFLOP/s). */
#define AB__GEMM_MIN_PAR_FMA (1024 * 1024)
/* A threaded call is cut into more parts than threads when that lengthens the estimated critical
 * path by at most this factor (see ab__gemm_make_plan). */
#define AB__GEMM_SPLIT_SLACK 1.02
/* Copy packs prefetch this many rows ahead: ~16 loop iterations cover a DRAM miss. */
#define AB__GEMM_PF_ROWS 16
/* op(A) = A^T is packed, even with rows under 4 KiB apart, once n reaches this: in place, the
 * kc steps of an A micro-panel lie lda floats apart, which for lda = 512 or 768 falls into 2 or 4
 * L1 sets, so the panel is re-read from L2 for every B micro-panel it meets; n / NR of them per
 * pass. Measured tn, k = 512, m = 768 (A^T, AVX-512 / AVX2 GFLOP/s, in place -> packed): n = 256
 * 207 -> 197 / 96 -> 92, n = 384 205 -> 200 / 93 -> 95, n = 512 204 -> 204 / 88 -> 94,
 * n = 1024 193 -> 198 / 90 -> 98, n = 3072 186 -> 195 / 95 -> 100. */
#define AB__GEMM_AT_PACK_MIN_N 512
/* The AVX-512 copy pack goes AB__GEMM_PACK_ROWS source rows at a time, panel by panel. Row by
 * row, every row stores into every panel, and panels lie R * kc floats apart (14 336 B for the A
 * panels at kc = 256, 32 KiB for the B panels): addresses in one or two L1 sets, so the stores of
 * one row evict each other's lines. 16 rows fill whole lines of a panel (16 * 14 * 4 B = 14 lines)
 * before moving on and keep 16 sequential source streams; the next 16 rows are prefetched into L2
 * meanwhile. Measured on 2304x768x512 tn (A^T packed): the pack went from 5.9% to 3.6% of the
 * time, ~197 -> ~201 GFLOP/s. */
#define AB__GEMM_PACK_ROWS 16
/* A B read in place with more than this many floats (the 1 MiB L2) is not expected in any cache
 * near the core: the micro-kernel prefetches its row AB__GEMM_PF_ROWS k steps ahead, which the
 * hardware prefetchers do not do for this stride. Paired runs, 1 thread (ratio with / without):
 * AVX-512 256x768x50304 nn 1.04, 256x768x3072 nn 1.04 (2 threads 1.036, 1.027), 512^3 0.995;
 * AVX2 256x768x3072 nn 1.03, 256x768x768 nn 1.04, but 512^3 (B 1 MiB, already in L2) 0.88:
 * hence the threshold. */
#define AB__GEMM_PF_MIN (256.0 * 1024)
/* Operands with rows closer than this (floats: 4 KiB, the L1 set-index period of 64 sets x 64 B)
 * are read in place; from 4 KiB on, all rows of a micro-panel can fall into one L1 set. */
#define AB__GEMM_INPLACE_MAX_LD 1024

/* One MR x NR tile (mr <= MR rows, nr <= NR columns) over kc steps: op(A) element (i, p) at
 * a[i*a_rs + p*a_ps] (packed: a_rs = 1, a_ps = MR), op(B) element (p, j) at b[p*b_ps + j].
 * b_pf != 0: prefetch b + b_pf at every step (B in place and large, AB__GEMM_PF_MIN). */
typedef void (*ab__gemm_kernel_fn)(int mr, int kc, const float *a, ptrdiff_t a_rs, ptrdiff_t a_ps,
                                   const float *b, ptrdiff_t b_ps, ptrdiff_t b_pf, float *c,
                                   int ldc, int nr, float alpha, float beta);
/* Pack the mc x kc block of op(A) at (i0, p0) into MR-row micro-panels (panel q at dst + q*MR*kc,
 * element (i, p) of it at [p*MR + i]), the last one zero-padded to MR rows. */
typedef void (*ab__gemm_pack_a_fn)(int trans_a, const float *A, int lda, int i0, int mc, int p0,
                                   int kc, float *dst);
/* Pack the kc x nc block of op(B) at (p0, j0) into NR-column micro-panels (panel q at
 * dst + q*NR*kc, element (p, j) at [p*NR + j]), the last one zero-padded to NR columns. */
typedef void (*ab__gemm_pack_b_fn)(int trans_b, const float *B, int ldb, int p0, int kc, int j0,
                                   int nc, float *dst);

static int ab__gemm_min(int a, int b) { return a < b ? a : b; }


typedef struct ab__gemm_impl {
    int mr, nr, kc, nc, mc;
    ab__gemm_kernel_fn kernel;
    ab__gemm_pack_a_fn pack_a;
    ab__gemm_pack_b_fn pack_b;
    /* the ISA's elementwise kernels, for the epilogue (ab__gemm_job.resid, .gelu) */
    void (*add)(float *out, const float *a, const float *b, size_t n);
    void (*gelu)(float *out, const float *x, size_t n);
} ab__gemm_impl;

/* ================================================================================================
 * AVX-512
 * ============================================================================================== */

/* g++ 12 flags the AVX-512 intrinsics' own _mm512_undefined_ps() as maybe-uninitialized once they
 * are inlined here (GCC bug 105593, fixed in 13); the C front end does not. */
#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif


/* One MRV x 32 tile: acc[i][j] = sum_p a[i*a_rs + p*a_ps] * b[p*b_ps + j] over kc steps, then
 * C = fma(alpha, acc, beta*C) (beta == 0: C = alpha*acc, C not read) on the first nr columns.
 * MRV is a literal at every call site, so the loops unroll and the accumulators stay in zmm. */
static AB__ALWAYS_INLINE AB__T_AVX512 void
ab__g512_tile(const int MRV, int kc, const float *a, ptrdiff_t a_rs, ptrdiff_t a_ps,
              const float *b, ptrdiff_t b_ps, ptrdiff_t b_pf, float *c, int ldc, int nr,
              float alpha, float beta) {
    __m512 c0[AB__G512_MR], c1[AB__G512_MR];
AB__UNROLL
    for (int i = 0; i < MRV; i++) {
        c0[i] = _mm512_setzero_ps();
        c1[i] = _mm512_setzero_ps();
        /* The C tile is read only after kc steps, and only if beta != 0: start fetching it now
         * (first and last byte of the row's NR floats, which may straddle three lines when
         * unaligned). With beta == 0 C is only written, and these 28 prefetches measured a loss
         * (64^3 0.982 -> 0.990 of openblas_skx without them, 512^3 1.044 -> 1.056). */
        if (beta != 0.0f) {
            _mm_prefetch((const char *)(c + (ptrdiff_t)i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + (ptrdiff_t)i * ldc + AB__G512_NR - 1), _MM_HINT_T0);
        }
    }
    int p = 0;
    if (a_rs == 1 && a_ps == AB__G512_MR && b_ps == AB__G512_NR) {
        /* Both panels packed: constant strides, k unrolled by 4 (the same FMA order for every
         * accumulator). A standalone copy of this tile on panels in L2, kc = 512, best of 200
         * calls on Zen 5: 0.947 -> 0.961 of the FMA peak loop (with run-time strides the unrolled
         * loop spilled its addresses: hence the constant-stride case alone). */
        for (; p + 4 <= kc; p += 4) {
AB__UNROLL
            for (int u = 0; u < 4; u++) {
                __m512 b0 = _mm512_loadu_ps(b + u * AB__G512_NR);
                __m512 b1 = _mm512_loadu_ps(b + u * AB__G512_NR + 16);
AB__UNROLL
                for (int i = 0; i < MRV; i++) {
                    __m512 av = _mm512_set1_ps(a[u * AB__G512_MR + i]);
                    c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                    c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
                }
            }
            a += 4 * AB__G512_MR;
            b += 4 * AB__G512_NR;
        }
    }
    if (a_rs == 1) { /* A packed or in place as A^T (a_rs is a literal 1 here: the branch folds) */
        for (; p < kc; p++) {
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
            /* B in place and larger than L2 (AB__GEMM_PF_MIN): fetch its row AB__GEMM_PF_ROWS
             * steps ahead, at an integer address (it may lie past the end of B: a harmless
             * hint). The strided-A loop below does not: there it measured no gain (256x768x768
             * nn 1.00, 128x768x768 nn 0.985). The branch measured free (paired, 0.994-1.004). */
            if (b_pf) {
                uintptr_t pf = (uintptr_t)b + (uintptr_t)b_pf * sizeof(float);
                _mm_prefetch((const char *)pf, _MM_HINT_T0);
                _mm_prefetch((const char *)(pf + 16 * sizeof(float)), _MM_HINT_T0);
            }
AB__UNROLL
            for (int i = 0; i < MRV; i++) {
                __m512 av = _mm512_set1_ps(a[i]);
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
            a += a_ps;
            b += b_ps;
        }
    } else {
        /* Rows of A in place, a_rs apart. 14 row offsets plus the pointers and the counter would
         * exceed the 15 free general registers (the offsets were reloaded from the stack every
         * step); instead every row is base + index * {1, 2, 4, 8} from two bases (rows 0 and 7)
         * and three byte offsets (1, 3 and 5 rows): 8 registers in all. */
        const char *a0 = (const char *)a, *a7 = (const char *)(a + 7 * a_rs);
        const ptrdiff_t r1 = a_rs * (ptrdiff_t)sizeof(float), r3 = 3 * r1, r5 = 5 * r1;
        const ptrdiff_t step = a_ps * (ptrdiff_t)sizeof(float);
        for (int p = 0; p < kc; p++) {
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
AB__UNROLL
            for (int i = 0; i < MRV; i++) {
                const char *base = i < 7 ? a0 : a7;
                int j = i < 7 ? i : i - 7;
                const char *row = j == 0 ? base : j == 1 ? base + r1 : j == 2 ? base + 2 * r1
                                : j == 3 ? base + r3 : j == 4 ? base + 4 * r1 : j == 5 ? base + r5
                                : base + 2 * r3;
                __m512 av = _mm512_set1_ps(*(const float *)row);
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
            a0 += step;
            a7 += step;
            b += b_ps;
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (nr == AB__G512_NR) {
        if (beta == 0.0f && alpha == 1.0f) { /* the common overwrite: 1*acc == acc exactly */
AB__UNROLL
            for (int i = 0; i < MRV; i++) {
                float *ci = c + (ptrdiff_t)i * ldc;
                _mm512_storeu_ps(ci, c0[i]);
                _mm512_storeu_ps(ci + 16, c1[i]);
            }
        } else if (beta == 0.0f) {
AB__UNROLL
            for (int i = 0; i < MRV; i++) {
                float *ci = c + (ptrdiff_t)i * ldc;
                _mm512_storeu_ps(ci, _mm512_mul_ps(va, c0[i]));
                _mm512_storeu_ps(ci + 16, _mm512_mul_ps(va, c1[i]));
            }
        } else {
AB__UNROLL
            for (int i = 0; i < MRV; i++) {
                float *ci = c + (ptrdiff_t)i * ldc;
                __m512 o0 = _mm512_mul_ps(vb, _mm512_loadu_ps(ci));
                __m512 o1 = _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16));
                _mm512_storeu_ps(ci, _mm512_fmadd_ps(va, c0[i], o0));
                _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(va, c1[i], o1));
            }
        }
        return;
    }
    /* Edge tile: the same arithmetic under lane masks (masked-off lanes are neither read nor
     * written, so columns past n are never touched). */
    __mmask16 k0 = (__mmask16)(nr >= 16 ? 0xFFFFu : (1u << nr) - 1u);
    __mmask16 k1 = (__mmask16)(nr <= 16 ? 0u : (1u << (nr - 16)) - 1u);
AB__UNROLL
    for (int i = 0; i < MRV; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        __m512 r0 = _mm512_mul_ps(va, c0[i]), r1 = _mm512_mul_ps(va, c1[i]);
        if (beta != 0.0f) {
            r0 = _mm512_fmadd_ps(va, c0[i], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(k0, ci)));
            r1 = _mm512_fmadd_ps(va, c1[i], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(k1, ci + 16)));
        }
        _mm512_mask_storeu_ps(ci, k0, r0);
        _mm512_mask_storeu_ps(ci + 16, k1, r1);
    }
}

/* One function per row count, so edge micro-panels do no padded work (and perf names them); the
 * _s variants read op(A) with a run-time row stride (rows of an unpacked A, small problems). */
#define AB__G512_KERNEL(r)                                                                         \
    static AB__T_AVX512 void ab__g512_kernel_##r(int kc, const float *a, ptrdiff_t a_rs,          \
                                                 ptrdiff_t a_ps, const float *b, ptrdiff_t b_ps,   \
                                                 ptrdiff_t b_pf,                                   \
                                                 float *c, int ldc, int nr, float alpha,           \
                                                 float beta) {                                     \
        (void)a_rs;                                                                                \
        ab__g512_tile(r, kc, a, 1, a_ps, b, b_ps, b_pf, c, ldc, nr, alpha, beta);                  \
    }                                                                                              \
    static AB__T_AVX512 void ab__g512_kernel_s##r(int kc, const float *a, ptrdiff_t a_rs,         \
                                                  ptrdiff_t a_ps, const float *b, ptrdiff_t b_ps,  \
                                                  ptrdiff_t b_pf,                                  \
                                                  float *c, int ldc, int nr, float alpha,          \
                                                  float beta) {                                    \
        ab__g512_tile(r, kc, a, a_rs, a_ps, b, b_ps, b_pf, c, ldc, nr, alpha, beta);               \
    }
AB__G512_KERNEL(1)
AB__G512_KERNEL(2)
AB__G512_KERNEL(3)
AB__G512_KERNEL(4)
AB__G512_KERNEL(5)
AB__G512_KERNEL(6)
AB__G512_KERNEL(7)
AB__G512_KERNEL(8)
AB__G512_KERNEL(9)
AB__G512_KERNEL(10)
AB__G512_KERNEL(11)
AB__G512_KERNEL(12)
AB__G512_KERNEL(13)
AB__G512_KERNEL(14)
#undef AB__G512_KERNEL

typedef void (*ab__gemm_tile_fn)(int kc, const float *a, ptrdiff_t a_rs, ptrdiff_t a_ps,
                                 const float *b, ptrdiff_t b_ps, ptrdiff_t b_pf, float *c,
                                 int ldc, int nr, float alpha, float beta);

static void ab__g512_kernel(int mr, int kc, const float *a, ptrdiff_t a_rs, ptrdiff_t a_ps,
                            const float *b, ptrdiff_t b_ps, ptrdiff_t b_pf, float *c, int ldc,
                            int nr, float alpha, float beta) {
    static const ab__gemm_tile_fn unit[AB__G512_MR] = {
        ab__g512_kernel_1,  ab__g512_kernel_2,  ab__g512_kernel_3,  ab__g512_kernel_4,
        ab__g512_kernel_5,  ab__g512_kernel_6,  ab__g512_kernel_7,  ab__g512_kernel_8,
        ab__g512_kernel_9,  ab__g512_kernel_10, ab__g512_kernel_11, ab__g512_kernel_12,
        ab__g512_kernel_13, ab__g512_kernel_14};
    static const ab__gemm_tile_fn strided[AB__G512_MR] = {
        ab__g512_kernel_s1,  ab__g512_kernel_s2,  ab__g512_kernel_s3,  ab__g512_kernel_s4,
        ab__g512_kernel_s5,  ab__g512_kernel_s6,  ab__g512_kernel_s7,  ab__g512_kernel_s8,
        ab__g512_kernel_s9,  ab__g512_kernel_s10, ab__g512_kernel_s11, ab__g512_kernel_s12,
        ab__g512_kernel_s13, ab__g512_kernel_s14};
    ab__gemm_tile_fn tile = a_rs == 1 ? unit[mr - 1] : strided[mr - 1];
    tile(kc, a, a_rs, a_ps, b, b_ps, b_pf, c, ldc, nr, alpha, beta);
}

static inline __mmask16 ab__g512_mask(int lanes) { /* the low min(max(lanes, 0), 16) lanes */
    return (__mmask16)(lanes >= 16 ? 0xFFFFu : lanes <= 0 ? 0u : (1u << lanes) - 1u);
}

/* In-register transpose of 16 rows of 16 floats: r[i][j] -> r[j][i]. Unpack pairs of rows, then
 * pairs of pairs (64-bit unpacks), then the 4 x 4 grid of 128-bit lanes (two shuffle rounds). */
static AB__ALWAYS_INLINE AB__T_AVX512 void ab__g512_transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
AB__UNROLL
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + c], lane L: rows 4g..4g+3 of column 4L + c */
AB__UNROLL
    for (int g = 0; g < 4; g++) {
        __m512d lo0 = _mm512_castps_pd(t[4 * g]), hi0 = _mm512_castps_pd(t[4 * g + 1]);
        __m512d lo1 = _mm512_castps_pd(t[4 * g + 2]), hi1 = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
    }
AB__UNROLL
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

/* dst[p*R + i] = src[i*ld + p] for i < rows, p < kc; 0 for rows <= i < R (R <= 32). */
static AB__T_AVX512 void ab__g512_pack_transpose(float *dst, int R, const float *src, int ld,
                                                 int rows, int kc) {
    for (int i0 = 0; i0 < R; i0 += 16) {
        int h = rows - i0;
        __mmask16 store_mask = ab__g512_mask(R - i0);
        for (int p0 = 0; p0 < kc; p0 += 16) {
            int q = kc - p0;
            __mmask16 load_mask = ab__g512_mask(q);
            __m512 r[16];
AB__UNROLL
            for (int i = 0; i < 16; i++) {
                const float *row = src + (ptrdiff_t)(i0 + i) * ld + p0;
                r[i] = i < h ? _mm512_maskz_loadu_ps(load_mask, row) : _mm512_setzero_ps();
                /* the same line R rows down, where the caller's next panel starts */
                if (i < h) _mm_prefetch((const char *)(row + (ptrdiff_t)R * ld), _MM_HINT_T0);
            }
            ab__g512_transpose16(r);
AB__UNROLL
            for (int j = 0; j < 16; j++)
                if (j < q) _mm512_mask_storeu_ps(dst + (ptrdiff_t)(p0 + j) * R + i0, store_mask, r[j]);
        }
    }
}

/* Panels of R columns from rows of src: panel q holds columns [q*R, q*R + R) of the cols, at
 * dst + q*R*kc, row p at [p*R], zero-padded past cols; rows p_begin..p_end-1 only. Blocks of
 * AB__GEMM_PACK_ROWS rows of src go panel by panel (whole lines of each panel, 16 short
 * sequential source streams), and the next block is prefetched into L2 meanwhile. R <= 32. */
static AB__T_AVX512 void ab__g512_pack_copy(float *dst, int R, const float *src, int ld, int cols,
                                            int kc, int p_begin, int p_end) {
    __mmask16 s0 = ab__g512_mask(R), s1 = ab__g512_mask(R - 16);
    const ptrdiff_t next = (ptrdiff_t)AB__GEMM_PACK_ROWS * ld;
    for (int pb = p_begin; pb < p_end; pb += AB__GEMM_PACK_ROWS) {
        int pe = ab__gemm_min(pb + AB__GEMM_PACK_ROWS, p_end);
        float *d = dst;
        for (int c0 = 0; c0 < cols; c0 += R, d += (ptrdiff_t)R * kc) {
            int w = cols - c0;
            for (int p = pb; p < pe; p++) {
                const float *s = src + (ptrdiff_t)p * ld + c0;
                float *dp = d + (ptrdiff_t)p * R;
                /* an integer address: the row may lie past the end of src (a harmless hint) */
                _mm_prefetch((const char *)((uintptr_t)s + (uintptr_t)next * sizeof(float)), _MM_HINT_T1);
                if (R == 32 && w >= 32) {
                    _mm512_storeu_ps(dp, _mm512_loadu_ps(s));
                    _mm512_storeu_ps(dp + 16, _mm512_loadu_ps(s + 16));
                    continue;
                }
                _mm512_mask_storeu_ps(dp, s0, _mm512_maskz_loadu_ps(ab__g512_mask(w), s));
                if (R > 16)
                    _mm512_mask_storeu_ps(dp + 16, s1, _mm512_maskz_loadu_ps(ab__g512_mask(w - 16), s + 16));
            }
        }
    }
}

static void ab__g512_pack_a(int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc,
                            float *dst) {
    const int MR = AB__G512_MR;
    if (trans_a) { /* op(A)[i][p] = A[p][i]: rows of A are columns of op(A) */
        ab__g512_pack_copy(dst, MR, A + (ptrdiff_t)p0 * lda + i0, lda, mc, kc, 0, kc);
        return;
    }
    for (int q = 0; q * MR < mc; q++) /* transpose MR rows of A at a time */
        ab__g512_pack_transpose(dst + (ptrdiff_t)q * MR * kc, MR, A + (ptrdiff_t)(i0 + q * MR) * lda + p0,
                                lda, ab__gemm_min(MR, mc - q * MR), kc);
}

static void ab__g512_pack_b(int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc,
                            float *dst) {
    const int NR = AB__G512_NR;
    if (!trans_b) { /* rows of B are rows of op(B) */
        ab__g512_pack_copy(dst, NR, B + (ptrdiff_t)p0 * ldb + j0, ldb, nc, kc, 0, kc);
        return;
    }
    for (int q = 0; q * NR < nc; q++) /* op(B)[p][j] = B[j][p]: transpose NR rows of B */
        ab__g512_pack_transpose(dst + (ptrdiff_t)q * NR * kc, NR, B + (ptrdiff_t)(j0 + q * NR) * ldb + p0,
                                ldb, ab__gemm_min(NR, nc - q * NR), kc);
}

#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* ================================================================================================
 * AVX2 + FMA
 * ============================================================================================== */

static AB__ALWAYS_INLINE AB__T_AVX2 void
ab__g256_tile(const int MRV, int kc, const float *a, ptrdiff_t a_rs, ptrdiff_t a_ps,
              const float *b, ptrdiff_t b_ps, ptrdiff_t b_pf, float *c, int ldc, int nr,
              float alpha, float beta) {
    __m256 c0[AB__G256_MR], c1[AB__G256_MR];
AB__UNROLL
    for (int i = 0; i < MRV; i++) {
        c0[i] = _mm256_setzero_ps();
        c1[i] = _mm256_setzero_ps();
    }
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        if (b_pf) { /* as in ab__g512_tile */
            uintptr_t pf = (uintptr_t)b + (uintptr_t)b_pf * sizeof(float);
            _mm_prefetch((const char *)pf, _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + 15 * sizeof(float)), _MM_HINT_T0);
        }
AB__UNROLL
        for (int i = 0; i < MRV; i++) {
            __m256 av = _mm256_broadcast_ss(a + i * a_rs);
            c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
        }
        a += a_ps;
        b += b_ps;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
AB__UNROLL
    for (int i = 0; i < MRV; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        /* Edge tile: copy the valid columns through a 16-float buffer so only they are read and
         * written (no partial vector accesses); same arithmetic as a full tile. */
        float buf[AB__G256_NR];
        float *io = ci;
        if (nr < AB__G256_NR) {
            io = buf;
            for (int j = 0; j < AB__G256_NR; j++) buf[j] = j < nr && beta != 0.0f ? ci[j] : 0.0f;
        }
        __m256 r0 = _mm256_mul_ps(va, c0[i]), r1 = _mm256_mul_ps(va, c1[i]);
        if (beta != 0.0f) {
            r0 = _mm256_fmadd_ps(va, c0[i], _mm256_mul_ps(vb, _mm256_loadu_ps(io)));
            r1 = _mm256_fmadd_ps(va, c1[i], _mm256_mul_ps(vb, _mm256_loadu_ps(io + 8)));
        }
        _mm256_storeu_ps(io, r0);
        _mm256_storeu_ps(io + 8, r1);
        if (nr < AB__G256_NR)
            for (int j = 0; j < nr; j++) ci[j] = buf[j];
    }
}

#define AB__G256_KERNEL(r)                                                                         \
    static AB__T_AVX2 void ab__g256_kernel_##r(int kc, const float *a, ptrdiff_t a_rs,            \
                                               ptrdiff_t a_ps, const float *b, ptrdiff_t b_ps,     \
                                               ptrdiff_t b_pf,                                     \
                                               float *c, int ldc, int nr, float alpha,             \
                                               float beta) {                                       \
        (void)a_rs;                                                                                \
        ab__g256_tile(r, kc, a, 1, a_ps, b, b_ps, b_pf, c, ldc, nr, alpha, beta);                  \
    }                                                                                              \
    static AB__T_AVX2 void ab__g256_kernel_s##r(int kc, const float *a, ptrdiff_t a_rs,           \
                                                ptrdiff_t a_ps, const float *b, ptrdiff_t b_ps,    \
                                                ptrdiff_t b_pf,                                    \
                                                float *c, int ldc, int nr, float alpha,            \
                                                float beta) {                                      \
        ab__g256_tile(r, kc, a, a_rs, a_ps, b, b_ps, b_pf, c, ldc, nr, alpha, beta);               \
    }
AB__G256_KERNEL(1)
AB__G256_KERNEL(2)
AB__G256_KERNEL(3)
AB__G256_KERNEL(4)
AB__G256_KERNEL(5)
AB__G256_KERNEL(6)
#undef AB__G256_KERNEL

static void ab__g256_kernel(int mr, int kc, const float *a, ptrdiff_t a_rs, ptrdiff_t a_ps,
                            const float *b, ptrdiff_t b_ps, ptrdiff_t b_pf, float *c, int ldc,
                            int nr, float alpha, float beta) {
    static const ab__gemm_tile_fn unit[AB__G256_MR] = {ab__g256_kernel_1, ab__g256_kernel_2,
                                                       ab__g256_kernel_3, ab__g256_kernel_4,
                                                       ab__g256_kernel_5, ab__g256_kernel_6};
    static const ab__gemm_tile_fn strided[AB__G256_MR] = {ab__g256_kernel_s1, ab__g256_kernel_s2,
                                                          ab__g256_kernel_s3, ab__g256_kernel_s4,
                                                          ab__g256_kernel_s5, ab__g256_kernel_s6};
    ab__gemm_tile_fn tile = a_rs == 1 ? unit[mr - 1] : strided[mr - 1];
    tile(kc, a, a_rs, a_ps, b, b_ps, b_pf, c, ldc, nr, alpha, beta);
}

/* 8 x 8 transpose: unpack pairs, 64-bit unpacks, then swap 128-bit halves. */
static AB__ALWAYS_INLINE AB__T_AVX2 void ab__g256_transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
AB__UNROLL
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
AB__UNROLL
    for (int g = 0; g < 2; g++) {
        __m256d lo0 = _mm256_castps_pd(t[4 * g]), hi0 = _mm256_castps_pd(t[4 * g + 1]);
        __m256d lo1 = _mm256_castps_pd(t[4 * g + 2]), hi1 = _mm256_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(lo0, lo1));
        u[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(lo0, lo1));
        u[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(hi0, hi1));
        u[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(hi0, hi1));
    }
AB__UNROLL
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

/* dst[p*R + i] = src[i*ld + p] for i < rows, p < kc; 0 for rows <= i < R. */
static AB__T_AVX2 void ab__g256_pack_transpose(float *dst, int R, const float *src, int ld,
                                               int rows, int kc) {
    for (int i0 = 0; i0 < R; i0 += 8) {
        int h = rows - i0, w = R - i0 < 8 ? R - i0 : 8;
        int p0 = 0;
        for (; p0 + 8 <= kc; p0 += 8) {
            __m256 r[8];
AB__UNROLL
            for (int i = 0; i < 8; i++)
                r[i] = i < h ? _mm256_loadu_ps(src + (ptrdiff_t)(i0 + i) * ld + p0)
                             : _mm256_setzero_ps();
            ab__g256_transpose8(r);
            if (w == 8) {
AB__UNROLL
                for (int j = 0; j < 8; j++) _mm256_storeu_ps(dst + (ptrdiff_t)(p0 + j) * R + i0, r[j]);
            } else {
AB__UNROLL
                for (int j = 0; j < 8; j++) {
                    float tmp[8];
                    _mm256_storeu_ps(tmp, r[j]);
                    memcpy(dst + (ptrdiff_t)(p0 + j) * R + i0, tmp, sizeof(float) * (size_t)w);
                }
            }
        }
        for (; p0 < kc; p0++)
            for (int i = 0; i < w; i++)
                dst[(ptrdiff_t)p0 * R + i0 + i] = i < h ? src[(ptrdiff_t)(i0 + i) * ld + p0] : 0.0f;
    }
}

/* As ab__g512_pack_copy: R-column panels from whole rows of src, rows p_begin..p_end-1. */
static AB__T_AVX2 void ab__g256_pack_copy(float *dst, int R, const float *src, int ld, int cols,
                                          int kc, int p_begin, int p_end) {
    const ptrdiff_t ahead = (ptrdiff_t)AB__GEMM_PF_ROWS * ld;
    for (int p = p_begin; p < p_end; p++) {
        const float *s = src + (ptrdiff_t)p * ld;
        float *d = dst + (ptrdiff_t)p * R;
        _mm_prefetch((const char *)(s + ahead), _MM_HINT_T0);
        for (int c0 = 0; c0 < cols; c0 += R, d += (ptrdiff_t)R * kc) {
            int w = cols - c0, i = 0;
            if (w >= R)
                for (; i + 8 <= R; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(s + c0 + i));
            for (; i < R; i++) d[i] = i < w ? s[c0 + i] : 0.0f;
        }
    }
}

static void ab__g256_pack_a(int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc,
                            float *dst) {
    const int MR = AB__G256_MR;
    if (trans_a) {
        ab__g256_pack_copy(dst, MR, A + (ptrdiff_t)p0 * lda + i0, lda, mc, kc, 0, kc);
        return;
    }
    for (int q = 0; q * MR < mc; q++)
        ab__g256_pack_transpose(dst + (ptrdiff_t)q * MR * kc, MR, A + (ptrdiff_t)(i0 + q * MR) * lda + p0,
                                lda, ab__gemm_min(MR, mc - q * MR), kc);
}

static void ab__g256_pack_b(int trans_b, const float *B, int ldb, int p0, int kc, int j0, int nc,
                            float *dst) {
    const int NR = AB__G256_NR;
    if (!trans_b) {
        ab__g256_pack_copy(dst, NR, B + (ptrdiff_t)p0 * ldb + j0, ldb, nc, kc, 0, kc);
        return;
    }
    for (int q = 0; q * NR < nc; q++)
        ab__g256_pack_transpose(dst + (ptrdiff_t)q * NR * kc, NR, B + (ptrdiff_t)(j0 + q * NR) * ldb + p0,
                                ldb, ab__gemm_min(NR, nc - q * NR), kc);
}

/* ================================================================================================
 * The five loops (ISA-independent; all arithmetic happens in the kernels above)
 * ============================================================================================== */

static const ab__gemm_impl ab__g512_impl = {AB__G512_MR, AB__G512_NR, AB__G512_KC, AB__G512_NC,
                                            AB__G512_MC, ab__g512_kernel, ab__g512_pack_a,
                                            ab__g512_pack_b, ab__avx512_add, ab__avx512_gelu_forward};
static const ab__gemm_impl ab__g256_impl = {AB__G256_MR, AB__G256_NR, AB__G256_KC, AB__G256_NC,
                                            AB__G256_MC, ab__g256_kernel, ab__g256_pack_a,
                                            ab__g256_pack_b, ab__avx2_add, ab__avx2_gelu_forward};

static int ab__gemm_ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Split len into ceil(len / cap) equal steps, rounded up to a multiple of unit (load balance:
 * k = 768 with KC = 512 becomes 2 x 384, not 512 + 256). A len that fits one block is that one
 * block, without the divisions: they are chained, and with the driver not yet inlined per ISA
 * (divisions by a run-time MR) a whole 14x32x1 call cost 45 ns; with both changes, 27 ns. */
static AB__ALWAYS_INLINE int ab__gemm_step(int len, int cap, int unit) {
    if (len <= cap) return len;
    int blocks = ab__gemm_ceil_div(len, cap);
    int step = ab__gemm_ceil_div(len, blocks);
    return ab__gemm_ceil_div(step, unit) * unit;
}

/* After the last k block of rows [i0, i0 + mr), columns [j0, j0 + nc): C += resid, gelu = GELU(C). */
static AB__ALWAYS_INLINE void ab__gemm_epilogue(const ab__gemm_impl *im, const ab__gemm_job *g, int i0,
                                                int mr, int j0, int nc) {
    for (int i = i0; i < i0 + mr; i++) {
        float *c = g->C + (ptrdiff_t)i * g->ldc + j0;
        if (g->resid) im->add(c, c, g->resid + (ptrdiff_t)i * g->ldr + j0, (size_t)nc);
        if (g->gelu) im->gelu(g->gelu + (ptrdiff_t)i * g->ldg + j0, c, (size_t)nc);
    }
}

/* The five loops over rows [i0, i1) and columns [j0, j1) of C, with this thread's packing
 * buffers abuf (>= mc_step rounded up to MR, times kc_step floats) and bbuf (>= kc_step times
 * nc_step rounded up to NR floats): the packs zero-pad the last micro-panel. */
static AB__ALWAYS_INLINE void ab__gemm_block(const ab__gemm_impl *im, const ab__gemm_job *g,
                                             int i0, int i1, int j0, int j1, float *abuf,
                                             float *bbuf) {
    const int MR = im->mr, NR = im->nr;
    int mc_step = ab__gemm_step(i1 - i0, im->mc, MR);
    int nc_step = j1 > j0 ? ab__gemm_step(j1 - j0, im->nc, NR) : NR;
    for (int ic = i0; ic < i1; ic += mc_step) {                           /* loop 5: MC */
        int mc = ab__gemm_min(mc_step, i1 - ic);
        for (int pc = 0; pc < g->k; pc += g->kc_step) {                   /* loop 4: KC */
            int kc = ab__gemm_min(g->kc_step, g->k - pc);
            float beta = pc == 0 && !g->bias ? g->beta : 1.0f; /* a bias is preset in C */
            int last = pc + kc == g->k;
            if (!g->a_inplace) im->pack_a(g->trans_a, g->A, g->lda, ic, mc, pc, kc, abuf);
            for (int jc = j0; jc < j1; jc += nc_step) {                   /* loop 3: NC */
                int nc = ab__gemm_min(nc_step, j1 - jc);
                if (!g->b_inplace)
                    im->pack_b(g->trans_b, g->B, g->ldb, pc, kc, jc, nc, bbuf);
                else if (nc % NR) /* in place: only the ragged edge panel is packed, at bbuf */
                    im->pack_b(g->trans_b, g->B, g->ldb, pc, kc, jc + nc - nc % NR, nc % NR, bbuf);
                for (int ir = 0; ir < mc; ir += MR) {                     /* loop 2: MR */
                    int mr = ab__gemm_min(MR, mc - ir);
                    const float *a = abuf + (ptrdiff_t)ir * kc;
                    ptrdiff_t a_rs = 1, a_ps = MR;
                    if (g->a_inplace && g->trans_a) { /* rows of A are columns of op(A) */
                        a = g->A + (ptrdiff_t)pc * g->lda + ic + ir;
                        a_ps = g->lda;
                    } else if (g->a_inplace) { /* rows of A are rows of op(A) */
                        a = g->A + (ptrdiff_t)(ic + ir) * g->lda + pc;
                        a_rs = g->lda;
                        a_ps = 1;
                    }
                    float *c = g->C + (ptrdiff_t)(ic + ir) * g->ldc + jc;
                    if (pc == 0 && g->bias) /* the row panel in L1, where the kernel reads it */
                        for (int i = 0; i < mr; i++)
                            memcpy(c + (ptrdiff_t)i * g->ldc, g->bias + jc, sizeof(float) * (size_t)nc);
                    for (int jr = 0; jr < nc; jr += NR) {                 /* loop 1: NR */
                        int nr = ab__gemm_min(NR, nc - jr);
                        const float *b = bbuf + (ptrdiff_t)jr * kc;
                        ptrdiff_t b_ps = NR, b_pf = 0;
                        if (g->b_inplace && nr == NR) {
                            b = g->B + (ptrdiff_t)pc * g->ldb + jc + jr;
                            b_ps = g->ldb;
                            b_pf = g->b_prefetch ? (ptrdiff_t)AB__GEMM_PF_ROWS * g->ldb : 0;
                        } else if (g->b_inplace) {
                            b = bbuf;
                        }
                        im->kernel(mr, kc, a, a_rs, a_ps, b, b_ps, b_pf, c + jr, g->ldc, nr, g->alpha, beta);
                    }
                    if (last && (g->resid || g->gelu)) /* the epilogue, on the row panel in L1 */
                        ab__gemm_epilogue(im, g, ic + ir, mr, jc, nc);
                }
            }
        }
    }
}

/* Part t of `parts` owns units [t*units/parts, (t+1)*units/parts) of `unit` rows or columns. */
static void ab__gemm_part_range(int t, int parts, int units, int unit, int len, int *lo, int *hi) {
    long long u0 = (long long)t * units / parts, u1 = (long long)(t + 1) * units / parts;
    *lo = (int)(u0 * unit < len ? u0 * unit : len);
    *hi = (int)(u1 * unit < len ? u1 * unit : len);
}

static size_t ab__gemm_round16(size_t floats) { return (floats + 15) & ~(size_t)15; }

/* The plan of one call: operand handling, the split of C into parts and the workspace per part.
 * It depends on the shapes, the leading dimensions and the thread count only (never the data). */
static AB__ALWAYS_INLINE void ab__gemm_make_plan(const ab__gemm_impl *im, ab__gemm_job *p,
                                                 int n_threads) {
    const int m = p->m, n = p->n, k = p->k;
    p->kc_step = ab__gemm_step(k, im->kc, 1);
    double fmas = (double)m * n * k;
    /* Operands are read in place, unpacked, when their rows are under 4 KiB apart: op(A) = A by
     * rows (strided micro-kernel), op(A) = A^T by columns, op(B) = B. Measured faster than packing
     * at every such shape here (e.g. 512x128x256 tn 171 -> 215 GFLOP/s, 256^3 207 -> 220); at 4 KiB
     * and beyond every row of a micro-panel maps to the same L1 set, which packing avoids. A^T is
     * packed for wide C all the same (AB__GEMM_AT_PACK_MIN_N). */
    p->a_inplace = p->lda < AB__GEMM_INPLACE_MAX_LD && (!p->trans_a || n < AB__GEMM_AT_PACK_MIN_N);
    p->b_inplace = !p->trans_b && p->ldb < AB__GEMM_INPLACE_MAX_LD;
    p->b_prefetch = p->b_inplace && (double)k * n > AB__GEMM_PF_MIN;

    /* Threads: every part runs the five loops on its own range of C, whole MR-row or NR-column
     * tiles, with its own packing buffers and no synchronisation until the end (a shared packed
     * block measured worse: 1.7x at 1024^3 on 2 cores against 1.9x, its panels bouncing between
     * the cores' L2s). Splitting rows makes every part pack all of B (if B is packed), splitting
     * columns all of A: pick the split with the smaller estimated critical path, in cycles: the
     * largest part's multiply-adds at NR per cycle (2 FMA pipes x NR/2 lanes) plus its packing,
     * measured in place at ~1.5 cycles per float for a transposing pack and ~0.5 for a copying
     * one (1024^3 on 2 threads: rows 404, columns 375 GFLOP/s; 512x3072x768 with A in place:
     * rows 367, columns 383). */
    int threads = fmas <= (double)AB__GEMM_MIN_PAR_FMA || n_threads < 1 ? 1 : n_threads;
    int m_units = ab__gemm_ceil_div(m, im->mr), n_units = ab__gemm_ceil_div(n, im->nr);
    int parts = 1, split_n = 0;
    if (threads > 1) {
        /* Candidates: rows or columns, threads x F parts for F = 1, 2, 4. More parts than threads
         * let a thread that runs late (another process holds its core) leave the parts it has not
         * claimed to the others, instead of the caller waiting for a whole thread's share; they
         * cost the duplicated packing of the other operand, F times per thread. Take the largest
         * F whose critical path is within AB__GEMM_SPLIT_SLACK of the best one. */
        double a_pack = p->a_inplace ? 0.0 : (double)m * k * (p->trans_a ? 0.5 : 1.5);
        double b_pack = p->b_inplace ? 0.0 : (double)k * n * (p->trans_b ? 1.5 : 0.5);
        double best = 1e300, crit[2][3];
        for (int by_n = 0; by_n < 2; by_n++) {
            for (int f = 0; f < 3; f++) {
                int units = by_n ? n_units : m_units, cand = threads << f;
                crit[by_n][f] = 1e300;
                if (cand > units && f > 0) continue;
                if (cand > units) cand = units;
                double len = (double)ab__gemm_ceil_div(units, cand) * (by_n ? im->nr : im->mr);
                double part = by_n ? len * m * k / im->nr + a_pack + b_pack * len / n
                                   : len * n * k / im->nr + b_pack + a_pack * len / m;
                crit[by_n][f] = part * ab__gemm_ceil_div(cand, threads);
                if (crit[by_n][f] < best) best = crit[by_n][f];
            }
        }
        for (int f = 2; f >= 0 && parts == 1; f--)
            for (int by_n = 0; by_n < 2 && parts == 1; by_n++)
                if (crit[by_n][f] <= best * AB__GEMM_SPLIT_SLACK) {
                    int units = by_n ? n_units : m_units;
                    parts = (threads << f) < units ? threads << f : units;
                    split_n = by_n;
                }
    }
    p->parts = parts;
    p->split_n = split_n;
    p->units = split_n ? n_units : m_units;

    /* Buffers: an A and a B block per part, sized for the largest part (MC and NC are
     * multiples of MR and NR, so a block step never exceeds them). */
    size_t a_floats = 0, b_floats = 0;
    int part_units = ab__gemm_ceil_div(p->units, parts);
    int a_rows = ab__gemm_min(split_n ? m_units * im->mr : part_units * im->mr, im->mc);
    int b_cols = ab__gemm_min(split_n ? part_units * im->nr : n_units * im->nr, im->nc);
    if (!p->a_inplace) a_floats = (size_t)a_rows * p->kc_step;
    if (!p->b_inplace) b_floats = (size_t)b_cols * p->kc_step;
    else if (n % im->nr) b_floats = (size_t)im->nr * p->kc_step; /* the ragged edge panel */
    p->a_floats = ab__gemm_round16(a_floats); /* keep every buffer 64-byte aligned */
    p->ws_floats = p->a_floats + ab__gemm_round16(b_floats);
}

/* Part `part` of a planned job; buf: job->ws_floats floats, 64-byte aligned (NULL when 0). */
static AB__ALWAYS_INLINE void ab__gemm_run_part(const ab__gemm_impl *im, const ab__gemm_job *g,
                                                int part, float *buf) {
    float *abuf = buf, *bbuf = buf ? buf + g->a_floats : NULL;
    if (g->parts == 1) {
        ab__gemm_block(im, g, 0, g->m, 0, g->n, abuf, bbuf);
        return;
    }
    int lo, hi;
    ab__gemm_part_range(part, g->parts, g->units, g->split_n ? im->nr : im->mr,
                        g->split_n ? g->n : g->m, &lo, &hi);
    if (lo >= hi) return;
    if (g->split_n)
        ab__gemm_block(im, g, 0, g->m, lo, hi, abuf, bbuf);
    else
        ab__gemm_block(im, g, lo, hi, 0, g->n, abuf, bbuf);
}

static void ab__avx512_sgemm_plan(ab__gemm_job *job, int n_threads) {
    ab__gemm_make_plan(&ab__g512_impl, job, n_threads);
}
static void ab__avx512_sgemm_part(const ab__gemm_job *job, int part, float *workspace) {
    ab__gemm_run_part(&ab__g512_impl, job, part, workspace);
}
static void ab__avx2_sgemm_plan(ab__gemm_job *job, int n_threads) {
    ab__gemm_make_plan(&ab__g256_impl, job, n_threads);
}
static void ab__avx2_sgemm_part(const ab__gemm_job *job, int part, float *workspace) {
    ab__gemm_run_part(&ab__g256_impl, job, part, workspace);
}

static void ab__gemm_fill(ab__kernels *k, ab_isa isa) {
    if (isa >= AB_ISA_AVX512) {
        k->sgemm_plan = ab__avx512_sgemm_plan;
        k->sgemm_part = ab__avx512_sgemm_part;
    } else if (isa >= AB_ISA_AVX2) {
        k->sgemm_plan = ab__avx2_sgemm_plan;
        k->sgemm_part = ab__avx2_sgemm_part;
    }
}

#ifdef __cplusplus
}
#endif

#endif /* AB_KERNELS_GEMM_H */
