/* registry.c - every attention mechanism, by YAML name. Adding a mechanism: one file under
 * attention/ exporting `const attn_ops attn_<name>;` and one line in each list below. */
#include "attention.h"

extern const attn_ops attn_softmax;
extern const attn_ops attn_reformer;
extern const attn_ops attn_sinkhorn;
extern const attn_ops attn_synthesizer;
extern const attn_ops attn_local;
extern const attn_ops attn_longformer;
extern const attn_ops attn_bigbird;
extern const attn_ops attn_sparse;
extern const attn_ops attn_linformer;
extern const attn_ops attn_performer;
extern const attn_ops attn_linear;
extern const attn_ops attn_nystromformer;
/* @extern-end (new mechanisms: add an extern line above this marker) */

const attn_ops *const attn_registry[] = {
    &attn_softmax,
    &attn_reformer,
    &attn_sinkhorn,
    &attn_synthesizer,
    &attn_local,
    &attn_longformer,
    &attn_bigbird,
    &attn_sparse,
    &attn_linformer,
    &attn_performer,
    &attn_linear,
    &attn_nystromformer,
    /* @list-end (new mechanisms: add a line above this marker) */
};

const int attn_registry_count = (int)(sizeof attn_registry / sizeof attn_registry[0]);
