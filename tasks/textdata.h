/* textdata.h - shared helpers of the byte-level text tasks `text` (tasks/text.c) and `retrieval`
 * (tasks/retrieval.c): byte encoding, RFC 822 body extraction, document corpora read from the
 * layouts users have (IMDB's aclImdb, LRA's Source,Target files, a directory per class, a flat
 * directory), duplicate removal, deterministic split carving, and a CSV/TSV record reader through
 * zlib (plain or .gz files).
 *
 * Encoding (LRA's tfds ByteTextEncoder): byte b -> id b + 1, id 0 is padding, so the vocabulary
 * has TEXT_VOCAB = 257 ids. Sequences are truncated to seq_len or right-padded with 0. Text is
 * bytes: invalid UTF-8 is fine. What counts as a bad encoding is a NUL byte inside a CSV/TSV row
 * (a binary or UTF-16 file: rows are text), an error naming file and line; document files in a
 * directory corpus are taken as raw bytes, NULs included (id 1).
 *
 * Layouts of a corpus (textdata_load):
 *   imdb  DIR/{train,test[,val]}/<class>/<files>, or the same under DIR/aclImdb. Classes are the
 *         sorted sub-directories of train/ except `unsup` (IMDB's unlabelled reviews), so IMDB gives
 *         neg = 0, pos = 1 as in TFDS imdb_reviews. Other files in train/ (labeledBow.feat, urls)
 *         are ignored.
 *   tsv   LRA's generic loader: {PREFIX}_{train,val,test}.{tsv,csv}[.gz] in DIR (or PATH is the
 *         prefix itself). A header row names the columns; `Source` (the text) and `Target` (a
 *         non-negative integer label) must be among them, other columns are ignored. The delimiter
 *         is a tab when the header line holds one, else a comma; fields may be quoted as in
 *         RFC 4180 ("a, ""b""" with commas, quotes and newlines inside). val and test are optional.
 *   dirs  DIR/<class>/<files>: class = sub-directory name, ids in sorted (byte) order. With no
 *         sub-directory at all, DIR's own files are the documents, of one class (class 0).
 * Files are found recursively under a class directory, in sorted order; names starting with '.'
 * are skipped everywhere. A zero-byte document file is an error ("FILE: empty document"); a
 * document that becomes empty when body_only removes its headers is dropped.
 */
#ifndef LRA_TEXTDATA_H
#define LRA_TEXTDATA_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "task.h"

enum { TEXT_VOCAB = 257 }; /* ids 0 (padding) and 1..256 (bytes 0..255) */

/* Corpus layouts. TD_AAN is only for the retrieval task (LRA's new_aan_pairs files). */
typedef enum { TD_AUTO = 0, TD_IMDB, TD_TSV, TD_DIRS, TD_AAN } textdata_format;

/* ------------------------------------------------------------------------------------------ */
/* Bytes                                                                                       */

/* dst[i] = src[i] + 1 for i < min(len, seq_len), 0 for the rest of dst[0..seq_len). */
void textdata_encode(const uint8_t *src, size_t len, int seq_len, int32_t *dst);

/* Offset of the body of an RFC 822 message in doc[0..len): just past the first empty line (LF LF
 * or CRLF CRLF, also LF CRLF). A message without an empty line is all headers: returns len. */
size_t textdata_body_offset(const uint8_t *doc, size_t len);

/* ------------------------------------------------------------------------------------------ */
/* Documents                                                                                   */

typedef struct {
    int n;              /* documents */
    uint8_t *bytes;     /* the kept bytes of every document, concatenated */
    size_t len, cap;
    size_t *off;        /* (n + 1): document i is bytes[off[i] .. off[i+1]) */
    int32_t *label;     /* (n) class id in [0, n_classes) */
    int8_t *split;      /* (n) SPLIT_TRAIN / SPLIT_VAL / SPLIT_TEST, or -1: not split yet */
    char **name;        /* (n) "FILE" or "FILE:LINE", malloc'd, for messages and tests */
    int n_cap;
    int n_classes;      /* classes of the layout: class directories, or max Target + 1 */
    char **class_names; /* (n_classes) directory names; NULL for tsv (labels are numbers) */
    int empty_bodies;   /* documents dropped because body_only left nothing */
} textdata_docs;

void textdata_docs_free(textdata_docs *d);

/* What to read and how (the keys shared by both tasks). */
typedef struct {
    textdata_format format; /* TD_IMDB, TD_TSV or TD_DIRS (resolved, not TD_AUTO) */
    const char *path;       /* resolved directory, or for tsv a directory or a file prefix */
    const char *prefix;     /* tsv: PREFIX of PREFIX_train.tsv inside a directory; "" = the only one */
    int body_only;          /* keep what follows the RFC 822 headers (textdata_body_offset) */
    size_t keep;            /* keep at most this many bytes of each document (after body_only); 0 = all */
} textdata_source;

/* Read a corpus into d (zero it first). Documents of the layout's train/val/test parts get that
 * split, the others -1. Returns 0, or -1 with "FILE: reason" / "FILE:LINE: reason" in err (cannot
 * open or read, NUL byte in a row, malformed quoting, wrong column count, missing header, label
 * not a non-negative integer, empty file or Source, no documents, no class directory); d is left
 * empty on error. */
int textdata_load(const textdata_source *src, textdata_docs *d, char *err, size_t errlen);

/* Drop every document whose kept bytes equal an earlier document's (order: as loaded, so train
 * parts come first). Returns the number dropped. */
int textdata_dedup(textdata_docs *d);

/* Carve the splits deterministically from `seed`: documents with split -1 join train; then, if no
 * document is in the test split, round(test_fraction * n_c) training documents of each class c
 * move to test, and if none is in val, round(val_fraction * n_c) of each class move to val (n_c
 * counted before either move). Which documents move is a seeded shuffle per class (stream
 * RNG_DATA), so a document is in exactly one split and the result depends only on the seed and the
 * corpus. */
void textdata_carve(textdata_docs *d, uint64_t seed, double val_fraction, double test_fraction);

/* Number of documents of split s (-1 for unsplit). */
int textdata_count_split(const textdata_docs *d, int s);

/* ------------------------------------------------------------------------------------------ */
/* Paths                                                                                       */

/* Resolve a user path: as given (relative to the working directory), then under env->data_dir,
 * then under env->base_dir (the config's directory). The first candidate that is a directory, a
 * regular file, or (exists_fn non-NULL) for which exists_fn(candidate) is true, is copied to out.
 * Returns 0, or -1 with "task.path: ..." in err: for the fetchable corpora (`spam`, `brown` as the
 * last path component) "task.path: data/brown not found: run scripts/fetch-data.sh brown",
 * otherwise the list of places looked at. */
int textdata_resolve_path(const char *path, const task_env *env, int (*exists_fn)(const char *), char *out,
                          size_t outlen, char *err, size_t errlen);

/* Work out the layout of a resolved path. With want = TD_AUTO: TD_AAN when aan_prefix is non-NULL
 * and the path holds AAN_PREFIX.train.tsv[.gz] (or is such a prefix); TD_IMDB when it (or its
 * aclImdb/) has a train/ directory with sub-directories; TD_TSV when it holds (or is the prefix of)
 * TSV_PREFIX_train.{tsv,csv}[.gz] (any prefix when tsv_prefix is empty); TD_DIRS for any other
 * directory. With another want, only that layout is checked. For TD_IMDB, imdb_root receives the
 * directory holding train/. Returns the format, or -1 with "task.path: ..." in err saying what is
 * missing. */
int textdata_detect(const char *path, textdata_format want, const char *aan_prefix, const char *tsv_prefix,
                    char *imdb_root, size_t rootlen, char *err, size_t errlen);

/* Find FILE or FILE.gz for base + ext (ext like ".tsv"), trying each ext of a NULL-terminated
 * list; copies the found name to out and returns 1, else 0. */
int textdata_find_file(const char *base, const char *const *exts, char *out, size_t outlen);

int textdata_is_dir(const char *path);
int textdata_is_file(const char *path);

/* ------------------------------------------------------------------------------------------ */
/* CSV / TSV records                                                                           */

/* A record reader over a plain or gzip'd file. Fields are byte strings with explicit lengths,
 * NUL-terminated for convenience; a NUL inside a row is an error. Line ends LF or CRLF; empty
 * lines are skipped. With quoting, a field that starts with '"' is quoted: it ends at the next
 * lone '"', "" inside is one '"', and delimiters and newlines inside are data; after the closing
 * quote only the delimiter or the line end may follow. A '"' inside an unquoted field is data. */
typedef struct {
    gzFile f;
    char name[4200]; /* the file opened, for messages */
    uint8_t *buf;    /* read buffer */
    size_t pos, len;
    int eof;
    long line;       /* line number of the next unread byte, from 1 */
    char delim;      /* 0: detect from the first line (tab if it holds one, else comma) */
    int quoting;
    /* the current record */
    uint8_t *rec;    /* field bytes, each followed by a NUL */
    size_t rlen, rcap;
    size_t *fstart, *flen;
    int nf, fcap;
    long rec_line;   /* line on which the current record starts */
} textdata_reader;

/* Open FILE (or FILE.gz when FILE is absent). delim 0 detects it from the first line. Returns 0,
 * or -1 with "FILE: cannot open: ..." in err. */
int textdata_reader_open(textdata_reader *r, const char *file, char delim, int quoting, char *err, size_t errlen);

/* Read the next non-empty record. Returns 1, 0 at the end of the file, or -1 with
 * "FILE:LINE: reason" in err (read error, NUL byte, unterminated quote, junk after a quote). */
int textdata_reader_next(textdata_reader *r, char *err, size_t errlen);

/* Field i of the current record (NUL-terminated; *len gets its length when len is non-NULL). */
const char *textdata_field(const textdata_reader *r, int i, size_t *len);

void textdata_reader_close(textdata_reader *r);

/* ------------------------------------------------------------------------------------------ */
/* The tasks' parameters (YAML keys under `task:`; docs in the schemas of text.c/retrieval.c)  */

typedef struct {
    char path[512];      /* corpus: directory (imdb, dirs, tsv) or tsv prefix */
    int format;          /* 0 auto, 1 imdb, 2 tsv, 3 dirs (textdata_format) */
    char prefix[128];    /* tsv: PREFIX of PREFIX_train.tsv; "" = the only one in the directory */
    int n_classes;       /* 0 = from the data */
    int body_only;       /* strip RFC 822 headers */
    int windows;         /* examples per document: consecutive seq_len windows, at most this many */
    int dedup;           /* drop exact duplicate documents */
    float val_fraction;  /* carved from train when the data has no val split */
    float test_fraction; /* carved from train when the data has no test split */
    int n_train, n_val, n_test; /* at most this many examples per split (seeded subset); 0 = all */
} text_params;

typedef struct {
    char path[512];      /* AAN files (directory or prefix) or a document corpus */
    int format;          /* 0 auto, 1 aan, 2 imdb, 3 tsv, 4 dirs */
    char prefix[128];    /* aan: default new_aan_pairs; tsv: as for text */
    int same;            /* generator: 0 = same document, 1 = same class */
    int body_only, dedup;
    float val_fraction, test_fraction;
    int n_train, n_val, n_test; /* pairs per split; AAN: at most (0 = all); generator: 0 = pairs_per_doc x docs */
    int pairs_per_doc;
    int min_bytes;       /* generator: skip documents shorter than this */
    int max_bytes;       /* AAN: cut each text to this many bytes before encoding (LRA 10000); 0 = no cut */
} retrieval_params;

extern const task_ops task_text;
extern const task_ops task_retrieval;

#endif
