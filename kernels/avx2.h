/* kernels/avx2.h - AVX2+FMA kernels except GEMM (part of antibody.h).
 *
 * Every function carries __attribute__((target("avx2,fma"))): the file compiles without -mavx2 and
 * the code only runs when dispatch found AVX2+FMA (CPUID + XCR0). Same contract as the scalar
 * oracle (kernels/scalar.h); the differences are the ones DESIGN.md allows:
 *   - FMA where the scalar code rounds a product and a sum separately (one rounding instead of two);
 *   - sums along a row in 8 (or 16) lanes plus a fixed horizontal reduction instead of a sequential
 *     sum. The lane order depends only on the length, so every result is still deterministic.
 * exp is the scalar algorithm (Cody-Waite reduction, degree-7 Taylor polynomial, scale by 2^n) on
 * vectors, with FMA, n = round(x*log2e), the same two-step scaling into the subnormal range and the
 * same results outside it (NaN -> NaN, x > AB_EXPF_MAX_X -> +inf, x < -103.97 -> 0), obtained by
 * clamping x rather than by compare-and-blend.
 *
 * Tails (lengths that are not a multiple of 8) go through an 8-float buffer on the stack rather than
 * vmaskmovps, so memcheck never sees a partial vector access (valgrind runs this path).
 */
#ifndef AB_KERNELS_AVX2_H
#define AB_KERNELS_AVX2_H

/* g++ 12 reports the deliberate `__m512 __Y = __Y;` inside its own _mm*_undefined_* helpers (used by
 * _mm512_cvtps_pd, _mm512_reduce_*, ...) as uninitialised once they are inlined into C++ code (a
 * false positive of the compiler's headers, not of this code): silenced for the kernels only. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Non-temporal stores for the saved copy of axpy_save (ab_sam_step) once one buffer reaches this
 * many floats (16 MiB): above it the three buffers no longer fit the L2 + the share of L3 this core
 * can count on, so the copy would only be written back to memory later after evicting useful lines,
 * and a plain store would also read every destination line first (write-allocate). Below it, a plain
 * store keeps the copy in cache for ab_sam_restore. Shared with kernels/avx512.h. */
#define AB__NT_MIN_FLOATS ((size_t)1 << 22)

/* Software prefetch distance of AdamW, in floats ahead of the current element, one prefetch per
 * stream per 64-byte line. AdamW reads p, g, m, v and writes three of them back; with that many
 * streams the hardware prefetchers of one core do not keep enough misses in flight: measured on
 * Zen 5, AdamW over 64M floats went from ~29 to ~54 GB/s. 512 floats = 2 KiB per stream covers
 * ~120 ns of memory latency at ~55 GB/s over 4 streams; 256..512 measured the same, 128 and 4096
 * slower. The SAM step (2 read streams, plus the one-stream norm pass) reaches the streaming-store
 * triad without it. The address is formed as an integer: prefetching past the end of a buffer is a
 * harmless hint (no fault; memcheck ignores prefetches), forming such a pointer would not be. */
#define AB__PF_DIST 512
#define AB__PREFETCH(p)                                                                            \
    _mm_prefetch((const char *)((uintptr_t)(p) + AB__PF_DIST * sizeof(float)), _MM_HINT_T0)

/* ---- helpers ---------------------------------------------------------------------------------- */
/* n < 8 floats from p, the other lanes set to fill. */
AB__INL_AVX2 __m256 ab__avx2_load_part(const float *p, size_t n, float fill) {
    float buf[8];
    for (size_t i = 0; i < 8; i++) buf[i] = i < n ? p[i] : fill;
    return _mm256_loadu_ps(buf);
}

AB__INL_AVX2 void ab__avx2_store_part(float *p, __m256 v, size_t n) {
    float buf[8];
    _mm256_storeu_ps(buf, v);
    for (size_t i = 0; i < n; i++) p[i] = buf[i];
}

/* All-ones in lanes [0, n), zero above. */
AB__INL_AVX2 __m256 ab__avx2_lane_mask(size_t n) {
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

/* Horizontal sum in a fixed order: (lo + hi) halves, then pairs, then the last two. */
AB__INL_AVX2 float ab__avx2_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AB__INL_AVX2 float ab__avx2_hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AB__INL_AVX2 double ab__avx2_hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

/* ---- exp ------------------------------------------------------------------------------------- */
/* Inputs are clamped to [AB__EXP_CLAMP_LO, AB__EXP_CLAMP_HI] before the reduction: the results
 * there are already 0 and +inf (x < -103.972 rounds to 0, x > AB_EXPF_MAX_X overflows), so clamping
 * replaces the scalar code's explicit checks and keeps n in [-150, 129], where the scaling below is
 * exact. vmaxps/vminps return their second operand when the first is NaN: NaN passes through. */
#define AB__EXP_CLAMP_LO (-104.0f)
#define AB__EXP_CLAMP_HI 89.0f

AB__INL_AVX2 __m256 ab__avx2_exp(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(AB__EXP_CLAMP_HI), _mm256_max_ps(_mm256_set1_ps(AB__EXP_CLAMP_LO), x));
    /* n = round(x*log2e): the scalar code's floor(x*log2e + 0.5) up to ties, where either choice
     * keeps |r| <= ln2/2 + 2^-24 */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(AB__LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* n*LN2_HI is exact and x - n*LN2_HI too (Cody-Waite); the LN2_LO term is one FMA rounding. */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AB__LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AB__LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(AB__EXP_C7), r, _mm256_set1_ps(AB__EXP_C6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB__EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB__EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB__EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB__EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^n as (p * 2^e2) * 2^e1 with e1 = clamp(n, -126, 127), e2 = n - e1 in [-24, 1]: the first
     * product is exact, the second rounds once (to a subnormal for n < -126, to +inf above the
     * range), as the scalar code's two-step scaling. NaN lanes: p is NaN, so is the product. */
    __m256i e = _mm256_cvtps_epi32(n);
    __m256i e1 = _mm256_max_epi32(_mm256_min_epi32(e, _mm256_set1_epi32(127)),
                                  _mm256_set1_epi32(-126));
    __m256i e2 = _mm256_sub_epi32(e, e1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s2), s1);
}

AB__T_AVX2 static void ab__avx2_vexpf(float *y, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = ab__avx2_exp(_mm256_loadu_ps(x + i));
        __m256 b = ab__avx2_exp(_mm256_loadu_ps(x + i + 8));
        _mm256_storeu_ps(y + i, a);
        _mm256_storeu_ps(y + i + 8, b);
    }
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, ab__avx2_exp(_mm256_loadu_ps(x + i)));
    if (i < n) ab__avx2_store_part(y + i, ab__avx2_exp(ab__avx2_load_part(x + i, n - i, 0.0f)), n - i);
}

/* ---- row helpers for softmax / cross-entropy ----------------------------------------------- */
/* max of x[0..n); NaN elements are skipped as by the scalar loop (vmaxps returns its second
 * operand, the running max, when the first is NaN). */
AB__INL_AVX2 float ab__avx2_row_max(const float *x, size_t n) {
    __m256 m0 = _mm256_set1_ps(-(float)INFINITY), m1 = m0;
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + j), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + j + 8), m1);
    }
    if (j + 8 <= n) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + j), m0);
        j += 8;
    }
    if (j < n) m1 = _mm256_max_ps(ab__avx2_load_part(x + j, n - j, -(float)INFINITY), m1);
    return ab__avx2_hmax(_mm256_max_ps(m0, m1));
}

/* sum of exp(x[j] - shift) over [0, n); also stores the terms to y when y != NULL (y may be x). */
AB__INL_AVX2 float ab__avx2_row_sum_exp(float *y, const float *x, size_t n, float shift) {
    __m256 vs = _mm256_set1_ps(shift), s0 = _mm256_setzero_ps(), s1 = s0;
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256 e0 = ab__avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + j), vs));
        __m256 e1 = ab__avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), vs));
        if (y) {
            _mm256_storeu_ps(y + j, e0);
            _mm256_storeu_ps(y + j + 8, e1);
        }
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
    }
    if (j + 8 <= n) {
        __m256 e0 = ab__avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + j), vs));
        if (y) _mm256_storeu_ps(y + j, e0);
        s0 = _mm256_add_ps(s0, e0);
        j += 8;
    }
    if (j < n) {
        __m256 e = ab__avx2_exp(_mm256_sub_ps(ab__avx2_load_part(x + j, n - j, 0.0f), vs));
        e = _mm256_and_ps(e, ab__avx2_lane_mask(n - j));
        if (y) ab__avx2_store_part(y + j, e, n - j);
        s1 = _mm256_add_ps(s1, e);
    }
    return ab__avx2_hsum(_mm256_add_ps(s0, s1));
}

AB__INL_AVX2 void ab__avx2_scale_row(float *x, size_t n, float s) {
    __m256 vs = _mm256_set1_ps(s);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), vs));
    for (; j < n; j++) x[j] *= s; /* a plain multiply: same result as the vector lanes */
}

/* ---- softmax / cross-entropy ---------------------------------------------------------------- */
AB__T_AVX2 static void ab__avx2_softmax(float *y, const float *x, int rows, int cols, int causal) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        int valid = causal ? r + (cols - rows) + 1 : cols;
        float mx = ab__avx2_row_max(xr, (size_t)valid);
        if (mx == -INFINITY) valid = 0; /* fully masked: all zeros (kernels/scalar.h) */
        float sum = ab__avx2_row_sum_exp(yr, xr, (size_t)valid, mx);
        ab__avx2_scale_row(yr, (size_t)valid, 1.0f / sum);
        if (valid < cols) memset(yr + valid, 0, sizeof(float) * (size_t)(cols - valid));
    }
}

AB__T_AVX2 static void ab__avx2_softmax_backward(float *dx, const float *y, const float *dy,
                                                  int rows, int cols) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        size_t j = 0;
        for (; j + 16 <= n; j += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(yr + j), _mm256_loadu_ps(dyr + j), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(yr + j + 8), _mm256_loadu_ps(dyr + j + 8), a1);
        }
        if (j + 8 <= n) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(yr + j), _mm256_loadu_ps(dyr + j), a0);
            j += 8;
        }
        if (j < n)
            a1 = _mm256_fmadd_ps(ab__avx2_load_part(yr + j, n - j, 0.0f),
                                 ab__avx2_load_part(dyr + j, n - j, 0.0f), a1);
        __m256 vdot = _mm256_set1_ps(ab__avx2_hsum(_mm256_add_ps(a0, a1)));
        for (j = 0; j + 8 <= n; j += 8) {
            __m256 g = _mm256_sub_ps(_mm256_loadu_ps(dyr + j), vdot);
            _mm256_storeu_ps(dxr + j, _mm256_fmadd_ps(_mm256_loadu_ps(yr + j), g, _mm256_loadu_ps(dxr + j)));
        }
        if (j < n) {
            size_t k = n - j;
            __m256 g = _mm256_sub_ps(ab__avx2_load_part(dyr + j, k, 0.0f), vdot);
            __m256 d = _mm256_fmadd_ps(ab__avx2_load_part(yr + j, k, 0.0f), g,
                                       ab__avx2_load_part(dxr + j, k, 0.0f));
            ab__avx2_store_part(dxr + j, d, k);
        }
    }
}

AB__T_AVX2 static void ab__avx2_log_softmax(float *y, const float *x, int rows, int cols) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float mx = ab__avx2_row_max(xr, n);
        float lse = logf(ab__avx2_row_sum_exp(NULL, xr, n, mx));
        if (mx == -INFINITY) mx = 0.0f, lse = INFINITY; /* fully masked (kernels/scalar.h) */
        __m256 vm = _mm256_set1_ps(mx), vl = _mm256_set1_ps(lse);
        size_t j = 0;
        for (; j + 8 <= n; j += 8)
            _mm256_storeu_ps(yr + j, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vm), vl));
        for (; j < n; j++) yr[j] = xr[j] - mx - lse;
    }
}

AB__T_AVX2 static void ab__avx2_cross_entropy(float *losses, float *dlogits, const float *logits,
                                               const int *targets, const float *weights, int rows,
                                               int vocab, float dscale) {
    size_t n = (size_t)vocab;
    for (int r = 0; r < rows; r++) {
        float w = weights ? weights[r] : 1.0f;
        if (w == 0.0f) {
            if (losses) losses[r] = 0.0f;
            continue;
        }
        const float *lr = logits + (size_t)r * vocab;
        float mx = ab__avx2_row_max(lr, n);
        float lse = logf(ab__avx2_row_sum_exp(NULL, lr, n, mx));
        if (mx == -INFINITY) mx = 0.0f, lse = INFINITY; /* fully masked (kernels/scalar.h) */
        if (losses) losses[r] = mx + lse - lr[targets[r]];
        if (!dlogits) continue;
        /* second pass: dlogits += g * softmax, softmax = exp(x - (max + lse)) recomputed rather
         * than stored (dlogits accumulates, so it cannot hold the terms; a scratch row would be
         * vocab floats more traffic). */
        float *dr = dlogits + (size_t)r * vocab;
        float g = dscale * w;
        __m256 vg = _mm256_set1_ps(g), vshift = _mm256_set1_ps(mx + lse);
        size_t j = 0;
        for (; j + 8 <= n; j += 8) {
            __m256 p = ab__avx2_exp(_mm256_sub_ps(_mm256_loadu_ps(lr + j), vshift));
            _mm256_storeu_ps(dr + j, _mm256_fmadd_ps(vg, p, _mm256_loadu_ps(dr + j)));
        }
        if (j < n) {
            size_t k = n - j;
            __m256 p = ab__avx2_exp(_mm256_sub_ps(ab__avx2_load_part(lr + j, k, 0.0f), vshift));
            ab__avx2_store_part(dr + j, _mm256_fmadd_ps(vg, p, ab__avx2_load_part(dr + j, k, 0.0f)), k);
        }
        dr[targets[r]] -= g;
    }
}

/* ---- layers --------------------------------------------------------------------------------- */
/* sum of x[0..n) */
AB__INL_AVX2 float ab__avx2_row_sum(const float *x, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    size_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + j));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + j + 8));
    }
    if (j + 8 <= n) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + j));
        j += 8;
    }
    if (j < n) s1 = _mm256_add_ps(s1, ab__avx2_load_part(x + j, n - j, 0.0f));
    return ab__avx2_hsum(_mm256_add_ps(s0, s1));
}

AB__T_AVX2 static void ab__avx2_layernorm_forward(float *out, float *mean, float *rstd,
                                                   const float *x, const float *weight,
                                                   const float *bias, int rows, int cols,
                                                   float eps) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        float mu = ab__avx2_row_sum(xr, n) / (float)cols;
        __m256 vmu = _mm256_set1_ps(mu), v0 = _mm256_setzero_ps(), v1 = v0;
        size_t j = 0;
        for (; j + 16 <= n; j += 16) { /* two-pass variance: no cancellation */
            __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr + j), vmu);
            __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(xr + j + 8), vmu);
            v0 = _mm256_fmadd_ps(d0, d0, v0);
            v1 = _mm256_fmadd_ps(d1, d1, v1);
        }
        if (j + 8 <= n) {
            __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr + j), vmu);
            v0 = _mm256_fmadd_ps(d0, d0, v0);
            j += 8;
        }
        if (j < n) { /* padding lanes hold mu: they add 0 */
            __m256 d1 = _mm256_sub_ps(ab__avx2_load_part(xr + j, n - j, mu), vmu);
            v1 = _mm256_fmadd_ps(d1, d1, v1);
        }
        float var = ab__avx2_hsum(_mm256_add_ps(v0, v1)) / (float)cols;
        float rs = 1.0f / sqrtf(var + eps);
        __m256 vrs = _mm256_set1_ps(rs);
        for (j = 0; j + 8 <= n; j += 8) {
            __m256 nrm = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vmu), vrs);
            _mm256_storeu_ps(o + j, _mm256_fmadd_ps(nrm, _mm256_loadu_ps(weight + j),
                                                    _mm256_loadu_ps(bias + j)));
        }
        if (j < n) {
            size_t k = n - j;
            __m256 nrm = _mm256_mul_ps(_mm256_sub_ps(ab__avx2_load_part(xr + j, k, 0.0f), vmu), vrs);
            ab__avx2_store_part(o + j, _mm256_fmadd_ps(nrm, ab__avx2_load_part(weight + j, k, 0.0f),
                                                       ab__avx2_load_part(bias + j, k, 0.0f)), k);
        }
        if (mean) mean[r] = mu;
        if (rstd) rstd[r] = rs;
    }
}

AB__T_AVX2 static void ab__avx2_layernorm_backward(float *dx, float *dweight, float *dbias,
                                                    const float *dout, const float *x,
                                                    const float *weight, const float *mean,
                                                    const float *rstd, int rows, int cols) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *dr = dout + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        __m256 vmu = _mm256_set1_ps(mean[r]), vrs = _mm256_set1_ps(rstd[r]);
        /* dnorm = dout * weight; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
        __m256 a = _mm256_setzero_ps(), b = a;
        size_t j = 0;
        for (; j + 8 <= n; j += 8) {
            __m256 nrm = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vmu), vrs);
            __m256 dn = _mm256_mul_ps(_mm256_loadu_ps(weight + j), _mm256_loadu_ps(dr + j));
            a = _mm256_add_ps(a, dn);
            b = _mm256_fmadd_ps(dn, nrm, b);
        }
        if (j < n) { /* padding: dout = weight = 0, so dnorm = 0 adds nothing */
            size_t k = n - j;
            __m256 nrm = _mm256_mul_ps(_mm256_sub_ps(ab__avx2_load_part(xr + j, k, mean[r]), vmu), vrs);
            __m256 dn = _mm256_mul_ps(ab__avx2_load_part(weight + j, k, 0.0f),
                                      ab__avx2_load_part(dr + j, k, 0.0f));
            a = _mm256_add_ps(a, dn);
            b = _mm256_fmadd_ps(dn, nrm, b);
        }
        __m256 vdm = _mm256_set1_ps(ab__avx2_hsum(a) / (float)cols);
        __m256 vdnm = _mm256_set1_ps(ab__avx2_hsum(b) / (float)cols);
        for (j = 0; j < n; j += 8) {
            size_t k = n - j < 8 ? n - j : 8;
            __m256 xv, wv, dv, dxv;
            if (k == 8) {
                xv = _mm256_loadu_ps(xr + j);
                wv = _mm256_loadu_ps(weight + j);
                dv = _mm256_loadu_ps(dr + j);
                dxv = _mm256_loadu_ps(dxr + j);
            } else {
                xv = ab__avx2_load_part(xr + j, k, 0.0f);
                wv = ab__avx2_load_part(weight + j, k, 0.0f);
                dv = ab__avx2_load_part(dr + j, k, 0.0f);
                dxv = ab__avx2_load_part(dxr + j, k, 0.0f);
            }
            __m256 nrm = _mm256_mul_ps(_mm256_sub_ps(xv, vmu), vrs);
            __m256 dn = _mm256_mul_ps(wv, dv);
            __m256 t = _mm256_fnmadd_ps(nrm, vdnm, _mm256_sub_ps(dn, vdm));
            dxv = _mm256_fmadd_ps(t, vrs, dxv);
            if (k == 8) {
                _mm256_storeu_ps(dxr + j, dxv);
                if (dbias) _mm256_storeu_ps(dbias + j, _mm256_add_ps(_mm256_loadu_ps(dbias + j), dv));
                if (dweight)
                    _mm256_storeu_ps(dweight + j, _mm256_fmadd_ps(nrm, dv, _mm256_loadu_ps(dweight + j)));
            } else {
                ab__avx2_store_part(dxr + j, dxv, k);
                if (dbias)
                    ab__avx2_store_part(dbias + j, _mm256_add_ps(ab__avx2_load_part(dbias + j, k, 0.0f), dv), k);
                if (dweight)
                    ab__avx2_store_part(dweight + j,
                                        _mm256_fmadd_ps(nrm, dv, ab__avx2_load_part(dweight + j, k, 0.0f)), k);
            }
        }
    }
}

/* GELU pieces for u = sqrt(2/pi) (v + 0.044715 v^3), from a = exp(-2|u|) in (0, 1] (never
 * overflows, no cancellation for small or large |u|):
 *   s     = (1 + tanh u) / 2 = 1 / (1 + exp(-2u))  = q or a*q with q = 1 / (1 + a)  (u >= 0 or < 0)
 *   sech2 = 1 - tanh(u)^2     = 4 a / (1 + a)^2      = 4 a q^2
 * so gelu = v * s, and the tanh form 1 - 2/(exp(2u) + 1) never has to round near +-1. */
AB__INL_AVX2 __m256 ab__avx2_gelu_u(__m256 v) {
    __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    return _mm256_mul_ps(_mm256_set1_ps(AB__GELU_K), _mm256_fmadd_ps(_mm256_set1_ps(AB__GELU_C), v3, v));
}

AB__INL_AVX2 __m256 ab__avx2_gelu(__m256 v) {
    __m256 u = ab__avx2_gelu_u(v);
    __m256 au = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), u);
    __m256 a = ab__avx2_exp(_mm256_mul_ps(_mm256_set1_ps(-2.0f), au));
    __m256 q = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), a));
    __m256 s = _mm256_blendv_ps(q, _mm256_mul_ps(a, q), u); /* sign bit of u selects a*q */
    return _mm256_mul_ps(v, s);
}

AB__INL_AVX2 __m256 ab__avx2_gelu_grad(__m256 v) {
    __m256 u = ab__avx2_gelu_u(v);
    __m256 au = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), u);
    __m256 a = ab__avx2_exp(_mm256_mul_ps(_mm256_set1_ps(-2.0f), au));
    __m256 q = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), a));
    __m256 s = _mm256_blendv_ps(q, _mm256_mul_ps(a, q), u);
    __m256 sech2 = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(4.0f), a), _mm256_mul_ps(q, q));
    /* x clamped to +-AB__GELU_CLAMP in the sech^2 term, as in the scalar code */
    __m256 vc = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-AB__GELU_CLAMP)), _mm256_set1_ps(AB__GELU_CLAMP));
    __m256 du = _mm256_mul_ps(_mm256_set1_ps(AB__GELU_K),
                              _mm256_fmadd_ps(_mm256_set1_ps(3.0f * AB__GELU_C), _mm256_mul_ps(vc, vc),
                                              _mm256_set1_ps(1.0f)));
    /* s + 0.5 vc sech2 du, multiplied left to right as in the scalar code */
    __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), vc), sech2), du);
    return _mm256_add_ps(s, t);
}

AB__T_AVX2 static void ab__avx2_gelu_forward(float *out, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = ab__avx2_gelu(_mm256_loadu_ps(x + i));
        __m256 b = ab__avx2_gelu(_mm256_loadu_ps(x + i + 8));
        _mm256_storeu_ps(out + i, a);
        _mm256_storeu_ps(out + i + 8, b);
    }
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, ab__avx2_gelu(_mm256_loadu_ps(x + i)));
    if (i < n) ab__avx2_store_part(out + i, ab__avx2_gelu(ab__avx2_load_part(x + i, n - i, 0.0f)), n - i);
}

AB__T_AVX2 static void ab__avx2_gelu_backward(float *dx, const float *x, const float *dout, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = ab__avx2_gelu_grad(_mm256_loadu_ps(x + i));
        _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(_mm256_loadu_ps(dout + i), g, _mm256_loadu_ps(dx + i)));
    }
    if (i < n) {
        size_t k = n - i;
        __m256 g = ab__avx2_gelu_grad(ab__avx2_load_part(x + i, k, 0.0f));
        ab__avx2_store_part(dx + i, _mm256_fmadd_ps(ab__avx2_load_part(dout + i, k, 0.0f), g,
                                                    ab__avx2_load_part(dx + i, k, 0.0f)), k);
    }
}

AB__T_AVX2 static void ab__avx2_add(float *out, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 s0 = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 s1 = _mm256_add_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        _mm256_storeu_ps(out + i, s0);
        _mm256_storeu_ps(out + i + 8, s1);
    }
    for (; i < n; i++) out[i] = a[i] + b[i]; /* the same single rounding as the vector lanes */
}

/* ---- optimiser and reductions --------------------------------------------------------------- */
AB__INL_AVX2 void ab__avx2_adamw_vec(__m256 *p, __m256 g, __m256 *m, __m256 *v, __m256 lr, __m256 b1,
                                     __m256 omb1, __m256 b2, __m256 omb2, __m256 eps, __m256 wd,
                                     __m256 ibc1, __m256 ibc2) {
    *m = _mm256_fmadd_ps(b1, *m, _mm256_mul_ps(omb1, g));
    *v = _mm256_fmadd_ps(b2, *v, _mm256_mul_ps(_mm256_mul_ps(omb2, g), g));
    __m256 mhat = _mm256_mul_ps(*m, ibc1), vhat = _mm256_mul_ps(*v, ibc2);
    __m256 step = _mm256_div_ps(mhat, _mm256_add_ps(_mm256_sqrt_ps(vhat), eps));
    *p = _mm256_fnmadd_ps(lr, _mm256_fmadd_ps(wd, *p, step), *p);
}

AB__T_AVX2 static void ab__avx2_adamw(float *p, const float *g, float *m, float *v, size_t n,
                                       float lr, float beta1, float beta2, float eps,
                                       float weight_decay, float inv_bc1, float inv_bc2) {
    __m256 vlr = _mm256_set1_ps(lr), b1 = _mm256_set1_ps(beta1), b2 = _mm256_set1_ps(beta2);
    __m256 omb1 = _mm256_set1_ps(1.0f - beta1), omb2 = _mm256_set1_ps(1.0f - beta2);
    __m256 veps = _mm256_set1_ps(eps), wd = _mm256_set1_ps(weight_decay);
    __m256 ibc1 = _mm256_set1_ps(inv_bc1), ibc2 = _mm256_set1_ps(inv_bc2);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) { /* two vectors = one 64-byte line per stream, one prefetch each */
        AB__PREFETCH(g + i);
        AB__PREFETCH(m + i);
        AB__PREFETCH(v + i);
        AB__PREFETCH(p + i);
        for (size_t h = i; h < i + 16; h += 8) {
            __m256 pv = _mm256_loadu_ps(p + h), mv = _mm256_loadu_ps(m + h), vv = _mm256_loadu_ps(v + h);
            ab__avx2_adamw_vec(&pv, _mm256_loadu_ps(g + h), &mv, &vv, vlr, b1, omb1, b2, omb2, veps, wd,
                               ibc1, ibc2);
            _mm256_storeu_ps(m + h, mv);
            _mm256_storeu_ps(v + h, vv);
            _mm256_storeu_ps(p + h, pv);
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 pv = _mm256_loadu_ps(p + i), mv = _mm256_loadu_ps(m + i), vv = _mm256_loadu_ps(v + i);
        ab__avx2_adamw_vec(&pv, _mm256_loadu_ps(g + i), &mv, &vv, vlr, b1, omb1, b2, omb2, veps, wd,
                           ibc1, ibc2);
        _mm256_storeu_ps(m + i, mv);
        _mm256_storeu_ps(v + i, vv);
        _mm256_storeu_ps(p + i, pv);
    }
    if (i < n) {
        size_t k = n - i;
        __m256 pv = ab__avx2_load_part(p + i, k, 0.0f), mv = ab__avx2_load_part(m + i, k, 0.0f);
        __m256 vv = ab__avx2_load_part(v + i, k, 0.0f);
        ab__avx2_adamw_vec(&pv, ab__avx2_load_part(g + i, k, 0.0f), &mv, &vv, vlr, b1, omb1, b2, omb2,
                           veps, wd, ibc1, ibc2);
        ab__avx2_store_part(m + i, mv, k);
        ab__avx2_store_part(v + i, vv, k);
        ab__avx2_store_part(p + i, pv, k);
    }
}

/* Finite iff the magnitude's bits (sign cleared) lie below those of +inf, 0x7f800000; NaNs lie
 * above. One integer max per vector, so the pass runs at load speed (the gradient check of
 * ab_adamw_step, a pass over g before the update). */
AB__INL_AVX2 __m256i ab__avx2_magnitude_bits(__m256 x) {
    return _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff));
}

AB__T_AVX2 static int ab__avx2_all_finite(const float *x, size_t n) {
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_epi32(m0, ab__avx2_magnitude_bits(_mm256_loadu_ps(x + i)));
        m1 = _mm256_max_epi32(m1, ab__avx2_magnitude_bits(_mm256_loadu_ps(x + i + 8)));
    }
    if (i + 8 <= n) {
        m0 = _mm256_max_epi32(m0, ab__avx2_magnitude_bits(_mm256_loadu_ps(x + i)));
        i += 8;
    }
    if (i < n) {
        __m256 tail = ab__avx2_load_part(x + i, n - i, 0.0f); /* zeros past n */
        m1 = _mm256_max_epi32(m1, ab__avx2_magnitude_bits(tail));
    }
    __m256i bad = _mm256_cmpgt_epi32(_mm256_max_epi32(m0, m1), _mm256_set1_epi32(0x7f7fffff));
    return _mm256_movemask_epi8(bad) == 0;
}

/* Double accumulation as in the scalar oracle (x*x and x*y are exact in double, so each FMA rounds
 * once, like the scalar add). Four 4-lane accumulators combined as (a0 + a1) + (a2 + a3), then the
 * lanes in a fixed order: the result depends only on the data and n. */
AB__T_AVX2 static double ab__avx2_sumsq_block(const float *x, size_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), x1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        __m256d x2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)), x3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
        a0 = _mm256_fmadd_pd(x0, x0, a0);
        a1 = _mm256_fmadd_pd(x1, x1, a1);
        a2 = _mm256_fmadd_pd(x2, x2, a2);
        a3 = _mm256_fmadd_pd(x3, x3, a3);
    }
    for (; i + 4 <= n; i += 4) {
        __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        a0 = _mm256_fmadd_pd(x0, x0, a0);
    }
    double s = ab__avx2_hsum_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

AB__T_AVX2 static double ab__avx2_dot_block(const float *x, const float *y, size_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), _mm256_cvtps_pd(_mm_loadu_ps(y + i)), a0);
        a1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)),
                             _mm256_cvtps_pd(_mm_loadu_ps(y + i + 4)), a1);
        a2 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)),
                             _mm256_cvtps_pd(_mm_loadu_ps(y + i + 8)), a2);
        a3 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 12)),
                             _mm256_cvtps_pd(_mm_loadu_ps(y + i + 12)), a3);
    }
    for (; i + 4 <= n; i += 4)
        a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), _mm256_cvtps_pd(_mm_loadu_ps(y + i)), a0);
    double s = ab__avx2_hsum_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    for (; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

AB__T_AVX2 static void ab__avx2_scale(float *x, size_t n, float s) { ab__avx2_scale_row(x, n, s); }

/* saved = theta; theta += s*g (one FMA rounding) in one pass over theta. */
AB__T_AVX2 static void ab__avx2_axpy_save(float *theta, float *saved, const float *g, size_t n, float s) {
    __m256 vs = _mm256_set1_ps(s);
    size_t i = 0;
    if (saved && n >= AB__NT_MIN_FLOATS) {
        /* plain stores until saved is 32-byte aligned (vmovntps needs it), then streaming stores */
        for (; i < n && ((uintptr_t)(saved + i) & 31u) != 0; i++) {
            saved[i] = theta[i];
            theta[i] = fmaf(s, g[i], theta[i]);
        }
        for (; i + 16 <= n; i += 16) {
            __m256 t0 = _mm256_loadu_ps(theta + i), t1 = _mm256_loadu_ps(theta + i + 8);
            _mm256_stream_ps(saved + i, t0);
            _mm256_stream_ps(saved + i + 8, t1);
            _mm256_storeu_ps(theta + i, _mm256_fmadd_ps(vs, _mm256_loadu_ps(g + i), t0));
            _mm256_storeu_ps(theta + i + 8, _mm256_fmadd_ps(vs, _mm256_loadu_ps(g + i + 8), t1));
        }
        _mm_sfence(); /* streaming stores are weakly ordered: publish them before returning */
    } else if (saved) {
        for (; i + 8 <= n; i += 8) {
            __m256 t = _mm256_loadu_ps(theta + i);
            _mm256_storeu_ps(saved + i, t);
            _mm256_storeu_ps(theta + i, _mm256_fmadd_ps(vs, _mm256_loadu_ps(g + i), t));
        }
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(theta + i, _mm256_fmadd_ps(vs, _mm256_loadu_ps(g + i), _mm256_loadu_ps(theta + i)));
    }
    for (; i < n; i++) {
        if (saved) saved[i] = theta[i];
        theta[i] = fmaf(s, g[i], theta[i]); /* fmaf: the same single rounding as the lanes */
    }
}

/* ---- ghost norm ------------------------------------------------------------------------------ */
/* Pairs (t, s) in register tiles of 2 rows x 4 columns: 8 ymm accumulators + 4 column vectors + 1
 * row vector = 13 of the 16 ymm registers (a 4 x 4 tile would need 16 accumulators alone and
 * spill), and 8 dot products are exactly one 8-lane vector after the reduction. */
#define AB__GHOST256_ROWS 2
#define AB__GHOST256_COLS 4

#define AB__GRAM256_ROW(a, x0, x1, x2, x3)                                                         \
    do {                                                                                           \
        x0 = _mm256_fmadd_ps(a, c0, x0);                                                           \
        x1 = _mm256_fmadd_ps(a, c1, x1);                                                           \
        x2 = _mm256_fmadd_ps(a, c2, x2);                                                           \
        x3 = _mm256_fmadd_ps(a, c3, x3);                                                           \
    } while (0)
#define AB__GRAM256_STEP(LOAD)                                                                     \
    do {                                                                                           \
        __m256 c0 = LOAD(c[0] + k), c1 = LOAD(c[1] + k), c2 = LOAD(c[2] + k), c3 = LOAD(c[3] + k); \
        __m256 a0 = LOAD(r[0] + k);                                                                \
        AB__GRAM256_ROW(a0, x00, x01, x02, x03);                                                   \
        __m256 a1 = LOAD(r[1] + k);                                                                \
        AB__GRAM256_ROW(a1, x10, x11, x12, x13);                                                   \
    } while (0)
#define AB__GRAM256_LOAD(p) _mm256_loadu_ps(p)
#define AB__GRAM256_LOAD_TAIL(p) ab__avx2_load_part(p, (size_t)(n - k), 0.0f)

/* Lane 4i + j = x_{r[i]} . x_{c[j]} over n floats: 8 accumulators over k, then a fixed hadd tree. */
AB__INL_AVX2 __m256 ab__avx2_gram_tile(const float *const r[2], const float *const c[4], int n) {
    __m256 x00 = _mm256_setzero_ps(), x01 = x00, x02 = x00, x03 = x00, x10 = x00, x11 = x00,
           x12 = x00, x13 = x00;
    int k = 0;
    for (; k + 8 <= n; k += 8) AB__GRAM256_STEP(AB__GRAM256_LOAD);
    if (k < n) AB__GRAM256_STEP(AB__GRAM256_LOAD_TAIL);
    /* within each 128-bit lane: [x00, x01, x02, x03] (and x1*), each a partial sum */
    __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(x00, x01), _mm256_hadd_ps(x02, x03));
    __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(x10, x11), _mm256_hadd_ps(x12, x13));
    return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

/* Tiles (t0, s0), t0 in steps of 2, s0 in steps of 4 from the 4-aligned block holding t0: every
 * pair t <= s once. Rows past T repeat row T - 1 (valid memory) and get weight 0, as do pairs
 * s < t; t < s weighs 2, t == s 1. */
AB__T_AVX2 static double ab__avx2_ghost_sq(const float *A, const float *G, int T, int d_in, int d_out) {
    const __m256i lane_i = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i lane_j = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3);
    const __m256i vT = _mm256_set1_epi32(T);
    __m256d sum_lo = _mm256_setzero_pd(), sum_hi = sum_lo;
    for (int t0 = 0; t0 < T; t0 += AB__GHOST256_ROWS) {
        const float *ra[2], *rg[2];
        for (int i = 0; i < 2; i++) {
            int t = t0 + i < T ? t0 + i : T - 1;
            ra[i] = A + (size_t)t * d_in;
            rg[i] = G + (size_t)t * d_out;
        }
        __m256i vt = _mm256_add_epi32(_mm256_set1_epi32(t0), lane_i);
        __m256i t_ok = _mm256_cmpgt_epi32(vT, vt);
        for (int s0 = t0 - t0 % AB__GHOST256_COLS; s0 < T; s0 += AB__GHOST256_COLS) {
            const float *ca[4], *cg[4];
            for (int j = 0; j < 4; j++) {
                int s = s0 + j < T ? s0 + j : T - 1;
                ca[j] = A + (size_t)s * d_in;
                cg[j] = G + (size_t)s * d_out;
            }
            __m256 ga = ab__avx2_gram_tile(ra, ca, d_in);
            __m256 gg = ab__avx2_gram_tile(rg, cg, d_out);
            __m256i vs = _mm256_add_epi32(_mm256_set1_epi32(s0), lane_j);
            __m256i valid = _mm256_andnot_si256(_mm256_cmpgt_epi32(vt, vs),
                                                _mm256_and_si256(t_ok, _mm256_cmpgt_epi32(vT, vs)));
            __m256 off_diag = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vs, vt));
            /* w * ga exact (w in {0, 1, 2}); a product of two floats is exact in double */
            __m256 w = _mm256_and_ps(_mm256_castsi256_ps(valid),
                                     _mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_set1_ps(2.0f), off_diag));
            ga = _mm256_mul_ps(ga, w);
            gg = _mm256_and_ps(gg, _mm256_castsi256_ps(valid)); /* no 0 * inf from a skipped lane */
            sum_lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(ga)),
                                     _mm256_cvtps_pd(_mm256_castps256_ps128(gg)), sum_lo);
            sum_hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(ga, 1)),
                                     _mm256_cvtps_pd(_mm256_extractf128_ps(gg, 1)), sum_hi);
        }
    }
    return ab__avx2_hsum_pd(_mm256_add_pd(sum_lo, sum_hi));
}

static void ab__avx2_fill(ab__kernels *k) {
    k->vexpf = ab__avx2_vexpf;
    k->softmax = ab__avx2_softmax;
    k->softmax_backward = ab__avx2_softmax_backward;
    k->log_softmax = ab__avx2_log_softmax;
    k->cross_entropy = ab__avx2_cross_entropy;
    k->layernorm_forward = ab__avx2_layernorm_forward;
    k->layernorm_backward = ab__avx2_layernorm_backward;
    k->gelu_forward = ab__avx2_gelu_forward;
    k->gelu_backward = ab__avx2_gelu_backward;
    k->add = ab__avx2_add;
    k->all_finite = ab__avx2_all_finite;
    k->adamw = ab__avx2_adamw;
    k->sumsq_block = ab__avx2_sumsq_block;
    k->dot_block = ab__avx2_dot_block;
    k->scale = ab__avx2_scale;
    k->axpy_save = ab__avx2_axpy_save;
    k->ghost_sq = ab__avx2_ghost_sq;
}

#ifdef __cplusplus
}
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif /* AB_KERNELS_AVX2_H */
