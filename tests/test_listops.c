/* test_listops.c - the ListOps task: generator (determinism, bounds, labels, uniqueness,
 * distribution), LRA's serialised form, the TSV round trip and the loader's errors.
 *
 * Labels are checked against an evaluator written here over the serialised string (recursive
 * descent with sorting), independent of listops.c's histogram evaluator.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/stat.h>
#include <zlib.h>

#include "testutil.h"

#include "../lra/common.h"
#include "../tasks/listops.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                     */

static listops_params defaults(void) {
    listops_params p;
    memset(&p, 0, sizeof p);
    schema_defaults(task_listops.schema, task_listops.n_schema, &p);
    return p;
}

static listops_params small_params(int n_train, int n_val, int n_test, int max_depth, int max_args) {
    listops_params p = defaults();
    p.n_train = n_train;
    p.n_val = n_val;
    p.n_test = n_test;
    p.max_depth = max_depth;
    p.max_args = max_args;
    return p;
}

static void free_splits(task_split s[N_SPLITS]) {
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&s[i]);
}

static int row_len(const task_split *s, int i) {
    const int32_t *r = s->tokens + (size_t)i * (size_t)s->seq_len;
    int n = 0;
    while (n < s->seq_len && r[n]) n++;
    return n;
}

static const int32_t *row_ptr(const task_split *s, int i) { return s->tokens + (size_t)i * (size_t)s->seq_len; }

/* Split a string on spaces into words (malloc'd copy in *store). */
static int split_words(const char *s, char ***words, char **store) {
    *store = xstrdup(s);
    int cap = 16, n = 0;
    *words = xmalloc((size_t)cap * sizeof **words);
    for (char *tok = strtok(*store, " "); tok; tok = strtok(NULL, " ")) {
        if (n == cap) *words = xrealloc(*words, (size_t)(cap *= 2) * sizeof **words);
        (*words)[n++] = tok;
    }
    return n;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Independent evaluator over words with parentheses removed: recursive descent. */
static int ref_eval(char **w, int n, int *i) {
    assert_true(*i < n);
    const char *t = w[(*i)++];
    if (t[0] >= '0' && t[0] <= '9' && !t[1]) return t[0] - '0';
    int vals[1024], m = 0;
    while (strcmp(w[*i], "]") != 0) {
        assert_true(m < 1024);
        vals[m++] = ref_eval(w, n, i);
    }
    (*i)++;
    assert_true(m >= 2);
    qsort(vals, (size_t)m, sizeof vals[0], cmp_int);
    if (!strcmp(t, "[MIN")) return vals[0];
    if (!strcmp(t, "[MAX")) return vals[m - 1];
    if (!strcmp(t, "[SM")) {
        int s = 0;
        for (int k = 0; k < m; k++) s += vals[k];
        return s % 10;
    }
    assert_string_equal(t, "[MED");
    double med = m % 2 ? vals[m / 2] : 0.5 * (vals[m / 2 - 1] + vals[m / 2]); /* np.median */
    return (int)med;                                                             /* int() */
}

/* LRA's to_string always writes "( A B )" for a pair: check every group has exactly two
 * elements. Returns the index after the element starting at *i. */
static void check_pair_element(char **w, int n, int *i) {
    assert_true(*i < n);
    if (strcmp(w[*i], "(") != 0) {
        assert_string_not_equal(w[*i], ")");
        (*i)++;
        return;
    }
    (*i)++;
    check_pair_element(w, n, i);
    check_pair_element(w, n, i);
    assert_true(*i < n);
    assert_string_equal(w[*i], ")");
    (*i)++;
}

/* Value of a serialised Source string by the independent evaluator; also checks the pair
 * structure and that the words without parentheses are exactly `tokens` (test's own table). */
static int ref_eval_source(const char *src, const int32_t *tokens, int ntok) {
    static const char *names[16] = {"", "[MIN", "[MAX", "[MED", "[SM", "]", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    char **w, *store;
    int n = split_words(src, &w, &store), i = 0;
    check_pair_element(w, n, &i);
    assert_int_equal(i, n);
    int m = 0;
    for (int k = 0; k < n; k++)
        if (strcmp(w[k], "(") && strcmp(w[k], ")")) w[m++] = w[k];
    assert_int_equal(m, ntok);
    for (int k = 0; k < m; k++) assert_string_equal(w[k], names[tokens[k]]);
    i = 0;
    int v = ref_eval(w, m, &i);
    assert_int_equal(i, m);
    free(w);
    free(store);
    return v;
}

/* Deepest operator nesting (root operator = 1) of a token row. */
static int op_depth(const int32_t *t, int n) {
    int d = 0, best = 0;
    for (int i = 0; i < n; i++) {
        if (t[i] >= LISTOPS_MIN && t[i] <= LISTOPS_SM) {
            d++;
            if (d > best) best = d;
        }
        else if (t[i] == LISTOPS_CLOSE) d--;
    }
    return best;
}

typedef struct {
    const int32_t *t;
    int n;
} seq_ref;

static int cmp_seq(const void *a, const void *b) {
    const seq_ref *x = a, *y = b;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return memcmp(x->t, y->t, (size_t)x->n * sizeof *x->t);
}

/* Number of rows (over all splits) equal to an earlier row. */
static int count_duplicates(const task_split s[N_SPLITS]) {
    int total = 0;
    for (int k = 0; k < N_SPLITS; k++) total += s[k].n;
    seq_ref *r = xmalloc((size_t)total * sizeof *r);
    int m = 0;
    for (int k = 0; k < N_SPLITS; k++)
        for (int i = 0; i < s[k].n; i++) r[m++] = (seq_ref){row_ptr(&s[k], i), row_len(&s[k], i)};
    qsort(r, (size_t)m, sizeof *r, cmp_seq);
    int dup = 0;
    for (int i = 1; i < m; i++) dup += cmp_seq(&r[i - 1], &r[i]) == 0;
    free(r);
    return dup;
}

static int splits_equal(const task_split a[N_SPLITS], const task_split b[N_SPLITS]) {
    for (int k = 0; k < N_SPLITS; k++) {
        if (a[k].n != b[k].n || a[k].seq_len != b[k].seq_len) return 0;
        if (memcmp(a[k].tokens, b[k].tokens, (size_t)a[k].n * (size_t)a[k].seq_len * sizeof(int32_t))) return 0;
        if (memcmp(a[k].labels, b[k].labels, (size_t)a[k].n * sizeof(int32_t))) return 0;
    }
    return 1;
}

static void gen_ok(const listops_params *p, int seq_len, uint64_t seed, task_split s[N_SPLITS], listops_stats *st) {
    char err[1024] = "";
    task_env env = {.seed = seed, .seq_len = seq_len, .base_dir = ".", .data_dir = "data"};
    memset(s, 0, N_SPLITS * sizeof *s);
    int rc = task_listops.validate(p, &env, err, sizeof err);
    if (rc) print_error("validate: %s\n", err);
    assert_int_equal(rc, 0);
    rc = listops_generate(p, seq_len, seed, s, st, err, sizeof err);
    if (rc) print_error("generate: %s\n", err);
    assert_int_equal(rc, 0);
}

/* Token ids of a cleaned expression string like "[MAX 2 [MIN 3 1 ] 9 ]" (test's own table). */
static int ids_of(const char *s, int32_t *out) {
    char **w, *store;
    int n = split_words(s, &w, &store);
    for (int i = 0; i < n; i++) {
        if (!strcmp(w[i], "[MIN")) out[i] = 1;
        else if (!strcmp(w[i], "[MAX")) out[i] = 2;
        else if (!strcmp(w[i], "[MED")) out[i] = 3;
        else if (!strcmp(w[i], "[SM")) out[i] = 4;
        else if (!strcmp(w[i], "]")) out[i] = 5;
        else out[i] = 6 + (w[i][0] - '0');
    }
    free(w);
    free(store);
    return n;
}

static char tmpdir_path[64];

static const char *tmpdir(void) {
    if (!tmpdir_path[0]) {
        snprintf(tmpdir_path, sizeof tmpdir_path, "/tmp/test_listops.XXXXXX");
        assert_non_null(mkdtemp(tmpdir_path));
    }
    return tmpdir_path;
}

static void write_file(const char *path, const char *content) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

/* ------------------------------------------------------------------------------------------ */
/* tests                                                                                       */

static void test_task_table(void **state) {
    (void)state;
    assert_string_equal(task_listops.name, "listops");
    assert_int_equal(task_listops.kind, TASK_CLASSIFY);
    listops_params p = defaults();
    assert_int_equal(task_listops.vocab_size(&p), 16);
    assert_int_equal(task_listops.n_classes(&p), 10);
    assert_int_equal(p.n_train, 96000);
    assert_int_equal(p.n_val, 2000);
    assert_int_equal(p.n_test, 2000);
    assert_int_equal(p.max_depth, 10);
    assert_int_equal(p.max_args, 10);
    assert_true(p.op_prob == 0.25f);
    assert_string_equal(p.path, "");
    int lo, hi;
    listops_resolve_bounds(&p, 2000, &lo, &hi);
    assert_int_equal(lo, 500); /* LRA's bounds at seq_len 2000 */
    assert_int_equal(hi, 2000);
    assert_non_null(task_find("listops"));
}

static void test_serialise_lra_example(void **state) {
    (void)state;
    int32_t t[64];
    int n = ids_of("[MAX 2 [MIN 3 1 ] 9 ]", t);
    const int32_t want_ids[] = {2, 8, 1, 9, 7, 5, 15, 5}; /* the table documented in listops.h */
    assert_int_equal(n, 8);
    assert_memory_equal(t, want_ids, sizeof want_ids);
    char *s = listops_to_source(t, n);
    assert_non_null(s);
    /* LRA: t = ((((MAX, 2), MIN-tree), 9), ']'), to_string(pair) = "( " a " " b " )" */
    assert_string_equal(s, "( ( ( ( [MAX 2 ) ( ( ( [MIN 3 ) 1 ) ] ) ) 9 ) ] )");
    free(s);
    /* a lone digit is written bare */
    int32_t d = 6 + 7;
    s = listops_to_source(&d, 1);
    assert_string_equal(s, "7");
    free(s);
    /* padding ends the expression; malformed sequences give NULL */
    int32_t padded[10] = {2, 8, 1, 9, 7, 5, 15, 5, 0, 0};
    s = listops_to_source(padded, 10);
    assert_string_equal(s, "( ( ( ( [MAX 2 ) ( ( ( [MIN 3 ) 1 ) ] ) ) 9 ) ] )");
    free(s);
    assert_null(listops_to_source(padded, 6)); /* truncated */
    assert_null(listops_to_source(padded, 0));
}

static void test_eval_cases(void **state) {
    (void)state;
    struct {
        const char *expr;
        int value;
    } cases[] = {
        {"[MAX 2 [MIN 3 1 ] 9 ]", 9},
        {"[MIN 4 [MAX 3 1 ] 9 ]", 3},
        {"[MED 1 2 ]", 1},         /* median 1.5 -> int 1 */
        {"[MED 3 8 1 9 ]", 5},     /* 1 3 8 9: (3+8)/2 = 5.5 -> 5 */
        {"[MED 9 0 4 ]", 4},
        {"[MED 7 7 8 8 ]", 7},     /* 7.5 -> 7 */
        {"[MED 9 9 ]", 9},
        {"[SM 9 9 9 ]", 7},        /* 27 % 10 */
        {"[SM 0 0 ]", 0},
        {"[SM [MAX 5 6 ] [MED 2 4 6 8 ] 9 ]", 0}, /* 6 + 5 + 9 = 20 */
        {"5", 5},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t t[64];
        int n = ids_of(cases[c].expr, t);
        assert_int_equal(listops_eval(t, n), cases[c].value);
        char *s = listops_to_source(t, n);
        assert_int_equal(ref_eval_source(s, t, n), cases[c].value);
        free(s);
    }
    /* malformed: unbalanced, empty operator, trailing tokens, unknown id, empty */
    int32_t t[16];
    int n = ids_of("[MIN 3 1", t);
    assert_int_equal(listops_eval(t, n), -1);
    n = ids_of("[MIN 3 1 ] ]", t);
    assert_int_equal(listops_eval(t, n), -1);
    n = ids_of("[MIN ]", t);
    assert_int_equal(listops_eval(t, n), -1);
    n = ids_of("3 4", t);
    assert_int_equal(listops_eval(t, n), -1);
    int32_t bad[3] = {1, 42, 5};
    assert_int_equal(listops_eval(bad, 3), -1);
    assert_int_equal(listops_eval(bad, 0), -1);
}

static void test_generate_determinism(void **state) {
    (void)state;
    listops_params p = small_params(300, 40, 40, 5, 6);
    p.min_length = 20;
    p.max_length = 100;
    task_split a[N_SPLITS], b[N_SPLITS], c[N_SPLITS], d[N_SPLITS];
    gen_ok(&p, 100, 7, a, NULL);
    gen_ok(&p, 100, 7, b, NULL);
    gen_ok(&p, 100, 8, c, NULL);
    assert_true(splits_equal(a, b));
    assert_false(splits_equal(a, c));
    /* different seed: most examples differ (not merely a shifted copy) */
    int same = 0;
    for (int i = 0; i < a[SPLIT_TRAIN].n; i++)
        same += !memcmp(row_ptr(&a[SPLIT_TRAIN], i), row_ptr(&c[SPLIT_TRAIN], i), 100 * sizeof(int32_t));
    assert_true(same < 5);
    /* val and test do not depend on n_train */
    p.n_train = 120;
    gen_ok(&p, 100, 7, d, NULL);
    assert_int_equal(d[SPLIT_TRAIN].n, 120);
    for (int k = SPLIT_VAL; k <= SPLIT_TEST; k++) {
        assert_memory_equal(a[k].tokens, d[k].tokens, (size_t)a[k].n * 100 * sizeof(int32_t));
        assert_memory_equal(a[k].labels, d[k].labels, (size_t)a[k].n * sizeof(int32_t));
    }
    assert_memory_equal(a[SPLIT_TRAIN].tokens, d[SPLIT_TRAIN].tokens, 120 * 100 * sizeof(int32_t));
    free_splits(a), free_splits(b), free_splits(c), free_splits(d);
}

/* Every property of generated data at one setting; returns the stats. */
static listops_stats check_generated(const listops_params *p, int seq_len, uint64_t seed, task_split s[N_SPLITS]) {
    listops_stats st;
    gen_ok(p, seq_len, seed, s, &st);
    int lo, hi;
    listops_resolve_bounds(p, seq_len, &lo, &hi);
    assert_int_equal(st.min_length, lo);
    assert_int_equal(st.max_length, hi);
    const int want[N_SPLITS] = {p->n_train, p->n_val, p->n_test};
    for (int k = 0; k < N_SPLITS; k++) {
        assert_int_equal(s[k].n, want[k]);
        assert_int_equal(s[k].seq_len, seq_len);
        assert_int_equal(s[k].n_inputs, 1);
        for (int i = 0; i < s[k].n; i++) {
            const int32_t *r = row_ptr(&s[k], i);
            int n = row_len(&s[k], i);
            assert_true(n > lo);
            assert_true(n < hi);
            for (int j = n; j < seq_len; j++) assert_int_equal(r[j], 0); /* right padding */
            for (int j = 0; j < n; j++) assert_true(r[j] >= 1 && r[j] < 16);
            assert_true(s[k].labels[i] >= 0 && s[k].labels[i] <= 9);
            assert_true(op_depth(r, n) <= p->max_depth - 1); /* digits at depth max_depth */
            char *src = listops_to_source(r, n);
            assert_non_null(src);
            assert_int_equal(ref_eval_source(src, r, n), s[k].labels[i]);
            free(src);
        }
    }
    assert_int_equal(count_duplicates(s), 0);
    assert_int_equal(st.accepted, p->n_train + p->n_val + p->n_test);
    assert_int_equal(st.draws, st.accepted + st.too_short + st.too_long + st.duplicates);
    return st;
}

static void test_generate_properties(void **state) {
    (void)state;
    listops_params p = small_params(400, 50, 50, 6, 8);
    p.min_length = 30;
    p.max_length = 150;
    task_split s[N_SPLITS];
    listops_stats st = check_generated(&p, 160, 1, s);
    print_message("depth 6, args 8, 30 < len < 150: %lld draws, acceptance %.2f%% (short %.1f%%, long %.1f%%, dup %lld)\n",
                  st.draws, 100.0 * (double)st.accepted / (double)st.draws, 100.0 * (double)st.too_short / (double)st.draws,
                  100.0 * (double)st.too_long / (double)st.draws, st.duplicates);
    free_splits(s);
}

/* Tiny space of trees: duplicates must be rejected, across splits too. */
static void test_generate_dedup(void **state) {
    (void)state;
    listops_params p = small_params(150, 30, 30, 2, 2); /* trees [OP a b]: 4 * 100 = 400 distinct */
    p.min_length = 3;
    p.max_length = 5;
    task_split s[N_SPLITS];
    listops_stats st = check_generated(&p, 8, 3, s);
    assert_true(st.duplicates > 0);
    print_message("400 possible trees, 210 drawn: %lld duplicates rejected\n", st.duplicates);
    free_splits(s);
    /* asking for more unique trees than exist runs out of draws with a clear error */
    p.n_train = 400;
    p.max_tries = 200000;
    task_split t[N_SPLITS] = {0};
    char err[1024];
    assert_int_equal(listops_generate(&p, 8, 3, t, &st, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.max_tries"));
    assert_non_null(strstr(err, "duplicates"));
    assert_null(t[0].tokens);
    assert_int_equal(st.draws, 200000);
}

static void test_label_distribution(void **state) {
    (void)state;
    /* LRA-like at a fraction of the size: depth 6, 10 args, 50 < len < 200 */
    listops_params p = small_params(800, 100, 100, 6, 10);
    p.min_length = 50;
    p.max_length = 200;
    task_split s[N_SPLITS];
    listops_stats st = check_generated(&p, 200, 11, s);
    int cnt[10] = {0}, total = 0, root[5][10] = {{0}}, root_n[5] = {0};
    for (int k = 0; k < N_SPLITS; k++)
        for (int i = 0; i < s[k].n; i++) {
            int l = s[k].labels[i], op = row_ptr(&s[k], i)[0];
            cnt[l]++, total++;
            assert_true(op >= 1 && op <= 4); /* min_length > 1: the root is an operator */
            root[op][l]++, root_n[op]++;
        }
    double f0 = (double)cnt[0] / total, f9 = (double)cnt[9] / total, mid = 0;
    for (int d = 1; d <= 8; d++) mid += (double)cnt[d] / total / 8;
    print_message("labels (n=%d, acceptance %.2f%%): 0: %.1f%%, 9: %.1f%%, 1..8 mean %.1f%%; counts", total,
                  100.0 * (double)st.accepted / (double)st.draws, 100 * f0, 100 * f9, 100 * mid);
    for (int d = 0; d < 10; d++) print_message(" %d", cnt[d]);
    print_message("\n");
    /* LRA: 0 ~ 17.1%, 9 ~ 17.3%, others 7.6-9.1% (measured here: 15.5 / 16.8 / 7.0-10.2 at 3000
     * examples; at LRA's own settings this generator gives 17.4 / 16.6 with 8.2% acceptance) */
    assert_true(f0 > 0.12 && f0 < 0.25);
    assert_true(f9 > 0.12 && f9 < 0.25);
    assert_true(mid > 0.05 && mid < 0.10);
    for (int d = 1; d <= 8; d++) assert_true(cnt[d] < cnt[0] && cnt[d] < cnt[9]);
    /* the skew comes from MIN (-> 0) and MAX (-> 9); the root operator is roughly uniform */
    for (int op = 1; op <= 4; op++) assert_true(root_n[op] > total / 8);
    /* P(0 | root MIN) and P(9 | root MAX) are about 0.55 (0.1 for a uniform label) */
    print_message("P(0 | MIN) %.2f, P(9 | MAX) %.2f, P(0 | SM) %.2f, P(0 | MED) %.2f\n",
                  (double)root[LISTOPS_MIN][0] / root_n[LISTOPS_MIN], (double)root[LISTOPS_MAX][9] / root_n[LISTOPS_MAX],
                  (double)root[LISTOPS_SM][0] / root_n[LISTOPS_SM], (double)root[LISTOPS_MED][0] / root_n[LISTOPS_MED]);
    assert_true(root[LISTOPS_MIN][0] > root_n[LISTOPS_MIN] * 2 / 5);
    assert_true(root[LISTOPS_MAX][9] > root_n[LISTOPS_MAX] * 2 / 5);
    assert_true(root[LISTOPS_SM][0] < root_n[LISTOPS_SM] / 4);
    assert_true(root[LISTOPS_MED][0] < root_n[LISTOPS_MED] / 4);
    free_splits(s);
}

static void test_tsv_round_trip(void **state) {
    (void)state;
    listops_params p = small_params(200, 30, 30, 5, 6);
    p.min_length = 16;
    p.max_length = 90;
    task_split s[N_SPLITS];
    gen_ok(&p, 96, 5, s, NULL);
    char dir[512], err[1024] = "";
    snprintf(dir, sizeof dir, "%s/rt/sub", tmpdir());
    int rc = listops_write_tsv(dir, NULL, s, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    for (int k = 0; k < N_SPLITS; k++) {
        char f[600];
        snprintf(f, sizeof f, "%s/basic_%s.tsv", dir, split_names[k]);
        task_split l;
        rc = listops_load_tsv(f, 96, 0, &l, err, sizeof err);
        if (rc) print_error("%s\n", err);
        assert_int_equal(rc, 0);
        assert_int_equal(l.n, s[k].n);
        assert_int_equal(l.seq_len, 96);
        assert_int_equal(l.n_inputs, 1);
        assert_memory_equal(l.tokens, s[k].tokens, (size_t)l.n * 96 * sizeof(int32_t));
        assert_memory_equal(l.labels, s[k].labels, (size_t)l.n * sizeof(int32_t));
        task_split_free(&l);
    }
    /* the first data line is the LRA form of the first training example */
    char f[600], line[8192];
    snprintf(f, sizeof f, "%s/basic_train.tsv", dir);
    FILE *fp = fopen(f, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "Source\tTarget\n");
    assert_non_null(fgets(line, sizeof line, fp));
    fclose(fp);
    char *src = listops_to_source(row_ptr(&s[SPLIT_TRAIN], 0), 96), want[8192];
    snprintf(want, sizeof want, "%s\t%d\n", src, s[SPLIT_TRAIN].labels[0]);
    assert_string_equal(line, want);
    free(src);

    /* through the task: path as a directory and as a prefix, with n_* capping the rows, and a
     * shorter seq_len truncating */
    for (int form = 0; form < 2; form++) {
        listops_params q = small_params(50, 30, 7, 10, 10);
        snprintf(q.path, sizeof q.path, form ? "%s/basic" : "%s", dir);
        task_env env = {.seed = 99, .seq_len = 40, .base_dir = "/nonexistent", .data_dir = "/nonexistent"};
        task_split l[N_SPLITS] = {{0}};
        rc = task_listops.build(&q, &env, l, err, sizeof err);
        if (rc) print_error("%s\n", err);
        assert_int_equal(rc, 0);
        assert_int_equal(l[SPLIT_TRAIN].n, 50);
        assert_int_equal(l[SPLIT_VAL].n, 30);
        assert_int_equal(l[SPLIT_TEST].n, 7);
        for (int k = 0; k < N_SPLITS; k++)
            for (int i = 0; i < l[k].n; i++) {
                assert_memory_equal(row_ptr(&l[k], i), row_ptr(&s[k], i), 40 * sizeof(int32_t));
                assert_int_equal(l[k].labels[i], s[k].labels[i]);
            }
        free_splits(l);
    }
    /* relative path resolved against data_dir */
    {
        listops_params q = small_params(5, 5, 5, 10, 10);
        snprintf(q.path, sizeof q.path, "rt/sub");
        task_env env = {.seed = 0, .seq_len = 96, .base_dir = "/nonexistent", .data_dir = tmpdir()};
        task_split l[N_SPLITS] = {{0}};
        assert_int_equal(task_listops.build(&q, &env, l, err, sizeof err), 0);
        assert_int_equal(l[SPLIT_TEST].n, 5);
        free_splits(l);
    }
    free_splits(s);
}

/* The loader also takes the cleaned form, `X` for `]`, CRLF and blank lines; a wrong label is data. */
static void test_load_variants(void **state) {
    (void)state;
    char f[600], err[1024] = "";
    snprintf(f, sizeof f, "%s/variants.tsv", tmpdir());
    write_file(f, "Source\tTarget\r\n"
                  "( ( ( ( [MAX 2 ) ( ( ( [MIN 3 ) 1 ) ] ) ) 9 ) ] )\t9\r\n"
                  "[MAX 2 [MIN 3 1 ] 9 ]\t9\r\n"
                  "\r\n"
                  "[MAX 2 [MIN 3 1 X 9 X\t3\r\n"
                  "7\t7\n");
    task_split l;
    int rc = listops_load_tsv(f, 12, 0, &l, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(l.n, 4);
    const int32_t want[12] = {2, 8, 1, 9, 7, 5, 15, 5, 0, 0, 0, 0};
    for (int i = 0; i < 3; i++) assert_memory_equal(row_ptr(&l, i), want, sizeof want);
    assert_int_equal(l.labels[0], 9);
    assert_int_equal(l.labels[2], 3); /* not the value, kept as given */
    assert_int_equal(row_ptr(&l, 3)[0], 13);
    assert_int_equal(row_len(&l, 3), 1);
    task_split_free(&l);
    /* max_rows and truncation */
    rc = listops_load_tsv(f, 5, 2, &l, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(l.n, 2);
    assert_memory_equal(row_ptr(&l, 1), want, 5 * sizeof(int32_t));
    task_split_free(&l);
}

/* Long lines (several KiB, past the reader's first buffer) and gzip-compressed files. */
static void test_load_long_and_gz(void **state) {
    (void)state;
    listops_params p = small_params(12, 3, 3, 10, 10);
    p.min_length = 1200;
    task_split s[N_SPLITS];
    gen_ok(&p, 2000, 21, s, NULL); /* LRA's tree, 1200 < len < 2000 */
    char dir[300], err[1024] = "", f[400], gz[420];
    snprintf(dir, sizeof dir, "%s/long", tmpdir());
    assert_int_equal(listops_write_tsv(dir, "basic", s, err, sizeof err), 0);
    snprintf(f, sizeof f, "%s/basic_train.tsv", dir);
    size_t longest = 0;
    for (int i = 0; i < s[SPLIT_TRAIN].n; i++) {
        char *src = listops_to_source(row_ptr(&s[SPLIT_TRAIN], i), 2000);
        longest = LRA_MAX(longest, strlen(src));
        free(src);
    }
    print_message("longest Source line: %zu bytes\n", longest);
    assert_true(longest > 8192); /* past the reader's first 4 KiB buffer, twice */
    /* compress it: FILE.gz is read when FILE is absent, and FILE.gz can be named directly */
    snprintf(gz, sizeof gz, "%s.gz", f);
    FILE *in = fopen(f, "rb");
    gzFile out = gzopen(gz, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(gzwrite(out, buf, (unsigned)got), (int)got);
    fclose(in);
    assert_int_equal(gzclose(out), Z_OK);
    assert_int_equal(remove(f), 0);
    for (int named = 0; named < 2; named++) {
        task_split l;
        int rc = listops_load_tsv(named ? gz : f, 2000, 0, &l, err, sizeof err);
        if (rc) print_error("%s\n", err);
        assert_int_equal(rc, 0);
        assert_int_equal(l.n, 12);
        assert_memory_equal(l.tokens, s[SPLIT_TRAIN].tokens, 12 * 2000 * sizeof(int32_t));
        assert_memory_equal(l.labels, s[SPLIT_TRAIN].labels, 12 * sizeof(int32_t));
        task_split_free(&l);
    }
    /* a truncated .gz is a read error at the line that could not be read, not a short file */
    {
        FILE *g = fopen(gz, "rb");
        assert_non_null(g);
        fseek(g, 0, SEEK_END);
        long size = ftell(g);
        rewind(g);
        char *bytes = malloc((size_t)size);
        assert_int_equal(fread(bytes, 1, (size_t)size, g), (size_t)size);
        fclose(g);
        char cut[440];
        snprintf(cut, sizeof cut, "%s/cut.tsv.gz", dir);
        g = fopen(cut, "wb");
        fwrite(bytes, 1, (size_t)size / 2, g);
        fclose(g);
        free(bytes);
        task_split l;
        int rc = listops_load_tsv(cut, 2000, 0, &l, err, sizeof err);
        print_message("truncated gz: %s\n", err);
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err, "read error"));
        assert_true(strncmp(err, cut, strlen(cut)) == 0);
        remove(cut);
    }
    /* and through the task with the directory as path */
    listops_params q = small_params(100, 100, 100, 10, 10);
    snprintf(q.path, sizeof q.path, "%s", dir);
    task_env env = {.seed = 0, .seq_len = 2000, .base_dir = ".", .data_dir = "data"};
    task_split l[N_SPLITS] = {{0}};
    assert_int_equal(task_listops.build(&q, &env, l, err, sizeof err), 0);
    assert_true(splits_equal(l, s));
    free_splits(l);
    free_splits(s);
}

static void expect_load_error(const char *name, const char *content, int line, const char *reason) {
    char f[600], err[1024] = "", loc[700];
    snprintf(f, sizeof f, "%s/%s", tmpdir(), name);
    if (content) write_file(f, content);
    task_split l;
    memset(&l, 0xab, sizeof l);
    int rc = listops_load_tsv(f, 32, 0, &l, err, sizeof err);
    if (rc != -1 || !strstr(err, reason)) print_error("%s: got rc %d, '%s'\n", name, rc, err);
    assert_int_equal(rc, -1);
    if (line > 0) snprintf(loc, sizeof loc, "%s:%d: ", f, line);
    else snprintf(loc, sizeof loc, "%s: ", f);
    if (strncmp(err, loc, strlen(loc)) != 0) print_error("%s: expected prefix '%s', got '%s'\n", name, loc, err);
    assert_true(strncmp(err, loc, strlen(loc)) == 0);
    assert_non_null(strstr(err, reason));
    assert_int_equal(l.n, 0);
    assert_null(l.tokens);
    assert_null(l.labels);
}

static void test_load_errors(void **state) {
    (void)state;
    const char *H = "Source\tTarget\n", *OK = "[MIN 1 2 ]\t1\n";
    char buf[1024];
    expect_load_error("missing.tsv", NULL, 0, "cannot open");
    expect_load_error("empty.tsv", "", 1, "missing header");
    expect_load_error("noheader.tsv", "[MIN 1 2 ]\t1\n", 1, "missing header");
    expect_load_error("badheader.tsv", "Source\tLabel\n[MIN 1 2 ]\t1\n", 1, "wrong header");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "[MIN 1 2 ]\t1\textra\n");
    expect_load_error("cols3.tsv", buf, 3, "wrong column count");
    snprintf(buf, sizeof buf, "%s%s%s%s", H, OK, OK, "[MIN 1 2 ] 1\n");
    expect_load_error("cols1.tsv", buf, 4, "wrong column count");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "( ( [MIN 1 ) 2x ) ] )\t1\n");
    expect_load_error("unknown.tsv", buf, 3, "unknown token '2x'");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "[MEAN 1 2 ]\t1\n");
    expect_load_error("unknown2.tsv", buf, 3, "unknown token '[MEAN'");
    snprintf(buf, sizeof buf, "%s%s", H, "[MIN 1 [MAX 2 3 ]\t1\n");
    expect_load_error("unclosed.tsv", buf, 2, "unbalanced brackets");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "[MIN 1 2 ] ]\t1\n");
    expect_load_error("extraclose.tsv", buf, 3, "unbalanced brackets");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "( ( ( [MIN 1 ) 2 ) ] \t1\n");
    expect_load_error("parens.tsv", buf, 3, "unbalanced parentheses");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "[MIN 1 2 ]\tx\n");
    expect_load_error("labelx.tsv", buf, 3, "label 'x' is not an integer in 0..9");
    snprintf(buf, sizeof buf, "%s%s%s%s", H, OK, OK, "[MIN 1 2 ]\t10\n");
    expect_load_error("label10.tsv", buf, 4, "label '10' is not an integer in 0..9");
    snprintf(buf, sizeof buf, "%s%s", H, "[MIN 1 2 ]\t-1\n");
    expect_load_error("labelneg.tsv", buf, 2, "not an integer in 0..9");
    snprintf(buf, sizeof buf, "%s%s", H, "[MIN 1 2 ]\t\n");
    expect_load_error("labelempty.tsv", buf, 2, "not an integer in 0..9");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "\t3\n");
    expect_load_error("emptysrc.tsv", buf, 3, "empty Source");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "( )\t3\n");
    expect_load_error("emptysrc2.tsv", buf, 3, "empty Source");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "[MIN ]\t3\n");
    expect_load_error("noargs.tsv", buf, 3, "operator '[MIN' has no arguments");
    snprintf(buf, sizeof buf, "%s%s%s", H, OK, "[MIN 1 2 ] 4\t3\n");
    expect_load_error("twoexpr.tsv", buf, 3, "more than one expression");
    expect_load_error("headeronly.tsv", H, 1, "no examples");
}

static void test_validate(void **state) {
    (void)state;
    char err[1024];
    task_env env = {.seed = 0, .seq_len = 2000, .base_dir = ".", .data_dir = "data"};
    listops_params p = defaults();
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), 0);
    p.min_length = 300;
    p.max_length = 301;
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), -1);
    assert_true(strncmp(err, "task.min_length: ", 17) == 0);
    p.max_length = 302; /* 301 is the one length allowed */
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), 0);
    /* auto bounds from a tiny seq_len: seq_len 2 -> 0 < L < 2 (single digits only) is satisfiable */
    p = defaults();
    env.seq_len = 2;
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), 0);
    /* depth too small for min_length: longest tree at depth 3, 4 args is 2 + 4 * (2 + 4) = 26 */
    p = small_params(10, 10, 10, 3, 4);
    env.seq_len = 128;
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), -1);
    assert_true(strncmp(err, "task.min_length: ", 17) == 0);
    assert_non_null(strstr(err, "(26 tokens)"));
    p.min_length = 25;
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), 0);
    p.op_prob = 0;
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), -1);
    assert_non_null(strstr(err, "task.min_length"));
    /* path that does not exist */
    p = defaults();
    snprintf(p.path, sizeof p.path, "/nonexistent/listops-1000");
    assert_int_equal(task_listops.validate(&p, &env, err, sizeof err), -1);
    assert_true(strncmp(err, "task.path: ", 11) == 0);
    task_split s[N_SPLITS] = {{0}};
    assert_int_equal(task_listops.build(&p, &env, s, err, sizeof err), -1);
    assert_true(strncmp(err, "task.path: ", 11) == 0);
    /* a directory with only the training file: the missing split names its file */
    char dir[300], f[700];
    snprintf(dir, sizeof dir, "%s/partial", tmpdir());
    mkdir(dir, 0777);
    snprintf(f, sizeof f, "%s/basic_train.tsv", dir);
    write_file(f, "Source\tTarget\n[MIN 1 2 ]\t1\n");
    snprintf(p.path, sizeof p.path, "%s", dir);
    assert_int_equal(task_listops.build(&p, &env, s, err, sizeof err), -1);
    snprintf(f, sizeof f, "%s/basic_val.tsv: cannot open", dir);
    assert_non_null(strstr(err, f));
    for (int k = 0; k < N_SPLITS; k++) assert_null(s[k].tokens);
}

static void test_short_variants(void **state) {
    (void)state;
    /* seq_len 64, max_depth 3 (auto bounds 16 < len < 64) */
    listops_params p = small_params(1000, 100, 100, 3, 10);
    task_split s[N_SPLITS];
    double t0 = lra_now();
    listops_stats st = check_generated(&p, 64, 0, s);
    double dt = lra_now() - t0;
    print_message("seq_len 64, depth 3, args 10: %lld draws, acceptance %.2f%%, majority %.1f%%, %.3f s incl. checks\n",
                  st.draws, 100.0 * (double)st.accepted / (double)st.draws,
                  100 * task_majority_rate(&s[SPLIT_TRAIN], 10), dt);
    free_splits(s);
    /* the quickstart-like setting: seq_len 128, depth 4, args 5 (auto bounds 32 < len < 128) */
    p = small_params(1500, 200, 200, 4, 5);
    t0 = lra_now();
    gen_ok(&p, 128, 0, s, &st);
    dt = lra_now() - t0;
    print_message("seq_len 128, depth 4, args 5, op_prob 0.25: %lld draws, acceptance %.3f%% (short %.2f%%, long %.3f%%, dup %lld), "
                  "train majority %.1f%%, generate %.3f s\n",
                  st.draws, 100.0 * (double)st.accepted / (double)st.draws, 100.0 * (double)st.too_short / (double)st.draws,
                  100.0 * (double)st.too_long / (double)st.draws, st.duplicates, 100 * task_majority_rate(&s[SPLIT_TRAIN], 10), dt);
    assert_int_equal(s[SPLIT_TRAIN].n, 1500);
    double maj = task_majority_rate(&s[SPLIT_TRAIN], 10);
    assert_true(maj > 0.1 && maj < 0.35);
    free_splits(s);
    /* the suggested quickstart setting: LRA's 10 arguments, depth 5 (lengths 33..127) */
    p = small_params(1500, 200, 200, 5, 10);
    t0 = lra_now();
    gen_ok(&p, 128, 0, s, &st);
    dt = lra_now() - t0;
    print_message("seq_len 128, depth 5, args 10, op_prob 0.25: acceptance %.2f%%, train majority %.1f%%, generate %.3f s\n",
                  100.0 * (double)st.accepted / (double)st.draws, 100 * task_majority_rate(&s[SPLIT_TRAIN], 10), dt);
    maj = task_majority_rate(&s[SPLIT_TRAIN], 10);
    assert_true(maj > 0.12 && maj < 0.25);
    free_splits(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_table),
        cmocka_unit_test(test_serialise_lra_example),
        cmocka_unit_test(test_eval_cases),
        cmocka_unit_test(test_generate_determinism),
        cmocka_unit_test(test_generate_properties),
        cmocka_unit_test(test_generate_dedup),
        cmocka_unit_test(test_label_distribution),
        cmocka_unit_test(test_tsv_round_trip),
        cmocka_unit_test(test_load_variants),
        cmocka_unit_test(test_load_long_and_gz),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_short_variants),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (tmpdir_path[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir_path);
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir_path);
    }
    return rc;
}
