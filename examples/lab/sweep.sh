#!/usr/bin/env bash
# examples/lab/sweep.sh - the lab's sweeps (issue 5): HS and FA of every method over the harmful share p
# (n fixed) and over the number of user samples n (p fixed). One full flow run per point,
# each from the same seed; the pre-trained base model is cached after the first.
#
#   make sweep                         (or: examples/lab/sweep.sh --flow build/lab/flow ...)
#   make sweep SWEEP_ARGS=--quick      every point with flow --quick (a few minutes in all)
#
# Writes OUT/sweep.csv (sweep,p,n,method,hs,fa,seconds), OUT/flow-<sweep>-p<p>-n<n>.out (each
# run's full output) and, when gnuplot is installed, OUT/sweep.png (HS and FA against p and n).
set -eu
flow=build/lab/flow; gen=build/tools/gen_data; out=build/sweep
ps="0 0.05 0.10 0.15 0.20 0.25"; ns="500 1000 1500 2000 2500"; p_fixed=0.20; n_fixed=1000
extra=()
usage() {
    cat <<USAGE
usage: examples/lab/sweep.sh [options] [-- flow options]
  --flow PATH     the flow binary (default $flow)
  --gen PATH      the data generator (default $gen)
  --out DIR       output directory (default $out)
  --p "LIST"      harmful shares for the p sweep (default "$ps"), n = --n-fixed
  --n "LIST"      user-sample counts for the n sweep (default "$ns"), p = --p-fixed
  --p-fixed X     p of the n sweep (default $p_fixed)
  --n-fixed N     n of the p sweep (default $n_fixed)
  --quick         pass --quick to every flow run (its n is then the sweep's, its epochs are quick)
  Anything after -- goes to every flow run (e.g. -- --seed 2 --lora).
USAGE
}
while [ $# -gt 0 ]; do
    case $1 in
        --flow) flow=$2; shift 2;; --gen) gen=$2; shift 2;; --out) out=$2; shift 2;;
        --p) ps=$2; shift 2;; --n) ns=$2; shift 2;;
        --p-fixed) p_fixed=$2; shift 2;; --n-fixed) n_fixed=$2; shift 2;;
        --quick) extra+=(--quick); shift;;
        --help|-h) usage; exit 0;;
        --) shift; extra+=("$@"); break;;
        *) echo "sweep: unknown option $1 (see --help)" >&2; exit 2;;
    esac
done
[ -x "$flow" ] && [ -x "$gen" ] || { echo "sweep: build first: make $flow $gen" >&2; exit 1; }
mkdir -p "$out"
"$gen" --out "$out/data" --quiet
csv=$out/sweep.csv
echo "sweep,p,n,method,hs,fa,seconds" > "$csv"
run_point() { # sweep p n
    local log=$out/flow-$1-p$2-n$3.out
    echo "sweep: $1 p=$2 n=$3" >&2
    "$flow" --data "$out/data" --cache "$out/cache" --log "$out/flow-log.tsv" --p "$2" --n "$3" \
        "${extra[@]}" > "$log"
    sed -n 's/^RESULT method=\([^ ]*\) hs=\([^ ]*\) fa=\([^ ]*\) seconds=\([^ ]*\)$/\1,\2,\3,\4/p' "$log" |
        while IFS= read -r line; do echo "$1,$2,$3,$line" >> "$csv"; done
}
for p in $ps; do run_point p "$p" "$n_fixed"; done
for n in $ns; do run_point n "$p_fixed" "$n"; done
echo "sweep: wrote $csv" >&2
if command -v gnuplot > /dev/null; then
    gnuplot <<GP
set datafile separator ','
set terminal pngcairo size 1400,1000 noenhanced
set output '$out/sweep.png'
set multiplot layout 2,2 title 'antibody.h lab: HS and FA per method ($csv)'
methods = "sft vaccine booster lisa antidote antibody antibody+antidote random_prune"
set key outside right top
set yrange [-2:102]
set grid
set xlabel 'p (harmful share), n = $n_fixed'; set ylabel 'HS %'
plot for [m in methods] '$csv' using (strcol(1) eq 'p' && strcol(4) eq m ? \$2 : NaN):5 with linespoints title m
set ylabel 'FA %'
plot for [m in methods] '$csv' using (strcol(1) eq 'p' && strcol(4) eq m ? \$2 : NaN):6 with linespoints title m
set xlabel 'n (user samples), p = $p_fixed'; set ylabel 'HS %'
plot for [m in methods] '$csv' using (strcol(1) eq 'n' && strcol(4) eq m ? \$3 : NaN):5 with linespoints title m
set ylabel 'FA %'
plot for [m in methods] '$csv' using (strcol(1) eq 'n' && strcol(4) eq m ? \$3 : NaN):6 with linespoints title m
unset multiplot
GP
    echo "sweep: wrote $out/sweep.png" >&2
else
    echo "sweep: gnuplot not installed; no plot (the CSV is complete)" >&2
fi
