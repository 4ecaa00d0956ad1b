/* bytesrc.h - whole byte sources read into memory for the language-modelling task `lm`
 * (tasks/lmdata.c): plain files, gzip / dictzip, zip archive members, PG19-style directories and
 * directories of documents, all through zlib, with an inflate limit.
 *
 * Every reader appends to a bytebuf whose max_bytes bounds the total it may hold: a source that
 * would push the buffer past it is refused with "FILE: ... more than N bytes (task.max_bytes)"
 * before (zip: from the declared size) or while (gzip, plain) inflating, and the buffer never grows
 * beyond max_bytes, so a zip bomb or a huge file cannot make us allocate without bound.
 *
 * Errors are user errors: -1 with "FILE: reason" in err (the file and what is wrong with it);
 * the bytebuf keeps what it had before the failing call (its len is restored).
 *
 * Formats:
 *   plain  the file's bytes as they are.
 *   gzip   RFC 1952, one or several members back to back (as `cat a.gz b.gz` gives, and as gzip -d
 *          reads them); dictzip (.dz, the dictd format) is gzip with an extra field and reads the
 *          same. Trailing zero bytes after the last member are ignored (tape padding, as gzip
 *          does); anything else after a member must be another member.
 *   zip    PKWARE APPNOTE 6.3: the end-of-central-directory record (found by scanning back over at
 *          most 65535 + 22 bytes, its comment length must reach the end of the file exactly), the
 *          central directory, the local header of the chosen member; method 0 (stored) is copied,
 *          method 8 (deflate) is inflated as raw deflate; CRC-32 and both sizes are checked.
 *          zip64 is read (the zip64 end record and locator, the zip64 extra field of a member), as
 *          `zip` writes it for large archives or when it reads a pipe. Refused with a named reason:
 *          encryption (flag bit 0, or method 99 AES), other methods (named: shrink, implode,
 *          deflate64, bzip2, lzma, zstd, xz, ...), multi-disk archives.
 *   pg19   DIR/train, DIR/validation (or valid, val), DIR/test: each split is the concatenation of
 *          the files below it in bytesrc_list_files order (names starting with '.' skipped); each
 *          file is plain or gzip (detected by its magic bytes, else by a .gz/.dz extension).
 *   dirs   a directory of documents (the same order); the caller splits it by document
 *          (lmdata.c).
 */
#ifndef LRA_BYTESRC_H
#define LRA_BYTESRC_H

#include <stddef.h>
#include <stdint.h>

typedef enum { BS_AUTO = 0, BS_PLAIN, BS_GZIP, BS_ZIP, BS_PG19, BS_DIRS } bytesrc_format;

/* Names of the formats, indexed by bytesrc_format ("auto", "plain", ...). */
extern const char *const bytesrc_format_names[];

/* A growing byte buffer bounded by max_bytes (SIZE_MAX: no bound; 0: nothing may be added).
 * Zero-initialise, then set max_bytes. */
typedef struct {
    uint8_t *data; /* malloc'd, data[0 .. len) */
    size_t len, cap;
    size_t max_bytes;
} bytebuf;

void bytebuf_free(bytebuf *b);

/* Append len bytes; -1 with "WHAT: ... more than N bytes (task.max_bytes ...)" in err when the
 * buffer would exceed max_bytes (nothing is appended then). `what` names the source (a file). */
int bytebuf_append(bytebuf *b, const void *src, size_t len, const char *what, char *err, size_t errlen);

/* Append the bytes of a plain file. Errors: cannot open / read, larger than the limit. */
int bytesrc_read_plain(bytebuf *b, const char *file, char *err, size_t errlen);

/* Append the decompressed bytes of a gzip or dictzip file (all members). Errors: cannot open,
 * "FILE: not gzip data (no 1f 8b magic bytes)", "FILE: corrupt or truncated gzip data (zlib: MSG)"
 * with zlib's message or "unexpected end of file", "FILE: trailing garbage after gzip data at byte
 * OFFSET", the limit. An empty file is "FILE: empty file (no gzip data)". */
int bytesrc_read_gzip(bytebuf *b, const char *file, char *err, size_t errlen);

/* One member of a zip archive, from its central directory. */
typedef struct {
    char name[1024];
    uint16_t flags, method;
    uint32_t crc32;
    uint64_t csize, usize, local_offset; /* zip64 values when the archive has them */
} bytesrc_zip_entry;

/* List the members of a zip archive (directory entries included, names ending in '/'). *out is
 * malloc'd (free it). Errors: "FILE: not a zip archive (...)", "FILE: truncated zip archive (...)",
 * "FILE: multi-disk (split or spanned) zip archives are not supported",
 * "FILE: corrupt zip central directory (...)". */
int bytesrc_zip_list(const char *file, bytesrc_zip_entry **out, int *n, char *err, size_t errlen);

/* Append the bytes of one member of a zip archive: the member called `member`, or with member NULL
 * or "", the only file member (an error listing the members when there are several). Errors: those
 * of bytesrc_zip_list, "FILE: no member 'NAME' (members: a, b, ...)", "FILE: member NAME is
 * encrypted (not supported)", "FILE: member NAME uses compression method M (NAME), not supported
 * (only stored and deflate)", "FILE: member NAME: corrupt deflate data (zlib: MSG)", "... truncated
 * ...", "FILE: member NAME: CRC-32 mismatch (computed X, stored Y)", "... inflates to N bytes,
 * central directory says M", the limit (checked against the declared size before inflating). */
int bytesrc_read_zip(bytebuf *b, const char *file, const char *member, char *err, size_t errlen);

/* The format of a file from its first bytes (1f 8b: gzip; "PK\3\4", "PK\5\6": zip), else from its
 * extension (.gz, .dz: gzip; .zip: zip, so that a damaged archive gets the archive's error and is
 * not read as text), else plain; a directory: pg19 when it has a train/ sub-directory, else dirs.
 * -1 with "PATH: cannot open: ..." in err when it is neither a readable file nor a directory. */
int bytesrc_detect(const char *path, char *err, size_t errlen);

/* Append a single file in format fmt (BS_AUTO: detected; BS_PLAIN, BS_GZIP, BS_ZIP; `member` is for
 * zip). */
int bytesrc_read_file(bytebuf *b, const char *file, bytesrc_format fmt, const char *member, char *err,
                      size_t errlen);

/* The regular files below dir, recursively, names starting with '.' skipped, as malloc'd full paths
 * (*files malloc'd; free each and the array). Order: each directory's entries sorted bytewise
 * (strcmp), sub-directories expanded in place: for brown/<genre>/<id>.txt, genre by genre, and
 * PG19's <id>.txt books in name order (bytewise: "10.txt" before "9.txt"). Errors: "DIR: cannot read
 * directory: ...". An empty list is not an error here. */
int bytesrc_list_files(const char *dir, char ***files, int *n, char *err, size_t errlen);

/* The split directory of a PG19-style root for split s (0 train, 1 val, 2 test): ROOT/train,
 * ROOT/validation (else ROOT/valid, ROOT/val), ROOT/test. 0, or -1 with "ROOT: PG19 layout has no
 * validation/ directory (...)" in err. */
int bytesrc_pg19_split_dir(const char *root, int s, char *out, size_t outlen, char *err, size_t errlen);

#endif
