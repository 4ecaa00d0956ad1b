# A run killed (SIGKILL) mid-training after a checkpoint is continued by `lra run --resume` from
# the checkpoint and ends with the same runs.csv metrics and curves.csv points as an uninterrupted
# run (which had no checkpointing at all: checkpoint keys keep the run id). A corrupt checkpoint
# fails the run with a reason naming the file.
. tests/cli/lib.sh.inc
tiny_config "$T/tiny.yaml" 40
S="--threads 1 --no-plot --set train.seeds=[0]"
expect_rc 0 "$LRA" run $S --out "$T/full" "$T/tiny.yaml"
# run 0 is killed before step index 25; its last checkpoint is step 20 (eval rows 10, 20 written)
LRA_TEST_FAULT=kill@25:0 expect_rc 1 "$LRA" run $S --set train.checkpoint_every=10 --out "$T/part" "$T/tiny.yaml"
[ "$(col status "$T/part/runs.csv" | tr '\n' ' ')" = "crashed ok " ] || fail "statuses $(col status "$T/part/runs.csv" | tr '\n' ' ')"
grep -q "signal 9" "$T/part/runs.csv" || fail "the kill is not in the reason"
id0=$(col run_id "$T/part/runs.csv" | head -1)
[ -s "$T/part/checkpoints/$id0.ckpt" ] || fail "no checkpoint of the killed run"
[ "$(ls "$T/part/checkpoints")" = "$id0.ckpt" ] || fail "checkpoints: $(ls "$T/part/checkpoints")"
expect_rc 0 "$LRA" run $S --set train.checkpoint_every=10 --resume --out "$T/part" "$T/tiny.yaml"
expect_err "1 runs to do"
grep -q "resumed from .*$id0.ckpt at step 20 of 40" "$T/part/runs/$id0/log.txt" || fail "the run did not resume at step 20"
[ -z "$(ls "$T/part/checkpoints")" ] || fail "checkpoints left after the runs ended ok: $(ls "$T/part/checkpoints")"
rows() { # the metric columns of runs.csv, one line per run, sorted by run id
  for c in run_id status steps_done best_val best_step test train_loss; do col $c "$1" > "$T/c.$c"; done
  paste -d' ' "$T/c.run_id" "$T/c.status" "$T/c.steps_done" "$T/c.best_val" "$T/c.best_step" "$T/c.test" \
    "$T/c.train_loss" | sort
}
[ "$(rows "$T/full/runs.csv")" = "$(rows "$T/part/runs.csv")" ] || \
  fail "metrics differ after resume:$(printf '\n%s\n--\n%s' "$(rows "$T/full/runs.csv")" "$(rows "$T/part/runs.csv")")"
# curve points (all columns but elapsed_s): the same set, none twice
pts() { cut -d, -f1-9 "$1" | sort; }
[ "$(pts "$T/full/curves.csv")" = "$(pts "$T/part/curves.csv")" ] || fail "curves differ after resume"
[ "$(pts "$T/part/curves.csv" | uniq -d | wc -l)" = 0 ] || fail "duplicate curve points after resume"
[ "$(wc -l < "$T/part/curves.csv")" = 9 ] || fail "expected 8 curve points, got $(($(wc -l < "$T/part/curves.csv") - 1))"

# train.max_minutes: a run that times out writes a checkpoint, and each --resume continues it
# until it finishes, with the uninterrupted run's metrics (the limit is part of the run id)
S1="$S --set attention=[softmax] --set train.max_minutes=0.0005 --set train.checkpoint_every=20"
expect_rc 1 "$LRA" run $S1 --out "$T/slow" "$T/tiny.yaml"
[ "$(col status "$T/slow/runs.csv")" = timeout ] || fail "max_minutes: $(col status "$T/slow/runs.csv")"
i=0
while [ "$(col status "$T/slow/runs.csv")" = timeout ] && [ $i -lt 60 ]; do
  "$LRA" run $S1 --resume --out "$T/slow" "$T/tiny.yaml" >/dev/null 2>&1; i=$((i+1))
done
[ "$(col status "$T/slow/runs.csv")" = ok ] || fail "still $(col status "$T/slow/runs.csv") after $i resumes"
[ "$(rows "$T/slow/runs.csv" | cut -d' ' -f2-)" = "$(rows "$T/full/runs.csv" | grep "^$id0 " | cut -d' ' -f2-)" ] || \
  fail "metrics after timeouts and resumes: $(rows "$T/slow/runs.csv")"

# a corrupt checkpoint is refused with the file and the reason; the run fails, nothing crashes
LRA_TEST_FAULT=kill@25:0 expect_rc 1 "$LRA" run $S --set train.checkpoint_every=10 --out "$T/bad" "$T/tiny.yaml"
ck="$T/bad/checkpoints/$id0.ckpt"
printf 'X' | dd of="$ck" bs=1 seek=600 conv=notrunc 2>/dev/null
expect_rc 1 "$LRA" run $S --set train.checkpoint_every=10 --resume --out "$T/bad" "$T/tiny.yaml"
[ "$(col status "$T/bad/runs.csv" | tail -1)" = "failed" ] || fail "corrupt checkpoint: $(col status "$T/bad/runs.csv")"
col reason "$T/bad/runs.csv" | tail -1 | grep -q "checkpoint unusable (delete it to start this run over): .*$id0.ckpt: CRC mismatch" || \
  fail "reason: $(col reason "$T/bad/runs.csv" | tail -1)"
exit 0
