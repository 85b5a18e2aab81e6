#!/usr/bin/env bash
# tools/check_readme.sh README.md FILE - the code block after the marker line
# "<!-- snippet: FILE -->" in README.md must equal FILE byte for byte.
set -euo pipefail
readme=$1; file=$2
block=$(awk -v f="$file" '
    $0 == "<!-- snippet: " f " -->" { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$readme")
if [ -z "$block" ]; then echo "check_readme: no snippet of $file in $readme" >&2; exit 1; fi
if ! diff <(printf '%s\n' "$block") "$file" >/dev/null; then
    echo "check_readme: the snippet in $readme differs from $file:" >&2
    diff <(printf '%s\n' "$block") "$file" >&2 || true
    exit 1
fi
echo "README snippet matches $file"
