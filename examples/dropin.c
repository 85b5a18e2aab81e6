#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include <stdio.h>

int main(void) {
    float W[2 * 3] = {1, 0, -1, 0.5f, 0.5f, 0.5f}; /* 2 outputs x 3 inputs */
    float X[4 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 0, 1};
    float Y[4 * 2], P[4 * 2];
    /* Y = X W^T (4 tokens), then a softmax over each row */
    ab_status st = ab_sgemm(AB_NO_TRANS, AB_TRANS, 4, 2, 3, 1.0f, X, 3, W, 3, 0.0f, Y, 2);
    if (st == AB_OK) st = ab_softmax(P, Y, 4, 2, 0);
    if (st != AB_OK) { fprintf(stderr, "error: %s\n", ab_last_error()); return 1; }
    printf("isa=%s p[0]=(%.3f, %.3f)\n", ab_isa_name(ab_get_isa()), P[0], P[1]);
    return 0;
}
