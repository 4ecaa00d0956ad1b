# A run that crashes, diverges, hangs past max_minutes or exceeds --max-mem becomes a row with
# that status and a reason; the other runs of the sweep finish; exit status 1.
. tests/cli/lib.sh.inc
tiny_config "$T/tiny.yaml" 20
# under AddressSanitizer (make check-asan) the SIGSEGV must reach the runner, not ASan's handler
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0 LRA_TEST_FAULT=crash:1 expect_rc 1 "$LRA" run --out "$T/crash" "$T/tiny.yaml"
[ "$(col status "$T/crash/runs.csv" | tr '\n' ' ')" = "ok crashed ok ok " ] || fail "crash: statuses $(col status "$T/crash/runs.csv" | tr '\n' ' ')"
grep -q "signal 11" "$T/crash/runs.csv" || fail "crash reason lacks the signal"
# --resume runs the crashed run again and replaces its row; the ok rows stay as they were
unset LRA_TEST_FAULT
ok_before=$(col test "$T/crash/runs.csv" | sed -n '1p;3p;4p')
expect_rc 0 "$LRA" run --resume --out "$T/crash" "$T/tiny.yaml"; expect_err "1 runs to do"
[ "$(col status "$T/crash/runs.csv" | tr '\n' ' ')" = "ok ok ok ok " ] || fail "resume: statuses $(col status "$T/crash/runs.csv" | tr '\n' ' ')"
[ "$(col test "$T/crash/runs.csv" | sed -n '1,3p')" = "$ok_before" ] || fail "resume changed finished rows"
LRA_TEST_FAULT=nan:2 expect_rc 1 "$LRA" run --out "$T/nan" "$T/tiny.yaml"
[ "$(col status "$T/nan/runs.csv" | tr '\n' ' ')" = "ok ok diverged ok " ] || fail "nan: statuses"
LRA_TEST_FAULT=hang:0 expect_rc 1 "$LRA" run --set train.max_minutes=0.01 --set train.seeds=[0] --out "$T/hang" "$T/tiny.yaml"
[ "$(col status "$T/hang/runs.csv" | head -1)" = "timeout" ] || fail "hang: $(col status "$T/hang/runs.csv")"
expect_rc 1 "$LRA" run --max-mem 64k --set train.seeds=[0] --out "$T/oom" "$T/tiny.yaml"
[ "$(col status "$T/oom/runs.csv" | sort -u)" = "oom" ] || fail "oom: statuses"
grep -q "max-mem" "$T/oom/runs.csv" || fail "oom reason"
exit 0
