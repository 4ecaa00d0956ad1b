# A small sweep end to end: rows, statuses, determinism (same seed twice, 1 vs 2 threads),
# resolved configs and logs beside the results, charts and summary.
. tests/cli/lib.sh.inc
tiny_config "$T/tiny.yaml" 30
expect_rc 0 "$LRA" run --threads 2 --out "$T/a" "$T/tiny.yaml"
[ "$(col status "$T/a/runs.csv" | grep -c '^ok$')" = 4 ] || fail "expected 4 ok rows"
for id in $(col run_id "$T/a/runs.csv"); do
  [ -s "$T/a/runs/$id/config.yaml" ] || fail "no resolved config for $id"
  [ -s "$T/a/runs/$id/log.txt" ] || fail "no log for $id"
done
[ -s "$T/a/curves.csv" ] || fail "no curves.csv"
[ -s "$T/a/summary.md" ] || fail "no summary.md"
grep -qi "majority" "$T/a/summary.md" || fail "summary lacks the majority rate"
# same config, same seed, same threads: identical metrics
expect_rc 0 "$LRA" run --threads 2 --out "$T/b" "$T/tiny.yaml"
for c in run_id best_val best_step test train_loss; do
  [ "$(col $c "$T/a/runs.csv")" = "$(col $c "$T/b/runs.csv")" ] || fail "column $c differs between identical runs"
done
# 1 thread vs 2 threads
expect_rc 0 "$LRA" run --threads 1 --out "$T/c" "$T/tiny.yaml"
for c in best_val test train_loss; do
  [ "$(col $c "$T/a/runs.csv")" = "$(col $c "$T/c/runs.csv")" ] || fail "column $c differs between 1 and 2 threads"
done
# tiled and materialised softmax are the same maths: same metrics per seed
t=$(col label "$T/a/runs.csv" | grep -c '^softmax$')
[ "$t" = 2 ] || fail "expected 2 tiled rows"
# existing results are not overwritten without --resume/--force
expect_rc 2 "$LRA" run --out "$T/a" "$T/tiny.yaml"; expect_err "already holds results"
expect_rc 0 "$LRA" run --resume --out "$T/a" "$T/tiny.yaml"; expect_err "0 runs to do"
[ "$(wc -l < "$T/a/runs.csv")" = 5 ] || fail "resume of a finished sweep added rows"
# shards of one sweep share a directory (no --resume needed) and together give every run once
expect_rc 0 "$LRA" run --threads 2 --shard 0/2 --out "$T/sh" "$T/tiny.yaml"
expect_rc 0 "$LRA" run --threads 2 --shard 1/2 --out "$T/sh" "$T/tiny.yaml"
[ "$(col run_id "$T/sh/runs.csv" | sort)" = "$(col run_id "$T/a/runs.csv" | sort)" ] || fail "shards did not cover the sweep once"
# lra plot regenerates from CSV alone
rm -f "$T/a/summary.md"
expect_rc 0 "$LRA" plot "$T/a"; [ -s "$T/a/summary.md" ] || fail "plot did not write summary.md"
expect_rc 2 "$LRA" plot "$T/nonexistent"

# runs of one mechanism that differ in a model/train axis are separate series (labels), not seeds
expect_rc 0 "$LRA" run --dry-run --out "$T/axes" configs/quickstart.yaml --set attention=[softmax] \
  --set task.seq_len=[64] --set 'model.d_model=[32,64]' --set 'train.lr=[0.001,0.01]'
expect_out "softmax d_model=32 lr=0.001"
expect_out "softmax d_model=64 lr=0.01"
exit 0
