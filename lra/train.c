/* train.c - the training loop (DESIGN.md "Training"): batches in a seeded order, forward,
 * backward, clipping, AdamW with warmup and decay, evaluation every eval_every steps, and the test
 * split scored with the parameters of the best validation step (not the last: LRA's own code
 * scored the last checkpoint, see reference/lra.md issue #15). */
#include "train.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "csv.h"
#include "lm.h"
#include "model.h"
#include "optim.h"
#include "results.h"
#include "rng.h"

void train_log(const train_opts *o, const char *fmt, ...) {
    va_list ap;
    if (o->log) {
        va_start(ap, fmt);
        vfprintf(o->log, fmt, ap);
        va_end(ap);
        fflush(o->log);
    }
    if (o->verbose) {
        if (o->tty) fputs("\r\033[K", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
}

/* Fisher-Yates permutation of [0, n) for an epoch, from the shuffle stream. */
static void epoch_order(int *perm, int n, uint64_t seed, long epoch) {
    for (int i = 0; i < n; i++) perm[i] = i;
    rng_t r = rng_make(seed, rng_substream(RNG_SHUFFLE, (uint64_t)epoch, 0));
    for (int i = n - 1; i > 0; i--) {
        int j = rng_int(&r, 0, i);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* Accuracy over the first max_batches batches of split s (0 = all), in order. */
static double evaluate(model_t *m, const task_split *s, int max_batches) {
    int B = m->B, correct = 0, counted = 0;
    int *idx = xmalloc(sizeof(int) * (size_t)B);
    int nb = LRA_CEIL_DIV(s->n, B);
    if (max_batches > 0 && nb > max_batches) nb = max_batches;
    for (int bi = 0; bi < nb; bi++) {
        for (int b = 0; b < B; b++) {
            int e = bi * B + b;
            idx[b] = e < s->n ? e : -1;
        }
        model_load_batch(m, s, idx);
        int c = 0, n = 0;
        model_forward(m, 0, &c, &n);
        correct += c;
        counted += n;
    }
    free(idx);
    return counted ? (double)correct / counted : NAN;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void progress_bar(const train_opts *o, int step, int steps, double loss, double val, double tps, double eta) {
    char bar[21];
    int fill = steps ? (int)(20.0 * step / steps) : 20;
    for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    fprintf(stderr, "\r\033[K%s [%s] step %d/%d loss %.4f val %s%.1f%% %.0f tok/s ETA %d:%02d",
            o->run_label ? o->run_label : "", bar, step, steps, loss, isnan(val) ? "-" : "", isnan(val) ? 0.0 : 100 * val,
            tps, (int)(eta / 60), (int)fmod(eta, 60));
    fflush(stderr);
}

/* The curves.csv fields of one evaluation point (fields[] point into f or c). */
static void curve_fields(const run_cfg *c, int step, double loss, double val, float lr, double elapsed,
                         char f[CURVES_N_COLUMNS][64], const char *fields[CURVES_N_COLUMNS]) {
    snprintf(f[COL_CURVES_run_id], 64, "%s", c->run_id);
    snprintf(f[COL_CURVES_task], 64, "%s", c->task.name);
    snprintf(f[COL_CURVES_seq_len], 64, "%d", c->task.seq_len);
    snprintf(f[COL_CURVES_seed], 64, "%d", c->train.seed);
    snprintf(f[COL_CURVES_step], 64, "%d", step);
    snprintf(f[COL_CURVES_train_loss], 64, "%.6g", loss);
    snprintf(f[COL_CURVES_val], 64, "%.6g", val);
    snprintf(f[COL_CURVES_lr], 64, "%.6g", (double)lr);
    snprintf(f[COL_CURVES_elapsed_s], 64, "%.3f", elapsed);
    for (int i = 0; i < CURVES_N_COLUMNS; i++) fields[i] = f[i];
    fields[COL_CURVES_label] = c->attn_label;
}

void train_append_curve(const train_opts *o, const run_cfg *c, int step, double loss, double val, float lr,
                        double elapsed) {
    if (!o->curves_path) return;
    char f[CURVES_N_COLUMNS][64];
    const char *fields[CURVES_N_COLUMNS];
    curve_fields(c, step, loss, val, lr, elapsed, f, fields);
    char err[512];
    if (csv_append_row(o->curves_path, curves_columns, fields, CURVES_N_COLUMNS, err, sizeof err))
        train_log(o, "warning: %s\n", err);
}

/* Resuming: make this run's rows of curves.csv exactly the n rows saved in the checkpoint. Rows a
 * killed process wrote after its last checkpoint are dropped (they will be written again), and
 * rows that `lra run --resume` dropped are put back. Other runs' rows are kept in order; the file
 * is rewritten in place under the flock that csv_append_row takes, so concurrent shards never
 * lose a row. Returns 0, or -1 with err. */
static int curves_restore(const char *path, const run_cfg *c, const ckpt_curve_row *rows, int n, char *err,
                          size_t errlen) {
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return lra_errorf(err, errlen, "%s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX)) {
        close(fd);
        return lra_errorf(err, errlen, "%s: flock: %s", path, strerror(errno));
    }
    csv_table tb;
    memset(&tb, 0, sizeof tb);
    struct stat sb;
    int rc = 0, have = fstat(fd, &sb) == 0 && sb.st_size > 0;
    if (have && csv_read_fd(path, fd, &tb, err, errlen)) rc = -1;
    int col = have && !rc ? csv_col(&tb, "run_id") : -1;
    if (have && !rc && col < 0) rc = lra_errorf(err, errlen, "%s: no run_id column", path);
    char *buf = NULL;
    size_t len = 0;
    FILE *mf = rc ? NULL : open_memstream(&buf, &len);
    if (mf) {
        char *line = csv_format_row(curves_columns, CURVES_N_COLUMNS);
        fputs(line, mf);
        free(line);
        for (int r = 1; r < tb.n_rows; r++) {
            if (!strcmp(tb.rows[r][col], c->run_id)) continue;
            line = csv_format_row((const char *const *)tb.rows[r], tb.n_cols);
            fputs(line, mf);
            free(line);
        }
        for (int i = 0; i < n; i++) {
            char f[CURVES_N_COLUMNS][64];
            const char *fields[CURVES_N_COLUMNS];
            curve_fields(c, (int)rows[i].step, rows[i].train_loss, rows[i].val, (float)rows[i].lr, rows[i].elapsed_s,
                         f, fields);
            line = csv_format_row(fields, CURVES_N_COLUMNS);
            fputs(line, mf);
            free(line);
        }
        fclose(mf);
        if (ftruncate(fd, 0)) rc = lra_errorf(err, errlen, "%s: %s", path, strerror(errno));
        for (size_t off = 0; !rc && off < len;) {
            ssize_t w = pwrite(fd, buf + off, len - off, (off_t)off);
            if (w <= 0) rc = lra_errorf(err, errlen, "%s: write: %s", path, strerror(errno));
            else off += (size_t)w;
        }
        if (!rc) fsync(fd);
        free(buf);
    }
    if (have) csv_free(&tb);
    flock(fd, LOCK_UN);
    close(fd);
    return rc;
}

/* Write the run's checkpoint (model + loop state s); a failure is logged, the run goes on. */
static void save_checkpoint(const train_opts *o, const model_t *m, const ckpt_train_state *s) {
    char err[1024];
    double ts = lra_now();
    if (ckpt_save(o->ckpt_path, m, s, err, sizeof err)) train_log(o, "warning: checkpoint not written: %s\n", err);
    else if (o->log)
        fprintf(o->log, "checkpoint: step %ld written to %s (%.2f s)\n", m->step, o->ckpt_path, lra_now() - ts);
}

int train_run(const run_cfg *c, const train_opts *o, run_report *rep) {
    if (c->task_ops->kind == TASK_LM) return lm_train_run(c, o, rep); /* lra/lmtrain.c */
    memset(rep, 0, sizeof *rep);
    rep->best_val = rep->test = rep->majority = rep->train_loss = NAN;
    rep->best_step = -1;
    snprintf(rep->metric, sizeof rep->metric, "accuracy");
    double t0 = lra_now();
    const train_cfg *t = &c->train;

    /* Data */
    task_split splits[N_SPLITS];
    memset(splits, 0, sizeof splits);
    task_env env = {.seed = (uint64_t)c->task.data_seed, .seq_len = c->task.seq_len, .base_dir = c->base_dir,
                    .data_dir = c->task.data_dir};
    char err[1024] = "";
    double td = lra_now();
    if (c->task_ops->build(c->task_params.bytes, &env, splits, err, sizeof err)) {
        snprintf(rep->status, sizeof rep->status, STATUS_FAILED);
        snprintf(rep->reason, sizeof rep->reason, "data: %.240s", err);
        train_log(o, "error: data: %s\n", err);
        rep->wall_s = lra_now() - t0;
        return -1;
    }
    int n_classes = task_n_classes(c->task_ops, c->task_params.bytes, splits);
    rep->majority = task_majority_rate(&splits[SPLIT_TEST], n_classes);
    train_log(o, "data: %s, %d train / %d val / %d test examples, seq_len %d (%.2f s); test majority-class rate %.2f%%\n",
         c->task.name, splits[0].n, splits[1].n, splits[2].n, c->task.seq_len, lra_now() - td, 100 * rep->majority);
    if (splits[SPLIT_TRAIN].n == 0 || splits[SPLIT_VAL].n == 0 || splits[SPLIT_TEST].n == 0) {
        snprintf(rep->status, sizeof rep->status, STATUS_FAILED);
        snprintf(rep->reason, sizeof rep->reason, "data: a split is empty (train %d, val %d, test %d)", splits[0].n,
                 splits[1].n, splits[2].n);
        for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
        rep->wall_s = lra_now() - t0;
        return -1;
    }

    /* Model */
    model_t *m = xcalloc(1, sizeof *m);
    int vocab = c->task_ops->vocab_size(c->task_params.bytes);
    if (model_build(m, c, t->batch_size, vocab, n_classes, c->task_ops->kind, o->max_mem, err, sizeof err)) {
        int oom = strstr(err, "--max-mem") != NULL;
        snprintf(rep->status, sizeof rep->status, "%s", oom ? STATUS_OOM : STATUS_FAILED);
        snprintf(rep->reason, sizeof rep->reason, "%.250s", err);
        rep->mem_planned = (long long)model_planned_total(m);
        train_log(o, "error: %s\n", err);
        model_free(m);
        free(m);
        for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
        rep->wall_s = lra_now() - t0;
        return -1;
    }
    rep->params = (long long)m->n_params_real;
    rep->mem_planned = (long long)model_planned_total(m);
    rep->act_bytes = (long long)model_planned_bytes(m, MEM_ACTS);
    if (o->log) model_print_plan(m, o->log);
    if (o->verbose) model_print_plan(m, stderr);

    /* Loop */
    const task_split *tr = &splits[SPLIT_TRAIN];
    int B = m->B;
    int *perm = xmalloc(sizeof(int) * (size_t)tr->n), *idx = xmalloc(sizeof(int) * (size_t)B);
    double *step_times = xmalloc(sizeof(double) * (size_t)(t->steps > 0 ? t->steps : 1));
    long epoch = 0;
    int pos = tr->n; /* force an epoch_order on the first batch */
    double win_loss = 0, last_win_loss = NAN;
    int win_n = 0;
    double last_val = NAN, t_train = lra_now();
    int status_set = 0;
    double tokens_per_batch = (double)B * m->n_inputs * c->task.seq_len;

    /* Resume from this run's checkpoint when there is one. Every random stream is keyed by the
     * step (dropout, redraws) or the epoch (batch order), so the model, the AdamW state and these
     * few loop variables are all it takes to continue exactly where the saved process was. */
    ckpt_train_state ck;
    memset(&ck, 0, sizeof ck);
    double t_prev = 0;           /* wall seconds of the earlier processes of this run */
    int n_curve = 0, start = 0;  /* curve rows written so far; first step to run */
    ckpt_curve_row *curve = xmalloc(sizeof(ckpt_curve_row) * (size_t)(t->steps / t->eval_every + 2));
    if (o->ckpt_path && access(o->ckpt_path, F_OK) == 0) {
        ckpt_info ci;
        int bad = ckpt_read_info(o->ckpt_path, &ci, err, sizeof err);
        if (!bad && ci.threads != lra_threads())
            train_log(o, "warning: %s was written with %d threads, this process has %d: the results may differ in the "
                    "last bits from an uninterrupted run\n", o->ckpt_path, ci.threads, lra_threads());
        if (!bad) bad = ckpt_load(o->ckpt_path, m, 1, &ck, err, sizeof err);
        if (!bad && (m->step > t->steps || ck.n_step_times != m->step || ck.pos < 0 || ck.pos > tr->n ||
                     (ck.pos < tr->n && ck.epoch < 1) || ck.n_curve > t->steps / t->eval_every + 1))
            bad = lra_errorf(err, sizeof err,
                             "%s: inconsistent loop state (step %ld of %d, epoch %ld, pos %ld, %d curve rows)",
                             o->ckpt_path, m->step, t->steps, ck.epoch, ck.pos, ck.n_curve);
        if (!bad && o->curves_path) bad = curves_restore(o->curves_path, c, ck.curve, ck.n_curve, err, sizeof err);
        if (bad) {
            snprintf(rep->status, sizeof rep->status, STATUS_FAILED);
            snprintf(rep->reason, sizeof rep->reason, "checkpoint unusable (delete it to start this run over): %.190s", err);
            train_log(o, "error: checkpoint: %s\n(delete %s to start this run over)\n", err, o->ckpt_path);
            ckpt_train_state_free(&ck);
            free(curve);
            free(perm);
            free(idx);
            free(step_times);
            model_free(m);
            free(m);
            for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
            rep->wall_s = lra_now() - t0;
            return -1;
        }
        start = (int)m->step;
        epoch = ck.epoch;
        pos = (int)ck.pos;
        if (pos < tr->n) epoch_order(perm, tr->n, (uint64_t)t->seed, epoch - 1);
        win_loss = ck.win_loss;
        win_n = (int)ck.win_n;
        last_win_loss = ck.last_win_loss;
        last_val = ck.last_val;
        rep->best_val = ck.best_val;
        rep->best_step = (int)ck.best_step;
        rep->steps_done = start;
        if (start > 0) memcpy(step_times, ck.step_times, sizeof(double) * (size_t)start);
        n_curve = ck.n_curve;
        if (n_curve > 0) memcpy(curve, ck.curve, sizeof(ckpt_curve_row) * (size_t)n_curve);
        t_prev = ck.elapsed_s;
        ckpt_train_state_free(&ck);
        train_log(o, "resumed from %s at step %d of %d (best val %.2f%% at step %d)\n", o->ckpt_path, start, t->steps,
             100 * rep->best_val, rep->best_step);
    }
    int ckpt_on = o->ckpt_path && (t->checkpoint_every > 0 || t->save_model);
#define LOOP_STATE()                                                                                     \
    ((ckpt_train_state){.epoch = epoch, .pos = pos, .best_step = rep->best_step, .best_val = rep->best_val, \
                        .win_loss = win_loss, .win_n = win_n, .last_win_loss = last_win_loss,             \
                        .last_val = last_val, .elapsed_s = lra_now() - t0 + t_prev,                       \
                        .n_step_times = rep->steps_done, .step_times = step_times, .n_curve = n_curve,    \
                        .curve = curve})

    for (int step = start; step < t->steps; step++) {
        if (o->fault && !strncmp(o->fault, "kill@", 5) && step == atoi(o->fault + 5)) raise(SIGKILL);
        for (int b = 0; b < B; b++) {
            if (pos >= tr->n) {
                epoch_order(perm, tr->n, (uint64_t)t->seed, epoch++);
                pos = 0;
            }
            idx[b] = perm[pos++];
        }
        double ts = lra_now();
        model_load_batch(m, tr, idx);
        float lr = lr_at(t, step);
        double loss = model_forward(m, 1, NULL, NULL);
        if (o->fault && !strcmp(o->fault, "crash") && step == 1) raise(SIGSEGV);
        if (o->fault && !strcmp(o->fault, "nan") && step == 1) loss = NAN;
        if (o->fault && !strcmp(o->fault, "hang") && step == 1) sleep(3600);
        if (!isfinite(loss)) {
            snprintf(rep->status, sizeof rep->status, STATUS_DIVERGED);
            snprintf(rep->reason, sizeof rep->reason, "non-finite training loss at step %d", step + 1);
            train_log(o, "diverged: %s\n", rep->reason);
            status_set = 1;
            break;
        }
        model_zero_grad(m);
        model_backward(m);
        double gnorm = model_update(m, lr);
        step_times[step] = lra_now() - ts;
        rep->steps_done = step + 1;
        win_loss += loss;
        win_n++;

        int done = step + 1;
        double elapsed = lra_now() - t_train;
        if (t->log_every > 0 && (done % t->log_every == 0 || done == t->steps)) {
            if (o->log)
                fprintf(o->log, "step %6d/%d | loss %.4f | lr %.3e | grad norm %.3f | %.1f ms | %.0f tok/s\n", done,
                        t->steps, loss, (double)lr, gnorm, 1e3 * step_times[step], tokens_per_batch / step_times[step]);
            if (o->verbose && !o->tty)
                fprintf(stderr, "%s step %6d/%d | loss %.4f | lr %.3e | %.1f ms | %.0f tok/s\n",
                        o->run_label ? o->run_label : "", done, t->steps, loss, (double)lr, 1e3 * step_times[step],
                        tokens_per_batch / step_times[step]);
        }
        if (done % t->eval_every == 0 || done == t->steps) {
            double val = evaluate(m, &splits[SPLIT_VAL], t->eval_batches);
            last_win_loss = win_n ? win_loss / win_n : NAN;
            if (isnan(rep->best_val) || val > rep->best_val) {
                rep->best_val = val;
                rep->best_step = done;
                model_snapshot_best(m);
            }
            last_val = val;
            double el = lra_now() - t0 + t_prev;
            curve[n_curve++] = (ckpt_curve_row){done, last_win_loss, val, (double)lr, el};
            train_append_curve(o, c, done, last_win_loss, val, lr, el);
            train_log(o, "%s eval step %d: train loss %.4f, val accuracy %.2f%% (best %.2f%% at step %d)\n",
                 o->run_label ? o->run_label : "", done, last_win_loss, 100 * val, 100 * rep->best_val, rep->best_step);
            win_loss = 0;
            win_n = 0;
        }
        if (o->ckpt_path && t->checkpoint_every > 0 && done % t->checkpoint_every == 0 && done < t->steps) {
            ckpt_train_state s = LOOP_STATE();
            save_checkpoint(o, m, &s);
        }
        if (o->tty && o->verbose) {
            double eta = elapsed / done * (t->steps - done);
            progress_bar(o, done, t->steps, loss, last_val, tokens_per_batch / step_times[step], eta);
        }
        if (t->max_minutes > 0 && elapsed > 60.0 * t->max_minutes && done < t->steps) {
            snprintf(rep->status, sizeof rep->status, STATUS_TIMEOUT);
            snprintf(rep->reason, sizeof rep->reason, "train.max_minutes %.3g reached after %d of %d steps",
                     (double)t->max_minutes, done, t->steps);
            train_log(o, "timeout: %s\n", rep->reason);
            status_set = 1;
            if (ckpt_on) { /* so `lra run --resume` continues from here */
                ckpt_train_state s = LOOP_STATE();
                save_checkpoint(o, m, &s);
            }
            break;
        }
    }
    if (o->tty && o->verbose) fputs("\r\033[K", stderr);
    rep->train_loss = !isnan(last_win_loss) ? last_win_loss : (win_n ? win_loss / win_n : NAN);
    /* A finished run keeps its checkpoint (last parameters, AdamW state, best snapshot) only when
     * train.save_model asks for it; a timed-out or diverged run keeps the last one. */
    if (o->ckpt_path && !status_set && rep->steps_done == t->steps) {
        if (t->save_model) {
            ckpt_train_state s = LOOP_STATE();
            save_checkpoint(o, m, &s);
        } else if (unlink(o->ckpt_path) && errno != ENOENT) {
            train_log(o, "warning: cannot remove %s: %s\n", o->ckpt_path, strerror(errno));
        }
    }
#undef LOOP_STATE

    /* Timing: median step time over the steps done (robust to the first, cold steps). */
    if (rep->steps_done > 0) {
        qsort(step_times, (size_t)rep->steps_done, sizeof(double), cmp_double);
        double med = step_times[rep->steps_done / 2];
        rep->step_ms = 1e3 * med;
        rep->tokens_per_s = tokens_per_batch / med;
        rep->flops_per_s = 3.0 * m->fwd_flops / med;
    }

    /* Test with the best validation parameters. */
    if (rep->best_step > 0) {
        model_restore_best(m);
        rep->test = evaluate(m, &splits[SPLIT_TEST], 0);
        train_log(o, "test accuracy %.2f%% with the parameters of step %d (best val %.2f%%); majority-class rate %.2f%%\n",
             100 * rep->test, rep->best_step, 100 * rep->best_val, 100 * rep->majority);
    }
    if (!status_set) snprintf(rep->status, sizeof rep->status, STATUS_OK);

    free(perm);
    free(idx);
    free(step_times);
    free(curve);
    model_free(m);
    free(m);
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
    rep->wall_s = lra_now() - t0 + t_prev;
    return strcmp(rep->status, STATUS_OK) ? -1 : 0;
}
