# The `lm` task's sources at config time (`lra run --dry-run` validates task.path, format and
# member without reading the data): gcide when the dict-gcide package is installed (skipped
# otherwise), the install hint when it is missing, a gzip'd file, a PG19 directory and the key errors.
# The bytes themselves (splits, zip/gzip errors) are checked by tests/test_lmdata.c.
. tests/cli/lib.sh.inc
if ! "$LRA" list tasks 2>/dev/null | grep -q '^task lm'; then
  echo "lm_data: task lm not registered in $LRA yet; skipped" >&2
  exit 0
fi
cat >"$T/lm.yaml" <<YAML
name: lmdata
task: {name: lm, seq_len: 64, path: /usr/share/dictd/gcide.dict.dz}
model: {d_model: 16, n_heads: 2, n_layers: 1, d_ff: 32}
attention: [softmax]
train: {steps: 2, batch_size: 2, eval_every: 1}
YAML
GCIDE=/usr/share/dictd/gcide.dict.dz
if [ -f "$GCIDE" ]; then
  expect_rc 0 "$LRA" run --dry-run --out "$T/res" "$T/lm.yaml"
  expect_out "lm"
  expect_rc 2 "$LRA" run --dry-run --out "$T/res" --set task.member=enwik8 "$T/lm.yaml"
  expect_err "task.member: only for zip archives, but $GCIDE is read as gzip"
  expect_rc 2 "$LRA" run --dry-run --out "$T/res" --set task.format=pg19 "$T/lm.yaml"
  expect_err "task.format: pg19 needs a directory, but $GCIDE is a file"
  # the whole 40 MB inflated and split 90/5/5, then capped: a 1-step run of a tiny model
  expect_rc 0 env OMP_NUM_THREADS=1 "$LRA" run --out "$T/run" --set task.max_train_bytes=100000 \
    --set task.max_eval_bytes=1000 --set model.memory=none --set train.steps=1 "$T/lm.yaml"
  grep -q "100000 train / 1000 val / 1000 test bytes" "$T/run/runs/"*/log.txt ||
    { cat "$T/run/runs/"*/log.txt >&2; fail "gcide split sizes not in the log"; }
else
  echo "lm_data: $GCIDE absent (Debian package dict-gcide); gcide checks skipped" >&2
fi
expect_rc 2 "$LRA" run --dry-run --out "$T/res" --set task.path="$T/none/gcide.dict.dz" "$T/lm.yaml"
expect_err "task.path: $T/none/gcide.dict.dz not found: install the Debian package dict-gcide"
expect_rc 2 "$LRA" run --dry-run --out "$T/res" --set task.val_fraction=0.6 --set task.test_fraction=0.4 "$T/lm.yaml"
expect_err "val_fraction + test_fraction must be below 1"

# a gzip'd text and a PG19 directory, relative to the config's directory
printf 'some text for a byte-level language model\n' | gzip -c >"$T/small.txt.gz"
mkdir -p "$T/pg/train" "$T/pg/validation"
echo book >"$T/pg/train/1.txt"
echo book >"$T/pg/validation/2.txt"
expect_rc 0 "$LRA" run --dry-run --out "$T/res" --set task.path=small.txt.gz "$T/lm.yaml"
expect_rc 2 "$LRA" run --dry-run --out "$T/res" --set task.path=pg "$T/lm.yaml"
expect_err "$T/pg: PG19 layout has no test/ directory"
mkdir -p "$T/pg/test"
expect_rc 0 "$LRA" run --dry-run --out "$T/res" --set task.path=pg "$T/lm.yaml"
exit 0
