/* listops.c - the ListOps task: LRA's generator, its TSV format, an evaluator.
 *
 * Source: Tay et al., "Long Range Arena", arXiv 2011.04006, task 1 (ListOps, after Nangia &
 * Bowman, "ListOps: A Diagnostic Dataset for Latent Tree Learning", arXiv 1804.06028), generator
 * lra_benchmarks/data/listops.py (see /work/shared/reference/lra.md sections 1.1 and 2).
 *
 * The sampler is LRA's generate_tree(depth=1):
 *   if depth < max_depth: r ~ U[0,1) else r = 1;
 *   r >= op_prob (LRA: r > VALUE_P = 0.25)  -> a uniform digit 0..9, length 1;
 *   otherwise k ~ U{2..max_args} children at depth+1, then an operator uniform over
 *   MIN, MAX, MED, SM; length = 2 (operator and `]`) + the children's lengths.
 * A tree is kept iff min_length < length < max_length (strict) and it was not drawn before.
 * One difference that does not change the distribution of kept trees: a tree is abandoned as soon
 * as its length reaches max_length (LRA finishes it and then rejects it), which bounds time and
 * memory at any depth. Randomness is our counter-based generator (stream RNG_DATA), not Python's
 * unseeded `random`, so a seed reproduces the data exactly.
 *
 * Labels: MIN, MAX; MED = int(np.median(args)) (truncated mean of the two middle values for an
 * even count; values are non-negative so this is a floor); SM = sum % 10.
 */
#include "listops.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../lra/common.h"
#include "../lra/rng.h"

/* ------------------------------------------------------------------------------------------ */
/* Vocabulary                                                                                  */

static const char *const op_names[5] = {NULL, "[MIN", "[MAX", "[MED", "[SM"};

static int is_op(int32_t t) { return t >= LISTOPS_MIN && t <= LISTOPS_SM; }
static int is_digit(int32_t t) { return t >= LISTOPS_DIGIT0 && t < LISTOPS_DIGIT0 + 10; }

/* ------------------------------------------------------------------------------------------ */
/* Evaluator                                                                                   */

/* One open operator while scanning prefix tokens: a histogram of its (digit) arguments is enough
 * for MIN, MAX, MED and SM. */
typedef struct {
    int op;
    int nargs;
    int sum;
    int cnt[10];
} eval_frame;

static int frame_value(const eval_frame *f) {
    int lo = 0, hi = 9;
    switch (f->op) {
    case LISTOPS_MIN:
        while (!f->cnt[lo]) lo++;
        return lo;
    case LISTOPS_MAX:
        while (!f->cnt[hi]) hi--;
        return hi;
    case LISTOPS_SM:
        return f->sum % 10;
    default: { /* MED: the k-th smallest for k = (n-1)/2 and n/2 (0-based) */
        int k1 = (f->nargs - 1) / 2, k2 = f->nargs / 2, a = -1, b = -1, seen = 0;
        for (int d = 0; d < 10 && b < 0; d++) {
            seen += f->cnt[d];
            if (a < 0 && seen > k1) a = d;
            if (seen > k2) b = d;
        }
        return (a + b) / 2;
    }
    }
}

int listops_eval(const int32_t *tokens, int n) {
    eval_frame small[64];
    eval_frame *st = small;
    int cap = 64, sp = 0, result = -1, done = 0;
    for (int i = 0; i < n && tokens[i] != LISTOPS_PAD; i++) {
        int32_t t = tokens[i];
        if (done) { result = -1; goto out; } /* trailing tokens after a complete expression */
        if (is_op(t)) {
            if (sp == cap) {
                eval_frame *bigger = xmalloc(2 * (size_t)cap * sizeof *bigger);
                memcpy(bigger, st, (size_t)cap * sizeof *st);
                if (st != small) free(st);
                st = bigger;
                cap *= 2;
            }
            memset(&st[sp], 0, sizeof st[sp]);
            st[sp++].op = t;
            continue;
        }
        int v;
        if (is_digit(t)) {
            v = t - LISTOPS_DIGIT0;
        } else if (t == LISTOPS_CLOSE) {
            if (sp == 0 || st[sp - 1].nargs == 0) { result = -1; goto out; }
            v = frame_value(&st[--sp]);
        } else {
            result = -1;
            goto out;
        }
        if (sp == 0) {
            result = v;
            done = 1;
        } else {
            eval_frame *f = &st[sp - 1];
            f->nargs++;
            f->sum += v;
            f->cnt[v]++;
        }
    }
    if (!done || sp) result = -1;
out:
    if (st != small) free(st);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* Serialiser                                                                                  */

typedef struct {
    char *s;
    size_t len, cap;
} strbuf;

static void sb_word(strbuf *b, const char *w) {
    size_t n = strlen(w), need = b->len + n + 2;
    if (need > b->cap) {
        b->cap = LRA_MAX(need, 2 * b->cap + 64);
        b->s = xrealloc(b->s, b->cap);
    }
    if (b->len) b->s[b->len++] = ' ';
    memcpy(b->s + b->len, w, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* Length of the token sequence up to the first padding id. */
static int content_len(const int32_t *tokens, int n) {
    int m = 0;
    while (m < n && tokens[m] != LISTOPS_PAD) m++;
    return m;
}

char *listops_to_source(const int32_t *tokens, int n) {
    n = content_len(tokens, n);
    if (n == 0 || listops_eval(tokens, n) < 0) return NULL; /* also checks the structure */
    /* Pass 1: the number of arguments of the operator at each position. */
    int *nargs = xcalloc((size_t)n, sizeof *nargs);
    int *stack = xmalloc((size_t)n * sizeof *stack);
    int sp = 0;
    for (int i = 0; i < n; i++) {
        if (is_op(tokens[i])) {
            if (sp) nargs[stack[sp - 1]]++;
            stack[sp++] = i;
        } else if (is_digit(tokens[i])) {
            if (sp) nargs[stack[sp - 1]]++;
        } else { /* close */
            sp--;
        }
    }
    /* Pass 2: LRA's to_string of the left-nested tuples ((((op, a1), a2) ...), an), ']'): every
     * operator opens nargs+1 parentheses, every finished argument closes one, and `]` closes the
     * last. */
    strbuf b = {0};
    char digit[2] = {0, 0};
    sp = 0;
    for (int i = 0; i < n; i++) {
        int32_t t = tokens[i];
        if (is_op(t)) {
            for (int k = 0; k <= nargs[i]; k++) sb_word(&b, "(");
            sb_word(&b, op_names[t]);
            stack[sp++] = i;
            continue;
        }
        if (is_digit(t)) {
            digit[0] = (char)('0' + (t - LISTOPS_DIGIT0));
            sb_word(&b, digit);
        } else {
            sb_word(&b, "]");
            sb_word(&b, ")");
            sp--;
        }
        if (sp) sb_word(&b, ")"); /* the finished node was an argument of its parent */
    }
    free(nargs);
    free(stack);
    return b.s;
}

/* ------------------------------------------------------------------------------------------ */
/* Source parser                                                                               */

int listops_parse_source(const char *src, int32_t **tokens_out, int *n_out, char *why, size_t whylen) {
    *tokens_out = NULL;
    *n_out = 0;
    size_t slen = strlen(src);
    int32_t *tok = xmalloc((slen / 2 + 1) * sizeof *tok); /* tokens are separated by whitespace */
    int *nargs = xmalloc((slen / 2 + 1) * sizeof *nargs); /* per open operator: arguments so far */
    int32_t *opened = xmalloc((slen / 2 + 1) * sizeof *opened); /* ... and which operator */
    int n = 0, sp = 0, paren = 0, ntok = 0, done = 0, rc = -1;
    const char *p = src;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) break;
        const char *w = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') p++;
        size_t wl = (size_t)(p - w);
        ntok++;
        if (wl == 1 && *w == '(') { paren++; continue; }
        if (wl == 1 && *w == ')') {
            if (--paren < 0) {
                lra_errorf(why, whylen, "unbalanced parentheses: ')' at token %d closes nothing", ntok);
                goto out;
            }
            continue;
        }
        int32_t t = -1;
        if (wl == 1 && *w >= '0' && *w <= '9') t = LISTOPS_DIGIT0 + (*w - '0');
        else if (wl == 1 && (*w == ']' || *w == 'X')) t = LISTOPS_CLOSE;
        else
            for (int o = LISTOPS_MIN; o <= LISTOPS_SM; o++)
                if (wl == strlen(op_names[o]) && memcmp(w, op_names[o], wl) == 0) t = o;
        if (t < 0) {
            int show = (int)LRA_MIN(wl, (size_t)40);
            lra_errorf(why, whylen, "unknown token '%.*s%s' (token %d; expected ( ) [MIN [MAX [MED [SM ] X or a digit 0-9)",
                       show, w, wl > 40 ? "..." : "", ntok);
            goto out;
        }
        if (t == LISTOPS_CLOSE && sp == 0) {
            lra_errorf(why, whylen, "unbalanced brackets: ']' at token %d closes no operator", ntok);
            goto out;
        }
        if (done) {
            lra_errorf(why, whylen, "more than one expression: token %d follows a complete expression", ntok);
            goto out;
        }
        if (t == LISTOPS_CLOSE) {
            if (nargs[sp - 1] == 0) {
                lra_errorf(why, whylen, "operator '%s' has no arguments (']' at token %d)", op_names[opened[sp - 1]], ntok);
                goto out;
            }
            sp--;
        }
        if (is_op(t)) opened[sp] = t, nargs[sp++] = 0;
        else if (sp) nargs[sp - 1]++; /* a digit or a finished operator is one argument */
        else done = 1;                /* ... or the whole expression */
        tok[n++] = t;
    }
    if (n == 0) {
        lra_errorf(why, whylen, "empty Source");
        goto out;
    }
    if (sp) {
        lra_errorf(why, whylen, "unbalanced brackets: %d operator%s not closed by ']'", sp, sp == 1 ? "" : "s");
        goto out;
    }
    if (paren) {
        lra_errorf(why, whylen, "unbalanced parentheses: %d '(' not closed", paren);
        goto out;
    }
    rc = 0;
out:
    free(nargs);
    free(opened);
    if (rc) {
        free(tok);
        return -1;
    }
    *tokens_out = tok;
    *n_out = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* TSV loader                                                                                  */

/* A decompression or read error (corrupt or truncated .gz, I/O error) ends gzgets like EOF does;
 * tell them apart. */
static int stream_failed(gzFile f) {
    int zerr = Z_OK;
    gzerror(f, &zerr);
    return zerr != Z_OK && zerr != Z_STREAM_END;
}

static int read_error(gzFile f, const char *name, long lineno, char *err, size_t errlen) {
    int zerr = Z_OK;
    const char *msg = gzerror(f, &zerr);
    size_t nl = strlen(name);
    if (msg && strncmp(msg, name, nl) == 0 && msg[nl] == ':') msg += nl + 1 + (msg[nl + 1] == ' '); /* zlib prefixes the path */
    return lra_errorf(err, errlen, "%s:%ld: read error: %s", name, lineno,
                      zerr == Z_ERRNO ? strerror(errno) : (msg && *msg ? msg : "corrupt data"));
}

/* Read one line (any length) from f into *buf without the line end. Returns 1 for a line, 0 at
 * the end of the file, -1 on a read error (a partial line before it is not returned). */
static int read_line(gzFile f, char **buf, size_t *cap) {
    size_t len = 0;
    if (!*buf) {
        *cap = 4096;
        *buf = xmalloc(*cap);
    }
    for (;;) {
        if (!gzgets(f, *buf + len, (int)LRA_MIN(*cap - len, (size_t)INT_MAX))) {
            if (stream_failed(f)) return -1;
            if (len == 0) return 0;
            break; /* last line without a newline */
        }
        len += strlen(*buf + len);
        if (len && (*buf)[len - 1] == '\n') break;
        if (len + 1 < *cap) continue; /* short read without a newline: the end of the file or an error next */
        *cap *= 2;
        *buf = xrealloc(*buf, *cap);
    }
    while (len && ((*buf)[len - 1] == '\n' || (*buf)[len - 1] == '\r')) (*buf)[--len] = '\0';
    return 1;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int listops_load_tsv(const char *file, int seq_len, int max_rows, task_split *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    char gzname[PATH_MAX + 4];
    const char *open_name = file;
    if (!file_exists(file)) {
        snprintf(gzname, sizeof gzname, "%s.gz", file);
        if (file_exists(gzname)) open_name = gzname;
    }
    if (dir_exists(file)) return lra_errorf(err, errlen, "%s: cannot open: is a directory", file);
    LRA_CHECK(seq_len > 0, "seq_len %d", seq_len);
    gzFile f = gzopen(open_name, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", file, strerror(errno ? errno : ENOENT));
    char *line = NULL, why[256];
    size_t cap = 0;
    long lineno = 0;
    int n = 0, ncap = 0, rc = -1;
    int32_t *tokens = NULL, *labels = NULL;

    int got = read_line(f, &line, &cap);
    if (got <= 0) {
        if (got < 0) read_error(f, open_name, 1, err, errlen);
        else lra_errorf(err, errlen, "%s:1: missing header 'Source<TAB>Target' (the file is empty)", open_name);
        goto out;
    }
    lineno = 1;
    {
        const char *h = line;
        if ((unsigned char)h[0] == 0xEF && (unsigned char)h[1] == 0xBB && (unsigned char)h[2] == 0xBF) h += 3;
        if (strcmp(h, "Source\tTarget") != 0) {
            lra_errorf(err, errlen, "%s:1: %s header: expected 'Source<TAB>Target', got '%.40s%s'", open_name,
                       strncmp(h, "Source", 6) == 0 ? "wrong" : "missing", h, strlen(h) > 40 ? "..." : "");
            goto out;
        }
    }
    while ((max_rows <= 0 || n < max_rows) && (got = read_line(f, &line, &cap)) != 0) {
        lineno++;
        if (got < 0) {
            read_error(f, open_name, lineno, err, errlen);
            goto out;
        }
        if (!line[0]) continue;
        int ncols = 1;
        for (const char *c = line; *c; c++) ncols += *c == '\t';
        if (ncols != 2) {
            lra_errorf(err, errlen, "%s:%ld: wrong column count: expected 2 tab-separated columns (Source, Target), got %d",
                       open_name, lineno, ncols);
            goto out;
        }
        char *src = line, *tab = strchr(line, '\t'), *lab = tab + 1;
        *tab = '\0';
        size_t sl = strlen(src);
        if (sl >= 2 && src[0] == '"' && src[sl - 1] == '"') { /* a quoting CSV writer */
            src[sl - 1] = '\0';
            src++;
        }
        /* label: an integer 0..9, surrounding spaces allowed */
        char *end;
        while (*lab == ' ') lab++;
        errno = 0;
        long v = strtol(lab, &end, 10);
        while (*end == ' ') end++;
        if (end == lab || *end || errno || v < 0 || v > 9) {
            lra_errorf(err, errlen, "%s:%ld: label '%.20s' is not an integer in 0..9", open_name, lineno, lab);
            goto out;
        }
        int32_t *tok;
        int nt;
        if (listops_parse_source(src, &tok, &nt, why, sizeof why)) {
            lra_errorf(err, errlen, "%s:%ld: %s", open_name, lineno, why);
            goto out;
        }
        if (n == ncap) {
            ncap = ncap ? 2 * ncap : 1024;
            if (max_rows > 0 && ncap > max_rows) ncap = max_rows;
            tokens = xrealloc(tokens, (size_t)ncap * (size_t)seq_len * sizeof *tokens);
            labels = xrealloc(labels, (size_t)ncap * sizeof *labels);
        }
        int32_t *row = tokens + (size_t)n * (size_t)seq_len;
        int keep = LRA_MIN(nt, seq_len);
        memcpy(row, tok, (size_t)keep * sizeof *row);
        memset(row + keep, 0, (size_t)(seq_len - keep) * sizeof *row);
        labels[n++] = (int32_t)v;
        free(tok);
    }
    if (n == 0) {
        lra_errorf(err, errlen, "%s:%ld: no examples after the header", open_name, lineno);
        goto out;
    }
    out->n = n;
    out->seq_len = seq_len;
    out->n_inputs = 1;
    out->tokens = xrealloc(tokens, (size_t)n * (size_t)seq_len * sizeof *tokens);
    out->labels = xrealloc(labels, (size_t)n * sizeof *labels);
    tokens = labels = NULL;
    rc = 0;
out:
    free(tokens);
    free(labels);
    free(line);
    gzclose(f);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* TSV writer                                                                                  */

static int mkdir_p(const char *dir) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0777) && errno != EEXIST) return -1;
    return dir_exists(tmp) ? 0 : -1;
}

int listops_write_tsv(const char *dir, const char *prefix, const task_split splits[N_SPLITS], char *err,
                      size_t errlen) {
    if (!prefix) prefix = "basic";
    if (mkdir_p(dir)) return lra_errorf(err, errlen, "%s: cannot create directory: %s", dir, strerror(errno));
    for (int s = 0; s < N_SPLITS; s++) {
        char path[PATH_MAX], tmp[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/%s_%s.tsv", dir, prefix, split_names[s]);
        snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "w");
        if (!f) return lra_errorf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        fputs("Source\tTarget\n", f);
        const task_split *sp = &splits[s];
        for (int i = 0; i < sp->n; i++) {
            const int32_t *row = sp->tokens + (size_t)i * (size_t)sp->n_inputs * (size_t)sp->seq_len;
            char *src = listops_to_source(row, sp->seq_len);
            if (!src) {
                fclose(f);
                remove(tmp);
                return lra_errorf(err, errlen,
                                  "%s: %s example %d is not a complete expression (truncated to seq_len %d?)",
                                  path, split_names[s], i, sp->seq_len);
            }
            fprintf(f, "%s\t%d\n", src, (int)sp->labels[i]);
            free(src);
        }
        int bad = ferror(f);
        if (fclose(f) || bad || rename(tmp, path)) {
            int e = errno;
            remove(tmp);
            return lra_errorf(err, errlen, "%s: cannot write: %s", path, strerror(e));
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Generator                                                                                   */

typedef struct {
    rng_t rng;
    int max_depth, max_args;
    double op_prob;
    uint8_t *buf; /* the tree being drawn, prefix tokens */
    int pos;
    int limit;    /* max_length: the draw is abandoned when its length reaches it */
    int overflow;
} gen_ctx;

static void gen_push(gen_ctx *g, int t) {
    if (g->pos >= g->limit - 1) { /* this token would make length >= max_length */
        g->overflow = 1;
        return;
    }
    g->buf[g->pos++] = (uint8_t)t;
}

/* LRA's generate_tree, emitting prefix tokens; the operator slot is filled after the children
 * because LRA draws the operator after them. */
static void gen_tree(gen_ctx *g, int depth) {
    double r = depth < g->max_depth ? rng_double(&g->rng) : 1.0;
    if (!(r < g->op_prob)) {
        gen_push(g, LISTOPS_DIGIT0 + rng_int(&g->rng, 0, 9));
        return;
    }
    int k = rng_int(&g->rng, 2, g->max_args);
    int at = g->pos;
    gen_push(g, LISTOPS_MIN); /* placeholder */
    for (int i = 0; i < k && !g->overflow; i++) gen_tree(g, depth + 1);
    if (g->overflow) return;
    g->buf[at] = (uint8_t)(LISTOPS_MIN + rng_int(&g->rng, 0, 3));
    gen_push(g, LISTOPS_CLOSE);
}

/* Longest tree the sampler can make (saturating at INT_MAX). */
static long long longest_tree(int max_depth, int max_args, double op_prob) {
    if (op_prob <= 0.0) return 1;
    long long len = 1; /* depth max_depth: a digit */
    for (int d = max_depth - 1; d >= 1; d--) {
        len = 2 + (long long)max_args * len;
        if (len > INT_MAX) return INT_MAX;
    }
    return len;
}

void listops_resolve_bounds(const listops_params *p, int seq_len, int *min_len, int *max_len) {
    *min_len = p->min_length ? p->min_length : seq_len / 4;
    *max_len = p->max_length ? p->max_length : seq_len;
}

/* The accepted trees, in order, with an open-addressing hash set for de-duplication. */
typedef struct {
    uint8_t *tok;
    size_t len, cap;
    size_t *off;    /* (n+1) */
    int32_t *label; /* (n) */
    uint64_t *hash; /* (n) */
    int n;
    int32_t *table; /* indices, -1 empty; size mask+1 */
    uint64_t mask;
} tree_pool;

static int pool_insert(tree_pool *P, const uint8_t *t, int len) {
    uint64_t h = lra_fnv1a(LRA_FNV_INIT, t, (size_t)len);
    for (uint64_t i = h & P->mask;; i = (i + 1) & P->mask) {
        int32_t j = P->table[i];
        if (j < 0) {
            P->table[i] = P->n;
            break;
        }
        if (P->hash[j] == h && P->off[j + 1] - P->off[j] == (size_t)len && memcmp(P->tok + P->off[j], t, (size_t)len) == 0)
            return 0; /* duplicate */
    }
    if (P->len + (size_t)len > P->cap) {
        P->cap = LRA_MAX(P->len + (size_t)len, 2 * P->cap);
        P->tok = xrealloc(P->tok, P->cap);
    }
    memcpy(P->tok + P->len, t, (size_t)len);
    P->len += (size_t)len;
    P->hash[P->n] = h;
    P->n++;
    P->off[P->n] = P->len;
    return 1;
}

int listops_generate(const listops_params *p, int seq_len, uint64_t seed, task_split out[N_SPLITS],
                     listops_stats *stats, char *err, size_t errlen) {
    listops_stats st = {0};
    int min_len, max_len;
    listops_resolve_bounds(p, seq_len, &min_len, &max_len);
    st.min_length = min_len;
    st.max_length = max_len;
    int counts[N_SPLITS] = {p->n_train, p->n_val, p->n_test};
    long long need = (long long)p->n_train + p->n_val + p->n_test;
    LRA_CHECK(need > 0 && need < INT_MAX / 2 && max_len > 0 && seq_len > 0, "bad listops sizes");
    long long max_tries = p->max_tries > 0 ? p->max_tries : LRA_MAX(1000000LL, 1000LL * need);

    tree_pool P = {0};
    P.off = xmalloc((size_t)(need + 1) * sizeof *P.off);
    P.off[0] = 0;
    P.label = xmalloc((size_t)need * sizeof *P.label);
    P.hash = xmalloc((size_t)need * sizeof *P.hash);
    uint64_t tsize = 16;
    while (tsize < 2 * (uint64_t)need) tsize *= 2;
    P.mask = tsize - 1;
    P.table = xmalloc(tsize * sizeof *P.table);
    memset(P.table, 0xff, tsize * sizeof *P.table);
    P.cap = (size_t)need * (size_t)LRA_MIN(max_len, 256);
    P.tok = xmalloc(P.cap);

    gen_ctx g = {.rng = rng_make(seed, RNG_DATA),
                 .max_depth = p->max_depth,
                 .max_args = p->max_args,
                 .op_prob = p->op_prob,
                 .buf = xmalloc((size_t)max_len),
                 .limit = max_len};
    int32_t *row = xmalloc((size_t)max_len * sizeof *row);
    while (P.n < need) {
        if (st.draws >= max_tries) {
            double rate = st.draws ? 100.0 * (double)(st.accepted + st.duplicates) / (double)st.draws : 0.0;
            lra_errorf(err, errlen,
                       "task.max_tries: gave up after %lld draws with %d of %lld unique trees (%.4f%% of draws "
                       "in %d < length < %d: %lld too short, %lld too long, %lld duplicates); widen "
                       "task.min_length/task.max_length, raise task.max_depth, task.max_args or task.op_prob, "
                       "lower n_train/n_val/n_test, or raise task.max_tries",
                       st.draws, P.n, need, rate, min_len, max_len, st.too_short, st.too_long, st.duplicates);
            free(g.buf);
            free(row);
            free(P.tok), free(P.off), free(P.label), free(P.hash), free(P.table);
            if (stats) *stats = st;
            return -1;
        }
        st.draws++;
        g.pos = 0;
        g.overflow = 0;
        gen_tree(&g, 1);
        if (g.overflow) {
            st.too_long++;
            continue;
        }
        if (g.pos <= min_len) {
            st.too_short++;
            continue;
        }
        if (!pool_insert(&P, g.buf, g.pos)) {
            st.duplicates++;
            continue;
        }
        for (int i = 0; i < g.pos; i++) row[i] = g.buf[i];
        int v = listops_eval(row, g.pos);
        LRA_CHECK(v >= 0, "generator produced a malformed tree");
        P.label[P.n - 1] = v;
        st.accepted++;
    }
    free(g.buf);
    free(row);

    /* Carve: test first, then val, then train (see listops.h). */
    const int order[N_SPLITS] = {SPLIT_TEST, SPLIT_VAL, SPLIT_TRAIN};
    int next = 0;
    for (int o = 0; o < N_SPLITS; o++) {
        int s = order[o], n = counts[s];
        task_split *sp = &out[s];
        sp->n = n;
        sp->seq_len = seq_len;
        sp->n_inputs = 1;
        sp->tokens = xcalloc((size_t)n * (size_t)seq_len, sizeof *sp->tokens);
        sp->labels = xmalloc((size_t)n * sizeof *sp->labels);
        for (int i = 0; i < n; i++, next++) {
            const uint8_t *t = P.tok + P.off[next];
            int len = (int)(P.off[next + 1] - P.off[next]), keep = LRA_MIN(len, seq_len);
            int32_t *dst = sp->tokens + (size_t)i * (size_t)seq_len;
            for (int j = 0; j < keep; j++) dst[j] = t[j];
            sp->labels[i] = P.label[next];
        }
    }
    free(P.tok), free(P.off), free(P.label), free(P.hash), free(P.table);
    if (stats) *stats = st;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The task table                                                                              */

#define LP listops_params
static const param_def listops_schema[] = {
    P_INT(LP, n_train, "96000", 1, 100000000, "training examples (when loading: use at most this many rows)"),
    P_INT(LP, n_val, "2000", 1, 100000000, "validation examples (when loading: at most this many rows)"),
    P_INT(LP, n_test, "2000", 1, 100000000, "test examples (when loading: at most this many rows)"),
    P_INT(LP, max_depth, "10", 1, 64, "nesting cap: nodes at this depth are digits (root depth 1; LRA 10)"),
    P_INT(LP, max_args, "10", 2, 1000, "operator arguments, uniform in 2..max_args (LRA 10)"),
    P_INT(LP, min_length, "0", 0, 100000000,
          "keep trees longer than this many tokens (operators, digits, ']'); 0 = seq_len/4 (LRA: 500)"),
    P_INT(LP, max_length, "0", 0, 100000000,
          "keep trees shorter than this; 0 = seq_len, so nothing is truncated (LRA: 2000); above seq_len, long trees are truncated as in LRA"),
    P_FLOAT(LP, op_prob, "0.25", 0, 1, "probability that a node above the depth cap is an operator (LRA: 0.25)"),
    P_INT(LP, max_tries, "0", 0, 2147483647,
          "cap on sampler draws before giving up with an error; 0 = max(1e6, 1000 per example)"),
    P_STRING(LP, path, "",
             "load LRA's files instead of generating: a directory with basic_{train,val,test}.tsv or a prefix "
             "like dir/basic (relative: to the working directory, then data_dir, then the config's directory)"),
};
#undef LP

static int listops_vocab_size(const void *params) { return LISTOPS_VOCAB; }
static int listops_n_classes(const void *params) { return LISTOPS_CLASSES; }

/* Resolve task.path into the three file names; -1 with "task.path: ..." when no candidate has a
 * training file. */
static int resolve_files(const char *path, const task_env *env, char files[N_SPLITS][PATH_MAX], char *err,
                         size_t errlen) {
    char cand[3][PATH_MAX];
    int nc = 0;
    snprintf(cand[nc++], PATH_MAX, "%s", path);
    if (path[0] != '/') {
        if (env->data_dir && env->data_dir[0]) snprintf(cand[nc++], PATH_MAX, "%s/%s", env->data_dir, path);
        if (env->base_dir && env->base_dir[0]) snprintf(cand[nc++], PATH_MAX, "%s/%s", env->base_dir, path);
    }
    for (int c = 0; c < nc; c++) {
        char prefix[PATH_MAX + 8], probe[PATH_MAX + 32];
        int w = dir_exists(cand[c]) ? snprintf(prefix, sizeof prefix, "%s/basic", cand[c])
                                    : snprintf(prefix, sizeof prefix, "%s", cand[c]);
        if (w < 0 || w >= (int)sizeof prefix) continue;
        snprintf(probe, sizeof probe, "%s_train.tsv", prefix);
        int found = file_exists(probe);
        if (!found) {
            snprintf(probe, sizeof probe, "%s_train.tsv.gz", prefix);
            found = file_exists(probe);
        }
        if (!found) continue;
        for (int s = 0; s < N_SPLITS; s++)
            if (snprintf(files[s], PATH_MAX, "%s_%s.tsv", prefix, split_names[s]) >= PATH_MAX)
                return lra_errorf(err, errlen, "task.path: '%s' is too long", path);
        return 0;
    }
    char tried[3 * PATH_MAX + 16] = "";
    for (int c = 0; c < nc; c++) {
        if (c) strcat(tried, ", ");
        strncat(tried, cand[c], PATH_MAX);
    }
    return lra_errorf(err, errlen,
                      "task.path: '%s' is neither a directory holding basic_train.tsv nor a prefix P with "
                      "P_train.tsv (looked at: %s)",
                      path, tried);
}

static int listops_validate(const void *params, const task_env *env, char *err, size_t errlen) {
    const listops_params *p = params;
    int min_len, max_len;
    listops_resolve_bounds(p, env->seq_len, &min_len, &max_len);
    if (env->seq_len < 1) return lra_errorf(err, errlen, "task.seq_len: must be at least 1, got %d", env->seq_len);
    if (max_len - min_len < 2)
        return lra_errorf(err, errlen,
                          "task.min_length: no length L satisfies min_length < L < max_length with min_length %d "
                          "and max_length %d%s; min_length must be at most max_length - 2",
                          min_len, max_len, p->min_length && p->max_length ? "" : " (0 = auto from seq_len)");
    if (p->op_prob < 0 || p->op_prob > 1)
        return lra_errorf(err, errlen, "task.op_prob: must be in [0, 1], got %g", (double)p->op_prob);
    long long longest = longest_tree(p->max_depth, p->max_args, p->op_prob);
    if (longest <= min_len)
        return lra_errorf(err, errlen,
                          "task.min_length: %d is not below the longest tree that max_depth %d, max_args %d and "
                          "op_prob %g can make (%lld tokens); lower min_length or raise max_depth/max_args",
                          min_len, p->max_depth, p->max_args, (double)p->op_prob, longest);
    if (p->path[0]) {
        char files[N_SPLITS][PATH_MAX];
        if (resolve_files(p->path, env, files, err, errlen)) return -1;
    }
    return 0;
}

static int listops_build(const void *params, const task_env *env, task_split out[N_SPLITS], char *err,
                         size_t errlen) {
    const listops_params *p = params;
    if (listops_validate(params, env, err, errlen)) return -1;
    if (!p->path[0]) return listops_generate(p, env->seq_len, env->seed, out, NULL, err, errlen);
    char files[N_SPLITS][PATH_MAX];
    if (resolve_files(p->path, env, files, err, errlen)) return -1;
    const int limit[N_SPLITS] = {p->n_train, p->n_val, p->n_test};
    for (int s = 0; s < N_SPLITS; s++) {
        if (listops_load_tsv(files[s], env->seq_len, limit[s], &out[s], err, errlen)) {
            for (int k = 0; k < s; k++) task_split_free(&out[k]);
            return -1;
        }
    }
    return 0;
}

const task_ops task_listops = {
    .name = "listops",
    .summary = "ListOps: value (0-9) of a nested MIN/MAX/MED/SM expression; generated like LRA or loaded",
    .source = "Tay et al., Long Range Arena, arXiv 2011.04006; Nangia & Bowman, ListOps, arXiv 1804.06028",
    .kind = TASK_CLASSIFY,
    .schema = listops_schema,
    .n_schema = (int)(sizeof listops_schema / sizeof listops_schema[0]),
    .params_size = sizeof(listops_params),
    .vocab_size = listops_vocab_size,
    .n_classes = listops_n_classes,
    .validate = listops_validate,
    .build = listops_build,
};

_Static_assert(sizeof(listops_params) <= TASK_PARAMS_MAX, "listops_params exceeds TASK_PARAMS_MAX");
