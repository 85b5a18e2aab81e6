/* kernels/scalar.h - the scalar reference kernels (part of antibody.h).
 *
 * Portable C99, no intrinsics. These are the oracle every SIMD path is tested against and the
 * fallback on non-x86 machines. Written for clarity first; loops are ordered so the compiler can
 * still vectorise the inner ones (row-major, unit stride innermost).
 */
#ifndef AB_KERNELS_SCALAR_H
#define AB_KERNELS_SCALAR_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- exp ------------------------------------------------------------------------------------ */
/* Cody-Waite split of ln 2 (Cephes): AB__LN2_HI has 9 significant bits so n*AB__LN2_HI is exact for
 * |n| <= 2^15; AB__LN2_LO carries the rest. The polynomial is the degree-7 Taylor series of e^r:
 * on |r| <= ln2/2 its truncation error is 0.3466^8/8! = 5.2e-9 relative (0.09 ulp), so the error
 * budget is Horner rounding, measured <= AB_EXPF_MAX_ULP by tools/exp_sweep.c. */
#define AB__LOG2E 1.44269504088896341f
#define AB__LN2_HI 0.693359375f
#define AB__LN2_LO (-2.12194440e-4f)
#define AB__EXP_C2 (1.0f / 2.0f)
#define AB__EXP_C3 (1.0f / 6.0f)
#define AB__EXP_C4 (1.0f / 24.0f)
#define AB__EXP_C5 (1.0f / 120.0f)
#define AB__EXP_C6 (1.0f / 720.0f)
#define AB__EXP_C7 (1.0f / 5040.0f)
#define AB__EXP_ZERO_X (-103.972084045410f) /* below: exp rounds to 0 */

static float ab__pow2i(int e) { /* 2^e for e in [-126, 127], built from the bits */
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)(e + 127) << 23;
    return v.f;
}

static float ab__scalar_expf(float x) {
    if (x != x) return x;
    if (x > AB_EXPF_MAX_X) return (float)INFINITY;
    if (x < AB__EXP_ZERO_X) return 0.0f;
    float n = floorf(x * AB__LOG2E + 0.5f);
    float r = (x - n * AB__LN2_HI) - n * AB__LN2_LO;
    float p = AB__EXP_C7;
    p = p * r + AB__EXP_C6;
    p = p * r + AB__EXP_C5;
    p = p * r + AB__EXP_C4;
    p = p * r + AB__EXP_C3;
    p = p * r + AB__EXP_C2;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int e = (int)n;
    if (e > 127) return p * ab__pow2i(127) * 2.0f;  /* x just below AB_EXPF_MAX_X: n = 128 */
    if (e < -126) return p * ab__pow2i(e + 126) * ab__pow2i(-126); /* one rounding, to subnormal */
    return p * ab__pow2i(e);
}

static void ab__scalar_vexpf(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = ab__scalar_expf(x[i]);
}

/* ---- GEMM ----------------------------------------------------------------------------------- */
/* C = beta*C (beta == 0 writes zeros without reading C, so NaN in C is ignored as in BLAS). */
static void ab__scale_matrix(float *C, int m, int n, int ldc, float beta) {
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < n; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int j = 0; j < n; j++) c[j] *= beta;
    }
}

static void ab__scalar_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                             const float *A, int lda, const float *B, int ldb, float beta,
                             float *C, int ldc) {
    ab__scale_matrix(C, m, n, ldc, beta);
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        if (!trans_b) {
            /* rank-1 updates of row i: unit stride over B's rows */
            for (int p = 0; p < k; p++) {
                float a = alpha * (trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
                const float *b = B + (size_t)p * ldb;
                for (int j = 0; j < n; j++) c[j] += a * b[j];
            }
        } else {
            /* op(B)[p][j] = B[j][p]: dot products along B's rows */
            for (int j = 0; j < n; j++) {
                const float *b = B + (size_t)j * ldb;
                float acc = 0.0f;
                if (!trans_a) {
                    const float *a = A + (size_t)i * lda;
                    for (int p = 0; p < k; p++) acc += a[p] * b[p];
                } else {
                    for (int p = 0; p < k; p++) acc += A[(size_t)p * lda + i] * b[p];
                }
                c[j] += alpha * acc;
            }
        }
    }
}

/* The oracle runs in one piece, with no workspace. */
static void ab__scalar_sgemm_plan(ab__gemm_job *job, int n_threads) {
    (void)n_threads;
    job->parts = 1;
    job->ws_floats = 0;
}
static void ab__scalar_add(float *out, const float *a, const float *b, size_t n);
static void ab__scalar_gelu_forward(float *out, const float *x, size_t n);
static void ab__scalar_sgemm_part(const ab__gemm_job *g, int part, float *workspace) {
    (void)part, (void)workspace;
    if (g->bias)
        for (int i = 0; i < g->m; i++) memcpy(g->C + (size_t)i * g->ldc, g->bias, sizeof(float) * (size_t)g->n);
    ab__scalar_sgemm(g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha, g->A, g->lda, g->B, g->ldb,
                     g->bias ? 1.0f : g->beta, g->C, g->ldc);
    for (int i = 0; i < g->m; i++) {
        float *c = g->C + (size_t)i * g->ldc;
        if (g->resid) ab__scalar_add(c, c, g->resid + (size_t)i * g->ldr, (size_t)g->n);
        if (g->gelu) ab__scalar_gelu_forward(g->gelu + (size_t)i * g->ldg, c, (size_t)g->n);
    }
}

/* ---- softmax / cross-entropy ---------------------------------------------------------------- */
/* A fully masked row: every (unmasked) entry -inf. Its max is -inf and x - max would be NaN
 * (-inf - -inf), so every path's row kernels test for it and give the limits of a row with no
 * mass, as ab_softmax documents (antibody.h): softmax 0 everywhere (a fully masked attention row
 * contributes nothing), log_softmax -inf, cross-entropy loss +inf and softmax 0 in its gradient.
 * Softmax treats the row as having no valid entries; log_softmax and cross-entropy take max = 0
 * and log-sum-exp = +inf, so that their ordinary formulas give exactly those limits: x - max - lse
 * = -inf, loss = max + lse - x_t = +inf and exp(x - (max + lse)) = 0. */
static void ab__scalar_softmax(float *y, const float *x, int rows, int cols, int causal) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        int valid = causal ? r + (cols - rows) + 1 : cols;
        float mx = xr[0];
        for (int j = 1; j < valid; j++) mx = xr[j] > mx ? xr[j] : mx;
        if (mx == -INFINITY) valid = 0; /* fully masked: all zeros */
        float sum = 0.0f;
        for (int j = 0; j < valid; j++) {
            yr[j] = ab__scalar_expf(xr[j] - mx);
            sum += yr[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < valid; j++) yr[j] *= inv;
        for (int j = valid; j < cols; j++) yr[j] = 0.0f;
    }
}

static void ab__scalar_softmax_backward(float *dx, const float *y, const float *dy, int rows,
                                        int cols) {
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        float dot = 0.0f;
        for (int j = 0; j < cols; j++) dot += yr[j] * dyr[j];
        for (int j = 0; j < cols; j++) dxr[j] += yr[j] * (dyr[j] - dot);
    }
}

/* max and log(sum(exp(x - max))) of one row; 0 and +inf for a fully masked row (see above) */
static float ab__scalar_row_lse(const float *x, int cols, float *mx_out) {
    float mx = x[0];
    for (int j = 1; j < cols; j++) mx = x[j] > mx ? x[j] : mx;
    if (mx == -INFINITY) {
        *mx_out = 0.0f;
        return INFINITY;
    }
    float sum = 0.0f;
    for (int j = 0; j < cols; j++) sum += ab__scalar_expf(x[j] - mx);
    *mx_out = mx;
    return logf(sum);
}

static void ab__scalar_log_softmax(float *y, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        float mx, lse = ab__scalar_row_lse(x + (size_t)r * cols, cols, &mx);
        for (int j = 0; j < cols; j++) y[(size_t)r * cols + j] = x[(size_t)r * cols + j] - mx - lse;
    }
}

static void ab__scalar_cross_entropy(float *losses, float *dlogits, const float *logits,
                                     const int *targets, const float *weights, int rows,
                                     int vocab, float dscale) {
    for (int r = 0; r < rows; r++) {
        float w = weights ? weights[r] : 1.0f;
        if (w == 0.0f) {
            if (losses) losses[r] = 0.0f;
            continue;
        }
        const float *lr = logits + (size_t)r * vocab;
        float mx, lse = ab__scalar_row_lse(lr, vocab, &mx);
        if (losses) losses[r] = mx + lse - lr[targets[r]];
        if (dlogits) {
            float *dr = dlogits + (size_t)r * vocab;
            float g = dscale * w, shift = mx + lse;
            for (int j = 0; j < vocab; j++) dr[j] += g * ab__scalar_expf(lr[j] - shift);
            dr[targets[r]] -= g;
        }
    }
}

/* ---- layers --------------------------------------------------------------------------------- */
static void ab__scalar_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                         const float *weight, const float *bias, int rows,
                                         int cols, float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        float mu = 0.0f;
        for (int j = 0; j < cols; j++) mu += xr[j];
        mu /= (float)cols;
        float var = 0.0f; /* two-pass variance: no cancellation */
        for (int j = 0; j < cols; j++) var += (xr[j] - mu) * (xr[j] - mu);
        var /= (float)cols;
        float rs = 1.0f / sqrtf(var + eps);
        for (int j = 0; j < cols; j++) o[j] = (xr[j] - mu) * rs * weight[j] + bias[j];
        if (mean) mean[r] = mu;
        if (rstd) rstd[r] = rs;
    }
}

static void ab__scalar_layernorm_backward(float *dx, float *dweight, float *dbias,
                                          const float *dout, const float *x, const float *weight,
                                          const float *mean, const float *rstd, int rows,
                                          int cols) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *dr = dout + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        float mu = mean[r], rs = rstd[r];
        /* dnorm = dout * weight; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int j = 0; j < cols; j++) {
            float norm = (xr[j] - mu) * rs, dnorm = weight[j] * dr[j];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= (float)cols;
        dnorm_norm_mean /= (float)cols;
        for (int j = 0; j < cols; j++) {
            float norm = (xr[j] - mu) * rs, dnorm = weight[j] * dr[j];
            if (dbias) dbias[j] += dr[j];
            if (dweight) dweight[j] += norm * dr[j];
            dxr[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
        }
    }
}

#define AB__GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define AB__GELU_C 0.044715f
/* Beyond |x| = AB__GELU_CLAMP, tanh(u) rounds to +-1 and sech^2(u) to exactly 0 in float, so the
 * x * sech^2 * u'(x) term of the backward pass is 0; clamping x there keeps u'(x) ~ x^2 from
 * overflowing to inf for huge inputs (0 * inf = NaN). */
#define AB__GELU_CLAMP 10.0f

static void ab__scalar_gelu_forward(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i], u = AB__GELU_K * (v + AB__GELU_C * v * v * v);
        out[i] = 0.5f * v * (1.0f + tanhf(u));
    }
}

static void ab__scalar_gelu_backward(float *dx, const float *x, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i], u = AB__GELU_K * (v + AB__GELU_C * v * v * v);
        float th = tanhf(u), sech2 = 1.0f - th * th;
        float vc = v > AB__GELU_CLAMP ? AB__GELU_CLAMP : v < -AB__GELU_CLAMP ? -AB__GELU_CLAMP : v;
        float du = AB__GELU_K * (1.0f + 3.0f * AB__GELU_C * vc * vc);
        dx[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * vc * sech2 * du);
    }
}

static void ab__scalar_add(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---- optimiser and reductions --------------------------------------------------------------- */
static void ab__scalar_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay,
                             float inv_bc1, float inv_bc2) {
    for (size_t i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        float mhat = m[i] * inv_bc1, vhat = v[i] * inv_bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p[i]);
    }
}

/* Finite iff the exponent field is not all ones. */
static int ab__scalar_all_finite(const float *x, size_t n) {
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

static double ab__scalar_sumsq_block(const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

static double ab__scalar_dot_block(const float *x, const float *y, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

static void ab__scalar_scale(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void ab__scalar_axpy_save(float *theta, float *saved, const float *g, size_t n, float s) {
    if (saved) memcpy(saved, theta, n * sizeof(float));
    for (size_t i = 0; i < n; i++) theta[i] += s * g[i];
}

/* Ghost norm (contract in kernels/kernels.h): sequential float dot products, one per pair t <= s. */
static float ab__scalar_dotf(const float *x, const float *y, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

static double ab__scalar_ghost_sq(const float *A, const float *G, int T, int d_in, int d_out) {
    double sq = 0.0;
    for (int t = 0; t < T; t++) {
        const float *at = A + (size_t)t * d_in, *gt = G + (size_t)t * d_out;
        for (int s = t; s < T; s++) {
            double w = s == t ? 1.0 : 2.0;
            sq += w * (double)ab__scalar_dotf(at, A + (size_t)s * d_in, d_in) *
                  (double)ab__scalar_dotf(gt, G + (size_t)s * d_out, d_out);
        }
    }
    return sq;
}

/* ||sum_t g_t||^2 for one sample's T x d_out output gradient (the bias gradient's norm). Not
 * dispatched: O(T * d_out), negligible next to the weight term. */
static float ab__psnorm_bias(const float *G, int T, int d_out) {
    double sq = 0.0;
    for (int j = 0; j < d_out; j++) {
        double s = 0.0;
        for (int t = 0; t < T; t++) s += G[(size_t)t * d_out + j];
        sq += s * s;
    }
    return (float)sq;
}

static void ab__scalar_fill(ab__kernels *k) {
    k->sgemm_plan = ab__scalar_sgemm_plan;
    k->sgemm_part = ab__scalar_sgemm_part;
    k->vexpf = ab__scalar_vexpf;
    k->softmax = ab__scalar_softmax;
    k->softmax_backward = ab__scalar_softmax_backward;
    k->log_softmax = ab__scalar_log_softmax;
    k->cross_entropy = ab__scalar_cross_entropy;
    k->layernorm_forward = ab__scalar_layernorm_forward;
    k->layernorm_backward = ab__scalar_layernorm_backward;
    k->gelu_forward = ab__scalar_gelu_forward;
    k->gelu_backward = ab__scalar_gelu_backward;
    k->add = ab__scalar_add;
    k->all_finite = ab__scalar_all_finite;
    k->adamw = ab__scalar_adamw;
    k->sumsq_block = ab__scalar_sumsq_block;
    k->dot_block = ab__scalar_dot_block;
    k->scale = ab__scalar_scale;
    k->axpy_save = ab__scalar_axpy_save;
    k->ghost_sq = ab__scalar_ghost_sq;
}

#ifdef __cplusplus
}
#endif

#endif /* AB_KERNELS_SCALAR_H */
