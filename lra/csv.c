/* csv.c - RFC 4180 CSV: quoting, atomic row appends under flock, and a state-machine reader.
 *
 * Format (RFC 4180): fields separated by ',', records terminated by "\n" (we write LF; the
 * reader also accepts CRLF); a field containing ',', '"', CR or LF is enclosed in double quotes
 * and its quotes are doubled. Records may therefore span several physical lines; error messages
 * give the physical line (1-based) where the problem was found.
 *
 * Crash safety: a row is written with one write(2) while holding an exclusive flock, so writers
 * never interleave and a reader holding a shared flock sees whole rows. If a machine crash still
 * leaves a torn last row (no final newline), the reader drops it, and the next append trims it
 * back to the last complete record before writing, so the torn bytes never merge with a new row.
 *
 * Reader conventions beyond csv.h: blank lines are skipped; a last record without its newline is
 * kept only when it parses and has the header's field count (our writer always ends rows with
 * "\n", so anything shorter is a torn write); an empty file is an empty table (n_rows = 0: the
 * writer creates the file before it writes its first row); appending to a file whose header
 * differs from `header` is refused (rows of two schemas would corrupt the file for readers).
 */
#include "csv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

/* ---------------------------------------------------------------------------------------- */
/* Writing                                                                                    */

static int needs_quotes(const char *s) {
    return strpbrk(s, ",\"\r\n") != NULL;
}

/* Bytes the field takes once quoted (without NUL). */
static size_t quoted_len(const char *s) {
    size_t n = strlen(s);
    if (!needs_quotes(s)) return n;
    size_t q = 0;
    for (const char *p = s; *p; p++) q += *p == '"';
    return n + q + 2;
}

/* Write the (possibly quoted) field at dst, which has room for quoted_len(s) bytes; no NUL. */
static char *put_field(char *dst, const char *s) {
    if (!needs_quotes(s)) {
        size_t n = strlen(s);
        memcpy(dst, s, n);
        return dst + n;
    }
    *dst++ = '"';
    for (const char *p = s; *p; p++) {
        if (*p == '"') *dst++ = '"';
        *dst++ = *p;
    }
    *dst++ = '"';
    return dst;
}

int csv_quote(char *buf, size_t cap, const char *field) {
    if (!field) field = "";
    size_t len = strnlen(buf, cap);
    if (len >= cap) return -1;
    size_t q = quoted_len(field);
    if (len + q + 1 > cap) return -1;
    char *end = put_field(buf + len, field);
    *end = '\0';
    return 0;
}

char *csv_format_row(const char *const *fields, int n) {
    size_t total = 2; /* "\n" + NUL */
    for (int i = 0; i < n; i++) total += quoted_len(fields[i] ? fields[i] : "") + 1;
    total += 2; /* room for the "" of a lone empty field */
    char *out = xmalloc(total), *p = out;
    /* A one-column row with an empty field would be a blank line, which readers skip: write "". */
    if (n == 1 && (!fields[0] || !fields[0][0])) {
        *p++ = '"';
        *p++ = '"';
    } else {
        for (int i = 0; i < n; i++) {
            if (i) *p++ = ',';
            p = put_field(p, fields[i] ? fields[i] : "");
        }
    }
    *p++ = '\n';
    *p = '\0';
    return out;
}

/* Write all of buf at the end of the file (fd is O_APPEND). */
static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Offset just past the last record terminator (a LF outside quotes) of the first `size` bytes. */
static off_t last_record_end(int fd, off_t size) {
    char chunk[65536];
    off_t off = 0, end = 0;
    int in_quotes = 0;
    while (off < size) {
        size_t want = (size_t)LRA_MIN((off_t)sizeof chunk, size - off);
        ssize_t r = pread(fd, chunk, want, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        for (ssize_t i = 0; i < r; i++) {
            if (chunk[i] == '"') in_quotes = !in_quotes; /* a doubled quote toggles twice */
            else if (chunk[i] == '\n' && !in_quotes) end = off + i + 1;
        }
        off += r;
    }
    return end;
}

int csv_append_row(const char *path, const char *const *header, const char *const *fields, int n,
                   char *err, size_t errlen) {
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return lra_errorf(err, errlen, "%s: cannot open for appending: %s", path, strerror(errno));
    while (flock(fd, LOCK_EX) < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        close(fd);
        return lra_errorf(err, errlen, "%s: cannot lock: %s", path, strerror(e));
    }
    int rc = -1;
    char *head = NULL, *row = NULL, *buf = NULL, *existing = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        lra_errorf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    off_t size = st.st_size;

    /* A torn last row (machine crash mid-write) would merge with ours: trim it first. */
    if (size > 0) {
        char last;
        ssize_t r;
        do r = pread(fd, &last, 1, size - 1);
        while (r < 0 && errno == EINTR);
        if (r != 1) {
            lra_errorf(err, errlen, "%s: cannot read: %s", path, r < 0 ? strerror(errno) : "short read");
            goto done;
        }
        if (last != '\n') {
            off_t keep = last_record_end(fd, size);
            if (keep < 0 || ftruncate(fd, keep) < 0) {
                lra_errorf(err, errlen, "%s: cannot trim an incomplete last row: %s", path,
                           strerror(errno));
                goto done;
            }
            fprintf(stderr, "lra: warning: %s: removed %lld bytes of an incomplete last row\n", path,
                    (long long)(size - keep));
            size = keep;
        }
    }

    row = csv_format_row(fields, n);
    size_t row_len = strlen(row), head_len = 0;
    if (header) {
        head = csv_format_row(header, n);
        head_len = strlen(head);
    }
    if (header && size > 0) {
        /* Appending rows of another schema would corrupt the file for every reader. */
        existing = xmalloc(head_len + 1);
        ssize_t r;
        do r = pread(fd, existing, head_len, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0) {
            lra_errorf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            goto done;
        }
        if ((size_t)r != head_len || memcmp(existing, head, head_len) != 0) {
            lra_errorf(err, errlen,
                       "%s:1: the header differs from the %d columns being written (another lra "
                       "version?); move the file aside or use another results directory",
                       path, n);
            goto done;
        }
    }
    const char *out = row;
    size_t out_len = row_len;
    if (header && size == 0) {
        buf = xmalloc(head_len + row_len + 1);
        memcpy(buf, head, head_len);
        memcpy(buf + head_len, row, row_len + 1);
        out = buf;
        out_len = head_len + row_len;
    }
    if (write_all(fd, out, out_len) < 0) {
        int e = errno;
        if (ftruncate(fd, size) < 0) { /* leave no half row behind */
        }
        lra_errorf(err, errlen, "%s: write failed: %s", path, strerror(e));
        goto done;
    }
    if (fsync(fd) < 0) {
        lra_errorf(err, errlen, "%s: fsync failed: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(head);
    free(row);
    free(buf);
    free(existing);
    flock(fd, LOCK_UN);
    if (close(fd) < 0 && rc == 0) rc = lra_errorf(err, errlen, "%s: close failed: %s", path, strerror(errno));
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading                                                                                    */

typedef struct {
    char *s;
    size_t n, cap;
} strbuf;

static void sb_push(strbuf *b, char c) {
    if (b->n + 1 >= b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->s = xrealloc(b->s, b->cap);
    }
    b->s[b->n++] = c;
}

static char *sb_take(strbuf *b) {
    char *s = xmalloc(b->n + 1);
    if (b->n) memcpy(s, b->s, b->n);
    s[b->n] = '\0';
    b->n = 0;
    return s;
}

typedef struct {
    char **f;
    int n, cap;
} fieldvec;

static void fv_push(fieldvec *v, char *s) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 16;
        v->f = xrealloc(v->f, (size_t)v->cap * sizeof *v->f);
    }
    v->f[v->n++] = s;
}

static void fv_clear(fieldvec *v) {
    for (int i = 0; i < v->n; i++) free(v->f[i]);
    v->n = 0;
}

/* Read the whole file into a malloc'd buffer, under a shared flock (whole rows only). With
 * locked_fd >= 0, read that descriptor from offset 0 instead: its owner already holds the lock. */
static char *slurp(const char *path, int locked_fd, size_t *len, char *err, size_t errlen) {
    int fd = locked_fd;
    if (fd >= 0) {
        lseek(fd, 0, SEEK_SET);
    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            lra_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
            return NULL;
        }
        while (flock(fd, LOCK_SH) < 0 && errno == EINTR) {
        } /* best effort: files on filesystems without flock are still read */
    }
    size_t cap = 65536, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            lra_errorf(err, errlen, "%s: read failed: %s", path, strerror(errno));
            free(buf);
            if (locked_fd < 0) close(fd);
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (locked_fd < 0) close(fd);
    *len = n;
    return buf;
}

enum { ST_START, ST_UNQUOTED, ST_QUOTED, ST_QUOTE_IN_QUOTED };

int csv_read(const char *path, csv_table *t, char *err, size_t errlen) {
    return csv_read_fd(path, -1, t, err, errlen);
}

int csv_read_fd(const char *path, int locked_fd, csv_table *t, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    size_t n;
    char *p = slurp(path, locked_fd, &n, err, errlen);
    if (!p) return -1;
    int ends_nl = n > 0 && p[n - 1] == '\n';

    strbuf fb = {0};
    fieldvec rec = {0};
    int rows_cap = 0, line = 1, rec_line = 1, quote_line = 1, st = ST_START, rc = 0;
    char reason[160] = "";
    int bad_line = 0;
    size_t i = 0;

/* Finish the current record: the header fixes n_cols; others are checked and padded. */
#define END_RECORD()                                                                          \
    do {                                                                                      \
        if (t->n_rows > 0 && rec.n > t->n_cols) {                                             \
            snprintf(reason, sizeof reason, "%d fields, but the header has %d", rec.n, t->n_cols); \
            bad_line = rec_line;                                                              \
            goto bad;                                                                         \
        }                                                                                     \
        if (t->n_rows == 0) t->n_cols = rec.n;                                                \
        if (t->n_rows == rows_cap) {                                                          \
            rows_cap = rows_cap ? 2 * rows_cap : 64;                                          \
            t->rows = xrealloc(t->rows, (size_t)rows_cap * sizeof *t->rows);                  \
        }                                                                                     \
        char **r_ = xmalloc((size_t)t->n_cols * sizeof *r_);                                  \
        for (int c_ = 0; c_ < t->n_cols; c_++) r_[c_] = c_ < rec.n ? rec.f[c_] : xstrdup(""); \
        rec.n = 0;                                                                            \
        t->rows[t->n_rows++] = r_;                                                            \
    } while (0)

    for (; i < n; i++) {
        char c = p[i];
        if (c == '\0') {
            snprintf(reason, sizeof reason, "NUL byte in the file (binary data?)");
            bad_line = line;
            goto bad;
        }
        if (c == '\r' && st != ST_QUOTED) {
            if (i + 1 < n && p[i + 1] == '\n') {
                i++;
                c = '\n';
            } else {
                snprintf(reason, sizeof reason, "carriage return not followed by a line feed");
                bad_line = line;
                goto bad;
            }
        }
        switch (st) {
        case ST_START:
            if (rec.n == 0) rec_line = line;
            if (c == '"') {
                st = ST_QUOTED;
                quote_line = line;
            } else if (c == ',') {
                fv_push(&rec, sb_take(&fb));
            } else if (c == '\n') {
                line++;
                if (rec.n == 0) break; /* blank line: no record */
                fv_push(&rec, sb_take(&fb));
                END_RECORD();
            } else {
                sb_push(&fb, c);
                st = ST_UNQUOTED;
            }
            break;
        case ST_UNQUOTED:
            if (c == ',') {
                fv_push(&rec, sb_take(&fb));
                st = ST_START;
            } else if (c == '\n') {
                line++;
                fv_push(&rec, sb_take(&fb));
                END_RECORD();
                st = ST_START;
            } else if (c == '"') {
                snprintf(reason, sizeof reason,
                         "quote inside an unquoted field (field %d); quote the whole field and "
                         "double its quotes",
                         rec.n + 1);
                bad_line = line;
                goto bad;
            } else {
                sb_push(&fb, c);
            }
            break;
        case ST_QUOTED:
            if (c == '"') {
                st = ST_QUOTE_IN_QUOTED;
            } else {
                if (c == '\n') line++;
                sb_push(&fb, c);
            }
            break;
        case ST_QUOTE_IN_QUOTED:
            if (c == '"') {
                sb_push(&fb, '"');
                st = ST_QUOTED;
            } else if (c == ',') {
                fv_push(&rec, sb_take(&fb));
                st = ST_START;
            } else if (c == '\n') {
                line++;
                fv_push(&rec, sb_take(&fb));
                END_RECORD();
                st = ST_START;
            } else {
                snprintf(reason, sizeof reason,
                         "unexpected character '%c' after the closing quote of field %d",
                         (c >= 32 && c < 127) ? c : '?', rec.n + 1);
                bad_line = line;
                goto bad;
            }
            break;
        }
    }

    /* End of input. */
    if (st == ST_QUOTED) {
        if (ends_nl) {
            snprintf(reason, sizeof reason, "unterminated quoted field (opened on this line)");
            bad_line = quote_line;
            goto bad;
        }
        goto torn;
    }
    if (st != ST_START || rec.n > 0) {
        /* A last record without its newline: keep it only if it is complete. */
        fv_push(&rec, sb_take(&fb));
        if (t->n_rows > 0 && rec.n != t->n_cols) goto torn;
        END_RECORD();
    }
    goto finish;

bad:
    /* An error on the last physical line of a file without a final newline is a torn write. */
    if (!ends_nl && memchr(p + i, '\n', n - i) == NULL) goto torn;
    lra_errorf(err, errlen, "%s:%d: %s", path, bad_line, reason);
    rc = -1;
    goto finish;

torn:
    fv_clear(&rec);

finish:
#undef END_RECORD
    fv_clear(&rec);
    free(rec.f);
    free(fb.s);
    free(p);
    if (rc != 0) csv_free(t);
    return rc;
}

int csv_col(const csv_table *t, const char *name) {
    if (!t || t->n_rows == 0) return -1;
    for (int c = 0; c < t->n_cols; c++)
        if (strcmp(t->rows[0][c], name) == 0) return c;
    return -1;
}

void csv_free(csv_table *t) {
    if (!t) return;
    for (int r = 0; r < t->n_rows; r++) {
        for (int c = 0; c < t->n_cols; c++) free(t->rows[r][c]);
        free(t->rows[r]);
    }
    free(t->rows);
    memset(t, 0, sizeof *t);
}
