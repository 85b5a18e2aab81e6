/* antibody_gpt_io.h - v0.3.2 - the model layer's checkpoints - public domain / MIT (see antibody.h)
 *
 * Part of the model layer (antibody_gpt.h), not a layer of its own: saving an ab_model's
 * parameters as a CRC-checked checkpoint, to a file or to memory, and loading one back. It lives
 * in a file of its own only to keep each source file short; it adds no options and no macros
 * beyond the checkpoint format's.
 *
 * USING IT
 *   Nothing to do: antibody_gpt.h includes this file at its very end, so #include "antibody_gpt.h"
 *   declares these functions too, and the file that defines ANTIBODY_GPT_IMPLEMENTATION (or
 *   ANTIBODY_IMPLEMENTATION) for antibody_gpt.h gets their implementation with it. Keep this file
 *   next to antibody_gpt.h (make install installs both; build/antibody.h inlines it). Including
 *   it yourself after antibody_gpt.h changes nothing; before it is an #error. The implementation
 *   uses antibody_gpt.h's private internals (the parameter layout, model allocation), so it must
 *   follow antibody_gpt.h's implementation in the same translation unit, as the include does.
 *
 * API
 *   files      ab_model_checkpoint_size ab_model_save ab_model_save_mem ab_model_load
 *              ab_model_load_mem                    (format documented at AB_CKPT_VERSION)       */
#ifndef ANTIBODY_GPT_IO_H
#define ANTIBODY_GPT_IO_H
#ifndef ANTIBODY_GPT_H
#error "antibody_gpt_io.h is part of antibody_gpt.h, which includes it: #include \"antibody_gpt.h\""
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* --- checkpoints ------------------------------------------------------------------------------- */
#define AB_CKPT_VERSION 1u
#define AB_CKPT_HEADER_BYTES 64u
/* Binary format, all fields little-endian:
 *   offset size  field
 *        0    8  magic "ABMODEL\0"
 *        8    4  u32 version = AB_CKPT_VERSION
 *       12    4  u32 header bytes = 64
 *       16   28  i32 vocab, n_ctx, n_layer, n_head, d_model, lora_rank; f32 lora_alpha
 *       44    4  u32 flags: bit 0 LoRA tensors present (== lora_rank > 0), bit 1 LoRA merged;
 *                other bits 0
 *       48    8  u64 n_params: float32 values in the payload (== the config's parameter count)
 *       56    4  u32 CRC-32 of the payload bytes
 *       60    4  u32 CRC-32 of header bytes 0..59
 *       64       payload: n_params float32, the tensors in ab_model_tensor order, no padding
 * File size == 64 + 4 * n_params exactly. Loading checks, in order: length >= 64, magic, version,
 * header size, header CRC, config (ab_model_config_check), flags, n_params against the config,
 * file length against n_params, then allocates, reads the payload, checks its CRC and that every
 * value is finite. Errors: AB_ERR_IO (cannot open/read/write), AB_ERR_FORMAT (any mismatch),
 * AB_ERR_NAN (non-finite weights), AB_ERR_ALLOC; nothing is leaked on any error.
 * Only parameters are stored (no gradients, optimiser state or train mode).
 * Size bound: the header's configuration must pass ab_model_config_check, so n_params <=
 * AB_MODEL_MAX_PARAMS (2^32 floats: a file of at most 16 GiB + 64 bytes), and the file's length
 * (taken with fseek/ftell before anything is allocated or read past the header) must be exactly
 * 64 + 4 n_params. A source whose length cannot be taken (a pipe) is AB_ERR_IO; a character
 * device such as /dev/zero reports length 0: AB_ERR_FORMAT. Nothing is read past that length.
 * ab_model_save writes through ab_save_file (antibody.h): a temporary file in the same directory,
 * fsynced and renamed over path; a failed save leaves the previous file as it was, and a path that
 * exists but is not a regular file (a device, a FIFO, a directory) is refused, never replaced.  */
ABDEF ab_status ab_model_checkpoint_size(const ab_model *model, size_t *bytes);
ABDEF ab_status ab_model_save(const ab_model *model, const char *path);
ABDEF ab_status ab_model_save_mem(const ab_model *model, void *buf, size_t cap, size_t *written);
ABDEF ab_status ab_model_load(ab_model **out, const char *path);
ABDEF ab_status ab_model_load_mem(ab_model **out, const void *data, size_t size);

#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_GPT_IO_H */

/* ============================================================================================== */
/*                                        IMPLEMENTATION                                          */
/* ============================================================================================== */
#if defined(ANTIBODY_GPT_IMPLEMENTATION) || defined(ANTIBODY_IMPLEMENTATION)
#ifndef ANTIBODY_GPT_IO_IMPLEMENTATION_DONE
#define ANTIBODY_GPT_IO_IMPLEMENTATION_DONE
#ifndef ANTIBODY_GPT_IMPLEMENTATION_DONE
#error "antibody_gpt_io.h is implemented with antibody_gpt.h: define the macro before #include \"antibody_gpt.h\""
#endif

#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- checkpoints ---------------------------------------------------------------------------------- */
static void ab__put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16), p[3] = (unsigned char)(v >> 24);
}
static uint32_t ab__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void ab__put_u64(unsigned char *p, uint64_t v) {
    ab__put_u32(p, (uint32_t)v);
    ab__put_u32(p + 4, (uint32_t)(v >> 32));
}
static uint64_t ab__get_u64(const unsigned char *p) {
    return (uint64_t)ab__get_u32(p) | (uint64_t)ab__get_u32(p + 4) << 32;
}

static const unsigned char ab__ckpt_magic[8] = {'A', 'B', 'M', 'O', 'D', 'E', 'L', 0};
#define AB__CKPT_CHUNK 4096 /* floats converted to little-endian bytes per step */

/* Calls fn(ctx, bytes, n) on the payload (tensors in table order, float32 little-endian) chunk by
 * chunk; stops and returns 0 as soon as fn does. */
typedef int (*ab__bytes_fn)(void *ctx, const unsigned char *bytes, size_t n);
static int ab__payload_foreach(const ab_model *m, ab__bytes_fn fn, void *ctx) {
    unsigned char buf[4 * AB__CKPT_CHUNK];
    for (int i = 0; i < m->n_tensors; i++) {
        const float *p = m->params + m->tensors[i].offset;
        size_t size = m->tensors[i].size;
        for (size_t s = 0; s < size; s += AB__CKPT_CHUNK) {
            size_t n = size - s < AB__CKPT_CHUNK ? size - s : AB__CKPT_CHUNK;
            for (size_t j = 0; j < n; j++) {
                uint32_t u;
                memcpy(&u, p + s + j, 4);
                ab__put_u32(buf + 4 * j, u);
            }
            if (!fn(ctx, buf, 4 * n)) return 0;
        }
    }
    return 1;
}
static int ab__crc_fn(void *ctx, const unsigned char *b, size_t n) {
    *(uint32_t *)ctx = ab_crc32(*(uint32_t *)ctx, b, n);
    return 1;
}

typedef struct ab__sink {
    FILE *f;
    unsigned char *buf;
    size_t pos;
} ab__sink;
static int ab__sink_fn(void *ctx, const unsigned char *b, size_t n) {
    ab__sink *s = (ab__sink *)ctx;
    if (s->f) return fwrite(b, 1, n, s->f) == n;
    memcpy(s->buf + s->pos, b, n);
    s->pos += n;
    return 1;
}

static void ab__ckpt_header(const ab_model *m, unsigned char h[AB_CKPT_HEADER_BYTES]) {
    uint32_t alpha_bits, payload_crc = 0;
    memcpy(&alpha_bits, &m->cfg.lora_alpha, 4);
    ab__payload_foreach(m, ab__crc_fn, &payload_crc);
    memcpy(h, ab__ckpt_magic, 8);
    ab__put_u32(h + 8, AB_CKPT_VERSION);
    ab__put_u32(h + 12, AB_CKPT_HEADER_BYTES);
    ab__put_u32(h + 16, (uint32_t)m->cfg.n_vocab);
    ab__put_u32(h + 20, (uint32_t)m->cfg.n_ctx);
    ab__put_u32(h + 24, (uint32_t)m->cfg.n_layer);
    ab__put_u32(h + 28, (uint32_t)m->cfg.n_head);
    ab__put_u32(h + 32, (uint32_t)m->cfg.d_model);
    ab__put_u32(h + 36, (uint32_t)m->cfg.lora_rank);
    ab__put_u32(h + 40, alpha_bits);
    ab__put_u32(h + 44, (m->lora_rank > 0 ? 1u : 0u) | (m->merged ? 2u : 0u));
    ab__put_u64(h + 48, (uint64_t)m->n_params);
    ab__put_u32(h + 56, payload_crc);
    ab__put_u32(h + 60, ab_crc32(0, h, 60));
}

ABDEF ab_status ab_model_checkpoint_size(const ab_model *m, size_t *bytes) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(bytes);
    *bytes = AB_CKPT_HEADER_BYTES + 4 * m->n_params;
    return AB_OK;
}

ABDEF ab_status ab_model_save_mem(const ab_model *m, void *buf, size_t cap, size_t *written) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(buf);
    size_t need = AB_CKPT_HEADER_BYTES + 4 * m->n_params;
    if (written) *written = 0;
    if (cap < need)
        return ab_fail(AB_ERR_ARG, "ab_model_save_mem: buffer of %zu bytes, %zu needed", cap, need);
    ab__sink s;
    s.f = NULL, s.buf = (unsigned char *)buf, s.pos = AB_CKPT_HEADER_BYTES;
    ab__ckpt_header(m, s.buf);
    ab__payload_foreach(m, ab__sink_fn, &s);
    if (written) *written = s.pos;
    return AB_OK;
}

/* ab_save_file's writer: header and payload; a failed fwrite stops it (ab_save_file reports it). */
static ab_status ab__ckpt_write(void *ctx, FILE *f) {
    const ab_model *m = (const ab_model *)ctx;
    unsigned char h[AB_CKPT_HEADER_BYTES];
    ab__ckpt_header(m, h);
    ab__sink s;
    s.f = f, s.buf = NULL, s.pos = 0;
    if (fwrite(h, 1, sizeof h, f) == sizeof h) ab__payload_foreach(m, ab__sink_fn, &s);
    return AB_OK;
}

ABDEF ab_status ab_model_save(const ab_model *m, const char *path) {
    AB_CHECK_PTR(m);
    AB_CHECK_PTR(path);
    return ab_save_file(path, ab__ckpt_write, (void *)m);
}

typedef struct ab__source {
    FILE *f;
    const unsigned char *mem;
    size_t size, pos;
} ab__source;
static int ab__source_read(ab__source *s, void *dst, size_t n) {
    if (s->f) return fread(dst, 1, n, s->f) == n;
    if (n > s->size - s->pos) return 0;
    memcpy(dst, s->mem + s->pos, n);
    s->pos += n;
    return 1;
}

/* The loader. `size` is the total byte length of the source; nothing read from the file is used
 * before it has been checked (see the format's comment in the declarations). */
static ab_status ab__load(ab_model **out, ab__source *src, uint64_t size, const char *what) {
    unsigned char h[AB_CKPT_HEADER_BYTES];
    if (size < AB_CKPT_HEADER_BYTES)
        return ab_fail(AB_ERR_FORMAT, "%s: %llu bytes, shorter than the %u-byte header", what,
                        (unsigned long long)size, AB_CKPT_HEADER_BYTES);
    if (!ab__source_read(src, h, sizeof h))
        return ab_fail(AB_ERR_IO, "%s: cannot read the header", what);
    if (memcmp(h, ab__ckpt_magic, 8) != 0)
        return ab_fail(AB_ERR_FORMAT, "%s: not an antibody.h checkpoint (bad magic)", what);
    if (ab__get_u32(h + 8) != AB_CKPT_VERSION)
        return ab_fail(AB_ERR_FORMAT, "%s: format version %u, this build reads version %u", what,
                        ab__get_u32(h + 8), AB_CKPT_VERSION);
    if (ab__get_u32(h + 12) != AB_CKPT_HEADER_BYTES)
        return ab_fail(AB_ERR_FORMAT, "%s: header size %u, expected %u", what, ab__get_u32(h + 12),
                        AB_CKPT_HEADER_BYTES);
    if (ab__get_u32(h + 60) != ab_crc32(0, h, 60))
        return ab_fail(AB_ERR_FORMAT, "%s: header CRC-32 mismatch (corrupted header)", what);
    ab_model_config cfg;
    uint32_t alpha_bits = ab__get_u32(h + 40), flags = ab__get_u32(h + 44);
    cfg.n_vocab = (int32_t)ab__get_u32(h + 16);
    cfg.n_ctx = (int32_t)ab__get_u32(h + 20);
    cfg.n_layer = (int32_t)ab__get_u32(h + 24);
    cfg.n_head = (int32_t)ab__get_u32(h + 28);
    cfg.d_model = (int32_t)ab__get_u32(h + 32);
    cfg.lora_rank = (int32_t)ab__get_u32(h + 36);
    memcpy(&cfg.lora_alpha, &alpha_bits, 4);
    if (ab_model_config_check(&cfg) != AB_OK) {
        char why[sizeof ab__errmsg];
        snprintf(why, sizeof why, "%s", ab_last_error());
        return ab_fail(AB_ERR_FORMAT, "%s: invalid configuration in the header: %s", what, why);
    }
    if ((flags & ~3u) != 0 || ((flags & 1u) != 0) != (cfg.lora_rank > 0) ||
        ((flags & 2u) && !(flags & 1u)))
        return ab_fail(AB_ERR_FORMAT, "%s: flags 0x%x inconsistent with lora_rank = %d", what,
                        flags, cfg.lora_rank);
    int n_tensors;
    uint64_t n_floats, n_params, base_end;
    ab__layout(&cfg, NULL, &n_tensors, &n_floats, &n_params, &base_end);
    if (ab__get_u64(h + 48) != n_params)
        return ab_fail(AB_ERR_FORMAT, "%s: header says %llu parameters, the config has %llu", what,
                        (unsigned long long)ab__get_u64(h + 48), (unsigned long long)n_params);
    if (size - AB_CKPT_HEADER_BYTES != 4 * n_params)
        return ab_fail(AB_ERR_FORMAT, "%s: %llu bytes, expected %llu (truncated or trailing data)",
                        what, (unsigned long long)size,
                        (unsigned long long)(AB_CKPT_HEADER_BYTES + 4 * n_params));
    ab_model *m;
    AB_TRY(ab__model_new(&m, &cfg));
    unsigned char buf[4 * AB__CKPT_CHUNK];
    uint32_t crc = 0;
    ab_status st = AB_OK;
    for (int i = 0; i < m->n_tensors && st == AB_OK; i++) {
        float *p = m->params + m->tensors[i].offset;
        size_t tsize = m->tensors[i].size;
        for (size_t s = 0; s < tsize && st == AB_OK; s += AB__CKPT_CHUNK) {
            size_t n = tsize - s < AB__CKPT_CHUNK ? tsize - s : AB__CKPT_CHUNK;
            if (!ab__source_read(src, buf, 4 * n)) {
                st = ab_fail(AB_ERR_IO, "%s: read error in the payload", what);
                break;
            }
            crc = ab_crc32(crc, buf, 4 * n);
            for (size_t j = 0; j < n; j++) {
                uint32_t u = ab__get_u32(buf + 4 * j);
                memcpy(p + s + j, &u, 4);
            }
        }
    }
    if (st == AB_OK && crc != ab__get_u32(h + 56))
        st = ab_fail(AB_ERR_FORMAT, "%s: payload CRC-32 mismatch (corrupted weights)", what);
    for (int i = 0; i < m->n_tensors && st == AB_OK; i++) {
        const float *p = m->params + m->tensors[i].offset;
        for (size_t j = 0; j < m->tensors[i].size; j++)
            if (!isfinite(p[j])) {
                st = ab_fail(AB_ERR_NAN, "%s: tensor %s has a non-finite value at index %zu", what,
                              m->tensors[i].name, j);
                break;
            }
    }
    if (st != AB_OK) {
        ab_model_free(m);
        return st;
    }
    m->merged = (flags & 2u) != 0;
    *out = m;
    return AB_OK;
}

ABDEF ab_status ab_model_load_mem(ab_model **out, const void *data, size_t size) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(out);
    *out = NULL;
    if (size > 0) AB_CHECK_PTR(data);
    ab__source src;
    src.f = NULL, src.mem = (const unsigned char *)data, src.size = size, src.pos = 0;
    return ab__load(out, &src, (uint64_t)size, "ab_model_load_mem");
}

ABDEF ab_status ab_model_load(ab_model **out, const char *path) {
    AB_TRY(ab_init());
    AB_CHECK_PTR(out);
    *out = NULL;
    AB_CHECK_PTR(path);
    ab__source src;
    src.f = fopen(path, "rb"), src.mem = NULL, src.size = 0, src.pos = 0;
    if (!src.f) return ab_fail(AB_ERR_IO, "ab_model_load: cannot open '%s'", path);
    long len = -1;
    if (fseek(src.f, 0, SEEK_END) == 0) len = ftell(src.f);
    if (len < 0 || fseek(src.f, 0, SEEK_SET) != 0) {
        fclose(src.f);
        return ab_fail(AB_ERR_IO, "ab_model_load: cannot determine the size of '%s'", path);
    }
    char what[200];
    snprintf(what, sizeof what, "ab_model_load '%s'", path);
    ab_status st = ab__load(out, &src, (uint64_t)len, what);
    fclose(src.f);
    return st;
}

#ifdef __cplusplus
}
#endif
#endif /* ANTIBODY_GPT_IO_IMPLEMENTATION_DONE */
#endif /* ANTIBODY_GPT_IMPLEMENTATION || ANTIBODY_IMPLEMENTATION */
