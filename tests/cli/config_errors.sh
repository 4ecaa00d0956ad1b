# Every config error class exits 2 with FILE:LINE:COL and a reason; nothing is run.
. tests/cli/lib.sh.inc
tiny_config "$T/ok.yaml"
expect_rc 0 "$LRA" run --dry-run "$T/ok.yaml"; expect_out "4 to run"
check() { # check NAME EXPECTED_LOCATION EXPECTED_TEXT  (config on stdin)
  cat >"$T/$1.yaml"
  expect_rc 2 "$LRA" run --out "$T/res-$1" "$T/$1.yaml"
  expect_err "$T/$1.yaml:$2"; expect_err "$3"
  [ ! -e "$T/res-$1/runs.csv" ] || fail "$1: a run was started"
}
printf 'name: x\ntask: {name: listops, seq_len: 32}\nmodel:\n  d_modle: 16\nattention: [softmax]\n' | check unknown_key 4:3 "did you mean 'd_model'"
printf 'name: x\ntask: {name: listops, seq_len: 32}\nmodel:\n  d_model: sixteen\nattention: [softmax]\n' | check wrong_type 4:12 "integer"
printf 'name: x\ntask: {name: listops, seq_len: 32}\ntrain:\n  lr: -1\nattention: [softmax]\n' | check range 4:7 "lr"
printf 'name: x\ntask: {name: listopz, seq_len: 32}\nattention: [softmax]\n' | check unknown_task 2: "listops"
printf 'name: x\ntask: {name: listops, seq_len: 32}\nattention: [softmx]\n' | check unknown_mech 3: "softmax"
printf 'name: x\ntask: {name: listops, seq_len: 32}\nattention:\n  - name: softmax\n    impl: flash\n' | check bad_enum 5: "tiled"
printf 'name: x\ntask: {name: listops, seq_len: 32\nattention: [softmax]\n' | check syntax 3: "."
printf 'name: x\ntask: {name: listops, seq_len: 32}\nmodel: {d_model: 30, n_heads: 4}\nattention: [softmax]\n' | check heads 3: "n_heads"
expect_rc 2 "$LRA" run "$T/missing.yaml"; expect_err "$T/missing.yaml"
expect_rc 2 "$LRA" run --set model.d_modle=3 "$T/ok.yaml"; expect_err "d_model"
exit 0
