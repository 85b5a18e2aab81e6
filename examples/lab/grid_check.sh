#!/usr/bin/env bash
# examples/lab/grid_check.sh FLOW GRID GEN_DATA WORKDIR - the experiment grid's check (make grid-check,
# part of make check). A tiny grid (flow --quick with 1-epoch stages: p in {0, 0.2} x n = 100 x 2 seeds
# x alpha in {0.1, 0.2}, rows sft and antidote: 8 jobs, on small data sets) is run three times from one base model:
#   seq   the job list run line by line by bash;
#   par   the job list run by GNU parallel -j 2;
#   kill  the job list shuffled; half of the jobs killed in the middle (SIGKILL to the whole process
#         group, as a crashed node; or SIGTERM to the job, as parallel or scancel do), one finished
#         output damaged and one replaced by another job's; then the whole list run again with
#         parallel -j 2 --shuf, which must skip exactly the intact outputs and redo the rest.
# The three merged tables must be byte-identical; the merge must name exactly the missing jobs; a
# killed job must leave no output; the Slurm script runs its task's line. Closes with
# "grid: N passed, N failed, 0 skipped" (appended to CHECK_RESULTS when set, for make check).
set -u
flow=$1; grid=$2; gen=$3; work=$4
here=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/check_lib.sh" grid
command -v parallel > /dev/null || { fail "GNU parallel is not installed (tools/install-deps.sh)"; finish; }

rm -rf "$work" && mkdir -p "$work" || { fail "cannot create $work"; finish; }
work=$(cd "$work" && pwd)
"$gen" --out "$work/data" --quiet --pretrain 1000 --align 200 --harmful-align 200 --attack 100 --calib 50 \
    --hs-eval 20 --hs-ref 20 --howto-eval 20 --task-train 200 --task-test 20 || { fail "gen_data"; finish; }
spec=(--flow "$flow" --grid "$grid" --gen "$gen" --data "$work/data" --cache "$work/cache" --ps "0 0.2" --ns ""
      --n-fixed 100 --seeds 2 --alphas "0.1 0.2" --main-alpha 0.1 --rows sft,antidote --quick
      -- --pretrain-epochs 1 --epochs 1 --align-epochs 1 --eval-n 10)
t0=$(date +%s)
for run in seq par kill; do
    "$here/grid.sh" jobs --out "$work/$run" "${spec[@]}" 2> "$work/$run.jobs.err" ||
        { fail "grid.sh jobs ($run)"; cat "$work/$run.jobs.err"; finish; }
done
t1=$(date +%s)
check "the job list has 8 lines, one flow --job --threads 1 each, every output named from its parameters" \
    '[ $(wc -l < "$work/seq/jobs.txt") -eq 8 ] && [ $(grep -c -- " --job --threads 1 .* --base-crc [0-9a-f]\{8\} " "$work/seq/jobs.txt") -eq 8 ] &&
     grep -q "/jobs/p0.2-n100-a0.2-s2.txt -- " "$work/seq/jobs.txt" && [ $(grep -vc "^#" "$work/seq/grid.tsv") -eq 8 ]'
check "three job lists from one base model differ only in their directories" \
    'diff <(sed "s|$work/seq/|X/|g" "$work/seq/jobs.txt") <(sed "s|$work/par/|X/|g" "$work/par/jobs.txt") > /dev/null'

# 1. sequential
bash "$work/seq/jobs.txt" > "$work/seq.out" 2>&1
"$grid" merge "$work/seq/grid.tsv" --csv "$work/seq/grid.csv" --missing "$work/seq/missing.txt" > "$work/seq.merge" 2>&1
t2=$(date +%s)
check "sequential: 8 jobs done, the merge finds all of them" \
    '[ $(grep -c " done in " "$work/seq.out") -eq 8 ] && grep -q "^grid: 8 of 8 jobs finished" "$work/seq.merge" && [ ! -s "$work/seq/missing.txt" ]'
check "the table: a header and one row per point x alpha x method (6), 2 seeds each, intervals and paired differences" \
    'awk -F, '"'"'NR == 1 { ok = $0 == "p,n,alpha,method,seeds,hs,hs_lo,hs_hi,fa,fa_lo,fa_hi,refused,broken,nll_gap,d_hs,d_hs_lo,d_hs_hi,d_fa,d_fa_lo,d_fa_hi,missing_seeds"; next }
        { n++; if (NF != 21 || $5 != 2 || $21 != "" || !($7 <= $6 && $6 <= $8) || !($10 <= $9 && $9 <= $11)) bad++
          if ($4 == "sft" && ($3 != "" || $15 != "")) bad++
          if ($4 == "antidote" && ($3 == "" || $15 == "" || $15 == "nan" || !($16 <= $15 && $15 <= $17))) bad++ }
        END { exit !(ok && n == 6 && bad == 0) }'"'"' "$work/seq/grid.csv"'
if command -v gnuplot > /dev/null; then
    check "grid.sh merge plots HS and FA with their intervals (grid.png)" \
        '"$here/grid.sh" merge --out "$work/seq" > /dev/null 2>&1 && [ -s "$work/seq/grid.png" ] && [ "$(cat "$work/seq/plot/a-fa.methods")" = antidote ]'
fi
check "the merge computes what flow computes: antidote's FA at p = 0.2, alpha 0.1 from the two seeds' records (by hand in awk)" \
    'awk -F, '"'"'$1 == "0.2" && $3 == "0.1" && $4 == "antidote" { print $9, $10, $11, $18 }'"'"' "$work/seq/grid.csv" > "$work/got.txt" &&
     cat "$work/seq/jobs/p0.2-n100-a0.1-s1.txt" "$work/seq/jobs/p0.2-n100-a0.1-s2.txt" | awk '"'"'
        function f(k,   i, kv) { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] } }
        /^SEED/ { if (f("row") == "antidote") a[f("seed")] = f("fa"); if (f("row") == "sft") s[f("seed")] = f("fa") }
        END { m = (a[1] + a[2]) / 2; h = 12.706204736 * sqrt(((a[1] - m)^2 + (a[2] - m)^2) / 1) / sqrt(2)
              printf "%.2f %.2f %.2f %.2f\n", m, m - h, m + h, ((a[1] - s[1]) + (a[2] - s[2])) / 2 }'"'"' > "$work/want.txt" &&
     cmp -s "$work/got.txt" "$work/want.txt"'

# 2. GNU parallel, 2 jobs at once
"$here/grid.sh" run --out "$work/par" --jobs 2 > "$work/par.out" 2>&1
"$grid" merge "$work/par/grid.tsv" --csv "$work/par/grid.csv" --missing "$work/par/missing.txt" > "$work/par.merge" 2>&1
t3=$(date +%s)
check "parallel -j 2: 8 jobs done" '[ $(grep -c " done in " "$work/par.out") -eq 8 ] && [ ! -s "$work/par/missing.txt" ]'
check "parallel -j 2 and sequential: byte-identical tables" 'cmp "$work/seq/grid.csv" "$work/par/grid.csv"'
check "a second run skips every job, each checked by its CRC" \
    '"$here/grid.sh" run --out "$work/par" --jobs 2 > "$work/par2.out" 2>&1 && [ $(grep -c "already done (CRC checked), skipped" "$work/par2.out") -eq 8 ]'
check "the Slurm array script runs the line of its task (task 3: p0.2-n100-a0.1-s1, already done)" \
    'SLURM_ARRAY_TASK_ID=3 bash "$work/par/grid.sbatch" 2>&1 | grep -q "^grid: p0.2-n100-a0.1-s1.txt already done"'

# 3. shuffled, half of the jobs killed, two outputs spoilt, then everything run again
shuf --random-source=<(yes) "$work/kill/jobs.txt" > "$work/kill/shuffled.txt"
sed -n '1~2p' "$work/kill/shuffled.txt" > "$work/kill/to-finish.txt"
sed -n '2~2p' "$work/kill/shuffled.txt" > "$work/kill/to-kill.txt"
parallel -j 2 < "$work/kill/to-finish.txt" > "$work/kill1.out" 2>&1 & # the other half meanwhile
finishing=$!
killed=0; i=0
name_of() { sed 's/.* job \([^ ]*\) -- .*/\1/'; }
while IFS= read -r line; do
    i=$((i + 1))
    out=$(echo "$line" | name_of); err=${out%.txt}.err
    setsid bash -c "exec $line" > /dev/null 2>&1 & # its own process group, led by the job wrapper
    pid=$!
    for _ in $(seq 600); do grep -q "stage 1:" "$err" 2> /dev/null && break; sleep 0.05; done
    if [ $((i % 2)) -eq 1 ]; then kill -KILL -- -"$pid"; else kill -TERM "$pid"; fi
    wait "$pid" 2> /dev/null
    [ -e "$out" ] || killed=$((killed + 1))
    echo "$out" >> "$work/kill/killed.txt"
done < "$work/kill/to-kill.txt"
wait "$finishing"
check "4 jobs killed in the middle (2 by SIGKILL to the process group, 2 by SIGTERM to the job) left no output" '[ $killed -eq 4 ]'
check "a SIGKILLed job leaves only its temporary file; a SIGTERMed job none" \
    '[ $(ls "$work/kill/jobs" | grep -c "\.txt\.tmp\.") -eq 2 ]'
# spoil two finished outputs: one damaged, one replaced by the output of a job of another p or seed
finished=($(name_of < "$work/kill/to-finish.txt"))
first=${finished[0]}; second=${finished[1]}; donor=""
for f in "${finished[@]:2}"; do
    [ "$(basename "$f" | sed 's/-a[^-]*-/-/')" != "$(basename "$second" | sed 's/-a[^-]*-/-/')" ] && { donor=$f; break; }
done
sed -i '2s/=/:/' "$first"
cp "${donor:-$first}" "$second"
check "grid check: a damaged output fails its CRC" '! "$grid" check "$first" > "$work/check1.out" && grep -q "damaged" "$work/check1.out"'
check "grid check: another job's output is told apart by its JOB line (seed, p, n, rows, base CRC)" \
    '[ -n "$donor" ] && ! "$grid" check "$second" -- $(grep -F " $second -- " "$work/kill/jobs.txt" | sed "s/.* -- //") > "$work/check2.out" &&
     grep -q "the output of another job" "$work/check2.out"'
"$grid" merge "$work/kill/grid.tsv" --csv "$work/kill/partial.csv" --missing "$work/kill/missing.txt" > "$work/kill.merge" 2>&1
check "the merge names the 6 missing jobs (4 killed, 1 damaged, 1 foreign) and the missing seeds in the table" \
    '[ $(wc -l < "$work/kill/missing.txt") -eq 6 ] && grep -q "^grid: 2 of 8 jobs finished" "$work/kill.merge" &&
     for f in $(cat "$work/kill/killed.txt") "$first" "$second"; do grep -qF " $f: " "$work/kill/missing.txt" || exit 1; done &&
     [ $(awk -F, '"'"'NR > 1 && $21 != ""'"'"' "$work/kill/partial.csv" | wc -l) -gt 0 ]'
"$here/grid.sh" run --out "$work/kill" --jobs 2 --shuffle > "$work/kill2.out" 2>&1
"$grid" merge "$work/kill/grid.tsv" --csv "$work/kill/grid.csv" --missing "$work/kill/missing.txt" > "$work/kill2.merge" 2>&1
t4=$(date +%s)
check "the rerun skips the 2 intact outputs and redoes the 6 others" \
    '[ $(grep -c "already done (CRC checked), skipped" "$work/kill2.out") -eq 2 ] && [ $(grep -c " done in " "$work/kill2.out") -eq 6 ]'
check "shuffled, half killed and rerun vs sequential: byte-identical tables" 'cmp "$work/seq/grid.csv" "$work/kill/grid.csv" && [ ! -s "$work/kill/missing.txt" ]'
check "the per-batch logs of every job are identical across the three runs" \
    'for f in "$work"/seq/jobs/*-log.tsv; do cmp -s "$f" "$work/par/jobs/$(basename "$f")" && cmp -s "$f" "$work/kill/jobs/$(basename "$f")" || exit 1; done'
check "a grid directory refuses outputs made with other flow options" \
    '! "$here/grid.sh" jobs --out "$work/par" "${spec[@]}" --eval-n 30 > "$work/guard.out" 2>&1 && grep -q "holds a grid made with" "$work/guard.out" &&
     [ $(ls "$work/par/jobs" | grep -c "\.txt$") -eq 8 ]'
check "grid job without the job's parameters is a usage error (exit 2)" '"$grid" job "$work/x.txt" -- "$flow" --job > /dev/null 2>&1; [ $? -eq 2 ]'
echo "NOTE grid: base model and 3 job lists $((t1 - t0)) s, sequential $((t2 - t1)) s, parallel -j 2 $((t3 - t2)) s, kill and rerun $((t4 - t3)) s"
finish
