/* registry.c - every task, by YAML name. Adding a task: one file under tasks/ exporting
 * `const task_ops task_<name>;` and one line in each list below. */
#include <stdlib.h>
#include <string.h>

#include "task.h"

extern const task_ops task_listops;
extern const task_ops task_text;
extern const task_ops task_retrieval;
extern const task_ops task_lm;
/* @extern-end */

const task_ops *const task_registry[] = {
    &task_listops,
    &task_text,
    &task_retrieval,
    &task_lm,
    /* @list-end */
};

const int task_registry_count = (int)(sizeof task_registry / sizeof task_registry[0]);

const char *const split_names[N_SPLITS] = {"train", "val", "test"};

const task_ops *task_find(const char *name) {
    for (int i = 0; i < task_registry_count; i++)
        if (strcmp(task_registry[i]->name, name) == 0) return task_registry[i];
    return NULL;
}

void task_split_free(task_split *s) {
    free(s->tokens);
    free(s->labels);
    free(s->stream);
    memset(s, 0, sizeof *s);
}

int task_n_classes(const task_ops *ops, const void *params, const task_split splits[N_SPLITS]) {
    return splits[SPLIT_TRAIN].n_classes > 0 ? splits[SPLIT_TRAIN].n_classes : ops->n_classes(params);
}

double task_majority_rate(const task_split *s, int n_classes) {
    if (!s->n || n_classes <= 0) return 0.0;
    int *cnt = calloc((size_t)n_classes, sizeof *cnt);
    if (!cnt) return 0.0;
    for (int i = 0; i < s->n; i++)
        if (s->labels[i] >= 0 && s->labels[i] < n_classes) cnt[s->labels[i]]++;
    int best = 0;
    for (int c = 0; c < n_classes; c++)
        if (cnt[c] > best) best = cnt[c];
    free(cnt);
    return (double)best / s->n;
}
