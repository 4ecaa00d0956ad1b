# CLI usage: versions, help, unknown flags and commands (exit 2), list from the registries.
. tests/cli/lib.sh.inc
expect_rc 0 "$LRA" --version; expect_out "^lra [0-9]"
expect_rc 0 "$LRA" --help; expect_out "run CONFIG"
for c in run list plot data bench approx; do expect_rc 0 "$LRA" $c --help; expect_out "usage: lra $c"; done
expect_rc 2 "$LRA"
expect_rc 2 "$LRA" frobnicate; expect_err "unknown command 'frobnicate'"
expect_rc 2 "$LRA" run --bogus x.yaml; expect_err "unrecognized option"
expect_rc 2 "$LRA" run; expect_err "no config file"
expect_rc 2 "$LRA" bench --frob; expect_err "unrecognized option"
expect_rc 2 "$LRA" list --frob
expect_rc 2 "$LRA" run --shard 3/2 x.yaml; expect_err "shard"
expect_rc 2 "$LRA" run --max-mem lots x.yaml; expect_err "max-mem"
expect_rc 2 "$LRA" run --threads 0 x.yaml; expect_err "threads"
expect_rc 0 "$LRA" list
expect_out "attention softmax"; expect_out "impl"; expect_out "task listops"; expect_out "d_model"; expect_out "max_depth"
expect_rc 0 "$LRA" list mechanisms --markdown; expect_out "### attention \`softmax\`"
exit 0
