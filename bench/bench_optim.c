/* bench/bench_optim.c - the SAM-style step (ab_sam_step) and AdamW (ab_adamw_step) against this
 * machine's measured memory bandwidth. See bench/bench.h for the options and the protocol.
 *
 * Cases (unit GB/s = bytes each kernel must move / seconds, 1 GB = 1e9 bytes; higher is better)
 *   sam_step_<n>   ab_sam_step(theta, saved, g, n, rho): the norm pass reads g (4n bytes), the fused
 *                  pass reads theta and g and writes saved and theta (16n): 20n bytes per call.
 *   adamw_<n>      ab_adamw_step: reads p, g, m, v and writes p, m, v: 28n bytes per call.
 *   adamw_<n>_t2   the same on 2 threads, against the triads on 2 threads (pieces of 32K floats
 *                  on the library's pool, as ab_adamw_step cuts its work).
 *   n = 67108864 (64M floats, 256 MiB per buffer: far beyond every cache) and n = 32768 (128 KiB
 *   per buffer: all buffers of either kernel fit the 1 MiB L2).
 * Peers (both measured in the same interleaved loop, on the same-size buffers):
 *   triad      STREAM's triad a[i] = b[i] + s*c[i] with ordinary stores, counted as STREAM counts it:
 *              12n bytes (the write-allocate read of a, which the hardware also does, is not
 *              counted, so this is ~3/4 of the raw traffic);
 *   triad_nt   the same loop with streaming (non-temporal) stores: no write-allocate, so its 12n
 *              bytes are the real traffic: the honest ceiling for kernels that avoid write-allocate.
 * The triads use the widest vectors the CPU has (AVX-512, else AVX2), on as many threads as ours.
 */
#include "bench.h"
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include <immintrin.h>
#include <math.h>

#define N_LARGE ((size_t)1 << 26) /* 64M floats */
#define N_SMALL ((size_t)1 << 15) /* 32K floats */

/* bench_compare gives every entry the same work per call, but the kernels move different byte
 * counts per element (sam_step 20, adamw 28, triad 12). So one call of an entry runs its kernel
 * `reps` times, chosen so that every entry moves the same bytes per call: sam_step 3 x 20n vs
 * triad 5 x 12n (60n), adamw 3 x 28n vs triad 7 x 12n (84n). */
typedef struct opt_ctx {
    float *a, *b, *c, *d; /* theta, saved, g, (unused) | p, g, m, v | triad a, b, c */
    size_t n;
    int reps;
    int step;
    int threads; /* ab_set_threads for ours; pieces of the pool for the triads */
    ab_adamw_cfg cfg;
} opt_ctx;

static void run_sam(void *p) {
    opt_ctx *c = (opt_ctx *)p;
    for (int r = 0; r < c->reps; r++) ab_sam_step(c->a, c->b, c->c, c->n, -0.01f, NULL);
}

static void run_adamw(void *p) {
    opt_ctx *c = (opt_ctx *)p;
    ab_set_threads(c->threads);
    for (int r = 0; r < c->reps; r++) ab_adamw_step(c->a, c->b, c->c, c->d, c->n, c->step, &c->cfg);
}

/* ---- triads ---------------------------------------------------------------------------------- */
#define TRIAD_S 0.5f

__attribute__((target("avx512f"), noinline)) static void triad512(float *a, const float *b, const float *c,
                                                                  size_t n, int nt) {
    __m512 s = _mm512_set1_ps(TRIAD_S);
    size_t i = 0;
    if (nt) { /* buffers come from ab_aligned_alloc: 64-byte aligned */
        for (; i + 16 <= n; i += 16)
            _mm512_stream_ps(a + i, _mm512_fmadd_ps(s, _mm512_load_ps(c + i), _mm512_load_ps(b + i)));
        _mm_sfence();
    } else {
        for (; i + 16 <= n; i += 16)
            _mm512_store_ps(a + i, _mm512_fmadd_ps(s, _mm512_load_ps(c + i), _mm512_load_ps(b + i)));
    }
    for (; i < n; i++) a[i] = b[i] + TRIAD_S * c[i];
}

__attribute__((target("avx2,fma"), noinline)) static void triad256(float *a, const float *b, const float *c,
                                                                   size_t n, int nt) {
    __m256 s = _mm256_set1_ps(TRIAD_S);
    size_t i = 0;
    if (nt) {
        for (; i + 8 <= n; i += 8)
            _mm256_stream_ps(a + i, _mm256_fmadd_ps(s, _mm256_load_ps(c + i), _mm256_load_ps(b + i)));
        _mm_sfence();
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_store_ps(a + i, _mm256_fmadd_ps(s, _mm256_load_ps(c + i), _mm256_load_ps(b + i)));
    }
    for (; i < n; i++) a[i] = b[i] + TRIAD_S * c[i];
}

static int have512;

/* On more than one thread the triad runs in pieces of TRIAD_PIECE floats on the library's pool
 * (the caller and the workers claim them), like ab_adamw_step. */
#define TRIAD_PIECE ((size_t)32768)
typedef struct triad_job {
    const opt_ctx *c;
    int nt;
} triad_job;
static ab_status triad_piece(void *ctx, int piece, int slot) {
    const triad_job *j = (const triad_job *)ctx;
    size_t i0 = (size_t)piece * TRIAD_PIECE, len = j->c->n - i0 < TRIAD_PIECE ? j->c->n - i0 : TRIAD_PIECE;
    (void)slot;
    if (have512) triad512(j->c->a + i0, j->c->b + i0, j->c->c + i0, len, j->nt);
    else triad256(j->c->a + i0, j->c->b + i0, j->c->c + i0, len, j->nt);
    return AB_OK;
}

static void triad(const opt_ctx *c, int nt) {
    if (c->threads > 1) {
        ab_set_threads(c->threads);
        triad_job j = {c, nt};
        for (int r = 0; r < c->reps; r++)
            ab_parallel_for((int)((c->n + TRIAD_PIECE - 1) / TRIAD_PIECE), triad_piece, &j);
        return;
    }
    for (int r = 0; r < c->reps; r++) {
        if (have512) triad512(c->a, c->b, c->c, c->n, nt);
        else triad256(c->a, c->b, c->c, c->n, nt);
    }
}
static void run_triad(void *p) { triad((const opt_ctx *)p, 0); }
static void run_triad_nt(void *p) { triad((const opt_ctx *)p, 1); }

/* ---- cases ----------------------------------------------------------------------------------- */
static float *buffer(size_t n, float lo, float hi, ab_rng *rng) {
    float *x = (float *)ab_aligned_alloc(n * sizeof(float));
    if (!x) {
        fprintf(stderr, "bench_optim: out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * ab_rng_uniform(rng); /* also faults pages in */
    return x;
}

static opt_ctx make_ctx(float *a, float *b, float *c, float *d, size_t n, int reps) {
    opt_ctx x;
    x.a = a;
    x.b = b;
    x.c = c;
    x.d = d;
    x.n = n;
    x.reps = reps;
    x.step = 10; /* any step > 0: the bias corrections are per call constants */
    x.threads = 1;
    x.cfg = ab_adamw_default();
    x.cfg.weight_decay = 0.1f;
    return x;
}

static void run_size(size_t n, ab_rng *rng) {
    char sam_name[64], adam_name[64], adam2_name[64];
    snprintf(sam_name, sizeof sam_name, "sam_step_%zu", n);
    snprintf(adam_name, sizeof adam_name, "adamw_%zu", n);
    snprintf(adam2_name, sizeof adam2_name, "adamw_%zu_t2", n);
    int want_sam = bench_want(sam_name, 1), want_adam = bench_want(adam_name, 1);
    int want_adam2 = bench_want(adam2_name, 2);
    if (!want_sam && !want_adam && !want_adam2) return;
    float *b0 = buffer(n, -1.0f, 1.0f, rng), *b1 = buffer(n, -1.0f, 1.0f, rng);
    float *b2 = buffer(n, -1.0f, 1.0f, rng), *b3 = buffer(n, 0.0f, 1e-3f, rng);
    if (want_sam) {
        /* theta = b0, saved = b1, g = b2; the triad writes b1 (a scratch copy for ours too) */
        opt_ctx sam = make_ctx(b0, b1, b2, NULL, n, 3), tri = make_ctx(b1, b0, b2, NULL, n, 5);
        bench_entry e[3] = {{.ref = "ours", .fn = run_sam, .ctx = &sam},
                            {.ref = "triad", .fn = run_triad, .ctx = &tri},
                            {.ref = "triad_nt", .fn = run_triad_nt, .ctx = &tri}};
        bench_compare(sam_name, "GB/s", 60.0 * (double)n * 1e-9, 1, e, 3);
    }
    if (want_adam) {
        /* p = b0, g = b1, m = b2, v = b3 (v >= 0); the triad writes the g buffer's copy b1 */
        opt_ctx adam = make_ctx(b0, b1, b2, b3, n, 3), tri = make_ctx(b1, b0, b2, NULL, n, 7);
        bench_entry e[3] = {{.ref = "ours", .fn = run_adamw, .ctx = &adam},
                            {.ref = "triad", .fn = run_triad, .ctx = &tri},
                            {.ref = "triad_nt", .fn = run_triad_nt, .ctx = &tri}};
        bench_compare(adam_name, "GB/s", 84.0 * (double)n * 1e-9, 1, e, 3);
    }
    if (want_adam2) { /* both on 2 threads */
        opt_ctx adam = make_ctx(b0, b1, b2, b3, n, 3), tri = make_ctx(b1, b0, b2, NULL, n, 7);
        adam.threads = tri.threads = 2;
        bench_entry e[3] = {{.ref = "ours", .fn = run_adamw, .ctx = &adam},
                            {.ref = "triad_t2", .fn = run_triad, .ctx = &tri},
                            {.ref = "triad_nt_t2", .fn = run_triad_nt, .ctx = &tri}};
        bench_compare(adam2_name, "GB/s", 84.0 * (double)n * 1e-9, 2, e, 3);
        ab_set_threads(1);
    }
    ab_aligned_free(b0);
    ab_aligned_free(b1);
    ab_aligned_free(b2);
    ab_aligned_free(b3);
}

int main(int argc, char **argv) {
    bench_init(argc, argv);
    if (ab_init() != AB_OK) {
        fprintf(stderr, "bench_optim: ab_init: %s\n", ab_last_error());
        return 1;
    }
    ab_isa best = ab_best_isa();
    if (best < AB_ISA_AVX2) {
        bench_skip("sam_step", "triad", "no_AVX2_on_this_CPU");
        return 0;
    }
    have512 = best >= AB_ISA_AVX512;
    ab_set_threads(1);
    printf("# bench_optim: ours on the %s path, 1 thread (and 2: *_t2); triads on %s; rounds = %d (median)\n",
           ab_isa_name(best), have512 ? "zmm" : "ymm", bench_cfg.iters);
    ab_rng rng;
    ab_rng_seed(&rng, 42, 5);
    run_size(N_SMALL, &rng);
    run_size(N_LARGE, &rng);
    return 0;
}
