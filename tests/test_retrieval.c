/* test_retrieval.c - the `retrieval` task: LRA's AAN TSV files (five tab-separated columns, float
 * labels cast to int, max_bytes cut, .gz) and their errors with file and line; the pair generator:
 * determinism in the seed, exact 50/50 balance, positives from one document (non-overlapping
 * windows) or one class, no document in two splits, window lengths that do not give the label
 * away, and its errors. Every file is written here; nothing touches the network.
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
    snprintf(tmp_root, sizeof tmp_root, "/tmp/test_retrieval.XXXXXX");
    assert_non_null(mkdtemp(tmp_root));
    return 0;
}

static int teardown_tmp(void **state) {
    (void)state;
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

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

/* A document of len bytes, all equal to b: every window of it names its document. */
static void put_doc(const char *dir, const char *rel, uint8_t b, int len) {
    char *buf = malloc((size_t)len);
    memset(buf, b, (size_t)len);
    put_file(dir, rel, buf, len);
    free(buf);
}

static void put_gz(const char *dir, const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, text, (unsigned)strlen(text)), (int)strlen(text));
    gzclose(g);
}

static retrieval_params defaults(const char *path) {
    retrieval_params p;
    memset(&p, 0, sizeof p);
    schema_defaults(task_retrieval.schema, task_retrieval.n_schema, &p);
    snprintf(p.path, sizeof p.path, "%s", path);
    return p;
}

static void set(retrieval_params *p, const char *key, const char *value) {
    char err[256];
    const param_def *d = schema_find(task_retrieval.schema, task_retrieval.n_schema, key);
    assert_non_null(d);
    if (schema_set(d, p, value, err, sizeof err)) fail_msg("%s: %s", key, err);
}

static int build(const retrieval_params *p, int seq_len, uint64_t seed, task_split s[N_SPLITS], char *err,
                 size_t errlen) {
    memset(s, 0, N_SPLITS * sizeof *s);
    task_env e = {.seed = seed, .seq_len = seq_len, .base_dir = ".", .data_dir = "data"};
    return task_retrieval.build(p, &e, s, err, errlen);
}

static void build_ok(const retrieval_params *p, int seq_len, uint64_t seed, task_split s[N_SPLITS]) {
    char err[1024] = "";
    if (build(p, seq_len, seed, s, err, sizeof err)) fail_msg("build failed: %s", err);
    for (int k = 0; k < N_SPLITS; k++) {
        assert_int_equal(s[k].n_inputs, 2);
        assert_int_equal(s[k].seq_len, seq_len);
    }
}

static void build_fails(const retrieval_params *p, int seq_len, ...) {
    task_split s[N_SPLITS];
    char err[1024] = "";
    assert_int_equal(build(p, seq_len, 0, s, err, sizeof err), -1);
    for (int i = 0; i < N_SPLITS; i++) assert_null(s[i].tokens);
    va_list ap;
    va_start(ap, seq_len);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err, frag)) fail_msg("error '%s' lacks '%s'", err, frag);
    va_end(ap);
}

static void free_splits(task_split s[N_SPLITS]) {
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&s[i]);
}

static const int32_t *input(const task_split *s, int i, int which) {
    return s->tokens + ((size_t)i * 2 + (size_t)which) * (size_t)s->seq_len;
}

static const char *decode(const task_split *s, int i, int which) {
    static char buf[2][1024];
    const int32_t *row = input(s, i, which);
    int k = 0;
    while (k < s->seq_len && row[k] && k < 1023) {
        buf[which][k] = (char)(row[k] - 1);
        k++;
    }
    buf[which][k] = '\0';
    return buf[which];
}

static int content_len(const int32_t *row, int n) {
    int k = 0;
    while (k < n && row[k]) k++;
    return k;
}

/* ------------------------------------------------------------------------------------------ */
/* AAN                                                                                         */

static void test_task_table(void **state) {
    (void)state;
    assert_string_equal(task_retrieval.name, "retrieval");
    assert_int_equal(task_retrieval.kind, TASK_MATCH);
    retrieval_params p = defaults("");
    assert_int_equal(task_retrieval.vocab_size(&p), 257);
    assert_int_equal(task_retrieval.n_classes(&p), 2);
    assert_int_equal(p.same, 0);
    assert_int_equal(p.max_bytes, 10000); /* LRA's cut */
    assert_int_equal(p.pairs_per_doc, 10);
    char err[512];
    task_env e = {.seed = 0, .seq_len = 16, .base_dir = ".", .data_dir = "data"};
    assert_int_equal(task_retrieval.validate(&p, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.path: required"));
}

static void write_aan(const char *dir) {
    put_file(dir, "new_aan_pairs.train.tsv",
             "1\tP01-1001\tP02-2002\tfirst text of the pair\tsecond text\n"
             "0.0\tA\tB\tabc\t\"quoted, as is\n"
             "1.0\tC\tD\tshort\tthe other one\r\n"
             "0.9\tE\tF\tnine tenths\tcast to 0\n",
             -1);
    put_file(dir, "new_aan_pairs.eval.tsv", "0\tX\tY\teval one\teval two\n", -1);
    put_gz(dir, "new_aan_pairs.test.tsv.gz", "1\tX\tZ\ttest one\ttest two\n0\tY\tZ\tt3\tt4\n");
}

static void test_aan_load(void **state) {
    (void)state;
    const char *dir = case_dir("aan");
    write_aan(dir);
    retrieval_params p = defaults(dir);
    task_split s[N_SPLITS];
    build_ok(&p, 8, 0, s);
    assert_int_equal(s[SPLIT_TRAIN].n, 4);
    assert_int_equal(s[SPLIT_VAL].n, 1); /* eval is the validation split */
    assert_int_equal(s[SPLIT_TEST].n, 2);
    const int32_t want_labels[4] = {1, 0, 1, 0}; /* float labels, truncated */
    assert_memory_equal(s[SPLIT_TRAIN].labels, want_labels, sizeof want_labels);
    assert_string_equal(decode(&s[SPLIT_TRAIN], 0, 0), "first te"); /* truncated to seq_len */
    assert_string_equal(decode(&s[SPLIT_TRAIN], 0, 1), "second t");
    assert_string_equal(decode(&s[SPLIT_TRAIN], 1, 1), "\"quoted,"); /* no quote handling */
    assert_string_equal(decode(&s[SPLIT_TRAIN], 2, 0), "short");
    assert_string_equal(decode(&s[SPLIT_TRAIN], 2, 1), "the othe");
    const int32_t *row = input(&s[SPLIT_TRAIN], 2, 0); /* "short" padded with 0 */
    const int32_t want_row[8] = {'s' + 1, 'h' + 1, 'o' + 1, 'r' + 1, 't' + 1, 0, 0, 0};
    assert_memory_equal(row, want_row, sizeof want_row);
    assert_string_equal(decode(&s[SPLIT_TEST], 1, 1), "t4");
    free_splits(s);
    /* the prefix form, max_bytes cut before encoding, and a row limit */
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s/new_aan_pairs", dir);
    retrieval_params q = defaults(prefix);
    set(&q, "max_bytes", "3");
    set(&q, "n_train", "2");
    build_ok(&q, 8, 0, s);
    assert_int_equal(s[SPLIT_TRAIN].n, 2);
    assert_string_equal(decode(&s[SPLIT_TRAIN], 0, 0), "fir");
    assert_string_equal(decode(&s[SPLIT_TRAIN], 1, 0), "abc");
    free_splits(s);
}

static void test_aan_errors(void **state) {
    (void)state;
    const char *base = case_dir("aan_errors");
    struct {
        const char *train;
        long len;
        const char *frag;
    } cases[] = {
        {"1\ta\tb\tonly four\n", -1, ".train.tsv:1: expected 5 tab-separated columns (label, id1, id2, text1, text2), got 4"},
        {"label\tid1\tid2\ttext1\ttext2\n", -1, ".train.tsv:1: label 'label' is not a number (LRA's AAN files have no header row)"},
        {"1\ta\tb\tx\ty\n2\ta\tb\tx\ty\n", -1, ".train.tsv:2: label 2 is not 0 or 1"},
        {"-1\ta\tb\tx\ty\n", -1, ".train.tsv:1: label -1 is not 0 or 1"},
        {"1\ta\tb\tx\ty\nyes\ta\tb\tx\ty\n", -1, ".train.tsv:2: label 'yes' is not a number"},
        {"1\ta\tb\t\ty\n", -1, ".train.tsv:1: empty text1"},
        {"1\ta\tb\tx\ty\n0\ta\tb\tx\0z\ty\n", 22, ".train.tsv:2: NUL byte in field 4"},
        {"", -1, ".train.tsv:1: no rows"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/c%zu", base, k);
        mkdirs(dir);
        put_file(dir, "new_aan_pairs.train.tsv", cases[k].train, cases[k].len);
        put_file(dir, "new_aan_pairs.eval.tsv", "0\ta\tb\tx\ty\n", -1);
        put_file(dir, "new_aan_pairs.test.tsv", "0\ta\tb\tx\ty\n", -1);
        retrieval_params p = defaults(dir);
        build_fails(&p, 8, cases[k].frag, dir, NULL);
    }
    /* a missing split file */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/noeval", base);
    mkdirs(dir);
    put_file(dir, "new_aan_pairs.train.tsv", "0\ta\tb\tx\ty\n", -1);
    put_file(dir, "new_aan_pairs.test.tsv", "0\ta\tb\tx\ty\n", -1);
    retrieval_params p = defaults(dir);
    build_fails(&p, 8, "new_aan_pairs.eval.tsv: cannot open", NULL);
    /* format: aan forced on a directory without the files */
    p = defaults(base);
    set(&p, "format", "aan");
    build_fails(&p, 8, "holds no new_aan_pairs.train.tsv", NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* The generator                                                                               */

/* 40 documents, document k all bytes 33 + k, 20 + 9k bytes long (20..371). */
static const char *flat_corpus(void) {
    static char dir[256];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s", case_dir("flat"));
    for (int k = 0; k < 40; k++) {
        char rel[32];
        snprintf(rel, sizeof rel, "doc%02d.txt", k);
        put_doc(dir, rel, (uint8_t)(33 + k), 20 + 9 * k);
    }
    return dir;
}

static int doc_of(const task_split *s, int i, int which) { return input(s, i, which)[0] - 1 - 33; }

static void test_pairs_same_document(void **state) {
    (void)state;
    retrieval_params p = defaults(flat_corpus());
    set(&p, "min_bytes", "10");
    const int S = 64;
    task_split s[N_SPLITS], t[N_SPLITS];
    build_ok(&p, S, 11, s);
    /* documents: 4 test, 4 val, 32 train; pairs_per_doc 10 */
    assert_int_equal(s[SPLIT_TRAIN].n, 320);
    assert_int_equal(s[SPLIT_VAL].n, 40);
    assert_int_equal(s[SPLIT_TEST].n, 40);
    int split_of[40];
    for (int k = 0; k < 40; k++) split_of[k] = -1;
    for (int sp = 0; sp < N_SPLITS; sp++) {
        const task_split *x = &s[sp];
        int pos = 0;
        for (int i = 0; i < x->n; i++) {
            int a = doc_of(x, i, 0), b = doc_of(x, i, 1);
            assert_true(a >= 0 && a < 40 && b >= 0 && b < 40);
            /* each window is one document's bytes, min(S, L/2) of them */
            for (int w = 0; w < 2; w++) {
                int d = w ? b : a, L = 20 + 9 * d, len = content_len(input(x, i, w), S);
                assert_int_equal(len, LRA_MIN(S, L / 2));
                for (int k = 0; k < len; k++) assert_int_equal(input(x, i, w)[k], 33 + d + 1);
            }
            assert_int_equal(x->labels[i], a == b); /* 1 exactly when both come from one document */
            pos += x->labels[i];
            for (int w = 0; w < 2; w++) { /* no document in two splits */
                int d = w ? b : a;
                if (split_of[d] < 0) split_of[d] = sp;
                assert_int_equal(split_of[d], sp);
            }
        }
        assert_int_equal(pos, x->n / 2); /* exactly balanced */
    }
    /* determinism: same seed, same pairs; another seed, other pairs */
    build_ok(&p, S, 11, t);
    for (int k = 0; k < N_SPLITS; k++) {
        assert_int_equal(s[k].n, t[k].n);
        assert_memory_equal(s[k].tokens, t[k].tokens, (size_t)s[k].n * 2 * S * sizeof(int32_t));
        assert_memory_equal(s[k].labels, t[k].labels, (size_t)s[k].n * sizeof(int32_t));
    }
    free_splits(t);
    build_ok(&p, S, 12, t);
    assert_true(memcmp(s[SPLIT_TRAIN].tokens, t[SPLIT_TRAIN].tokens, 320 * 2 * S * sizeof(int32_t)) != 0);
    free_splits(t);
    free_splits(s);
    /* explicit pair counts, odd: balanced within one; min_bytes drops short documents */
    set(&p, "n_train", "101");
    set(&p, "n_val", "7");
    set(&p, "min_bytes", "200"); /* documents 20 + 9k >= 200: k >= 20, 20 documents */
    build_ok(&p, S, 5, s);
    assert_int_equal(s[SPLIT_TRAIN].n, 101);
    assert_int_equal(s[SPLIT_VAL].n, 7);
    assert_int_equal(s[SPLIT_TEST].n, 20); /* 2 test documents x 10 */
    int pos = 0;
    for (int i = 0; i < 101; i++) pos += s[SPLIT_TRAIN].labels[i];
    assert_int_equal(pos, 50);
    for (int sp = 0; sp < N_SPLITS; sp++)
        for (int i = 0; i < s[sp].n; i++) assert_true(doc_of(&s[sp], i, 0) >= 20 && doc_of(&s[sp], i, 1) >= 20);
    free_splits(s);
}

/* Positives are two non-overlapping windows inside one document. Documents whose byte at
 * position j is j + base tell where a window starts. */
static void test_pairs_windows(void **state) {
    (void)state;
    const char *dir = case_dir("windows");
    char doc0[120], doc1[120];
    for (int j = 0; j < 120; j++) doc0[j] = (char)(j + 1), doc1[j] = (char)(j + 130);
    for (int sp = 0; sp < N_SPLITS; sp++) { /* the same two documents in each given split */
        char rel[64];
        snprintf(rel, sizeof rel, "%s/x/doc0", split_names[sp]);
        put_file(dir, rel, doc0, 120);
        snprintf(rel, sizeof rel, "%s/x/doc1", split_names[sp]);
        put_file(dir, rel, doc1, 120);
    }
    retrieval_params p = defaults(dir);
    set(&p, "dedup", "false");
    set(&p, "n_train", "400");
    const int S = 16;
    task_split s[N_SPLITS];
    build_ok(&p, S, 2, s);
    const task_split *x = &s[SPLIT_TRAIN];
    int first_later = 0, positives = 0;
    for (int i = 0; i < x->n; i++) {
        int start[2], doc[2];
        for (int w = 0; w < 2; w++) {
            const int32_t *row = input(x, i, w);
            int b = row[0] - 1;
            doc[w] = b >= 130;
            start[w] = b - (doc[w] ? 130 : 1);
            assert_int_equal(content_len(row, S), S); /* min(16, 120 / 2) */
            assert_true(start[w] >= 0 && start[w] + S <= 120);
            for (int k = 1; k < S; k++) assert_int_equal(row[k], row[0] + k); /* contiguous */
        }
        assert_int_equal(x->labels[i], doc[0] == doc[1]);
        if (x->labels[i]) {
            positives++;
            assert_true(abs(start[0] - start[1]) >= S); /* no overlap */
            first_later += start[0] > start[1];
        }
    }
    assert_int_equal(positives, 200);
    assert_true(first_later > 60 && first_later < 140); /* the two windows come in random order */
    free_splits(s);
}

static void test_pairs_same_class(void **state) {
    (void)state;
    const char *dir = case_dir("classes");
    /* classes a (10 documents), b (10), c (1: never in a positive); document k is byte 40 + k */
    int k = 0;
    const char *cls[3] = {"a", "b", "c"};
    const int count[3] = {10, 10, 1};
    int class_of[21];
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < count[c]; i++, k++) {
            char rel[32];
            snprintf(rel, sizeof rel, "%s/%02d.txt", cls[c], i);
            put_doc(dir, rel, (uint8_t)(40 + k), 150 + 3 * k);
            class_of[k] = c;
        }
    retrieval_params p = defaults(dir);
    set(&p, "same", "class");
    set(&p, "val_fraction", "0.2");
    set(&p, "test_fraction", "0.2");
    const int S = 200;
    task_split s[N_SPLITS];
    build_ok(&p, S, 9, s);
    int split_of[21];
    for (int d = 0; d < 21; d++) split_of[d] = -1;
    for (int sp = 0; sp < N_SPLITS; sp++) {
        const task_split *x = &s[sp];
        int pos = 0;
        for (int i = 0; i < x->n; i++) {
            int a = input(x, i, 0)[0] - 1 - 40, b = input(x, i, 1)[0] - 1 - 40;
            assert_true(a >= 0 && a < 21 && b >= 0 && b < 21);
            assert_true(a != b); /* two different documents, always */
            assert_int_equal(x->labels[i], class_of[a] == class_of[b]);
            for (int w = 0; w < 2; w++) {
                int d = w ? b : a;
                assert_int_equal(content_len(input(x, i, w), S), LRA_MIN(S, 150 + 3 * d)); /* min(S, L) */
                if (split_of[d] < 0) split_of[d] = sp;
                assert_int_equal(split_of[d], sp);
            }
            pos += x->labels[i];
        }
        assert_int_equal(pos, x->n / 2);
    }
    free_splits(s);
    /* same: class needs classes */
    retrieval_params q = defaults(flat_corpus());
    set(&q, "same", "class");
    set(&q, "min_bytes", "10");
    build_fails(&q, 16, "task.same: class needs", "1 class", NULL);
}

static void test_pair_errors(void **state) {
    (void)state;
    /* every document shorter than min_bytes */
    const char *dir = case_dir("short");
    put_file(dir, "a.txt", "tiny", -1);
    put_file(dir, "b.txt", "small", -1);
    retrieval_params p = defaults(dir);
    build_fails(&p, 16, "the train split has 0 usable documents (at least task.min_bytes = 100 bytes)", NULL);
    set(&p, "min_bytes", "5");
    build_fails(&p, 16, "the train split has 1 usable document (at least task.min_bytes = 5 bytes)", NULL);
    /* the fetch hint for the corpora the script prepares */
    const char *dd = case_dir("datadir");
    retrieval_params q = defaults("brown");
    task_env e = {.seed = 0, .seq_len = 16, .base_dir = ".", .data_dir = dd};
    char err[1024];
    assert_int_equal(task_retrieval.validate(&q, &e, err, sizeof err), -1);
    char want[1200];
    snprintf(want, sizeof want,
             "task.path: %s/brown not found: run scripts/fetch-data.sh brown (it fills data/ of the lra checkout; "
             "looked at: brown, %s/brown; corpora elsewhere: set task.data_dir)",
             dd, dd);
    assert_string_equal(err, want);
    q = defaults("/nonexistent/aan");
    e.data_dir = "data";
    assert_int_equal(task_retrieval.validate(&q, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.path: '/nonexistent/aan' not found"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_table),
        cmocka_unit_test(test_aan_load),
        cmocka_unit_test(test_aan_errors),
        cmocka_unit_test(test_pairs_same_document),
        cmocka_unit_test(test_pairs_windows),
        cmocka_unit_test(test_pairs_same_class),
        cmocka_unit_test(test_pair_errors),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
