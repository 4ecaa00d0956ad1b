/* test_csv.c - RFC 4180 quoting, row formatting and reading, concurrent atomic appends, torn
 * last lines and error positions. */
#include "testutil.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lra/csv.h"

static char tmpdir[256];

static int setup_dir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lra_test_csv_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *content) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static void test_quote(void **state) {
    (void)state;
    char buf[128];
    struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"", ""},
        {"a,b", "\"a,b\""},
        {"say \"hi\"", "\"say \"\"hi\"\"\""},
        {"\"", "\"\"\"\""},
        {"two\nlines", "\"two\nlines\""},
        {"crlf\r\nend", "\"crlf\r\nend\""},
        {"cr\ronly", "\"cr\ronly\""},
        {"semi;colon and spaces", "semi;colon and spaces"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf[0] = 0;
        assert_int_equal(csv_quote(buf, sizeof buf, cases[i].in), 0);
        assert_string_equal(buf, cases[i].out);
    }
    /* Appends to what is already there. */
    strcpy(buf, "x,");
    assert_int_equal(csv_quote(buf, sizeof buf, "a,b"), 0);
    assert_string_equal(buf, "x,\"a,b\"");
    /* Too small: -1 and buf unchanged. "a,b" quoted needs 5 bytes + NUL. */
    char small[6] = "";
    assert_int_equal(csv_quote(small, 5, "a,b"), -1);
    assert_string_equal(small, "");
    assert_int_equal(csv_quote(small, 6, "a,b"), 0);
    assert_string_equal(small, "\"a,b\"");
}

static void test_format_row(void **state) {
    (void)state;
    const char *f[] = {"id", "a,b", "q\"q", "", "multi\nline"};
    char *row = csv_format_row(f, 5);
    assert_string_equal(row, "id,\"a,b\",\"q\"\"q\",,\"multi\nline\"\n");
    free(row);
    const char *empty[] = {""};
    row = csv_format_row(empty, 1);
    assert_string_equal(row, "\"\"\n"); /* not a blank line */
    free(row);
}

static void test_round_trip(void **state) {
    (void)state;
    char path[512];
    path_in(path, sizeof path, "round.csv");
    const char *header[] = {"name", "value", "note"};
    const char *rows[][3] = {
        {"plain", "1", ""},
        {"comma,inside", "\"quoted\"", "line1\nline2"},
        {"crlf", "a\r\nb", "trailing,"},
        {"", "", ""},
        {"softmax(impl=materialized,k=3)", "  spaces  ", "\"\""},
    };
    int nr = (int)(sizeof rows / sizeof rows[0]);
    char err[512];
    for (int r = 0; r < nr; r++) assert_int_equal(csv_append_row(path, header, rows[r], 3, err, sizeof err), 0);
    csv_table t;
    int rc = csv_read(path, &t, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(t.n_cols, 3);
    assert_int_equal(t.n_rows, nr + 1);
    for (int c = 0; c < 3; c++) assert_string_equal(t.rows[0][c], header[c]);
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < 3; c++) assert_string_equal(t.rows[r + 1][c], rows[r][c]);
    assert_int_equal(csv_col(&t, "value"), 1);
    assert_int_equal(csv_col(&t, "note"), 2);
    assert_int_equal(csv_col(&t, "nope"), -1);
    csv_free(&t);
    assert_int_equal(t.n_rows, 0);
    assert_null(t.rows);
}

static void test_read_crlf_and_padding(void **state) {
    (void)state;
    char path[512], err[512];
    path_in(path, sizeof path, "crlf.csv");
    /* CRLF line ends, a quoted CRLF kept verbatim, a blank line skipped, a short row padded. */
    write_file(path, "a,b,c\r\n1,\"x\r\ny\",3\r\n\r\n4,5\r\n");
    csv_table t;
    assert_int_equal(csv_read(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n_rows, 3);
    assert_string_equal(t.rows[0][2], "c");
    assert_string_equal(t.rows[1][1], "x\r\ny");
    assert_string_equal(t.rows[1][2], "3");
    assert_string_equal(t.rows[2][0], "4");
    assert_string_equal(t.rows[2][1], "5");
    assert_string_equal(t.rows[2][2], "");
    csv_free(&t);
}

/* Each child appends N rows; the parent checks one header and every row intact exactly once. */
#define N_APPEND 200
static void test_concurrent_append(void **state) {
    (void)state;
    char path[512];
    path_in(path, sizeof path, "concurrent.csv");
    const char *header[] = {"child", "i", "payload", "tail"};
    pid_t pids[2];
    int gate[2]; /* both children start when the parent closes the pipe: maximal overlap */
    assert_int_equal(pipe(gate), 0);
    for (int c = 0; c < 2; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) {
            char err[512], cs[16], is[16], payload[1200], b;
            close(gate[1]);
            if (read(gate[0], &b, 1) != 0) _exit(2);
            for (int i = 0; i < N_APPEND; i++) {
                snprintf(cs, sizeof cs, "%d", c);
                snprintf(is, sizeof is, "%d", i);
                /* ~1 KiB with commas, quotes and a newline, so a torn or interleaved write shows. */
                int n = snprintf(payload, sizeof payload, "child %d, row %d, \"quoted\"\nsecond line ", c, i);
                for (int k = n; k < 1100; k++) payload[k] = (char)('a' + (k + i + c) % 26);
                payload[1100] = 0;
                const char *f[] = {cs, is, payload, "end"};
                if (csv_append_row(path, header, f, 4, err, sizeof err) != 0) {
                    fprintf(stderr, "child %d: %s\n", c, err);
                    _exit(1);
                }
            }
            _exit(0);
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (int c = 0; c < 2; c++) {
        int st;
        assert_int_equal(waitpid(pids[c], &st, 0), pids[c]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    csv_table t;
    char err[512];
    assert_int_equal(csv_read(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n_cols, 4);
    assert_int_equal(t.n_rows, 2 * N_APPEND + 1);
    assert_string_equal(t.rows[0][0], "child");
    int seen[2][N_APPEND] = {{0}};
    int last[2] = {-1, -1};
    for (int r = 1; r < t.n_rows; r++) {
        int c = atoi(t.rows[r][0]), i = atoi(t.rows[r][1]);
        assert_true(c == 0 || c == 1);
        assert_true(i >= 0 && i < N_APPEND);
        assert_int_equal(seen[c][i], 0);
        seen[c][i] = 1;
        assert_true(i > last[c]); /* each child's rows stay in its own order */
        last[c] = i;
        char expect[64];
        snprintf(expect, sizeof expect, "child %d, row %d, \"quoted\"\nsecond line ", c, i);
        assert_int_equal(strncmp(t.rows[r][2], expect, strlen(expect)), 0);
        assert_int_equal(strlen(t.rows[r][2]), 1100);
        assert_int_equal(t.rows[r][2][1099], 'a' + (1099 + i + c) % 26);
        assert_string_equal(t.rows[r][3], "end");
    }
    csv_free(&t);
    /* The header appears exactly once in the raw file. */
    char *raw = read_file(path);
    int headers = 0;
    for (char *p = raw; (p = strstr(p, "child,i,payload,tail\n")) != NULL; p++) headers++;
    assert_int_equal(headers, 1);
    free(raw);
}

static void test_torn_last_line(void **state) {
    (void)state;
    char path[512], err[512];
    csv_table t;
    path_in(path, sizeof path, "torn.csv");
    /* Unterminated quote at the end, no final newline: dropped. */
    write_file(path, "a,b,c\n1,2,3\n4,\"5,\n6");
    assert_int_equal(csv_read(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n_rows, 2);
    assert_string_equal(t.rows[1][2], "3");
    csv_free(&t);
    /* Cut in an unquoted field: too few fields, no newline -> dropped too. */
    write_file(path, "a,b,c\n1,2,3\n4,5");
    assert_int_equal(csv_read(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n_rows, 2);
    csv_free(&t);
    /* A complete last row without its newline is kept. */
    write_file(path, "a,b,c\n1,2,3\n4,5,6");
    assert_int_equal(csv_read(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n_rows, 3);
    assert_string_equal(t.rows[2][2], "6");
    csv_free(&t);
    /* Cut right after the CR of a CRLF. */
    write_file(path, "a,b,c\r\n1,2,3\r\n4,5,6\r");
    assert_int_equal(csv_read(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n_rows, 2);
    csv_free(&t);

    /* The next append trims the torn bytes, so they never merge with the new row. */
    write_file(path, "a,b,c\n1,2,3\n4,\"5\n,");
    const char *header[] = {"a", "b", "c"}, *row[] = {"7", "8", "9"};
    assert_int_equal(csv_append_row(path, header, row, 3, err, sizeof err), 0);
    char *raw = read_file(path);
    assert_string_equal(raw, "a,b,c\n1,2,3\n7,8,9\n");
    free(raw);
}

static void test_malformed_line(void **state) {
    (void)state;
    char path[512], err[512];
    csv_table t;
    path_in(path, sizeof path, "bad.csv");
    /* Row 1 spans lines 2-3 (quoted newline), so the stray quote is on physical line 4. */
    write_file(path, "a,b,c\n1,\"x\ny\",3\n4,b\"ad,6\n7,8,9\n");
    assert_int_equal(csv_read(path, &t, err, sizeof err), -1);
    char expect[600];
    snprintf(expect, sizeof expect, "%s:4: ", path);
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "quote"));
    assert_int_equal(t.n_rows, 0);

    write_file(path, "a,b,c\n1,2,3\n\"4\"x,5,6\n7,8,9\n");
    assert_int_equal(csv_read(path, &t, err, sizeof err), -1);
    snprintf(expect, sizeof expect, "%s:3: ", path);
    assert_non_null(strstr(err, expect));

    write_file(path, "a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n");
    assert_int_equal(csv_read(path, &t, err, sizeof err), -1);
    snprintf(expect, sizeof expect, "%s:3: 4 fields, but the header has 3", path);
    assert_string_equal(err, expect);

    /* Unterminated quote in a file that ends with a newline: not a torn write, an error at the
     * line where the quote opened. */
    write_file(path, "a,b,c\n1,2,3\n4,\"5,6\n7,8,9\n");
    assert_int_equal(csv_read(path, &t, err, sizeof err), -1);
    snprintf(expect, sizeof expect, "%s:3: unterminated", path);
    assert_non_null(strstr(err, expect));

    /* An empty file (created, then the writer died before its first row) is an empty table. */
    write_file(path, "");
    assert_int_equal(csv_read(path, &t, err, sizeof err), 0);
    assert_int_equal(t.n_rows, 0);
    assert_int_equal(t.n_cols, 0);
    assert_int_equal(csv_col(&t, "a"), -1);
    csv_free(&t);
}

static void test_missing_file(void **state) {
    (void)state;
    char path[512], err[512];
    path_in(path, sizeof path, "does_not_exist.csv");
    csv_table t;
    assert_int_equal(csv_read(path, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));

    /* Appending into a missing directory names the path too. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.csv", tmpdir);
    const char *f[] = {"1"};
    assert_int_equal(csv_append_row(bad, f, f, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, bad));
}

static void test_header_mismatch(void **state) {
    (void)state;
    char path[512], err[512];
    path_in(path, sizeof path, "schema.csv");
    const char *h1[] = {"a", "b"}, *h2[] = {"a", "c"}, *row[] = {"1", "2"};
    assert_int_equal(csv_append_row(path, h1, row, 2, err, sizeof err), 0);
    assert_int_equal(csv_append_row(path, h1, row, 2, err, sizeof err), 0);
    assert_int_equal(csv_append_row(path, h2, row, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, ":1: the header differs"));
    char *raw = read_file(path);
    assert_string_equal(raw, "a,b\n1,2\n1,2\n");
    free(raw);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_format_row),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_read_crlf_and_padding),
        cmocka_unit_test(test_concurrent_append),
        cmocka_unit_test(test_torn_last_line),
        cmocka_unit_test(test_malformed_line),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_header_mismatch),
    };
    return cmocka_run_group_tests_name("csv", tests, setup_dir, teardown_dir);
}
