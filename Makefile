# antibody.h - build, test, benchmark.   `make help` lists the targets.
#
# Everything builds out of tree in $(BUILD) (default build/). The library is header-only: each
# program compiles the headers itself (tests link one shared implementation object; the lab's
# programs link the lab's objects, examples/lab/*.c). No native-architecture -march flag
# anywhere: SIMD kernels carry per-function target attributes and are chosen at run time, which
# is what lets valgrind (no AVX-512) run the same binaries.

CC       ?= cc
CXX      ?= c++
BUILD    ?= build
OPT      ?= -O2
SAN      ?=
WARN     = -Wall -Wextra -Werror
CFLAGS_ALL = -std=c11 $(OPT) -g $(WARN) -pthread -I. $(SAN) $(EXTRA_CFLAGS)
LDLIBS_ALL = -lm -ldl $(SAN)
TEST_LIBS  = -lcmocka -lgsl -lgslcblas
VALGRIND   = valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --track-origins=yes
HDRS     = antibody.h antibody_gpt.h antibody_gpt_io.h antibody_defence.h $(wildcard kernels/*.h)
LAB_HDRS = examples/lab/lab.h examples/lab/gen.h examples/lab/stats.h
LAB_OBJS = $(BUILD)/lab/lab.o
GEN_OBJS = $(BUILD)/lab/gen.o $(LAB_OBJS)

TEST_SRCS  = $(sort $(wildcard tests/test_*.c))
TEST_BINS  = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
EX_SRCS    = $(sort $(wildcard examples/*.c))
EX_BINS    = $(patsubst examples/%.c,$(BUILD)/examples/%,$(EX_SRCS)) $(BUILD)/lab/flow $(BUILD)/lab/grid
BENCH_SRCS = $(sort $(wildcard bench/bench_*.c))
BENCH_BINS = $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
TOOL_SRCS  = $(sort $(wildcard tools/*.c))
TOOL_BINS  = $(patsubst tools/%.c,$(BUILD)/tools/%,$(TOOL_SRCS))

.PHONY: all help test valgrind sanitize single check bench tools examples run clean deps readme bench-gpt2 bench-v011 size-check \
        install install-check bench-results calibrate scale-grid \
        flow-check flow-limits sweep grid grid-check
.DEFAULT_GOAL := all

all: examples tools $(BENCH_BINS) $(BUILD)/bench/gpt2_gemms   ## examples, tools and benchmarks (needs only a C compiler)

help:          ## this list
	@grep -E '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "%-14s %s\n", $$1, $$2 }'

examples: $(EX_BINS)
tools: $(TOOL_BINS)

$(BUILD)/examples/%: examples/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDLIBS_ALL)
$(BUILD)/tools/%: tools/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDLIBS_ALL)

# The lab (examples/lab/): its objects, the flow, and the data generator's command line.
$(BUILD)/lab/%.o: examples/lab/%.c $(HDRS) $(LAB_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@
$(BUILD)/lab/flow: examples/lab/flow.c $(LAB_OBJS) $(BUILD)/lab/stats.o $(HDRS) $(LAB_HDRS)
	$(CC) $(CFLAGS_ALL) $< $(LAB_OBJS) $(BUILD)/lab/stats.o -o $@ $(LDLIBS_ALL)
$(BUILD)/lab/grid: examples/lab/grid.c $(BUILD)/lab/stats.o $(HDRS) examples/lab/stats.h
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/lab/stats.o -o $@ $(LDLIBS_ALL)
$(BUILD)/tools/gen_data: tools/gen_data.c $(GEN_OBJS) $(HDRS) $(LAB_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(GEN_OBJS) -o $@ $(LDLIBS_ALL)
# Benchmarks: frame pointers and debug info so perf record / callgrind give readable profiles.
$(BUILD)/bench/%: bench/%.c $(HDRS) $(wildcard bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fno-omit-frame-pointer $< -o $@ $(LDLIBS_ALL)

# Tests: one shared implementation object, one binary per kernel family.
$(BUILD)/tests/impl.o: tests/impl.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@
$(BUILD)/tests/test_%: tests/test_%.c $(BUILD)/tests/impl.o tests/testutil.h
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/tests/impl.o -o $@ $(TEST_LIBS) $(LDLIBS_ALL)
# The lab's tests and the defence tests (whose batches come from the lab fixture) link the lab.
$(BUILD)/tests/test_lab: tests/test_lab.c $(BUILD)/tests/impl.o tests/testutil.h tests/labfixture.h $(GEN_OBJS) $(BUILD)/lab/stats.o
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/tests/impl.o $(GEN_OBJS) $(BUILD)/lab/stats.o -o $@ $(TEST_LIBS) $(LDLIBS_ALL)
$(BUILD)/tests/test_defence: tests/test_defence.c $(BUILD)/tests/impl.o tests/testutil.h tests/labfixture.h $(LAB_OBJS)
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/tests/impl.o $(LAB_OBJS) -o $@ $(TEST_LIBS) $(LDLIBS_ALL)

# Not a test_* binary: make valgrind runs it natively, then under memcheck against that run.
$(BUILD)/tests/repro: tests/repro.c $(BUILD)/tests/impl.o tests/testutil.h
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/tests/impl.o -o $@ $(TEST_LIBS) $(LDLIBS_ALL)

# test_options defines ANTIBODY_IMPLEMENTATION itself (ANTIBODY_STATIC, AB_MALLOC overrides).
$(BUILD)/tests/test_options: tests/test_options.c tests/testutil.h $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(TEST_LIBS) $(LDLIBS_ALL)


test: $(TEST_BINS)   ## unit tests (cmocka; GSL and OpenBLAS references)
	@tests/run.sh "" $(TEST_BINS)

# Under memcheck the tests shrink their shapes (AB_TEST_SMALL) and take the AVX2 path by
# themselves: valgrind hides AVX-512 from CPUID/XCR0. Then tests/repro.c: a few training steps of
# the lab's model on the AVX2 path natively, and under memcheck, which must give the same CRC.
valgrind: $(TEST_BINS) $(BUILD)/tests/repro   ## the tests under valgrind memcheck (leaks and invalid accesses fail), native = memcheck bits
	@AB_TEST_SMALL=1 tests/run.sh "$(VALGRIND)" $(TEST_BINS)
	@out=$$($(BUILD)/tests/repro 2>&1); want=$$(printf '%s\n' "$$out" | sed -n 's/^NOTE repro: crc32 \([0-9a-f]*\).*/\1/p'); \
	 [ -n "$$want" ] || printf 'native run of repro:\n%s\n' "$$out"; \
	 AB_REPRO_WANT=$$want tests/run.sh "$(VALGRIND)" $(BUILD)/tests/repro

sanitize:   ## the tests and flow-limits built with ASan + UBSan, in build/sanitize
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/sanitize SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test flow-limits

# The amalgamations: build/antibody.h holds every layer in one file (the drop-in), and
# build/antibody_core.h the numerical core alone. Each is compiled as C99 and as C++11 with -Werror
# and runs a smoke test (tests/single_smoke.c; AB_SMOKE_MODEL adds the model and the defences).
SINGLE_WARN = $(WARN) -pedantic
$(BUILD)/antibody.h: $(HDRS) tools/amalgamate.sh
	@mkdir -p $(BUILD)
	tools/amalgamate.sh antibody.h antibody_gpt.h antibody_defence.h > $@
$(BUILD)/antibody_core.h: $(HDRS) tools/amalgamate.sh
	@mkdir -p $(BUILD)
	tools/amalgamate.sh antibody.h > $@
single: $(BUILD)/antibody.h $(BUILD)/antibody_core.h   ## build/antibody.h (every layer) and build/antibody_core.h, each compiled as C99 and C++11 and run
	@rm -rf $(BUILD)/single && mkdir -p $(BUILD)/single/all $(BUILD)/single/core
	cp $(BUILD)/antibody.h $(BUILD)/single/all/antibody.h
	cp $(BUILD)/antibody_core.h $(BUILD)/single/core/antibody.h
	for v in all core; do \
	    d=$(BUILD)/single/$$v; def=; [ $$v = all ] && def=-DAB_SMOKE_MODEL; \
	    cp tests/single_smoke.c $$d/smoke.c && cp tests/single_smoke.c $$d/smoke.cpp && \
	    (cd $$d && $(CC) -std=c99 -O2 $(SINGLE_WARN) $$def smoke.c -o smoke_c -lm && ./smoke_c && \
	     $(CXX) -std=c++11 -O2 $(SINGLE_WARN) $$def smoke.cpp -o smoke_cpp -lm && ./smoke_cpp) || exit 1; \
	done
	@echo "single_smoke without threads (-DAB_NO_THREADS):"
	cd $(BUILD)/single/all && $(CC) -std=c99 -O2 $(SINGLE_WARN) -DAB_SMOKE_MODEL -DAB_NO_THREADS smoke.c -o smoke_nothreads -lm && ./smoke_nothreads

# make install PREFIX=/usr/local: the headers, kernels/ and a pkg-config file (antibody.pc).
PREFIX ?= /usr/local
install:   ## the headers, kernels/ and share/pkgconfig/antibody.pc under PREFIX (default /usr/local)
	install -d $(DESTDIR)$(PREFIX)/include/kernels $(DESTDIR)$(PREFIX)/share/pkgconfig
	install -m 644 antibody.h antibody_gpt.h antibody_gpt_io.h antibody_defence.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 kernels/*.h $(DESTDIR)$(PREFIX)/include/kernels/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/^#define AB_VERSION_STRING "\(.*\)"/\1/p' antibody.h)|' \
	    tools/antibody.pc.in > $(DESTDIR)$(PREFIX)/share/pkgconfig/antibody.pc
install-check:   ## make install into a temporary prefix, then build and run programs via pkg-config
	@tools/install_check.sh $(BUILD)/install-check

size-check:   ## no source file outside tests/ over 2,500 lines
	@tools/size_check.sh

# Everything CI runs; closes with one countable "N passed, N failed" line over all suites.
check:   ## all + test + valgrind + sanitize + single + install-check + README snippet + size-check + flow-check + grid-check: what CI runs
	@rm -f $(BUILD)/check-results
	@$(MAKE) --no-print-directory CHECK_RESULTS=$(CURDIR)/$(BUILD)/check-results all test valgrind sanitize single install-check readme size-check flow-check grid-check; \
	 rc=$$?; tests/summarize.sh $(BUILD)/check-results $$rc

# The README's drop-in example must be examples/dropin.c verbatim (which `all` compiles and this runs).
readme: $(BUILD)/examples/dropin
	@tools/check_readme.sh README.md examples/dropin.c && $(BUILD)/examples/dropin

# Every bench binary with its defaults (bench_step leaves out the GPT-2-shaped model unless asked:
# one scalar step of it takes about a minute; run `make bench-gpt2` for it).
# Writes build/bench/results.md and .png only: a benchmark never dirties the checkout.
bench: $(BENCH_BINS)   ## all benchmarks (< 5 min); writes build/bench/results.md and results.png
	@rm -f $(BUILD)/bench.log
	@for b in $(BENCH_BINS); do \
	    args=""; \
	    AB_BENCH_LOG=$(CURDIR)/$(BUILD)/bench.log $$b $$args || exit 1; done
	tools/bench_report.sh $(BUILD)/bench.log $(BUILD)/bench/results.png > $(BUILD)/bench/results.md
	@echo "wrote $(BUILD)/bench/results.md"

# The committed copy that the README's Performance section quotes, refreshed on purpose only.
bench-results: bench   ## make bench, then copy its results over the committed bench/results.md and .png
	cp $(BUILD)/bench/results.md bench/results.md
	@if [ -f $(BUILD)/bench/results.png ]; then cp $(BUILD)/bench/results.png bench/results.png; fi
	@echo "refreshed bench/results.md from this run"

bench-gpt2: $(BUILD)/bench/bench_step $(BUILD)/bench/gpt2_gemms   ## the GPT-2-shaped training step: vs scalar, of the FMA limit, contended, per product, its products vs OpenBLAS (~7 min)
	$(BUILD)/bench/bench_step --case gpt2
	$(BUILD)/bench/gpt2_gemms

# The training steps against v0.1.1's, linked into one binary (bench/step_peer.c, compiled against
# `git archive` of the v0.1.1 commit with ANTIBODY_STATIC and -fopenmp, as that version threads)
# and timed interleaved with ours in one process.
V011_REV = e3b37b8
$(BUILD)/v011/src/antibody.h:
	@mkdir -p $(BUILD)/v011/src
	git archive $(V011_REV) | tar -x -C $(BUILD)/v011/src
$(BUILD)/v011/step_peer.o: bench/step_peer.c bench/step_peer.h $(BUILD)/v011/src/antibody.h
	$(CC) -std=c11 $(OPT) -g -fopenmp -I$(BUILD)/v011/src -c $< -o $@
$(BUILD)/bench/bench_step_v011: bench/bench_step.c $(HDRS) $(wildcard bench/*.h) $(BUILD)/v011/step_peer.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fno-omit-frame-pointer -DBENCH_STEP_PEER $< $(BUILD)/v011/step_peer.o -o $@ -fopenmp $(LDLIBS_ALL)
bench-v011: $(BUILD)/bench/bench_step_v011   ## the tiny and lab training steps vs v0.1.1's, in one process (~2 min)
	$(BUILD)/bench/bench_step_v011 --case step_

# The main job: the lab's data (0.1 s, deterministic), then the whole flow with its defaults.
run: $(BUILD)/lab/flow $(BUILD)/tools/gen_data   ## the lab over 5 seeds: align -> fine-tune -> prune, HS/FA with intervals (< 10 min)
	$(BUILD)/tools/gen_data --out $(BUILD)/data --quiet
	$(BUILD)/lab/flow --data $(BUILD)/data --cache $(BUILD)/cache --work $(BUILD)/flow-work --log $(BUILD)/flow-log.tsv $(FLOW_ARGS)

# `flow --quick` twice (1 and 2 threads, fresh and cached base): table structure, bitwise reproducibility.
flow-check: $(BUILD)/lab/flow $(BUILD)/tools/gen_data   ## the lab's --quick end-to-end check (~2 min)
	@examples/lab/flow_check.sh $(BUILD)/lab/flow $(BUILD)/tools/gen_data $(BUILD)/flowcheck

# The attack's calibration on SFT alone (ALGORITHMS.md): SFT's HS over p, 5 seeds per point.
calibrate: $(BUILD)/lab/flow $(BUILD)/tools/gen_data   ## SFT's HS over p: the attack's calibration table (build/calibrate/calibration.md)
	examples/lab/calibrate.sh --flow $(BUILD)/lab/flow --gen $(BUILD)/tools/gen_data --data $(BUILD)/data --out $(BUILD)/calibrate $(CALIBRATE_ARGS)

# The pre-registered scaling rule: Antibody/Booster's s and Vaccine's rho from the aligned models only.
scale-grid: $(BUILD)/lab/flow $(BUILD)/tools/gen_data   ## the scaling rule's grid: aligned HS and refusals per strength, and its choice
	$(BUILD)/tools/gen_data --out $(BUILD)/data --quiet
	$(BUILD)/lab/flow --scale-grid --data $(BUILD)/data --cache $(BUILD)/cache --work $(BUILD)/scale-grid $(FLOW_ARGS)

# The flow on data at the format's limits (64-byte words, 64-token sequences): tests/flow_limits.sh.
# `make sanitize` runs it built with ASan + UBSan, where an overflow anywhere in the flow aborts it.
flow-limits: $(BUILD)/lab/flow $(BUILD)/tools/gen_data   ## flow --quick --rows base on data at the format's limits (~10 s)
	@tests/flow_limits.sh $(BUILD)/lab/flow $(BUILD)/tools/gen_data $(BUILD)/flowlimits

# The experiment grid (examples/lab/grid.sh, README "The experiment grid"): independent flow jobs
# from one shared base model, run by GNU parallel (or Slurm), merged into one CSV with intervals.
# SWEEP_ARGS: grid.sh options, then flow's after -- (e.g. SWEEP_ARGS=--quick, or "--seeds 3 -- --lora").
SWEEP_OUT ?= $(BUILD)/sweep
GRID_TOOLS = --flow $(BUILD)/lab/flow --grid $(BUILD)/lab/grid --gen $(BUILD)/tools/gen_data --data $(BUILD)/data --cache $(BUILD)/cache --out $(SWEEP_OUT)
sweep: $(BUILD)/lab/flow $(BUILD)/lab/grid $(BUILD)/tools/gen_data   ## the default grid (p and n lines, 5 seeds, 3 alphas) run here with GNU parallel: $(SWEEP_OUT)/grid.csv, grid.png
	examples/lab/grid.sh sweep $(GRID_TOOLS) $(SWEEP_ARGS)
grid: $(BUILD)/lab/flow $(BUILD)/lab/grid $(BUILD)/tools/gen_data   ## the default grid's base model and job list only ($(SWEEP_OUT)/jobs.txt, grid.sbatch), to run elsewhere
	examples/lab/grid.sh jobs $(GRID_TOOLS) $(SWEEP_ARGS)

# A tiny grid run sequentially, with parallel -j 2 and shuffled with half its jobs killed: identical tables.
grid-check: $(BUILD)/lab/flow $(BUILD)/lab/grid $(BUILD)/tools/gen_data   ## the grid's end-to-end check (~2 min)
	@examples/lab/grid_check.sh $(BUILD)/lab/flow $(BUILD)/lab/grid $(BUILD)/tools/gen_data $(BUILD)/gridcheck

deps:   ## install the test dependencies (Debian, as root)
	tools/install-deps.sh

clean:
	rm -rf $(BUILD)
