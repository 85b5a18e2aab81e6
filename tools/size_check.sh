#!/bin/sh
# tools/size_check.sh - `make size-check` (part of make check): the source files stay short enough
# to read. Issue 11's rules: no source file outside tests/ over 2,500 lines (SIZE_MAX_LINES), and
# the core, antibody.h, at most ~3,000 (it is held to the same 2,500 here). The files are git's
# tracked *.c, *.h and *.sh (the working tree's when git is missing or this is not a checkout).
# Prints each file over the limit, then "size: N passed, N failed, 0 skipped" (N = files checked),
# appended to CHECK_RESULTS when set.
limit=${SIZE_MAX_LINES:-2500}
cd "$(dirname "$0")/.." || exit 1
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    files=$(git ls-files '*.c' '*.h' '*.sh' | grep -v '^tests/')
else
    files=$(find . -path ./build -prune -o -path ./tests -prune -o \( -name '*.c' -o -name '*.h' -o -name '*.sh' \) -print | sed 's|^\./||')
fi
passed=0 failed=0
for f in $files; do
    [ -f "$f" ] || continue
    n=$(wc -l < "$f")
    if [ "$n" -le "$limit" ]; then passed=$((passed + 1))
    else failed=$((failed + 1)); echo "size: $f has $n lines (limit $limit)"; fi
done
echo "size: $passed passed, $failed failed, 0 skipped (source files outside tests/ of at most $limit lines)"
[ -n "${CHECK_RESULTS:-}" ] && echo "$passed $failed 0" >> "$CHECK_RESULTS"
[ "$failed" -eq 0 ]
