/* textdata.c - byte encoding, corpora, splits and CSV/TSV records for the text and retrieval
 * tasks (see textdata.h for the layouts and the conventions).
 *
 * Sources of the formats: Tay et al., "Long Range Arena", arXiv 2011.04006, and its code
 * (lra_benchmarks/text_classification/input_pipeline.py: tfds ByteTextEncoder, generic
 * {task}_{train,val,test}.tsv read with a comma delimiter and a Source,Target header; see
 * /work/shared/reference/lra.md sections 1.2 and 1.3); Maas et al. 2011, the aclImdb layout;
 * RFC 4180 (CSV quoting) and RFC 822 (headers end at the first empty line).
 */
#include "textdata.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../lra/common.h"
#include "../lra/rng.h"

/* ------------------------------------------------------------------------------------------ */
/* Bytes                                                                                       */

void textdata_encode(const uint8_t *src, size_t len, int seq_len, int32_t *dst) {
    size_t keep = LRA_MIN(len, (size_t)(seq_len > 0 ? seq_len : 0));
    for (size_t i = 0; i < keep; i++) dst[i] = (int32_t)src[i] + 1;
    for (size_t i = keep; i < (size_t)(seq_len > 0 ? seq_len : 0); i++) dst[i] = 0;
}

size_t textdata_body_offset(const uint8_t *doc, size_t len) {
    /* An empty line is a '\n' followed by '\n' or by "\r\n"; a message may also start with one. */
    if (len >= 1 && doc[0] == '\n') return 1;
    if (len >= 2 && doc[0] == '\r' && doc[1] == '\n') return 2;
    for (size_t i = 0; i + 1 < len; i++) {
        if (doc[i] != '\n') continue;
        if (doc[i + 1] == '\n') return i + 2;
        if (doc[i + 1] == '\r' && i + 2 < len && doc[i + 2] == '\n') return i + 3;
    }
    return len;
}

/* ------------------------------------------------------------------------------------------ */
/* Files and directories                                                                       */

int textdata_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int textdata_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int textdata_find_file(const char *base, const char *const *exts, char *out, size_t outlen) {
    for (int e = 0; exts[e]; e++) {
        for (int gz = 0; gz < 2; gz++) {
            char cand[PATH_MAX + 16];
            int w = snprintf(cand, sizeof cand, "%s%s%s", base, exts[e], gz ? ".gz" : "");
            if (w < 0 || (size_t)w >= sizeof cand || (size_t)w >= outlen) continue;
            if (textdata_is_file(cand)) {
                memcpy(out, cand, (size_t)w + 1);
                return 1;
            }
        }
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* The entries of dir except those starting with '.', sorted bytewise. -1 with "DIR: cannot read
 * directory: ..." in err. */
static int list_dir(const char *dir, char ***names_out, int *n_out, char *err, size_t errlen) {
    *names_out = NULL;
    *n_out = 0;
    DIR *dp = opendir(dir);
    if (!dp) return lra_errorf(err, errlen, "%s: cannot read directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = xrealloc(names, (size_t)cap * sizeof *names);
        }
        names[n++] = xstrdup(e->d_name);
    }
    int e_read = errno;
    closedir(dp);
    if (e_read) {
        free_names(names, n);
        return lra_errorf(err, errlen, "%s: cannot read directory: %s", dir, strerror(e_read));
    }
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
    *names_out = names;
    *n_out = n;
    return 0;
}

static int join_path(char *out, size_t outlen, const char *a, const char *b) {
    int w = snprintf(out, outlen, "%s/%s", a, b);
    return w >= 0 && (size_t)w < outlen ? 0 : -1;
}

/* Sorted names of the sub-directories of dir (not starting with '.'), except `skip` (may be NULL). */
static int list_subdirs(const char *dir, const char *skip, char ***out, int *n_out, char *err, size_t errlen) {
    char **names;
    int n;
    if (list_dir(dir, &names, &n, err, errlen)) return -1;
    int k = 0;
    for (int i = 0; i < n; i++) {
        char full[PATH_MAX];
        if (join_path(full, sizeof full, dir, names[i]) == 0 && textdata_is_dir(full) &&
            !(skip && strcmp(names[i], skip) == 0))
            names[k++] = names[i];
        else
            free(names[i]);
    }
    *out = names;
    *n_out = k;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Documents                                                                                   */

void textdata_docs_free(textdata_docs *d) {
    for (int i = 0; i < d->n; i++) free(d->name[i]);
    if (d->class_names) free_names(d->class_names, d->n_classes);
    free(d->bytes);
    free(d->off);
    free(d->label);
    free(d->split);
    free(d->name);
    memset(d, 0, sizeof *d);
}

static void docs_add(textdata_docs *d, const uint8_t *bytes, size_t len, int label, int split, char *name) {
    if (d->n + 1 >= d->n_cap) {
        d->n_cap = d->n_cap ? 2 * d->n_cap : 256;
        d->off = xrealloc(d->off, (size_t)(d->n_cap + 1) * sizeof *d->off);
        d->label = xrealloc(d->label, (size_t)d->n_cap * sizeof *d->label);
        d->split = xrealloc(d->split, (size_t)d->n_cap * sizeof *d->split);
        d->name = xrealloc(d->name, (size_t)d->n_cap * sizeof *d->name);
    }
    if (d->n == 0) d->off[0] = 0;
    if (d->len + len > d->cap) {
        d->cap = LRA_MAX(d->len + len, 2 * d->cap + 4096);
        d->bytes = xrealloc(d->bytes, d->cap);
    }
    if (len) memcpy(d->bytes + d->len, bytes, len);
    d->len += len;
    d->label[d->n] = label;
    d->split[d->n] = (int8_t)split;
    d->name[d->n] = name;
    d->n++;
    d->off[d->n] = d->len;
}

/* Read one document file: at most `keep` bytes of it (of its body with body_only). */
static int read_doc(const char *file, const textdata_source *src, textdata_docs *d, int label, int split, char *err,
                    size_t errlen) {
    FILE *f = fopen(file, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
    size_t limit = src->body_only || !src->keep ? SIZE_MAX : src->keep;
    size_t cap = 0, len = 0;
    uint8_t *buf = NULL;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 8192;
            buf = xrealloc(buf, cap);
        }
        size_t want = LRA_MIN(cap - len, limit - len);
        size_t got = fread(buf + len, 1, want, f);
        len += got;
        if (got < want || len >= limit) break;
    }
    int bad = ferror(f);
    int e = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return lra_errorf(err, errlen, "%s: read error: %s", file, strerror(e));
    }
    if (len == 0) {
        free(buf);
        return lra_errorf(err, errlen, "%s: empty document (a zero-byte file; remove it or fetch the data again)", file);
    }
    size_t from = src->body_only ? textdata_body_offset(buf, len) : 0, blen = len - from;
    if (blen == 0) {
        d->empty_bodies++;
        free(buf);
        return 0;
    }
    if (src->keep && blen > src->keep) blen = src->keep;
    docs_add(d, buf + from, blen, label, split, xstrdup(file));
    free(buf);
    return 0;
}

/* Every file under dir (recursively, sorted, skipping dot names) as a document. */
static int add_files(textdata_docs *d, const char *dir, int label, int split, const textdata_source *src, int depth,
                     char *err, size_t errlen) {
    if (depth > 32) return lra_errorf(err, errlen, "%s: directories nested more than 32 deep (a symlink loop?)", dir);
    char **names;
    int n;
    if (list_dir(dir, &names, &n, err, errlen)) return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char full[PATH_MAX];
        if (join_path(full, sizeof full, dir, names[i])) {
            rc = lra_errorf(err, errlen, "%s/%s: path too long", dir, names[i]);
            break;
        }
        if (textdata_is_dir(full)) rc = add_files(d, full, label, split, src, depth + 1, err, errlen);
        else if (textdata_is_file(full)) rc = read_doc(full, src, d, label, split, err, errlen);
    }
    free_names(names, n);
    return rc;
}

static int load_imdb(const textdata_source *src, textdata_docs *d, char *err, size_t errlen) {
    char train[PATH_MAX];
    if (join_path(train, sizeof train, src->path, "train")) return lra_errorf(err, errlen, "%s: path too long", src->path);
    char **classes;
    int nc;
    if (list_subdirs(train, "unsup", &classes, &nc, err, errlen)) return -1;
    if (nc == 0) {
        free(classes);
        return lra_errorf(err, errlen, "%s: no class sub-directories (expected e.g. train/neg and train/pos)", train);
    }
    d->class_names = classes;
    d->n_classes = nc;
    for (int s = 0; s < N_SPLITS; s++) {
        char sdir[PATH_MAX];
        if (join_path(sdir, sizeof sdir, src->path, split_names[s])) return lra_errorf(err, errlen, "%s: path too long", src->path);
        if (!textdata_is_dir(sdir)) continue;
        if (s != SPLIT_TRAIN) { /* every class directory of val/ and test/ must be a class of train/ */
            char **sub;
            int ns;
            if (list_subdirs(sdir, "unsup", &sub, &ns, err, errlen)) return -1;
            for (int i = 0; i < ns; i++) {
                int known = 0;
                for (int c = 0; c < nc; c++) known |= strcmp(sub[i], classes[c]) == 0;
                if (!known) {
                    lra_errorf(err, errlen, "%s/%s: class '%s' is not a class of %s (it has %d: %s%s%s)", sdir, sub[i],
                               sub[i], train, nc, classes[0], nc > 1 ? ", " : "", nc > 1 ? classes[1] : "");
                    free_names(sub, ns);
                    return -1;
                }
            }
            free_names(sub, ns);
        }
        for (int c = 0; c < nc; c++) {
            char cdir[PATH_MAX];
            if (join_path(cdir, sizeof cdir, sdir, classes[c])) return lra_errorf(err, errlen, "%s: path too long", sdir);
            if (!textdata_is_dir(cdir)) continue; /* a class may be missing from val/ or test/ */
            if (add_files(d, cdir, c, s, src, 0, err, errlen)) return -1;
        }
    }
    return 0;
}

static int load_dirs(const textdata_source *src, textdata_docs *d, char *err, size_t errlen) {
    char **classes;
    int nc;
    if (list_subdirs(src->path, NULL, &classes, &nc, err, errlen)) return -1;
    if (nc == 0) { /* a flat directory: one class */
        free(classes);
        d->class_names = xmalloc(sizeof *d->class_names);
        d->class_names[0] = xstrdup(".");
        d->n_classes = 1;
        char **names;
        int n;
        if (list_dir(src->path, &names, &n, err, errlen)) return -1;
        int rc = 0;
        for (int i = 0; i < n && !rc; i++) {
            char full[PATH_MAX];
            if (join_path(full, sizeof full, src->path, names[i]) == 0 && textdata_is_file(full))
                rc = read_doc(full, src, d, 0, -1, err, errlen);
        }
        free_names(names, n);
        return rc;
    }
    d->class_names = classes;
    d->n_classes = nc;
    for (int c = 0; c < nc; c++) {
        char cdir[PATH_MAX];
        if (join_path(cdir, sizeof cdir, src->path, classes[c])) return lra_errorf(err, errlen, "%s: path too long", src->path);
        if (add_files(d, cdir, c, -1, src, 0, err, errlen)) return -1;
    }
    return 0;
}

/* A non-negative integer label with optional surrounding blanks; -1 when it is not one. */
static long parse_label(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    if (!isdigit((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\r') end++;
    if (*end || errno || v < 0) return -1;
    return v;
}

#define TEXTDATA_MAX_LABEL 65535

static void show_field(char *out, size_t n, const char *s, size_t len) {
    size_t k = 0;
    for (size_t i = 0; i < len && k + 5 < n && i < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127) out[k++] = (char)c;
        else k += (size_t)snprintf(out + k, n - k, "\\x%02x", c);
    }
    if (len > 40 && k + 4 < n) memcpy(out + k, "...", 4), k += 3;
    out[k] = '\0';
}

/* One Source,Target file into d with the given split; *max_label tracks the largest label. */
static int load_csv(const char *file, int split, const textdata_source *src, textdata_docs *d, long *max_label,
                    char *err, size_t errlen) {
    textdata_reader r;
    if (textdata_reader_open(&r, file, 0, 1, err, errlen)) return -1;
    int rc = -1, got = textdata_reader_next(&r, err, errlen);
    if (got <= 0) {
        if (got == 0) lra_errorf(err, errlen, "%s:1: empty file: expected a header naming the columns Source and Target", r.name);
        goto out;
    }
    int isrc = -1, itgt = -1, ncols = r.nf;
    for (int i = 0; i < r.nf; i++) {
        const char *h = textdata_field(&r, i, NULL);
        if (i == 0 && (unsigned char)h[0] == 0xEF && (unsigned char)h[1] == 0xBB && (unsigned char)h[2] == 0xBF) h += 3;
        while (*h == ' ') h++;
        size_t hl = strlen(h);
        while (hl && (h[hl - 1] == ' ' || h[hl - 1] == '\r')) hl--;
        if (hl == 6 && !memcmp(h, "Source", 6)) isrc = i;
        if (hl == 6 && !memcmp(h, "Target", 6)) itgt = i;
    }
    if (isrc < 0 || itgt < 0) {
        char shown[200];
        size_t l0;
        const char *f0 = textdata_field(&r, 0, &l0);
        show_field(shown, sizeof shown, f0, l0);
        lra_errorf(err, errlen,
                   "%s:%ld: header must name the columns Source and Target (LRA's format, delimiter '%s'); got %d "
                   "column%s, the first '%s'",
                   r.name, r.rec_line, r.delim == '\t' ? "\\t" : ",", r.nf, r.nf == 1 ? "" : "s", shown);
        goto out;
    }
    int rows = 0;
    while ((got = textdata_reader_next(&r, err, errlen)) > 0) {
        if (r.nf != ncols) {
            lra_errorf(err, errlen, "%s:%ld: wrong column count: expected %d fields as in the header, got %d%s", r.name,
                       r.rec_line, ncols, r.nf,
                       r.nf > ncols && r.delim == ',' ? " (quote a Source that holds commas: \"a, b\")" : "");
            goto out;
        }
        size_t sl, tl;
        const char *s = textdata_field(&r, isrc, &sl), *t = textdata_field(&r, itgt, &tl);
        long v = parse_label(t);
        if (v < 0) {
            char shown[200];
            show_field(shown, sizeof shown, t, tl);
            lra_errorf(err, errlen, "%s:%ld: Target '%s' is not a non-negative integer label", r.name, r.rec_line, shown);
            goto out;
        }
        if (v > TEXTDATA_MAX_LABEL) {
            lra_errorf(err, errlen, "%s:%ld: Target %ld is too large (labels are class ids 0..%d)", r.name, r.rec_line, v,
                       TEXTDATA_MAX_LABEL);
            goto out;
        }
        if (sl == 0) {
            lra_errorf(err, errlen, "%s:%ld: empty Source", r.name, r.rec_line);
            goto out;
        }
        rows++;
        const uint8_t *b = (const uint8_t *)s;
        size_t from = src->body_only ? textdata_body_offset(b, sl) : 0, blen = sl - from;
        if (blen == 0) {
            d->empty_bodies++;
            continue;
        }
        if (src->keep && blen > src->keep) blen = src->keep;
        char name[sizeof r.name + 24];
        snprintf(name, sizeof name, "%s:%ld", r.name, r.rec_line);
        docs_add(d, b + from, blen, (int)v, split, xstrdup(name));
        if (v > *max_label) *max_label = v;
    }
    if (got < 0) goto out;
    if (rows == 0) {
        lra_errorf(err, errlen, "%s:%ld: no rows after the header", r.name, r.line);
        goto out;
    }
    rc = 0;
out:
    textdata_reader_close(&r);
    return rc;
}

static const char *const csv_exts[] = {".tsv", ".csv", NULL};

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The distinct PREFIXes of the PREFIX_train.{tsv,csv}[.gz] files in dir (at most 2 kept, in sorted
 * order); returns how many there are, or -1 when dir cannot be read. */
static int scan_tsv_prefixes(const char *dir, char found[2][256]) {
    char **names, e[8];
    int nn;
    if (list_dir(dir, &names, &nn, e, sizeof e)) return -1;
    static const char *const sufs[] = {"_train.tsv", "_train.tsv.gz", "_train.csv", "_train.csv.gz"};
    int count = 0;
    char last[256] = "";
    for (int i = 0; i < nn; i++)
        for (int k = 0; k < 4; k++) {
            if (!ends_with(names[i], sufs[k])) continue;
            size_t pl = strlen(names[i]) - strlen(sufs[k]);
            char p[256];
            snprintf(p, sizeof p, "%.*s", (int)LRA_MIN(pl, sizeof p - 1), names[i]);
            int seen = 0;
            for (int j = 0; j < LRA_MIN(count, 2); j++) seen |= !strcmp(found[j], p);
            if (seen || (count && !strcmp(last, p))) continue;
            if (count < 2) snprintf(found[count], 256, "%s", p);
            snprintf(last, sizeof last, "%s", p);
            count++;
        }
    free_names(names, nn);
    return count;
}

/* The PREFIX of the one PREFIX_train file in dir; -1 with a message when there is none or several. */
static int find_tsv_prefix(const char *dir, char *prefix, size_t n, char *err, size_t errlen) {
    char found[2][256];
    int count = scan_tsv_prefixes(dir, found);
    if (count < 0) return lra_errorf(err, errlen, "%s: cannot read directory: %s", dir, strerror(errno));
    if (count == 0) return lra_errorf(err, errlen, "task.path: %s holds no PREFIX_train.tsv or PREFIX_train.csv", dir);
    if (count > 1)
        return lra_errorf(err, errlen,
                          "task.prefix: %s holds %d sets of files (%s_train, %s_train%s); set task.prefix to one of them",
                          dir, count, found[0], found[1], count > 2 ? ", ..." : "");
    snprintf(prefix, n, "%s", found[0]);
    return 0;
}

/* The base name PREFIX (a path) whose PREFIX_{split}.tsv files to read. */
static int tsv_base(const textdata_source *src, char *base, size_t n, char *err, size_t errlen) {
    if (!textdata_is_dir(src->path)) {
        snprintf(base, n, "%s", src->path);
        return 0;
    }
    char prefix[256];
    if (src->prefix && src->prefix[0]) snprintf(prefix, sizeof prefix, "%s", src->prefix);
    else if (find_tsv_prefix(src->path, prefix, sizeof prefix, err, errlen))
        return -1;
    if (snprintf(base, n, "%s/%s", src->path, prefix) >= (int)n) return lra_errorf(err, errlen, "task.path: too long");
    return 0;
}

static int load_tsv(const textdata_source *src, textdata_docs *d, char *err, size_t errlen) {
    char base[PATH_MAX];
    if (tsv_base(src, base, sizeof base, err, errlen)) return -1;
    long max_label = -1;
    for (int s = 0; s < N_SPLITS; s++) {
        char stem[PATH_MAX + 16], file[PATH_MAX + 32];
        snprintf(stem, sizeof stem, "%s_%s", base, split_names[s]);
        if (!textdata_find_file(stem, csv_exts, file, sizeof file)) {
            if (s == SPLIT_TRAIN)
                return lra_errorf(err, errlen, "%s_train.tsv: cannot open: no such file (nor .tsv.gz, .csv, .csv.gz)", base);
            continue;
        }
        if (load_csv(file, s, src, d, &max_label, err, errlen)) return -1;
    }
    d->n_classes = (int)(max_label + 1);
    return 0;
}

int textdata_load(const textdata_source *src, textdata_docs *d, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    int rc;
    switch (src->format) {
    case TD_IMDB: rc = load_imdb(src, d, err, errlen); break;
    case TD_TSV: rc = load_tsv(src, d, err, errlen); break;
    case TD_DIRS: rc = load_dirs(src, d, err, errlen); break;
    default: rc = lra_errorf(err, errlen, "task.format: internal: layout %d cannot be loaded as documents", (int)src->format);
    }
    if (rc == 0 && d->n == 0)
        rc = lra_errorf(err, errlen, "%s: no documents found%s", src->path,
                        d->empty_bodies ? " (every message body is empty after removing its headers)" : "");
    if (rc) textdata_docs_free(d);
    return rc;
}

int textdata_count_split(const textdata_docs *d, int s) {
    int c = 0;
    for (int i = 0; i < d->n; i++) c += d->split[i] == s;
    return c;
}

/* ------------------------------------------------------------------------------------------ */
/* Duplicates and splits                                                                       */

int textdata_dedup(textdata_docs *d) {
    if (d->n < 2) return 0;
    uint64_t tsize = 16;
    while (tsize < 2 * (uint64_t)d->n) tsize *= 2;
    int32_t *table = xmalloc(tsize * sizeof *table);
    uint64_t *hash = xmalloc((size_t)d->n * sizeof *hash);
    memset(table, 0xff, tsize * sizeof *table);
    uint8_t *keep = xcalloc((size_t)d->n, 1);
    int dropped = 0;
    for (int i = 0; i < d->n; i++) {
        size_t len = d->off[i + 1] - d->off[i];
        const uint8_t *b = d->bytes + d->off[i];
        uint64_t h = lra_fnv1a(LRA_FNV_INIT, b, len);
        hash[i] = h;
        keep[i] = 1;
        for (uint64_t k = h & (tsize - 1);; k = (k + 1) & (tsize - 1)) {
            int32_t j = table[k];
            if (j < 0) {
                table[k] = i;
                break;
            }
            if (hash[j] == h && d->off[j + 1] - d->off[j] == len && memcmp(d->bytes + d->off[j], b, len) == 0) {
                keep[i] = 0;
                dropped++;
                break;
            }
        }
    }
    if (dropped) { /* compact in place, keeping order */
        int k = 0;
        size_t pos = 0;
        for (int i = 0; i < d->n; i++) {
            size_t from = d->off[i], len = d->off[i + 1] - from;
            if (!keep[i]) {
                free(d->name[i]);
                continue;
            }
            memmove(d->bytes + pos, d->bytes + from, len);
            d->off[k] = pos;
            pos += len;
            d->label[k] = d->label[i];
            d->split[k] = d->split[i];
            d->name[k] = d->name[i];
            k++;
        }
        d->n = k;
        d->off[k] = pos;
        d->len = pos;
    }
    free(table);
    free(hash);
    free(keep);
    return dropped;
}

void textdata_carve(textdata_docs *d, uint64_t seed, double val_fraction, double test_fraction) {
    for (int i = 0; i < d->n; i++)
        if (d->split[i] < 0) d->split[i] = SPLIT_TRAIN;
    int need_test = textdata_count_split(d, SPLIT_TEST) == 0 && test_fraction > 0;
    int need_val = textdata_count_split(d, SPLIT_VAL) == 0 && val_fraction > 0;
    if (!need_test && !need_val) return;
    int nc = 0;
    for (int i = 0; i < d->n; i++) nc = LRA_MAX(nc, d->label[i] + 1);
    int *idx = xmalloc((size_t)d->n * sizeof *idx);
    for (int c = 0; c < nc; c++) {
        int m = 0;
        for (int i = 0; i < d->n; i++)
            if (d->label[i] == c && d->split[i] == SPLIT_TRAIN) idx[m++] = i;
        if (!m) continue;
        /* Fisher-Yates with one stream per class: the choice for one class does not depend on the
         * size of another. */
        rng_t r = rng_make(seed, rng_substream(RNG_DATA, 0x63617276 /* "carv" */, (uint64_t)c));
        for (int i = m - 1; i > 0; i--) {
            int j = rng_int(&r, 0, i), t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
        int nt = need_test ? (int)(test_fraction * m + 0.5) : 0;
        int nv = need_val ? (int)(val_fraction * m + 0.5) : 0;
        if (nt + nv > m) nv = m - nt;
        for (int i = 0; i < nt; i++) d->split[idx[i]] = SPLIT_TEST;
        for (int i = nt; i < nt + nv; i++) d->split[idx[i]] = SPLIT_VAL;
    }
    free(idx);
}

/* ------------------------------------------------------------------------------------------ */
/* Paths                                                                                       */

int textdata_resolve_path(const char *path, const task_env *env, int (*exists_fn)(const char *), char *out,
                          size_t outlen, char *err, size_t errlen) {
    char cand[3][PATH_MAX];
    int nc = 0;
    snprintf(cand[nc++], PATH_MAX, "%s", path);
    int data_idx = -1;
    if (path[0] != '/') {
        if (env->data_dir && env->data_dir[0]) {
            data_idx = nc;
            snprintf(cand[nc++], PATH_MAX, "%s/%s", env->data_dir, path);
        }
        if (env->base_dir && env->base_dir[0] && strcmp(env->base_dir, ".") != 0)
            snprintf(cand[nc++], PATH_MAX, "%s/%s", env->base_dir, path);
    }
    for (int c = 0; c < nc; c++)
        if (textdata_is_dir(cand[c]) || textdata_is_file(cand[c]) || (exists_fn && exists_fn(cand[c]))) {
            if (strlen(cand[c]) >= outlen) return lra_errorf(err, errlen, "task.path: '%s' is too long", cand[c]);
            snprintf(out, outlen, "%s", cand[c]);
            return 0;
        }
    /* The fetchable corpora get the command that makes them. */
    char last[256];
    size_t pl = strlen(path);
    while (pl > 1 && path[pl - 1] == '/') pl--;
    size_t st = pl;
    while (st > 0 && path[st - 1] != '/') st--;
    snprintf(last, sizeof last, "%.*s", (int)LRA_MIN(pl - st, sizeof last - 1), path + st);
    char tried[3 * PATH_MAX + 16] = "";
    for (int c = 0; c < nc; c++) {
        if (c) strcat(tried, ", ");
        strncat(tried, cand[c], PATH_MAX);
    }
    if (!strcmp(last, "spam") || !strcmp(last, "brown")) {
        const char *shown = path;
        size_t dl = env->data_dir ? strlen(env->data_dir) : 0;
        if (data_idx >= 0 && !(dl && strncmp(path, env->data_dir, dl) == 0 && path[dl] == '/')) shown = cand[data_idx];
        return lra_errorf(err, errlen,
                          "task.path: %s not found: run scripts/fetch-data.sh %s (it fills data/ of the lra checkout; "
                          "looked at: %s; corpora elsewhere: set task.data_dir)",
                          shown, last, tried);
    }
    return lra_errorf(err, errlen, "task.path: '%s' not found (looked at: %s)", path, tried);
}

static int has_subdir(const char *dir) {
    char **sub;
    int n;
    char e[8];
    if (list_subdirs(dir, NULL, &sub, &n, e, sizeof e)) return 0;
    free_names(sub, n);
    return n > 0;
}

static int imdb_root_of(const char *path, char *imdb_root, size_t rootlen) {
    static const char *const roots[] = {"", "/aclImdb"};
    for (int k = 0; k < 2; k++) {
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%s%s/train", path, roots[k]);
        if (textdata_is_dir(probe) && has_subdir(probe)) {
            if (imdb_root) snprintf(imdb_root, rootlen, "%s%s", path, roots[k]);
            return 1;
        }
    }
    return 0;
}

static int has_tsv(const char *path, const char *tsv_prefix) {
    char probe[PATH_MAX + 300], found[PATH_MAX + 320];
    if (!textdata_is_dir(path)) {
        snprintf(probe, sizeof probe, "%s_train", path);
        return textdata_find_file(probe, csv_exts, found, sizeof found);
    }
    if (tsv_prefix && tsv_prefix[0]) {
        snprintf(probe, sizeof probe, "%s/%s_train", path, tsv_prefix);
        return textdata_find_file(probe, csv_exts, found, sizeof found);
    }
    char p[2][256];
    return scan_tsv_prefixes(path, p) > 0; /* several: loading asks for task.prefix */
}

static int has_aan(const char *path, const char *aan_prefix) {
    static const char *const aan_exts[] = {".tsv", NULL};
    char probe[PATH_MAX + 300], found[PATH_MAX + 320];
    if (textdata_is_dir(path)) snprintf(probe, sizeof probe, "%s/%s.train", path, aan_prefix);
    else snprintf(probe, sizeof probe, "%s.train", path);
    return textdata_find_file(probe, aan_exts, found, sizeof found);
}

int textdata_detect(const char *path, textdata_format want, const char *aan_prefix, const char *tsv_prefix,
                    char *imdb_root, size_t rootlen, char *err, size_t errlen) {
    int dir = textdata_is_dir(path);
    switch (want) {
    case TD_AAN:
        if (has_aan(path, aan_prefix)) return TD_AAN;
        if (dir)
            return lra_errorf(err, errlen, "task.path: %s holds no %s.train.tsv (LRA's AAN files; another task.prefix?)",
                              path, aan_prefix);
        return lra_errorf(err, errlen, "task.path: there is no %s.train.tsv (LRA's AAN files)", path);
    case TD_IMDB:
        if (dir && imdb_root_of(path, imdb_root, rootlen)) return TD_IMDB;
        return lra_errorf(err, errlen, "task.path: %s is not in the IMDB layout: no train/<class>/ (nor aclImdb/train/<class>/) in it",
                          path);
    case TD_TSV:
        if (has_tsv(path, tsv_prefix)) return TD_TSV;
        if (dir && tsv_prefix && tsv_prefix[0])
            return lra_errorf(err, errlen, "task.prefix: %s holds no %s_train.tsv (nor .tsv.gz, .csv, .csv.gz)", path, tsv_prefix);
        return lra_errorf(err, errlen, "task.path: %s %s no PREFIX_train.tsv (nor .tsv.gz, .csv, .csv.gz)", path,
                          dir ? "holds" : "is a file and the prefix of");
    case TD_DIRS:
        if (dir) return TD_DIRS;
        return lra_errorf(err, errlen, "task.path: %s is not a directory (format dirs reads one directory per class)", path);
    case TD_AUTO: break;
    }
    if (aan_prefix && has_aan(path, aan_prefix)) return TD_AAN;
    if (dir && imdb_root_of(path, imdb_root, rootlen)) return TD_IMDB;
    if (has_tsv(path, tsv_prefix)) return TD_TSV;
    if (dir) return TD_DIRS;
    return lra_errorf(err, errlen, "task.path: %s is a file, not a data directory or the prefix P of P_train.tsv%s", path,
                      aan_prefix ? " or P.train.tsv" : "");
}

/* ------------------------------------------------------------------------------------------ */
/* CSV / TSV records                                                                           */

#define RD_CHUNK (1 << 16)
#define RD_EOF (-1)
#define RD_ERR (-2)

int textdata_reader_open(textdata_reader *r, const char *file, char delim, int quoting, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    const char *open_name = file;
    char gzname[PATH_MAX + 4];
    if (textdata_is_dir(file)) return lra_errorf(err, errlen, "%s: cannot open: is a directory", file);
    if (!textdata_is_file(file)) {
        snprintf(gzname, sizeof gzname, "%s.gz", file);
        if (textdata_is_file(gzname)) open_name = gzname;
    }
    errno = 0;
    r->f = gzopen(open_name, "rb");
    if (!r->f) return lra_errorf(err, errlen, "%s: cannot open: %s", file, strerror(errno ? errno : ENOENT));
    gzbuffer(r->f, 1 << 17);
    snprintf(r->name, sizeof r->name, "%s", open_name);
    r->buf = xmalloc(RD_CHUNK);
    r->line = 1;
    r->delim = delim;
    r->quoting = quoting;
    return 0;
}

void textdata_reader_close(textdata_reader *r) {
    if (r->f) gzclose(r->f);
    free(r->buf);
    free(r->rec);
    free(r->fstart);
    free(r->flen);
    memset(r, 0, sizeof *r);
}

/* 1 when bytes are buffered, 0 at the end, -1 on a read or decompression error. */
static int rd_fill(textdata_reader *r) {
    if (r->pos < r->len) return 1;
    if (r->eof) return 0;
    int got = gzread(r->f, r->buf, RD_CHUNK);
    int zerr = Z_OK;
    gzerror(r->f, &zerr);
    if (got < 0 || (zerr != Z_OK && zerr != Z_STREAM_END)) return -1;
    if (got == 0) {
        r->eof = 1;
        return 0;
    }
    r->pos = 0;
    r->len = (size_t)got;
    return 1;
}

static inline int rd_getc(textdata_reader *r) {
    if (r->pos >= r->len) {
        int f = rd_fill(r);
        if (f <= 0) return f < 0 ? RD_ERR : RD_EOF;
    }
    int c = r->buf[r->pos++];
    if (c == '\n') r->line++;
    return c;
}

static inline int rd_peek(textdata_reader *r) {
    if (r->pos >= r->len) {
        int f = rd_fill(r);
        if (f <= 0) return f < 0 ? RD_ERR : RD_EOF;
    }
    return r->buf[r->pos];
}

static int rd_error(textdata_reader *r, long line, char *err, size_t errlen) {
    int zerr = Z_OK;
    const char *msg = gzerror(r->f, &zerr);
    size_t nl = strlen(r->name);
    if (msg && strncmp(msg, r->name, nl) == 0 && msg[nl] == ':') msg += nl + 1 + (msg[nl + 1] == ' ');
    return lra_errorf(err, errlen, "%s:%ld: read error: %s", r->name, line,
                      zerr == Z_ERRNO ? strerror(errno) : (msg && *msg ? msg : "corrupt or truncated data"));
}

static inline void rec_put(textdata_reader *r, int c) {
    if (r->rlen + 2 > r->rcap) {
        r->rcap = r->rcap ? 2 * r->rcap : 4096;
        r->rec = xrealloc(r->rec, r->rcap);
    }
    r->rec[r->rlen++] = (uint8_t)c;
}

static void rec_begin(textdata_reader *r) {
    if (r->nf == r->fcap) {
        r->fcap = r->fcap ? 2 * r->fcap : 8;
        r->fstart = xrealloc(r->fstart, (size_t)r->fcap * sizeof *r->fstart);
        r->flen = xrealloc(r->flen, (size_t)r->fcap * sizeof *r->flen);
    }
    r->fstart[r->nf] = r->rlen;
}

static void rec_end(textdata_reader *r) {
    r->flen[r->nf] = r->rlen - r->fstart[r->nf];
    rec_put(r, 0);
    r->nf++;
}

static int nul_error(textdata_reader *r, char *err, size_t errlen) {
    return lra_errorf(err, errlen,
                      "%s:%ld: NUL byte in field %d: rows must be text without NUL bytes (a binary or UTF-16 file? "
                      "convert it to UTF-8)",
                      r->name, r->line, r->nf + 1);
}

/* Parse one record whose first byte c was just read. */
static int parse_record(textdata_reader *r, int c, int *quoted0, char *err, size_t errlen) {
    const int delim = (unsigned char)r->delim;
    *quoted0 = 0;
    for (;;) {
        rec_begin(r);
        if (r->quoting && c == '"') {
            if (r->nf == 0) *quoted0 = 1;
            long qline = r->line;
            for (;;) {
                c = rd_getc(r);
                if (c == RD_ERR) return rd_error(r, r->line, err, errlen);
                if (c == RD_EOF)
                    return lra_errorf(err, errlen,
                                      "%s:%ld: the quoted field %d opened on this line is not closed before the end "
                                      "of the file (a stray '\"'?)",
                                      r->name, qline, r->nf + 1);
                if (c == 0) return nul_error(r, err, errlen);
                if (c == '"') {
                    int n = rd_peek(r);
                    if (n == '"') {
                        rd_getc(r);
                        rec_put(r, '"');
                        continue;
                    }
                    break;
                }
                rec_put(r, c);
            }
            rec_end(r);
            c = rd_getc(r);
            if (c == delim) {
                c = rd_getc(r);
                continue;
            }
            if (c == '\r' && rd_peek(r) == '\n') c = rd_getc(r);
            if (c == '\n' || c == RD_EOF) return 0;
            if (c == RD_ERR) return rd_error(r, r->line, err, errlen);
            if (c == 0) return nul_error(r, err, errlen);
            return lra_errorf(err, errlen,
                              "%s:%ld: unexpected '%c' after the closing quote of field %d (a quoted field ends at the "
                              "delimiter or the line end; write \"\" for a quote inside quotes)",
                              r->name, r->line, c >= 32 && c < 127 ? c : '?', r->nf);
        }
        while (c != delim && c != '\n' && c != RD_EOF) {
            if (c == RD_ERR) return rd_error(r, r->line, err, errlen);
            if (c == 0) return nul_error(r, err, errlen);
            rec_put(r, c);
            c = rd_getc(r);
        }
        if (c == delim) {
            rec_end(r);
            c = rd_getc(r);
            continue;
        }
        if (r->rlen > r->fstart[r->nf] && r->rec[r->rlen - 1] == '\r') r->rlen--; /* CRLF */
        rec_end(r);
        return 0;
    }
}

int textdata_reader_next(textdata_reader *r, char *err, size_t errlen) {
    for (;;) {
        r->rlen = 0;
        r->nf = 0;
        r->rec_line = r->line;
        int c = rd_getc(r);
        if (c == RD_ERR) return rd_error(r, r->line, err, errlen);
        if (c == RD_EOF) return 0;
        if (!r->delim && (c == '\n' || c == '\r')) continue; /* blank lines before the first record */
        if (!r->delim) { /* the first line decides: a tab in it makes the file tab-separated */
            r->delim = ',';
            if (c == '\t') r->delim = '\t';
            for (size_t i = r->pos; i < r->len && c != '\n' && r->delim == ','; i++) {
                if (r->buf[i] == '\n') break;
                if (r->buf[i] == '\t') r->delim = '\t';
            }
        }
        int quoted0;
        if (parse_record(r, c, &quoted0, err, errlen)) return -1;
        if (r->nf == 1 && r->flen[0] == 0 && !quoted0) continue; /* empty line */
        return 1;
    }
}

const char *textdata_field(const textdata_reader *r, int i, size_t *len) {
    LRA_CHECK(i >= 0 && i < r->nf, "field %d of a record with %d", i, r->nf);
    if (len) *len = r->flen[i];
    return (const char *)r->rec + r->fstart[i];
}
