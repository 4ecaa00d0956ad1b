/* results.c - the column names of runs.csv and curves.csv, generated from the X-macro lists in
 * results.h so the writer, the reader and the docs cannot drift apart. */
#include "results.h"

#define RESULTS_NAME(name) #name,
const char *const runs_columns[RUNS_N_COLUMNS] = {RUNS_COLUMNS(RESULTS_NAME)};
const char *const curves_columns[CURVES_N_COLUMNS] = {CURVES_COLUMNS(RESULTS_NAME)};
#undef RESULTS_NAME
