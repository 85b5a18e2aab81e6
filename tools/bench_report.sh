#!/usr/bin/env bash
# tools/bench_report.sh LOG [PLOT.png] > bench/results.md
# Turns the BENCH/SKIP lines collected by `make bench` (AB_BENCH_LOG) into a markdown table, with
# the machine and the command on top; with gnuplot installed and PLOT given, also plots our SGEMM
# throughput against each peer per case.
set -euo pipefail
log=$1; plot=${2:-}
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "# Benchmark results"
echo
echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d): $cpu, $(nproc) cores, $(uname -sr),"
echo "$(cc --version | head -1). Every row is one \`BENCH\` line: throughputs (higher is better),"
echo "ours and the peer measured interleaved in one process, medians; ratio = ours / peer, so > 1"
echo "means antibody.h is faster. The machine is shared: compare ratios, not absolute figures."
echo
echo "| case | unit | ours | peer | peer value | ratio |"
echo "|---|---|---:|---|---:|---:|"
grep '^BENCH ' "$log" | sed 's/^BENCH //' | awk '{
    delete f
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    printf "| %s | %s | %s | %s | %s | %s |\n", f["case"], f["unit"], f["ours"], f["ref"], f["peer"], f["ratio"]
}'
if grep -q '^SKIP ' "$log"; then
    echo
    echo "Skipped peers:"
    echo
    grep '^SKIP ' "$log" | sed 's/^SKIP /- /'
fi
if [ -n "$plot" ] && command -v gnuplot >/dev/null 2>&1; then
    data=$(mktemp)
    grep '^BENCH case=sgemm_' "$log" | grep -E 'ref=(openblas|openblas_skx) ' |
        sed -E 's/.*case=([^ ]+) .*ours=([^ ]+) ref=([^ ]+) peer=([^ ]+) .*/\1 \3 \2 \4/' > "$data"
    gnuplot <<GP || echo "(gnuplot failed; no plot)" >&2
set terminal pngcairo size 1400,600 noenhanced
set output "$plot"
set title "SGEMM GFLOP/s, 1 and 2 threads: antibody.h vs OpenBLAS (default = Haswell kernels) and OpenBLAS SkylakeX"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8
set xtics rotate by -45 font ",8"
set ylabel "GFLOP/s"
set key top left
plot "< awk '\$2==\"openblas_skx\"' $data" using 3:xtic(1) title "antibody.h", \
     "< awk '\$2==\"openblas\"' $data" using 4 title "OpenBLAS (default)", \
     "< awk '\$2==\"openblas_skx\"' $data" using 4 title "OpenBLAS SkylakeX"
GP
    rm -f "$data"
    [ -f "$plot" ] && { echo; echo "![SGEMM throughput]($(basename "$plot"))"; }
fi
