/* test_text.c - the `text` task and the shared helpers of tasks/textdata.c: byte encoding, RFC 822
 * bodies, the CSV/TSV record reader (RFC 4180 quoting), the three corpus layouts (aclImdb,
 * Source,Target files, a directory per class), split carving without leakage, windows, limits,
 * duplicates, the class count, and the errors (file and line) for malformed data. Every file is
 * written here, in the exact format, into a temporary directory; nothing touches the network.
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
#include "../tasks/textdata.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                     */

static char tmp_root[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup_tmp(void **state) {
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/test_text.XXXXXX");
    assert_non_null(mkdtemp(tmp_root));
    return 0;
}

static int teardown_tmp(void **state) {
    (void)state;
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* A fresh directory for one test: tmp_root/name. */
static const char *case_dir(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmp_root, name);
    assert_int_equal(mkdir(path, 0777), 0);
    return path;
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

/* Write len bytes to DIR/REL (creating directories); len < 0: strlen. */
static void put_file(const char *dir, const char *rel, const char *bytes, long len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdirs(path);
    *slash = '/';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    size_t n = len < 0 ? strlen(bytes) : (size_t)len;
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

static void put_gz(const char *dir, const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, text, (unsigned)strlen(text)), (int)strlen(text));
    gzclose(g);
}

static text_params defaults(const char *path) {
    text_params p;
    memset(&p, 0, sizeof p);
    schema_defaults(task_text.schema, task_text.n_schema, &p);
    snprintf(p.path, sizeof p.path, "%s", path);
    return p;
}

static void set(text_params *p, const char *key, const char *value) {
    char err[256];
    const param_def *d = schema_find(task_text.schema, task_text.n_schema, key);
    assert_non_null(d);
    if (schema_set(d, p, value, err, sizeof err)) fail_msg("%s: %s", key, err);
}

static task_env env_of(int seq_len, uint64_t seed) {
    task_env e = {.seed = seed, .seq_len = seq_len, .base_dir = ".", .data_dir = "data"};
    return e;
}

static int build(const text_params *p, int seq_len, uint64_t seed, task_split s[N_SPLITS], char *err, size_t errlen) {
    memset(s, 0, N_SPLITS * sizeof *s);
    task_env e = env_of(seq_len, seed);
    return task_text.build(p, &e, s, err, errlen);
}

static void build_ok(const text_params *p, int seq_len, uint64_t seed, task_split s[N_SPLITS]) {
    char err[1024] = "";
    if (build(p, seq_len, seed, s, err, sizeof err)) fail_msg("build failed: %s", err);
}

/* Expect build to fail with an error containing every fragment (NULL-terminated). */
static void build_fails(const text_params *p, int seq_len, ...) {
    task_split s[N_SPLITS];
    char err[1024] = "";
    assert_int_equal(build(p, seq_len, 0, s, err, sizeof err), -1);
    for (int i = 0; i < N_SPLITS; i++) assert_null(s[i].tokens); /* nothing left allocated */
    va_list ap;
    va_start(ap, seq_len);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err, frag)) fail_msg("error '%s' lacks '%s'", err, frag);
    va_end(ap);
}

static void free_splits(task_split s[N_SPLITS]) {
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&s[i]);
}

/* Example i of s decoded back to bytes (ids - 1, up to the first padding). */
static const char *decode(const task_split *s, int i) {
    static char buf[4096];
    const int32_t *row = s->tokens + (size_t)i * (size_t)s->seq_len;
    int k = 0;
    while (k < s->seq_len && row[k] && k < (int)sizeof buf - 1) {
        buf[k] = (char)(row[k] - 1);
        k++;
    }
    buf[k] = '\0';
    return buf;
}

/* Index of the example whose text is `text` in split s, or -1. */
static int find_text(const task_split *s, const char *text) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(decode(s, i), text)) return i;
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* bytes                                                                                       */

static void test_task_table(void **state) {
    (void)state;
    assert_string_equal(task_text.name, "text");
    assert_int_equal(task_text.kind, TASK_CLASSIFY);
    text_params p = defaults("");
    assert_int_equal(task_text.vocab_size(&p), 257);
    assert_int_equal(p.windows, 1);
    assert_int_equal(p.dedup, 1);
    assert_int_equal(p.body_only, 0);
    assert_int_equal(p.n_classes, 0);
    assert_true(p.val_fraction == 0.1f && p.test_fraction == 0.1f);
    char err[512];
    task_env e = env_of(16, 0);
    assert_int_equal(task_text.validate(&p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.path: required"));
}

static void test_encode(void **state) {
    (void)state;
    const uint8_t src[] = {0x00, 'A', 0xFF, 0xC3, 0x28, '\n'}; /* NUL, ASCII, 0xFF, invalid UTF-8, newline */
    int32_t dst[8];
    for (int i = 0; i < 8; i++) dst[i] = -7;
    textdata_encode(src, sizeof src, 8, dst);
    const int32_t want[8] = {1, 66, 256, 196, 41, 11, 0, 0}; /* b + 1, then padding */
    assert_memory_equal(dst, want, sizeof want);
    textdata_encode(src, sizeof src, 3, dst); /* truncation */
    assert_int_equal(dst[0], 1);
    assert_int_equal(dst[1], 66);
    assert_int_equal(dst[2], 256);
    assert_int_equal(dst[3], 196); /* untouched past seq_len */
    textdata_encode(src, 0, 4, dst);
    for (int i = 0; i < 4; i++) assert_int_equal(dst[i], 0);
}

static void test_body_offset(void **state) {
    (void)state;
    const char *lf = "From: a\nSubject: b\n\nHello\n\nworld";
    assert_string_equal(lf + textdata_body_offset((const uint8_t *)lf, strlen(lf)), "Hello\n\nworld");
    const char *crlf = "From: a\r\nSubject: b\r\n\r\nHi\r\n";
    assert_string_equal(crlf + textdata_body_offset((const uint8_t *)crlf, strlen(crlf)), "Hi\r\n");
    const char *mixed = "From: a\n\r\nbody";
    assert_string_equal(mixed + textdata_body_offset((const uint8_t *)mixed, strlen(mixed)), "body");
    const char *nobody = "From: a\nSubject: only headers\n";
    assert_int_equal(textdata_body_offset((const uint8_t *)nobody, strlen(nobody)), strlen(nobody));
    const char *noheaders = "\nall body";
    assert_int_equal(textdata_body_offset((const uint8_t *)noheaders, strlen(noheaders)), 1);
    assert_int_equal(textdata_body_offset((const uint8_t *)"", 0), 0);
}

/* ------------------------------------------------------------------------------------------ */
/* records                                                                                     */

static void test_reader_quoting(void **state) {
    (void)state;
    const char *dir = case_dir("reader");
    /* RFC 4180: quoted commas, doubled quotes, a newline and a CRLF inside quotes, CRLF line ends,
     * an empty line, an empty last field, a quote inside an unquoted field, no final newline. */
    put_file(dir, "a.csv",
             "Source,Target\r\n"
             "\"one, two\",1\r\n"
             "\"say \"\"hi\"\"\",0\r\n"
             "\r\n"
             "\"multi\nline\r\ntext\",2\n"
             "plain \"quote\" inside,3\n"
             "last,",
             -1);
    textdata_reader r;
    char err[512];
    assert_int_equal(textdata_reader_open(&r, "/nonexistent/x.csv", 0, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.csv: cannot open"));
    char file[512];
    snprintf(file, sizeof file, "%s/a.csv", dir);
    assert_int_equal(textdata_reader_open(&r, file, 0, 1, err, sizeof err), 0);
    struct {
        const char *f0, *f1;
        long line;
    } want[] = {{"Source", "Target", 1},         {"one, two", "1", 2}, {"say \"hi\"", "0", 3},
                {"multi\nline\r\ntext", "2", 5}, {"plain \"quote\" inside", "3", 8}, {"last", "", 9}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        assert_int_equal(textdata_reader_next(&r, err, sizeof err), 1);
        assert_int_equal(r.nf, 2);
        size_t len;
        assert_string_equal(textdata_field(&r, 0, &len), want[k].f0);
        assert_int_equal(len, strlen(want[k].f0));
        assert_string_equal(textdata_field(&r, 1, NULL), want[k].f1);
        assert_int_equal(r.rec_line, want[k].line);
    }
    assert_int_equal(r.delim, ',');
    assert_int_equal(textdata_reader_next(&r, err, sizeof err), 0);
    textdata_reader_close(&r);

    /* TSV (a tab in the first line, after blank lines), gzip'd, quoted field holding a tab. */
    put_gz(dir, "b.tsv.gz", "\n\r\nSource\tTarget\n\"a\tb\"\t1\nc,d\t0\n");
    snprintf(file, sizeof file, "%s/b.tsv", dir); /* FILE.gz is found when FILE is absent */
    assert_int_equal(textdata_reader_open(&r, file, 0, 1, err, sizeof err), 0);
    assert_int_equal(textdata_reader_next(&r, err, sizeof err), 1);
    assert_int_equal(r.delim, '\t');
    assert_int_equal(r.rec_line, 3);
    assert_int_equal(r.nf, 2);
    assert_int_equal(textdata_reader_next(&r, err, sizeof err), 1);
    assert_string_equal(textdata_field(&r, 0, NULL), "a\tb");
    assert_int_equal(textdata_reader_next(&r, err, sizeof err), 1);
    assert_string_equal(textdata_field(&r, 0, NULL), "c,d");
    assert_int_equal(textdata_reader_next(&r, err, sizeof err), 0);
    textdata_reader_close(&r);

    /* Quoting off (AAN): quotes are data. */
    put_file(dir, "c.tsv", "\"x\ty\n", -1);
    snprintf(file, sizeof file, "%s/c.tsv", dir);
    assert_int_equal(textdata_reader_open(&r, file, '\t', 0, err, sizeof err), 0);
    assert_int_equal(textdata_reader_next(&r, err, sizeof err), 1);
    assert_int_equal(r.nf, 2);
    assert_string_equal(textdata_field(&r, 0, NULL), "\"x");
    textdata_reader_close(&r);

    /* Errors: NUL byte, unterminated quote, junk after a closing quote, truncated gzip. */
    struct {
        const char *content;
        long len;
        const char *frag;
    } bad[] = {
        {"Source,Target\nab\0c,1\n", 21, ":2: NUL byte in field 1"},
        {"Source,Target\nok,1\n\"open,1\nmore\n", -1, ":3: the quoted field 1 opened on this line is not closed"},
        {"Source,Target\n\"a\"b,1\n", -1, ":2: unexpected 'b' after the closing quote of field 1"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        put_file(dir, "bad.csv", bad[k].content, bad[k].len);
        snprintf(file, sizeof file, "%s/bad.csv", dir);
        assert_int_equal(textdata_reader_open(&r, file, 0, 1, err, sizeof err), 0);
        int got;
        while ((got = textdata_reader_next(&r, err, sizeof err)) > 0) {}
        assert_int_equal(got, -1);
        if (!strstr(err, bad[k].frag) || !strstr(err, "bad.csv")) fail_msg("case %zu: '%s' lacks '%s'", k, err, bad[k].frag);
        textdata_reader_close(&r);
    }
    /* a gzip file cut in the middle: a read error naming the file, never a silent short read */
    char big[8192];
    uint64_t lcg = 1;
    for (size_t i = 0; i < sizeof big - 1; i++) {
        lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        big[i] = (char)('a' + (lcg >> 33) % 26);
    }
    big[sizeof big - 1] = '\0';
    put_gz(dir, "cut.csv.gz", big);
    char path[512];
    snprintf(path, sizeof path, "%s/cut.csv.gz", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size / 2), 0);
    assert_int_equal(textdata_reader_open(&r, path, ',', 1, err, sizeof err), 0);
    int got;
    while ((got = textdata_reader_next(&r, err, sizeof err)) > 0) {}
    assert_int_equal(got, -1);
    assert_non_null(strstr(err, "cut.csv.gz:1: read error"));
    textdata_reader_close(&r);
}

/* ------------------------------------------------------------------------------------------ */
/* layouts                                                                                     */

static void test_imdb_layout(void **state) {
    (void)state;
    const char *base = case_dir("imdb");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/aclImdb", base);
    /* 20 train reviews per class, 5 test per class; unlabelled and metadata files to be ignored */
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 20; i++) {
            char rel[64], text[64];
            snprintf(rel, sizeof rel, "train/%s/%d_%d.txt", c ? "pos" : "neg", i, c ? 9 : 2);
            snprintf(text, sizeof text, "%s review %02d <br />ok", c ? "good" : "bad", i);
            put_file(dir, rel, text, -1);
            if (i < 5) {
                snprintf(rel, sizeof rel, "test/%s/%d_%d.txt", c ? "pos" : "neg", i, c ? 8 : 1);
                snprintf(text, sizeof text, "%s test %02d", c ? "good" : "bad", i);
                put_file(dir, rel, text, -1);
            }
        }
    put_file(dir, "train/unsup/0_0.txt", "unlabelled review", -1);
    put_file(dir, "train/labeledBow.feat", "0 0:1\n", -1);
    put_file(dir, "train/urls_pos.txt", "http://x\n", -1);
    put_file(dir, "train/pos/.hidden", "not a review", -1);
    text_params p = defaults(base); /* the parent of aclImdb/ works too */
    task_split s[N_SPLITS];
    build_ok(&p, 32, 7, s);
    assert_int_equal(s[SPLIT_TRAIN].n_classes, 2);
    assert_int_equal(s[SPLIT_TEST].n, 10); /* the layout's test split, as is */
    assert_int_equal(s[SPLIT_VAL].n, 4);   /* round(0.1 * 20) per class, carved from train */
    assert_int_equal(s[SPLIT_TRAIN].n, 36);
    int i = find_text(&s[SPLIT_TEST], "good test 03");
    assert_true(i >= 0);
    assert_int_equal(s[SPLIT_TEST].labels[i], 1); /* pos = 1, neg = 0 as in TFDS */
    i = find_text(&s[SPLIT_TEST], "bad test 04");
    assert_true(i >= 0);
    assert_int_equal(s[SPLIT_TEST].labels[i], 0);
    int val_pos = 0;
    for (int k = 0; k < s[SPLIT_VAL].n; k++) val_pos += s[SPLIT_VAL].labels[k];
    assert_int_equal(val_pos, 2); /* stratified */
    /* every training review is in exactly one of train and val; unlabelled ones in none */
    for (int c = 0; c < 2; c++)
        for (int k = 0; k < 20; k++) {
            char text[64];
            snprintf(text, sizeof text, "%s review %02d <br />ok", c ? "good" : "bad", k);
            int in_tr = find_text(&s[SPLIT_TRAIN], text) >= 0, in_va = find_text(&s[SPLIT_VAL], text) >= 0;
            assert_int_equal(in_tr + in_va, 1);
        }
    for (int k = 0; k < N_SPLITS; k++) {
        assert_int_equal(find_text(&s[k], "unlabelled review"), -1);
        assert_int_equal(find_text(&s[k], "not a review"), -1);
    }
    /* seq_len truncation; duplicates are judged on the kept bytes: at 8 bytes every positive
     * training review reads "good rev", and dedup keeps one of them (too few to carve val) */
    free_splits(s);
    build_fails(&p, 8, "the val split", "(4 documents in all: 2 train, 0 val, 2 test)", NULL);
    set(&p, "dedup", "false");
    build_ok(&p, 8, 7, s);
    assert_int_equal(s[SPLIT_TEST].n, 10);
    i = find_text(&s[SPLIT_TEST], "good tes");
    assert_true(i >= 0);
    assert_int_equal(s[SPLIT_TEST].labels[i], 1);
    /* examples are stored in a seeded random order, not class by class */
    int changes = 0;
    for (int k = 1; k < s[SPLIT_TEST].n; k++) changes += s[SPLIT_TEST].labels[k] != s[SPLIT_TEST].labels[k - 1];
    assert_true(changes >= 2);
    free_splits(s);
    /* format: imdb forced on a directory that is not */
    set(&p, "format", "imdb");
    snprintf(p.path, sizeof p.path, "%s/aclImdb/train", base);
    build_fails(&p, 16, "not in the IMDB layout", NULL);
}

static void test_tsv_layout(void **state) {
    (void)state;
    const char *dir = case_dir("tsv");
    /* LRA's generic loader: comma-delimited, .tsv names, Source,Target header */
    put_file(dir, "agnews_train.tsv",
             "Source,Target\n"
             "\"Stocks fall, bonds rise\",2\n"
             "\"He said \"\"no\"\"\",0\n"
             "\"two\nlines\",1\n"
             "plain,0\n"
             "more text,1\n"
             "even more,2\n"
             "zero again,0\n"
             "one again,1\n"
             "two again,2\n"
             "last zero,0\n",
             -1);
    put_file(dir, "agnews_test.tsv", "Source,Target\r\ntest one,1\r\ntest zero,0\r\n", -1);
    text_params p = defaults(dir);
    task_split s[N_SPLITS];
    set(&p, "val_fraction", "0.34"); /* no val file: carved, round(0.34 * n_c) per class */
    build_ok(&p, 24, 0, s);
    assert_int_equal(s[SPLIT_TEST].n_classes, 3); /* largest Target + 1 */
    assert_int_equal(s[SPLIT_TEST].n, 2);
    assert_int_equal(s[SPLIT_VAL].n, 3); /* 4, 3, 3 documents per class: round(1.36), round(1.02), round(1.02) */
    assert_int_equal(s[SPLIT_TRAIN].n, 7);
    const char *texts[] = {"Stocks fall, bonds rise", "He said \"no\"", "two\nlines", "plain"};
    const int labels[] = {2, 0, 1, 0};
    for (int k = 0; k < 4; k++) {
        int a = find_text(&s[SPLIT_TRAIN], texts[k]), b = find_text(&s[SPLIT_VAL], texts[k]);
        assert_true((a >= 0) != (b >= 0));
        assert_int_equal(a >= 0 ? s[SPLIT_TRAIN].labels[a] : s[SPLIT_VAL].labels[b], labels[k]);
    }
    int i = find_text(&s[SPLIT_TEST], "test one");
    assert_true(i >= 0);
    assert_int_equal(s[SPLIT_TEST].labels[i], 1);
    free_splits(s);

    /* A TSV with Target first and an extra column, all three files, the test file gzip'd; given
     * as a prefix path. */
    put_file(dir, "x_train.tsv", "Target\tid\tSource\n1\ta\tfirst doc\n0\tb\tsecond doc\n1\tc\tthird, with comma\n", -1);
    put_file(dir, "x_val.tsv", "Target\tid\tSource\n0\td\tval doc\n", -1);
    put_gz(dir, "x_test.tsv.gz", "Target\tid\tSource\n1\te\ttest doc\n");
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s/x", dir);
    text_params q = defaults(prefix);
    build_ok(&q, 32, 0, s);
    assert_int_equal(s[SPLIT_TRAIN].n, 3);
    assert_int_equal(s[SPLIT_VAL].n, 1);
    assert_int_equal(s[SPLIT_TEST].n, 1);
    i = find_text(&s[SPLIT_TRAIN], "third, with comma");
    assert_true(i >= 0);
    assert_int_equal(s[SPLIT_TRAIN].labels[i], 1);
    assert_string_equal(decode(&s[SPLIT_TEST], 0), "test doc");
    free_splits(s);
    /* two sets of files in one directory: task.prefix must choose */
    build_fails(&p, 16, "task.prefix", "agnews_train", "x_train", NULL);
    set(&p, "prefix", "x");
    build_ok(&p, 16, 0, s);
    assert_int_equal(s[SPLIT_TRAIN].n, 3);
    free_splits(s);
}

static void test_dirs_layout(void **state) {
    (void)state;
    const char *dir = case_dir("dirs");
    /* classes named out of order; a nested sub-directory; a hidden file; a top-level file */
    for (int i = 0; i < 30; i++) {
        char rel[64], text[64];
        snprintf(rel, sizeof rel, "zebra/%s/z%02d.txt", i % 2 ? "a" : "b", i);
        snprintf(text, sizeof text, "zebra document %02d", i);
        put_file(dir, rel, text, -1);
        snprintf(rel, sizeof rel, "aardvark/a%02d", i);
        snprintf(text, sizeof text, "aardvark document %02d", i);
        put_file(dir, rel, text, -1);
        if (i < 10) {
            snprintf(rel, sizeof rel, "mole/m%02d.txt", i);
            snprintf(text, sizeof text, "mole document %02d", i);
            put_file(dir, rel, text, -1);
        }
    }
    put_file(dir, "zebra/.DS_Store", "junk", -1);
    put_file(dir, "README", "not a document", -1);
    text_params p = defaults(dir);
    task_split s[N_SPLITS], t[N_SPLITS];
    build_ok(&p, 24, 3, s);
    assert_int_equal(task_n_classes(&task_text, &p, s), 3);
    assert_int_equal(task_text.n_classes(&p), 0); /* only the data tells */
    /* per class: test round(0.1 n), val round(0.1 n): 3+3+1 each */
    assert_int_equal(s[SPLIT_TEST].n, 7);
    assert_int_equal(s[SPLIT_VAL].n, 7);
    assert_int_equal(s[SPLIT_TRAIN].n, 56);
    /* sorted class ids: aardvark 0, mole 1, zebra 2; every document in exactly one split */
    const char *names[3] = {"aardvark", "mole", "zebra"};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < (c == 1 ? 10 : 30); i++) {
            char text[64];
            snprintf(text, sizeof text, "%s document %02d", names[c], i);
            int found = 0;
            for (int k = 0; k < N_SPLITS; k++) {
                int j = find_text(&s[k], text);
                if (j >= 0) {
                    found++;
                    assert_int_equal(s[k].labels[j], c);
                }
            }
            assert_int_equal(found, 1);
        }
    for (int k = 0; k < N_SPLITS; k++) {
        assert_int_equal(find_text(&s[k], "junk"), -1);
        assert_int_equal(find_text(&s[k], "not a document"), -1);
    }
    /* determinism: same seed, same splits; another seed, another carving */
    build_ok(&p, 24, 3, t);
    for (int k = 0; k < N_SPLITS; k++) {
        assert_int_equal(s[k].n, t[k].n);
        assert_memory_equal(s[k].tokens, t[k].tokens, (size_t)s[k].n * 24 * sizeof(int32_t));
        assert_memory_equal(s[k].labels, t[k].labels, (size_t)s[k].n * sizeof(int32_t));
    }
    free_splits(t);
    build_ok(&p, 24, 4, t);
    assert_int_equal(t[SPLIT_TEST].n, 7);
    assert_true(memcmp(s[SPLIT_TEST].tokens, t[SPLIT_TEST].tokens, 7 * 24 * sizeof(int32_t)) != 0);
    free_splits(t);
    free_splits(s);
    /* n_classes larger than the data's is allowed; smaller is an error naming a document */
    set(&p, "n_classes", "5");
    build_ok(&p, 24, 3, s);
    assert_int_equal(task_n_classes(&task_text, &p, s), 5);
    assert_int_equal(task_text.n_classes(&p), 5);
    free_splits(s);
    set(&p, "n_classes", "2");
    build_fails(&p, 24, "task.n_classes: 2, but the data has 3 classes", "zebra", NULL);
}

static void test_windows_and_limits(void **state) {
    (void)state;
    const char *dir = case_dir("windows");
    put_file(dir, "a/ten.txt", "0123456789", -1); /* seq_len 4: 0123 4567 89 (2 >= 4/2: kept) */
    put_file(dir, "a/nine.txt", "abcdefghi", -1); /* abcd efgh i (1 < 2: dropped) */
    put_file(dir, "b/long.txt", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", -1);
    text_params p = defaults(dir);
    set(&p, "windows", "3");
    set(&p, "val_fraction", "0");
    set(&p, "test_fraction", "0");
    put_file(dir, "b/test.txt", "held out", -1);
    task_split s[N_SPLITS];
    /* no val/test with zero fractions: an error that names the empty split */
    build_fails(&p, 4, "task.path: the val split", "is empty", NULL);
    /* a layout with given splits instead: train/ and test/, val carved */
    const char *sp = case_dir("windows_split");
    put_file(sp, "train/a/ten.txt", "0123456789", -1);
    put_file(sp, "train/a/nine.txt", "abcdefghi", -1);
    put_file(sp, "train/b/long.txt", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", -1);
    put_file(sp, "train/b/other.txt", "other", -1);
    put_file(sp, "test/b/test.txt", "held out", -1);
    put_file(sp, "test/a/t2.txt", "more", -1);
    text_params q = defaults(sp);
    set(&q, "windows", "3");
    set(&q, "val_fraction", "0.5");
    build_ok(&q, 4, 0, s);
    /* train+val: ten -> 3, nine -> 2, long -> 3 (of 7 possible), other -> 2 ("othe", "r" dropped) */
    int total = s[SPLIT_TRAIN].n + s[SPLIT_VAL].n;
    assert_int_equal(total, 3 + 2 + 3 + 1);
    const task_split *all[2] = {&s[SPLIT_TRAIN], &s[SPLIT_VAL]};
    const char *expect[] = {"0123", "4567", "89", "abcd", "efgh", "ABCD", "EFGH", "IJKL", "othe"};
    for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++) {
        int hits = find_text(all[0], expect[k]) >= 0 ? 1 : 0;
        hits += find_text(all[1], expect[k]) >= 0;
        if (hits != 1) fail_msg("window '%s' found %d times", expect[k], hits);
    }
    assert_int_equal(find_text(all[0], "i") + find_text(all[1], "i"), -2);
    /* the windows of a document stay in its split */
    for (int k = 0; k < 2; k++) {
        int a = find_text(all[k], "0123") >= 0, b = find_text(all[k], "4567") >= 0, c = find_text(all[k], "89") >= 0;
        assert_int_equal(a, b);
        assert_int_equal(a, c);
    }
    assert_int_equal(s[SPLIT_TEST].n, 3);
    assert_true(find_text(&s[SPLIT_TEST], "more") >= 0);
    assert_true(find_text(&s[SPLIT_TEST], "held") >= 0);
    assert_true(find_text(&s[SPLIT_TEST], " out") >= 0);
    free_splits(s);
    /* limits: a seeded subset, the same for the same seed */
    set(&q, "n_train", "2");
    set(&q, "n_test", "1");
    task_split t[N_SPLITS];
    build_ok(&q, 4, 0, s);
    build_ok(&q, 4, 0, t);
    assert_int_equal(s[SPLIT_TRAIN].n, 2);
    assert_int_equal(s[SPLIT_TEST].n, 1);
    assert_memory_equal(s[SPLIT_TRAIN].tokens, t[SPLIT_TRAIN].tokens, 2 * 4 * sizeof(int32_t));
    assert_memory_equal(s[SPLIT_TEST].tokens, t[SPLIT_TEST].tokens, 4 * sizeof(int32_t));
    free_splits(s);
    free_splits(t);
}

static void test_body_only_and_dedup(void **state) {
    (void)state;
    const char *dir = case_dir("mail");
    for (int i = 0; i < 10; i++) {
        char rel[64], msg[256];
        snprintf(rel, sizeof rel, "ham/h%d.eml", i);
        snprintf(msg, sizeof msg, "From: friend%d@example.org\r\nSubject: lunch\r\n\r\nSee you at %d.\r\n", i, i);
        put_file(dir, rel, msg, -1);
        snprintf(rel, sizeof rel, "spam/s%d.eml", i);
        snprintf(msg, sizeof msg, "From: offers@spam.example\nX-Spam: yes\n\nBuy %d now!\n", i);
        put_file(dir, rel, msg, -1);
    }
    put_file(dir, "spam/headers_only.eml", "From: x@y\nSubject: nothing\n", -1);
    /* the same body under different headers: a duplicate once headers are gone */
    put_file(dir, "spam/dup.eml", "From: other@spam.example\nX-Spam: yes\n\nBuy 3 now!\n", -1);
    text_params p = defaults(dir);
    set(&p, "body_only", "true");
    set(&p, "val_fraction", "0.2");
    set(&p, "test_fraction", "0.2");
    task_split s[N_SPLITS];
    build_ok(&p, 64, 1, s);
    int total = s[0].n + s[1].n + s[2].n;
    assert_int_equal(total, 20); /* 22 files - 1 without a body - 1 duplicate */
    for (int k = 0; k < N_SPLITS; k++)
        for (int i = 0; i < s[k].n; i++) {
            const char *t = decode(&s[k], i);
            assert_null(strstr(t, "From:"));
            assert_true(!strncmp(t, "See you at", 10) || !strncmp(t, "Buy ", 4));
        }
    int hits = 0;
    for (int k = 0; k < N_SPLITS; k++) hits += find_text(&s[k], "Buy 3 now!\n") >= 0;
    assert_int_equal(hits, 1);
    free_splits(s);
    /* without dedup both copies are kept; without body_only the headers are there */
    set(&p, "dedup", "false");
    build_ok(&p, 64, 1, s);
    assert_int_equal(s[0].n + s[1].n + s[2].n, 21);
    free_splits(s);
    set(&p, "body_only", "false");
    build_ok(&p, 64, 1, s);
    assert_int_equal(s[0].n + s[1].n + s[2].n, 22);
    assert_int_equal(strncmp(decode(&s[SPLIT_TRAIN], 0), "From: ", 6), 0);
    free_splits(s);
}

/* ------------------------------------------------------------------------------------------ */
/* errors                                                                                      */

static void test_tsv_errors(void **state) {
    (void)state;
    const char *dir = case_dir("tsv_errors");
    struct {
        const char *content;
        long len;
        const char *frag;
    } cases[] = {
        {"", -1, "_train.tsv:1: empty file"},
        {"text,label\nhello,1\n", -1, "_train.tsv:1: header must name the columns Source and Target"},
        {"Source,Target\n", -1, "_train.tsv:2: no rows after the header"},
        {"Source,Target\nok,1\nbad, unquoted,0\n", -1, "_train.tsv:3: wrong column count: expected 2"},
        {"Source,Target\nok,1\nfine,pos\n", -1, "_train.tsv:3: Target 'pos' is not a non-negative integer"},
        {"Source,Target\nok,-1\n", -1, "_train.tsv:2: Target '-1' is not a non-negative integer"},
        {"Source,Target\nok,1.5\n", -1, "_train.tsv:2: Target '1.5'"},
        {"Source,Target\nok,99999999\n", -1, "_train.tsv:2: Target 99999999 is too large"},
        {"Source,Target\n,1\n", -1, "_train.tsv:2: empty Source"},
        {"Source,Target\nok,1\nn\0l,0\n", 25, "_train.tsv:3: NUL byte"},
        {"S\0o\0u\0r\0c\0e\0", 12, "_train.tsv:1: NUL byte"}, /* UTF-16 */
        {"Source,Target\n\"never closed,1\nrow,0\n", -1, "_train.tsv:2: the quoted field 1 opened on this line"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char rel[64];
        snprintf(rel, sizeof rel, "c%zu/t_train.tsv", k);
        put_file(dir, rel, cases[k].content, cases[k].len);
        char path[512];
        snprintf(path, sizeof path, "%s/c%zu", dir, k);
        text_params p = defaults(path);
        build_fails(&p, 16, cases[k].frag, path, NULL);
    }
}

static void test_dir_errors(void **state) {
    (void)state;
    char err[1024];
    /* a missing directory: the error lists where it looked */
    text_params p = defaults("/nonexistent/corpus");
    task_env e = env_of(16, 0);
    assert_int_equal(task_text.validate(&p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.path: '/nonexistent/corpus' not found"));
    /* the fetchable corpora name the command that fetches them */
    const char *dd = case_dir("datadir");
    e.data_dir = dd;
    p = defaults("brown");
    assert_int_equal(task_text.validate(&p, &e, err, sizeof err), -1);
    char want[1200];
    snprintf(want, sizeof want,
             "task.path: %s/brown not found: run scripts/fetch-data.sh brown (it fills data/ of the lra checkout; "
             "looked at: brown, %s/brown; corpora elsewhere: set task.data_dir)",
             dd, dd);
    assert_string_equal(err, want);
    p = defaults("spam");
    assert_int_equal(task_text.validate(&p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "spam not found: run scripts/fetch-data.sh spam"));
    /* found under data_dir when present */
    put_file(dd, "brown/x/a.txt", "aaaa", -1);
    p = defaults("brown");
    assert_int_equal(task_text.validate(&p, &e, err, sizeof err), 0);

    /* an empty document file; one class only; no documents; val + test fractions */
    const char *dir = case_dir("dir_errors");
    put_file(dir, "empty/a/fine.txt", "fine", -1);
    put_file(dir, "empty/b/zero.txt", "", 0);
    char path[512];
    snprintf(path, sizeof path, "%s/empty", dir);
    p = defaults(path);
    build_fails(&p, 16, "b/zero.txt: empty document", NULL);
    put_file(dir, "one/only/a.txt", "text", -1);
    snprintf(path, sizeof path, "%s/one", dir);
    p = defaults(path);
    build_fails(&p, 16, "has 1 class: classification needs at least 2", NULL);
    snprintf(path, sizeof path, "%s/none/a", dir);
    mkdirs(path);
    snprintf(path, sizeof path, "%s/none", dir);
    p = defaults(path);
    build_fails(&p, 16, "none: no documents found", NULL);
    p = defaults(path);
    set(&p, "val_fraction", "0.5");
    set(&p, "test_fraction", "0.5");
    e.data_dir = "data";
    assert_int_equal(task_text.validate(&p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.val_fraction: val_fraction + test_fraction must be below 1"));
    /* a class too small to give a test document */
    put_file(dir, "small/a/1.txt", "one", -1);
    put_file(dir, "small/b/1.txt", "two", -1);
    snprintf(path, sizeof path, "%s/small", dir);
    p = defaults(path);
    build_fails(&p, 16, "the val split of", "is empty (2 documents in all: 2 train, 0 val, 0 test)", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_table),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_body_offset),
        cmocka_unit_test(test_reader_quoting),
        cmocka_unit_test(test_imdb_layout),
        cmocka_unit_test(test_tsv_layout),
        cmocka_unit_test(test_dirs_layout),
        cmocka_unit_test(test_windows_and_limits),
        cmocka_unit_test(test_body_only_and_dedup),
        cmocka_unit_test(test_tsv_errors),
        cmocka_unit_test(test_dir_errors),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
