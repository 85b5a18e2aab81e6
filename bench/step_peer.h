/* bench/step_peer.h - the interface of bench/step_peer.c (another build's training step). */
#ifndef AB_BENCH_STEP_PEER_H
#define AB_BENCH_STEP_PEER_H

typedef struct step_peer_config {
    int n_vocab, n_ctx, n_layer, n_head, d_model, B, T;
    const int *inputs, *targets; /* [B][T], kept by the peer */
    const float *mask;
    float lr;
} step_peer_config;

const char *step_peer_version(void);
void *step_peer_create(const step_peer_config *c); /* NULL on failure (message on stderr) */
int step_peer_run(void *peer, int n_threads);       /* one zero_grad/forward/backward/AdamW; 0 = ok */
void step_peer_free(void *peer);

#endif
