#!/usr/bin/env bash
# tests/summarize.sh RESULTS RC - the closing line of `make check`: totals over every suite.
set -u
passed=0; failed=0; skipped=0
if [ -f "$1" ]; then
    while read -r p f s; do passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s)); done < "$1"
fi
# A step that failed outside the test binaries (build error, single-header smoke test) is a failure.
if [ "$2" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "check: $passed passed, $failed failed, $skipped skipped"
[ "$2" -eq 0 ] && [ "$failed" -eq 0 ]
