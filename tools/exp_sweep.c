/* tools/exp_sweep.c - exhaustive ulp check of ab_expf (and, with --isa, of ab_vexpf on one path)
 * over every float x with a normal result, x in [AB_EXPF_MIN_NORMAL_X, AB_EXPF_MAX_X], against
 * double-precision exp() rounded to float. Prints the maximum error in ulp and where it occurs;
 * exits 1 if it exceeds AB_EXPF_MAX_ULP. Subnormal results are checked in absolute terms
 * (error <= one subnormal step, 2^-149).
 *
 *   make tools && build/tools/exp_sweep [--isa scalar|avx2|avx512] [--stride N]
 * --stride N checks every N-th float (for a quick look); the default 1 is exhaustive (~1 min).
 */
#define ANTIBODY_IMPLEMENTATION
#include "../antibody.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float float_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ulp distance between a float result and the exact value, measured in ulps of the exact value's
 * float neighbourhood: |got - exact| / ulp(exact). */
static double ulp_err(float got, double exact) {
    int e;
    frexp(exact, &e);                  /* exact = m * 2^e, m in [0.5, 1) */
    double ulp = ldexp(1.0, e - 24);   /* float has 24 significant bits */
    if (ulp < ldexp(1.0, -149)) ulp = ldexp(1.0, -149);
    return fabs((double)got - exact) / ulp;
}

int main(int argc, char **argv) {
    const char *isa_name = NULL;
    long stride = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--isa") && i + 1 < argc) isa_name = argv[++i];
        else if (!strcmp(argv[i], "--stride") && i + 1 < argc) stride = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--isa scalar|avx2|avx512] [--stride N]\n", argv[0]);
            return 2;
        }
    }
    if (stride < 1) stride = 1;
    if (isa_name) {
        ab_isa isa;
        if (ab_isa_from_name(isa_name, &isa) != AB_OK || ab_set_isa(isa) != AB_OK) {
            fprintf(stderr, "exp_sweep: %s\n", ab_last_error());
            return 2;
        }
    }
    /* Walk the float bit patterns from AB_EXPF_MIN_NORMAL_X up to AB_EXPF_MAX_X in chunks. */
    enum { CHUNK = 1 << 16 };
    static float xs[CHUNK], ys[CHUNK];
    double worst = 0.0, worst_sub = 0.0;
    float worst_x = 0.0f;
    unsigned long long checked = 0;
    /* negative floats: bit patterns from 0x80000000 (-0) up to bits(MIN_NORMAL_X); then positive */
    uint32_t neg_hi = bits_of(AB_EXPF_MIN_NORMAL_X), pos_hi = bits_of(AB_EXPF_MAX_X);
    uint32_t zero_lo = bits_of(-103.972084045410f);
    for (int side = 0; side < 3; side++) {
        /* side 0: x in [MIN_NORMAL_X, 0], side 1: x in [0, MAX_X], side 2: subnormal results */
        uint64_t lo = side == 0 ? 0x80000000u : side == 1 ? 0u : (uint64_t)neg_hi + 1;
        uint64_t hi = side == 0 ? neg_hi : side == 1 ? pos_hi : zero_lo;
        for (uint64_t u = lo; u <= hi;) {
            int cnt = 0;
            for (; cnt < CHUNK && u <= hi; u += (uint64_t)stride) xs[cnt++] = float_of((uint32_t)u);
            if (isa_name) ab_vexpf(ys, xs, (size_t)cnt);
            else for (int i = 0; i < cnt; i++) ys[i] = ab_expf(xs[i]);
            for (int i = 0; i < cnt; i++) {
                double ex = exp((double)xs[i]);
                if (side < 2) {
                    double e = ulp_err(ys[i], ex);
                    if (e > worst) { worst = e; worst_x = xs[i]; }
                } else {
                    double e = fabs((double)ys[i] - ex) / ldexp(1.0, -149);
                    if (e > worst_sub) worst_sub = e;
                }
            }
            checked += (unsigned long long)cnt;
        }
    }
    printf("exp_sweep: path=%s checked=%llu floats (stride %ld) max_err=%.3f ulp at x=%.9g "
           "(bound %d); subnormal results max_err=%.3f * 2^-149\n",
           isa_name ? isa_name : "ab_expf(scalar)", checked, stride, worst, (double)worst_x,
           AB_EXPF_MAX_ULP, worst_sub);
    return worst <= AB_EXPF_MAX_ULP && worst_sub <= 1.0 ? 0 : 1;
}
