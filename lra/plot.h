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
 *                        rate, tokens/s, peak RSS, counts of runs by status, and the chart links.
 * When gnuplot is on PATH, render each .gp to .png and .svg; otherwise print one warning naming
 * the scripts. Returns 0, or -1 with "FILE:LINE: reason" in err (missing or malformed runs.csv). */
int plot_results(const char *dir, int quiet, char *err, size_t errlen);

#endif
