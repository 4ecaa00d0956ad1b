/* plot.h - charts (gnuplot) and summary.md from a results directory's CSV files alone. */
#ifndef LRA_PLOT_H
#define LRA_PLOT_H

#include <stddef.h>

/* Read DIR/runs.csv (and DIR/curves.csv if present); write into DIR:
 *   accuracy.dat/.gp  - test metric vs seq_len, one line per label, mean and std over seeds
 *                        (error bars), ok runs only;
 *   memory.dat/.gp    - peak RSS (MiB) vs seq_len;
 *   speed.dat/.gp     - training tokens/s vs seq_len;
 *   curves.gp         - validation metric vs step, one line per run;
 *   summary.md        - table label x seq_len with mean ± std of test and best_val, the majority
 *                        rate, tokens/s, peak RSS, counts of runs by status, LRA's published Table 1
 *                        accuracy beside ours (published.h), and the chart links.
 * When gnuplot is on PATH, render each .gp to .png and .svg; otherwise print one warning naming
 * the scripts. Returns 0, or -1 with "FILE:LINE: reason" in err (missing or malformed runs.csv). */
int plot_results(const char *dir, int quiet, char *err, size_t errlen);

/* Read DIR/bench.csv (and DIR/maxlen.csv if present; columns in bench.h) and write into DIR:
 *   table2.md            - the LRA Table 2 analogue: training (and inference) steps/s per mechanism
 *                           x seq_len with the speed-up over the softmax baseline at the same length
 *                           (softmax(impl=materialized) when present, else softmax), peak RSS and
 *                           planned memory with the ratio to the baseline, LRA's published Table 2
 *                           beside ours at 1K-4K (published.h), the longest trainable length, the
 *                           spread of step times and MFU, the points that did not run;
 *   summary.md           - the same, when DIR has no runs.csv;
 *   bench_time.dat/.gp   - log-log training step ms vs N (median, min-max bars);
 *   bench_memory.dat/.gp - log-log peak RSS (solid) and planned arenas (dashed) in MiB vs N;
 *   and their .png/.svg when gnuplot is on PATH. plot_results calls this for directories with a
 *   bench.csv. Returns 0, or -1 with "FILE:LINE: reason" in err. */
int plot_bench(const char *dir, int quiet, char *err, size_t errlen);

#endif
