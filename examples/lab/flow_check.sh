#!/usr/bin/env bash
# examples/lab/flow_check.sh FLOW GEN_DATA WORKDIR - the lab's end-to-end check (make flow-check, part of
# make check): generates the data, runs `flow --quick` twice (2 threads with a fresh cache, then 1
# thread loading the cached base model) and checks the table's structure and that the two runs
# are bitwise reproducible: same RESULT lines and tables (seconds aside) and the same per-batch
# logs (every loss, weight and norm of every step, printed to 6 decimals). Closes with
# "flow: N passed, N failed, 0 skipped" (appended to CHECK_RESULTS when set, for make check).
set -u
flow=$1; gen=$2; work=$3
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   flow: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL flow: $1"; }
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }
finish() {
    [ -n "${CHECK_RESULTS:-}" ] && echo "$passed $failed 0" >> "$CHECK_RESULTS"
    echo "flow: $passed passed, $failed failed, 0 skipped"
    [ "$failed" -eq 0 ]; exit
}

rm -rf "$work" && mkdir -p "$work" || { fail "cannot create $work"; finish; }
"$gen" --out "$work/data" --quiet || { fail "gen_data"; finish; }
t0=$(date +%s)
"$flow" --quick --data "$work/data" --cache "$work/cache" --threads 2 --log "$work/log1.tsv" \
    > "$work/run1.out" 2> "$work/run1.err"
rc1=$?
t1=$(date +%s)
"$flow" --quick --data "$work/data" --cache "$work/cache" --threads 1 --log "$work/log2.tsv" \
    > "$work/run2.out" 2> "$work/run2.err"
rc2=$?
t2=$(date +%s)
echo "NOTE flow --quick took $((t1 - t0)) s (2 threads, pre-training included) and $((t2 - t1)) s (1 thread, cached base)"
check "run 1 exits 0" '[ $rc1 -eq 0 ]'
check "run 2 exits 0" '[ $rc2 -eq 0 ]'
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] || { tail -5 "$work/run1.err" "$work/run2.err"; finish; }

keys="base sft vaccine booster lisa antidote antibody antibody+antidote random_prune"
got=$(sed -n 's/^RESULT method=\([^ ]*\) .*/\1/p' "$work/run1.out" | tr '\n' ' ' | sed 's/ $//')
check "RESULT lines name every row in order ($keys)" '[ "$got" = "$keys" ]'
check "every RESULT line has hs, fa in [0, 100] and seconds >= 0" \
    'awk '"'"'/^RESULT/ { n++; for (i = 3; i <= 5; i++) { split($i, kv, "="); v = kv[2] + 0;
        if (kv[2] !~ /^[0-9]+(\.[0-9]+)?$/ || (i < 5 && v > 100)) bad++ } }
        END { exit !(n == 9 && bad == 0) }'"'"' "$work/run1.out"'
check "the table has its header and 9 rows" \
    '[ $(grep -c "^| method " "$work/run1.out") -eq 1 ] && [ $(grep -cE "^\| (base|SFT|Vaccine|Booster|Lisa|Antidote \(after SFT\)|Antibody|Antibody \+ Antidote|Random prune \(control\)) +\|" "$work/run1.out") -eq 9 ]'
check "the after-alignment table has 4 rows" \
    '[ $(grep -cE "^\| (sft|vaccine|booster|antibody) +\|" "$work/run1.out") -eq 4 ]'
check "the expected-result checks are reported" 'grep -q "^CHECKS [0-9]* of 6 met" "$work/run1.out"'
check "run 2 loaded the cached base model" 'grep -q "loaded the cached base model" "$work/run2.err"'
strip() { sed -e 's/ seconds=[0-9.]*//' -e 's/; total .* s$//' "$1" | awk -F'|' 'NF == 9 { $5 = "" } NF == 7 { $6 = "" } { print }'; }
check "same seed, 1 vs 2 threads, fresh vs cached base: identical RESULT lines and tables" \
    'diff <(strip "$work/run1.out") <(strip "$work/run2.out") > "$work/table.diff"'
check "identical per-batch logs (every loss, weight and gradient norm of every step)" \
    'cmp -s <(grep -v "^pretrain" "$work/log1.tsv") "$work/log2.tsv"'
check "the per-batch log has alignment and fine-tuning rows for every method" \
    '[ $(cut -f1,2 "$work/log1.tsv" | sort -u | grep -cE "^(align|finetune)") -eq 9 ]'
finish
