/* kernels/avx512.h - AVX-512 kernels except GEMM (part of antibody.h).
 *
 * Every function carries __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))).
 * The algorithms and numerics are those of kernels/avx2.h on 16 lanes (see the notes there); the
 * differences are AVX-512's own tools:
 *   - tails use masked loads and stores (no buffer copies);
 *   - exp scales by 2^n with vscalefps, which computes p * 2^n with one rounding, also into the
 *     subnormal range and to +inf/0 outside it: bit for bit what the scalar two-step scaling gives,
 *     in one instruction.
 * Shared with kernels/avx2.h (defined there): the exp clamps, the streaming-store threshold
 * AB__NT_MIN_FLOATS and the prefetch distance AB__PF_DIST.
 * valgrind never runs this file (it hides AVX-512); the AVX2 path is tested under memcheck instead.
 */
#ifndef AB_KERNELS_AVX512_H
#define AB_KERNELS_AVX512_H

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

/* lanes [0, n) of a 16-lane vector, n < 16 */
AB__INL_AVX512 __mmask16 ab__avx512_mask(size_t n) { return (__mmask16)((1u << n) - 1u); }

/* ---- exp ------------------------------------------------------------------------------------- */
AB__INL_AVX512 __m512 ab__avx512_exp(__m512 x) {
    /* Clamp first, as the AVX2 version (AB__EXP_CLAMP_LO/HI in kernels/avx2.h; vmaxps/vminps return
     * their second operand, x, when x is NaN, so NaN passes): vscalefps then yields exactly 0 below
     * and +inf above the range, which replaces compare-and-blend for -inf, +inf and large |x|. */
    x = _mm512_min_ps(_mm512_set1_ps(AB__EXP_CLAMP_HI), _mm512_max_ps(_mm512_set1_ps(AB__EXP_CLAMP_LO), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(AB__LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AB__LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AB__LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(AB__EXP_C7), r, _mm512_set1_ps(AB__EXP_C6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB__EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB__EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB__EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB__EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

AB__T_AVX512 static void ab__avx512_vexpf(float *y, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = ab__avx512_exp(_mm512_loadu_ps(x + i));
        __m512 b = ab__avx512_exp(_mm512_loadu_ps(x + i + 16));
        _mm512_storeu_ps(y + i, a);
        _mm512_storeu_ps(y + i + 16, b);
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, ab__avx512_exp(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 k = ab__avx512_mask(n - i);
        _mm512_mask_storeu_ps(y + i, k, ab__avx512_exp(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* ---- row helpers ------------------------------------------------------------------------------ */
/* max of x[0..n); NaN elements skipped (vmaxps returns the running max, its second operand). */
AB__INL_AVX512 float ab__avx512_row_max(const float *x, size_t n) {
    __m512 m0 = _mm512_set1_ps(-(float)INFINITY), m1 = m0;
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        m0 = _mm512_max_ps(_mm512_loadu_ps(x + j), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(x + j + 16), m1);
    }
    if (j + 16 <= n) {
        m0 = _mm512_max_ps(_mm512_loadu_ps(x + j), m0);
        j += 16;
    }
    if (j < n) m1 = _mm512_max_ps(_mm512_mask_loadu_ps(m1, ab__avx512_mask(n - j), x + j), m1);
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

/* sum of exp(x[j] - shift); stores the terms to y when y != NULL (y may be x). */
AB__INL_AVX512 float ab__avx512_row_sum_exp(float *y, const float *x, size_t n, float shift) {
    __m512 vs = _mm512_set1_ps(shift), s0 = _mm512_setzero_ps(), s1 = s0;
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m512 e0 = ab__avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(x + j), vs));
        __m512 e1 = ab__avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(x + j + 16), vs));
        if (y) {
            _mm512_storeu_ps(y + j, e0);
            _mm512_storeu_ps(y + j + 16, e1);
        }
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
    }
    if (j + 16 <= n) {
        __m512 e0 = ab__avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(x + j), vs));
        if (y) _mm512_storeu_ps(y + j, e0);
        s0 = _mm512_add_ps(s0, e0);
        j += 16;
    }
    if (j < n) {
        __mmask16 k = ab__avx512_mask(n - j);
        __m512 e = ab__avx512_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vs));
        if (y) _mm512_mask_storeu_ps(y + j, k, e);
        s1 = _mm512_mask_add_ps(s1, k, s1, e);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

AB__INL_AVX512 void ab__avx512_scale_row(float *x, size_t n, float s) {
    __m512 vs = _mm512_set1_ps(s);
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m512 a = _mm512_mul_ps(_mm512_loadu_ps(x + j), vs);
        __m512 b = _mm512_mul_ps(_mm512_loadu_ps(x + j + 16), vs);
        _mm512_storeu_ps(x + j, a);
        _mm512_storeu_ps(x + j + 16, b);
    }
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(x + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), vs));
    if (j < n) {
        __mmask16 k = ab__avx512_mask(n - j);
        _mm512_mask_storeu_ps(x + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), vs));
    }
}

/* ---- softmax / cross-entropy ---------------------------------------------------------------- */
AB__T_AVX512 static void ab__avx512_softmax(float *y, const float *x, int rows, int cols, int causal) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        int valid = causal ? r + (cols - rows) + 1 : cols;
        float mx = ab__avx512_row_max(xr, (size_t)valid);
        if (mx == -INFINITY) valid = 0; /* fully masked: all zeros (kernels/scalar.h) */
        float sum = ab__avx512_row_sum_exp(yr, xr, (size_t)valid, mx);
        ab__avx512_scale_row(yr, (size_t)valid, 1.0f / sum);
        if (valid < cols) memset(yr + valid, 0, sizeof(float) * (size_t)(cols - valid));
    }
}

AB__T_AVX512 static void ab__avx512_softmax_backward(float *dx, const float *y, const float *dy,
                                                      int rows, int cols) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        size_t j = 0;
        for (; j + 32 <= n; j += 32) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(yr + j), _mm512_loadu_ps(dyr + j), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(yr + j + 16), _mm512_loadu_ps(dyr + j + 16), a1);
        }
        if (j + 16 <= n) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(yr + j), _mm512_loadu_ps(dyr + j), a0);
            j += 16;
        }
        if (j < n) {
            __mmask16 k = ab__avx512_mask(n - j);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, yr + j), _mm512_maskz_loadu_ps(k, dyr + j), a1);
        }
        __m512 vdot = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(a0, a1)));
        for (j = 0; j + 16 <= n; j += 16) {
            __m512 g = _mm512_sub_ps(_mm512_loadu_ps(dyr + j), vdot);
            _mm512_storeu_ps(dxr + j, _mm512_fmadd_ps(_mm512_loadu_ps(yr + j), g, _mm512_loadu_ps(dxr + j)));
        }
        if (j < n) {
            __mmask16 k = ab__avx512_mask(n - j);
            __m512 g = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dyr + j), vdot);
            __m512 d = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, yr + j), g, _mm512_maskz_loadu_ps(k, dxr + j));
            _mm512_mask_storeu_ps(dxr + j, k, d);
        }
    }
}

AB__T_AVX512 static void ab__avx512_log_softmax(float *y, const float *x, int rows, int cols) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float mx = ab__avx512_row_max(xr, n);
        float lse = logf(ab__avx512_row_sum_exp(NULL, xr, n, mx));
        if (mx == -INFINITY) mx = 0.0f, lse = INFINITY; /* fully masked (kernels/scalar.h) */
        __m512 vm = _mm512_set1_ps(mx), vl = _mm512_set1_ps(lse);
        size_t j = 0;
        for (; j + 16 <= n; j += 16)
            _mm512_storeu_ps(yr + j, _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + j), vm), vl));
        if (j < n) {
            __mmask16 k = ab__avx512_mask(n - j);
            _mm512_mask_storeu_ps(yr + j, k,
                                  _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + j), vm), vl));
        }
    }
}

AB__T_AVX512 static void ab__avx512_cross_entropy(float *losses, float *dlogits, const float *logits,
                                                   const int *targets, const float *weights,
                                                   int rows, int vocab, float dscale) {
    size_t n = (size_t)vocab;
    for (int r = 0; r < rows; r++) {
        float w = weights ? weights[r] : 1.0f;
        if (w == 0.0f) {
            if (losses) losses[r] = 0.0f;
            continue;
        }
        const float *lr = logits + (size_t)r * vocab;
        float mx = ab__avx512_row_max(lr, n);
        float lse = logf(ab__avx512_row_sum_exp(NULL, lr, n, mx));
        if (mx == -INFINITY) mx = 0.0f, lse = INFINITY; /* fully masked (kernels/scalar.h) */
        if (losses) losses[r] = mx + lse - lr[targets[r]];
        if (!dlogits) continue;
        /* dlogits += g * exp(x - (max + lse)), recomputed (dlogits accumulates: no room to keep
         * the terms, and a scratch row would be more memory traffic than the exp costs). */
        float *dr = dlogits + (size_t)r * vocab;
        float g = dscale * w;
        __m512 vg = _mm512_set1_ps(g), vshift = _mm512_set1_ps(mx + lse);
        size_t j = 0;
        for (; j + 32 <= n; j += 32) {
            __m512 p0 = ab__avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(lr + j), vshift));
            __m512 p1 = ab__avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(lr + j + 16), vshift));
            _mm512_storeu_ps(dr + j, _mm512_fmadd_ps(vg, p0, _mm512_loadu_ps(dr + j)));
            _mm512_storeu_ps(dr + j + 16, _mm512_fmadd_ps(vg, p1, _mm512_loadu_ps(dr + j + 16)));
        }
        for (; j + 16 <= n; j += 16) {
            __m512 p = ab__avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(lr + j), vshift));
            _mm512_storeu_ps(dr + j, _mm512_fmadd_ps(vg, p, _mm512_loadu_ps(dr + j)));
        }
        if (j < n) {
            __mmask16 k = ab__avx512_mask(n - j);
            __m512 p = ab__avx512_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, lr + j), vshift));
            _mm512_mask_storeu_ps(dr + j, k, _mm512_fmadd_ps(vg, p, _mm512_maskz_loadu_ps(k, dr + j)));
        }
        dr[targets[r]] -= g;
    }
}

/* ---- layers --------------------------------------------------------------------------------- */
AB__INL_AVX512 float ab__avx512_row_sum(const float *x, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + j));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + j + 16));
    }
    if (j + 16 <= n) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + j));
        j += 16;
    }
    if (j < n) s1 = _mm512_add_ps(s1, _mm512_maskz_loadu_ps(ab__avx512_mask(n - j), x + j));
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

AB__T_AVX512 static void ab__avx512_layernorm_forward(float *out, float *mean, float *rstd,
                                                       const float *x, const float *weight,
                                                       const float *bias, int rows, int cols,
                                                       float eps) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        float mu = ab__avx512_row_sum(xr, n) / (float)cols;
        __m512 vmu = _mm512_set1_ps(mu), v0 = _mm512_setzero_ps(), v1 = v0;
        size_t j = 0;
        for (; j + 32 <= n; j += 32) { /* two-pass variance: no cancellation */
            __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(xr + j), vmu);
            __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(xr + j + 16), vmu);
            v0 = _mm512_fmadd_ps(d0, d0, v0);
            v1 = _mm512_fmadd_ps(d1, d1, v1);
        }
        if (j + 16 <= n) {
            __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(xr + j), vmu);
            v0 = _mm512_fmadd_ps(d0, d0, v0);
            j += 16;
        }
        if (j < n) { /* masked-off lanes load mu: they add 0 */
            __m512 d1 = _mm512_sub_ps(_mm512_mask_loadu_ps(vmu, ab__avx512_mask(n - j), xr + j), vmu);
            v1 = _mm512_fmadd_ps(d1, d1, v1);
        }
        float var = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1)) / (float)cols;
        float rs = 1.0f / sqrtf(var + eps);
        __m512 vrs = _mm512_set1_ps(rs);
        for (j = 0; j + 16 <= n; j += 16) {
            __m512 nrm = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + j), vmu), vrs);
            _mm512_storeu_ps(o + j, _mm512_fmadd_ps(nrm, _mm512_loadu_ps(weight + j), _mm512_loadu_ps(bias + j)));
        }
        if (j < n) {
            __mmask16 k = ab__avx512_mask(n - j);
            __m512 nrm = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + j), vmu), vrs);
            _mm512_mask_storeu_ps(o + j, k, _mm512_fmadd_ps(nrm, _mm512_maskz_loadu_ps(k, weight + j),
                                                            _mm512_maskz_loadu_ps(k, bias + j)));
        }
        if (mean) mean[r] = mu;
        if (rstd) rstd[r] = rs;
    }
}

AB__T_AVX512 static void ab__avx512_layernorm_backward(float *dx, float *dweight, float *dbias,
                                                        const float *dout, const float *x,
                                                        const float *weight, const float *mean,
                                                        const float *rstd, int rows, int cols) {
    size_t n = (size_t)cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *dr = dout + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        __m512 vmu = _mm512_set1_ps(mean[r]), vrs = _mm512_set1_ps(rstd[r]);
        /* dnorm = dout * weight; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
        __m512 a = _mm512_setzero_ps(), b = a;
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : ab__avx512_mask(n - j);
            __m512 nrm = _mm512_mul_ps(_mm512_sub_ps(_mm512_mask_loadu_ps(vmu, k, xr + j), vmu), vrs);
            __m512 dn = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, weight + j), _mm512_maskz_loadu_ps(k, dr + j));
            a = _mm512_add_ps(a, dn);
            b = _mm512_fmadd_ps(dn, nrm, b);
        }
        __m512 vdm = _mm512_set1_ps(_mm512_reduce_add_ps(a) / (float)cols);
        __m512 vdnm = _mm512_set1_ps(_mm512_reduce_add_ps(b) / (float)cols);
        for (size_t j = 0; j < n; j += 16) {
            __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : ab__avx512_mask(n - j);
            __m512 dv = _mm512_maskz_loadu_ps(k, dr + j);
            __m512 nrm = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + j), vmu), vrs);
            __m512 dn = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, weight + j), dv);
            __m512 t = _mm512_fnmadd_ps(nrm, vdnm, _mm512_sub_ps(dn, vdm));
            _mm512_mask_storeu_ps(dxr + j, k, _mm512_fmadd_ps(t, vrs, _mm512_maskz_loadu_ps(k, dxr + j)));
            if (dbias)
                _mm512_mask_storeu_ps(dbias + j, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dbias + j), dv));
            if (dweight)
                _mm512_mask_storeu_ps(dweight + j, k,
                                      _mm512_fmadd_ps(nrm, dv, _mm512_maskz_loadu_ps(k, dweight + j)));
        }
    }
}

/* GELU from a = exp(-2|u|): s = (1 + tanh u)/2 = q or a*q, q = 1/(1 + a); sech^2 u = 4 a q^2
 * (derivation in kernels/avx2.h). */
AB__INL_AVX512 __m512 ab__avx512_gelu_u(__m512 v) {
    __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    return _mm512_mul_ps(_mm512_set1_ps(AB__GELU_K), _mm512_fmadd_ps(_mm512_set1_ps(AB__GELU_C), v3, v));
}

/* s and (optionally) a, q for u */
AB__INL_AVX512 __m512 ab__avx512_gelu_s(__m512 u, __m512 *a_out, __m512 *q_out) {
    __m512 a = ab__avx512_exp(_mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_abs_ps(u)));
    __m512 q = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), a));
    __mmask16 neg = _mm512_movepi32_mask(_mm512_castps_si512(u)); /* sign bits of u */
    *a_out = a;
    *q_out = q;
    return _mm512_mask_mul_ps(q, neg, a, q);
}

AB__INL_AVX512 __m512 ab__avx512_gelu(__m512 v) {
    __m512 a, q;
    return _mm512_mul_ps(v, ab__avx512_gelu_s(ab__avx512_gelu_u(v), &a, &q));
}

AB__INL_AVX512 __m512 ab__avx512_gelu_grad(__m512 v) {
    __m512 a, q;
    __m512 s = ab__avx512_gelu_s(ab__avx512_gelu_u(v), &a, &q);
    __m512 sech2 = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(4.0f), a), _mm512_mul_ps(q, q));
    /* x clamped to +-AB__GELU_CLAMP in the sech^2 term, as in the scalar code */
    __m512 vc = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-AB__GELU_CLAMP)), _mm512_set1_ps(AB__GELU_CLAMP));
    __m512 du = _mm512_mul_ps(_mm512_set1_ps(AB__GELU_K),
                              _mm512_fmadd_ps(_mm512_set1_ps(3.0f * AB__GELU_C), _mm512_mul_ps(vc, vc),
                                              _mm512_set1_ps(1.0f)));
    __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), vc), sech2), du);
    return _mm512_add_ps(s, t);
}

AB__T_AVX512 static void ab__avx512_gelu_forward(float *out, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = ab__avx512_gelu(_mm512_loadu_ps(x + i));
        __m512 b = ab__avx512_gelu(_mm512_loadu_ps(x + i + 16));
        _mm512_storeu_ps(out + i, a);
        _mm512_storeu_ps(out + i + 16, b);
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, ab__avx512_gelu(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 k = ab__avx512_mask(n - i);
        _mm512_mask_storeu_ps(out + i, k, ab__avx512_gelu(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

AB__T_AVX512 static void ab__avx512_gelu_backward(float *dx, const float *x, const float *dout, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 g = ab__avx512_gelu_grad(_mm512_loadu_ps(x + i));
        _mm512_storeu_ps(dx + i, _mm512_fmadd_ps(_mm512_loadu_ps(dout + i), g, _mm512_loadu_ps(dx + i)));
    }
    if (i < n) {
        __mmask16 k = ab__avx512_mask(n - i);
        __m512 g = ab__avx512_gelu_grad(_mm512_maskz_loadu_ps(k, x + i));
        _mm512_mask_storeu_ps(dx + i, k, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, dout + i), g,
                                                         _mm512_maskz_loadu_ps(k, dx + i)));
    }
}

AB__T_AVX512 static void ab__avx512_add(float *out, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 s0 = _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 s1 = _mm512_add_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        _mm512_storeu_ps(out + i, s0);
        _mm512_storeu_ps(out + i + 16, s1);
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        __mmask16 k = ab__avx512_mask(n - i);
        _mm512_mask_storeu_ps(out + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, a + i),
                                                        _mm512_maskz_loadu_ps(k, b + i)));
    }
}

/* ---- optimiser and reductions --------------------------------------------------------------- */
AB__T_AVX512 static void ab__avx512_adamw(float *p, const float *g, float *m, float *v, size_t n,
                                           float lr, float beta1, float beta2, float eps,
                                           float weight_decay, float inv_bc1, float inv_bc2) {
    __m512 vlr = _mm512_set1_ps(lr), b1 = _mm512_set1_ps(beta1), b2 = _mm512_set1_ps(beta2);
    __m512 omb1 = _mm512_set1_ps(1.0f - beta1), omb2 = _mm512_set1_ps(1.0f - beta2);
    __m512 veps = _mm512_set1_ps(eps), wd = _mm512_set1_ps(weight_decay);
    __m512 ibc1 = _mm512_set1_ps(inv_bc1), ibc2 = _mm512_set1_ps(inv_bc2);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : ab__avx512_mask(n - i);
        AB__PREFETCH(g + i);
        AB__PREFETCH(m + i);
        AB__PREFETCH(v + i);
        AB__PREFETCH(p + i);
        __m512 gv = _mm512_maskz_loadu_ps(k, g + i);
        __m512 mv = _mm512_fmadd_ps(b1, _mm512_maskz_loadu_ps(k, m + i), _mm512_mul_ps(omb1, gv));
        __m512 vv = _mm512_fmadd_ps(b2, _mm512_maskz_loadu_ps(k, v + i),
                                    _mm512_mul_ps(_mm512_mul_ps(omb2, gv), gv));
        __m512 mhat = _mm512_mul_ps(mv, ibc1), vhat = _mm512_mul_ps(vv, ibc2);
        __m512 step = _mm512_div_ps(mhat, _mm512_add_ps(_mm512_sqrt_ps(vhat), veps));
        __m512 pv = _mm512_maskz_loadu_ps(k, p + i);
        pv = _mm512_fnmadd_ps(vlr, _mm512_fmadd_ps(wd, pv, step), pv);
        _mm512_mask_storeu_ps(m + i, k, mv);
        _mm512_mask_storeu_ps(v + i, k, vv);
        _mm512_mask_storeu_ps(p + i, k, pv);
    }
}

/* Double accumulation as in the scalar oracle; four 8-lane accumulators combined in a fixed order
 * ((a0 + a1) + (a2 + a3), then the lanes): deterministic for every n. */
/* As the AVX2 kernel: the largest magnitude bits must lie below +inf's. */
AB__INL_AVX512 __m512i ab__avx512_magnitude_bits(__m512 x) {
    return _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff));
}

AB__T_AVX512 static int ab__avx512_all_finite(const float *x, size_t n) {
    __m512i m0 = _mm512_setzero_si512(), m1 = m0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm512_max_epi32(m0, ab__avx512_magnitude_bits(_mm512_loadu_ps(x + i)));
        m1 = _mm512_max_epi32(m1, ab__avx512_magnitude_bits(_mm512_loadu_ps(x + i + 16)));
    }
    if (i + 16 <= n) {
        m0 = _mm512_max_epi32(m0, ab__avx512_magnitude_bits(_mm512_loadu_ps(x + i)));
        i += 16;
    }
    if (i < n) {
        __m512 tail = _mm512_maskz_loadu_ps(ab__avx512_mask(n - i), x + i); /* zeros past n */
        m1 = _mm512_max_epi32(m1, ab__avx512_magnitude_bits(tail));
    }
    return _mm512_cmpgt_epi32_mask(_mm512_max_epi32(m0, m1), _mm512_set1_epi32(0x7f7fffff)) == 0;
}

AB__T_AVX512 static double ab__avx512_sumsq_block(const float *x, size_t n) {
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512d x0 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i)), x1 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
        __m512d x2 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16));
        __m512d x3 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24));
        a0 = _mm512_fmadd_pd(x0, x0, a0);
        a1 = _mm512_fmadd_pd(x1, x1, a1);
        a2 = _mm512_fmadd_pd(x2, x2, a2);
        a3 = _mm512_fmadd_pd(x3, x3, a3);
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (n - i)) - 1u);
        __m512d x0 = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + i));
        a0 = _mm512_fmadd_pd(x0, x0, a0);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)));
}

AB__T_AVX512 static double ab__avx512_dot_block(const float *x, const float *y, size_t n) {
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), _mm512_cvtps_pd(_mm256_loadu_ps(y + i)), a0);
        a1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)),
                             _mm512_cvtps_pd(_mm256_loadu_ps(y + i + 8)), a1);
        a2 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16)),
                             _mm512_cvtps_pd(_mm256_loadu_ps(y + i + 16)), a2);
        a3 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24)),
                             _mm512_cvtps_pd(_mm256_loadu_ps(y + i + 24)), a3);
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (n - i)) - 1u);
        a0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + i)),
                             _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, y + i)), a0);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)));
}

AB__T_AVX512 static void ab__avx512_scale(float *x, size_t n, float s) { ab__avx512_scale_row(x, n, s); }

/* saved = theta; theta += s*g (one FMA rounding) in one pass; streaming stores for large saved
 * copies (AB__NT_MIN_FLOATS, kernels/avx2.h). */
AB__T_AVX512 static void ab__avx512_axpy_save(float *theta, float *saved, const float *g, size_t n,
                                               float s) {
    __m512 vs = _mm512_set1_ps(s);
    size_t i = 0;
    if (saved && n >= AB__NT_MIN_FLOATS) {
        size_t head = (size_t)((64u - ((uintptr_t)saved & 63u)) & 63u) / sizeof(float);
        if (((uintptr_t)saved & 3u) == 0 && head > 0) { /* plain stores up to a 64-byte boundary */
            __mmask16 k = ab__avx512_mask(head);
            __m512 t = _mm512_maskz_loadu_ps(k, theta);
            _mm512_mask_storeu_ps(saved, k, t);
            _mm512_mask_storeu_ps(theta, k, _mm512_fmadd_ps(vs, _mm512_maskz_loadu_ps(k, g), t));
            i = head;
        }
        if (((uintptr_t)(saved + i) & 63u) == 0) {
            for (; i + 32 <= n; i += 32) {
                __m512 t0 = _mm512_loadu_ps(theta + i), t1 = _mm512_loadu_ps(theta + i + 16);
                _mm512_stream_ps(saved + i, t0);
                _mm512_stream_ps(saved + i + 16, t1);
                _mm512_storeu_ps(theta + i, _mm512_fmadd_ps(vs, _mm512_loadu_ps(g + i), t0));
                _mm512_storeu_ps(theta + i + 16, _mm512_fmadd_ps(vs, _mm512_loadu_ps(g + i + 16), t1));
            }
            _mm_sfence(); /* streaming stores are weakly ordered: publish them before returning */
        }
    }
    for (; i + 16 <= n; i += 16) {
        __m512 t = _mm512_loadu_ps(theta + i);
        if (saved) _mm512_storeu_ps(saved + i, t);
        _mm512_storeu_ps(theta + i, _mm512_fmadd_ps(vs, _mm512_loadu_ps(g + i), t));
    }
    if (i < n) {
        __mmask16 k = ab__avx512_mask(n - i);
        __m512 t = _mm512_maskz_loadu_ps(k, theta + i);
        if (saved) _mm512_mask_storeu_ps(saved + i, k, t);
        _mm512_mask_storeu_ps(theta + i, k, _mm512_fmadd_ps(vs, _mm512_maskz_loadu_ps(k, g + i), t));
    }
}

/* ---- ghost norm ------------------------------------------------------------------------------ */
/* Pairs (t, s) in register tiles of AB__GHOST512_TILE x AB__GHOST512_TILE rows: 4 x 4 = 16 float
 * dot products, one zmm accumulator each (16 of the 32 zmm, plus 4 + 1 for the loaded rows), which
 * is exactly one 16-lane vector after the horizontal reduction below. 8 row loads feed 16 FMAs per
 * 16 floats of k, so the loop is FMA-bound rather than load-bound. */
#define AB__GHOST512_TILE 4

/* Lane 4i + j = x_{r[i]} . x_{c[j]} over n floats: 16 accumulators over k, then a fixed
 * transpose-and-add tree (15 adds), so the summation order depends only on n. */
/* One k step of the tile: row i of the tile times the four column vectors. */
#define AB__GRAM512_ROW(a, x0, x1, x2, x3)                                                         \
    do {                                                                                           \
        x0 = _mm512_fmadd_ps(a, c0, x0);                                                           \
        x1 = _mm512_fmadd_ps(a, c1, x1);                                                           \
        x2 = _mm512_fmadd_ps(a, c2, x2);                                                           \
        x3 = _mm512_fmadd_ps(a, c3, x3);                                                           \
    } while (0)
#define AB__GRAM512_STEP(LOAD)                                                                     \
    do {                                                                                           \
        __m512 c0 = LOAD(c[0] + k), c1 = LOAD(c[1] + k), c2 = LOAD(c[2] + k), c3 = LOAD(c[3] + k); \
        __m512 a0 = LOAD(r[0] + k), a1 = LOAD(r[1] + k);                                           \
        AB__GRAM512_ROW(a0, x00, x01, x02, x03);                                                   \
        AB__GRAM512_ROW(a1, x10, x11, x12, x13);                                                   \
        __m512 a2 = LOAD(r[2] + k), a3 = LOAD(r[3] + k);                                           \
        AB__GRAM512_ROW(a2, x20, x21, x22, x23);                                                   \
        AB__GRAM512_ROW(a3, x30, x31, x32, x33);                                                   \
    } while (0)
#define AB__GRAM512_LOAD(p) _mm512_loadu_ps(p)
#define AB__GRAM512_LOAD_TAIL(p) _mm512_maskz_loadu_ps(m, p)

/* 16 -> 8 (within 128-bit lanes: [x0, y0, x1, y1] + [x2, y2, x3, y3]) */
AB__INL_AVX512 __m512 ab__avx512_pair_ps(__m512 x, __m512 y) {
    return _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
}
/* 8 -> 4 (within 128-bit lanes: the four accumulators in order, each partial) */
AB__INL_AVX512 __m512 ab__avx512_pair_pd(__m512 x, __m512 y) {
    __m512d a = _mm512_castps_pd(x), b = _mm512_castps_pd(y);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
}
/* 4 -> 2 -> 1 (128-bit lanes: [x0 + x1, x2 + x3, y0 + y1, y2 + y3]) */
AB__INL_AVX512 __m512 ab__avx512_pair_128(__m512 x, __m512 y) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lane 4i + j = x_{r[i]} . x_{c[j]} over n floats: 16 accumulators over k, then a fixed
 * transpose-and-add tree (15 adds), so the summation order depends only on n. */
AB__INL_AVX512 __m512 ab__avx512_gram_tile(const float *const r[4], const float *const c[4], int n) {
    __m512 x00 = _mm512_setzero_ps(), x01 = x00, x02 = x00, x03 = x00, x10 = x00, x11 = x00,
           x12 = x00, x13 = x00, x20 = x00, x21 = x00, x22 = x00, x23 = x00, x30 = x00, x31 = x00,
           x32 = x00, x33 = x00;
    int k = 0;
    for (; k + 16 <= n; k += 16) AB__GRAM512_STEP(AB__GRAM512_LOAD);
    if (k < n) {
        __mmask16 m = ab__avx512_mask((size_t)(n - k));
        AB__GRAM512_STEP(AB__GRAM512_LOAD_TAIL);
    }
    __m512 b0 = ab__avx512_pair_ps(x00, x01), b1 = ab__avx512_pair_ps(x02, x03);
    __m512 b2 = ab__avx512_pair_ps(x10, x11), b3 = ab__avx512_pair_ps(x12, x13);
    __m512 b4 = ab__avx512_pair_ps(x20, x21), b5 = ab__avx512_pair_ps(x22, x23);
    __m512 b6 = ab__avx512_pair_ps(x30, x31), b7 = ab__avx512_pair_ps(x32, x33);
    __m512 q0 = ab__avx512_pair_pd(b0, b1), q1 = ab__avx512_pair_pd(b2, b3);
    __m512 q2 = ab__avx512_pair_pd(b4, b5), q3 = ab__avx512_pair_pd(b6, b7);
    return ab__avx512_pair_128(ab__avx512_pair_128(q0, q1), ab__avx512_pair_128(q2, q3));
}

/* Tiles (t0, s0) with s0 >= t0 cover every pair t <= s once. Rows past T repeat row T - 1 (valid
 * memory) and get weight 0, as do the pairs s < t of diagonal tiles; t < s weighs 2, t == s 1. */
AB__T_AVX512 static double ab__avx512_ghost_sq(const float *A, const float *G, int T, int d_in,
                                                int d_out) {
    const __m512i lane_i = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i lane_j = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    const __m512i vT = _mm512_set1_epi32(T);
    __m512d sum_lo = _mm512_setzero_pd(), sum_hi = sum_lo;
    for (int t0 = 0; t0 < T; t0 += AB__GHOST512_TILE) {
        const float *ra[4], *rg[4];
        for (int i = 0; i < 4; i++) {
            int t = t0 + i < T ? t0 + i : T - 1;
            ra[i] = A + (size_t)t * d_in;
            rg[i] = G + (size_t)t * d_out;
        }
        __m512i vt = _mm512_add_epi32(_mm512_set1_epi32(t0), lane_i);
        for (int s0 = t0; s0 < T; s0 += AB__GHOST512_TILE) {
            const float *ca[4], *cg[4];
            for (int j = 0; j < 4; j++) {
                int s = s0 + j < T ? s0 + j : T - 1;
                ca[j] = A + (size_t)s * d_in;
                cg[j] = G + (size_t)s * d_out;
            }
            __m512 ga = ab__avx512_gram_tile(ra, ca, d_in);
            __m512 gg = ab__avx512_gram_tile(rg, cg, d_out);
            __m512i vs = _mm512_add_epi32(_mm512_set1_epi32(s0), lane_j);
            __mmask16 valid = _mm512_cmplt_epi32_mask(vs, vT) & _mm512_cmplt_epi32_mask(vt, vT) &
                              _mm512_cmple_epi32_mask(vt, vs);
            __mmask16 off_diag = _mm512_cmplt_epi32_mask(vt, vs);
            /* w * ga exact (w in {0, 1, 2}); a product of two floats is exact in double */
            __m512 w = _mm512_mask_blend_ps(off_diag, _mm512_set1_ps(1.0f), _mm512_set1_ps(2.0f));
            ga = _mm512_maskz_mul_ps(valid, ga, w);
            gg = _mm512_maskz_mov_ps(valid, gg); /* no 0 * inf from a lane that does not count */
            sum_lo = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(ga)),
                                     _mm512_cvtps_pd(_mm512_castps512_ps256(gg)), sum_lo);
            sum_hi = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(ga, 1)),
                                     _mm512_cvtps_pd(_mm512_extractf32x8_ps(gg, 1)), sum_hi);
        }
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi));
}

static void ab__avx512_fill(ab__kernels *k) {
    k->vexpf = ab__avx512_vexpf;
    k->softmax = ab__avx512_softmax;
    k->softmax_backward = ab__avx512_softmax_backward;
    k->log_softmax = ab__avx512_log_softmax;
    k->cross_entropy = ab__avx512_cross_entropy;
    k->layernorm_forward = ab__avx512_layernorm_forward;
    k->layernorm_backward = ab__avx512_layernorm_backward;
    k->gelu_forward = ab__avx512_gelu_forward;
    k->gelu_backward = ab__avx512_gelu_backward;
    k->add = ab__avx512_add;
    k->all_finite = ab__avx512_all_finite;
    k->adamw = ab__avx512_adamw;
    k->sumsq_block = ab__avx512_sumsq_block;
    k->dot_block = ab__avx512_dot_block;
    k->scale = ab__avx512_scale;
    k->axpy_save = ab__avx512_axpy_save;
    k->ghost_sq = ab__avx512_ghost_sq;
}

#ifdef __cplusplus
}
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif /* AB_KERNELS_AVX512_H */
