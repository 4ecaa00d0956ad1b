/* published.h - the Long Range Arena paper's published numbers, as tables, for reports that put
 * LRA's figures beside ours (summary.md, table2.md).
 *
 * Source: Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", arXiv 2011.04006
 * (ICLR 2021): Table 1 (test accuracy, %) and Table 2 (training steps per second and peak memory
 * per device on the byte-level Text task, batch 32, 4x4 TPU v3 chips). Transcribed from
 * ../shared/reference/lra.md sections 4.1 and 4.2. LRA measured Sparse Transformer and Longformer
 * with dense-mask emulations, so Table 2 has no figures for them; Nystromformer is not in LRA.
 *
 * Mechanisms are looked up by our attention YAML name (softmax -> LRA's "Transformer", whichever
 * impl; local -> "Local Attention", ...); tasks by our task name (listops, text, retrieval, image,
 * pathfinder, pathx).
 */
#ifndef LRA_PUBLISHED_H
#define LRA_PUBLISHED_H

/* LRA's model name for one of our mechanisms ("Transformer" for softmax), or NULL when LRA has
 * no such model (nystromformer). */
const char *published_model_name(const char *attention);

/* Table 1: LRA's test accuracy in percent for (attention, task). Returns 1 and sets *acc, 0 when
 * LRA has no number (unknown mechanism or task). Path-X is "FAIL" for every model: returns 2 with
 * *acc = 50 (chance). */
int published_table1(const char *attention, const char *task, double *acc);

/* Table 2: LRA's training steps/s and peak memory (GB per TPU v3 device) at seq_len. Lengths are
 * LRA's 1K..4K; seq_len matches k*1000 or k*1024 for k = 1..4. Returns 1 and sets the outputs,
 * 0 when LRA has no figure (Sparse Transformer, Longformer, Nystromformer, other lengths).
 * *speedup is LRA's printed speed-up over their Transformer at that length (1 for it). */
int published_table2(const char *attention, int seq_len, double *steps_per_s, double *speedup, double *mem_gb);

/* The LRA length label ("1K".."4K") of seq_len for Table 2, or NULL when it has none. */
const char *published_table2_length(int seq_len);

#endif
