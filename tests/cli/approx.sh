# lra approx: configs/ci/approx.yaml end to end (CSV contents, limit cases that must be exact,
# charts, 1 vs 2 threads), and config errors with FILE:LINE:COL.
. tests/cli/lib.sh.inc
expect_rc 0 "$LRA" approx --help; expect_out "usage: lra approx"
expect_rc 2 "$LRA" approx; expect_err "no config file"
expect_rc 0 "$LRA" approx --threads 2 --out "$T/a" configs/ci/approx.yaml
expect_out "results: $T/a/approx.csv"
for f in approx.csv approx_seeds.csv inputs.csv spectrum.csv spectrum_curve.csv \
         approx_random_ls0.25.gp approx_random_ls1.gp approx_trained.gp spectrum.gp \
         approx_random_ls0.25.dat approx_trained.dat spectrum.dat; do
  [ -s "$T/a/$f" ] || fail "no $f"
done
if command -v gnuplot >/dev/null 2>&1; then
  for f in approx_random_ls0.25 approx_random_ls1 approx_trained spectrum; do
    [ -s "$T/a/$f.png" ] && [ -s "$T/a/$f.svg" ] || fail "no $f.png/.svg although gnuplot is installed"
  done
fi
# rows: 3 sources (two random logit scales, the trained model) x 26 knob values
[ "$(col source "$T/a/approx.csv" | wc -l)" = 78 ] || fail "expected 78 rows in approx.csv"
[ "$(col source "$T/a/approx.csv" | grep -c '^trained$')" = 26 ] || fail "expected 26 trained rows"
[ "$(col seed "$T/a/approx_seeds.csv" | wc -l)" = $((78 * 8)) ] || fail "expected 8 seeds per point"
col rel_error_mean "$T/a/approx.csv" | awk '!($1 >= 0 && $1 < 10) { bad = 1 } END { exit bad }' ||
  fail "a relative error is not a finite value in [0, 10)"
# limit cases: a block or window covering the sequence is exact softmax (float rounding only)
awk -F, 'NR > 1 && $3 == "local" && $6 == 256 && $1 == "random" { n++; if ($13 > 1e-5) bad = 1 }
         NR > 1 && $3 == "longformer" && $6 == 128 && $1 == "trained" { n++; if ($13 > 1e-5) bad = 1 }
         END { exit (bad || n != 3) }' "$T/a/approx.csv" || fail "full window/block is not exact"
# errors shrink with the knob where the approximation converges (means over 8 seeds)
for m in nystromformer longformer; do
  awk -F, -v m=$m 'NR > 1 && $1 == "trained" && $3 == m { if (n && $13 >= prev) bad = 1; prev = $13; n++ }
                   END { exit (bad || n < 2) }' "$T/a/approx.csv" || fail "$m error does not fall with its knob"
done
# the reference column says what each mechanism was compared with
col reference "$T/a/approx.csv" | grep -q '^softmax$' || fail "no softmax reference"
col reference "$T/a/approx.csv" | grep -q 'shared-QK' || fail "reformer's reference is not named"
# Linformer's E/F: the initialisation (the captured model is a softmax model)
[ "$(awk -F, 'NR > 1 && $3 == "linformer" && $8 == "init"' "$T/a/approx.csv" | wc -l)" = 9 ] || fail "linformer weights not 'init'"
# spectrum: shares in (0, 1], k90 <= n, one row per (source, layer, head, sequence)
[ "$(col source "$T/a/spectrum.csv" | grep -c '^trained$')" = 32 ] || fail "expected 2 layers x 4 heads x 4 sequences"
awk -F, 'NR > 1 { if (!($8 > 0 && $8 <= 1.000001 && $9 > 0 && $9 <= 1.000001 && $10 <= $6)) bad = 1 } END { exit bad }' \
  "$T/a/spectrum.csv" || fail "spectrum.csv values out of range"
# input statistics are reported
col entropy_norm "$T/a/inputs.csv" | awk '!($1 > 0 && $1 <= 1) { bad = 1 } END { exit bad }' || fail "bad entropy_norm"
# same results with 1 thread
expect_rc 0 "$LRA" approx --threads 1 --no-plot --out "$T/b" configs/ci/approx.yaml
cmp -s "$T/a/approx.csv" "$T/b/approx.csv" || fail "approx.csv differs between 1 and 2 threads"
cmp -s "$T/a/spectrum.csv" "$T/b/spectrum.csv" || fail "spectrum.csv differs between 1 and 2 threads"
# config errors name FILE:LINE:COL and the key
cat >"$T/bad1.yaml" <<'YAML'
name: bad
random: {seq_len: 64, d_haed: 16}
mechanisms:
  - {name: performer, features: [16, 32]}
YAML
expect_rc 2 "$LRA" approx --out "$T/x" "$T/bad1.yaml"; expect_err "bad1.yaml:2:23: unknown key 'd_haed' in random (did you mean 'd_head'?)"
cat >"$T/bad2.yaml" <<'YAML'
mechanisms:
  - {name: performer, features: [16, 32], redraw: [1, 2]}
YAML
expect_rc 2 "$LRA" approx --out "$T/x" "$T/bad2.yaml"; expect_err "bad2.yaml:2:43: .*two swept keys"
cat >"$T/bad3.yaml" <<'YAML'
mechanisms:
  - {name: performer, features: 16}
  - {name: linformr, k: [16]}
YAML
expect_rc 2 "$LRA" approx --out "$T/x" "$T/bad3.yaml"; expect_err "bad3.yaml:2:5: .*no swept key"
cat >"$T/bad4.yaml" <<'YAML'
mechanisms:
  - {name: linformr, k: [16]}
YAML
expect_rc 2 "$LRA" approx --out "$T/x" "$T/bad4.yaml"; expect_err "bad4.yaml:2:12: unknown attention mechanism 'linformr'"
cat >"$T/bad5.yaml" <<'YAML'
mechanisms:
  - {name: linformer, k: [0, 16]}
YAML
expect_rc 2 "$LRA" approx --out "$T/x" "$T/bad5.yaml"; expect_err "bad5.yaml:2:27: mechanisms (linformer).k"
cat >"$T/bad6.yaml" <<'YAML'
sedes: [1]
mechanisms:
  - {name: linformer, k: [16]}
YAML
expect_rc 2 "$LRA" approx --out "$T/x" "$T/bad6.yaml"; expect_err "bad6.yaml:1:1: unknown top-level key 'sedes' (did you mean 'seeds'?)"
cat >"$T/bad7.yaml" <<'YAML'
random: {enabled: false}
capture: {config: nonexistent.yaml}
mechanisms:
  - {name: linformer, k: [16]}
YAML
expect_rc 2 "$LRA" approx --out "$T/x" "$T/bad7.yaml"; expect_err "capture.config"
exit 0
