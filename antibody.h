/* antibody.h - v0.3.2 - public domain / MIT (see end of file)
 *
 * The numerical core of antibody.h: scalar, AVX2 and AVX-512 kernels with runtime dispatch for
 * training small transformers on a CPU, and the array-level primitives of the Antibody and
 * Antidote defences against harmful fine-tuning. Needs only a C99 compiler and libm.
 *
 * USING IT
 *   In exactly ONE C or C++ file:        #define ANTIBODY_IMPLEMENTATION
 *                                        #include "antibody.h"
 *   Everywhere else just #include "antibody.h". Link with -lm -pthread (threads are the library's
 *   own POSIX threads; results are bitwise identical for every thread count). Never build with
 *   -ffast-math. The repository keeps kernels/ next to this file; `make single` writes
 *   build/antibody.h (everything in one file) and build/antibody_core.h (this core alone, kernels
 *   inlined).
 *
 * LAYERS (each file only calls the ones below it; DESIGN.md)
 *   kernels/            scalar oracle, AVX2, AVX-512 and GEMM kernels (never call the core)
 *   antibody.h          this core
 *   antibody_gpt.h      a GPT decoder with LoRA, checkpoints, KV cache   (ANTIBODY_GPT_IMPLEMENTATION)
 *   antibody_gpt_io.h   its checkpoints (save, load): part of that layer, included by antibody_gpt.h
 *   antibody_defence.h  the defences on that model: alignment, fine-tuning, Antidote
 *                                                                         (ANTIBODY_DEFENCE_IMPLEMENTATION)
 *   ANTIBODY_IMPLEMENTATION implements every one of them that the file includes.
 *
 * OPTIONS (define before the implementation include)
 *   ANTIBODY_STATIC     every public function is static (a private copy per translation unit)
 *   AB_MALLOC / AB_FREE your allocator, both or neither; aligned buffers are carved out of it
 *   AB_ASSERT(x)        internal invariants (default assert); never used for input checks
 *   AB_NO_SIMD          compile only the scalar kernels
 *   AB_NO_THREADS       no worker threads: everything runs on the calling thread
 *
 * CONVENTIONS
 *   - Every function returns ab_status (AB_OK == 0); ab_last_error() says what was wrong
 *     (thread-local). The library never prints and never exits.
 *   - Row-major matrices, int shapes. Bad shapes, NULL data, out-of-range ids: errors, not crashes.
 *   - *_backward functions ACCUMULATE (+=) into gradients, as in llm.c.
 *   - ab_init() (called lazily) picks the best ISA that CPUID and XCR0 allow; AB_ISA=scalar|avx2|
 *     avx512 or ab_set_isa() forces one (AB_ERR_ISA if unavailable). valgrind gets AVX2 by itself.
 *   - Reductions use a fixed blocked order (AB_REDUCE_BLOCK, double partials in index order):
 *     the same bits for any thread count on one ISA path.
 *   - An unknown or unusable AB_ISA is an error, not a fallback: ab_init() returns it (AB_ERR_ARG
 *     or AB_ERR_ISA), ab_get_isa() returns AB_ISA_COUNT, named "none", and every call fails with
 *     the same status and message until ab_set_isa() picks a path.
 *
 * NON-FINITE VALUES (NaN, +-Inf); the same on every ISA path
 *   - Arithmetic propagates them as IEEE does and returns AB_OK (GEMM, layers, exp, reductions:
 *     a NaN in gives NaN out). Checking every input would cost a pass per call; the steps below
 *     check where a NaN would otherwise be written into state that outlives the call.
 *   - The steps that update parameters check their gradient first and return AB_ERR_NAN with
 *     nothing written when it holds NaN or Inf: ab_adamw_step (params, m, v untouched),
 *     ab_sam_step (theta, saved untouched), ab_clip_grad_norm (g untouched). The state itself is
 *     not checked; finite state and gradient give finite results unless a value overflows float.
 *   - ab_sam_step with g == 0 leaves theta unchanged (there is no direction); when
 *     rho / (||g|| + AB_SAM_EPS) overflows float it returns AB_ERR_NAN with nothing written.
 *   - A fully masked softmax row (every entry -inf) is all zeros: it contributes nothing, as a
 *     fully masked attention row should. log_softmax gives -inf there, ab_cross_entropy a loss of
 *     +inf and a gradient with softmax 0 (-g at the target). A NaN or +inf in a row makes that
 *     row NaN.
 *   - The defence primitives and the checkpoint loader (antibody_gpt_io.h) refuse non-finite
 *     inputs with AB_ERR_NAN where stated.
 *
 * API
 *   core        ab_init ab_set_isa ab_get_isa ab_best_isa ab_cpu_supports ab_isa_compiled
 *               ab_isa_name ab_isa_from_name ab_status_str
 *               ab_last_error ab_fail (+ AB_TRY, AB_CHECK_*) ab_aligned_alloc ab_aligned_free
 *               ab_crc32 ab_save_file
 *   threads     ab_set_threads ab_get_threads ab_parallel_for   (a pool of POSIX threads: a late or
 *               descheduled thread's share is taken by the others; on x86, one thread while
 *               another process contends for the cores; same bits for any count)
 *   rng         ab_rng_seed ab_rng_u32 ab_rng_below ab_rng_uniform ab_rng_normal      (PCG32)
 *   gemm        ab_sgemm                         C = alpha op(A) op(B) + beta C, BLAS semantics
 *   softmax     ab_expf ab_vexpf ab_softmax ab_softmax_backward ab_log_softmax ab_cross_entropy
 *   layers      ab_linear_forward (x W^T + bias, + residual, GELU: one pass)
 *               ab_layernorm_forward/_backward ab_gelu_forward/_backward
 *               ab_residual_forward/_backward ab_embedding_forward/_backward ab_scale
 *   optimiser   ab_adamw_default ab_adamw_step ab_clip_grad_norm
 *   reduce      ab_l2_norm ab_dot ab_sumsq
 *   SAM step    ab_sam_step ab_sam_restore
 *   per-sample  ab_psnorm_linear ab_psnorm_embedding ab_psnorm_choose
 *   defences    ab_antibody_weights ab_antibody_lambda ab_cosine ab_antidote_mask ab_random_mask
 *               ab_mask_apply ab_proximal_grad         (plain arrays: use them on any model)
 *
 * EXAMPLE
 *   float A[2*3] = {1,2,3,4,5,6}, B[3*2] = {1,0,0,1,1,1}, C[2*2];
 *   ab_status st = ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
 *   if (st != AB_OK) fprintf(stderr, "sgemm: %s\n", ab_last_error());
 *
 * CHANGELOG
 *   0.1.0  core, dispatch, scalar/AVX2/AVX-512 kernels, the GPT model, the lab, the defences.
 *   0.1.1  AVX-512 SGEMM blocking KC x NC 512 x 256: products with k > 384 round differently.
 *   0.2.0  one file per layer: the model moved to antibody_gpt.h (config fields renamed: vocab ->
 *          n_vocab), the defences on a model to antibody_defence.h, the lab (vocabulary, data,
 *          judge, evaluation) to examples/lab/. New here: ab_fail, AB_TRY, ab_sumsq, ab_scale.
 *          A failed GEMM workspace allocation is AB_ERR_ALLOC (it used to fall back to scalar).
 *          Numerics unchanged: the lab's tables and logs are bit-identical to 0.1.1.
 *   0.3.0  ab_save_file: saves write a temporary file, fsync and rename it (ab_model_save
 *          through it; a target that is not a regular file is refused). NON-FINITE VALUES above:
 *          ab_adamw_step / ab_sam_step / ab_clip_grad_norm refuse a NaN or Inf gradient with their
 *          state untouched; a fully masked softmax row is 0; ab_get_isa returns AB_ISA_COUNT
 *          ("none") while ab_init fails. A small pthread pool replaces OpenMP (results identical
 *          for any thread count). ab_batch.loss_norm (sample-mean loss: Antibody's stage 2 as
 *          published), ab_align_cfg.strength (lambda = s max(0, eta - cos)), batched generation
 *          (ab_model_generate_batch). Packed batches (antibody_gpt.h, ab_batch): a batch with
 *          lengths and mask 0 beyond them computes only its real tokens; the lab's batches are
 *          packed, so its training rounds differently from 0.2.0 and its tables were re-measured.
 *          While another process contends for the cores (the caller's involuntary context
 *          switches, or a wait for a descheduled worker), parallel calls run on the caller alone
 *          for ~10 ms to ~1 s: 2 threads are no longer slower than 1 under a competitor.
 *   0.3.1  Speed only, the same bits: the GEMM micro-kernels prefetch a B read in place that is
 *          larger than L2; ab_adamw_step checks its gradients for NaN/Inf on the library's threads;
 *          a wait for a worker holds the pool on one thread only past ~1 ms (was ~30 us). The
 *          lab's per-batch logs and base checkpoint are bit-identical to 0.3.0's.
 *   0.3.2  The model's checkpoints moved from antibody_gpt.h into antibody_gpt_io.h, which
 *          antibody_gpt.h includes at its end: no API change, but keep the two files side by side
 *          (make install and build/antibody.h carry it). Numerics unchanged.
 */
#ifndef ANTIBODY_H
#define ANTIBODY_H

#define AB_VERSION_MAJOR 0
#define AB_VERSION_MINOR 3
#define AB_VERSION_PATCH 2
#define AB_VERSION_STRING "0.3.2"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* FILE, for ab_save_file's writer */

#ifdef ANTIBODY_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define ABDEF static __attribute__((unused)) /* a user need not call every function */
#else
#define ABDEF static
#endif
#else
#define ABDEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------- */
/* Status codes                                                                                    */
typedef enum ab_status {
    AB_OK = 0,
    AB_ERR_NULL = 1,     /* a required pointer was NULL */
    AB_ERR_SHAPE = 2,    /* a negative, zero-where-forbidden or inconsistent shape */
    AB_ERR_ARG = 3,      /* an argument out of its range (an id >= vocab, a bad option) */
    AB_ERR_ALLOC = 4,    /* memory allocation failed */
    AB_ERR_ISA = 5,      /* the requested instruction set is not available here */
    AB_ERR_IO = 6,       /* a file could not be read or written */
    AB_ERR_FORMAT = 7,   /* a file or data set is malformed */
    AB_ERR_NAN = 8,      /* NaN or Inf where finite numbers are required */
    AB_ERR_STATE = 9     /* an object used in the wrong state */
} ab_status;

ABDEF const char *ab_status_str(ab_status st); /* "AB_OK", "AB_ERR_SHAPE", ... never NULL */
ABDEF const char *ab_last_error(void);         /* message of the last error on this thread */

/* For code built on the core (the companion headers, your own layers): ab_fail sets the message
 * ab_last_error() returns (printf format) and returns st; the macros return early on a failed check. */
#if defined(__GNUC__) || defined(__clang__)
#define AB_PRINTF_FORMAT(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define AB_PRINTF_FORMAT(fmt, args)
#endif
ABDEF ab_status ab_fail(ab_status st, const char *fmt, ...) AB_PRINTF_FORMAT(2, 3);
#define AB_TRY(expr)                                                                               \
    do {                                                                                           \
        ab_status ab_try_st_ = (expr);                                                             \
        if (ab_try_st_ != AB_OK) return ab_try_st_;                                                \
    } while (0)
#define AB_CHECK_PTR(p)                                                                            \
    do {                                                                                           \
        if (!(p)) return ab_fail(AB_ERR_NULL, "%s: '%s' is NULL", __func__, #p);                   \
    } while (0)
#define AB_CHECK_DIM(d)                                                                            \
    do {                                                                                           \
        if ((d) < 0) return ab_fail(AB_ERR_SHAPE, "%s: %s = %d is negative", __func__, #d, (int)(d)); \
    } while (0)
#define AB_CHECK_POS(d)                                                                            \
    do {                                                                                           \
        if ((d) <= 0)                                                                              \
            return ab_fail(AB_ERR_SHAPE, "%s: %s = %d must be positive", __func__, #d, (int)(d));  \
    } while (0)

/* ---------------------------------------------------------------------------------------------- */
/* Instruction sets and dispatch                                                                   */
typedef enum ab_isa {
    AB_ISA_SCALAR = 0, /* portable C, the oracle */
    AB_ISA_AVX2 = 1,   /* AVX2 + FMA */
    AB_ISA_AVX512 = 2, /* AVX-512 F/BW/DQ/VL */
    AB_ISA_COUNT = 3
} ab_isa;

ABDEF ab_status ab_init(void);            /* idempotent; reads AB_ISA from the environment */
ABDEF ab_status ab_set_isa(ab_isa isa);   /* AB_ERR_ISA if the CPU/OS lacks it */
ABDEF ab_isa ab_get_isa(void);            /* the path in use; AB_ISA_COUNT ("none") if ab_init fails */
ABDEF ab_isa ab_best_isa(void);           /* the best path the CPU and OS support */
ABDEF int ab_cpu_supports(ab_isa isa);    /* 1 if usable: CPUID bits and XCR0 state enabled */
ABDEF int ab_isa_compiled(ab_isa isa);    /* 1 if this build contains kernels for it */
ABDEF const char *ab_isa_name(ab_isa isa); /* "scalar", "avx2", "avx512"; "none" for AB_ISA_COUNT */
ABDEF ab_status ab_isa_from_name(const char *name, ab_isa *out);

/* Threads: the library's own pool of POSIX threads (build with -pthread; AB_NO_THREADS or a
 * platform without them: always 1). Results never depend on the count. The default is the number
 * of online CPUs. Lowering the count stops the extra workers (ab_set_threads(1) stops them all,
 * e.g. before exit under valgrind); they start again on the next call that needs them.           */
#define AB_MAX_THREADS 256
ABDEF ab_status ab_set_threads(int n_threads); /* 1 <= n_threads <= AB_MAX_THREADS */
ABDEF int ab_get_threads(void);
/* Runs fn(ctx, chunk, slot) once for every chunk in [0, n_chunks), on up to ab_get_threads()
 * threads of which the caller is one, and returns when all have run. Chunks are claimed one at a
 * time, so a thread that starts late (or is descheduled) leaves its share to the others; write
 * chunks whose results do not depend on which thread runs them or in which order, and the output
 * is the same for every thread count. slot in [0, ab_get_threads()) names the thread running the
 * chunk: chunks running at the same time have different slots (index per-thread scratch by it).
 * A call from inside a chunk (nested), while another thread's call holds the pool, or while the
 * calling thread finds the cores contended (x86: it was descheduled twice within ~3 ms, or had
 * to wait for a worker the OS descheduled; then for ~10 ms, up to ~1 s while it recurs)
 * runs its chunks in order on the calling thread, slot 0. Returns AB_OK, or the status of the lowest
 * failing chunk (with its message; the other chunks still run).                                 */
typedef ab_status (*ab_parallel_fn)(void *ctx, int chunk, int slot);
ABDEF ab_status ab_parallel_for(int n_chunks, ab_parallel_fn fn, void *ctx);

/* ---------------------------------------------------------------------------------------------- */
/* Memory: 64-byte aligned buffers carved out of AB_MALLOC. ab_aligned_free(NULL) is a no-op.       */
#define AB_ALIGN 64
ABDEF void *ab_aligned_alloc(size_t bytes);
ABDEF void ab_aligned_free(void *p);

/* CRC-32 (IEEE 802.3, reflected 0xEDB88320, as zlib): crc = ab_crc32(0, data, n) and chain calls. */
ABDEF uint32_t ab_crc32(uint32_t crc, const void *data, size_t n);

/* Saving a file as sqlite commits (DESIGN.md, "Files the library writes"): ab_save_file calls
 * write(ctx, f) on a new temporary file in the directory of path (".NAME.tmp-PID-N", created
 * exclusively), checks it for write errors, flushes and fsyncs it, then renames it over path and
 * fsyncs the directory. ab_model_save and the lab's writers save through it.
 *   - Any failure (write returns an error, a write error, a full disk, a file-size limit with
 *     SIGXFSZ ignored) leaves path as it was and removes the temporary file. Nothing else is ever
 *     removed: the library removes no path it did not create.
 *   - An existing path keeps its permission bits (its owner becomes the saving user, as with any
 *     rename-based save; a file with other hard links gets a new inode, the other names keep the
 *     old contents). A symlink is followed (up to 40 links): the file it points to is replaced,
 *     the link stays.
 *   - An existing path that is not a regular file (a directory, a device such as /dev/null, a
 *     FIFO, a socket) is refused with AB_ERR_IO before anything is created: it is never written,
 *     replaced or removed.
 *   - The directory must be writable (the temporary file lives there), even to replace a file
 *     that is. A process killed during a save leaves its temporary file behind, path intact.
 * write returns AB_OK or its own error (ab_fail); it may ignore the results of its fwrite calls,
 * ab_save_file finds the error on f. Errors: AB_ERR_NULL, AB_ERR_ARG (path empty or ending in
 * '/'), AB_ERR_ALLOC, AB_ERR_IO (message "saving 'path': reason"), or write's status. Without
 * POSIX (neither __unix__ nor __APPLE__) it is fopen "wbx" + rename, with no fsync and no checks
 * of the target's type (on Windows rename cannot replace an existing file: AB_ERR_IO).          */
typedef ab_status (*ab_write_fn)(void *ctx, FILE *f);
ABDEF ab_status ab_save_file(const char *path, ab_write_fn write, void *ctx);

/* ---------------------------------------------------------------------------------------------- */
/* RNG: PCG32 (O'Neill 2014, pcg32 XSH-RR, 64-bit LCG state, 32-bit output). Every random choice of
 * a run flows from one seed. The stream id selects one of 2^63 independent sequences.              */
typedef struct ab_rng {
    uint64_t state;
    uint64_t inc;
} ab_rng;
ABDEF void ab_rng_seed(ab_rng *rng, uint64_t seed, uint64_t stream);
ABDEF uint32_t ab_rng_u32(ab_rng *rng);
ABDEF uint32_t ab_rng_below(ab_rng *rng, uint32_t bound); /* unbiased, in [0, bound); bound > 0 */
ABDEF float ab_rng_uniform(ab_rng *rng);                  /* in [0, 1), 24 random bits */
ABDEF float ab_rng_normal(ab_rng *rng);                   /* N(0,1), Box-Muller */

/* ---------------------------------------------------------------------------------------------- */
/* GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
 * op(A) is m x k, op(B) is k x n, C is m x n. lda is the row stride of A as stored (>= k without
 * transpose, >= m with), likewise ldb, ldc >= n. BLAS semantics: m == 0 or n == 0 does nothing;
 * k == 0 or alpha == 0 only scales C; beta == 0 overwrites C without reading it (NaN in C ignored). */
typedef enum ab_trans { AB_NO_TRANS = 0, AB_TRANS = 1 } ab_trans;
ABDEF ab_status ab_sgemm(ab_trans trans_a, ab_trans trans_b, int m, int n, int k, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc);

/* ---------------------------------------------------------------------------------------------- */
/* exp and softmax.
 * ab_expf: Cody-Waite reduction x = n*ln2 + r, |r| <= ln2/2, degree-7 polynomial, scale by 2^n.
 *   Error <= AB_EXPF_MAX_ULP ulp for x in [AB_EXPF_MIN_NORMAL_X, AB_EXPF_MAX_X] (normal results;
 *   checked by an exhaustive sweep, tools/exp_sweep.c). Below that, results are subnormal with
 *   absolute error <= 2^-149 (one subnormal step), and 0 below -103.98. Above AB_EXPF_MAX_X: +inf.
 *   NaN in, NaN out. ab_vexpf applies it to an array on the fastest path (in-place allowed).      */
#define AB_EXPF_MAX_ULP 2
#define AB_EXPF_MAX_X 88.72283172607421875f
#define AB_EXPF_MIN_NORMAL_X (-87.33654022216796875f)
ABDEF float ab_expf(float x);
ABDEF ab_status ab_vexpf(float *y, const float *x, size_t n);

/* Row softmax of a rows x cols matrix (in-place allowed). causal != 0 masks row r to the columns
 * [0, r + cols - rows] (bottom-right aligned, so it also serves a KV cache); masked entries get 0.
 * causal requires rows <= cols. Rows are max-subtracted: no overflow for any finite input. A row
 * whose (unmasked) entries are all -inf gives zeros (see NON-FINITE VALUES at the top).          */
ABDEF ab_status ab_softmax(float *y, const float *x, int rows, int cols, int causal);
/* dx += y * (dy - sum(dy * y)) per row, where y is the softmax output. */
ABDEF ab_status ab_softmax_backward(float *dx, const float *y, const float *dy, int rows, int cols);
/* y = x - logsumexp(x) per row (in-place allowed); -inf throughout a row of -inf. */
ABDEF ab_status ab_log_softmax(float *y, const float *x, int rows, int cols);

/* Fused softmax cross-entropy over `rows` positions of `vocab` logits.
 *   losses[r]   = -log softmax(logits[r])[targets[r]]    (written; 0 where weights[r] == 0)
 *   dlogits[r] += dscale * weights[r] * (softmax(logits[r]) - onehot(targets[r]))
 * weights may be NULL (all 1): a per-token mask times per-sample weights. losses or dlogits may be
 * NULL to skip that output. A target outside [0, vocab) where the weight is non-zero is an error.
 * A row of -inf logits has softmax 0: loss +inf, dlogits[r][target] -= dscale * weights[r].     */
ABDEF ab_status ab_cross_entropy(float *losses, float *dlogits, const float *logits,
                                 const int *targets, const float *weights, int rows, int vocab,
                                 float dscale);

/* ---------------------------------------------------------------------------------------------- */
/* Layers (llm.c shapes: rows = tokens, cols = channels).                                         */
/* out = (x - mean) * rstd * weight + bias per row; mean/rstd (rows each) are saved for backward
 * and may be NULL in inference. eps > 0 (1e-5 is the usual value).                                */
ABDEF ab_status ab_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                     const float *weight, const float *bias, int rows, int cols,
                                     float eps);
/* dx, dweight, dbias accumulate; dweight/dbias may be NULL to skip them. */
ABDEF ab_status ab_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                      const float *x, const float *weight, const float *mean,
                                      const float *rstd, int rows, int cols);
/* GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
ABDEF ab_status ab_gelu_forward(float *out, const float *x, size_t n);
ABDEF ab_status ab_gelu_backward(float *dx, const float *x, const float *dout, size_t n);
/* A linear layer in one pass over its output: out = x W^T + bias (+ residual); gelu_out (may be
 * NULL) = GELU(out). x [rows][d_in], W [d_out][d_in], bias [d_out] or NULL; out, residual (or
 * NULL; must not alias out) and gelu_out have rows of d_out floats ldo apart (ldo >= d_out).
 * Bit for bit what setting out's rows to bias, ab_sgemm(AB_NO_TRANS, AB_TRANS, ..., beta 1),
 * ab_residual_forward and ab_gelu_forward give, without the passes over out in between. */
ABDEF ab_status ab_linear_forward(float *out, int ldo, const float *x, const float *W,
                                  const float *bias, const float *residual, float *gelu_out,
                                  int rows, int d_in, int d_out);
/* out = a + b; backward: da += dout, db += dout. */
ABDEF ab_status ab_residual_forward(float *out, const float *a, const float *b, size_t n);
ABDEF ab_status ab_residual_backward(float *da, float *db, const float *dout, size_t n);
/* out[t] = table[ids[t]] for n_tokens ids; every id must lie in [0, vocab). */
ABDEF ab_status ab_embedding_forward(float *out, const int *ids, const float *table, int n_tokens,
                                     int vocab, int dim);
/* dtable[ids[t]] += dout[t], in token order (deterministic). */
ABDEF ab_status ab_embedding_backward(float *dtable, const float *dout, const int *ids,
                                      int n_tokens, int vocab, int dim);

/* ---------------------------------------------------------------------------------------------- */
/* Optimiser and reductions over flat buffers.                                                    */
/* One AdamW step (decoupled weight decay, bias-corrected moments); step counts from 1. A NaN or
 * Inf in grads is AB_ERR_NAN with params, m and v untouched (checked in a first pass over grads). */
typedef struct ab_adamw_cfg {
    float lr, beta1, beta2, eps, weight_decay;
} ab_adamw_cfg;
ABDEF ab_adamw_cfg ab_adamw_default(void); /* lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0.0 */
ABDEF ab_status ab_adamw_step(float *params, const float *grads, float *m, float *v, size_t n,
                              int step, const ab_adamw_cfg *cfg);

#define AB_REDUCE_BLOCK 4096 /* elements per block of the fixed-order reductions */
/* ||x||_2 and x.y, blocked fixed-order double accumulation, result rounded to float. */
ABDEF ab_status ab_l2_norm(const float *x, size_t n, float *norm);
ABDEF ab_status ab_dot(const float *x, const float *y, size_t n, float *dot);
/* sum of x_i^2 in the same fixed order, kept in double. */
ABDEF ab_status ab_sumsq(const float *x, size_t n, double *sumsq);
/* x *= s elementwise. */
ABDEF ab_status ab_scale(float *x, size_t n, float s);
/* If ||g|| > max_norm, g *= max_norm / ||g||. *norm_before (may be NULL) gets ||g|| before (+inf
 * if it exceeds FLT_MAX). NaN or Inf in g: AB_ERR_NAN, g untouched.                              */
ABDEF ab_status ab_clip_grad_norm(float *g, size_t n, float max_norm, float *norm_before);

/* SAM-style step: saved = theta (if saved != NULL), then theta += rho * g / (||g|| + AB_SAM_EPS).
 * rho < 0 is a descent step (Antibody's simulated attack uses rho = -alpha). *gnorm (may be NULL)
 * gets ||g||. ab_sam_restore copies saved back: bit-exact. g == 0 leaves theta unchanged (saved is
 * still written). AB_ERR_NAN, with theta and saved untouched, when g holds NaN or Inf or when the
 * scale rho / (||g|| + AB_SAM_EPS) overflows float.                                              */
#define AB_SAM_EPS 1e-7f
ABDEF ab_status ab_sam_step(float *theta, float *saved, const float *g, size_t n, float rho,
                            float *gnorm);
ABDEF ab_status ab_sam_restore(float *theta, const float *saved, size_t n);

/* ---------------------------------------------------------------------------------------------- */
/* Per-sample gradient norms without materialising per-sample gradients.
 * Linear layer y_t = W a_t + b applied to n_samples sequences of T tokens each:
 *   A: [n_samples][T][d_in] inputs, G: [n_samples][T][d_out] gradients of the loss w.r.t. y.
 * ADDS ||grad_W(i)||_F^2 to w_sqnorm[i] and ||grad_b(i)||^2 to b_sqnorm[i] (either may be NULL), so
 * calls for all layers of a network sum into one array: the network norm is sqrt of the sum.
 * GHOST computes <A A^T, G G^T>_F = sum_{t,s} (a_t . a_s)(g_t . g_s), O(T^2 (d_in + d_out)), with
 * no workspace: only the pairs t <= s (the Gram matrices are symmetric), each Gram entry a float
 * dot product, their products summed in double. MATERIALIZE forms G^T A, O(T d_in d_out). AUTO
 * picks ghost when 2 T^2 < d_in d_out (ab_psnorm_choose). T == 1 reduces to ||g||^2 ||a||^2.
 * Accuracy: MATERIALIZE is relative to the result; GHOST is absolute, about
 * FLT_EPSILON * ||A_i||_F^2 ||G_i||_F^2 (the float Gram entries), so a sample whose gradient nearly
 * cancels gets a small value clamped at >= 0 rather than its exact tiny norm. Per-sample gradients
 * carry whatever scaling G carries (for a token-mean batch loss, 1 / total tokens).              */
typedef enum ab_psnorm_method {
    AB_PSNORM_AUTO = 0,
    AB_PSNORM_GHOST = 1,
    AB_PSNORM_MATERIALIZE = 2
} ab_psnorm_method;
ABDEF ab_psnorm_method ab_psnorm_choose(int T, int d_in, int d_out);
ABDEF ab_status ab_psnorm_linear(float *w_sqnorm, float *b_sqnorm, const float *A, const float *G,
                                 int n_samples, int T, int d_in, int d_out,
                                 ab_psnorm_method method);
/* Embedding row lookup with ids [n_samples][T]: ADDS sum_{t,s} [x_t == x_s] g_t . g_s. */
ABDEF ab_status ab_psnorm_embedding(float *sqnorm, const int *ids, const float *G, int n_samples,
                                    int T, int vocab, int dim);

/* ---------------------------------------------------------------------------------------------- */
/* Defence primitives on plain arrays (ALGORITHMS.md); the defences on a model are
 * antibody_defence.h. The SAM-style step is ab_sam_step / ab_sam_restore above.
 *   ab_antibody_weights   w = softmax_i((q_i - c_i) / tau) from per-sample NLLs (c: own response,
 *                         q: a refusal to the same prompt); max-subtracted, in double; sums to 1.
 *   ab_antibody_lambda    lambda_raw = s max(0, eta - cos) (eta = 5 in the paper: the shape of
 *                         lambda; s scales its strength, 1 at LLM scale); lambda_t = decay
 *                         lambda_{t-1} + (1 - decay) lambda_raw, the first value initialising it.
 *   ab_cosine             x.y / (||x|| ||y|| + eps) with the fixed-order reductions.
 *   ab_antidote_mask      in every row of W [d_out][d_in], marks the k = round(alpha d_in) entries
 *                         with the HIGHEST score |W_ij| sqrt(s_j) (s_j: the input's sum of squares;
 *                         any positive scale of s gives the same mask). Ties: the lower column
 *                         first. ab_random_mask marks k uniformly random entries per row (the
 *                         control at the same density); ab_mask_apply zeroes the marked entries.
 *   ab_proximal_grad      Lisa's proximal term: g += rho (theta - anchor), penalty rho/2 ||.||^2. */
/* n >= 1 samples; tau finite > 0; c, q finite (AB_ERR_NAN otherwise). w may alias neither input. */
ABDEF ab_status ab_antibody_weights(float *w, const float *nll_response, const float *nll_refusal,
                                    int n, float tau);
typedef struct ab_lambda_ema {
    float value;     /* lambda_t */
    int initialised; /* 0 before the first update */
} ab_lambda_ema;
/* Updates st with cos = cos(g_f, g_diff); *lambda_raw (may be NULL) gets scale max(0, eta - cos).
 * eta finite, scale finite >= 0, decay in [0, 1], cos finite (AB_ERR_NAN: a NaN cosine means a NaN
 * gradient).                                                                                     */
ABDEF ab_status ab_antibody_lambda(ab_lambda_ema *st, float cos, float eta, float scale,
                                   float decay, float *lambda_raw);
ABDEF ab_status ab_cosine(const float *x, const float *y, size_t n, float eps, float *cos);
/* prune [d_out * d_in] gets 1 where the entry is pruned, else 0. alpha in [0, 1]. in_sumsq [d_in]
 * finite >= 0 (per input feature, the sum of x_j^2 over the calibration tokens); W finite. *n_pruned (may be NULL) gets the
 * count, d_out * round(alpha d_in).                                                              */
ABDEF ab_status ab_antidote_mask(unsigned char *prune, const float *W, int d_out, int d_in,
                                 const double *in_sumsq, float alpha, size_t *n_pruned);
ABDEF ab_status ab_random_mask(unsigned char *prune, int d_out, int d_in, float alpha, ab_rng *rng,
                               size_t *n_pruned);
ABDEF ab_status ab_mask_apply(float *W, const unsigned char *prune, size_t n);
/* g += rho (theta - anchor); *penalty (may be NULL) gets rho/2 ||theta - anchor||^2. rho >= 0.   */
ABDEF ab_status ab_proximal_grad(float *g, const float *theta, const float *anchor, size_t n,
                                 float rho, float *penalty);


#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_H */

/* ============================================================================================== */
/*                                        IMPLEMENTATION                                          */
/* ============================================================================================== */
/* ============================================================================================== */
/*                                        IMPLEMENTATION                                          */
/* ============================================================================================== */
#ifdef ANTIBODY_IMPLEMENTATION
#ifndef ANTIBODY_IMPLEMENTATION_DONE
#define ANTIBODY_IMPLEMENTATION_DONE

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__) /* ab_save_file: fsync, lstat, readlink, chmod */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(_POSIX_VERSION) && _POSIX_VERSION >= 200112L
#define AB__POSIX_FILES 1
#elif !defined(__cplusplus) && (defined(__LP64__) || defined(_LP64))
/* A strict ISO C build (-std=c99 on glibc, without _POSIX_C_SOURCE) hides these POSIX.1-2001
 * declarations, not the functions: every libc has them (on LP64 no large-file renaming applies). */
int lstat(const char *path, struct stat *st);
ssize_t readlink(const char *path, char *buf, size_t size);
int fileno(FILE *f);
#define AB__POSIX_FILES 1
#endif
#endif

#if defined(AB_MALLOC) && defined(AB_FREE)
#elif !defined(AB_MALLOC) && !defined(AB_FREE)
#define AB_MALLOC(sz) malloc(sz)
#define AB_FREE(p) free(p)
#else
#error "antibody.h: define both AB_MALLOC and AB_FREE, or neither"
#endif

#ifndef AB_ASSERT
#include <assert.h>
#define AB_ASSERT(x) assert(x)
#endif

#if !defined(AB_NO_SIMD) && (defined(__x86_64__) || defined(_M_X64)) &&                          \
    (defined(__GNUC__) || defined(__clang__))
#define AB__X86 1
#else
#define AB__X86 0
#endif

#if defined(__cplusplus)
#define AB__THREAD_LOCAL thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define AB__THREAD_LOCAL _Thread_local
#elif defined(__GNUC__)
#define AB__THREAD_LOCAL __thread
#else
#define AB__THREAD_LOCAL
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* --- errors ----------------------------------------------------------------------------------- */
static AB__THREAD_LOCAL char ab__errmsg[256];

ABDEF ab_status ab_fail(ab_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ab__errmsg, sizeof ab__errmsg, fmt, ap);
    va_end(ap);
    return st;
}

ABDEF const char *ab_status_str(ab_status st) {
    switch (st) {
    case AB_OK: return "AB_OK";
    case AB_ERR_NULL: return "AB_ERR_NULL (required pointer is NULL)";
    case AB_ERR_SHAPE: return "AB_ERR_SHAPE (bad or inconsistent shape)";
    case AB_ERR_ARG: return "AB_ERR_ARG (argument out of range)";
    case AB_ERR_ALLOC: return "AB_ERR_ALLOC (out of memory)";
    case AB_ERR_ISA: return "AB_ERR_ISA (instruction set not available)";
    case AB_ERR_IO: return "AB_ERR_IO (file could not be read or written)";
    case AB_ERR_FORMAT: return "AB_ERR_FORMAT (malformed file or data)";
    case AB_ERR_NAN: return "AB_ERR_NAN (NaN or Inf where finite numbers are required)";
    case AB_ERR_STATE: return "AB_ERR_STATE (object used in the wrong state)";
    }
    return "AB_ERR_? (unknown status)";
}

ABDEF const char *ab_last_error(void) { return ab__errmsg[0] ? ab__errmsg : "no error"; }

/* --- threads: a small pool of POSIX threads -------------------------------------------------- *
 * Why not OpenMP: libgomp's end-of-region barrier waits for every team member, so one worker that
 * the OS has descheduled (another process holds its core) stalls the region for a time slice; the
 * lab's model ran 16x slower on 2 threads than on 1 that way. Here a parallel call is a set of
 * chunks claimed one at a time through one atomic word; the caller claims chunks too, so work
 * that no worker has started yet is simply done by whoever gets to it, and the caller waits only
 * for chunks already claimed. A worker that wakes late finds nothing left and goes back to sleep.
 * Idle workers spin for AB__SPIN_TICKS (a region following soon is then picked up at once), then
 * sleep on a condition variable; the caller likewise spins briefly, then sleeps, while the last
 * claimed chunks finish. While another process contends for the cores, calls run on the caller
 * alone (ab__contended).
 *
 * The state word packs the region's generation (32 bits), its pool-chunk count (16) and the next
 * unclaimed chunk (16). A claim is a compare-and-swap of that word: it succeeds only while the
 * region it read is still open, so a worker can never run a chunk of a region that has ended, and
 * the region's fields (fn, ctx, ...) stay put while any of its chunks runs (the caller rewrites
 * them only after every chunk has finished). Slots: the caller is 0, worker i is i + 1.          */
#if !defined(AB_NO_THREADS) && (defined(__GNUC__) || defined(__clang__)) &&                      \
    (defined(__unix__) || defined(__APPLE__))
#define AB__THREADS 1
#else
#define AB__THREADS 0
#endif
#define AB__POOL_MAX_CHUNKS 0xffff /* chunks per region in the state word (more are grouped) */

static AB__THREAD_LOCAL int ab__in_parallel; /* this thread runs a chunk (or is a worker) */
static int ab__n_threads = 0;                 /* atomic; 0: not set, the online CPU count */

typedef struct ab__region_err {
    int chunk;     /* lowest failing user chunk, INT_MAX: none */
    ab_status st;
    char msg[sizeof ab__errmsg];
} ab__region_err;

static void ab__region_fail(ab__region_err *e, int chunk, ab_status st);

/* Runs user chunks [c0, c1) of fn on this thread; records the lowest failure in e. */
static void ab__run_chunks(ab_parallel_fn fn, void *ctx, int c0, int c1, int slot, ab__region_err *e) {
    for (int c = c0; c < c1; c++) {
        ab_status st = fn(ctx, c, slot);
        if (st != AB_OK) ab__region_fail(e, c, st);
    }
}

#if AB__THREADS
#include <pthread.h>
#include <unistd.h>
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
#include <sys/resource.h>
/* Linux's RUSAGE_THREAD (a _GNU_SOURCE name): this thread's counts. Only where AB__TICKS is the
 * TSC: the switch windows below are measured in its ticks. */
#define AB__RUSAGE_THREAD 1
#endif

#if defined(__x86_64__) || defined(__i386__)
#define AB__PAUSE() __builtin_ia32_pause()
#define AB__TICKS() __builtin_ia32_rdtsc()
#define AB__HAVE_TSC 1
/* ~20-40 us of spinning at 2.5-5 GHz TSC rates: longer than the serial gap between two regions
 * of a training step, far shorter than a scheduler time slice. */
#define AB__SPIN_TICKS 100000ull
#else
#define AB__PAUSE() ((void)0)
static unsigned long long ab__ticks_counter;
#define AB__TICKS() (++ab__ticks_counter)
#define AB__SPIN_TICKS 20000ull
#endif

#define AB__LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define AB__STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define AB__ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)

typedef struct ab__pool {
    int n_workers;        /* started (worker i has slot i + 1) */
    int stop_from;        /* atomic: workers with index >= stop_from exit */
    pthread_t tid[AB_MAX_THREADS];
    unsigned first_epoch[AB_MAX_THREADS]; /* the epoch when worker i was started */
    int busy;             /* atomic: a caller owns the pool */
    unsigned epoch;       /* atomic: bumped for every region and every stop */
    int sleepers;         /* atomic: workers waiting on `wake` */
    unsigned long long state; /* atomic: generation << 32 | pool chunks << 16 | next chunk */
    unsigned generation;
    /* the region (written by the caller before it publishes `state`) */
    ab_parallel_fn fn;
    void *ctx;
    int n_user;           /* user chunks; pool chunk j runs [j n_user / n, (j+1) n_user / n) */
    int max_slots;        /* atomic: workers with slot >= max_slots stay out */
    unsigned done;        /* atomic: pool chunks finished */
    int caller_waiting;   /* atomic */
    int err_lock;         /* atomic spin lock around err */
    ab__region_err err;
} ab__pool;

static ab__pool ab__pool_g;
static pthread_mutex_t ab__pool_admin = PTHREAD_MUTEX_INITIALIZER; /* starting, stopping workers */
static pthread_mutex_t ab__pool_lock = PTHREAD_MUTEX_INITIALIZER;  /* around the sleeps */
static pthread_cond_t ab__pool_wake = PTHREAD_COND_INITIALIZER;    /* workers wait for an epoch */
static pthread_cond_t ab__pool_done = PTHREAD_COND_INITIALIZER;    /* the caller waits for chunks */

static void ab__region_fail(ab__region_err *e, int chunk, ab_status st) {
    while (__atomic_exchange_n(&ab__pool_g.err_lock, 1, __ATOMIC_ACQUIRE)) AB__PAUSE();
    if (chunk < e->chunk) {
        e->chunk = chunk;
        e->st = st;
        snprintf(e->msg, sizeof e->msg, "%s", ab__errmsg);
    }
    __atomic_store_n(&ab__pool_g.err_lock, 0, __ATOMIC_RELEASE);
}

/* Claims and runs chunks of the open region until none is left; returns how many it ran. */
static unsigned ab__pool_work(ab__pool *p, int slot) {
    for (unsigned ran = 0;; ran++) {
        unsigned long long s = __atomic_load_n(&p->state, __ATOMIC_ACQUIRE);
        unsigned n = (unsigned)(s >> 16) & 0xffffu, next = (unsigned)s & 0xffffu;
        if (next >= n) return ran;
        if (slot >= __atomic_load_n(&p->max_slots, __ATOMIC_RELAXED)) return ran;
        if (!__atomic_compare_exchange_n(&p->state, &s, s + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            ran--;
            continue;
        }
        /* chunk `next` is ours: the region cannot end before it is done, so its fields hold */
        int c0 = (int)((long long)next * p->n_user / n), c1 = (int)((long long)(next + 1) * p->n_user / n);
        ab__run_chunks(p->fn, p->ctx, c0, c1, slot, &p->err);
        if (AB__ADD(&p->done, 1u) == n && AB__LOAD(&p->caller_waiting)) {
            pthread_mutex_lock(&ab__pool_lock);
            pthread_cond_signal(&ab__pool_done);
            pthread_mutex_unlock(&ab__pool_lock);
        }
    }
}

static void *ab__pool_worker(void *arg) {
    ab__pool *p = &ab__pool_g;
    int index = (int)(intptr_t)arg;
    unsigned seen = p->first_epoch[index]; /* a region or stop posted since then is not missed */
    ab__in_parallel = 1; /* a GEMM inside a chunk runs on this thread alone */
    for (;;) {
        unsigned long long t0 = AB__TICKS();
        unsigned e;
        while ((e = AB__LOAD(&p->epoch)) == seen && AB__TICKS() - t0 < AB__SPIN_TICKS) AB__PAUSE();
        if (e == seen) {
            pthread_mutex_lock(&ab__pool_lock);
            AB__ADD(&p->sleepers, 1);
            while ((e = AB__LOAD(&p->epoch)) == seen) pthread_cond_wait(&ab__pool_wake, &ab__pool_lock);
            AB__ADD(&p->sleepers, -1);
            pthread_mutex_unlock(&ab__pool_lock);
        }
        seen = e;
        if (index >= AB__LOAD(&p->stop_from)) return NULL;
        (void)ab__pool_work(p, index + 1);
    }
}

static void ab__pool_bump(ab__pool *p) {
    AB__ADD(&p->epoch, 1u);
    if (AB__LOAD(&p->sleepers) > 0) {
        pthread_mutex_lock(&ab__pool_lock);
        pthread_cond_broadcast(&ab__pool_wake);
        pthread_mutex_unlock(&ab__pool_lock);
    }
}

/* Stops and joins the workers with index >= keep (under p->admin). */
static void ab__pool_stop(ab__pool *p, int keep) {
    if (keep >= p->n_workers) return;
    AB__STORE(&p->stop_from, keep);
    ab__pool_bump(p);
    for (int i = keep; i < p->n_workers; i++) pthread_join(p->tid[i], NULL);
    p->n_workers = keep;
}

/* A forked child has the calling thread only: forget the parent's workers. */
static void ab__pool_atfork_child(void) {
    ab__pool *p = &ab__pool_g;
    p->n_workers = 0;
    p->sleepers = 0;
    p->busy = 0;
    p->caller_waiting = 0;
    p->err_lock = 0;
    pthread_mutex_init(&ab__pool_admin, NULL);
    pthread_mutex_init(&ab__pool_lock, NULL);
    pthread_cond_init(&ab__pool_wake, NULL);
    pthread_cond_init(&ab__pool_done, NULL);
}

/* Starts workers up to `want` (under p->admin); a failure leaves fewer, which is only slower. */
static void ab__pool_start(ab__pool *p, int want) {
    static int atfork_registered;
    if (!atfork_registered) atfork_registered = pthread_atfork(NULL, NULL, ab__pool_atfork_child) == 0;
    AB__STORE(&p->stop_from, AB_MAX_THREADS);
    while (p->n_workers < want) {
        p->first_epoch[p->n_workers] = AB__LOAD(&p->epoch);
        if (pthread_create(&p->tid[p->n_workers], NULL, ab__pool_worker, (void *)(intptr_t)p->n_workers))
            break;
        p->n_workers++;
    }
}

static int ab__default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > AB_MAX_THREADS ? AB_MAX_THREADS : (int)n;
}

static int ab__threads(void) {
    int n = __atomic_load_n(&ab__n_threads, __ATOMIC_RELAXED);
    if (n == 0) { /* a benign race: every thread computes the same value */
        n = ab__default_threads();
        __atomic_store_n(&ab__n_threads, n, __ATOMIC_RELAXED);
    }
    return n;
}

/* Sharing the cores. When another process wants our cores, more threads can make a run slower:
 * with 3 runnable threads on 2 cores each gets ~2/3 of one, the region's caller is descheduled
 * while the worker idles at the end of a region, and a chunk a descheduled worker has claimed
 * holds its region for a time slice (ms) while the region itself may take tens of microseconds
 * (v0.1 on OpenMP: 16x slower; the pool without this: 0.7x one thread on small products). So
 * while the cores are contended, parallel calls run on the caller alone (the serial path of
 * ab__parallel: the same chunks, the same bits), for a hold of AB__HOLD_TICKS (~10-20 ms),
 * doubled up to 64 times when contention comes back within 4 holds after the last one ended:
 * a lasting competitor keeps the library on one thread, a passing one costs it a few ms of the
 * second. Two signals, both about the thread making parallel calls (so the state is per thread):
 *   - involuntary context switches (Linux on x86: getrusage RUSAGE_THREAD, read at most every
 *     AB__PROBE_TICKS, ~2-4 ms): a window with two or more, or two windows in a row with one
 *     (a quiet machine: a window with two every few seconds, costing one hold). Measured here on 2
 *     cores, 2 threads of back-to-back 256x128x128 products: 8 switches/s alone, 960/s with one
 *     busy process beside them; 1 thread with that process: 8/s;
 *   - a stall: after its own chunks the caller waited for the others more than 8 times its own
 *     time per chunk plus AB__STALL_MIN_TICKS (a worker's chunk otherwise takes as long as its
 *     own; a descheduled one holds the region for a time slice, milliseconds). The floor was
 *     AB__SPIN_TICKS (~30 us): on the quiet 2-vCPU VM here, waits of 50-150 us (a worker late
 *     on its idle vCPU) fired it; 40 GPT-2 steps on 2 threads: stall holds 0.35 -> 0.23 per
 *     step, mean step the same (0.665 / 0.663 s). The waits left last milliseconds (the
 *     hypervisor running something else on the worker's vCPU): what the hold is for.
 * Without the TSC (AB__TICKS a call counter) neither signal fires: the pool behaves as before. */
#define AB__STALL_MIN_TICKS (AB__SPIN_TICKS * 40ull) /* ~1-1.6 ms */
#define AB__HOLD_TICKS (AB__SPIN_TICKS * 500ull)
#define AB__PROBE_TICKS (AB__SPIN_TICKS * 100ull)
typedef struct ab__contention {
    unsigned long long until, hold; /* ticks: serial until `until`; the last hold */
    unsigned long long t_probe;     /* ticks of the last switch count, 0: none */
    long nivcsw;                    /* involuntary switches at t_probe */
    int strikes;                    /* windows in a row with a switch (2 switches: 2 strikes) */
} ab__contention;
static AB__THREAD_LOCAL ab__contention ab__cont;

static void ab__contended_hold(unsigned long long now) {
    ab__contention *c = &ab__cont;
    unsigned long long hold = c->hold;
    if (hold == 0 || (now > c->until && now - c->until > 4 * hold)) hold = AB__HOLD_TICKS;
    else if (hold < 64 * AB__HOLD_TICKS) hold *= 2;
    c->hold = hold;
    c->until = now + hold;
    c->t_probe = 0;
    c->strikes = 0;
}

/* 1: run this parallel call on the caller alone (the cores are contended). */
static int ab__contended(void) {
    ab__contention *c = &ab__cont;
    unsigned long long now = AB__TICKS();
    if (now < c->until) return 1;
#if defined(AB__RUSAGE_THREAD)
    if (c->t_probe != 0 && now >= c->t_probe && now - c->t_probe < AB__PROBE_TICKS) return 0;
    struct rusage ru;
    if (getrusage(AB__RUSAGE_THREAD, &ru) != 0) return 0;
    long n = ru.ru_nivcsw;
    if (c->t_probe == 0 || now < c->t_probe || now - c->t_probe > 4 * AB__PROBE_TICKS)
        c->strikes = 0; /* no window to judge: a first count, or long since the last call */
    else
        c->strikes = n >= c->nivcsw + 2 ? 2 : n > c->nivcsw ? c->strikes + 1 : 0;
    c->nivcsw = n;
    c->t_probe = now;
    if (c->strikes >= 2) {
        ab__contended_hold(now);
        return 1;
    }
#endif
    return 0;
}

static void ab__pool_stall_check(unsigned long long t_start, unsigned long long t_own,
                                 unsigned long long t_end, unsigned mine) {
#if !defined(AB__HAVE_TSC)
    return;
#endif
    if (mine == 0 || t_own < t_start || t_end < t_own) return;
    unsigned long long per_chunk = (t_own - t_start) / mine;
    if (t_end - t_own > 8 * per_chunk + AB__STALL_MIN_TICKS) ab__contended_hold(t_end);
}

/* fn over n chunks on up to `slots` threads; the caller owns the pool (p->busy). */
static void ab__pool_run(ab__pool *p, int n, ab_parallel_fn fn, void *ctx, int slots) {
    if (p->n_workers < slots - 1) {
        pthread_mutex_lock(&ab__pool_admin);
        ab__pool_start(p, slots - 1);
        pthread_mutex_unlock(&ab__pool_admin);
    }
    unsigned n_pool = n < AB__POOL_MAX_CHUNKS ? (unsigned)n : AB__POOL_MAX_CHUNKS;
    p->fn = fn;
    p->ctx = ctx;
    p->n_user = n;
    p->err.chunk = INT_MAX;
    AB__STORE(&p->max_slots, slots);
    AB__STORE(&p->done, 0u);
    p->generation++;
    __atomic_store_n(&p->state, (unsigned long long)p->generation << 32 | (unsigned long long)n_pool << 16,
                     __ATOMIC_RELEASE);
    unsigned long long t_start = AB__TICKS();
    ab__pool_bump(p);
    ab__in_parallel = 1;
    unsigned mine = ab__pool_work(p, 0);
    ab__in_parallel = 0;
    unsigned long long t0 = AB__TICKS();
    while (AB__LOAD(&p->done) < n_pool && AB__TICKS() - t0 < AB__SPIN_TICKS / 4) AB__PAUSE();
    if (AB__LOAD(&p->done) < n_pool) {
        pthread_mutex_lock(&ab__pool_lock);
        AB__STORE(&p->caller_waiting, 1);
        while (AB__LOAD(&p->done) < n_pool) pthread_cond_wait(&ab__pool_done, &ab__pool_lock);
        AB__STORE(&p->caller_waiting, 0);
        pthread_mutex_unlock(&ab__pool_lock);
        ab__pool_stall_check(t_start, t0, AB__TICKS(), mine);
    }
}
#else /* no threads */
static void ab__region_fail(ab__region_err *e, int chunk, ab_status st) {
    if (chunk < e->chunk) {
        e->chunk = chunk;
        e->st = st;
        snprintf(e->msg, sizeof e->msg, "%s", ab__errmsg);
    }
}
static int ab__threads(void) { return 1; }
/* one thread: shared flags are plain memory (and no GNU atomics are needed) */
#define AB__LOAD(p) (*(p))
#define AB__STORE(p, v) ((void)(*(p) = (v)))
#endif

/* Threads a parallel call made here may use: 1 inside a chunk (nested calls run inline). */
static int ab__threads_here(void) { return ab__in_parallel ? 1 : ab__threads(); }

/* ab_parallel_for with at most max_slots threads (slots < max_slots). */
static ab_status ab__parallel(int n_chunks, ab_parallel_fn fn, void *ctx, int max_slots) {
    ab__region_err err;
    err.chunk = INT_MAX;
    err.st = AB_OK;
    int slots = ab__threads_here();
    if (slots > max_slots) slots = max_slots;
    if (slots > n_chunks) slots = n_chunks;
#if AB__THREADS
    ab__pool *p = &ab__pool_g;
    if (slots > 1 && !ab__contended() && !__atomic_exchange_n(&p->busy, 1, __ATOMIC_ACQUIRE)) {
        ab__pool_run(p, n_chunks, fn, ctx, slots);
        err = p->err;
        __atomic_store_n(&p->busy, 0, __ATOMIC_RELEASE);
    } else
#endif
    {
        /* one thread, or the pool is held by another thread's call: every chunk here, in order
         * (marked as inside a chunk, so nested calls behave as they do on a worker) */
        int outer = ab__in_parallel;
        ab__in_parallel = n_chunks > 1 || outer;
        ab__run_chunks(fn, ctx, 0, n_chunks, 0, &err);
        ab__in_parallel = outer;
    }
    if (err.chunk != INT_MAX) return ab_fail(err.st, "%s", err.msg);
    return AB_OK;
}

ABDEF ab_status ab_parallel_for(int n_chunks, ab_parallel_fn fn, void *ctx) {
    AB_CHECK_DIM(n_chunks);
    AB_CHECK_PTR(fn);
    if (n_chunks == 0) return AB_OK;
    return ab__parallel(n_chunks, fn, ctx, AB_MAX_THREADS);
}

ABDEF ab_status ab_set_threads(int n_threads) {
    if (n_threads < 1 || n_threads > AB_MAX_THREADS)
        return ab_fail(AB_ERR_ARG, "ab_set_threads: n_threads = %d outside [1, %d]", n_threads,
                       AB_MAX_THREADS);
    if (ab__in_parallel)
        return ab_fail(AB_ERR_STATE, "ab_set_threads: called from inside a parallel chunk");
#if AB__THREADS
    __atomic_store_n(&ab__n_threads, n_threads, __ATOMIC_RELAXED);
    ab__pool *p = &ab__pool_g;
    pthread_mutex_lock(&ab__pool_admin);
    ab__pool_stop(p, n_threads - 1);
    pthread_mutex_unlock(&ab__pool_admin);
#else
    ab__n_threads = n_threads;
#endif
    return AB_OK;
}

ABDEF int ab_get_threads(void) { return ab__threads(); }

/* --- memory ----------------------------------------------------------------------------------- */
/* Over-allocate by AB_ALIGN + sizeof(void*), store the raw pointer just below the aligned one. */
ABDEF void *ab_aligned_alloc(size_t bytes) {
    size_t extra = AB_ALIGN + sizeof(void *);
    if (bytes > (size_t)-1 - extra) return NULL;
    unsigned char *raw = (unsigned char *)AB_MALLOC(bytes + extra);
    if (!raw) return NULL;
    uintptr_t aligned = ((uintptr_t)(raw + extra)) & ~(uintptr_t)(AB_ALIGN - 1);
    ((void **)aligned)[-1] = raw;
    return (void *)aligned;
}

ABDEF void ab_aligned_free(void *p) {
    if (p) AB_FREE(((void **)p)[-1]);
}

/* --- RNG: PCG32 ------------------------------------------------------------------------------- */
ABDEF uint32_t ab_rng_u32(ab_rng *rng) {
    uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ULL + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

ABDEF void ab_rng_seed(ab_rng *rng, uint64_t seed, uint64_t stream) {
    rng->state = 0u;
    rng->inc = (stream << 1u) | 1u;
    (void)ab_rng_u32(rng);
    rng->state += seed;
    (void)ab_rng_u32(rng);
}

/* Lemire-style rejection: draws until the value falls outside the biased low zone. */
ABDEF uint32_t ab_rng_below(ab_rng *rng, uint32_t bound) {
    if (bound == 0) return 0;
    uint32_t threshold = (uint32_t)(-bound) % bound;
    for (;;) {
        uint32_t r = ab_rng_u32(rng);
        if (r >= threshold) return r % bound;
    }
}

ABDEF float ab_rng_uniform(ab_rng *rng) { return (float)(ab_rng_u32(rng) >> 8) * (1.0f / 16777216.0f); }

ABDEF float ab_rng_normal(ab_rng *rng) {
    /* u1 in (0, 1] so log(u1) is finite. */
    double u1 = ((double)(ab_rng_u32(rng) >> 8) + 1.0) * (1.0 / 16777216.0);
    double u2 = (double)(ab_rng_u32(rng) >> 8) * (1.0 / 16777216.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#ifdef __cplusplus
}
#endif

/* --- kernels: one file per ISA family, same contract (see struct ab__kernels) ----------------- */
#include "kernels/kernels.h" /* AB_AMALGAMATE */

#ifdef __cplusplus
extern "C" {
#endif

/* --- dispatch --------------------------------------------------------------------------------- */
static int ab__initialised = 0;
static ab_isa ab__isa = AB_ISA_SCALAR;
static ab__kernels ab__k;

#if AB__X86
#include <cpuid.h>
static uint64_t ab__xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

/* CPUID says what the core implements; XCR0 says which register state the OS saves on a context
 * switch. Both must agree: valgrind 3.19 clears the AVX-512 bits, an OS may disable them. */
ABDEF int ab_cpu_supports(ab_isa isa) {
    if (isa == AB_ISA_SCALAR) return 1;
#if AB__X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx || !fma) return 0;
    uint64_t xcr0 = ab__xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0; /* XMM and YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (isa == AB_ISA_AVX2) return avx2;
    if (isa == AB_ISA_AVX512) {
        int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
        int zmm_state = (xcr0 & 0xE0) == 0xE0; /* opmask, ZMM_Hi256, Hi16_ZMM */
        return avx2 && f && dq && bw && vl && zmm_state;
    }
#endif
    return 0;
}

ABDEF int ab_isa_compiled(ab_isa isa) {
    if (isa == AB_ISA_SCALAR) return 1;
#if AB__X86
    if (isa == AB_ISA_AVX2 || isa == AB_ISA_AVX512) return 1;
#endif
    return 0;
}

ABDEF ab_isa ab_best_isa(void) {
    if (ab_isa_compiled(AB_ISA_AVX512) && ab_cpu_supports(AB_ISA_AVX512)) return AB_ISA_AVX512;
    if (ab_isa_compiled(AB_ISA_AVX2) && ab_cpu_supports(AB_ISA_AVX2)) return AB_ISA_AVX2;
    return AB_ISA_SCALAR;
}

ABDEF const char *ab_isa_name(ab_isa isa) {
    switch (isa) {
    case AB_ISA_SCALAR: return "scalar";
    case AB_ISA_AVX2: return "avx2";
    case AB_ISA_AVX512: return "avx512";
    case AB_ISA_COUNT: return "none"; /* ab_get_isa while ab_init fails */
    default: return "unknown";
    }
}

ABDEF ab_status ab_isa_from_name(const char *name, ab_isa *out) {
    AB_CHECK_PTR(name);
    AB_CHECK_PTR(out);
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        if (strcmp(name, ab_isa_name((ab_isa)i)) == 0) {
            *out = (ab_isa)i;
            return AB_OK;
        }
    }
    return ab_fail(AB_ERR_ARG, "unknown ISA name '%s' (expected scalar, avx2 or avx512)", name);
}

ABDEF ab_status ab_set_isa(ab_isa isa) {
    if ((int)isa < 0 || isa >= AB_ISA_COUNT)
        return ab_fail(AB_ERR_ARG, "ab_set_isa: %d is not an ab_isa value", (int)isa);
    if (!ab_isa_compiled(isa))
        return ab_fail(AB_ERR_ISA, "ab_set_isa: this build has no %s kernels", ab_isa_name(isa));
    if (!ab_cpu_supports(isa))
        return ab_fail(AB_ERR_ISA, "ab_set_isa: this CPU/OS does not support %s (CPUID/XCR0)",
                        ab_isa_name(isa));
    ab__kernels_fill(&ab__k, isa);
    ab__isa = isa;
    ab__initialised = 1;
    return AB_OK;
}

/* Idempotent. Not thread-safe on its very first call: call it once before spawning threads. */
ABDEF ab_status ab_init(void) {
    if (ab__initialised) return AB_OK;
    const char *env = getenv("AB_ISA");
    if (env && *env) {
        ab_isa want = AB_ISA_SCALAR;
        if (ab_isa_from_name(env, &want) != AB_OK)
            return ab_fail(AB_ERR_ARG, "AB_ISA='%s' is not one of scalar, avx2, avx512", env);
        ab_status st = ab_set_isa(want);
        if (st != AB_OK) {
            char reason[sizeof ab__errmsg]; /* ab__fail writes ab__errmsg: copy the reason first */
            snprintf(reason, sizeof reason, "%s", ab__errmsg);
            return ab_fail(st, "AB_ISA=%s requested, but %s", env, reason);
        }
        return AB_OK;
    }
    return ab_set_isa(ab_best_isa());
}

ABDEF ab_isa ab_get_isa(void) {
    if (ab_init() != AB_OK) return AB_ISA_COUNT; /* no path: every call fails the same way */
    return ab__isa;
}

#define AB__INIT() AB_TRY(ab_init())

/* --- ranges on the thread pool ----------------------------------------------------------------- */
/* [0, n) elements or rows cut into pieces of `grain` (fixed by n alone, so the pieces, and with
 * them the results, do not depend on the thread count), body(ctx, begin, end) per piece. Below
 * min_par, or with one thread, it is one call over the whole range: the element kernels treat
 * every element alike and pieces start at multiples of 64 elements (or at row boundaries), so a
 * piece computes what the same elements get in one call, bit for bit. */
typedef void (*ab__range_fn)(void *ctx, size_t begin, size_t end);
typedef struct ab__range_job {
    ab__range_fn body;
    void *ctx;
    size_t n, grain;
} ab__range_job;

static ab_status ab__range_chunk(void *ctx, int piece, int slot) {
    const ab__range_job *j = (const ab__range_job *)ctx;
    size_t begin = (size_t)piece * j->grain, end = j->n - begin > j->grain ? begin + j->grain : j->n;
    (void)slot;
    j->body(j->ctx, begin, end);
    return AB_OK;
}

static void ab__par_range(size_t n, size_t grain, size_t min_par, ab__range_fn body, void *ctx) {
    size_t pieces = grain ? (n + grain - 1) / grain : 1;
    if (n < min_par || pieces < 2 || pieces > (size_t)INT_MAX || ab__threads_here() < 2) {
        body(ctx, 0, n);
        return;
    }
    ab__range_job j;
    j.body = body, j.ctx = ctx, j.n = n, j.grain = grain;
    (void)ab__parallel((int)pieces, ab__range_chunk, &j, AB_MAX_THREADS); /* pieces never fail */
}

/* Elementwise kernels: pieces of AB__PAR_GRAIN elements (a multiple of 64), threaded from two
 * pieces on. Rows: pieces of about AB__PAR_GRAIN elements' worth of whole rows. */
#define AB__PAR_GRAIN ((size_t)32768)
static size_t ab__row_grain(int cols) {
    size_t g = AB__PAR_GRAIN / (size_t)cols;
    return g ? g : 1;
}

/* --- GEMM ------------------------------------------------------------------------------------- */
typedef struct ab__sgemm_run_ctx {
    const ab__gemm_job *job;
    float *ws; /* job->ws_floats floats per slot */
} ab__sgemm_run_ctx;

static ab_status ab__sgemm_chunk(void *ctx, int part, int slot) {
    const ab__sgemm_run_ctx *r = (const ab__sgemm_run_ctx *)ctx;
    ab__k.sgemm_part(r->job, part, r->ws ? r->ws + r->job->ws_floats * (size_t)slot : NULL);
    return AB_OK;
}

/* Plans a job for this thread's share of the pool and runs its parts, with one packing workspace
 * per thread that can run a part at the same time (the pool's slots). */
static ab_status ab__sgemm_run(ab__gemm_job *job) {
    int threads = ab__threads_here();
    ab__k.sgemm_plan(job, threads);
    int slots = job->parts < threads ? job->parts : threads;
    float *ws = NULL;
    if (job->ws_floats) {
        size_t total = job->ws_floats * (size_t)slots;
        ws = total / (size_t)slots == job->ws_floats && total <= ((size_t)-1) / sizeof(float)
                 ? (float *)ab_aligned_alloc(total * sizeof(float))
                 : NULL;
        if (!ws)
            return ab_fail(AB_ERR_ALLOC, "ab_sgemm: %zu floats of packing workspace (%d x %d x %d)",
                           job->ws_floats * (size_t)slots, job->m, job->n, job->k);
    }
    ab_status st = AB_OK;
    if (job->parts == 1) {
        ab__k.sgemm_part(job, 0, ws);
    } else {
        ab__sgemm_run_ctx run = {job, ws};
        st = ab__parallel(job->parts, ab__sgemm_chunk, &run, slots);
    }
    ab_aligned_free(ws);
    return st;
}

ABDEF ab_status ab_sgemm(ab_trans trans_a, ab_trans trans_b, int m, int n, int k, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc) {
    AB__INIT();
    if ((trans_a != AB_NO_TRANS && trans_a != AB_TRANS) ||
        (trans_b != AB_NO_TRANS && trans_b != AB_TRANS))
        return ab_fail(AB_ERR_ARG, "ab_sgemm: transpose flags must be AB_NO_TRANS or AB_TRANS");
    AB_CHECK_DIM(m);
    AB_CHECK_DIM(n);
    AB_CHECK_DIM(k);
    int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    if (lda < (a_cols > 1 ? a_cols : 1))
        return ab_fail(AB_ERR_SHAPE, "ab_sgemm: lda = %d < %d (row length of A as stored)", lda,
                        a_cols > 1 ? a_cols : 1);
    if (ldb < (b_cols > 1 ? b_cols : 1))
        return ab_fail(AB_ERR_SHAPE, "ab_sgemm: ldb = %d < %d (row length of B as stored)", ldb,
                        b_cols > 1 ? b_cols : 1);
    if (ldc < (n > 1 ? n : 1))
        return ab_fail(AB_ERR_SHAPE, "ab_sgemm: ldc = %d < %d (n)", ldc, n > 1 ? n : 1);
    if (m == 0 || n == 0) return AB_OK;
    AB_CHECK_PTR(C);
    int use_ab = k > 0 && alpha != 0.0f;
    if (use_ab) {
        AB_CHECK_PTR(A);
        AB_CHECK_PTR(B);
    }
    if (!use_ab) {
        ab__scale_matrix(C, m, n, ldc, beta);
        return AB_OK;
    }
    ab__gemm_job job;
    memset(&job, 0, sizeof job);
    job.trans_a = trans_a, job.trans_b = trans_b, job.m = m, job.n = n, job.k = k;
    job.lda = lda, job.ldb = ldb, job.ldc = ldc, job.alpha = alpha, job.beta = beta;
    job.A = A, job.B = B, job.C = C;
    return ab__sgemm_run(&job);
}

ABDEF ab_status ab_linear_forward(float *out, int ldo, const float *x, const float *W,
                                  const float *bias, const float *residual, float *gelu_out,
                                  int rows, int d_in, int d_out) {
    AB__INIT();
    AB_CHECK_DIM(rows);
    AB_CHECK_POS(d_in);
    AB_CHECK_POS(d_out);
    if (ldo < d_out) return ab_fail(AB_ERR_SHAPE, "ab_linear_forward: ldo = %d < d_out = %d", ldo, d_out);
    if (rows == 0) return AB_OK;
    AB_CHECK_PTR(out);
    AB_CHECK_PTR(x);
    AB_CHECK_PTR(W);
    if (residual && residual == out)
        return ab_fail(AB_ERR_ARG, "ab_linear_forward: residual must not alias out");
    ab__gemm_job job;
    memset(&job, 0, sizeof job);
    job.trans_a = AB_NO_TRANS, job.trans_b = AB_TRANS, job.m = rows, job.n = d_out, job.k = d_in;
    job.lda = d_in, job.ldb = d_in, job.ldc = ldo, job.alpha = 1.0f, job.beta = 0.0f;
    job.A = x, job.B = W, job.C = out;
    job.bias = bias, job.resid = residual, job.gelu = gelu_out, job.ldr = job.ldg = ldo;
    return ab__sgemm_run(&job);
}

/* --- exp / softmax / cross-entropy ------------------------------------------------------------ */
ABDEF float ab_expf(float x) { return ab__scalar_expf(x); }

ABDEF ab_status ab_vexpf(float *y, const float *x, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(y);
    AB_CHECK_PTR(x);
    ab__k.vexpf(y, x, n);
    return AB_OK;
}

static ab_status ab__check_matrix(const char *fn, const void *p, const char *pname, int rows,
                                  int cols) {
    if (rows < 0 || cols < 0)
        return ab_fail(AB_ERR_SHAPE, "%s: shape %d x %d has a negative dimension", fn, rows, cols);
    if (rows > 0 && cols > 0 && !p) return ab_fail(AB_ERR_NULL, "%s: '%s' is NULL", fn, pname);
    return AB_OK;
}
#define AB__CHECK_MAT(p, r, c) AB_TRY(ab__check_matrix(__func__, (p), #p, (r), (c)))

ABDEF ab_status ab_softmax(float *y, const float *x, int rows, int cols, int causal) {
    AB__INIT();
    AB__CHECK_MAT(y, rows, cols);
    AB__CHECK_MAT(x, rows, cols);
    if (causal && rows > cols)
        return ab_fail(AB_ERR_SHAPE, "ab_softmax: causal needs rows <= cols (got %d x %d)", rows,
                        cols);
    if (rows == 0 || cols == 0) return AB_OK;
    ab__k.softmax(y, x, rows, cols, causal);
    return AB_OK;
}

ABDEF ab_status ab_softmax_backward(float *dx, const float *y, const float *dy, int rows, int cols) {
    AB__INIT();
    AB__CHECK_MAT(dx, rows, cols);
    AB__CHECK_MAT(y, rows, cols);
    AB__CHECK_MAT(dy, rows, cols);
    if (rows == 0 || cols == 0) return AB_OK;
    ab__k.softmax_backward(dx, y, dy, rows, cols);
    return AB_OK;
}

ABDEF ab_status ab_log_softmax(float *y, const float *x, int rows, int cols) {
    AB__INIT();
    AB__CHECK_MAT(y, rows, cols);
    AB__CHECK_MAT(x, rows, cols);
    if (rows == 0 || cols == 0) return AB_OK;
    ab__k.log_softmax(y, x, rows, cols);
    return AB_OK;
}

typedef struct ab__ce_args {
    float *losses, *dlogits;
    const float *logits, *weights;
    const int *targets;
    int vocab;
    float dscale;
} ab__ce_args;

static void ab__ce_range(void *ctx, size_t r0, size_t r1) {
    const ab__ce_args *c = (const ab__ce_args *)ctx;
    size_t o = r0 * (size_t)c->vocab;
    ab__k.cross_entropy(c->losses ? c->losses + r0 : NULL, c->dlogits ? c->dlogits + o : NULL,
                        c->logits + o, c->targets + r0, c->weights ? c->weights + r0 : NULL,
                        (int)(r1 - r0), c->vocab, c->dscale);
}

ABDEF ab_status ab_cross_entropy(float *losses, float *dlogits, const float *logits,
                                 const int *targets, const float *weights, int rows, int vocab,
                                 float dscale) {
    AB__INIT();
    AB_CHECK_DIM(rows);
    AB_CHECK_POS(vocab);
    if (rows == 0) return AB_OK;
    AB_CHECK_PTR(logits);
    AB_CHECK_PTR(targets);
    for (int r = 0; r < rows; r++) {
        float w = weights ? weights[r] : 1.0f;
        if (w != 0.0f && (targets[r] < 0 || targets[r] >= vocab))
            return ab_fail(AB_ERR_ARG, "ab_cross_entropy: targets[%d] = %d outside [0, %d)", r,
                            targets[r], vocab);
        if (!isfinite(w))
            return ab_fail(AB_ERR_NAN, "ab_cross_entropy: weights[%d] is not finite", r);
    }
    ab__ce_args ce;
    ce.losses = losses, ce.dlogits = dlogits, ce.logits = logits, ce.targets = targets;
    ce.weights = weights, ce.vocab = vocab, ce.dscale = dscale;
    ab__par_range((size_t)rows, ab__row_grain(vocab), 2 * ab__row_grain(vocab), ab__ce_range, &ce);
    return AB_OK;
}

/* --- layers ----------------------------------------------------------------------------------- */
/* LayerNorm over pieces of rows (backward only without parameter gradients, which sum over rows). */
typedef struct ab__ln_args {
    float *out, *mean, *rstd, *dx;
    const float *x, *weight, *bias, *dout, *mean_in, *rstd_in;
    int cols;
    float eps;
} ab__ln_args;

static void ab__ln_fwd_range(void *ctx, size_t r0, size_t r1) {
    const ab__ln_args *l = (const ab__ln_args *)ctx;
    size_t o = r0 * (size_t)l->cols;
    ab__k.layernorm_forward(l->out + o, l->mean ? l->mean + r0 : NULL, l->rstd ? l->rstd + r0 : NULL,
                            l->x + o, l->weight, l->bias, (int)(r1 - r0), l->cols, l->eps);
}

static void ab__ln_bwd_range(void *ctx, size_t r0, size_t r1) {
    const ab__ln_args *l = (const ab__ln_args *)ctx;
    size_t o = r0 * (size_t)l->cols;
    ab__k.layernorm_backward(l->dx + o, NULL, NULL, l->dout + o, l->x + o, l->weight,
                             l->mean_in + r0, l->rstd_in + r0, (int)(r1 - r0), l->cols);
}

ABDEF ab_status ab_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                     const float *weight, const float *bias, int rows, int cols,
                                     float eps) {
    AB__INIT();
    AB_CHECK_DIM(rows);
    AB_CHECK_POS(cols);
    if (!(eps > 0.0f)) return ab_fail(AB_ERR_ARG, "ab_layernorm_forward: eps must be > 0");
    if (rows == 0) return AB_OK;
    AB_CHECK_PTR(out);
    AB_CHECK_PTR(x);
    AB_CHECK_PTR(weight);
    AB_CHECK_PTR(bias);
    ab__ln_args l;
    memset(&l, 0, sizeof l);
    l.out = out, l.mean = mean, l.rstd = rstd, l.x = x, l.weight = weight, l.bias = bias;
    l.cols = cols, l.eps = eps;
    ab__par_range((size_t)rows, ab__row_grain(cols), 2 * ab__row_grain(cols), ab__ln_fwd_range, &l);
    return AB_OK;
}

ABDEF ab_status ab_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout,
                                      const float *x, const float *weight, const float *mean,
                                      const float *rstd, int rows, int cols) {
    AB__INIT();
    AB_CHECK_DIM(rows);
    AB_CHECK_POS(cols);
    if (rows == 0) return AB_OK;
    AB_CHECK_PTR(dx);
    AB_CHECK_PTR(dout);
    AB_CHECK_PTR(x);
    AB_CHECK_PTR(weight);
    AB_CHECK_PTR(mean);
    AB_CHECK_PTR(rstd);
    if (dweight || dbias) { /* sums over rows: one thread, one fixed order */
        ab__k.layernorm_backward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
        return AB_OK;
    }
    ab__ln_args l;
    memset(&l, 0, sizeof l);
    l.dx = dx, l.dout = dout, l.x = x, l.weight = weight, l.mean_in = mean, l.rstd_in = rstd;
    l.cols = cols;
    ab__par_range((size_t)rows, ab__row_grain(cols), 2 * ab__row_grain(cols), ab__ln_bwd_range, &l);
    return AB_OK;
}

/* Elementwise kernels over pieces of AB__PAR_GRAIN elements. */
typedef struct ab__ew_args {
    float *out;
    const float *a, *b;
} ab__ew_args;

static void ab__gelu_fwd_range(void *ctx, size_t i0, size_t i1) {
    const ab__ew_args *e = (const ab__ew_args *)ctx;
    ab__k.gelu_forward(e->out + i0, e->a + i0, i1 - i0);
}
static void ab__gelu_bwd_range(void *ctx, size_t i0, size_t i1) { /* out = dx, a = x, b = dout */
    const ab__ew_args *e = (const ab__ew_args *)ctx;
    ab__k.gelu_backward(e->out + i0, e->a + i0, e->b + i0, i1 - i0);
}
static void ab__add_range(void *ctx, size_t i0, size_t i1) {
    const ab__ew_args *e = (const ab__ew_args *)ctx;
    ab__k.add(e->out + i0, e->a + i0, e->b + i0, i1 - i0);
}
static void ab__par_elementwise(ab__range_fn body, float *out, const float *a, const float *b, size_t n) {
    ab__ew_args e;
    e.out = out, e.a = a, e.b = b;
    ab__par_range(n, AB__PAR_GRAIN, 2 * AB__PAR_GRAIN, body, &e);
}

ABDEF ab_status ab_gelu_forward(float *out, const float *x, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(out);
    AB_CHECK_PTR(x);
    ab__par_elementwise(ab__gelu_fwd_range, out, x, NULL, n);
    return AB_OK;
}

ABDEF ab_status ab_gelu_backward(float *dx, const float *x, const float *dout, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(dx);
    AB_CHECK_PTR(x);
    AB_CHECK_PTR(dout);
    ab__par_elementwise(ab__gelu_bwd_range, dx, x, dout, n);
    return AB_OK;
}

ABDEF ab_status ab_residual_forward(float *out, const float *a, const float *b, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(out);
    AB_CHECK_PTR(a);
    AB_CHECK_PTR(b);
    ab__par_elementwise(ab__add_range, out, a, b, n);
    return AB_OK;
}

ABDEF ab_status ab_residual_backward(float *da, float *db, const float *dout, size_t n) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(da);
    AB_CHECK_PTR(db);
    AB_CHECK_PTR(dout);
    ab__par_elementwise(ab__add_range, da, da, dout, n);
    ab__par_elementwise(ab__add_range, db, db, dout, n);
    return AB_OK;
}

static ab_status ab__check_ids(const char *fn, const int *ids, size_t count, int vocab) {
    for (size_t t = 0; t < count; t++)
        if (ids[t] < 0 || ids[t] >= vocab)
            return ab_fail(AB_ERR_ARG, "%s: ids[%zu] = %d outside [0, %d)", fn, t, ids[t], vocab);
    return AB_OK;
}

ABDEF ab_status ab_embedding_forward(float *out, const int *ids, const float *table, int n_tokens,
                                     int vocab, int dim) {
    AB_CHECK_DIM(n_tokens);
    AB_CHECK_POS(vocab);
    AB_CHECK_POS(dim);
    if (n_tokens == 0) return AB_OK;
    AB_CHECK_PTR(out);
    AB_CHECK_PTR(ids);
    AB_CHECK_PTR(table);
    AB_TRY(ab__check_ids(__func__, ids, (size_t)n_tokens, vocab));
    for (int t = 0; t < n_tokens; t++)
        memcpy(out + (size_t)t * dim, table + (size_t)ids[t] * dim, sizeof(float) * (size_t)dim);
    return AB_OK;
}

/* Threaded by columns (slices of 64): each slice adds the tokens' rows in token order, so a row
 * that several tokens share sums in the same order for any thread count. */
typedef struct ab__embed_args {
    float *dtable;
    const float *dout;
    const int *ids;
    int n_tokens, dim;
} ab__embed_args;

static void ab__embed_bwd_range(void *ctx, size_t j0, size_t j1) {
    const ab__embed_args *e = (const ab__embed_args *)ctx;
    for (int t = 0; t < e->n_tokens; t++) {
        float *row = e->dtable + (size_t)e->ids[t] * e->dim + j0;
        ab__k.add(row, row, e->dout + (size_t)t * e->dim + j0, j1 - j0);
    }
}

ABDEF ab_status ab_embedding_backward(float *dtable, const float *dout, const int *ids,
                                      int n_tokens, int vocab, int dim) {
    AB__INIT();
    AB_CHECK_DIM(n_tokens);
    AB_CHECK_POS(vocab);
    AB_CHECK_POS(dim);
    if (n_tokens == 0) return AB_OK;
    AB_CHECK_PTR(dtable);
    AB_CHECK_PTR(dout);
    AB_CHECK_PTR(ids);
    AB_TRY(ab__check_ids(__func__, ids, (size_t)n_tokens, vocab));
    ab__embed_args e;
    e.dtable = dtable, e.dout = dout, e.ids = ids, e.n_tokens = n_tokens, e.dim = dim;
    ab__par_range((size_t)dim, 64, 2 * AB__PAR_GRAIN / (size_t)n_tokens, ab__embed_bwd_range, &e);
    return AB_OK;
}

/* --- optimiser, reductions, SAM step ---------------------------------------------------------- */
static ab_status ab__check_finite(const char *fn, const char *what, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return ab_fail(AB_ERR_NAN, "%s: %s[%zu] = %g is not finite", fn, what, i, (double)x[i]);
    return AB_OK;
}

/* The same check on the fastest path, in pieces on the library's threads (a GPT-2-sized gradient
 * is 475 MiB: one thread took ~11 ms of a 0.65 s step to scan it); the scalar scan above only
 * finds the index for the message. */
typedef struct ab__finite_job {
    const float *x;
    int bad; /* set by any piece that holds a NaN or Inf (atomically: pieces run concurrently) */
} ab__finite_job;
static void ab__finite_range(void *ctx, size_t begin, size_t end) {
    ab__finite_job *j = (ab__finite_job *)ctx;
    if (!ab__k.all_finite(j->x + begin, end - begin)) AB__STORE(&j->bad, 1);
}
static ab_status ab__check_finite_fast(const char *fn, const char *what, const float *x, size_t n) {
    ab__finite_job j;
    j.x = x, j.bad = 0;
    ab__par_range(n, AB__PAR_GRAIN, 2 * AB__PAR_GRAIN, ab__finite_range, &j);
    return AB__LOAD(&j.bad) ? ab__check_finite(fn, what, x, n) : AB_OK;
}
ABDEF ab_adamw_cfg ab_adamw_default(void) {
    ab_adamw_cfg cfg;
    cfg.lr = 1e-3f;
    cfg.beta1 = 0.9f;
    cfg.beta2 = 0.999f;
    cfg.eps = 1e-8f;
    cfg.weight_decay = 0.0f;
    return cfg;
}

typedef struct ab__adamw_args {
    float *p, *m, *v;
    const float *g;
    ab_adamw_cfg cfg;
    float inv_bc1, inv_bc2;
} ab__adamw_args;

static void ab__adamw_range(void *ctx, size_t i0, size_t i1) {
    const ab__adamw_args *a = (const ab__adamw_args *)ctx;
    ab__k.adamw(a->p + i0, a->g + i0, a->m + i0, a->v + i0, i1 - i0, a->cfg.lr, a->cfg.beta1,
                a->cfg.beta2, a->cfg.eps, a->cfg.weight_decay, a->inv_bc1, a->inv_bc2);
}

ABDEF ab_status ab_adamw_step(float *params, const float *grads, float *m, float *v, size_t n,
                              int step, const ab_adamw_cfg *cfg) {
    AB__INIT();
    AB_CHECK_PTR(cfg);
    if (step < 1) return ab_fail(AB_ERR_ARG, "ab_adamw_step: step = %d, steps count from 1", step);
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f && cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
        return ab_fail(AB_ERR_ARG, "ab_adamw_step: betas must lie in [0, 1)");
    if (!(cfg->eps > 0.0f) || !isfinite(cfg->lr) || !isfinite(cfg->weight_decay))
        return ab_fail(AB_ERR_ARG, "ab_adamw_step: eps must be > 0, lr and weight_decay finite");
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(params);
    AB_CHECK_PTR(grads);
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(v);
    /* NaN/Inf in g would reach p, m and v: refused before anything is written (one read pass). */
    AB_TRY(ab__check_finite_fast(__func__, "grads", grads, n));
    /* Bias corrections in double: for large steps beta^t underflows gracefully to 0. */
    float bc1 = (float)(1.0 - pow((double)cfg->beta1, (double)step));
    float bc2 = (float)(1.0 - pow((double)cfg->beta2, (double)step));
    ab__adamw_args aw;
    aw.p = params, aw.g = grads, aw.m = m, aw.v = v, aw.cfg = *cfg;
    aw.inv_bc1 = 1.0f / bc1, aw.inv_bc2 = 1.0f / bc2;
    ab__par_range(n, AB__PAR_GRAIN, 2 * AB__PAR_GRAIN, ab__adamw_range, &aw);
    return AB_OK;
}

/* Fixed-order blocked reduction: block b covers [b*AB_REDUCE_BLOCK, ...); each block's partial is a
 * double computed by the ISA kernel; partials are added in block order. A threaded caller computes
 * the same partials in any split and adds them in the same order, so the result does not depend on
 * the thread count. */
static double ab__reduce_blocked(const float *x, const float *y, size_t n) {
    double total = 0.0;
    for (size_t start = 0; start < n; start += AB_REDUCE_BLOCK) {
        size_t len = n - start < AB_REDUCE_BLOCK ? n - start : AB_REDUCE_BLOCK;
        total += y ? ab__k.dot_block(x + start, y + start, len) : ab__k.sumsq_block(x + start, len);
    }
    return total;
}

ABDEF ab_status ab_l2_norm(const float *x, size_t n, float *norm) {
    AB__INIT();
    AB_CHECK_PTR(norm);
    *norm = 0.0f;
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(x);
    *norm = (float)sqrt(ab__reduce_blocked(x, NULL, n));
    return AB_OK;
}

ABDEF ab_status ab_dot(const float *x, const float *y, size_t n, float *dot) {
    AB__INIT();
    AB_CHECK_PTR(dot);
    *dot = 0.0f;
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(x);
    AB_CHECK_PTR(y);
    *dot = (float)ab__reduce_blocked(x, y, n);
    return AB_OK;
}

ABDEF ab_status ab_sumsq(const float *x, size_t n, double *sumsq) {
    AB__INIT();
    AB_CHECK_PTR(sumsq);
    *sumsq = 0.0;
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(x);
    *sumsq = ab__reduce_blocked(x, NULL, n);
    return AB_OK;
}

ABDEF ab_status ab_scale(float *x, size_t n, float s) {
    AB__INIT();
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(x);
    ab__k.scale(x, n, s);
    return AB_OK;
}

ABDEF ab_status ab_clip_grad_norm(float *g, size_t n, float max_norm, float *norm_before) {
    AB__INIT();
    if (!(max_norm > 0.0f))
        return ab_fail(AB_ERR_ARG, "ab_clip_grad_norm: max_norm must be > 0");
    double sumsq = 0.0; /* finite exactly when g is: a float squared cannot overflow a double */
    if (n > 0) {
        AB_CHECK_PTR(g);
        sumsq = ab__reduce_blocked(g, NULL, n);
    }
    float norm = (float)sqrt(sumsq); /* +inf when a finite g's norm exceeds FLT_MAX */
    if (norm_before) *norm_before = norm;
    if (!isfinite(sumsq))
        return ab_fail(AB_ERR_NAN, "ab_clip_grad_norm: the gradient holds NaN or Inf (g left as it was)");
    if (norm > max_norm) /* the scale from the double norm only where the float one overflowed */
        ab__k.scale(g, n, isfinite(norm) ? max_norm / norm : (float)(max_norm / sqrt(sumsq)));
    return AB_OK;
}

ABDEF ab_status ab_sam_step(float *theta, float *saved, const float *g, size_t n, float rho,
                            float *gnorm) {
    AB__INIT();
    if (!isfinite(rho)) return ab_fail(AB_ERR_ARG, "ab_sam_step: rho must be finite");
    if (gnorm) *gnorm = 0.0f;
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(theta);
    AB_CHECK_PTR(g);
    double sumsq = ab__reduce_blocked(g, NULL, n); /* finite exactly when g is */
    float norm = (float)sqrt(sumsq);
    if (gnorm) *gnorm = norm;
    if (!isfinite(sumsq))
        return ab_fail(AB_ERR_NAN, "ab_sam_step: the gradient holds NaN or Inf (nothing written)");
    if (sumsq == 0.0) { /* g == 0: no direction, theta stays (rho * 0 / eps is 0, or NaN once it overflows) */
        if (saved) memcpy(saved, theta, n * sizeof(float));
        return AB_OK;
    }
    float s = isfinite(norm) ? rho / (norm + AB_SAM_EPS) : (float)(rho / sqrt(sumsq));
    if (!isfinite(s))
        return ab_fail(AB_ERR_NAN, "ab_sam_step: the step scale rho / (||g|| + %g) = %g / %g overflows "
                                   "float (nothing written)", (double)AB_SAM_EPS, (double)rho, sqrt(sumsq));
    ab__k.axpy_save(theta, saved, g, n, s);
    return AB_OK;
}

ABDEF ab_status ab_sam_restore(float *theta, const float *saved, size_t n) {
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(theta);
    AB_CHECK_PTR(saved);
    memcpy(theta, saved, n * sizeof(float));
    return AB_OK;
}

/* --- per-sample gradient norms ---------------------------------------------------------------- */
ABDEF ab_psnorm_method ab_psnorm_choose(int T, int d_in, int d_out) {
    return 2.0 * (double)T * (double)T < (double)d_in * (double)d_out ? AB_PSNORM_GHOST
                                                                      : AB_PSNORM_MATERIALIZE;
}

ABDEF ab_status ab_psnorm_linear(float *w_sqnorm, float *b_sqnorm, const float *A, const float *G,
                                 int n_samples, int T, int d_in, int d_out,
                                 ab_psnorm_method method) {
    AB__INIT();
    AB_CHECK_DIM(n_samples);
    AB_CHECK_POS(T);
    AB_CHECK_POS(d_in);
    AB_CHECK_POS(d_out);
    if (method != AB_PSNORM_AUTO && method != AB_PSNORM_GHOST && method != AB_PSNORM_MATERIALIZE)
        return ab_fail(AB_ERR_ARG, "ab_psnorm_linear: unknown method %d", (int)method);
    if (n_samples == 0 || (!w_sqnorm && !b_sqnorm)) return AB_OK;
    AB_CHECK_PTR(G);
    if (w_sqnorm) AB_CHECK_PTR(A);
    if (method == AB_PSNORM_AUTO) method = ab_psnorm_choose(T, d_in, d_out);
    /* Workspace: materialise needs one d_out x d_in gradient; ghost (ab__k.ghost_sq) none. */
    size_t ws_floats = (size_t)d_out * d_in;
    float *ws = NULL;
    if (w_sqnorm && T > 1 && method == AB_PSNORM_MATERIALIZE) {
        ws = (float *)ab_aligned_alloc(ws_floats * sizeof(float));
        if (!ws) return ab_fail(AB_ERR_ALLOC, "ab_psnorm_linear: %zu floats of workspace", ws_floats);
    }
    ab_status st = AB_OK;
    for (int i = 0; i < n_samples && st == AB_OK; i++) {
        const float *Gi = G + (size_t)i * T * d_out;
        if (b_sqnorm) b_sqnorm[i] += ab__psnorm_bias(Gi, T, d_out);
        if (!w_sqnorm) continue;
        const float *Ai = A + (size_t)i * T * d_in;
        float sq;
        if (T == 1) {
            sq = (float)(ab__k.sumsq_block(Ai, (size_t)d_in) * ab__k.sumsq_block(Gi, (size_t)d_out));
        } else if (method == AB_PSNORM_GHOST) {
            /* pairs t <= s of the two Gram matrices, fused with their Frobenius product */
            sq = (float)ab__k.ghost_sq(Ai, Gi, T, d_in, d_out);
            /* The exact value is >= 0; when a sample's gradient nearly cancels, float Gram rounding
             * (absolute, ~eps * ||A||_F^2 ||G||_F^2) can exceed it: clamp, never return < 0. */
            if (sq < 0.0f) sq = 0.0f;
        } else {
            st = ab_sgemm(AB_TRANS, AB_NO_TRANS, d_out, d_in, T, 1.0f, Gi, d_out, Ai, d_in, 0.0f, ws, d_in);
            sq = st == AB_OK ? (float)ab__reduce_blocked(ws, NULL, (size_t)d_out * d_in) : 0.0f;
        }
        w_sqnorm[i] += sq;
    }
    ab_aligned_free(ws);
    return st;
}

ABDEF ab_status ab_psnorm_embedding(float *sqnorm, const int *ids, const float *G, int n_samples,
                                    int T, int vocab, int dim) {
    AB__INIT();
    AB_CHECK_DIM(n_samples);
    AB_CHECK_POS(T);
    AB_CHECK_POS(vocab);
    AB_CHECK_POS(dim);
    if (n_samples == 0) return AB_OK;
    AB_CHECK_PTR(sqnorm);
    AB_CHECK_PTR(ids);
    AB_CHECK_PTR(G);
    AB_TRY(ab__check_ids(__func__, ids, (size_t)n_samples * T, vocab));
    for (int i = 0; i < n_samples; i++) {
        const int *x = ids + (size_t)i * T;
        const float *Gi = G + (size_t)i * T * dim;
        /* Pairs t < s counted twice; the diagonal once. */
        double sq = 0.0;
        for (int t = 0; t < T; t++) {
            const float *gt = Gi + (size_t)t * dim;
            sq += ab__k.sumsq_block(gt, (size_t)dim);
            for (int s = t + 1; s < T; s++)
                if (x[s] == x[t]) sq += 2.0 * ab__k.dot_block(gt, Gi + (size_t)s * dim, (size_t)dim);
        }
        sqnorm[i] += (float)sq;
    }
    return AB_OK;
}


/* --- CRC-32 ------------------------------------------------------------------------------------ */
static const uint32_t ab__crc_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu,
    0xe963a535u, 0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
    0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u, 0x1db71064u, 0x6ab020f2u,
    0xf3b97148u, 0x84be41deu, 0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
    0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu, 0x14015c4fu, 0x63066cd9u,
    0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
    0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu, 0x35b5a8fau, 0x42b2986cu,
    0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
    0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u,
    0xcfba9599u, 0xb8bda50fu, 0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
    0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du, 0x76dc4190u, 0x01db7106u,
    0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
    0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu, 0x086d3d2du,
    0x91646c97u, 0xe6635c01u, 0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
    0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u,
    0x8bbeb8eau, 0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
    0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u,
    0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
    0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u, 0x5005713cu, 0x270241aau,
    0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
    0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u,
    0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
    0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u, 0xe3630b12u, 0x94643b84u,
    0x0d6d6a3eu, 0x7a6a5aa8u, 0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
    0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu, 0xf762575du, 0x806567cbu,
    0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
    0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u, 0xd6d6a3e8u, 0xa1d1937eu,
    0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u,
    0x316e8eefu, 0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
    0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu, 0xc5ba3bbeu, 0xb2bd0b28u,
    0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
    0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au, 0x9c0906a9u, 0xeb0e363fu,
    0x72076785u, 0x05005713u, 0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
    0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
    0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
    0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u,
    0x616bffd3u, 0x166ccf45u, 0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
    0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu,
    0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
    0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u, 0xcdd70693u,
    0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
    0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

ABDEF uint32_t ab_crc32(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = ab__crc_table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

/* --- saving files (ab_save_file) ------------------------------------------------------------- */
/* a[0, a_len) followed by b, AB_MALLOC'd (NULL when out of memory) */
static char *ab__strjoin(const char *a, size_t a_len, const char *b) {
    size_t b_len = strlen(b);
    char *s = (char *)AB_MALLOC(a_len + b_len + 1);
    if (!s) return NULL;
    memcpy(s, a, a_len);
    memcpy(s + a_len, b, b_len + 1);
    return s;
}

/* length of the directory part of path, its last '/' included (0: the current directory) */
static size_t ab__dir_len(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? (size_t)(slash - path) + 1 : 0;
}

static ab_status ab__save_check_name(const char *path) {
    size_t n = strlen(path);
    if (n == 0 || path[n - 1] == '/')
        return ab_fail(AB_ERR_ARG, "ab_save_file: '%s' is not a file name", path);
    return AB_OK;
}

#if AB__POSIX_FILES
#define AB__MAX_LINKS 40 /* symlinks followed, as Linux's MAXSYMLINKS */

/* The file a save replaces: path with its symlinks followed, in *out (AB_MALLOC'd). *exists gets 1,
 * with *st filled, if that file exists. */
static ab_status ab__save_target(const char *path, char **out, struct stat *st, int *exists) {
    char *cur = ab__strjoin(path, strlen(path), "");
    int err = ENOMEM;
    for (int hops = 0; cur; hops++) {
        if (lstat(cur, st) != 0) {
            err = errno;
            if (err != ENOENT) break;
            *exists = 0; /* a new file (also behind a dangling link) */
            *out = cur;
            return AB_OK;
        }
        if (!S_ISLNK(st->st_mode)) {
            *exists = 1;
            *out = cur;
            return AB_OK;
        }
        char link[4096];
        ssize_t len = hops < AB__MAX_LINKS ? readlink(cur, link, sizeof link) : -1;
        err = hops < AB__MAX_LINKS ? errno : ELOOP;
        if (len < 0) break;
        err = ENAMETOOLONG;
        if ((size_t)len >= sizeof link) break;
        link[len] = '\0';
        /* a relative link is relative to the directory that holds it */
        char *next = ab__strjoin(cur, link[0] == '/' ? 0 : ab__dir_len(cur), link);
        AB_FREE(cur);
        cur = next;
        err = ENOMEM;
    }
    ab_status st_fail = cur ? ab_fail(AB_ERR_IO, "saving '%s': cannot resolve '%s': %s", path, cur,
                                      strerror(err))
                            : ab_fail(AB_ERR_ALLOC, "saving '%s': out of memory", path);
    AB_FREE(cur);
    return st_fail;
}

/* Refuses an existing target that is not a regular file. */
static ab_status ab__save_check_type(const char *path, const char *target, const struct stat *st) {
    const char *kind = S_ISREG(st->st_mode)    ? NULL
                       : S_ISDIR(st->st_mode)  ? "a directory"
                       : S_ISCHR(st->st_mode)  ? "a character device"
                       : S_ISBLK(st->st_mode)  ? "a block device"
                       : S_ISFIFO(st->st_mode) ? "a FIFO"
                                               : "not a regular file";
    if (!kind) return AB_OK;
    return ab_fail(AB_ERR_IO, "saving '%s': '%s' is %s; only a regular file is replaced (nothing was "
                              "written)", path, target, kind);
}

/* write(ctx, f), then f checked for errors, flushed, fsynced and closed. */
static ab_status ab__save_write(FILE *f, const char *path, ab_write_fn write, void *ctx) {
    errno = 0;
    ab_status st = write(ctx, f);
    int err = errno ? errno : EIO; /* why a write inside write() failed, if one did */
    if (st == AB_OK && !ferror(f)) err = fflush(f) != 0 || fsync(fileno(f)) != 0 ? errno : 0;
    if (fclose(f) != 0 && st == AB_OK && !err) err = errno;
    if (st != AB_OK) return st; /* write's own error and message */
    if (err) return ab_fail(AB_ERR_IO, "saving '%s': %s (the file is left as it was)", path, strerror(err));
    return AB_OK;
}

ABDEF ab_status ab_save_file(const char *path, ab_write_fn write, void *ctx) {
    AB_CHECK_PTR(path);
    AB_CHECK_PTR(write);
    AB_TRY(ab__save_check_name(path));
    struct stat target_st;
    char *target = NULL;
    int exists = 0;
    AB_TRY(ab__save_target(path, &target, &target_st, &exists));
    ab_status st = exists ? ab__save_check_type(path, target, &target_st) : AB_OK;
    /* the temporary file: ".NAME.tmp-PID-N" beside the target, created exclusively ("x") */
    static unsigned counter = 0;
    size_t dir_len = ab__dir_len(target), cap = strlen(target) + 64;
    char *tmp = st == AB_OK ? (char *)AB_MALLOC(cap) : NULL;
    if (st == AB_OK && !tmp) st = ab_fail(AB_ERR_ALLOC, "saving '%s': out of memory", path);
    FILE *f = NULL;
    for (int tries = 0; st == AB_OK && !f; tries++) {
        snprintf(tmp, cap, "%.*s.%s.tmp-%ld-%u", (int)dir_len, target, target + dir_len, (long)getpid(),
                 counter++);
        if ((f = fopen(tmp, "wbx")) == NULL && (errno != EEXIST || tries == 100))
            st = ab_fail(AB_ERR_IO, "saving '%s': cannot create '%s': %s", path, tmp, strerror(errno));
    }
    if (f) {
        st = ab__save_write(f, path, write, ctx);
        if (st == AB_OK && exists && chmod(tmp, target_st.st_mode & 07777) != 0)
            st = ab_fail(AB_ERR_IO, "saving '%s': chmod '%s': %s", path, tmp, strerror(errno));
        if (st == AB_OK && rename(tmp, target) != 0)
            st = ab_fail(AB_ERR_IO, "saving '%s': rename '%s' -> '%s': %s", path, tmp, target,
                         strerror(errno));
        if (st != AB_OK) remove(tmp); /* ours: created above */
    }
    if (st == AB_OK) { /* make the rename durable too; not every file system can fsync a directory */
        char *dir = ab__strjoin(dir_len ? target : ".", dir_len ? dir_len : 1, "");
        int fd = dir ? open(dir, O_RDONLY) : -1;
        if (fd >= 0) {
            (void)fsync(fd);
            close(fd);
        }
        AB_FREE(dir);
    }
    AB_FREE(tmp);
    AB_FREE(target);
    return st;
}
#else
ABDEF ab_status ab_save_file(const char *path, ab_write_fn write, void *ctx) {
    AB_CHECK_PTR(path);
    AB_CHECK_PTR(write);
    AB_TRY(ab__save_check_name(path));
    char *tmp = ab__strjoin(path, strlen(path), ".tmp");
    if (!tmp) return ab_fail(AB_ERR_ALLOC, "saving '%s': out of memory", path);
    FILE *f = fopen(tmp, "wbx");
    ab_status st = f ? write(ctx, f) : ab_fail(AB_ERR_IO, "saving '%s': cannot create '%s'", path, tmp);
    if (f) {
        int bad = ferror(f) || fflush(f) != 0;
        bad = (fclose(f) != 0) || bad;
        if (st == AB_OK && bad) st = ab_fail(AB_ERR_IO, "saving '%s': writing '%s' failed", path, tmp);
        if (st == AB_OK && rename(tmp, path) != 0)
            st = ab_fail(AB_ERR_IO, "saving '%s': cannot rename '%s' over it", path, tmp);
        if (st != AB_OK) remove(tmp);
    }
    AB_FREE(tmp);
    return st;
}
#endif

/* --- defence primitives on plain arrays -------------------------------------------------------- */

ABDEF ab_status ab_antibody_weights(float *w, const float *c, const float *q, int n, float tau) {
    AB_CHECK_PTR(w);
    AB_CHECK_PTR(c);
    AB_CHECK_PTR(q);
    AB_CHECK_POS(n);
    if (!isfinite(tau) || !(tau > 0.0f))
        return ab_fail(AB_ERR_ARG, "ab_antibody_weights: tau = %g must be finite and > 0", (double)tau);
    AB_TRY(ab__check_finite(__func__, "nll_response", c, (size_t)n));
    AB_TRY(ab__check_finite(__func__, "nll_refusal", q, (size_t)n));
    double zmax = -HUGE_VAL, sum = 0.0;
    for (int i = 0; i < n; i++) {
        double z = ((double)q[i] - (double)c[i]) / tau;
        if (z > zmax) zmax = z;
    }
    for (int i = 0; i < n; i++) sum += exp(((double)q[i] - (double)c[i]) / tau - zmax);
    for (int i = 0; i < n; i++) w[i] = (float)(exp(((double)q[i] - (double)c[i]) / tau - zmax) / sum);
    return AB_OK;
}

ABDEF ab_status ab_antibody_lambda(ab_lambda_ema *st, float cos, float eta, float scale,
                                   float decay, float *lambda_raw) {
    AB_CHECK_PTR(st);
    if (!isfinite(eta) || !(decay >= 0.0f && decay <= 1.0f) || !isfinite(scale) || scale < 0.0f)
        return ab_fail(AB_ERR_ARG, "ab_antibody_lambda: eta = %g and scale = %g must be finite (scale "
                       ">= 0), decay = %g in [0, 1]", (double)eta, (double)scale, (double)decay);
    if (!isfinite(cos)) return ab_fail(AB_ERR_NAN, "ab_antibody_lambda: cos = %g is not finite", (double)cos);
    float raw = scale * (eta - cos > 0.0f ? eta - cos : 0.0f);
    if (lambda_raw) *lambda_raw = raw;
    if (!st->initialised) {
        st->value = raw;
        st->initialised = 1;
    } else {
        st->value = (float)((double)decay * st->value + (1.0 - (double)decay) * raw);
    }
    return AB_OK;
}

ABDEF ab_status ab_cosine(const float *x, const float *y, size_t n, float eps, float *cos) {
    AB__INIT();
    AB_CHECK_PTR(cos);
    *cos = 0.0f;
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(x);
    AB_CHECK_PTR(y);
    if (!(eps >= 0.0f)) return ab_fail(AB_ERR_ARG, "ab_cosine: eps = %g must be >= 0", (double)eps);
    double xy = ab__reduce_blocked(x, y, n), xx = ab__reduce_blocked(x, NULL, n);
    double yy = ab__reduce_blocked(y, NULL, n);
    *cos = (float)(xy / (sqrt(xx) * sqrt(yy) + eps));
    if (!isfinite(*cos)) return ab_fail(AB_ERR_NAN, "ab_cosine: the inputs hold NaN or Inf");
    return AB_OK;
}

/* Entries pruned per row: round(alpha * d_in), half up (so LoRA's rank-r inputs lose some too). */
static int ab__prune_count(float alpha, int d_in) {
    int k = (int)floor((double)alpha * d_in + 0.5);
    return k > d_in ? d_in : k;
}

static ab_status ab__check_prune_args(const char *fn, const unsigned char *prune, int d_out, int d_in,
                                      float alpha) {
    AB_CHECK_PTR(prune);
    if (d_out <= 0 || d_in <= 0)
        return ab_fail(AB_ERR_SHAPE, "%s: d_out = %d and d_in = %d must be positive", fn, d_out, d_in);
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return ab_fail(AB_ERR_ARG, "%s: alpha = %g must lie in [0, 1]", fn, (double)alpha);
    return AB_OK;
}

typedef struct ab__scored {
    double score;
    int col;
} ab__scored;
/* Highest score first; equal scores by lower column: a total order, so qsort is deterministic. */
static int ab__scored_cmp(const void *a, const void *b) {
    const ab__scored *x = (const ab__scored *)a, *y = (const ab__scored *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->col < y->col ? -1 : x->col > y->col;
}

ABDEF ab_status ab_antidote_mask(unsigned char *prune, const float *W, int d_out, int d_in,
                                 const double *in_sumsq, float alpha, size_t *n_pruned) {
    AB_TRY(ab__check_prune_args(__func__, prune, d_out, d_in, alpha));
    AB_CHECK_PTR(W);
    AB_CHECK_PTR(in_sumsq);
    for (int j = 0; j < d_in; j++)
        if (!(in_sumsq[j] >= 0.0) || !isfinite(in_sumsq[j]))
            return ab_fail(AB_ERR_NAN, "ab_antidote_mask: in_sumsq[%d] = %g must be finite and >= 0", j,
                            in_sumsq[j]);
    AB_TRY(ab__check_finite(__func__, "W", W, (size_t)d_out * d_in));
    ab__scored *row = (ab__scored *)AB_MALLOC((size_t)d_in * sizeof(ab__scored));
    if (!row) return ab_fail(AB_ERR_ALLOC, "ab_antidote_mask: %d scores", d_in);
    int k = ab__prune_count(alpha, d_in);
    for (int i = 0; i < d_out; i++) {
        const float *w = W + (size_t)i * d_in;
        unsigned char *p = prune + (size_t)i * d_in;
        for (int j = 0; j < d_in; j++) {
            row[j].score = fabs((double)w[j]) * sqrt(in_sumsq[j]);
            row[j].col = j;
            p[j] = 0;
        }
        qsort(row, (size_t)d_in, sizeof *row, ab__scored_cmp);
        for (int j = 0; j < k; j++) p[row[j].col] = 1;
    }
    AB_FREE(row);
    if (n_pruned) *n_pruned = (size_t)d_out * k;
    return AB_OK;
}

ABDEF ab_status ab_random_mask(unsigned char *prune, int d_out, int d_in, float alpha, ab_rng *rng,
                               size_t *n_pruned) {
    AB_TRY(ab__check_prune_args(__func__, prune, d_out, d_in, alpha));
    AB_CHECK_PTR(rng);
    int *cols = (int *)AB_MALLOC((size_t)d_in * sizeof(int));
    if (!cols) return ab_fail(AB_ERR_ALLOC, "ab_random_mask: %d column ids", d_in);
    int k = ab__prune_count(alpha, d_in);
    for (int i = 0; i < d_out; i++) {
        unsigned char *p = prune + (size_t)i * d_in;
        for (int j = 0; j < d_in; j++) cols[j] = j, p[j] = 0;
        for (int j = 0; j < k; j++) { /* partial Fisher-Yates: cols[0..k) is a uniform k-subset */
            int pick = j + (int)ab_rng_below(rng, (uint32_t)(d_in - j));
            int t = cols[j];
            cols[j] = cols[pick], cols[pick] = t;
            p[cols[j]] = 1;
        }
    }
    AB_FREE(cols);
    if (n_pruned) *n_pruned = (size_t)d_out * k;
    return AB_OK;
}

ABDEF ab_status ab_mask_apply(float *W, const unsigned char *prune, size_t n) {
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(W);
    AB_CHECK_PTR(prune);
    for (size_t i = 0; i < n; i++)
        if (prune[i]) W[i] = 0.0f;
    return AB_OK;
}

ABDEF ab_status ab_proximal_grad(float *g, const float *theta, const float *anchor, size_t n,
                                 float rho, float *penalty) {
    if (penalty) *penalty = 0.0f;
    if (!isfinite(rho) || rho < 0.0f)
        return ab_fail(AB_ERR_ARG, "ab_proximal_grad: rho = %g must be finite and >= 0", (double)rho);
    if (n == 0) return AB_OK;
    AB_CHECK_PTR(g);
    AB_CHECK_PTR(theta);
    AB_CHECK_PTR(anchor);
    double sq = 0.0; /* one sequential double sum: the same bits whatever the threads */
    for (size_t i = 0; i < n; i++) {
        float d = theta[i] - anchor[i];
        g[i] += rho * d;
        sq += (double)d * d;
    }
    if (penalty) *penalty = (float)(0.5 * rho * sq);
    return AB_OK;
}


#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_IMPLEMENTATION_DONE */
#endif /* ANTIBODY_IMPLEMENTATION */


/*
------------------------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the antibody.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions: The above copyright notice and this
permission notice shall be included in all copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain. Anyone is free to copy,
modify, publish, use, compile, sell, or distribute this software, either in source code form or as
a compiled binary, for any purpose, commercial or non-commercial, and by any means.
------------------------------------------------------------------------------------------------
*/

