#!/usr/bin/env bash
# tools/compile_time.sh - the drop-in's compile time: one C file that defines
# ANTIBODY_IMPLEMENTATION and includes the core alone, then every layer; gcc -O2 -pthread, median
# of 3 runs each (wall seconds). Prints "COMPILE core=<s> all=<s>".
set -euo pipefail
cc=${CC:-cc}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '#define ANTIBODY_IMPLEMENTATION\n#include "antibody.h"\nint main(void) { return ab_init(); }\n' > "$work/core.c"
printf '#define ANTIBODY_IMPLEMENTATION\n#include "antibody.h"\n#include "antibody_gpt.h"\n#include "antibody_defence.h"\nint main(void) { return ab_init(); }\n' > "$work/all.c"
median() {
    local f=$1 t i
    for i in 1 2 3; do
        t0=$(date +%s.%N)
        "$cc" -std=c11 -O2 -pthread -I"$top" "$work/$f.c" -o "$work/$f" -lm
        t1=$(date +%s.%N)
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }'
    done | sort -n | sed -n 2p
}
echo "COMPILE core=$(median core) all=$(median all)"
