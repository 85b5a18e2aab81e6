#!/usr/bin/env bash
# tests/run.sh WRAPPER BIN... - run cmocka test binaries (optionally under WRAPPER, e.g. valgrind),
# add up cmocka's summary lines and close with "N passed, N failed". A binary that crashes or exits
# non-zero without a cmocka summary counts as one failure. If CHECK_RESULTS is set, the totals are
# appended there for `make check`'s overall line.
set -u
wrapper=$1; shift
passed=0; failed=0; skipped=0
for bin in "$@"; do
    name=$(basename "$bin")
    out=$($wrapper "$bin" 2>&1); rc=$?
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
    p=${p:-0}; f=${f:-0}; s=${s:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
        printf '%s\n' "$out"
        echo "FAIL $name (exit $rc)"
    else
        printf '%s\n' "$out" | grep -E '^(SKIP|NOTE|REF)' || true
        echo "ok   $name: $p passed${s:+, $s skipped}"
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
[ -n "${CHECK_RESULTS:-}" ] && echo "$passed $failed $skipped" >> "$CHECK_RESULTS"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
