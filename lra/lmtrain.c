/* lmtrain.c - the training loop of TASK_LM (train.c sends TASK_LM runs here).
 *
 * Data: the task fills task_split.stream (raw bytes) for train/val/test. The model sees byte b as
 * id b+1 and predicts the next byte (256 classes).
 * Training (Transformer-XL's LMOrderedIterator): the train stream's n-1 predictions are cut into B
 * contiguous parts of P = (n-1)/B, one per stream of the batch; each step takes the next segment of
 * L = task.seq_len positions of every part (the same offset in every part), consecutive from step
 * to step, wrapping to the part's start at its end, with the training memory carried between steps
 * (also across the wrap, as TXL does across epochs).
 * Evaluation (val every eval_every steps, test once with the parameters of the best validation
 * step): lm_eval_bpb over the whole val/test stream (task.max_eval_bytes of the lm task caps it
 * for CPU-sized runs; train.eval_segment_len / train.eval_mem_len give other lengths, as
 * Transformer-XL's evaluation, through a second model with the same parameters), in
 * consecutive segments with a separate evaluation memory carried through, bits per byte = mean CE
 * in nats / ln 2 over every predicted byte. The best validation is the LOWEST bpb.
 */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "csv.h"
#include "lm.h"
#include "optim.h"
#include "results.h"
#include "train.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void progress_bar(const train_opts *o, int step, int steps, double loss, double val, double tps, double eta) {
    char bar[21];
    int fill = steps ? (int)(20.0 * step / steps) : 20;
    for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    fprintf(stderr, "\r\033[K%s [%s] step %d/%d loss %.4f val bpb %s%.3f %.0f B/s ETA %d:%02d",
            o->run_label ? o->run_label : "", bar, step, steps, loss, isnan(val) ? "-" : "", isnan(val) ? 0.0 : val,
            tps, (int)(eta / 60), (int)fmod(eta, 60));
    fflush(stderr);
}

static int fail(run_report *rep, const train_opts *o, double t0, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(run_report *rep, const train_opts *o, double t0, const char *status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->reason, sizeof rep->reason, fmt, ap);
    va_end(ap);
    snprintf(rep->status, sizeof rep->status, "%s", status);
    train_log(o, "error: %s\n", rep->reason);
    rep->wall_s = lra_now() - t0;
    return -1;
}

int lm_train_run(const run_cfg *c, const train_opts *o, run_report *rep) {
    memset(rep, 0, sizeof *rep);
    rep->best_val = rep->test = rep->majority = rep->train_loss = NAN;
    rep->best_step = -1;
    snprintf(rep->metric, sizeof rep->metric, "bpb");
    double t0 = lra_now();
    const train_cfg *t = &c->train;

    task_split splits[N_SPLITS];
    memset(splits, 0, sizeof splits);
    task_env env = {.seed = (uint64_t)c->task.data_seed, .seq_len = c->task.seq_len, .base_dir = c->base_dir,
                    .data_dir = c->task.data_dir};
    char err[1024] = "";
    double td = lra_now();
    if (c->task_ops->build(c->task_params.bytes, &env, splits, err, sizeof err))
        return fail(rep, o, t0, STATUS_FAILED, "data: %s", err);
    train_log(o, "data: %s, %zu train / %zu val / %zu test bytes (%.2f s); segment %d bytes\n", c->task.name,
         splits[0].stream_len, splits[1].stream_len, splits[2].stream_len, lra_now() - td, c->task.seq_len);
    int B = t->batch_size, L = c->task.seq_len;
    size_t P = splits[SPLIT_TRAIN].stream_len > 0 ? (splits[SPLIT_TRAIN].stream_len - 1) / (size_t)B : 0;
    if (P < (size_t)L || splits[SPLIT_VAL].stream_len < 2 || splits[SPLIT_TEST].stream_len < 2) {
        int rc = fail(rep, o, t0, STATUS_FAILED,
                      "data: the train stream (%zu bytes) must give each of the train.batch_size %d streams at least "
                      "one segment of task.seq_len %d bytes, and val/test need 2 bytes (val %zu, test %zu)",
                      splits[0].stream_len, B, L, splits[1].stream_len, splits[2].stream_len);
        for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
        return rc;
    }

    lm_t *m = xcalloc(1, sizeof *m);
    if (lm_build(m, c, B, o->max_mem, err, sizeof err)) {
        int oom = strstr(err, "--max-mem") != NULL;
        rep->mem_planned = (long long)lm_planned_total(m);
        lm_free(m);
        free(m);
        for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
        return fail(rep, o, t0, oom ? STATUS_OOM : STATUS_FAILED, "%s", err);
    }
    rep->params = (long long)m->n_params_real;
    rep->mem_planned = (long long)lm_planned_total(m);
    rep->act_bytes = (long long)lm_planned_bytes(m, MEM_ACTS);
    if (o->log) lm_print_plan(m, o->log);
    if (o->verbose) lm_print_plan(m, stderr);

    /* Evaluation with other segment / memory lengths (train.eval_segment_len, train.eval_mem_len):
     * a second model of the same parameter layout, whose parameters are copied before each
     * evaluation. */
    run_cfg ec = *c;
    if (t->eval_segment_len > 0) ec.task.seq_len = t->eval_segment_len;
    if (t->eval_mem_len > 0 && c->model.memory != MEMORY_NONE) ec.model.mem_len = t->eval_mem_len;
    lm_t *em = m;
    if (ec.task.seq_len != c->task.seq_len || ec.model.mem_len != c->model.mem_len) {
        em = xcalloc(1, sizeof *em);
        long long left = o->max_mem > 0 ? o->max_mem - rep->mem_planned : 0;
        int rc = o->max_mem > 0 && left <= 0 ? (snprintf(err, sizeof err, "no memory left under --max-mem"), -1)
                                            : lm_build(em, &ec, B, o->max_mem > 0 ? left : 0, err, sizeof err);
        if (!rc && em->n_params != m->n_params) rc = -1, snprintf(err, sizeof err, "evaluation model layout differs");
        if (rc) {
            int oom = strstr(err, "--max-mem") != NULL;
            lm_free(em);
            free(em);
            lm_free(m);
            free(m);
            for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
            return fail(rep, o, t0, oom ? STATUS_OOM : STATUS_FAILED, "evaluation model (segment %d, mem_len %d): %s",
                        ec.task.seq_len, ec.model.mem_len, err);
        }
        rep->mem_planned += (long long)lm_planned_total(em);
        train_log(o, "evaluation model: segment %d, mem_len %d (parameters copied from the training model)\n",
             ec.task.seq_len, ec.model.mem_len);
        if (o->log) lm_print_plan(em, o->log);
    }

    const task_split *tr = &splits[SPLIT_TRAIN];
    double *step_times = xmalloc(sizeof(double) * (size_t)(t->steps > 0 ? t->steps : 1));
    double win_loss = 0, last_win_loss = NAN, win_recon = 0;
    int win_n = 0, status_set = 0;
    double last_val = NAN, t_train = lra_now();
    double tokens_per_batch = (double)B * L;
    size_t cursor = 0;
    lm_memory_select(m, 0);
    lm_memory_reset(m);

    for (int step = 0; step < t->steps; step++) {
        double ts = lra_now();
        for (int b = 0; b < B; b++) lm_load_stream(m, b, tr->stream, (size_t)b * P, P, cursor, L);
        cursor = (cursor + (size_t)L) % P;
        float lr = lr_at(t, step);
        double loss = lm_forward(m, 1);
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
        lm_zero_grad(m);
        lm_backward(m);
        double recon = lm_memory_update(m, 1);
        double gnorm = lm_update(m, lr);
        step_times[step] = lra_now() - ts;
        rep->steps_done = step + 1;
        win_loss += loss;
        if (!isnan(recon)) win_recon += recon;
        win_n++;

        int done = step + 1;
        double elapsed = lra_now() - t_train;
        if (t->log_every > 0 && (done % t->log_every == 0 || done == t->steps)) {
            char rbuf[48] = "";
            if (!isnan(recon)) snprintf(rbuf, sizeof rbuf, " | recon %.3e", recon);
            if (o->log)
                fprintf(o->log, "step %6d/%d | loss %.4f (%.3f bpb)%s | lr %.3e | grad norm %.3f | %.1f ms | %.0f B/s\n",
                        done, t->steps, loss, loss / log(2.0), rbuf, (double)lr, gnorm, 1e3 * step_times[step],
                        tokens_per_batch / step_times[step]);
            if (o->verbose && !o->tty)
                fprintf(stderr, "%s step %6d/%d | loss %.4f (%.3f bpb)%s | lr %.3e | %.1f ms | %.0f B/s\n",
                        o->run_label ? o->run_label : "", done, t->steps, loss, loss / log(2.0), rbuf, (double)lr,
                        1e3 * step_times[step], tokens_per_batch / step_times[step]);
        }
        if (done % t->eval_every == 0 || done == t->steps) {
            double te = lra_now();
            long long np = 0;
            if (em != m) memcpy(em->arenas[MEM_PARAMS].base, m->arenas[MEM_PARAMS].base, m->n_params * sizeof(float));
            double val = lm_eval_bpb(em, splits[SPLIT_VAL].stream, splits[SPLIT_VAL].stream_len, 0, &np);
            last_win_loss = win_n ? win_loss / win_n : NAN;
            if (!isnan(val) && (isnan(rep->best_val) || val < rep->best_val)) {
                rep->best_val = val;
                rep->best_step = done;
                lm_snapshot_best(m);
            }
            last_val = val;
            train_append_curve(o, c, done, last_win_loss, val, lr, lra_now() - t0);
            char rbuf[64] = "";
            if (m->memory == MEMORY_COMPRESSIVE && win_n)
                snprintf(rbuf, sizeof rbuf, ", recon loss %.4e", win_recon / win_n);
            train_log(o, "%s eval step %d: train loss %.4f (%.4f bpb)%s, val %.4f bpb over %lld bytes (best %.4f at step %d; %.1f s)\n",
                 o->run_label ? o->run_label : "", done, last_win_loss, last_win_loss / log(2.0), rbuf, val, np,
                 rep->best_val, rep->best_step, lra_now() - te);
            win_loss = 0;
            win_recon = 0;
            win_n = 0;
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
            break;
        }
    }
    if (o->tty && o->verbose) fputs("\r\033[K", stderr);
    rep->train_loss = !isnan(last_win_loss) ? last_win_loss : (win_n ? win_loss / win_n : NAN);

    if (rep->steps_done > 0) {
        qsort(step_times, (size_t)rep->steps_done, sizeof(double), cmp_double);
        double med = step_times[rep->steps_done / 2];
        rep->step_ms = 1e3 * med;
        rep->tokens_per_s = tokens_per_batch / med;
        rep->flops_per_s = 3.0 * m->fwd_flops / med;
    }

    if (rep->best_step > 0) {
        lm_restore_best(m);
        long long np = 0;
        if (em != m) memcpy(em->arenas[MEM_PARAMS].base, m->arenas[MEM_PARAMS].base, m->n_params * sizeof(float));
        rep->test = lm_eval_bpb(em, splits[SPLIT_TEST].stream, splits[SPLIT_TEST].stream_len, 0, &np);
        train_log(o, "test %.4f bpb over %lld bytes with the parameters of step %d (best val %.4f bpb)\n", rep->test, np,
             rep->best_step, rep->best_val);
    }
    if (!status_set) snprintf(rep->status, sizeof rep->status, STATUS_OK);

    free(step_times);
    if (em != m) {
        lm_free(em);
        free(em);
    }
    lm_free(m);
    free(m);
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
    rep->wall_s = lra_now() - t0;
    return strcmp(rep->status, STATUS_OK) ? -1 : 0;
}
