#!/usr/bin/env bash
# examples/lab/flow_check.sh FLOW GEN_DATA WORKDIR - the lab's end-to-end check (make flow-check, part
# of make check): generates the data, runs `flow --quick --seeds 2` twice (2 jobs of 1 thread with a
# fresh cache, then 1 job of 2 threads loading the cached base model) and checks the output's
# structure (the tables, every RESULT field, intervals present and ordered, paired differences,
# CHECK lines), that each seed ran as its 3 row-group jobs (sft, vb, antibody: one CRC-checked record
# file each), and that the two runs are bitwise reproducible: the same RESULT lines and tables
# (seconds aside) and the same per-batch logs (every loss, weight and norm of every step, of both
# seeds, printed to 6 decimals). Closes with "flow: N passed, N failed, 0 skipped" (appended to
# CHECK_RESULTS when set, for make check).
set -u
flow=$1; gen=$2; work=$3
. "$(dirname "$0")/check_lib.sh" flow

rm -rf "$work" && mkdir -p "$work" || { fail "cannot create $work"; finish; }
"$gen" --out "$work/data" --quiet || { fail "gen_data"; finish; }
common=(--quick --seeds 2 --data "$work/data" --cache "$work/cache")
t0=$(date +%s)
"$flow" "${common[@]}" --jobs 2 --threads 1 --work "$work/w1" --log "$work/log1.tsv" \
    > "$work/run1.out" 2> "$work/run1.err"
rc1=$?
t1=$(date +%s)
"$flow" "${common[@]}" --jobs 1 --threads 2 --work "$work/w2" --log "$work/log2.tsv" \
    > "$work/run2.out" 2> "$work/run2.err"
rc2=$?
t2=$(date +%s)
echo "NOTE flow --quick --seeds 2 took $((t1 - t0)) s (2 jobs of 1 thread, pre-training included) and $((t2 - t1)) s (1 job of 2 threads, cached base)"
check "run 1 exits 0" '[ $rc1 -eq 0 ]'
check "run 2 exits 0" '[ $rc2 -eq 0 ]'
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] || { tail -5 "$work/run1.err" "$work/run2.err"; finish; }

keys="base floor sft vaccine booster lisa antibody antidote antidote_benign random_prune antibody+antidote"
got=$(sed -n 's/^RESULT method=\([^ ]*\) .*/\1/p' "$work/run1.out" | tr '\n' ' ' | sed 's/ $//')
check "RESULT lines name every row in order ($keys)" '[ "$got" = "$keys" ]'
fields="seeds hs hs_lo hs_hi fa fa_lo fa_hi refused broken nll_gap seconds"
check "every RESULT line has $fields" \
    'awk -v want="$fields" '"'"'/^RESULT/ { n++; split(want, w, " "); for (i in w) if ($0 !~ (" " w[i] "=")) bad++ }
        END { exit !(n == 11 && bad == 0) }'"'"' "$work/run1.out"'
check "every row but base and SFT carries the paired differences d_hs, d_hs_lo, d_hs_hi, d_fa, d_fa_lo, d_fa_hi" \
    '[ $(grep "^RESULT" "$work/run1.out" | grep -cE " d_hs=[-0-9.]+ d_hs_lo=[-0-9.]+ d_hs_hi=[-0-9.]+ d_fa=[-0-9.]+ d_fa_lo=[-0-9.]+ d_fa_hi=[-0-9.]+$") -eq 9 ]'
check "seeded rows report seeds=2 and an interval lo <= mean <= hi for HS and FA (base: one value, no interval)" \
    'awk '"'"'/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        if (f["method"] == "base") { if (f["seeds"] != 1 || f["hs_lo"] != "nan") bad++; next }
        if (f["seeds"] != 2) bad++
        if (!(f["hs_lo"] + 0 <= f["hs"] + 0 && f["hs"] + 0 <= f["hs_hi"] + 0)) bad++
        if (!(f["fa_lo"] + 0 <= f["fa"] + 0 && f["fa"] + 0 <= f["fa_hi"] + 0)) bad++ }
        END { exit bad != 0 }'"'"' "$work/run1.out"'
check "percentages lie in [0, 100]" \
    'awk '"'"'/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /^(hs|fa|refused|broken)$/ && (kv[2] < 0 || kv[2] > 100)) bad++ } }
        END { exit bad != 0 }'"'"' "$work/run1.out"'
check "the results table has its header and 11 rows" \
    '[ $(grep -c "^| method " "$work/run1.out") -eq 1 ] && [ $(grep -cE "^\| (base|SFT, benign only \(p = 0\)|SFT|Vaccine|Booster|Lisa|Antibody|Antidote \(after SFT\)|Antidote, benign calib\.|Random prune \(control\)|Antibody \+ Antidote) +\|" "$work/run1.out") -eq 11 ]'
check "the after-alignment table has 4 rows" \
    '[ $(grep -cE "^\| (sft|vaccine|booster|antibody) +\|" "$work/run1.out") -eq 4 ]'
check "the expected results are decided by intervals (CHECK met|MISS|open, 11 of them)" \
    '[ $(grep -cE "^CHECK (met |MISS|open) " "$work/run1.out") -eq 11 ] && grep -qE "^CHECKS [0-9]+ of 11 met, [0-9]+ open" "$work/run1.out"'
for w in w1 w2; do
    check "$w: every seed's 3 row-group jobs (sft, vb, antibody) wrote a complete, CRC-checked record file" \
        '[ $(for s in 1 2; do for g in sft vb antibody; do grep -c "^END seed=$s " "$work/$w/seed$s-$g.txt"; done; done |
             grep -c "^1$") -eq 6 ]'
done
check "progress names the seed and the stage" 'grep -q "^\[seed 2\] stage 2: " "$work/run1.err"'
check "progress names each finished job by seed and row group (6 jobs)" \
    '[ $(grep -cE "^seed [12] \((sft|vb|antibody)\) finished \([1-6] of 6, " "$work/run1.err") -eq 6 ]'
check "run 2 loaded the cached base model" 'grep -q "loaded the cached base model" "$work/run2.err"'
strip() { sed -e 's/ seconds=[0-9.]*//' -e 's/^total .* s$//' "$1"; }
check "same seeds, --jobs 2 of 1 thread vs --jobs 1 of 2 threads, fresh vs cached base: identical RESULT lines and tables" \
    'diff <(strip "$work/run1.out") <(strip "$work/run2.out") > "$work/table.diff"'
check "identical per-batch logs of both seeds (every loss, weight and gradient norm of every step)" \
    'cmp -s "$work/log1.tsv" "$work/log2.tsv"'
check "the per-batch log has alignment and fine-tuning rows for every method and both seeds" \
    '[ $(cut -f1-3 "$work/log1.tsv" | grep -v "^#" | sort -u | grep -cE "	(align|finetune)	") -eq 20 ]'
check "a usage error exits 2 (--rows \"\")" '"$flow" --rows "" > /dev/null 2>&1; [ $? -eq 2 ]'
finish
