/* csv.h - RFC 4180 CSV: quoting, atomic row appends, and a reader for our own files. */
#ifndef LRA_CSV_H
#define LRA_CSV_H

#include <stddef.h>

/* Append one field to buf (NUL-terminated, capacity cap), quoted if it contains a comma, quote,
 * CR or LF (quotes doubled). Returns 0, -1 if it does not fit. */
int csv_quote(char *buf, size_t cap, const char *field);

/* Format fields as one CSV line ending in "\n" into a malloc'd string. */
char *csv_format_row(const char *const *fields, int n);

/* Append one row to path atomically: open O_APPEND|O_CREAT, take an exclusive flock, write the
 * header line first if the file is empty, then the row in a single write(2), fsync, unlock.
 * A reader never sees half a row even if the process is killed. Returns 0, or -1 with err. */
int csv_append_row(const char *path, const char *const *header, const char *const *fields, int n,
                   char *err, size_t errlen);

/* A parsed CSV file: rows[0] is the header. Fields are malloc'd strings. */
typedef struct {
    int n_rows, n_cols;  /* n_cols of the header */
    char ***rows;        /* rows[r][c], c < n_cols (short rows are padded with "") */
} csv_table;

/* Read a whole CSV file (quoted fields, embedded commas/quotes/newlines). A final line without
 * a newline that does not parse (torn write) is dropped. Returns 0, or -1 with "FILE:LINE: reason". */
int csv_read(const char *path, csv_table *t, char *err, size_t errlen);
/* Same, from a descriptor of path that the caller opened and already holds a flock on (so the
 * read does not take its own lock and deadlock): reads from offset 0. */
int csv_read_fd(const char *path, int locked_fd, csv_table *t, char *err, size_t errlen);
/* Column index by header name, -1 if absent. */
int csv_col(const csv_table *t, const char *name);
void csv_free(csv_table *t);

#endif
