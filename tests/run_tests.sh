#!/bin/sh
# Runs every cmocka test binary given as arguments, then the shell integration tests in
# tests/cli/*.sh (with LRA_BIN pointing at the lra binary), and prints one closing line
# "tests: N passed, N failed" counting test cases. Exit status 1 when anything failed.
# Idle OpenMP threads sleep instead of spinning: on a shared or loaded machine spinning threads
# slow every test many times over. Results do not depend on it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
pass=0; fail=0; failed_names=""
for t in "$@"; do
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  pass=$((pass + p)); fail=$((fail + f))
  if [ $rc -ne 0 ] && [ "$f" = 0 ]; then fail=$((fail + 1)); fi
  [ $rc -ne 0 ] && failed_names="$failed_names $(basename "$t")"
done
for s in tests/cli/*.sh; do
  [ -f "$s" ] || continue
  echo "[ RUN      ] $s"
  if out=$(sh "$s" 2>&1); then
    echo "[       OK ] $s"; pass=$((pass + 1))
  else
    printf '%s\n' "$out" | tail -30
    echo "[  FAILED  ] $s"; fail=$((fail + 1)); failed_names="$failed_names $(basename "$s")"
  fi
done
[ -n "$failed_names" ] && echo "failing:$failed_names"
echo "tests: $pass passed, $fail failed"
[ "$fail" = 0 ]
