/* tools/repro14/repro14.c - issue 14's defects, before and after (tools/repro14/run.sh builds it
 * against an old tree and the working tree; -I<tree> picks the headers).
 *   repro14 save DIR    save a model, then save again under a 4 KiB file-size limit; load the first
 *   repro14 nan         AdamW with a NaN gradient; SAM step at g = 0; softmax of an all -inf row
 *   repro14 isa         ab_init / ab_get_isa (run with AB_ISA=bogus)
 *   repro14 zero        the lab's vocabulary loader on /dev/zero (memory it takes, status) */
#define _POSIX_C_SOURCE 200809L
#define ANTIBODY_IMPLEMENTATION
#include "antibody.h"
#include "antibody_gpt.h"
#include "examples/lab/lab.h"
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "save")) {
        char path[512];
        snprintf(path, sizeof path, "%s/model.ckpt", argv[2]);
        ab_model_config c = ab_model_config_default();
        ab_model *m = NULL;
        if (ab_model_create(&m, &c, 1) != AB_OK) return 1;
        printf("first save: %s\n", ab_status_str(ab_model_save(m, path)));
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit r = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &r);
        ab_status st = ab_model_save(m, path);
        printf("second save under a 4 KiB limit: %s (%s)\n", ab_status_str(st), ab_last_error());
        ab_model *back = NULL;
        st = ab_model_load(&back, path);
        printf("loading the first checkpoint afterwards: %s%s%s\n", ab_status_str(st),
               st ? ": " : "", st ? ab_last_error() : "");
        ab_model_free(back), ab_model_free(m);
    } else if (!strcmp(mode, "nan")) {
        float p[4] = {1, 1, 1, 1}, g[4] = {0.1f, NAN, 0.1f, 0.1f}, mm[4] = {0}, v[4] = {0};
        ab_adamw_cfg cfg = ab_adamw_default();
        ab_status st = ab_adamw_step(p, g, mm, v, 4, 1, &cfg);
        printf("adamw, NaN gradient: %s, params %g %g %g %g\n", ab_status_str(st), p[0], p[1], p[2], p[3]);
        float th[4] = {1, 2, 3, 4}, sv[4], z[4] = {0}, gn = 0;
        st = ab_sam_step(th, sv, z, 4, 0.05f, &gn);
        printf("sam step, g = 0, rho 0.05: %s, theta %g %g %g %g\n", ab_status_str(st), th[0], th[1], th[2], th[3]);
        st = ab_sam_step(th, sv, z, 4, 1e32f, &gn);
        printf("sam step, g = 0, rho 1e32: %s, theta %g %g %g %g\n", ab_status_str(st), th[0], th[1], th[2], th[3]);
        float x[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, y[4];
        st = ab_softmax(y, x, 1, 4, 0);
        printf("softmax of an all -inf row: %s, %g %g %g %g\n", ab_status_str(st), y[0], y[1], y[2], y[3]);
    } else if (!strcmp(mode, "isa")) {
        ab_status st = ab_init();
        printf("AB_ISA=%s: ab_init %s, ab_get_isa \"%s\"", getenv("AB_ISA"), ab_status_str(st),
               ab_isa_name(ab_get_isa()));
        float a[4] = {1, 2, 3, 4}, y[4];
        printf(", ab_softmax %s\n", ab_status_str(ab_softmax(y, a, 1, 4, 0)));
    } else if (!strcmp(mode, "zero")) {
        lab_vocab *v = NULL;
        ab_status st = lab_vocab_load(&v, "/dev/zero");
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("lab_vocab_load(/dev/zero): %s (%s), peak RSS %ld MiB\n", ab_status_str(st), ab_last_error(),
               ru.ru_maxrss / 1024);
    }
    return 0;
}
