/* common.h - checked wrappers, the one abort path, small helpers shared by every module.
 *
 * Errors in this project come in two kinds:
 *  - user errors (bad config, bad data file, bad flag): reported with FILE:LINE[:COL] and a
 *    message through the err/errlen out-parameters of the function that found them, so the
 *    caller decides the exit status (2 for usage/config, 1 for a failed run);
 *  - programming errors and resource failures (out of memory, violated shape contract):
 *    LRA_CHECK, which is on in release builds, prints the source location and aborts.
 */
#ifndef LRA_COMMON_H
#define LRA_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LRA_VERSION "0.1.0"

#define LRA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LRA_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LRA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define LRA_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

/* Abort with file:line and a message when cond is false. Always on (not assert()). */
#define LRA_CHECK(cond, ...)                                                                  \
    do {                                                                                      \
        if (!(cond)) lra_fatal(__FILE__, __LINE__, #cond, __VA_ARGS__);                       \
    } while (0)

/* Print "lra: fatal: file:line: check `expr` failed: msg" to stderr and abort(). */
void lra_fatal(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* malloc/calloc/realloc that abort with the caller's location and the size on failure. */
#define xmalloc(n) lra_xmalloc((n), __FILE__, __LINE__)
#define xcalloc(n, s) lra_xcalloc((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) lra_xrealloc((p), (n), __FILE__, __LINE__)
void *lra_xmalloc(size_t n, const char *file, int line);
void *lra_xcalloc(size_t n, size_t s, const char *file, int line);
void *lra_xrealloc(void *p, size_t n, const char *file, int line);
char *xstrdup(const char *s);

/* snprintf into err (if non-NULL) and return -1; the usual way to report a user error. */
int lra_errorf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Wall-clock seconds from a monotonic clock. */
double lra_now(void);

/* Human-readable byte count ("12.3 MiB") into buf; returns buf. */
char *lra_fmt_bytes(double bytes, char *buf, size_t n);

/* Parse a size like "400M", "2G", "512k", "1000000" (binary multiples). -1 on error. */
long long lra_parse_size(const char *s);

/* Number of OpenMP threads in use (1 without OpenMP). */
int lra_threads(void);
void lra_set_threads(int n);

/* FNV-1a 64-bit hash of bytes, chained from h (start with LRA_FNV_INIT). */
#define LRA_FNV_INIT 0xcbf29ce484222325ULL
uint64_t lra_fnv1a(uint64_t h, const void *data, size_t n);

/* Levenshtein edit distance between two short strings (for "did you mean" hints). */
int lra_edit_distance(const char *a, const char *b);

/* If dir/file exists and is not empty, rename dir to "dir.old-YYYYmmdd-HHMMSS" (local time) so a new
 * study never overwrites an earlier one, and say so on stderr. Returns 0 (also when there was
 * nothing to move), or -1 with the reason in err when the rename fails. */
int lra_move_aside_if(const char *dir, const char *file, char *err, size_t errlen);

#endif
