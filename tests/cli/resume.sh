# Kill a sweep with SIGKILL mid-way, --resume it, and end with the same rows (same run ids and
# metrics, in the same order) as an uninterrupted sweep.
. tests/cli/lib.sh.inc
tiny_config "$T/tiny.yaml" 60
expect_rc 0 "$LRA" run --threads 2 --out "$T/full" "$T/tiny.yaml"
# run 2 hangs (test-only fault injection), so the kill lands mid-sweep, mid-run, deterministically
LRA_TEST_FAULT=hang:2 "$LRA" run --threads 2 --out "$T/part" "$T/tiny.yaml" >/dev/null 2>&1 &
pid=$!
i=0
while [ "$(cat "$T/part/runs.csv" 2>/dev/null | wc -l)" -lt 3 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
sleep 0.5; kill -9 $pid; wait $pid 2>/dev/null
n=$(($(wc -l < "$T/part/runs.csv") - 1))
[ "$n" = 2 ] || fail "expected the kill mid-sweep, got $n rows"
expect_rc 0 "$LRA" run --threads 2 --resume --out "$T/part" "$T/tiny.yaml"
for c in run_id status best_val best_step test train_loss; do
  [ "$(col $c "$T/full/runs.csv")" = "$(col $c "$T/part/runs.csv")" ] || fail "column $c differs after resume"
done
# no curve points of the killed run survive twice
a=$(cut -d, -f1,6 "$T/full/curves.csv" | sort | uniq -d | wc -l); [ "$a" = 0 ] || fail "duplicate curve points"
b=$(cut -d, -f1,6 "$T/part/curves.csv" | sort | uniq -d | wc -l); [ "$b" = 0 ] || fail "duplicate curve points after resume"
exit 0
