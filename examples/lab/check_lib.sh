# examples/lab/check_lib.sh SUITE - sourced by the lab's end-to-end checks (flow_check.sh,
# grid_check.sh). ok, fail and check count results ("ok   SUITE: what" / "FAIL SUITE: what"; check
# evals its second argument); finish prints "SUITE: N passed, N failed, 0 skipped", appends
# "N N 0" to CHECK_RESULTS when it is set (make check's tally, tests/summarize.sh) and exits,
# non-zero when a check failed.
suite=$1
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $suite: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $suite: $1"; }
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }
finish() {
    [ -n "${CHECK_RESULTS:-}" ] && echo "$passed $failed 0" >> "$CHECK_RESULTS"
    echo "$suite: $passed passed, $failed failed, 0 skipped"
    [ "$failed" -eq 0 ]; exit
}
