/* bench.h - `lra bench`: training-step and inference throughput, model FLOP/s, MFU against the
 * measured sgemm peak, and memory (planned arenas, peak RSS) for mechanisms x sequence lengths. */
#ifndef LRA_BENCH_H
#define LRA_BENCH_H

/* argv[0] is "bench". Returns the exit status. */
int cmd_bench(int argc, char **argv);

/* Best sgemm FLOP/s of a square n x n x n product over reps repetitions on the current threads. */
double bench_sgemm_peak(int n, int reps);

#endif
