/* bytesrc.c - whole byte sources through zlib: plain, gzip/dictzip, zip members, directories (see
 * bytesrc.h for the formats and the limit).
 *
 * Sources of the formats: RFC 1952 (gzip, multi-member), dictd's dictzip (gzip with an RA extra
 * field), PKWARE APPNOTE.TXT 6.3.x sections 4.3.7 (local file header), 4.3.12 (central directory
 * header), 4.3.16 (end of central directory record), 4.4.4 (general purpose flags), 4.4.5
 * (compression methods); zlib's inflateInit2 (windowBits 16+MAX_WBITS for gzip, -MAX_WBITS for
 * raw deflate).
 */
#include "bytesrc.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../lra/common.h"

const char *const bytesrc_format_names[] = {"auto", "plain", "gzip", "zip", "pg19", "dirs"};

enum { CHUNK = 1 << 18 }; /* 256 KiB of compressed input / inflated output at a time */

/* ------------------------------------------------------------------------------------------ */
/* Buffer                                                                                      */

void bytebuf_free(bytebuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Make room for `extra` more bytes; the caller checked the limit. */
static void bytebuf_reserve(bytebuf *b, size_t extra) {
    size_t need = b->len + extra;
    if (need <= b->cap) return;
    size_t cap = LRA_MAX(need, b->cap ? b->cap + b->cap / 2 : (size_t)65536);
    if (cap > b->max_bytes) cap = b->max_bytes;
    if (cap < need) cap = need;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

static int over_limit(const bytebuf *b, const char *what, char *err, size_t errlen) {
    return lra_errorf(err, errlen,
                      "%s: the data is larger than the inflate limit of %zu bytes (task.max_bytes; raise it if the "
                      "source is meant to be this large)",
                      what, b->max_bytes);
}

int bytebuf_append(bytebuf *b, const void *src, size_t len, const char *what, char *err, size_t errlen) {
    if (b->len > b->max_bytes || len > b->max_bytes - b->len) return over_limit(b, what, err, errlen);
    if (!len) return 0;
    bytebuf_reserve(b, len);
    memcpy(b->data + b->len, src, len);
    b->len += len;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Plain                                                                                       */

int bytesrc_read_plain(bytebuf *b, const char *file, char *err, size_t errlen) {
    FILE *f = fopen(file, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
    size_t start = b->len;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) &&
        ((uint64_t)st.st_size > (uint64_t)b->max_bytes || b->len + (size_t)st.st_size > b->max_bytes)) {
        fclose(f);
        return over_limit(b, file, err, errlen);
    }
    uint8_t *chunk = xmalloc(CHUNK);
    int rc = 0;
    for (;;) {
        size_t got = fread(chunk, 1, CHUNK, f);
        if (got && bytebuf_append(b, chunk, got, file, err, errlen)) {
            rc = -1;
            break;
        }
        if (got < CHUNK) {
            if (ferror(f)) rc = lra_errorf(err, errlen, "%s: read error: %s", file, strerror(errno));
            break;
        }
    }
    free(chunk);
    fclose(f);
    if (rc) b->len = start;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* gzip / dictzip                                                                              */

int bytesrc_read_gzip(bytebuf *b, const char *file, char *err, size_t errlen) {
    FILE *f = fopen(file, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
    size_t start = b->len;
    uint8_t *in = xmalloc(CHUNK), *out = xmalloc(CHUNK);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int rc = -1, zinit = 0;
    uint64_t consumed = 0; /* compressed bytes handed to zlib before the current chunk */
    size_t have = fread(in, 1, CHUNK, f);
    if (have == 0) {
        if (ferror(f)) lra_errorf(err, errlen, "%s: read error: %s", file, strerror(errno));
        else lra_errorf(err, errlen, "%s: empty file (no gzip data)", file);
        goto done;
    }
    if (have < 2 || in[0] != 0x1f || in[1] != 0x8b) {
        lra_errorf(err, errlen, "%s: not gzip data (no 1f 8b magic bytes at the start)", file);
        goto done;
    }
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        lra_errorf(err, errlen, "%s: zlib: cannot initialise inflate", file);
        goto done;
    }
    zinit = 1;
    zs.next_in = in;
    zs.avail_in = (uInt)have;
    int at_eof = have < CHUNK;
    for (;;) {
        if (zs.avail_in == 0 && !at_eof) {
            consumed += have;
            have = fread(in, 1, CHUNK, f);
            if (ferror(f)) {
                lra_errorf(err, errlen, "%s: read error: %s", file, strerror(errno));
                goto done;
            }
            at_eof = have < CHUNK;
            zs.next_in = in;
            zs.avail_in = (uInt)have;
        }
        zs.next_out = out;
        zs.avail_out = CHUNK;
        int z = inflate(&zs, Z_NO_FLUSH);
        size_t produced = CHUNK - zs.avail_out;
        if (produced && bytebuf_append(b, out, produced, file, err, errlen)) goto done;
        if (z == Z_STREAM_END) {
            /* Another member, zero padding, or junk. Look at what follows (it may need a read). */
            for (;;) {
                while (zs.avail_in > 0 && zs.next_in[0] == 0) zs.next_in++, zs.avail_in--;
                if (zs.avail_in > 0 || at_eof) break;
                consumed += have;
                have = fread(in, 1, CHUNK, f);
                if (ferror(f)) {
                    lra_errorf(err, errlen, "%s: read error: %s", file, strerror(errno));
                    goto done;
                }
                at_eof = have < CHUNK;
                zs.next_in = in;
                zs.avail_in = (uInt)have;
            }
            if (zs.avail_in == 0) break; /* the end (after optional zero padding) */
            if (zs.next_in[0] != 0x1f) {
                lra_errorf(err, errlen, "%s: trailing garbage after gzip data at byte %llu", file,
                           (unsigned long long)(consumed + (uint64_t)(zs.next_in - in)));
                goto done;
            }
            inflateReset(&zs);
            continue;
        }
        if (z == Z_OK) continue;
        if (z == Z_BUF_ERROR && zs.avail_in == 0 && at_eof) {
            lra_errorf(err, errlen, "%s: corrupt or truncated gzip data (zlib: unexpected end of file)", file);
            goto done;
        }
        if (z == Z_BUF_ERROR) continue; /* no progress possible with this chunk: read more */
        lra_errorf(err, errlen, "%s: corrupt or truncated gzip data (zlib: %s)", file,
                   zs.msg ? zs.msg : z == Z_MEM_ERROR ? "out of memory" : "error");
        goto done;
    }
    rc = 0;
done:
    if (zinit) inflateEnd(&zs);
    free(in);
    free(out);
    fclose(f);
    if (rc) b->len = start;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* zip                                                                                         */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

enum { ZIP_MAX_MEMBERS = 1 << 20 }; /* more is not a corpus: refuse rather than allocate */

static const char *zip_method_name(unsigned m) {
    switch (m) {
    case 0: return "stored";
    case 1: return "shrink";
    case 2: case 3: case 4: case 5: return "reduce";
    case 6: return "implode";
    case 8: return "deflate";
    case 9: return "deflate64";
    case 10: return "PKWARE DCL implode";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 18: return "IBM TERSE";
    case 19: return "IBM LZ77";
    case 93: return "zstd";
    case 94: return "mp3";
    case 95: return "xz";
    case 96: return "jpeg";
    case 97: return "wavpack";
    case 98: return "ppmd";
    case 99: return "AES encryption";
    default: return "unknown";
    }
}

/* Read n bytes at offset off; 0, or -1 when the file is shorter. */
static int read_at(FILE *f, uint64_t off, void *buf, size_t n) {
    if (fseeko(f, (off_t)off, SEEK_SET) != 0) return -1;
    return fread(buf, 1, n, f) == n ? 0 : -1;
}

int bytesrc_zip_list(const char *file, bytesrc_zip_entry **out, int *n_out, char *err, size_t errlen) {
    *out = NULL;
    *n_out = 0;
    FILE *f = fopen(file, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
    int rc = -1;
    uint8_t *tail = NULL, *cd = NULL;
    bytesrc_zip_entry *ent = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        lra_errorf(err, errlen, "%s: cannot stat: %s", file, strerror(errno));
        goto done;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size == 0) {
        lra_errorf(err, errlen, "%s: not a zip archive (empty file)", file);
        goto done;
    }
    uint8_t head[4] = {0};
    int zip_magic = read_at(f, 0, head, 4) == 0 && head[0] == 'P' && head[1] == 'K' &&
                    ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6));
    /* The EOCD record: 22 bytes + a comment of up to 65535, at the very end of the file. */
    size_t tl = (size_t)LRA_MIN(size, (uint64_t)(22 + 65535));
    tail = xmalloc(tl);
    if (read_at(f, size - tl, tail, tl)) {
        lra_errorf(err, errlen, "%s: read error", file);
        goto done;
    }
    long eocd = -1;
    for (long i = (long)tl - 22; i >= 0; i--)
        if (tail[i] == 'P' && tail[i + 1] == 'K' && tail[i + 2] == 5 && tail[i + 3] == 6 &&
            (size_t)i + 22 + rd16(tail + i + 20) == tl) {
            eocd = i;
            break;
        }
    if (eocd < 0) {
        if (zip_magic)
            lra_errorf(err, errlen, "%s: truncated zip archive (no end-of-central-directory record at the end)", file);
        else
            lra_errorf(err, errlen, "%s: not a zip archive (no PK signature, no end-of-central-directory record)",
                       file);
        goto done;
    }
    const uint8_t *e = tail + eocd;
    uint64_t eocd_off = size - tl + (uint64_t)eocd, end_off = eocd_off;
    uint64_t disk = rd16(e + 4), cd_disk = rd16(e + 6), n_disk = rd16(e + 8), n_total = rd16(e + 10);
    uint64_t cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    /* zip64 (APPNOTE 4.3.14, 4.3.15): a locator just before the EOCD record points at the zip64 end
     * record, whose 64-bit counts and offsets replace the EOCD's. */
    if (eocd_off >= 20) {
        uint8_t loc[20], z64[56];
        if (read_at(f, eocd_off - 20, loc, 20) == 0 && rd32(loc) == 0x07064b50u) {
            uint64_t z64_off = rd64(loc + 8);
            if (rd32(loc + 16) != 1) {
                lra_errorf(err, errlen, "%s: multi-disk (split or spanned) zip archives are not supported", file);
                goto done;
            }
            if (z64_off + 56 > eocd_off - 20 || read_at(f, z64_off, z64, 56) || rd32(z64) != 0x06064b50u) {
                lra_errorf(err, errlen, "%s: corrupt or truncated zip archive (no zip64 end record at byte %llu)", file,
                           (unsigned long long)z64_off);
                goto done;
            }
            disk = rd32(z64 + 16), cd_disk = rd32(z64 + 20), n_disk = rd64(z64 + 24), n_total = rd64(z64 + 32);
            cd_size = rd64(z64 + 40), cd_off = rd64(z64 + 48);
            end_off = z64_off;
        }
    }
    if (n_total > ZIP_MAX_MEMBERS) {
        lra_errorf(err, errlen, "%s: the zip archive has %llu members, more than the %d read here", file,
                   (unsigned long long)n_total, ZIP_MAX_MEMBERS);
        goto done;
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n_total) {
        lra_errorf(err, errlen, "%s: multi-disk (split or spanned) zip archives are not supported", file);
        goto done;
    }
    if (cd_off > end_off || cd_size > end_off - cd_off) {
        lra_errorf(err, errlen,
                   "%s: truncated zip archive (central directory at bytes %llu..%llu lies past the end record at %llu)",
                   file, (unsigned long long)cd_off, (unsigned long long)(cd_off + cd_size),
                   (unsigned long long)end_off);
        goto done;
    }
    cd = xmalloc(cd_size ? cd_size : 1);
    if (cd_size && read_at(f, cd_off, cd, cd_size)) {
        lra_errorf(err, errlen, "%s: read error in the central directory", file);
        goto done;
    }
    ent = xcalloc(n_total ? (size_t)n_total : 1, sizeof *ent);
    size_t p = 0;
    for (unsigned i = 0; i < (unsigned)n_total; i++) {
        if (p + 46 > cd_size || rd32(cd + p) != 0x02014b50u) {
            lra_errorf(err, errlen, "%s: corrupt zip central directory (entry %u of %u: bad signature at byte %llu)",
                       file, i + 1, (unsigned)n_total, (unsigned long long)(cd_off + p));
            goto done;
        }
        const uint8_t *h = cd + p;
        unsigned nl = rd16(h + 28), xl = rd16(h + 30), cl = rd16(h + 32);
        if (p + 46 + nl + xl + cl > cd_size) {
            lra_errorf(err, errlen, "%s: corrupt zip central directory (entry %u runs past its end)", file, i + 1);
            goto done;
        }
        bytesrc_zip_entry *z = &ent[i];
        z->flags = rd16(h + 8);
        z->method = rd16(h + 10);
        z->crc32 = rd32(h + 16);
        z->csize = rd32(h + 20);
        z->usize = rd32(h + 24);
        z->local_offset = rd32(h + 42);
        if (z->csize == 0xFFFFFFFFu || z->usize == 0xFFFFFFFFu || z->local_offset == 0xFFFFFFFFu) {
            /* The zip64 extended information extra field (id 1, APPNOTE 4.5.3) holds, in this order,
             * the 64-bit values of those that are 0xFFFFFFFF here. */
            const uint8_t *x = h + 46 + nl, *xe = x + xl;
            int found = 0;
            while (x + 4 <= xe && !found) {
                unsigned id = rd16(x), len = rd16(x + 2);
                if (x + 4 + len > xe) break;
                if (id == 1) {
                    const uint8_t *v = x + 4, *ve = v + len;
                    found = 1;
                    uint64_t *fld[3] = {&z->usize, &z->csize, &z->local_offset};
                    for (int k = 0; k < 3; k++)
                        if (*fld[k] == 0xFFFFFFFFu) {
                            if (v + 8 > ve) found = -1;
                            else *fld[k] = rd64(v), v += 8;
                        }
                }
                x += 4 + len;
            }
            if (found != 1) {
                lra_errorf(err, errlen, "%s: corrupt zip central directory (entry %u: zip64 sizes without their extra "
                           "field)", file, i + 1);
                goto done;
            }
        }
        size_t keep = LRA_MIN((size_t)nl, sizeof z->name - 1);
        memcpy(z->name, h + 46, keep);
        z->name[keep] = '\0';
        p += 46 + nl + xl + cl;
    }
    *out = ent;
    *n_out = (int)n_total;
    ent = NULL;
    rc = 0;
done:
    free(ent);
    free(cd);
    free(tail);
    fclose(f);
    return rc;
}

static int is_dir_entry(const bytesrc_zip_entry *z) {
    size_t l = strlen(z->name);
    return l > 0 && z->name[l - 1] == '/';
}

/* "a, b, c" (file members only), cut with "..." to fit. */
static void member_list(const bytesrc_zip_entry *ent, int n, char *buf, size_t len) {
    buf[0] = '\0';
    size_t used = 0;
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (is_dir_entry(&ent[i])) continue;
        int w = snprintf(buf + used, len - used, "%s%s", first ? "" : ", ", ent[i].name);
        if (w < 0 || (size_t)w >= len - used) {
            if (len > 4) snprintf(buf + (used < len - 4 ? used : len - 4), 4, "...");
            return;
        }
        used += (size_t)w;
        first = 0;
    }
    if (first) snprintf(buf, len, "none");
}

int bytesrc_read_zip(bytebuf *b, const char *file, const char *member, char *err, size_t errlen) {
    bytesrc_zip_entry *ent;
    int n;
    if (bytesrc_zip_list(file, &ent, &n, err, errlen)) return -1;
    char names[1024];
    member_list(ent, n, names, sizeof names);
    int pick = -1;
    if (member && member[0]) {
        for (int i = 0; i < n && pick < 0; i++)
            if (strcmp(ent[i].name, member) == 0) pick = i;
        if (pick < 0) {
            lra_errorf(err, errlen, "%s: no member '%s' in the zip archive (members: %s)", file, member, names);
            free(ent);
            return -1;
        }
    } else {
        int files = 0;
        for (int i = 0; i < n; i++)
            if (!is_dir_entry(&ent[i])) files++, pick = pick < 0 ? i : pick;
        if (files != 1) {
            lra_errorf(err, errlen,
                       files ? "%s: the zip archive has %d members; choose one with task.member (members: %s)"
                             : "%s: the zip archive has %d members (%s): nothing to read",
                       file, files, names);
            free(ent);
            return -1;
        }
    }
    bytesrc_zip_entry z = ent[pick];
    free(ent);
    if ((z.flags & 1) || z.method == 99)
        return lra_errorf(err, errlen, "%s: member %s is encrypted (not supported)", file, z.name);
    if (z.method != 0 && z.method != 8)
        return lra_errorf(err, errlen,
                          "%s: member %s uses compression method %u (%s), not supported (only stored and deflate)",
                          file, z.name, z.method, zip_method_name(z.method));
    char what[1200];
    snprintf(what, sizeof what, "%s: member %s", file, z.name);
    if (b->len > b->max_bytes || z.usize > b->max_bytes - b->len)
        return lra_errorf(err, errlen,
                          "%s inflates to %llu bytes, over the inflate limit of %zu bytes (task.max_bytes; raise it "
                          "if the source is meant to be this large)",
                          what, (unsigned long long)z.usize, b->max_bytes - LRA_MIN(b->len, b->max_bytes));
    if (z.method == 0 && z.csize != z.usize)
        return lra_errorf(err, errlen, "%s: stored, but its sizes differ (%llu compressed, %llu uncompressed)", what,
                          (unsigned long long)z.csize, (unsigned long long)z.usize);

    FILE *f = fopen(file, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
    size_t start = b->len;
    int rc = -1, zinit = 0;
    uint8_t *in = xmalloc(CHUNK);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    uint8_t lh[30];
    if (read_at(f, z.local_offset, lh, 30) || rd32(lh) != 0x04034b50u) {
        lra_errorf(err, errlen, "%s: corrupt or truncated zip archive (no local header at byte %llu)", what,
                   (unsigned long long)z.local_offset);
        goto done;
    }
    uint64_t data_off = (uint64_t)z.local_offset + 30 + rd16(lh + 26) + rd16(lh + 28);
    if (fseeko(f, (off_t)data_off, SEEK_SET) != 0) {
        lra_errorf(err, errlen, "%s: truncated zip archive (data at byte %llu)", what, (unsigned long long)data_off);
        goto done;
    }
    bytebuf_reserve(b, (size_t)z.usize);
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    uint64_t left = z.csize; /* compressed bytes not yet read */
    if (z.method == 8) {
        if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
            lra_errorf(err, errlen, "%s: zlib: cannot initialise inflate", what);
            goto done;
        }
        zinit = 1;
    }
    int ended = 0;
    while (!ended) {
        size_t want = (size_t)LRA_MIN(left, (uint64_t)CHUNK);
        size_t got = want ? fread(in, 1, want, f) : 0;
        if (got < want) {
            lra_errorf(err, errlen, "%s: truncated zip archive (%llu of its %llu compressed bytes are missing)", what,
                       (unsigned long long)(left - got), (unsigned long long)z.csize);
            goto done;
        }
        left -= got;
        if (z.method == 0) {
            if (bytebuf_append(b, in, got, what, err, errlen)) goto done;
            if (left == 0) ended = 1;
            continue;
        }
        zs.next_in = in;
        zs.avail_in = (uInt)got;
        do {
            /* Inflate straight into the buffer, at most up to the declared size (+1 to see a lie). */
            size_t room = (size_t)z.usize - (b->len - start);
            uint8_t extra;
            zs.next_out = room ? b->data + b->len : &extra;
            zs.avail_out = room ? (uInt)LRA_MIN(room, (size_t)UINT_MAX) : 1;
            uInt before = zs.avail_out;
            int zr = inflate(&zs, Z_NO_FLUSH);
            size_t produced = before - zs.avail_out;
            if (!room && produced) {
                lra_errorf(err, errlen, "%s inflates to more than the %llu bytes the central directory says", what,
                           (unsigned long long)z.usize);
                goto done;
            }
            b->len += produced;
            if (zr == Z_STREAM_END) {
                ended = 1;
                break;
            }
            if (zr == Z_BUF_ERROR) break; /* needs more input */
            if (zr != Z_OK) {
                lra_errorf(err, errlen, "%s: corrupt deflate data (zlib: %s)", what, zs.msg ? zs.msg : "error");
                goto done;
            }
        } while (zs.avail_in > 0 || zs.avail_out == 0);
        if (!ended && left == 0) {
            lra_errorf(err, errlen, "%s: corrupt or truncated deflate data (zlib: unexpected end of the member's data)",
                       what);
            goto done;
        }
    }
    size_t got_len = b->len - start;
    if (got_len != z.usize) {
        lra_errorf(err, errlen, "%s inflates to %zu bytes, the central directory says %llu", what, got_len,
                   (unsigned long long)z.usize);
        goto done;
    }
    for (size_t o = 0; o < got_len;) {
        size_t k = LRA_MIN(got_len - o, (size_t)1 << 30);
        crc = (uint32_t)crc32(crc, b->data + start + o, (uInt)k);
        o += k;
    }
    if (crc != z.crc32) {
        lra_errorf(err, errlen, "%s: CRC-32 mismatch (computed %08x, stored %08x): the archive is corrupt", what, crc,
                   z.crc32);
        goto done;
    }
    rc = 0;
done:
    if (zinit) inflateEnd(&zs);
    free(in);
    fclose(f);
    if (rc) b->len = start;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Detection, directories                                                                      */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int bytesrc_detect(const char *path, char *err, size_t errlen) {
    if (is_dir(path)) {
        char t[PATH_MAX + 8];
        snprintf(t, sizeof t, "%s/train", path);
        return is_dir(t) ? BS_PG19 : BS_DIRS;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    uint8_t m[4] = {0};
    size_t got = fread(m, 1, 4, f);
    fclose(f);
    if (got >= 2 && m[0] == 0x1f && m[1] == 0x8b) return BS_GZIP;
    if (got >= 4 && m[0] == 'P' && m[1] == 'K' && ((m[2] == 3 && m[3] == 4) || (m[2] == 5 && m[3] == 6))) return BS_ZIP;
    if (ends_with(path, ".gz") || ends_with(path, ".dz")) return BS_GZIP;
    if (ends_with(path, ".zip")) return BS_ZIP;
    return BS_PLAIN;
}

int bytesrc_read_file(bytebuf *b, const char *file, bytesrc_format fmt, const char *member, char *err,
                      size_t errlen) {
    if (fmt == BS_AUTO) {
        int d = bytesrc_detect(file, err, errlen);
        if (d < 0) return -1;
        fmt = (bytesrc_format)d;
    }
    switch (fmt) {
    case BS_PLAIN: return bytesrc_read_plain(b, file, err, errlen);
    case BS_GZIP: return bytesrc_read_gzip(b, file, err, errlen);
    case BS_ZIP: return bytesrc_read_zip(b, file, member, err, errlen);
    default: return lra_errorf(err, errlen, "%s: is a directory, not a file", file);
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void push(char ***v, int *n, int *cap, char *s) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *v = xrealloc(*v, (size_t)*cap * sizeof **v);
    }
    (*v)[(*n)++] = s;
}

/* The entries of dir (no '.' names), sorted bytewise; files are taken and sub-directories expanded
 * in place, in that order (so DIR/a/x comes before DIR/a.txt: per-level order, not a sort of the
 * full paths). */
static int list_rec(const char *dir, char ***v, int *n, int *cap, int depth, char *err, size_t errlen) {
    if (depth > 64) return lra_errorf(err, errlen, "%s: directories nested too deep (a symlink loop?)", dir);
    DIR *dp = opendir(dir);
    if (!dp) return lra_errorf(err, errlen, "%s: cannot read directory: %s", dir, strerror(errno));
    char **names = NULL;
    int nn = 0, nc = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL)
        if (e->d_name[0] != '.') push(&names, &nn, &nc, xstrdup(e->d_name));
    closedir(dp);
    if (nn) qsort(names, (size_t)nn, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 0; i < nn; i++) {
        char full[PATH_MAX];
        int w = snprintf(full, sizeof full, "%s/%s", dir, names[i]);
        if (rc == 0 && (w < 0 || (size_t)w >= sizeof full))
            rc = lra_errorf(err, errlen, "%s/%s: path too long", dir, names[i]);
        struct stat st;
        if (rc == 0 && stat(full, &st) == 0) {
            if (S_ISDIR(st.st_mode)) rc = list_rec(full, v, n, cap, depth + 1, err, errlen);
            else if (S_ISREG(st.st_mode)) push(v, n, cap, xstrdup(full));
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int bytesrc_list_files(const char *dir, char ***files, int *n, char *err, size_t errlen) {
    char **v = NULL;
    int cnt = 0, cap = 0;
    if (list_rec(dir, &v, &cnt, &cap, 0, err, errlen)) {
        for (int i = 0; i < cnt; i++) free(v[i]);
        free(v);
        *files = NULL;
        *n = 0;
        return -1;
    }
    *files = v;
    *n = cnt;
    return 0;
}

int bytesrc_pg19_split_dir(const char *root, int s, char *out, size_t outlen, char *err, size_t errlen) {
    static const char *const names[3][4] = {{"train", NULL}, {"validation", "valid", "val", NULL}, {"test", NULL}};
    for (int k = 0; names[s][k]; k++) {
        int w = snprintf(out, outlen, "%s/%s", root, names[s][k]);
        if (w >= 0 && (size_t)w < outlen && is_dir(out)) return 0;
    }
    return lra_errorf(err, errlen, "%s: PG19 layout has no %s/ directory (expected train/, validation/, test/)", root,
                      s == 1 ? "validation" : names[s][0]);
}
