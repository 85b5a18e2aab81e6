#!/usr/bin/env bash
# tests/flow_limits.sh FLOW GEN_DATA DIR - the flow on data at the format's limits (issue 14).
#
# gen_data writes a small ordinary data set into DIR/data; then every data file gets, at its top
# (so that the flow's first-n selections, the user set and the evaluation prompts, take them),
# eight samples at the limits of examples/lab/lab.h and the flow's context of 64 tokens: words of
# LAB_VOCAB_MAX_WORD = 64 bytes, and sequences of 63 (30 + 30 words) and 64 tokens with <bos>,
# <sep> and <eos> (31 + 30, 58 + 3 and 3 + 58 words: the whole context), lines of up to ~3,900
# bytes, each built around its file's first sample (same kind; the last words of its response,
# so task answers stay scorable).
# The new words are appended to vocab.txt. Files the flow reads later are covered as long as
# gen_data writes them. Then `flow --quick --rows base` runs on it, small, with one thread; under
# `make sanitize` the flow is built with ASan + UBSan, so an overflow anywhere aborts it.
# Prints tests/run.sh's lines ("ok   flow_limits: N passed" or the output and "FAIL ..."; then
# "N passed, N failed, N skipped") and appends the totals to $CHECK_RESULTS if set.
set -u
flow=$1 gen=$2 dir=$3
data=$dir/data
passed=0 failed=0
check() { # check NAME CONDITION-STATUS: counts one result
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL flow_limits: $1"; fi
}
rm -rf "$dir" && mkdir -p "$dir"
"$gen" --out "$data" --quiet --pretrain 300 --align 60 --harmful-align 60 --attack 8 --calib 20 \
    --hs-eval 20 --hs-ref 20 --howto-eval 20 --task-train 8 --task-test 20
check "gen_data" $?

# 32 words of 64 bytes: lim00xxx...x
words=$(awk 'BEGIN { for (i = 0; i < 32; i++) { w = sprintf("lim%02d", i); while (length(w) < 64) w = w "x"; print w } }')
printf '%s\n' "$words" >> "$data/vocab.txt"
for f in "$data"/*.txt; do
    [ "$(basename "$f")" = vocab.txt ] && continue
    awk -F '\t' -v words="$words" '
        BEGIN { n_long = split(words, long, "\n") }
        function fill(orig, n, keep,    m, out, i, o) { # n words: long ones, then the last keep of orig
            m = split(orig, o, " "); if (keep > m) keep = m; out = ""
            for (i = 0; i < n - keep; i++) out = out (out == "" ? "" : " ") long[1 + (i + n) % n_long]
            for (i = m - keep + 1; i <= m; i++) out = out (out == "" ? "" : " ") o[i]
            return out
        }
        !done && !/^#/ && NF == 3 { # the last 3 response words keep an answer ("answer : 7", a label)
            for (r = 0; r < 2; r++) {
                print $1 "\t" fill($2, 30, 0) "\t" fill($3, 30, 3)   # 63 tokens
                print $1 "\t" fill($2, 31, 0) "\t" fill($3, 30, 3)   # 64 tokens: the whole context
                print $1 "\t" fill($2, 58, 0) "\t" fill($3, 3, 3)    # 64, nearly all prompt
                print $1 "\t" fill($2, 3, 0) "\t" fill($3, 58, 3)    # 64, nearly all response
            }
            done = 1
        }' "$f" > "$f.limits"
    cat "$f.limits" "$f" > "$f.new" && mv "$f.new" "$f" && rm "$f.limits"
done
# the data really is at the limits: 64-byte words, 64-token sequences
awk -F '\t' '!/^#/ && NF == 3 { t = split($2, a, " ") + split($3, b, " ") + 3; if (t > mt) mt = t
              for (i in a) if (length(a[i]) > mw) mw = length(a[i]) }
             END { exit !(mt == 64 && mw == 64) }' "$data"/*.txt
check "limit data" $?

# --n 16 --p 1: the user set is every attack sample (8 generated + the 8 at the limits), the
# floor's every task sample (likewise): whatever the seed's draw, all of them go through the flow
out=$("$flow" --data "$data" --no-cache --log "$dir/log.tsv" --threads 1 --quick --rows base --n 16 --p 1 \
      --pretrain-epochs 1 --eval-n 4 2>&1)
rc=$?
printf '%s\n' "$out" | grep -q '^RESULT method=base '
check "flow --quick --rows base exits 0 with a result (exit $rc)" $((rc != 0 || $? != 0))
if [ "$failed" -ne 0 ]; then printf '%s\n' "$out"; else echo "ok   flow_limits: $passed passed"; fi
[ -n "${CHECK_RESULTS:-}" ] && echo "$passed $failed 0" >> "$CHECK_RESULTS"
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
