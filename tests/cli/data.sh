# `lra data listops` writes LRA's TSV format, and the listops task loads it back through `path`.
. tests/cli/lib.sh.inc
expect_rc 0 "$LRA" data listops --out "$T/lo" --seq-len 48 --set max_depth=3 --set max_args=4 --set n_train=100 --set n_val=20 --set n_test=20
for s in train val test; do
  [ -s "$T/lo/basic_$s.tsv" ] || fail "no basic_$s.tsv"
  head -1 "$T/lo/basic_$s.tsv" | grep -q "^Source	Target$" || fail "bad header in basic_$s.tsv"
done
[ "$(wc -l < "$T/lo/basic_train.tsv")" = 101 ] || fail "expected 100 train rows"
expect_rc 2 "$LRA" data listops --out "$T/x" --set max_dept=3; expect_err "max_depth"
expect_rc 2 "$LRA" data imagenet --out "$T/x"
cat >"$T/load.yaml" <<YAML
name: load
task: {name: listops, seq_len: 48, path: "$T/lo"}
model: {d_model: 16, n_heads: 2, n_layers: 1, d_ff: 32}
attention: [softmax]
train: {steps: 10, batch_size: 8, eval_every: 5}
YAML
expect_rc 0 "$LRA" run --out "$T/res" "$T/load.yaml"
grep -q "100 train / 20 val / 20 test" "$T/res/runs/"*/log.txt || fail "loaded split sizes not in the log"
exit 0
