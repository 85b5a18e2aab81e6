#!/usr/bin/env bash
# examples/lab/grid.sh - the lab's experiment grid (issue 15): seeds x p x n (x Antidote's alpha) as a
# plain list of independent flow jobs, run with GNU parallel on one machine or several, or as a Slurm
# job array, and merged into one table with 95% intervals. README, "The experiment grid".
#
#   examples/lab/grid.sh jobs  [grid options] [-- flow options]   the base model and the job list
#   examples/lab/grid.sh run   [--out OUT] [--jobs J] [--shuffle] [-- parallel options]
#   examples/lab/grid.sh merge [--out OUT]                         OUT/grid.csv (+ OUT/grid.png)
#   examples/lab/grid.sh sweep [grid options] [-- flow options]    jobs, run, merge (make sweep)
#
# `jobs` makes the shared pre-trained base once (flow --base-only; every job checks its CRC) and
# writes, in OUT:
#   jobs.txt     one shell line per job: `grid job OUT/jobs/p<p>-n<n>-a<alpha>-s<seed>.txt -- flow --job
#                --threads 1 ...` (examples/lab/grid.c): skipped when that output is already there
#                and passes its CRC, else run to a temporary file renamed on success. Every path in
#                a line is absolute: any host that sees the same files at the same paths can run it.
#   grid.tsv     the manifest the merge reads: p, n, alpha, seed, rows and output of every job.
#   grid.sbatch  a Slurm array script: task i runs line i of jobs.txt (sbatch OUT/grid.sbatch).
#   grid.conf    the flow options and data of the grid; a later `jobs` with other ones refuses to
#                mix its outputs with these (--force discards them).
# The points: p over --ps at n = --n-fixed and n over --ns at p = --p-fixed (or, with --product,
# every p with every n); p = 0 is a point like any other: jobs at flow --p 0, where every defence
# runs on benign data only (flow's floor row, SFT with the harmful samples replaced by benign ones, is
# in every job: at p = 0 it is the SFT row bit for bit). At every point and seed one job runs every
# row at --main-alpha, and one job per other alpha runs the Antidote rows (plus SFT, their
# reference) at that alpha.
set -eu
export LC_ALL=C
flow=build/lab/flow; grid=build/lab/grid; gen=build/tools/gen_data
out=build/grid; data=build/data; cache=build/cache
ps="0 0.01 0.02 0.05 0.1 0.2"; n_fixed=1000; ns="500 1000 1500 2000 2500"; p_fixed=0.2; product=0
seeds=5; seed=1; alphas="0.05 0.1 0.2"; main_alpha=0.1; base_threads=1; force=0
all_rows=floor,sft,vaccine,booster,lisa,antibody,antidote,antidote_benign,random_prune,antibody+antidote
alpha_rows=antidote,antidote_benign,random_prune,antibody+antidote
rows=$all_rows
jobs=""; shuffle=0
extra=(); par=()

usage() {
    cat <<USAGE
usage: examples/lab/grid.sh jobs|run|merge|sweep [options] [-- flow options (jobs, sweep) | -- parallel options (run)]
  --out DIR          the grid's directory (default $out)
 jobs, sweep:
  --flow PATH        the flow binary (default $flow)
  --grid PATH        the grid tool, examples/lab/grid.c (default $grid)
  --gen PATH         the data generator, run when --data has no data (default $gen)
  --data DIR         the lab's data (default $data)
  --cache DIR        where flow --base-only keeps the base model (default $cache)
  --ps "LIST"        harmful shares of the p line (default "$ps"), at n = --n-fixed (default $n_fixed)
  --ns "LIST"        user-sample counts of the n line (default "$ns"), at p = --p-fixed (default $p_fixed)
  --n-fixed N, --p-fixed X
  --product          every p of --ps with every n of --ns instead of the two lines
  --seeds K          seeds per point (default $seeds), from --seed S (default $seed)
  --alphas "LIST"    Antidote's --prune-alpha values (default "$alphas")
  --main-alpha X     the alpha of the jobs that run every row (default $main_alpha)
  --rows LIST        flow rows of the grid (default every row but base: $rows)
  --base-threads N   threads of the one-off pre-training step (default $base_threads)
  --quick            pass --quick to flow (CI-sized stages; the grid's n stays)
  --force            discard the outputs of a grid made here with other flow options or data
 run, sweep:
  --jobs J           jobs at once (default: GNU parallel's, one per CPU thread)
  --shuffle          run the jobs in random order
USAGE
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in jobs|run|merge|sweep) ;; -h|--help) usage; exit 0;; *) usage >&2; exit 2;; esac
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2;; --flow) flow=$2; shift 2;; --grid) grid=$2; shift 2;;
        --gen) gen=$2; shift 2;; --data) data=$2; shift 2;; --cache) cache=$2; shift 2;;
        --ps) ps=$2; shift 2;; --ns) ns=$2; shift 2;;
        --n-fixed) n_fixed=$2; shift 2;; --p-fixed) p_fixed=$2; shift 2;; --product) product=1; shift;;
        --seeds) seeds=$2; shift 2;; --seed) seed=$2; shift 2;;
        --alphas) alphas=$2; shift 2;; --main-alpha) main_alpha=$2; shift 2;;
        --rows) rows=$2; shift 2;; --base-threads) base_threads=$2; shift 2;;
        --quick) extra+=(--quick); shift;; --force) force=1; shift;;
        --jobs|-j) jobs=$2; shift 2;; --shuffle) shuffle=1; shift;;
        -h|--help) usage; exit 0;;
        --) shift; if [ "$cmd" = run ]; then par+=("$@"); else extra+=("$@"); fi; break;;
        *) echo "grid: unknown option $1 (see --help)" >&2; exit 2;;
    esac
done
die() { echo "grid: $*" >&2; exit 1; }
abspath() { mkdir -p "$1" && (cd "$1" && pwd); }
num() { printf '%g' "$1"; } # one spelling per number: 0.10 -> 0.1, names and table agree

make_jobs() {
    [ -x "$flow" ] && [ -x "$grid" ] || die "build first: make $flow $grid $gen"
    for a in "${extra[@]+"${extra[@]}"}"; do
        case $a in
            --seed|--seeds|--p|--n|--rows|--prune-alpha|--data|--cache|--work|--log|--jobs|--job|--job-out|\
            --job-log|--base-file|--base-crc|--base-only|--scale-grid|--no-cache)
                die "$a is the grid's to set (see --help), not a flow option to pass after --";;
        esac
    done
    [ -f "$data/vocab.txt" ] || { [ -x "$gen" ] || die "no data in $data and no $gen"; "$gen" --out "$data" --quiet; }
    out=$(abspath "$out"); data=$(abspath "$data"); cache=$(abspath "$cache")
    local flow_abs grid_abs
    flow_abs=$(cd "$(dirname "$flow")" && pwd)/$(basename "$flow")
    grid_abs=$(cd "$(dirname "$grid")" && pwd)/$(basename "$grid")

    # the grid's identity: a grid directory never mixes outputs made with other flow options or data
    local fixed="" conf
    [ ${#extra[@]} -gt 0 ] && fixed=$(printf ' %q' "${extra[@]}")
    conf=$(printf 'flow options:%s\ndata: %s\n' "$fixed" "$data")
    if [ -f "$out/grid.conf" ] && [ "$(cat "$out/grid.conf")" != "$conf" ] && [ -d "$out/jobs" ]; then
        if [ "$force" -eq 1 ]; then
            echo "grid: --force: discarding $out/jobs (made with other flow options or data)" >&2
            rm -rf "$out/jobs"
        else
            printf 'grid: %s holds a grid made with\n%s\nnot\n%s\n' "$out" "$(cat "$out/grid.conf")" "$conf" >&2
            die "use another --out, or --force to discard its outputs"
        fi
    fi
    mkdir -p "$out/jobs" "$out/slurm"
    printf '%s\n' "$conf" > "$out/grid.conf"

    # the shared base model, made (or found in the cache) once, before any job
    local base_line base crc
    base_line=$("$flow" --base-only "${extra[@]+"${extra[@]}"}" --threads "$base_threads" --data "$data" \
        --cache "$cache" --work "$out/base-work" | grep '^BASE ') || die "flow --base-only failed"
    base=${base_line#BASE path=}; base=${base% crc=*}; crc=${base_line##* crc=}
    case $base in /*) ;; *) base=$(cd "$(dirname "$base")" && pwd)/$(basename "$base");; esac
    echo "grid: base model $base (CRC-32 $crc)" >&2

    # the points, each once, numbers spelt one way
    local points=() p n a s
    if [ "$product" -eq 1 ]; then
        for p in $ps; do for n in $ns; do points+=("$(num "$p") $n"); done; done
    else
        for p in $ps; do points+=("$(num "$p") $n_fixed"); done
        for n in $ns; do points+=("$(num "$p_fixed") $n"); done
    fi
    mapfile -t points < <(printf '%s\n' "${points[@]}" | awk '!seen[$0]++')
    main_alpha=$(num "$main_alpha")
    local alpha_list=("$main_alpha")
    for a in $alphas; do a=$(num "$a"); [ "$a" = "$main_alpha" ] || alpha_list+=("$a"); done
    # rows: base is the driver's (a job has none); the other alphas' jobs run the Antidote rows and SFT
    local main_rows alpha_job_rows="" r
    main_rows=$(echo "$rows" | tr ',' '\n' | grep -vx base | paste -sd, -)
    [ -n "$main_rows" ] || die "--rows has no job row"
    for r in $(echo "$main_rows" | tr ',' ' '); do
        case ",$alpha_rows," in *",$r,"*) alpha_job_rows=$alpha_job_rows,$r;; esac
    done
    [ -n "$alpha_job_rows" ] && alpha_job_rows=sft$alpha_job_rows

    {
        echo "# antibody.h lab grid (examples/lab/grid.sh jobs): one line per job, tab-separated:"
        echo "# p, n, alpha (flow --prune-alpha), seed, flow --rows, output (relative to this file)"
        echo "#alpha-rows $alpha_rows"
    } > "$out/grid.tsv.new"
    : > "$out/jobs.txt.new"
    local k=0 job_rows name
    for ((s = seed; s < seed + seeds; s++)); do
        for pt in "${points[@]}"; do
            p=${pt% *}; n=${pt#* }
            for a in "${alpha_list[@]}"; do
                if [ "$a" = "$main_alpha" ]; then job_rows=$main_rows; else job_rows=$alpha_job_rows; fi
                [ -n "$job_rows" ] || continue
                name=p$p-n$n-a$a-s$s.txt
                printf '%q job %q -- %q --job --threads 1%s --data %q --base-file %q --base-crc %s --seed %d --p %s --n %d --prune-alpha %s --rows %s\n' \
                    "$grid_abs" "$out/jobs/$name" "$flow_abs" "$fixed" "$data" "$base" "$crc" "$s" "$p" "$n" "$a" \
                    "$job_rows" >> "$out/jobs.txt.new"
                printf '%s\t%d\t%s\t%d\t%s\tjobs/%s\n' "$p" "$n" "$a" "$s" "$job_rows" "$name" >> "$out/grid.tsv.new"
                k=$((k + 1))
            done
        done
    done
    mv "$out/jobs.txt.new" "$out/jobs.txt"
    mv "$out/grid.tsv.new" "$out/grid.tsv"
    printf 'n_fixed=%q\np_fixed=%q\nmain_alpha=%q\n' "$n_fixed" "$(num "$p_fixed")" "$main_alpha" > "$out/plot.conf"
    cat > "$out/grid.sbatch" <<SBATCH
#!/bin/bash
# Slurm job array over $out/jobs.txt (written by examples/lab/grid.sh jobs): task i runs line i.
# Submit with: sbatch $out/grid.sbatch   (add your site's --partition, --time, --account; --array=1-$k%20
# runs at most 20 at once). A task whose output is already finished skips; rerun a failed one with
# sbatch --array=I $out/grid.sbatch. Then: examples/lab/grid.sh merge --out $out
#SBATCH --job-name=antibody-grid
#SBATCH --array=1-$k
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --output=$out/slurm/%A_%a.out
set -eu
line=\$(sed -n "\${SLURM_ARRAY_TASK_ID}p" $(printf '%q' "$out/jobs.txt"))
[ -n "\$line" ] || { echo "no line \$SLURM_ARRAY_TASK_ID in $out/jobs.txt" >&2; exit 1; }
eval "\$line"
SBATCH
    echo "grid: wrote $out/jobs.txt ($k jobs over ${#points[@]} points, $seeds seeds, alphas ${alpha_list[*]}), $out/grid.tsv and $out/grid.sbatch" >&2
}

run_jobs() {
    [ -f "$out/jobs.txt" ] || die "no $out/jobs.txt: run examples/lab/grid.sh jobs first"
    command -v parallel > /dev/null || die "GNU parallel is not installed (tools/install-deps.sh; or run: bash $out/jobs.txt)"
    local opts=(--joblog "$out/parallel.log")
    [ -n "$jobs" ] && opts+=(-j "$jobs")
    [ "$shuffle" -eq 1 ] && opts+=(--shuf)
    local t0 rc=0
    t0=$(date +%s)
    parallel "${opts[@]}" "${par[@]+"${par[@]}"}" < "$out/jobs.txt" || rc=$?
    echo "grid: ran $out/jobs.txt in $(($(date +%s) - t0)) s; $rc job(s) failed (see $out/parallel.log and the .err files)" >&2
    return $rc
}

merge() {
    [ -f "$out/grid.tsv" ] || die "no $out/grid.tsv: run examples/lab/grid.sh jobs first"
    "$grid" merge "$out/grid.tsv" --csv "$out/grid.csv" --missing "$out/missing.txt"
    command -v gnuplot > /dev/null || { echo "grid: gnuplot not installed; no plot (the CSV is complete)" >&2; return 0; }
    local n_fixed p_fixed main_alpha title
    # shellcheck disable=SC1091
    . "$out/plot.conf"
    # one data file per panel: a block per method (x, mean, interval; the mean again with one seed)
    mkdir -p "$out/plot"
    panel() { # name, which rows (awk), x column, y column
        awk -F, -v X="$3" -v Y="$4" -v list="$out/plot/$1.methods" "NR > 1 && ($2)"' {
                if (!($4 in d)) order[++k] = $4
                lo = $(Y + 1) == "nan" ? $Y : $(Y + 1); hi = $(Y + 2) == "nan" ? $Y : $(Y + 2)
                d[$4] = d[$4] $X " " $Y " " lo " " hi "\n" }
            END { for (i = 1; i <= k; i++) { printf "%s\n\n", d[order[i]]; printf "%s%s", (i > 1 ? " " : ""), order[i] > list } }' \
            "$out/grid.csv" > "$out/plot/$1.dat"
    }
    local line="(\$3 == \"\" || \$3 == \"$main_alpha\")"
    panel p-hs "\$2 == $n_fixed && $line" 1 6; panel p-fa "\$2 == $n_fixed && $line" 1 9
    panel n-hs "\$1 + 0 == $p_fixed && $line" 2 6; panel n-fa "\$1 + 0 == $p_fixed && $line" 2 9
    panel a-hs "\$1 + 0 == $p_fixed && \$2 == $n_fixed && \$3 != \"\"" 3 6
    panel a-fa "\$1 + 0 == $p_fixed && \$2 == $n_fixed && \$3 != \"\"" 3 9
    title="antibody.h lab grid: mean and 95% t-interval over the seeds ($out/grid.csv)"
    [ -s "$out/missing.txt" ] && title="$title; INCOMPLETE: $(wc -l < "$out/missing.txt") jobs missing ($out/missing.txt)"
    local all
    all=$(awk -F, 'NR > 1 && !seen[$4]++ { printf " %s", $4 }' "$out/grid.csv")
    draw() { # panel, x label, y label; a method has one colour in every panel
        local m c w
        m=$(cat "$out/plot/$1.methods" 2> /dev/null)
        c=$(for w in $m; do echo "$all" | tr ' ' '\n' | grep -nxF -- "$w" | cut -d: -f1; done | tr '\n' ' ')
        echo "set xlabel \"$2\"; set ylabel '$3'"
        if [ -n "$m" ]; then
            echo "m = \"$m\"; c = \"$c\"; plot for [i = 1:words(m)] '$out/plot/$1.dat' index (i - 1) using 1:2:3:4 with yerrorlines lc (word(c, i) + 0) title word(m, i)"
        else
            echo "set label 1 'no data' at graph 0.45, 0.5; plot NaN notitle; unset label 1"
        fi
    }
    gnuplot <<GP
set terminal pngcairo size 1600,1500 noenhanced
set output '$out/grid.png'
set multiplot layout 3,2 title '$title'
set key outside right top
set yrange [-2:102]
set offsets graph 0.03, graph 0.03, 0, 0
set grid
$(draw p-hs "p (harmful share), n = $n_fixed; Antidote rows at alpha $main_alpha" 'HS %')
$(draw p-fa "p (harmful share), n = $n_fixed; Antidote rows at alpha $main_alpha" 'FA %')
$(draw n-hs "n (user samples), p = $p_fixed; Antidote rows at alpha $main_alpha" 'HS %')
$(draw n-fa "n (user samples), p = $p_fixed; Antidote rows at alpha $main_alpha" 'FA %')
$(draw a-hs "Antidote's alpha (share of each row pruned), p = $p_fixed, n = $n_fixed" 'HS %')
$(draw a-fa "Antidote's alpha (share of each row pruned), p = $p_fixed, n = $n_fixed" 'FA %')
unset multiplot
GP
    echo "grid: wrote $out/grid.png" >&2
}

case $cmd in
    jobs) make_jobs;;
    run) run_jobs;;
    merge) merge;;
    sweep)
        make_jobs
        rc=0; run_jobs || rc=$?
        merge
        exit $rc;;
esac
