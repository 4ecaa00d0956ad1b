# lra bench CONFIG.yaml: the CI efficiency study (3 mechanisms x 3 lengths, seconds) writes
# bench.csv, maxlen.csv, table2.md and charts; a crashed or over-budget point is a row with a
# status; `lra plot` rebuilds the reports from the CSV files; config errors name FILE:LINE:COL.
. tests/cli/lib.sh.inc
export OMP_NUM_THREADS=1
expect_rc 0 "$LRA" bench configs/ci/efficiency.yaml --out "$T/ci"
expect_out "results: $T/ci/bench.csv"
csv="$T/ci/bench.csv"
# documented columns (lra/bench.h), in order
want="name,label,attention,seq_len,batch_size,d_model,n_heads,n_layers,d_ff,threads,status,reason,steps,warmup,infer_steps,train_ms,train_ms_min,train_ms_p25,train_ms_p75,train_ms_max,train_steps_per_s,tokens_per_s,infer_ms,infer_ms_min,infer_ms_max,infer_steps_per_s,infer_tokens_per_s,fwd_flops,flops_per_s,sgemm_flops_per_s,mfu,infer_mfu,params,mem_planned,act_bytes,scratch_bytes,peak_rss,max_mem,wall_s,cpu_s,version"
[ "$(head -1 "$csv")" = "$want" ] || fail "bench.csv header: $(head -1 "$csv")"
[ "$(col label "$csv" | tr '\n' ' ')" = "softmax(impl=materialized) softmax(impl=materialized) softmax(impl=materialized) softmax softmax softmax linear linear linear " ] || fail "labels: $(col label "$csv" | tr '\n' ' ')"
[ "$(col seq_len "$csv" | tr '\n' ' ')" = "512 1024 2048 512 1024 2048 512 1024 2048 " ] || fail "seq_len"
[ "$(col status "$csv" | sort -u)" = "ok" ] || fail "statuses: $(col status "$csv" | tr '\n' ' ')"
[ "$(col name "$csv" | sort -u)" = "efficiency-ci" ] || fail "name"
# numbers are positive and consistent: tokens/s = batch * seq_len * 1000 / train_ms, MFU in (0, 1)
for c in seq_len train_ms tokens_per_s mfu mem_planned peak_rss infer_ms label; do col $c "$csv" >"$T/c_$c"; done
paste -d' ' "$T/c_seq_len" "$T/c_train_ms" "$T/c_tokens_per_s" "$T/c_mfu" "$T/c_mem_planned" "$T/c_peak_rss" \
  "$T/c_infer_ms" | awk '
  { tps = 2 * $1 * 1000 / $2
    if (!($2 > 0) || (tps - $3) / $3 > 1e-3 || (tps - $3) / $3 < -1e-3) { print "tokens/s " $0; bad = 1 }
    if (!($4 > 0 && $4 < 1)) { print "mfu " $0; bad = 1 }
    if (!($5 > 0 && $6 > $5 / 2 && $7 > 0)) { print "memory/infer " $0; bad = 1 } }
  END { exit bad }' || fail "inconsistent bench.csv rows"
# the materialised N x N plan grows ~quadratically, the tiled one ~linearly (512 -> 2048: 4x length)
paste -d' ' "$T/c_label" "$T/c_mem_planned" | awk '
  $1 == "softmax(impl=materialized)" { m[++i] = $2 } $1 == "softmax" { t[++j] = $2 }
  END { if (!(m[3] / m[1] > 8 && t[3] / t[1] < 4.5)) { print m[1], m[3], t[1], t[3]; exit 1 } }' \
  || fail "planned memory growth"
# table2.md: every mechanism, the baseline at exactly 1.00x at every length, LRA's figures beside
t2="$T/ci/table2.md"
grep -q '^| `softmax(impl=materialized)` | [0-9.e+]* (1.00x) | [0-9.e+]* (1.00x) | [0-9.e+]* (1.00x) |$' "$t2" \
  || { cat "$t2" >&2; fail "table2.md: baseline row not 1.00x"; }
for m in 'softmax' 'linear'; do grep -q "^| \`$m\` | " "$t2" || fail "table2.md lacks $m"; done
grep -q '| `linear` | Linear Trans. | .* | 9.1 (1.1x) | .* | 9.3 (1.9x) |' "$t2" || fail "table2.md: LRA figures"
grep -q 'batch 32 on 4x4 TPU v3 chips' "$t2" || fail "table2.md: LRA setting"
grep -q '^## Longest trainable length within 1.0 GiB (max_mem)' "$t2" || fail "table2.md: longest N section"
cmp -s "$t2" "$T/ci/summary.md" && fail "summary.md should carry its own title"
grep -q 'Training steps per second' "$T/ci/summary.md" || fail "summary.md lacks the Table 2 analogue"
# maxlen.csv: the plan is deterministic at 1 thread; the materialised softmax stops at 4096 (8192
# needs 1.1 GiB), the tiled one reaches the probe limit
ml="$T/ci/maxlen.csv"
[ "$(col longest_n "$ml" | tr '\n' ' ')" = "4096 65536 65536 " ] || fail "longest_n: $(col longest_n "$ml" | tr '\n' ' ')"
[ "$(col next_n "$ml" | head -1)" = "8192" ] || fail "next_n"
fine=$(col longest_n_fine "$ml" | head -1)
[ "$fine" -ge 4096 ] && [ "$fine" -lt 8192 ] || fail "bisection $fine"
# ... and is the edge of the budget: the plan at fine fits 1 GiB, at fine + 64 it does not
expect_rc 0 "$LRA" bench configs/ci/efficiency.yaml --dry-run --no-probe --set "bench.seq_len=[$fine, $((fine + 64))]"
[ "$(grep -c '^softmax(impl=materialized) .* plan ' "$T/out")" = 2 ] || fail "dry-run plan lines"
grep "^softmax(impl=materialized) *$fine plan" "$T/out" | grep -q oom && fail "plan at $fine over budget"
grep "^softmax(impl=materialized) *$((fine + 64)) plan" "$T/out" | grep -q "> max_mem: oom" || fail "plan at $((fine + 64)) fits"
# charts
for c in bench_time bench_memory; do [ -s "$T/ci/$c.gp" ] && [ -s "$T/ci/$c.dat" ] || fail "$c script"; done
if command -v gnuplot >/dev/null; then
  for c in bench_time bench_memory; do [ -s "$T/ci/$c.png" ] && [ -s "$T/ci/$c.svg" ] || fail "$c not rendered"; done
fi
# lra plot regenerates the reports from the CSV files alone, identically
cp "$t2" "$T/t2.before"
rm -f "$T/ci/table2.md" "$T/ci/summary.md" "$T/ci"/bench_*.png "$T/ci"/bench_*.gp
expect_rc 0 "$LRA" plot "$T/ci"
cmp -s "$t2" "$T/t2.before" || { diff "$T/t2.before" "$t2" >&2; fail "lra plot changed table2.md"; }
[ -s "$T/ci/bench_time.gp" ] && [ -s "$T/ci/summary.md" ] || fail "lra plot: charts/summary"

# A crashing point is a row with a status; the rest of the study goes on; exit status 1.
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0 LRA_TEST_FAULT=crash:1 expect_rc 1 "$LRA" bench \
  configs/ci/efficiency.yaml --no-probe --set 'bench.seq_len=[256, 512]' --out "$T/crash"
[ "$(col status "$T/crash/bench.csv" | tr '\n' ' ')" = "ok crashed ok ok ok ok " ] || fail "crash statuses: $(col status "$T/crash/bench.csv" | tr '\n' ' ')"
grep -q "signal 11" "$T/crash/bench.csv" || fail "crash reason"
grep -q '| `softmax(impl=materialized)` | [0-9.e+]* (1.00x) | crashed |' "$T/crash/table2.md" || fail "table2.md: crashed cell"
[ ! -e "$T/crash/maxlen.csv" ] || fail "--no-probe wrote maxlen.csv"
# A hanging point is killed at bench.max_seconds: status timeout.
LRA_TEST_FAULT=hang:0 expect_rc 1 "$LRA" bench configs/ci/efficiency.yaml --no-probe --max-seconds 1 \
  --set 'bench.seq_len=[256]' --out "$T/hang"
[ "$(col status "$T/hang/bench.csv" | tr '\n' ' ')" = "timeout ok ok " ] || fail "hang statuses"
# An impossible budget: every point is a row with status oom (an expected outcome: exit 0), not run.
expect_rc 0 "$LRA" bench configs/ci/efficiency.yaml --max-mem 64k --out "$T/oom"
[ "$(col status "$T/oom/bench.csv" | sort -u)" = "oom" ] || fail "oom statuses"
[ "$(col reason "$T/oom/bench.csv" | grep -c 'max-mem 64.0 KiB')" = 9 ] || fail "oom reasons"
[ "$(col train_ms "$T/oom/bench.csv" | sort -u)" = "" ] || fail "oom rows carry timings"
[ "$(col longest_n "$T/oom/maxlen.csv" | sort -u)" = "0" ] || fail "oom longest_n"
grep -q '| `softmax` | oom | oom | oom |' "$T/oom/table2.md" || fail "table2.md: oom cells"
# time_budget: stops after one timed step once the budget is used
expect_rc 0 "$LRA" bench configs/ci/efficiency.yaml --no-probe --steps 50 --set bench.time_budget=0.000001 \
  --set 'bench.seq_len=[128]' --out "$T/budget"
[ "$(col steps "$T/budget/bench.csv" | sort -u)" = "1" ] || fail "time_budget: steps $(col steps "$T/budget/bench.csv" | tr '\n' ' ')"
[ "$(col warmup "$T/budget/bench.csv" | sort -u)" = "1" ] || fail "time_budget: warmup"

# The flag interface (no config) still works and writes the same files.
expect_rc 0 "$LRA" bench -a linear,local:block_size=32 -n 128 --steps 1 --warmup 0 -j 1 --no-probe -o "$T/flags"
[ "$(col label "$T/flags/bench.csv" | tr '\n' ' ')" = "linear local(block_size=32) " ] || fail "flags labels"
[ -s "$T/flags/table2.md" ] || fail "flags: table2.md"
# --dry-run prints plans and writes nothing
expect_rc 0 "$LRA" bench configs/ci/efficiency.yaml --dry-run --out "$T/dry"; expect_out "plan "
[ ! -e "$T/dry/bench.csv" ] || fail "--dry-run wrote bench.csv"

# Config errors: exit 2, nothing run, the place named.
printf 'name: x\nattention: [softmax]\nbench:\n  seq_len: [512]\n  step: 3\n' >"$T/e1.yaml"
expect_rc 2 "$LRA" bench "$T/e1.yaml" --out "$T/e"; expect_err "e1.yaml:5:3: unknown key 'step' in bench (did you mean 'steps'?)"
printf 'name: x\ntask: {name: listops}\nattention: [softmax]\n' >"$T/e2.yaml"
expect_rc 2 "$LRA" bench "$T/e2.yaml"; expect_err "e2.yaml:2:1: a bench config has no task section"
printf 'name: x\nattention: [softmx]\nbench: {seq_len: [512]}\n' >"$T/e3.yaml"
expect_rc 2 "$LRA" bench "$T/e3.yaml"; expect_err "e3.yaml:2:13: unknown attention mechanism 'softmx'"
printf 'name: x\nbench: {seq_len: [512, 0]}\n' >"$T/e4.yaml"
expect_rc 2 "$LRA" bench "$T/e4.yaml"; expect_err "e4.yaml:2:18: bench.seq_len"
printf 'name: x\nbench: {max_mem: lots}\n' >"$T/e5.yaml"
expect_rc 2 "$LRA" bench "$T/e5.yaml"; expect_err "bench.max_mem: expected a size"
printf 'name: x\nmodel: {d_model: [32, 64]}\n' >"$T/e6.yaml"
expect_rc 2 "$LRA" bench "$T/e6.yaml"; expect_err "sweeps attention entries only"
expect_rc 2 "$LRA" bench configs/ci/efficiency.yaml --set bench.stepz=1; expect_err "did you mean 'steps'"
expect_rc 2 "$LRA" bench configs/ci/efficiency.yaml --d-model 32; expect_err "model flags apply without a config"
[ ! -e "$T/e" ] || fail "a config error created the results directory"

# a second study into the same directory moves the first one aside, never overwrites it
expect_rc 0 "$LRA" bench -a softmax -n 64 --steps 1 --warmup 0 --no-probe --no-inference --out "$T/twice"
expect_rc 0 "$LRA" bench -a linear -n 64 --steps 1 --warmup 0 --no-probe --no-inference --out "$T/twice"
expect_err "held an earlier study: moved it to $T/twice.old-"
old=$(ls -d "$T"/twice.old-* | head -1)
[ "$(col label "$old/bench.csv")" = softmax ] || fail "the first study was not kept: $(col label "$old/bench.csv")"
[ "$(col label "$T/twice/bench.csv")" = linear ] || fail "second study: $(col label "$T/twice/bench.csv")"
exit 0
