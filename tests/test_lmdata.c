/* test_lmdata.c - the byte sources of tasks/bytesrc.c and the `lm` task of tasks/lmdata.c: gzip
 * (single and multi-member, dictzip's extra field, zero padding, junk, truncation, a bad check),
 * zip archives (stored and deflated members, several members and member selection, a comment,
 * directory entries, zip64 records and extra fields; truncated, corrupt deflate data, CRC mismatch,
 * over the inflate limit, a size that lies, encrypted, an unsupported method, zip64 sizes without
 * their extra field, not a zip, empty, missing), PG19 directories of .txt and .txt.gz
 * books, directories split by document, the 90/5/5 byte split and how it rounds, the caps, and the
 * exact error texts. Every archive is written here with zlib into a temporary directory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"

#include "../lra/common.h"
#include "../lra/schema.h"
#include "../tasks/bytesrc.h"
#include "../tasks/task.h"

extern const task_ops task_lm;

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                     */

static char tmp_root[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup_tmp(void **state) {
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/test_lmdata.XXXXXX");
    assert_non_null(mkdtemp(tmp_root));
    return 0;
}

static int teardown_tmp(void **state) {
    (void)state;
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void mkdirs(const char *path) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0777);
            *p = '/';
        }
    mkdir(tmp, 0777);
}

/* tmp_root/rel as a path (static buffer, one of 64 in rotation: enough for one test). */
static const char *tpath(const char *rel) {
    static char buf[64][512];
    static int k;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_root, rel);
    return buf[k];
}

/* Write bytes to tmp_root/rel (creating directories); returns the full path (static). */
static const char *put(const char *rel, const void *bytes, size_t n) {
    const char *path = tpath(rel);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    mkdirs(dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
    return path;
}

/* Deterministic text-like bytes (compressible but not trivial). */
static uint8_t *text_bytes(size_t n, uint64_t seed) {
    static const char *const words[] = {"the ", "long ", "range ", "arena ", "of ", "memory ", "compressive ",
                                        "transformer ", "bytes\n", "and ", "<p>", "</p>\n"};
    uint8_t *b = malloc(n + 1);
    rng_t r = rng_make(seed, RNG_TEST);
    size_t i = 0;
    while (i < n) {
        const char *w = words[rng_int(&r, 0, 11)];
        for (; *w && i < n; w++) b[i++] = (uint8_t)*w;
    }
    return b;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void bput(buf_t *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void bput16(buf_t *b, unsigned v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    bput(b, x, 2);
}
static void bput32(buf_t *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bput(b, x, 4);
}

/* Compress with zlib: wbits 16+15 gives a gzip member, -15 raw deflate. extra: a gzip FEXTRA field
 * (dictzip's RA field) or NULL. */
static buf_t zcompress(const uint8_t *src, size_t n, int wbits, const uint8_t *extra, unsigned extra_len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    gz_header h;
    if (extra) {
        memset(&h, 0, sizeof h);
        h.extra = (Bytef *)extra;
        h.extra_len = extra_len;
        h.os = 3;
        assert_int_equal(deflateSetHeader(&zs, &h), Z_OK);
    }
    buf_t b = {0};
    b.cap = deflateBound(&zs, (uLong)n) + 64;
    b.p = malloc(b.cap);
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    zs.next_out = b.p;
    zs.avail_out = (uInt)b.cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    b.len = b.cap - zs.avail_out;
    deflateEnd(&zs);
    return b;
}

/* A zip member to write. */
typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len;
    int method;        /* 0 stored, 8 deflate, else written as given with the data stored */
    unsigned flags;    /* general purpose flags */
    int bad_crc;       /* write crc ^ 1 */
    size_t data_off;   /* out: where the member's data starts in the archive */
    size_t data_len;   /* out: its compressed length */
} zmember;

/* Write zip64 archives (make_zip): central sizes and offsets 0xFFFFFFFF with the zip64 extra field
 * (id 1) holding them; a zip64 end record and locator before an EOCD of 0xFFFF/0xFFFFFFFF. With 2,
 * the extra field is left out (a corrupt archive). */
static int zip64_mode;

/* A zip archive of the members (local headers, data, central directory, EOCD with the comment). */
static buf_t make_zip(zmember *m, int n, const char *comment) {
    buf_t z = {0};
    uint32_t *local = calloc((size_t)n, sizeof *local), *csz = calloc((size_t)n, sizeof *csz);
    uint32_t *crc = calloc((size_t)n, sizeof *crc);
    for (int i = 0; i < n; i++) {
        buf_t c = {0};
        if (m[i].method == 8) c = zcompress(m[i].data, m[i].len, -MAX_WBITS, NULL, 0);
        else if (m[i].len) bput(&c, m[i].data, m[i].len);
        crc[i] = (uint32_t)crc32(0L, m[i].data, (uInt)m[i].len) ^ (m[i].bad_crc ? 1u : 0u);
        csz[i] = (uint32_t)c.len;
        local[i] = (uint32_t)z.len;
        bput32(&z, 0x04034b50u);
        bput16(&z, 20);
        bput16(&z, m[i].flags);
        bput16(&z, (unsigned)m[i].method);
        bput16(&z, 0);
        bput16(&z, 0x21);
        bput32(&z, crc[i]);
        bput32(&z, csz[i]);
        bput32(&z, (uint32_t)m[i].len);
        bput16(&z, (unsigned)strlen(m[i].name));
        bput16(&z, 4);
        bput(&z, m[i].name, strlen(m[i].name));
        bput(&z, "\xfe\xca\0\0", 4); /* an extra field (JAR's 0xcafe, empty): data must start after it */
        m[i].data_off = z.len;
        m[i].data_len = c.len;
        if (c.len) bput(&z, c.p, c.len);
        free(c.p);
    }
    size_t cd = z.len;
    for (int i = 0; i < n; i++) {
        bput32(&z, 0x02014b50u);
        bput16(&z, 0x031e);
        bput16(&z, 20);
        bput16(&z, m[i].flags);
        bput16(&z, (unsigned)m[i].method);
        bput16(&z, 0);
        bput16(&z, 0x21);
        bput32(&z, crc[i]);
        bput32(&z, zip64_mode ? 0xFFFFFFFFu : csz[i]);
        bput32(&z, zip64_mode ? 0xFFFFFFFFu : (uint32_t)m[i].len);
        bput16(&z, (unsigned)strlen(m[i].name));
        bput16(&z, zip64_mode == 1 ? 28 : 0);
        bput16(&z, 0);
        bput16(&z, 0);
        bput16(&z, 0);
        bput32(&z, 0);
        bput32(&z, zip64_mode ? 0xFFFFFFFFu : local[i]);
        bput(&z, m[i].name, strlen(m[i].name));
        if (zip64_mode == 1) {
            bput16(&z, 1);
            bput16(&z, 24);
            bput32(&z, (uint32_t)m[i].len), bput32(&z, 0);
            bput32(&z, csz[i]), bput32(&z, 0);
            bput32(&z, local[i]), bput32(&z, 0);
        }
    }
    size_t cd_size = z.len - cd;
    if (zip64_mode) {
        size_t z64 = z.len;
        bput32(&z, 0x06064b50u);
        bput32(&z, 44), bput32(&z, 0); /* size of the rest of the record */
        bput16(&z, 45);
        bput16(&z, 45);
        bput32(&z, 0);
        bput32(&z, 0);
        bput32(&z, (uint32_t)n), bput32(&z, 0);
        bput32(&z, (uint32_t)n), bput32(&z, 0);
        bput32(&z, (uint32_t)cd_size), bput32(&z, 0);
        bput32(&z, (uint32_t)cd), bput32(&z, 0);
        bput32(&z, 0x07064b50u);
        bput32(&z, 0);
        bput32(&z, (uint32_t)z64), bput32(&z, 0);
        bput32(&z, 1);
    }
    bput32(&z, 0x06054b50u);
    bput16(&z, 0);
    bput16(&z, 0);
    bput16(&z, zip64_mode ? 0xFFFF : (unsigned)n);
    bput16(&z, zip64_mode ? 0xFFFF : (unsigned)n);
    bput32(&z, zip64_mode ? 0xFFFFFFFFu : (uint32_t)cd_size);
    bput32(&z, zip64_mode ? 0xFFFFFFFFu : (uint32_t)cd);
    size_t cl = comment ? strlen(comment) : 0;
    bput16(&z, (unsigned)cl);
    if (cl) bput(&z, comment, cl);
    free(local);
    free(csz);
    free(crc);
    return z;
}

static char err[2048];

/* Read a file with bytesrc_read_file into a fresh buffer with limit max; expect success. */
static bytebuf read_ok(const char *file, bytesrc_format fmt, const char *member, size_t max) {
    bytebuf b = {.max_bytes = max};
    err[0] = '\0';
    int rc = bytesrc_read_file(&b, file, fmt, member, err, sizeof err);
    if (rc) fail_msg("%s: unexpected error: %s", file, err);
    return b;
}

/* Expect bytesrc_read_file to fail with exactly the message `want` (printf format). */
static void read_fails(const char *file, bytesrc_format fmt, const char *member, size_t max, const char *want, ...) {
    char w[2048];
    va_list ap;
    va_start(ap, want);
    vsnprintf(w, sizeof w, want, ap);
    va_end(ap);
    bytebuf b = {.max_bytes = max};
    err[0] = '\0';
    int rc = bytesrc_read_file(&b, file, fmt, member, err, sizeof err);
    if (rc != -1) fail_msg("%s: expected the error '%s', got success", file, w);
    if (strcmp(err, w) != 0) fail_msg("%s:\n  got  '%s'\n  want '%s'", file, err, w);
    assert_int_equal(b.len, 0);
    bytebuf_free(&b);
}

/* The lm task's parameters: defaults, then key=value pairs (NULL-terminated). */
static void lm_params(void *p, const char *path, ...) {
    memset(p, 0, TASK_PARAMS_MAX);
    schema_defaults(task_lm.schema, task_lm.n_schema, p);
    char e[256];
    assert_int_equal(schema_set(schema_find(task_lm.schema, task_lm.n_schema, "path"), p, path, e, sizeof e), 0);
    va_list ap;
    va_start(ap, path);
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        const param_def *d = schema_find(task_lm.schema, task_lm.n_schema, k);
        assert_non_null(d);
        if (schema_set(d, p, v, e, sizeof e)) fail_msg("%s=%s: %s", k, v, e);
    }
    va_end(ap);
}

static task_env env_of(uint64_t seed) {
    task_env e = {seed, 256, ".", ""};
    return e;
}

static void build_ok(const void *p, uint64_t seed, task_split s[N_SPLITS]) {
    memset(s, 0, N_SPLITS * sizeof *s);
    task_env e = env_of(seed);
    if (task_lm.build(p, &e, s, err, sizeof err)) fail_msg("build: %s", err);
    for (int i = 0; i < N_SPLITS; i++) {
        assert_int_equal(s[i].n, 0);
        assert_null(s[i].tokens);
        assert_null(s[i].labels);
        assert_non_null(s[i].stream);
        assert_true(s[i].stream_len > 0);
    }
}

static void build_fails(const void *p, const char *want) {
    task_split s[N_SPLITS];
    memset(s, 0, sizeof s);
    task_env e = env_of(1);
    err[0] = '\0';
    int rc = task_lm.build(p, &e, s, err, sizeof err);
    if (rc != -1) fail_msg("expected the error '%s', got success", want);
    if (strcmp(err, want) != 0) fail_msg("\n  got  '%s'\n  want '%s'", err, want);
    for (int i = 0; i < N_SPLITS; i++) assert_null(s[i].stream);
}

static void free_splits(task_split s[N_SPLITS]) {
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&s[i]);
}

static _Alignas(16) uint8_t P[TASK_PARAMS_MAX];

/* ------------------------------------------------------------------------------------------ */
/* tests                                                                                       */

static void test_task_table(void **state) {
    (void)state;
    assert_non_null(task_find("lm"));
    assert_ptr_equal(task_find("lm"), &task_lm);
    assert_int_equal(task_lm.kind, TASK_LM);
    assert_int_equal(task_lm.vocab_size(NULL), 257);
    assert_int_equal(task_lm.n_classes(NULL), 256);
    assert_true(task_lm.params_size <= TASK_PARAMS_MAX);
    lm_params(P, "x", NULL);
    char v[64];
    schema_format(schema_find(task_lm.schema, task_lm.n_schema, "max_bytes"), P, v, sizeof v);
    assert_string_equal(v, "1073741824");
}

static void test_gzip(void **state) {
    (void)state;
    const size_t n = 300000;
    uint8_t *a = text_bytes(n, 1), *b2 = text_bytes(5000, 2);
    buf_t ga = zcompress(a, n, 16 + MAX_WBITS, NULL, 0), gb = zcompress(b2, 5000, 16 + MAX_WBITS, NULL, 0);

    /* single member, also found by magic bytes under a name without an extension */
    const char *f1 = put("g/one.gz", ga.p, ga.len);
    bytebuf b = read_ok(f1, BS_AUTO, NULL, SIZE_MAX);
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, a, n);
    bytebuf_free(&b);
    const char *f1b = put("g/noext", ga.p, ga.len);
    assert_int_equal(bytesrc_detect(f1b, err, sizeof err), BS_GZIP);

    /* two members back to back, then zero padding */
    buf_t cat = {0};
    bput(&cat, ga.p, ga.len);
    bput(&cat, gb.p, gb.len);
    bput(&cat, "\0\0\0\0\0\0\0", 7);
    const char *f2 = put("g/two.gz", cat.p, cat.len);
    b = read_ok(f2, BS_GZIP, NULL, SIZE_MAX);
    assert_int_equal(b.len, n + 5000);
    assert_memory_equal(b.data, a, n);
    assert_memory_equal(b.data + n, b2, 5000);
    bytebuf_free(&b);

    /* dictzip: a gzip member with an RA extra field */
    uint8_t ra[10] = {'R', 'A', 6, 0, 1, 0, 0, 0x80, 1, 0};
    buf_t gd = zcompress(b2, 5000, 16 + MAX_WBITS, ra, sizeof ra);
    assert_int_equal(gd.p[3] & 4, 4); /* FEXTRA set */
    const char *fd = put("g/dict.dz", gd.p, gd.len);
    b = read_ok(fd, BS_AUTO, NULL, SIZE_MAX);
    assert_int_equal(b.len, 5000);
    assert_memory_equal(b.data, b2, 5000);
    bytebuf_free(&b);

    /* junk after a member */
    cat.len = ga.len + gb.len;
    bput(&cat, "junk", 4);
    const char *fj = put("g/junk.gz", cat.p, cat.len);
    read_fails(fj, BS_AUTO, NULL, SIZE_MAX, "%s: trailing garbage after gzip data at byte %zu", fj, ga.len + gb.len);

    /* truncated: the last 100 bytes missing */
    const char *ft = put("g/trunc.gz", ga.p, ga.len - 100);
    read_fails(ft, BS_AUTO, NULL, SIZE_MAX, "%s: corrupt or truncated gzip data (zlib: unexpected end of file)", ft);

    /* a corrupt CRC in the trailer */
    buf_t bad = {0};
    bput(&bad, ga.p, ga.len);
    bad.p[bad.len - 8] ^= 0x55;
    const char *fc = put("g/crc.gz", bad.p, bad.len);
    read_fails(fc, BS_AUTO, NULL, SIZE_MAX, "%s: corrupt or truncated gzip data (zlib: incorrect data check)", fc);
    /* a corrupt deflate block type (BFINAL=1, BTYPE=11) right after the 10-byte header */
    bad.p[bad.len - 8] ^= 0x55;
    bad.p[10] = 0x07;
    const char *fb = put("g/block.gz", bad.p, bad.len);
    read_fails(fb, BS_AUTO, NULL, SIZE_MAX, "%s: corrupt or truncated gzip data (zlib: invalid block type)", fb);

    /* over the inflate limit; exactly at it is fine */
    read_fails(f1, BS_AUTO, NULL, n - 1,
               "%s: the data is larger than the inflate limit of %zu bytes (task.max_bytes; raise it if the source is "
               "meant to be this large)",
               f1, n - 1);
    b = read_ok(f1, BS_AUTO, NULL, n);
    assert_int_equal(b.len, n);
    bytebuf_free(&b);

    /* empty, not gzip, missing */
    const char *fe = put("g/empty.gz", "", 0);
    read_fails(fe, BS_AUTO, NULL, SIZE_MAX, "%s: empty file (no gzip data)", fe);
    const char *fn = put("g/text.gz", "hello", 5);
    read_fails(fn, BS_AUTO, NULL, SIZE_MAX, "%s: not gzip data (no 1f 8b magic bytes at the start)", fn);
    read_fails(tpath("g/missing.gz"), BS_AUTO, NULL, SIZE_MAX, "%s: cannot open: No such file or directory",
               tpath("g/missing.gz"));

    free(a), free(b2), free(ga.p), free(gb.p), free(gd.p), free(cat.p), free(bad.p);
}

static void test_zip_members(void **state) {
    (void)state;
    uint8_t *big = text_bytes(200000, 3), *small = text_bytes(777, 4);
    zmember m[4] = {
        {.name = "dir/", .data = NULL, .len = 0, .method = 0},
        {.name = "dir/enwik8", .data = big, .len = 200000, .method = 8},
        {.name = "readme.txt", .data = small, .len = 777, .method = 0},
        {.name = "empty", .data = NULL, .len = 0, .method = 8},
    };
    buf_t z = make_zip(m, 4, "an archive comment, PK\x05\x06 inside it");
    const char *f = put("z/multi.zip", z.p, z.len);

    bytesrc_zip_entry *ent;
    int n;
    assert_int_equal(bytesrc_zip_list(f, &ent, &n, err, sizeof err), 0);
    assert_int_equal(n, 4);
    assert_string_equal(ent[1].name, "dir/enwik8");
    assert_int_equal(ent[1].method, 8);
    assert_int_equal(ent[1].usize, 200000);
    assert_int_equal(ent[2].method, 0);
    free(ent);

    bytebuf b = read_ok(f, BS_AUTO, "dir/enwik8", SIZE_MAX);
    assert_int_equal(b.len, 200000);
    assert_memory_equal(b.data, big, 200000);
    bytebuf_free(&b);
    b = read_ok(f, BS_ZIP, "readme.txt", SIZE_MAX);
    assert_int_equal(b.len, 777);
    assert_memory_equal(b.data, small, 777);
    bytebuf_free(&b);
    b = read_ok(f, BS_ZIP, "empty", SIZE_MAX);
    assert_int_equal(b.len, 0);
    bytebuf_free(&b);

    read_fails(f, BS_AUTO, NULL, SIZE_MAX,
               "%s: the zip archive has 3 members; choose one with task.member (members: dir/enwik8, readme.txt, "
               "empty)",
               f);
    read_fails(f, BS_AUTO, "text8", SIZE_MAX,
               "%s: no member 'text8' in the zip archive (members: dir/enwik8, readme.txt, empty)", f);
    /* the limit is checked against the declared size, before inflating */
    read_fails(f, BS_AUTO, "dir/enwik8", 199999,
               "%s: member dir/enwik8 inflates to 200000 bytes, over the inflate limit of 199999 bytes "
               "(task.max_bytes; raise it if the source is meant to be this large)",
               f);

    /* one member (and a directory entry): the default */
    zmember one[2] = {{.name = "text8/", .method = 0}, {.name = "text8", .data = big, .len = 200000, .method = 8}};
    buf_t z1 = make_zip(one, 2, NULL);
    const char *f1 = put("z/text8.zip", z1.p, z1.len);
    b = read_ok(f1, BS_AUTO, "", SIZE_MAX);
    assert_int_equal(b.len, 200000);
    assert_memory_equal(b.data, big, 200000);
    bytebuf_free(&b);

    /* zip64: end record, locator and the members' extra fields (as zip writes when reading a pipe) */
    zip64_mode = 1;
    buf_t z2 = make_zip(m, 4, "zip64");
    zip64_mode = 0;
    const char *f2 = put("z/zip64.zip", z2.p, z2.len);
    b = read_ok(f2, BS_AUTO, "dir/enwik8", SIZE_MAX);
    assert_int_equal(b.len, 200000);
    assert_memory_equal(b.data, big, 200000);
    bytebuf_free(&b);
    b = read_ok(f2, BS_AUTO, "readme.txt", SIZE_MAX);
    assert_int_equal(b.len, 777);
    assert_memory_equal(b.data, small, 777);
    bytebuf_free(&b);

    free(z.p), free(z1.p), free(z2.p), free(big), free(small);
}

static void test_zip_errors(void **state) {
    (void)state;
    uint8_t *data = text_bytes(50000, 5);
    zmember m = {.name = "a.txt", .data = data, .len = 50000, .method = 8};
    buf_t z = make_zip(&m, 1, "comment");
    const char *f;

    /* truncated: the end (EOCD) cut off */
    f = put("e/trunc.zip", z.p, z.len - 30);
    read_fails(f, BS_AUTO, NULL, SIZE_MAX, "%s: truncated zip archive (no end-of-central-directory record at the end)",
               f);
    /* truncated in the middle: the central directory points past the end */
    {
        buf_t t = {0};
        size_t tail = z.len - (m.data_off + m.data_len); /* central directory + EOCD */
        bput(&t, z.p, m.data_off + 1000);
        bput(&t, z.p + z.len - tail, tail);
        f = put("e/cut.zip", t.p, t.len);
        size_t cd_off = m.data_off + m.data_len, eocd = t.len - 22 - 7, cd_size = tail - 22 - 7;
        read_fails(f, BS_AUTO, NULL, SIZE_MAX,
                   "%s: truncated zip archive (central directory at bytes %zu..%zu lies past the end record at %zu)",
                   f, cd_off, cd_off + cd_size, eocd);
        free(t.p);
    }
    /* corrupt deflate data: an invalid block type at the start of the member */
    {
        buf_t c = {0};
        bput(&c, z.p, z.len);
        c.p[m.data_off] = 0x07;
        f = put("e/corrupt.zip", c.p, c.len);
        read_fails(f, BS_AUTO, NULL, SIZE_MAX, "%s: member a.txt: corrupt deflate data (zlib: invalid block type)", f);
        free(c.p);
    }
    /* CRC mismatch */
    {
        zmember mc = m;
        mc.bad_crc = 1;
        buf_t c = make_zip(&mc, 1, NULL);
        f = put("e/crc.zip", c.p, c.len);
        uint32_t good = (uint32_t)crc32(0L, data, 50000);
        read_fails(f, BS_AUTO, NULL, SIZE_MAX,
                   "%s: member a.txt: CRC-32 mismatch (computed %08x, stored %08x): the archive is corrupt", f, good,
                   good ^ 1u);
        free(c.p);
    }
    /* a stored member whose data is damaged: also the CRC */
    {
        zmember ms = m;
        ms.method = 0;
        buf_t c = make_zip(&ms, 1, NULL);
        c.p[ms.data_off + 10] ^= 0x20;
        f = put("e/stored_bad.zip", c.p, c.len);
        uint8_t *d2 = malloc(50000);
        memcpy(d2, data, 50000);
        d2[10] ^= 0x20;
        read_fails(f, BS_AUTO, NULL, SIZE_MAX,
                   "%s: member a.txt: CRC-32 mismatch (computed %08x, stored %08x): the archive is corrupt", f,
                   (uint32_t)crc32(0L, d2, 50000), (uint32_t)crc32(0L, data, 50000));
        free(d2);
        free(c.p);
    }
    /* a member that inflates past the size its central directory declares (a zip bomb's lie) */
    {
        buf_t c = {0};
        bput(&c, z.p, z.len);
        size_t eocd = c.len - 22 - 7, cd = c.p[eocd + 16] | (size_t)c.p[eocd + 17] << 8 | (size_t)c.p[eocd + 18] << 16;
        c.p[cd + 24] = 0x10, c.p[cd + 25] = 0x27, c.p[cd + 26] = 0, c.p[cd + 27] = 0; /* usize 10000 */
        f = put("e/lie.zip", c.p, c.len);
        read_fails(f, BS_AUTO, NULL, SIZE_MAX,
                   "%s: member a.txt inflates to more than the 10000 bytes the central directory says", f);
        free(c.p);
    }
    /* encrypted, unsupported method */
    {
        zmember me = m;
        me.flags = 1;
        buf_t c = make_zip(&me, 1, NULL);
        f = put("e/enc.zip", c.p, c.len);
        read_fails(f, BS_AUTO, NULL, SIZE_MAX, "%s: member a.txt is encrypted (not supported)", f);
        free(c.p);
        zmember mb = m;
        mb.method = 12;
        c = make_zip(&mb, 1, NULL);
        f = put("e/bzip2.zip", c.p, c.len);
        read_fails(f, BS_AUTO, NULL, SIZE_MAX,
                   "%s: member a.txt uses compression method 12 (bzip2), not supported (only stored and deflate)", f);
        free(c.p);
    }
    /* zip64 sizes without their extra field */
    {
        zip64_mode = 2;
        buf_t c = make_zip(&m, 1, NULL);
        zip64_mode = 0;
        f = put("e/z64.zip", c.p, c.len);
        read_fails(f, BS_AUTO, NULL, SIZE_MAX,
                   "%s: corrupt zip central directory (entry 1: zip64 sizes without their extra field)", f);
        free(c.p);
    }
    /* an EOCD whose counts say 0xFFFF without a zip64 locator: the central directory ends early */
    {
        buf_t c = {0};
        bput(&c, z.p, z.len);
        size_t eocd = c.len - 22 - 7;
        c.p[eocd + 8] = c.p[eocd + 9] = c.p[eocd + 10] = c.p[eocd + 11] = 0xFF;
        f = put("e/count.zip", c.p, c.len);
        read_fails(f, BS_AUTO, NULL, SIZE_MAX,
                   "%s: corrupt zip central directory (entry 2 of 65535: bad signature at byte %zu)", f, z.len - 29);
        free(c.p);
    }
    /* not a zip (by extension), empty, missing */
    f = put("e/notzip.zip", "just some text, no archive here\n", 32);
    read_fails(f, BS_AUTO, NULL, SIZE_MAX,
               "%s: not a zip archive (no PK signature, no end-of-central-directory record)", f);
    f = put("e/empty.zip", "", 0);
    read_fails(f, BS_AUTO, NULL, SIZE_MAX, "%s: not a zip archive (empty file)", f);
    f = tpath("e/missing.zip");
    read_fails(f, BS_AUTO, NULL, SIZE_MAX, "%s: cannot open: No such file or directory", f);
    free(z.p);
    free(data);
}

/* enwik8's split on a small file: first 90% train, next 5% val, last 5% test, rounded. */
static void test_stream_splits(void **state) {
    (void)state;
    task_split s[N_SPLITS];
    uint8_t *d = text_bytes(20000, 6);
    /* 1000 bytes: exactly 900/50/50 */
    const char *f = put("s/k1000.txt", d, 1000);
    lm_params(P, f, NULL);
    build_ok(P, 1, s);
    assert_int_equal(s[0].stream_len, 900);
    assert_int_equal(s[1].stream_len, 50);
    assert_int_equal(s[2].stream_len, 50);
    assert_memory_equal(s[0].stream, d, 900);
    assert_memory_equal(s[1].stream, d + 900, 50);
    assert_memory_equal(s[2].stream, d + 950, 50);
    free_splits(s);
    /* 1010 bytes: 50.5 rounds half up to 51 each, train 908 */
    f = put("s/k1010.txt", d, 1010);
    lm_params(P, f, NULL);
    build_ok(P, 1, s);
    assert_int_equal(s[0].stream_len, 908);
    assert_int_equal(s[1].stream_len, 51);
    assert_int_equal(s[2].stream_len, 51);
    assert_memory_equal(s[2].stream, d + 959, 51);
    free_splits(s);
    /* 1009 bytes: 50.45 rounds to 50 */
    f = put("s/k1009.txt", d, 1009);
    lm_params(P, f, NULL);
    build_ok(P, 1, s);
    assert_int_equal(s[0].stream_len, 909);
    assert_int_equal(s[1].stream_len, 50);
    assert_int_equal(s[2].stream_len, 50);
    free_splits(s);
    /* other fractions, a gzip'd file: 20000 x 0.1 = 2000, x 0.15 = 3000, train 15000 */
    buf_t g = zcompress(d, 20000, 16 + MAX_WBITS, NULL, 0);
    f = put("s/k20000.txt.gz", g.p, g.len);
    lm_params(P, f, "val_fraction", "0.1", "test_fraction", "0.15", NULL);
    build_ok(P, 1, s);
    assert_int_equal(s[0].stream_len, 15000);
    assert_int_equal(s[1].stream_len, 2000);
    assert_int_equal(s[2].stream_len, 3000);
    assert_memory_equal(s[1].stream, d + 15000, 2000);
    assert_memory_equal(s[2].stream, d + 17000, 3000);
    free_splits(s);
    /* caps keep the first bytes of each split; boundaries stay */
    lm_params(P, f, "val_fraction", "0.1", "test_fraction", "0.15", "max_train_bytes", "100", "max_eval_bytes", "7",
              NULL);
    build_ok(P, 1, s);
    assert_int_equal(s[0].stream_len, 100);
    assert_int_equal(s[1].stream_len, 7);
    assert_int_equal(s[2].stream_len, 7);
    assert_memory_equal(s[0].stream, d, 100);
    assert_memory_equal(s[1].stream, d + 15000, 7);
    assert_memory_equal(s[2].stream, d + 17000, 7);
    free_splits(s);
    /* a zip member through the task, and max_bytes through the task */
    zmember zm = {.name = "enwik8", .data = d, .len = 20000, .method = 8};
    buf_t z = make_zip(&zm, 1, NULL);
    f = put("s/enwik8.zip", z.p, z.len);
    lm_params(P, f, NULL);
    build_ok(P, 1, s);
    assert_int_equal(s[0].stream_len, 18000);
    assert_memory_equal(s[2].stream, d + 19000, 1000);
    free_splits(s);
    lm_params(P, f, "member", "enwik8", "max_bytes", "19999", NULL);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: member enwik8 inflates to 20000 bytes, over the inflate limit of 19999 bytes (task.max_bytes; raise "
             "it if the source is meant to be this large)",
             f);
    build_fails(P, want);
    /* too small, empty */
    f = put("s/tiny.txt", "abcdefghij", 9);
    lm_params(P, f, NULL);
    snprintf(want, sizeof want,
             "task.path: %s has 9 bytes: too few for three non-empty splits (train 9, val 0, test 0 bytes with "
             "val_fraction 0.05, test_fraction 0.05)",
             f);
    build_fails(P, want);
    f = put("s/empty.txt", "", 0);
    lm_params(P, f, NULL);
    snprintf(want, sizeof want, "%s: empty: no bytes to model", f);
    build_fails(P, want);
    free(g.p), free(z.p), free(d);
}

static void test_pg19(void **state) {
    (void)state;
    uint8_t *b1 = text_bytes(3000, 7);
    buf_t g = zcompress(b1, 3000, 16 + MAX_WBITS, NULL, 0);
    put("pg/train/200.txt", "book two hundred\n", 17);
    put("pg/train/100.txt.gz", g.p, g.len);
    put("pg/train/.hidden", "never", 5);
    put("pg/validation/300.txt", "valid book\n", 11);
    put("pg/test/400.txt", "test book A\n", 12);
    put("pg/test/401.txt", "test book B\n", 12);
    task_split s[N_SPLITS];
    const char *root = tpath("pg");
    assert_int_equal(bytesrc_detect(root, err, sizeof err), BS_PG19);
    lm_params(P, root, NULL);
    build_ok(P, 1, s);
    assert_int_equal(s[0].stream_len, 3000 + 17);
    assert_memory_equal(s[0].stream, b1, 3000); /* "100.txt.gz" sorts before "200.txt" */
    assert_memory_equal(s[0].stream + 3000, "book two hundred\n", 17);
    assert_int_equal(s[1].stream_len, 11);
    assert_memory_equal(s[1].stream, "valid book\n", 11);
    assert_int_equal(s[2].stream_len, 24);
    assert_memory_equal(s[2].stream, "test book A\ntest book B\n", 24);
    free_splits(s);
    /* the limit over the three splits together: 3052 bytes in all */
    lm_params(P, root, "max_bytes", "3051", NULL);
    char want[1024];
    snprintf(want, sizeof want,
             "%s/pg/test/401.txt: the data is larger than the inflate limit of 3051 bytes (task.max_bytes; raise it "
             "if the source is meant to be this large)",
             tmp_root);
    build_fails(P, want);
    lm_params(P, root, "max_bytes", "3052", NULL);
    build_ok(P, 1, s);
    free_splits(s);
    /* a missing split directory (validate and build) */
    put("pg2/train/1.txt", "x\n", 2);
    put("pg2/test/1.txt", "y\n", 2);
    lm_params(P, tpath("pg2"), NULL);
    snprintf(want, sizeof want,
             "%s/pg2: PG19 layout has no validation/ directory (expected train/, validation/, test/)",
             tmp_root);
    build_fails(P, want);
    /* an empty split directory */
    mkdirs(tpath("pg2/valid"));
    snprintf(want, sizeof want, "%s/pg2/valid: no books (the val split of the PG19 layout is empty)", tmp_root);
    build_fails(P, want);
    free(g.p), free(b1);
}

/* Which document (by its marker "<doc NN>") a stream position belongs to: count the markers. */
static int count_doc(const task_split *s, const char *marker) {
    int c = 0;
    size_t ml = strlen(marker);
    for (size_t i = 0; i + ml <= s->stream_len; i++)
        if (memcmp(s->stream + i, marker, ml) == 0) c++;
    return c;
}

static void test_dirs_by_document(void **state) {
    (void)state;
    /* 40 documents in two genres; each holds a unique marker */
    for (int i = 0; i < 40; i++) {
        char rel[64], body[128];
        snprintf(rel, sizeof rel, "docs/%s/d%02d.txt", i < 25 ? "news" : "fiction", i);
        int len = snprintf(body, sizeof body, "<doc %02d> some prose of document %d.\n", i, i);
        if (i == 7) {
            buf_t g = zcompress((uint8_t *)body, (size_t)len, 16 + MAX_WBITS, NULL, 0);
            snprintf(rel, sizeof rel, "docs/news/d%02d.txt.gz", i);
            put(rel, g.p, g.len);
            free(g.p);
        } else {
            put(rel, body, (size_t)len);
        }
    }
    const char *root = tpath("docs");
    assert_int_equal(bytesrc_detect(root, err, sizeof err), BS_DIRS);
    task_split s[N_SPLITS], t[N_SPLITS];
    lm_params(P, root, "val_fraction", "0.1", "test_fraction", "0.15", NULL);
    build_ok(P, 42, s);
    int in[N_SPLITS] = {0};
    size_t total = 0;
    for (int i = 0; i < 40; i++) {
        char mk[32];
        snprintf(mk, sizeof mk, "<doc %02d>", i);
        int where = -1;
        for (int k = 0; k < N_SPLITS; k++) {
            int c = count_doc(&s[k], mk);
            assert_true(c <= 1);
            if (c) {
                assert_int_equal(where, -1); /* in no other split */
                where = k;
            }
        }
        assert_true(where >= 0);
        in[where]++;
    }
    for (int k = 0; k < N_SPLITS; k++) total += s[k].stream_len;
    assert_int_equal(in[SPLIT_TRAIN], 30); /* 40 - 4 - 6 */
    assert_int_equal(in[SPLIT_VAL], 4);    /* 40 x 0.1 */
    assert_int_equal(in[SPLIT_TEST], 6);   /* 40 x 0.15 */
    /* every byte once: the sizes add up to the corpus */
    size_t corpus = 0;
    for (int i = 0; i < 40; i++) {
        char body[128];
        corpus += (size_t)snprintf(body, sizeof body, "<doc %02d> some prose of document %d.\n", i, i);
    }
    assert_int_equal(total, corpus);
    /* within a split, documents keep the listing order (fiction/ before news/, names sorted) */
    for (int k = 0; k < N_SPLITS; k++) {
        const char *last = NULL;
        int last_fiction = 1;
        for (size_t i = 0; i + 8 <= s[k].stream_len; i++)
            if (memcmp(s[k].stream + i, "<doc ", 5) == 0) {
                int id = atoi((const char *)s[k].stream + i + 5), fiction = id >= 25;
                if (last) assert_true(fiction < last_fiction || (fiction == last_fiction && id > atoi(last + 5)));
                last = (const char *)s[k].stream + i;
                last_fiction = fiction;
            }
    }
    /* the same seed gives the same bytes; another seed another assignment */
    build_ok(P, 42, t);
    for (int k = 0; k < N_SPLITS; k++) {
        assert_int_equal(t[k].stream_len, s[k].stream_len);
        assert_memory_equal(t[k].stream, s[k].stream, s[k].stream_len);
    }
    free_splits(t);
    build_ok(P, 43, t);
    int differs = 0;
    for (int k = 0; k < N_SPLITS; k++)
        differs |= t[k].stream_len != s[k].stream_len || memcmp(t[k].stream, s[k].stream, s[k].stream_len) != 0;
    assert_true(differs);
    free_splits(t);
    free_splits(s);
    /* too few documents */
    put("few/a.txt", "a\n", 2);
    put("few/b.txt", "b\n", 2);
    lm_params(P, tpath("few"), NULL);
    char want[1024];
    snprintf(want, sizeof want,
             "task.path: %s/few has 2 documents: too few for three non-empty splits (train 2, val 0, test 0 with "
             "val_fraction 0.05, test_fraction 0.05)",
             tmp_root);
    build_fails(P, want);
}

static void test_task_errors(void **state) {
    (void)state;
    char want[1024];
    task_env e = env_of(1);
    /* missing path: the places looked at */
    lm_params(P, "no/such/file.txt", NULL);
    build_fails(P, "task.path: 'no/such/file.txt' not found (looked at: no/such/file.txt)");
    /* fetch hints */
    lm_params(P, "/nonexistent/gcide.dict.dz", NULL);
    build_fails(P, "task.path: /nonexistent/gcide.dict.dz not found: install the Debian package dict-gcide (apt-get "
                   "install dict-gcide)");
    lm_params(P, "brown", NULL);
    e.data_dir = tpath("nodata");
    assert_int_equal(task_lm.validate(P, &e, err, sizeof err), -1);
    snprintf(want, sizeof want,
             "task.path: %s/nodata/brown not found: run scripts/fetch-data.sh brown (it fills data/ of the lra "
             "checkout; looked at: brown, %s/nodata/brown; corpora elsewhere: set task.data_dir)",
             tmp_root, tmp_root);
    assert_string_equal(err, want);
    e.data_dir = "";
    lm_params(P, "enwik8.zip", NULL);
    build_fails(P, "task.path: enwik8.zip not found: lra does not download it; put the published archive (Hutter "
                   "Prize data, e.g. enwik8.zip) at that path, under data_dir, or next to the config");
    lm_params(P, "", NULL);
    assert_int_equal(task_lm.validate(P, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.path: required"));
    /* keys that do not fit the source */
    const char *f = put("k/plain.txt", "some text\n", 10);
    lm_params(P, f, "member", "enwik8", NULL);
    snprintf(want, sizeof want, "task.member: only for zip archives, but %s is read as plain", f);
    build_fails(P, want);
    lm_params(P, f, "format", "pg19", NULL);
    snprintf(want, sizeof want, "task.format: pg19 needs a directory, but %s is a file", f);
    build_fails(P, want);
    lm_params(P, tpath("k"), "format", "gzip", NULL);
    snprintf(want, sizeof want, "task.format: gzip needs a file, but %s is a directory", tpath("k"));
    build_fails(P, want);
    lm_params(P, f, "val_fraction", "0.5", "test_fraction", "0.5", NULL);
    build_fails(P, "task.val_fraction: val_fraction + test_fraction must be below 1, got 0.5 + 0.5");
    /* format: gzip forces the gzip reader on a plain file */
    lm_params(P, f, "format", "gzip", NULL);
    snprintf(want, sizeof want, "%s: not gzip data (no 1f 8b magic bytes at the start)", f);
    build_fails(P, want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_table),       cmocka_unit_test(test_gzip),
        cmocka_unit_test(test_zip_members),      cmocka_unit_test(test_zip_errors),
        cmocka_unit_test(test_stream_splits),    cmocka_unit_test(test_pg19),
        cmocka_unit_test(test_dirs_by_document), cmocka_unit_test(test_task_errors),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
