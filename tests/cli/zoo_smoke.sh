# Every registered mechanism trains a few steps inside the model (configs/zoo-smoke.yaml): one ok
# row each, finite losses, and every registered mechanism appears in the config.
. tests/cli/lib.sh.inc
for m in $("$LRA" list mechanisms | sed -n 's/^attention \([a-z_]*\):.*/\1/p'); do
  grep -q "name: $m[,}]" configs/zoo-smoke.yaml || fail "mechanism $m is not in configs/zoo-smoke.yaml"
done
expect_rc 0 "$LRA" run --out "$T/zoo" configs/zoo-smoke.yaml
n=$(grep -c "name: " configs/zoo-smoke.yaml); n=$((n - 2))   # minus the experiment and task names
[ "$(col status "$T/zoo/runs.csv" | grep -c '^ok$')" = "$n" ] || fail "expected $n ok rows: $(col status "$T/zoo/runs.csv" | tr '\n' ' ')"
col train_loss "$T/zoo/runs.csv" | grep -qv '^[0-9.]*$' && fail "non-numeric train loss"
exit 0
