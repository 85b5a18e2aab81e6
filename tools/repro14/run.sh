#!/usr/bin/env bash
# tools/repro14/run.sh [OLD_REV] - issue 14's defects, before and after: builds tools/repro14/repro14.c
# against OLD_REV (default be6a598, v0.2.0-pre, just before the fixes) from `git archive` and against
# the working tree, and runs each: a save under a 4 KiB file-size limit (does the previous
# checkpoint survive?), AdamW with a NaN gradient, a SAM step at g = 0 with rho 1e32, softmax of an
# all -inf row, AB_ISA=bogus, and the lab's vocabulary loader on /dev/zero (capped at 2 GiB of
# address space for the old build, which reads until malloc fails). Writes under build/repro14.
set -u
old=${1:-be6a598}
here=$(cd "$(dirname "$0")/../.." && pwd)
out=$here/build/repro14
rm -rf "$out" && mkdir -p "$out/old"
git -C "$here" archive "$old" | tar -x -C "$out/old" || exit 1
for t in old new; do
    inc=$out/old; [ $t = new ] && inc=$here
    cc -O1 -std=c11 -pthread -fopenmp -I"$inc" "$inc/examples/lab/lab.c" "$here/tools/repro14/repro14.c" \
        -o "$out/r14-$t" -lm -ldl || exit 1
done
for t in old new; do
    echo "== $t ($([ $t = old ] && echo "$old" || git -C "$here" rev-parse --short HEAD))"
    mkdir -p "$out/d-$t"
    "$out/r14-$t" save "$out/d-$t"
    echo "files left: $(ls "$out/d-$t" | tr '\n' ' ')"
    "$out/r14-$t" nan
    AB_ISA=bogus "$out/r14-$t" isa
    (ulimit -v 2097152; timeout 120 "$out/r14-$t" zero 2>&1 || echo "lab_vocab_load(/dev/zero): the process died (exit $?)")
done
