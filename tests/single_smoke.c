/* tests/single_smoke.c - `make single` compiles this against build/antibody.h (the amalgamated
 * one-file header) as C99 and as C++11 and runs it: proof that dropping one file in works.
 * Exits non-zero with a message on any failure. */
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include <math.h>
#include <stdio.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "single_smoke: FAILED %s (line %d): %s\n", #cond, __LINE__,            \
                    ab_last_error());                                                              \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(void) {
    CHECK(ab_init() == AB_OK);
    /* 2x3 * 3x2 */
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[4];
    CHECK(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2) == AB_OK);
    CHECK(C[0] == 4 && C[1] == 5 && C[2] == 10 && C[3] == 11);
    /* every path this CPU has gives the same small product */
    for (int i = 0; i < AB_ISA_COUNT; i++) {
        if (!ab_cpu_supports((ab_isa)i)) continue;
        float D[4];
        CHECK(ab_set_isa((ab_isa)i) == AB_OK);
        CHECK(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, D, 2) == AB_OK);
        CHECK(D[0] == 4 && D[1] == 5 && D[2] == 10 && D[3] == 11);
    }
    float x[3] = {1, 2, 3}, y[3];
    CHECK(ab_softmax(y, x, 1, 3, 0) == AB_OK);
    CHECK(fabsf(y[0] + y[1] + y[2] - 1.0f) < 1e-6f && y[2] > y[1] && y[1] > y[0]);
    CHECK(fabsf(ab_expf(1.0f) - 2.7182817f) < 1e-6f);
    /* an error is returned, not a crash */
    CHECK(ab_sgemm(AB_NO_TRANS, AB_NO_TRANS, -1, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2) == AB_ERR_SHAPE);
    printf("single_smoke (%s): ok, isa=%s, version %s\n",
#ifdef __cplusplus
           "C++",
#else
           "C",
#endif
           ab_isa_name(ab_get_isa()), AB_VERSION_STRING);
    return 0;
}
