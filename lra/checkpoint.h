/* checkpoint.h - save and load a model, its AdamW state and the training loop's position, so an
 * interrupted run continues bit for bit and analyses can load trained models (DESIGN.md
 * "Training"; issue 6 "Checkpoints").
 *
 * File format (version 1, every number little-endian; CRC-32 is zlib's crc32):
 *
 *   offset  size  field
 *   0       8     magic "LRACKPT1"
 *   8       4     u32 format version (CKPT_VERSION)
 *   12      4     u32 n_entries, the tensor table's length
 *   16      8     u64 data_offset: where the data section starts (8-aligned)
 *   24      8     u64 file_size: bytes of the whole file (a shorter file is truncated)
 *   32      24    run_id (16 hex digits, NUL padded): the run the file belongs to
 *   56      8     u64 model_id: hash of the model-defining config (ckpt_model_id)
 *   64      32    mechanism YAML name          96  160  attention label (non-default params)
 *   256     32    task name
 *   288     48    i32 x 12: task kind, n_layers, d_model, n_heads, d_ff, mlp_dim, seq_len,
 *                 positions N, embedding rows V, n_classes K, head input width, inputs per example
 *   336     48    i64 x 6: step (optimizer steps done), configured steps, best_step, epoch, pos,
 *                 win_n
 *   384     40    f64 x 5: best_val, win_loss, last_win_loss, last_val, elapsed_s
 *   424     4     u32 OpenMP threads of the writer (bitwise resumption assumes the same count)
 *   428     4     u32 CRC-32 of bytes [0, 428)
 *   432     96 x n_entries  tensor table: name[64] (NUL padded), u32 dtype (CKPT_F32, CKPT_F64,
 *                 CKPT_U8), u32 reserved, u64 count (elements), u64 offset (from the start of
 *                 the file), u32 CRC-32 of the entry's data bytes, u32 reserved
 *   ...     4     u32 CRC-32 of the table, then zero padding to data_offset
 *   data_offset   the entries' data, each 8-aligned
 *
 * Entries: "param/<tensor>", "adam_m/<tensor>", "adam_v/<tensor>", "best/<tensor>" for every row
 * of the model's tensor table (<tensor> = "wte", "L0.wq", ..., "head_b2"), float32 with
 * model_t.tensors[i].n elements; "state/L<l>.attn" (u8) for a mechanism's persistent buffers
 * (Performer's random features, Reformer's rotations); "train/step_times" (f64, seconds of each
 * step done) and "train/curve" (f64, 5 per row: step, train_loss, val, lr, elapsed_s: the
 * curves.csv rows already written).
 *
 * Random streams are counter-based (rng.h) and keyed by the step, so the step counter, the data
 * position (epoch, pos) and the learning-rate step need no generator state.
 */
#ifndef LRA_CHECKPOINT_H
#define LRA_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"

#define CKPT_MAGIC "LRACKPT1"
#define CKPT_VERSION 1u

enum { CKPT_F32 = 1, CKPT_F64 = 2, CKPT_U8 = 3 };

/* What the header says about a file (ckpt_read_info). */
typedef struct {
    uint32_t version;
    char run_id[24];
    uint64_t model_id;
    char mechanism[32];
    char label[160];
    char task[32];
    int kind, n_layers, d_model, n_heads, d_ff, mlp_dim, seq_len, n_pos, vocab_rows, n_classes, head_in,
        n_inputs;
    long step, steps;
    long best_step;        /* step of the best-validation snapshot, -1 if none */
    int threads;           /* OpenMP threads of the process that wrote it */
    int n_entries;
    uint64_t file_size;
} ckpt_info;

/* One curves.csv row already written (ckpt_train_state.curve). */
typedef struct {
    double step, train_loss, val, lr, elapsed_s;
} ckpt_curve_row;

/* The training loop's state beyond the model (train.c). The model's own step counter is m->step. */
typedef struct {
    long epoch;            /* next epoch index of the shuffle stream to draw */
    long pos;              /* position in the current epoch's permutation (train split size: none) */
    long best_step;        /* -1 before the first evaluation */
    double best_val;       /* NaN before the first evaluation */
    double win_loss;       /* sum of training losses since the last evaluation (nats) */
    long win_n;            /* steps in that sum */
    double last_win_loss;  /* mean training loss of the last evaluation window, NaN if none */
    double last_val;       /* last validation metric, NaN if none */
    double elapsed_s;      /* wall seconds of the run up to the save */
    int n_step_times;      /* == step */
    double *step_times;    /* (n_step_times) seconds per step; malloc'd by ckpt_load */
    int n_curve;
    ckpt_curve_row *curve; /* (n_curve) malloc'd by ckpt_load */
} ckpt_train_state;

/* Hash of everything that defines the model's parameters and their meaning: the model: and
 * attention: sections of the resolved config, the task name and seq_len, and the embedding rows
 * and class count. Two configs with equal ids have the same tensor table. */
uint64_t ckpt_model_id(const run_cfg *c, int vocab_rows, int n_classes);

/* Write m (parameters, AdamW m and v, best-validation snapshot, mechanism state, m->step) and ts
 * (NULL: an empty loop state) to path atomically: a temporary file in the same directory, fsync,
 * rename, fsync of the directory. A reader sees the old file or the new one, never half of one.
 * Returns 0, or -1 with "PATH: reason" in err. */
int ckpt_save(const char *path, const model_t *m, const ckpt_train_state *ts, char *err, size_t errlen);

/* Read and check the header of path (magic, version, size, header CRC). Returns 0, or -1 with
 * "PATH: reason" in err. */
int ckpt_read_info(const char *path, ckpt_info *info, char *err, size_t errlen);

/* Load path into m, which must be built (model_build) for a config with the same model: the
 * header's dimensions, mechanism and ckpt_model_id must match m's, and every tensor must be there
 * with its size; with require_run set the run_id must be m->cfg->run_id too (resuming a run).
 * Restores the parameters, AdamW state, best snapshot, mechanism state and m->step; fills ts
 * when non-NULL (free with ckpt_train_state_free). Refuses bad magic, another version, another
 * run or model, a truncated file and CRC mismatches with "PATH: what differs". On error m's
 * contents are unspecified (rebuild it). */
int ckpt_load(const char *path, model_t *m, int require_run, ckpt_train_state *ts, char *err, size_t errlen);

void ckpt_train_state_free(ckpt_train_state *ts);

enum { CKPT_WEIGHTS_LAST = 0, CKPT_WEIGHTS_BEST = 1 };

/* For analyses: build a model for run config c with batch size B, with the vocabulary, classes
 * and task kind recorded in the checkpoint at path (no task data needed), load it and, with
 * which = CKPT_WEIGHTS_BEST, put the best-validation parameters in place (the ones the test was
 * scored with). max_mem as in model_build. Returns 0, or -1 with the reason in err (m is freed). */
int ckpt_build_model(model_t *m, const run_cfg *c, int B, const char *path, int which, long long max_mem, char *err,
                     size_t errlen);

#endif
