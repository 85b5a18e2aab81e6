#!/usr/bin/env bash
# tools/install_check.sh WORKDIR - `make install-check` (part of make check): installs into a fresh
# prefix under WORKDIR, then builds two programs outside the repository with nothing but
# `pkg-config --cflags --libs antibody`: examples/dropin.c (the core) and tests/single_smoke.c with
# AB_SMOKE_MODEL (the model, its checkpoints and the defences, from the installed companion headers;
# antibody_gpt.h includes antibody_gpt_io.h from beside it), and runs them.
# Closes with "install: N passed, N failed, 0 skipped" (appended to CHECK_RESULTS when set).
set -u
work=$1
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   install: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL install: $1"; }
finish() {
    [ -n "${CHECK_RESULTS:-}" ] && echo "$passed $failed 0" >> "$CHECK_RESULTS"
    echo "install: $passed passed, $failed failed, 0 skipped"
    [ "$failed" -eq 0 ]; exit
}
rm -rf "$work" && mkdir -p "$work/src" || { fail "cannot create $work"; finish; }
prefix=$(cd "$work" && pwd)/prefix
if make --no-print-directory install PREFIX="$prefix" > "$work/install.log" 2>&1; then ok "make install PREFIX=$prefix"
else fail "make install"; cat "$work/install.log"; finish; fi
for f in include/antibody.h include/antibody_gpt.h include/antibody_gpt_io.h include/antibody_defence.h \
         include/kernels/kernels.h include/kernels/gemm.h share/pkgconfig/antibody.pc; do
    if [ -f "$prefix/$f" ]; then ok "installed $f"; else fail "missing $f"; fi
done
export PKG_CONFIG_PATH="$prefix/share/pkgconfig"
flags=$(pkg-config --cflags --libs antibody) && ok "pkg-config --cflags --libs antibody: $flags" || { fail "pkg-config"; finish; }
cp examples/dropin.c tests/single_smoke.c "$work/src/"
cd "$work/src" || finish
# shellcheck disable=SC2086
if ${CC:-cc} -std=c99 -O2 -Wall -Wextra -Werror dropin.c -o dropin $flags && ./dropin > dropin.out; then
    ok "examples/dropin.c built against the installed headers runs: $(cat dropin.out)"
else fail "examples/dropin.c against the installed headers"; fi
# shellcheck disable=SC2086
if ${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -DAB_SMOKE_MODEL -DAB_SMOKE_SEPARATE_HEADERS \
       single_smoke.c -o smoke $flags 2> smoke.err && ./smoke > smoke.out; then
    ok "the model and the defences from the installed headers: $(cat smoke.out)"
else fail "single_smoke with AB_SMOKE_MODEL against the installed headers"; cat smoke.err; fi
finish
