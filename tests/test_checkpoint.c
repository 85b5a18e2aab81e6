/* tests/test_checkpoint.c - model checkpoints: the documented format (antibody.h, "Binary format"),
 * round trips through memory and files, and every kind of malformed file: each byte of a valid
 * file mutated several ways, truncation at every length, trailing bytes, wrong magic or version,
 * size mismatches, absurd configurations and NaN/Inf weights behind valid CRCs, unreadable paths,
 * sources without a length (a pipe, /dev/zero). Every failure must return the documented error
 * class, leave *out NULL and leak nothing (valgrind checks the last part).
 * Saving (ab_model_save through ab_save_file): a save that fails on a full disk (a file-size limit
 * in a forked child) leaves the previous checkpoint loading bit for bit and no temporary file;
 * a writer's own error likewise; a replaced file keeps its mode; a symlink is followed and stays;
 * a directory, a FIFO and a device (/dev/null) are refused and stay what they were. */
#define _POSIX_C_SOURCE 200809L
#define TU_POSIX_HELPERS
#include "testutil.h"
#include <unistd.h>

static ab_model *small_model(int lora, uint64_t seed) {
    ab_model_config c;
    c.n_vocab = 16, c.n_ctx = 8, c.n_layer = 1, c.n_head = 2, c.d_model = 8;
    c.lora_rank = lora ? 2 : 0, c.lora_alpha = 4.0f;
    ab_model *m = NULL;
    assert_int_equal(ab_model_create(&m, &c, seed), AB_OK);
    /* non-trivial LoRA B so that merge changes the weights */
    for (int i = 0; i < ab_model_n_tensors(m); i++) {
        ab_tensor_info t;
        assert_int_equal(ab_model_tensor(m, i, &t), AB_OK);
        if (t.kind == AB_T_LORA_Q_B || t.kind == AB_T_LORA_V_B)
            for (size_t j = 0; j < t.size; j++) t.data[j] = 0.01f * (float)((j * 7 + 3) % 11) - 0.05f;
    }
    return m;
}

static unsigned char *save_to_mem(const ab_model *m, size_t *size) {
    assert_int_equal(ab_model_checkpoint_size(m, size), AB_OK);
    unsigned char *buf = (unsigned char *)malloc(*size);
    assert_non_null(buf);
    size_t written = 0;
    assert_int_equal(ab_model_save_mem(m, buf, *size, &written), AB_OK);
    assert_int_equal(written, *size);
    return buf;
}

static void assert_same_model(ab_model *a, ab_model *b) {
    ab_model_config ca, cb;
    assert_int_equal(ab_model_get_config(a, &ca), AB_OK);
    assert_int_equal(ab_model_get_config(b, &cb), AB_OK);
    assert_memory_equal(&ca, &cb, sizeof ca);
    assert_int_equal(ab_model_lora_merged(a), ab_model_lora_merged(b));
    assert_int_equal(ab_model_n_tensors(a), ab_model_n_tensors(b));
    for (int i = 0; i < ab_model_n_tensors(a); i++) {
        ab_tensor_info ta, tb;
        assert_int_equal(ab_model_tensor(a, i, &ta), AB_OK);
        assert_int_equal(ab_model_tensor(b, i, &tb), AB_OK);
        assert_string_equal(ta.name, tb.name);
        assert_int_equal(ta.size, tb.size);
        assert_memory_equal(ta.data, tb.data, ta.size * sizeof(float));
    }
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* Re-seal a crafted file: recompute the payload CRC, then the header CRC. */
static void reseal(unsigned char *buf, size_t size) {
    put32(buf + 56, ab_crc32(0, buf + 64, size - 64));
    put32(buf + 60, ab_crc32(0, buf, 60));
}

static void expect_load(const unsigned char *buf, size_t size, ab_status want, const char *needle) {
    ab_model *m = (ab_model *)buf; /* any non-NULL value: must come back NULL */
    ab_status st = ab_model_load_mem(&m, buf, size);
    if (st != want) fail_msg("load: got %s (%s), want %s", ab_status_str(st), ab_last_error(), ab_status_str(want));
    assert_null(m);
    if (needle && !strstr(ab_last_error(), needle))
        fail_msg("message '%s' does not mention '%s'", ab_last_error(), needle);
}

static void tmp_path(char *out, size_t n, const char *tag) {
    snprintf(out, n, "/tmp/ab_test_ckpt_%ld_%s.bin", (long)getpid(), tag);
}

/* ------------------------------------------------------------------------------------------------ */
static void test_crc32(void **state) {
    (void)state;
    assert_int_equal(ab_crc32(0, "123456789", 9), 0xCBF43926u); /* the standard check value */
    assert_int_equal(ab_crc32(0, "", 0), 0u);
    uint32_t c = ab_crc32(0, "12345", 5);
    assert_int_equal(ab_crc32(c, "6789", 4), 0xCBF43926u); /* chaining */
}

static void test_format_layout(void **state) {
    (void)state;
    ab_model *m = small_model(1, 1);
    size_t size;
    unsigned char *buf = save_to_mem(m, &size);
    assert_int_equal(size, 64 + 4 * ab_model_n_params(m));
    assert_memory_equal(buf, "ABMODEL\0", 8);
    assert_int_equal(get32(buf + 8), AB_CKPT_VERSION);
    assert_int_equal(get32(buf + 12), 64);
    assert_int_equal(get32(buf + 16), 16);  /* vocab */
    assert_int_equal(get32(buf + 20), 8);   /* n_ctx */
    assert_int_equal(get32(buf + 24), 1);   /* n_layer */
    assert_int_equal(get32(buf + 28), 2);   /* n_head */
    assert_int_equal(get32(buf + 32), 8);   /* d_model */
    assert_int_equal(get32(buf + 36), 2);   /* lora_rank */
    float alpha;
    uint32_t bits = get32(buf + 40);
    memcpy(&alpha, &bits, 4);
    assert_true(alpha == 4.0f);
    assert_int_equal(get32(buf + 44), 1);   /* flags: LoRA present, not merged */
    assert_int_equal(get32(buf + 48), ab_model_n_params(m));
    assert_int_equal(get32(buf + 52), 0);
    assert_int_equal(get32(buf + 56), ab_crc32(0, buf + 64, size - 64));
    assert_int_equal(get32(buf + 60), ab_crc32(0, buf, 60));
    /* payload: wte first, little-endian float32 */
    ab_tensor_info wte;
    assert_int_equal(ab_model_tensor_of(m, AB_T_WTE, 0, &wte), AB_OK);
    uint32_t u;
    memcpy(&u, &wte.data[0], 4);
    assert_int_equal(get32(buf + 64), u);
    memcpy(&u, &wte.data[5], 4);
    assert_int_equal(get32(buf + 64 + 20), u);
    /* save_mem argument checks */
    size_t written = 7;
    assert_int_equal(ab_model_save_mem(m, buf, size - 1, &written), AB_ERR_ARG);
    assert_int_equal(written, 0);
    assert_int_equal(ab_model_save_mem(NULL, buf, size, &written), AB_ERR_NULL);
    assert_int_equal(ab_model_save_mem(m, NULL, size, &written), AB_ERR_NULL);
    free(buf);
    ab_model_free(m);
}

static void test_roundtrip(void **state) {
    (void)state;
    for (int variant = 0; variant < 3; variant++) { /* no LoRA, LoRA, LoRA merged */
        ab_model *m = small_model(variant > 0, 10 + variant);
        if (variant == 2) assert_int_equal(ab_model_lora_merge(m), AB_OK);
        size_t size;
        unsigned char *buf = save_to_mem(m, &size);
        ab_model *back = NULL;
        assert_int_equal(ab_model_load_mem(&back, buf, size), AB_OK);
        assert_same_model(m, back);
        /* the loaded model works: same loss, bit for bit */
        int in[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tg[8] = {2, 3, 4, 5, 6, 7, 8, 9};
        float mask[8] = {0, 0, 1, 1, 1, 1, 1, 1}, l1, l2;
        ab_batch b;
        b.B = 1, b.T = 8, b.inputs = in, b.targets = tg, b.mask = mask, b.weights = NULL, b.lengths = NULL;
        b.loss_norm = AB_LOSS_TOKEN_MEAN;
        assert_int_equal(ab_model_score(m, &b, &l1, NULL, NULL), AB_OK);
        assert_int_equal(ab_model_score(back, &b, &l2, NULL, NULL), AB_OK);
        assert_memory_equal(&l1, &l2, sizeof l1);
        if (variant == 2) assert_int_equal(ab_model_lora_unmerge(back), AB_OK);
        ab_model_free(back);
        /* through a file */
        char path[128];
        tmp_path(path, sizeof path, "rt");
        assert_int_equal(ab_model_save(m, path), AB_OK);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        assert_int_equal((size_t)ftell(f), size);
        fclose(f);
        assert_int_equal(ab_model_load(&back, path), AB_OK);
        assert_same_model(m, back);
        ab_model_free(back);
        remove(path);
        free(buf);
        ab_model_free(m);
    }
    /* a bigger model through a file (payload larger than the conversion chunk) */
    ab_model_config c = ab_model_config_default();
    c.n_layer = TU_SIZE(2, 1);
    c.d_model = TU_SIZE(128, 32);
    ab_model *m = NULL, *back = NULL;
    assert_int_equal(ab_model_create(&m, &c, 3), AB_OK);
    char path[128];
    tmp_path(path, sizeof path, "big");
    assert_int_equal(ab_model_save(m, path), AB_OK);
    assert_int_equal(ab_model_load(&back, path), AB_OK);
    assert_same_model(m, back);
    ab_model_free(back);
    remove(path);
    ab_model_free(m);
}

/* Every byte, four mutations each: all single-byte corruptions are caught (CRC-32 detects every
 * burst of <= 32 bits; the structural checks may fire first) and reported as AB_ERR_FORMAT. */
static void test_mutate_every_byte(void **state) {
    (void)state;
    ab_model *m = small_model(1, 21);
    size_t size;
    unsigned char *buf = save_to_mem(m, &size);
    const unsigned char xors[3] = {0x01, 0x80, 0xFF};
    long loads = 0;
    for (size_t pos = 0; pos < size; pos++) {
        unsigned char orig = buf[pos];
        for (int k = 0; k < 4; k++) {
            unsigned char v = k < 3 ? (unsigned char)(orig ^ xors[k]) : (unsigned char)0x00;
            if (v == orig) continue;
            buf[pos] = v;
            ab_model *out = m; /* must be reset */
            ab_status st = ab_model_load_mem(&out, buf, size);
            if (st != AB_ERR_FORMAT)
                fail_msg("byte %zu := 0x%02x: got %s (%s)", pos, v, ab_status_str(st), ab_last_error());
            assert_null(out);
            loads++;
        }
        buf[pos] = orig;
    }
    assert_true(loads > 3 * (long)size);
    /* and the unmodified file still loads */
    ab_model *back = NULL;
    assert_int_equal(ab_model_load_mem(&back, buf, size), AB_OK);
    ab_model_free(back);
    free(buf);
    ab_model_free(m);
}

static void test_truncate_every_length(void **state) {
    (void)state;
    ab_model *m = small_model(1, 31);
    size_t size;
    unsigned char *buf = save_to_mem(m, &size);
    for (size_t len = 0; len < size; len++)
        expect_load(buf, len, AB_ERR_FORMAT, len < 64 ? "header" : "truncated");
    /* trailing data */
    unsigned char *longer = (unsigned char *)calloc(size + 1, 1);
    assert_non_null(longer);
    memcpy(longer, buf, size);
    expect_load(longer, size + 1, AB_ERR_FORMAT, "trailing");
    /* a few truncated files on disk */
    char path[128];
    tmp_path(path, sizeof path, "trunc");
    const size_t cuts[4] = {0, 10, 64, size - 1};
    for (int k = 0; k < 4; k++) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(buf, 1, cuts[k], f), cuts[k]);
        fclose(f);
        ab_model *out = m;
        assert_int_equal(ab_model_load(&out, path), AB_ERR_FORMAT);
        assert_null(out);
    }
    remove(path);
    free(longer);
    free(buf);
    ab_model_free(m);
}

/* Crafted files whose CRCs are valid, so the structural checks behind them are reached. */
static void test_crafted(void **state) {
    (void)state;
    ab_model *m = small_model(1, 41);
    size_t size;
    unsigned char *good = save_to_mem(m, &size);
    unsigned char *buf = (unsigned char *)malloc(size);
    assert_non_null(buf);
    const struct {
        size_t off;
        uint32_t value;
        const char *needle;
    } cases[] = {
        {0, 0x4F4D4241u, "magic"},   /* "ABMO" -> still magic-checked: bytes differ below */
        {8, 2u, "version"},
        {8, 0u, "version"},
        {12, 65u, "header size"},
        {16, 0u, "vocab"},           /* vocab 0 */
        {16, 0xFFFFFFFFu, "vocab"},  /* vocab -1 */
        {16, 1u << 25, "vocab"},
        {20, 0u, "n_ctx"},
        {24, 1u << 30, "n_layer"},   /* 2^30 layers */
        {24, 0u, "n_layer"},
        {28, 3u, "n_head"},          /* does not divide 8 */
        {28, 0u, "n_head"},
        {32, 0x7FFFFFFFu, "d_model"},
        {36, 9u, "lora_rank"},       /* > d_model */
        {36, 0xFFFFFFFEu, "lora_rank"},
        {40, 0x7FC00000u, "lora_alpha"}, /* NaN */
        {40, 0xBF800000u, "lora_alpha"}, /* -1 */
        {44, 0u, "flags"},           /* LoRA present but flag says none */
        {44, 5u, "flags"},           /* unknown bit */
        {48, 12345u, "parameters"},  /* n_params mismatch */
        {52, 1u, "parameters"},      /* n_params high word */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(buf, good, size);
        if (k == 0) buf[3] = 'X';
        else put32(buf + cases[k].off, cases[k].value);
        reseal(buf, size);
        expect_load(buf, size, AB_ERR_FORMAT, cases[k].needle);
    }
    /* the config's own reason is carried into the message */
    memcpy(buf, good, size);
    put32(buf + 24, 1u << 30);
    reseal(buf, size);
    expect_load(buf, size, AB_ERR_FORMAT, "invalid configuration");
    /* a consistent header for a much larger model than the file holds: size mismatch, and no
     * allocation of the claimed size is attempted */
    memcpy(buf, good, size);
    put32(buf + 16, 1u << 20);                 /* vocab 2^20: 8M more parameters */
    uint64_t n = get32(good + 48) + (uint64_t)((1u << 20) - 16) * 8;
    put32(buf + 48, (uint32_t)n);
    put32(buf + 52, (uint32_t)(n >> 32));
    reseal(buf, size);
    expect_load(buf, size, AB_ERR_FORMAT, "expected");
    /* header CRC wrong (payload CRC right) and payload CRC wrong (header CRC right) */
    memcpy(buf, good, size);
    put32(buf + 60, get32(buf + 60) ^ 1u);
    expect_load(buf, size, AB_ERR_FORMAT, "header CRC");
    memcpy(buf, good, size);
    put32(buf + 56, get32(buf + 56) ^ 1u);
    put32(buf + 60, ab_crc32(0, buf, 60));
    expect_load(buf, size, AB_ERR_FORMAT, "payload CRC");
    /* NaN and Inf weights behind valid CRCs */
    const uint32_t bad_floats[3] = {0x7FC00000u, 0x7F800000u, 0xFF800000u};
    const size_t where[3] = {64, 64 + 4 * 200, size - 4};
    for (int k = 0; k < 3; k++) {
        memcpy(buf, good, size);
        put32(buf + where[k], bad_floats[k]);
        reseal(buf, size);
        expect_load(buf, size, AB_ERR_NAN, "non-finite");
    }
    /* merged flag round trip through a crafted header (LoRA present + merged) */
    memcpy(buf, good, size);
    put32(buf + 44, 3u);
    reseal(buf, size);
    ab_model *back = NULL;
    assert_int_equal(ab_model_load_mem(&back, buf, size), AB_OK);
    assert_true(ab_model_lora_merged(back));
    ab_model_free(back);
    free(buf);
    free(good);
    ab_model_free(m);
}

static void test_io_errors(void **state) {
    (void)state;
    ab_model *m = small_model(0, 51), *out = m;
    assert_int_equal(ab_model_load(&out, "/nonexistent/dir/model.bin"), AB_ERR_IO);
    assert_null(out);
    assert_non_null(strstr(ab_last_error(), "/nonexistent/dir/model.bin"));
    assert_int_equal(ab_model_save(m, "/nonexistent/dir/model.bin"), AB_ERR_IO);
    out = m;
    ab_status st = ab_model_load(&out, "/tmp"); /* a directory */
    assert_true(st == AB_ERR_IO || st == AB_ERR_FORMAT);
    assert_null(out);
    assert_int_equal(ab_model_load(NULL, "x"), AB_ERR_NULL);
    assert_int_equal(ab_model_load(&out, NULL), AB_ERR_NULL);
    assert_int_equal(ab_model_save(NULL, "x"), AB_ERR_NULL);
    assert_int_equal(ab_model_save(m, NULL), AB_ERR_NULL);
    assert_int_equal(ab_model_load_mem(NULL, "x", 1), AB_ERR_NULL);
    assert_int_equal(ab_model_load_mem(&out, NULL, 10), AB_ERR_NULL);
    assert_int_equal(ab_model_load_mem(&out, NULL, 0), AB_ERR_FORMAT);
    size_t sz;
    assert_int_equal(ab_model_checkpoint_size(NULL, &sz), AB_ERR_NULL);
    ab_model_free(m);
}

/* Loading from sources without a usable length: a pipe (no length: AB_ERR_IO) and /dev/zero
 * (length 0: AB_ERR_FORMAT), both at once, reading nothing. */
static void test_load_unbounded_sources(void **state) {
    (void)state;
    ab_model *out = (ab_model *)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
    assert_int_equal(ab_model_load(&out, path), AB_ERR_IO);
    assert_null(out);
    assert_non_null(strstr(ab_last_error(), "size"));
    close(fds[0]);
    close(fds[1]);
    out = (ab_model *)state;
    assert_int_equal(ab_model_load(&out, "/dev/zero"), AB_ERR_FORMAT);
    assert_null(out);
}

/* --- saving ------------------------------------------------------------------------------------ */

typedef struct save_job {
    const ab_model *model;
    const char *path;
} save_job;
static ab_status save_job_run(void *ctx) {
    const save_job *j = (const save_job *)ctx;
    return ab_model_save(j->model, j->path);
}

static void expect_loads_as(const char *path, ab_model *want) {
    ab_model *got = NULL;
    if (ab_model_load(&got, path) != AB_OK) fail_msg("load %s: %s", path, ab_last_error());
    assert_same_model(got, want);
    ab_model_free(got);
}

/* A full disk: the second save fails in a child limited to 4 KiB per file; the first checkpoint
 * still loads bit for bit and the directory holds nothing else. Then a save that succeeds. */
static void test_save_full_disk_keeps_previous(void **state) {
    (void)state;
    char dir[64], path[128];
    tu_temp_dir(dir, sizeof dir, "save");
    snprintf(path, sizeof path, "%s/model.ckpt", dir);
    ab_model *a = small_model(1, 61), *b = small_model(0, 62);
    size_t size;
    assert_int_equal(ab_model_checkpoint_size(b, &size), AB_OK);
    assert_true(size > 4096); /* the limit bites */
    assert_int_equal(ab_model_save(a, path), AB_OK);
    save_job job = {b, path};
    assert_int_equal(tu_with_file_size_limit(4096, save_job_run, &job), AB_ERR_IO);
    expect_loads_as(path, a);
    assert_int_equal(tu_dir_entries(dir), 1);
    /* the same limit on a new path: nothing is left at all */
    char fresh[160];
    snprintf(fresh, sizeof fresh, "%s/new.ckpt", dir);
    job.path = fresh;
    assert_int_equal(tu_with_file_size_limit(4096, save_job_run, &job), AB_ERR_IO);
    assert_int_equal(tu_dir_entries(dir), 1);
    /* and without the limit the save replaces the file */
    assert_int_equal(ab_model_save(b, path), AB_OK);
    expect_loads_as(path, b);
    assert_int_equal(tu_dir_entries(dir), 1);
    ab_model_free(a);
    ab_model_free(b);
    tu_remove_dir(dir);
}

/* A writer that fails halfway: its status comes back, the old file stays, no temporary is left. */
static ab_status failing_writer(void *ctx, FILE *f) {
    (void)ctx;
    fputs("half a file", f);
    return ab_fail(AB_ERR_FORMAT, "failing_writer: gave up");
}
static ab_status text_writer(void *ctx, FILE *f) {
    fputs((const char *)ctx, f);
    return AB_OK;
}

static void test_save_file_writer_error(void **state) {
    (void)state;
    char dir[64], path[128];
    tu_temp_dir(dir, sizeof dir, "save");
    snprintf(path, sizeof path, "%s/a.txt", dir);
    assert_int_equal(ab_save_file(path, text_writer, (void *)"old\n"), AB_OK);
    assert_int_equal(ab_save_file(path, failing_writer, NULL), AB_ERR_FORMAT);
    assert_string_equal(ab_last_error(), "failing_writer: gave up");
    char buf[16] = {0};
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, sizeof buf - 1, f), 4);
    fclose(f);
    assert_string_equal(buf, "old\n");
    assert_int_equal(tu_dir_entries(dir), 1);
    assert_int_equal(ab_save_file(NULL, text_writer, NULL), AB_ERR_NULL);
    assert_int_equal(ab_save_file(path, NULL, NULL), AB_ERR_NULL);
    assert_int_equal(ab_save_file("", text_writer, (void *)"x"), AB_ERR_ARG);
    assert_int_equal(ab_save_file("/tmp/", text_writer, (void *)"x"), AB_ERR_ARG);
    tu_remove_dir(dir);
}

/* Mode bits of a replaced file are kept; a symlink (relative, in a chain of two) is followed and
 * stays a link; a dangling link gets its file created. */
static void test_save_mode_and_symlinks(void **state) {
    (void)state;
    char dir[64], path[128], link1[128], link2[128], dangling[128], target[128];
    tu_temp_dir(dir, sizeof dir, "save");
    snprintf(path, sizeof path, "%s/model.ckpt", dir);
    snprintf(link1, sizeof link1, "%s/link1", dir);
    snprintf(link2, sizeof link2, "%s/link2", dir);
    snprintf(dangling, sizeof dangling, "%s/dangling", dir);
    snprintf(target, sizeof target, "%s/later.ckpt", dir);
    ab_model *a = small_model(0, 71), *b = small_model(1, 72);
    assert_int_equal(ab_model_save(a, path), AB_OK);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(ab_model_save(b, path), AB_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    expect_loads_as(path, b);
    assert_int_equal(symlink("model.ckpt", link1), 0); /* relative */
    assert_int_equal(symlink(link1, link2), 0);        /* absolute, to a link */
    assert_int_equal(ab_model_save(a, link2), AB_OK);
    assert_int_equal(lstat(link1, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(lstat(link2, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    expect_loads_as(path, a);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(symlink("later.ckpt", dangling), 0);
    assert_int_equal(ab_model_save(b, dangling), AB_OK);
    assert_int_equal(lstat(dangling, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    expect_loads_as(target, b);
    assert_int_equal(tu_dir_entries(dir), 5);
    ab_model_free(a);
    ab_model_free(b);
    tu_remove_dir(dir);
}

/* Existing paths that are not regular files: refused before anything is created, and they stay
 * what they were (/dev/null, a FIFO, a directory). */
static void test_save_refuses_non_regular(void **state) {
    (void)state;
    char dir[64], fifo[128];
    tu_temp_dir(dir, sizeof dir, "save");
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    ab_model *m = small_model(0, 81);
    save_job job = {m, "/dev/null"};
    tu_save_refused_by_dev_null(save_job_run, &job);
    struct stat after;
    assert_int_equal(ab_model_save(m, fifo), AB_ERR_IO);
    assert_non_null(strstr(ab_last_error(), "FIFO"));
    assert_int_equal(lstat(fifo, &after), 0);
    assert_true(S_ISFIFO(after.st_mode));
    assert_int_equal(ab_model_save(m, dir), AB_ERR_IO);
    assert_non_null(strstr(ab_last_error(), "directory"));
    assert_int_equal(tu_dir_entries(dir), 1);
    /* a missing directory: nothing to create the temporary file in */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no/such/dir/m.ckpt", dir);
    assert_int_equal(ab_model_save(m, missing), AB_ERR_IO);
    assert_non_null(strstr(ab_last_error(), missing));
    ab_model_free(m);
    tu_remove_dir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_format_layout),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_mutate_every_byte),
        cmocka_unit_test(test_truncate_every_length),
        cmocka_unit_test(test_crafted),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_load_unbounded_sources),
        cmocka_unit_test(test_save_full_disk_keeps_previous),
        cmocka_unit_test(test_save_file_writer_error),
        cmocka_unit_test(test_save_mode_and_symlinks),
        cmocka_unit_test(test_save_refuses_non_regular),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Join the library's worker threads: alive at exit, their thread-local blocks would show up
     * as "possibly lost" under valgrind --leak-check=full. */
    ab_set_threads(1);
    return failed;
}
