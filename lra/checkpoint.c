/* checkpoint.c - the binary checkpoint format of checkpoint.h: atomic writes, checked reads.
 *
 * The entry list is derived from the model's tensor table (model_t.tensors), the same table the
 * arenas and the memory report come from, so a new tensor is checkpointed without editing this
 * file. Numbers are written little-endian whatever the host; on a little-endian host data is
 * copied as is. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common.h"

#define HDR_BYTES 432
#define HDR_CRC_AT 428
#define ENTRY_BYTES 96
#define NAME_BYTES 64
#define N_DIMS 12
#define ALIGN8(x) (((x) + 7u) & ~(uint64_t)7u)

/* ---------------------------------------------------------------------------------------------
 * Little-endian encoding */

static int host_is_le(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_f64(unsigned char *p, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(p, v);
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static double get_f64(const unsigned char *p) {
    uint64_t v = get_u64(p);
    double d;
    memcpy(&d, &v, 8);
    return d;
}
static void put_str(unsigned char *p, size_t cap, const char *s) {
    size_t n = strlen(s);
    if (n >= cap) n = cap - 1;
    memset(p, 0, cap);
    memcpy(p, s, n);
}
static void get_str(char *dst, size_t dcap, const unsigned char *p, size_t cap) {
    size_t n = strnlen((const char *)p, cap);
    if (n >= dcap) n = dcap - 1;
    memcpy(dst, p, n);
    dst[n] = 0;
}

/* Reverse the bytes of each elem-sized element (big-endian hosts only). */
static void swap_elems(void *buf, size_t count, size_t elem) {
    unsigned char *b = buf;
    if (elem == 1) return;
    for (size_t i = 0; i < count; i++, b += elem)
        for (size_t k = 0; k < elem / 2; k++) {
            unsigned char t = b[k];
            b[k] = b[elem - 1 - k];
            b[elem - 1 - k] = t;
        }
}

static uint32_t crc_bytes(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
}

static size_t dtype_size(uint32_t dtype) {
    return dtype == CKPT_F32 ? 4 : dtype == CKPT_F64 ? 8 : dtype == CKPT_U8 ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * The entry list of a model */

typedef struct {
    char name[NAME_BYTES];
    uint32_t dtype;
    uint64_t count;
    void *ptr;         /* source (save) or destination (load) */
    uint64_t offset;   /* in the file */
    uint32_t crc;
} entry;

typedef struct {
    entry *e;
    int n, cap;
} entry_list;

static entry *add_entry(entry_list *l, uint32_t dtype, uint64_t count, void *ptr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static entry *add_entry(entry_list *l, uint32_t dtype, uint64_t count, void *ptr, const char *fmt, ...) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->e = xrealloc(l->e, sizeof(entry) * (size_t)l->cap);
    }
    entry *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->dtype = dtype;
    e->count = count;
    e->ptr = ptr;
    return e;
}

static void tensor_name(char *buf, size_t n, const tensor_decl *t) {
    if (t->layer >= 0) snprintf(buf, n, "L%d.%s", t->layer, t->name);
    else snprintf(buf, n, "%s", t->name);
}

static size_t attn_state_bytes(const model_t *m, int l) {
    const attn_layer *al = &m->attn[l];
    return al->ops->state_bytes ? al->ops->state_bytes(al->params, &al->shape) : 0;
}

/* Parameters, AdamW m and v, best snapshot (all at the same offset in their arrays), states. */
static void model_entries(const model_t *m, entry_list *l) {
    const float *pbase = (const float *)m->arenas[MEM_PARAMS].base;
    static const char *const groups[4] = {"param", "adam_m", "adam_v", "best"};
    float *bases[4] = {(float *)pbase, m->adam_m, m->adam_v, m->best};
    for (int g = 0; g < 4; g++)
        for (int i = 0; i < m->n_tensors; i++) {
            const tensor_decl *t = &m->tensors[i];
            size_t off = (size_t)(*t->ptr - pbase);
            char tn[48];
            tensor_name(tn, sizeof tn, t);
            add_entry(l, CKPT_F32, t->n, bases[g] + off, "%s/%s", groups[g], tn);
        }
    for (int li = 0; li < m->L; li++) {
        size_t sb = attn_state_bytes(m, li);
        if (sb) add_entry(l, CKPT_U8, sb, m->attn[li].state, "state/L%d.attn", li);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Identity */

uint64_t ckpt_model_id(const run_cfg *c, int vocab_rows, int n_classes) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    LRA_CHECK(f, "open_memstream failed");
    fprintf(f, "task: %s\nseq_len: %d\nvocab_rows: %d\nn_classes: %d\nmodel:\n", c->task.name, c->task.seq_len,
            vocab_rows, n_classes);
    schema_dump_yaml(model_schema, model_schema_n, &c->model, 2, f);
    fprintf(f, "attention:\n  name: %s\n", c->attn_ops ? c->attn_ops->name : "");
    if (c->attn_ops) schema_dump_yaml(c->attn_ops->schema, c->attn_ops->n_schema, c->attn_params.bytes, 2, f);
    fclose(f);
    uint64_t h = lra_fnv1a(LRA_FNV_INIT, text, len);
    free(text);
    return h;
}

static void model_dims(const model_t *m, int32_t d[N_DIMS]) {
    d[0] = (int32_t)m->kind;
    d[1] = m->L;
    d[2] = m->D;
    d[3] = m->H;
    d[4] = m->F;
    d[5] = m->M;
    d[6] = m->S;
    d[7] = m->N;
    d[8] = m->V;
    d[9] = m->K;
    d[10] = m->head_in;
    d[11] = m->n_inputs;
}

static const char *const dim_names[N_DIMS] = {"task kind", "n_layers",   "d_model", "n_heads",
                                              "d_ff",      "mlp_dim",    "seq_len", "positions (seq_len + CLS)",
                                              "embedding rows (vocabulary + CLS)", "n_classes", "head input width",
                                              "inputs per example"};

/* ---------------------------------------------------------------------------------------------
 * Save */

static int fail_errno(char *err, size_t errlen, const char *path, const char *what) {
    return lra_errorf(err, errlen, "%s: %s: %s", path, what, strerror(errno));
}

static int write_all(FILE *f, const void *p, size_t n) {
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

/* Write count elements of elem bytes little-endian; returns 0 / -1. */
static int write_le(FILE *f, const void *p, size_t count, size_t elem) {
    if (host_is_le() || elem == 1) return write_all(f, p, count * elem);
    unsigned char tmp[4096];
    size_t per = sizeof tmp / elem;
    const unsigned char *b = p;
    for (size_t i = 0; i < count; i += per) {
        size_t k = count - i < per ? count - i : per;
        memcpy(tmp, b + i * elem, k * elem);
        swap_elems(tmp, k, elem);
        if (write_all(f, tmp, k * elem)) return -1;
    }
    return 0;
}

/* CRC-32 of the little-endian encoding of count elements. */
static uint32_t crc_le(const void *p, size_t count, size_t elem) {
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    if (host_is_le() || elem == 1) return crc_bytes(crc, p, count * elem);
    unsigned char tmp[4096];
    size_t per = sizeof tmp / elem;
    const unsigned char *b = p;
    for (size_t i = 0; i < count; i += per) {
        size_t k = count - i < per ? count - i : per;
        memcpy(tmp, b + i * elem, k * elem);
        swap_elems(tmp, k, elem);
        crc = crc_bytes(crc, tmp, k * elem);
    }
    return crc;
}

static void fsync_dir(const char *path) {
    char *copy = xstrdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

int ckpt_save(const char *path, const model_t *m, const ckpt_train_state *ts, char *err, size_t errlen) {
    entry_list l = {0};
    model_entries(m, &l);
    if (ts && ts->n_step_times > 0) add_entry(&l, CKPT_F64, (uint64_t)ts->n_step_times, ts->step_times, "train/step_times");
    if (ts && ts->n_curve > 0) add_entry(&l, CKPT_F64, (uint64_t)ts->n_curve * 5, ts->curve, "train/curve");

    uint64_t table_end = HDR_BYTES + (uint64_t)ENTRY_BYTES * (uint64_t)l.n + 4;
    uint64_t off = ALIGN8(table_end), data_offset = off;
    for (int i = 0; i < l.n; i++) {
        entry *e = &l.e[i];
        e->offset = off;
        e->crc = crc_le(e->ptr, e->count, dtype_size(e->dtype));
        off = ALIGN8(off + e->count * dtype_size(e->dtype));
    }
    uint64_t file_size = off;

    unsigned char *h = xcalloc(1, (size_t)(data_offset));
    memcpy(h, CKPT_MAGIC, 8);
    put_u32(h + 8, CKPT_VERSION);
    put_u32(h + 12, (uint32_t)l.n);
    put_u64(h + 16, data_offset);
    put_u64(h + 24, file_size);
    put_str(h + 32, 24, m->cfg->run_id);
    put_u64(h + 56, ckpt_model_id(m->cfg, m->V, m->K));
    put_str(h + 64, 32, m->cfg->attn_ops->name);
    put_str(h + 96, 160, m->cfg->attn_label);
    put_str(h + 256, 32, m->cfg->task.name);
    int32_t d[N_DIMS];
    model_dims(m, d);
    for (int i = 0; i < N_DIMS; i++) put_u32(h + 288 + 4 * i, (uint32_t)d[i]);
    int64_t iv[6] = {m->step, m->cfg->train.steps, ts ? ts->best_step : -1, ts ? ts->epoch : 0, ts ? ts->pos : 0,
                     ts ? ts->win_n : 0};
    for (int i = 0; i < 6; i++) put_u64(h + 336 + 8 * i, (uint64_t)iv[i]);
    double fv[5] = {ts ? ts->best_val : NAN, ts ? ts->win_loss : 0, ts ? ts->last_win_loss : NAN,
                    ts ? ts->last_val : NAN, ts ? ts->elapsed_s : 0};
    for (int i = 0; i < 5; i++) put_f64(h + 384 + 8 * i, fv[i]);
    put_u32(h + 424, (uint32_t)lra_threads());
    put_u32(h + HDR_CRC_AT, crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), h, HDR_CRC_AT));
    for (int i = 0; i < l.n; i++) {
        unsigned char *t = h + HDR_BYTES + (size_t)ENTRY_BYTES * (size_t)i;
        put_str(t, NAME_BYTES, l.e[i].name);
        put_u32(t + 64, l.e[i].dtype);
        put_u64(t + 72, l.e[i].count);
        put_u64(t + 80, l.e[i].offset);
        put_u32(t + 88, l.e[i].crc);
    }
    put_u32(h + table_end - 4, crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), h + HDR_BYTES, (size_t)ENTRY_BYTES * (size_t)l.n));

    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 32);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int rc = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = fail_errno(err, errlen, tmp, "cannot create");
        goto out;
    }
    static const unsigned char zeros[8] = {0};
    int bad = write_all(f, h, (size_t)data_offset);
    uint64_t at = data_offset;
    for (int i = 0; i < l.n && !bad; i++) {
        const entry *e = &l.e[i];
        size_t es = dtype_size(e->dtype);
        bad = write_le(f, e->ptr, e->count, es);
        at += e->count * es;
        if (!bad && ALIGN8(at) > at) bad = write_all(f, zeros, (size_t)(ALIGN8(at) - at));
        at = ALIGN8(at);
    }
    if (!bad) bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (bad) {
        rc = fail_errno(err, errlen, tmp, "write failed");
        fclose(f);
        unlink(tmp);
        goto out;
    }
    if (fclose(f)) {
        rc = fail_errno(err, errlen, tmp, "close failed");
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path)) {
        rc = fail_errno(err, errlen, path, "cannot rename the temporary file onto it");
        unlink(tmp);
        goto out;
    }
    fsync_dir(path);
out:
    free(tmp);
    free(h);
    free(l.e);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Load */

typedef struct {
    FILE *f;
    const char *path;
    uint64_t actual_size;
    ckpt_info info;
    int32_t dims[N_DIMS];
    int64_t iv[6];
    double fv[5];
    entry *table;      /* info.n_entries */
} reader;

static void reader_close(reader *r) {
    if (r->f) fclose(r->f);
    free(r->table);
    memset(r, 0, sizeof *r);
}

/* Open path and check magic, version, header CRC, size and the table (bounds, CRC). */
static int reader_open(reader *r, const char *path, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->path = path;
    r->f = fopen(path, "rb");
    if (!r->f) return fail_errno(err, errlen, path, "cannot open the checkpoint");
    struct stat st;
    if (fstat(fileno(r->f), &st)) return fail_errno(err, errlen, path, "cannot stat");
    r->actual_size = (uint64_t)st.st_size;
    unsigned char h[HDR_BYTES];
    size_t got = fread(h, 1, HDR_BYTES, r->f);
    if (got < 8 || memcmp(h, CKPT_MAGIC, 8)) {
        char shown[9] = "";
        for (size_t i = 0; i < 8 && i < got; i++) shown[i] = (h[i] >= 32 && h[i] < 127) ? (char)h[i] : '?';
        shown[got < 8 ? got : 8] = 0;
        return lra_errorf(err, errlen, "%s: not an lra checkpoint (bad magic '%s', expected '%s')", path, shown,
                          CKPT_MAGIC);
    }
    if (got < 12) return lra_errorf(err, errlen, "%s: truncated: %zu bytes, the header alone is %d", path, got, HDR_BYTES);
    ckpt_info *in = &r->info;
    in->version = get_u32(h + 8);
    if (in->version != CKPT_VERSION)
        return lra_errorf(err, errlen, "%s: checkpoint format version %u, this lra reads version %u", path,
                          in->version, CKPT_VERSION);
    if (got < HDR_BYTES)
        return lra_errorf(err, errlen, "%s: truncated: %zu bytes, the header alone is %d", path, got, HDR_BYTES);
    uint32_t hcrc = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), h, HDR_CRC_AT);
    if (hcrc != get_u32(h + HDR_CRC_AT))
        return lra_errorf(err, errlen, "%s: CRC mismatch in the header (stored %08x, computed %08x): the file is corrupt",
                          path, get_u32(h + HDR_CRC_AT), hcrc);
    uint32_t n_entries = get_u32(h + 12);
    uint64_t data_offset = get_u64(h + 16);
    in->file_size = get_u64(h + 24);
    if (r->actual_size < in->file_size)
        return lra_errorf(err, errlen, "%s: truncated: %llu bytes, the header says %llu", path,
                          (unsigned long long)r->actual_size, (unsigned long long)in->file_size);
    if (r->actual_size > in->file_size)
        return lra_errorf(err, errlen, "%s: %llu bytes, the header says %llu (trailing data: not one whole checkpoint)",
                          path, (unsigned long long)r->actual_size, (unsigned long long)in->file_size);
    uint64_t table_end = HDR_BYTES + (uint64_t)ENTRY_BYTES * n_entries + 4;
    if (n_entries > (1u << 20) || table_end > data_offset || data_offset > in->file_size)
        return lra_errorf(err, errlen, "%s: malformed header (%u entries, data at %llu of %llu bytes)", path, n_entries,
                          (unsigned long long)data_offset, (unsigned long long)in->file_size);
    in->n_entries = (int)n_entries;
    get_str(in->run_id, sizeof in->run_id, h + 32, 24);
    in->model_id = get_u64(h + 56);
    get_str(in->mechanism, sizeof in->mechanism, h + 64, 32);
    get_str(in->label, sizeof in->label, h + 96, 160);
    get_str(in->task, sizeof in->task, h + 256, 32);
    for (int i = 0; i < N_DIMS; i++) r->dims[i] = (int32_t)get_u32(h + 288 + 4 * i);
    for (int i = 0; i < 6; i++) r->iv[i] = (int64_t)get_u64(h + 336 + 8 * i);
    for (int i = 0; i < 5; i++) r->fv[i] = get_f64(h + 384 + 8 * i);
    int32_t *d = r->dims;
    in->kind = d[0], in->n_layers = d[1], in->d_model = d[2], in->n_heads = d[3], in->d_ff = d[4];
    in->mlp_dim = d[5], in->seq_len = d[6], in->n_pos = d[7], in->vocab_rows = d[8], in->n_classes = d[9];
    in->head_in = d[10], in->n_inputs = d[11];
    in->step = (long)r->iv[0];
    in->steps = (long)r->iv[1];
    in->best_step = (long)r->iv[2];
    in->threads = (int)get_u32(h + 424);

    size_t tb = (size_t)ENTRY_BYTES * n_entries + 4;
    unsigned char *t = xmalloc(tb);
    if (fread(t, 1, tb, r->f) != tb) {
        free(t);
        return lra_errorf(err, errlen, "%s: truncated tensor table", path);
    }
    uint32_t tcrc = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), t, tb - 4);
    if (tcrc != get_u32(t + tb - 4)) {
        uint32_t stored = get_u32(t + tb - 4);
        free(t);
        return lra_errorf(err, errlen, "%s: CRC mismatch in the tensor table (stored %08x, computed %08x): the file is corrupt",
                          path, stored, tcrc);
    }
    r->table = xcalloc(n_entries ? n_entries : 1, sizeof(entry));
    for (uint32_t i = 0; i < n_entries; i++) {
        const unsigned char *p = t + (size_t)ENTRY_BYTES * i;
        entry *e = &r->table[i];
        get_str(e->name, sizeof e->name, p, NAME_BYTES);
        e->dtype = get_u32(p + 64);
        e->count = get_u64(p + 72);
        e->offset = get_u64(p + 80);
        e->crc = get_u32(p + 88);
        size_t es = dtype_size(e->dtype);
        if (!es || e->offset < data_offset || e->count > in->file_size || e->offset + e->count * es > in->file_size) {
            free(t);
            return lra_errorf(err, errlen, "%s: malformed table entry '%s' (type %u, %llu elements at %llu)", path,
                              e->name, e->dtype, (unsigned long long)e->count, (unsigned long long)e->offset);
        }
    }
    free(t);
    return 0;
}

/* Read entry fe of the file into dst (count elements), check its CRC, convert to host order. */
static int read_entry(reader *r, const entry *fe, void *dst, char *err, size_t errlen) {
    size_t es = dtype_size(fe->dtype), nb = (size_t)fe->count * es;
    if (fseeko(r->f, (off_t)fe->offset, SEEK_SET) || fread(dst, 1, nb, r->f) != nb)
        return lra_errorf(err, errlen, "%s: cannot read tensor '%s' (%zu bytes at %llu): truncated?", r->path, fe->name,
                          nb, (unsigned long long)fe->offset);
    uint32_t crc = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), dst, nb);
    if (crc != fe->crc)
        return lra_errorf(err, errlen, "%s: CRC mismatch in tensor '%s' (stored %08x, computed %08x): the file is corrupt",
                          r->path, fe->name, fe->crc, crc);
    if (!host_is_le()) swap_elems(dst, (size_t)fe->count, es);
    return 0;
}

static const entry *find_entry(const reader *r, const char *name) {
    for (int i = 0; i < r->info.n_entries; i++)
        if (!strcmp(r->table[i].name, name)) return &r->table[i];
    return NULL;
}

int ckpt_read_info(const char *path, ckpt_info *info, char *err, size_t errlen) {
    reader r;
    int rc = reader_open(&r, path, err, errlen);
    if (!rc) *info = r.info;
    reader_close(&r);
    return rc;
}

/* The header must describe m's model (and m's run with require_run). */
static int check_identity(const reader *r, const model_t *m, int require_run, char *err, size_t errlen) {
    const ckpt_info *in = &r->info;
    const run_cfg *c = m->cfg;
    if (strcmp(in->mechanism, c->attn_ops->name))
        return lra_errorf(err, errlen, "%s: a checkpoint of attention '%s', this model uses '%s'", r->path,
                          in->mechanism, c->attn_ops->name);
    int32_t d[N_DIMS];
    model_dims(m, d);
    for (int i = 0; i < N_DIMS; i++)
        if (d[i] != r->dims[i])
            return lra_errorf(err, errlen, "%s: %s is %d in the checkpoint, %d in this model", r->path, dim_names[i],
                              r->dims[i], d[i]);
    if (strcmp(in->label, c->attn_label))
        return lra_errorf(err, errlen, "%s: a checkpoint of attention %s, this model uses %s", r->path, in->label,
                          c->attn_label);
    uint64_t id = ckpt_model_id(c, m->V, m->K);
    if (id != in->model_id)
        return lra_errorf(err, errlen,
                          "%s: written for another model config (model id %016llx, this config %016llx): a model: or "
                          "attention: key differs (compare with the run's config.yaml)",
                          r->path, (unsigned long long)in->model_id, (unsigned long long)id);
    if (require_run && strcmp(in->run_id, c->run_id))
        return lra_errorf(err, errlen,
                          "%s: belongs to run %s, not to run %s (a task: or train: key differs); delete it to start "
                          "the run over",
                          r->path, in->run_id, c->run_id);
    return 0;
}

int ckpt_load(const char *path, model_t *m, int require_run, ckpt_train_state *ts, char *err, size_t errlen) {
    if (ts) memset(ts, 0, sizeof *ts);
    reader r;
    entry_list l = {0};
    int rc = reader_open(&r, path, err, errlen);
    if (!rc) rc = check_identity(&r, m, require_run, err, errlen);
    if (rc) goto out;
    model_entries(m, &l);
    /* every entry of the model must be in the file with its size, and nothing else but train/ */
    for (int i = 0; i < l.n && !rc; i++) {
        const entry *fe = find_entry(&r, l.e[i].name);
        if (!fe) rc = lra_errorf(err, errlen, "%s: tensor '%s' is missing", path, l.e[i].name);
        else if (fe->dtype != l.e[i].dtype || fe->count != l.e[i].count)
            rc = lra_errorf(err, errlen,
                            "%s: tensor '%s' has %llu elements of type %u in the checkpoint, %llu of type %u in this model",
                            path, fe->name, (unsigned long long)fe->count, fe->dtype,
                            (unsigned long long)l.e[i].count, l.e[i].dtype);
    }
    for (int i = 0; i < r.info.n_entries && !rc; i++) {
        const char *n = r.table[i].name;
        int known = !strncmp(n, "train/", 6);
        for (int k = 0; k < l.n && !known; k++) known = !strcmp(l.e[k].name, n);
        if (!known) rc = lra_errorf(err, errlen, "%s: tensor '%s' is not part of this model", path, n);
    }
    for (int i = 0; i < l.n && !rc; i++) rc = read_entry(&r, find_entry(&r, l.e[i].name), l.e[i].ptr, err, errlen);
    if (rc) goto out;
    m->step = r.info.step;
    if (ts) {
        ts->best_step = (long)r.iv[2];
        ts->epoch = (long)r.iv[3];
        ts->pos = (long)r.iv[4];
        ts->win_n = (long)r.iv[5];
        ts->best_val = r.fv[0];
        ts->win_loss = r.fv[1];
        ts->last_win_loss = r.fv[2];
        ts->last_val = r.fv[3];
        ts->elapsed_s = r.fv[4];
        const entry *st = find_entry(&r, "train/step_times"), *cv = find_entry(&r, "train/curve");
        if (st && (st->dtype != CKPT_F64 || st->count > (uint64_t)INT32_MAX))
            rc = lra_errorf(err, errlen, "%s: malformed train/step_times", path);
        if (!rc && cv && (cv->dtype != CKPT_F64 || cv->count % 5 || cv->count / 5 > (uint64_t)INT32_MAX))
            rc = lra_errorf(err, errlen, "%s: malformed train/curve", path);
        if (!rc && st) {
            ts->n_step_times = (int)st->count;
            ts->step_times = xmalloc(sizeof(double) * (st->count ? st->count : 1));
            rc = read_entry(&r, st, ts->step_times, err, errlen);
        }
        if (!rc && cv) {
            ts->n_curve = (int)(cv->count / 5);
            ts->curve = xmalloc(sizeof(ckpt_curve_row) * (size_t)(ts->n_curve ? ts->n_curve : 1));
            rc = read_entry(&r, cv, ts->curve, err, errlen);
        }
        if (rc) ckpt_train_state_free(ts);
    }
out:
    free(l.e);
    reader_close(&r);
    return rc;
}

void ckpt_train_state_free(ckpt_train_state *ts) {
    free(ts->step_times);
    free(ts->curve);
    ts->step_times = NULL;
    ts->curve = NULL;
    ts->n_step_times = ts->n_curve = 0;
}

int ckpt_build_model(model_t *m, const run_cfg *c, int B, const char *path, int which, long long max_mem, char *err,
                     size_t errlen) {
    ckpt_info in;
    if (ckpt_read_info(path, &in, err, errlen)) return -1;
    if (which == CKPT_WEIGHTS_BEST && in.best_step <= 0)
        return lra_errorf(err, errlen, "%s: no validation has been run yet (step %ld), so there are no best weights",
                          path, in.step);
    /* The embedding rows include the CLS row when the model prepends one. */
    int use_cls = c->model.pooling == POOL_CLS && in.kind != TASK_LM;
    char berr[512];
    if (model_build(m, c, B, in.vocab_rows - use_cls, in.n_classes, (task_kind)in.kind, max_mem, berr, sizeof berr)) {
        model_free(m);
        return lra_errorf(err, errlen, "%s: cannot build the model: %s", path, berr);
    }
    if (ckpt_load(path, m, 0, NULL, err, errlen)) {
        model_free(m);
        return -1;
    }
    if (which == CKPT_WEIGHTS_BEST) model_restore_best(m);
    return 0;
}
