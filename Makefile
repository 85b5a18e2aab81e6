# antibody.h - build, test, benchmark.   `make help` lists the targets.
#
# Everything builds out of tree in $(BUILD) (default build/). The library is header-only: each
# program compiles antibody.h itself (tests link one shared implementation object). No
# native-architecture -march flag anywhere: SIMD kernels carry per-function target attributes and
# are chosen at run time, which is what lets valgrind (no AVX-512) run the same binaries.

CC       ?= cc
CXX      ?= c++
BUILD    ?= build
OPT      ?= -O2
SAN      ?=
WARN     = -Wall -Wextra -Werror
CFLAGS_ALL = -std=c11 $(OPT) -g $(WARN) -fopenmp -I. $(SAN) $(EXTRA_CFLAGS)
LDLIBS_ALL = -lm -ldl $(SAN)
TEST_LIBS  = -lcmocka -lgsl -lgslcblas
VALGRIND   = valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --track-origins=yes
HDRS     = antibody.h $(wildcard kernels/*.h)

TEST_SRCS  = $(sort $(wildcard tests/test_*.c))
TEST_BINS  = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
EX_SRCS    = $(sort $(wildcard examples/*.c))
EX_BINS    = $(patsubst examples/%.c,$(BUILD)/examples/%,$(EX_SRCS))
BENCH_SRCS = $(sort $(wildcard bench/bench_*.c))
BENCH_BINS = $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
TOOL_SRCS  = $(sort $(wildcard tools/*.c))
TOOL_BINS  = $(patsubst tools/%.c,$(BUILD)/tools/%,$(TOOL_SRCS))

.PHONY: all help test valgrind sanitize single check bench tools examples run clean deps readme bench-gpt2 \
        flow-check sweep
.DEFAULT_GOAL := all

all: examples tools $(BENCH_BINS)   ## examples, tools and benchmarks (needs only a C compiler)

help:          ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

examples: $(EX_BINS)
tools: $(TOOL_BINS)

$(BUILD)/examples/%: examples/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDLIBS_ALL)
$(BUILD)/tools/%: tools/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDLIBS_ALL)
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

# test_options defines ANTIBODY_IMPLEMENTATION itself (ANTIBODY_STATIC, AB_MALLOC overrides).
$(BUILD)/tests/test_options: tests/test_options.c tests/testutil.h $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(TEST_LIBS) $(LDLIBS_ALL)

# test_data runs the generator's functions in-process (it includes tools/gen_data.c).
$(BUILD)/tests/test_data: tools/gen_data.c

test: $(TEST_BINS)   ## unit tests (cmocka; GSL and OpenBLAS references)
	@tests/run.sh "" $(TEST_BINS)

# Under memcheck the tests shrink their shapes (AB_TEST_SMALL) and take the AVX2 path by
# themselves: valgrind hides AVX-512 from CPUID/XCR0.
valgrind: $(TEST_BINS)   ## the tests under valgrind memcheck (leaks and invalid accesses fail)
	@AB_TEST_SMALL=1 tests/run.sh "$(VALGRIND)" $(TEST_BINS)

sanitize:   ## the tests built with ASan + UBSan, in build/sanitize
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/sanitize SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test

# The amalgamation: one self-contained header, compiled as C and as C++ by a smoke test.
$(BUILD)/antibody.h: $(HDRS) tools/amalgamate.sh
	@mkdir -p $(BUILD)
	tools/amalgamate.sh antibody.h > $@
single: $(BUILD)/antibody.h   ## build/antibody.h (one file) + its C and C++ smoke test
	@mkdir -p $(BUILD)/single
	cp tests/single_smoke.c $(BUILD)/single/smoke.c
	cp tests/single_smoke.c $(BUILD)/single/smoke.cpp
	cp $(BUILD)/antibody.h $(BUILD)/single/antibody.h
	cd $(BUILD)/single && $(CC) -std=c99 -O2 $(WARN) -pedantic smoke.c -o smoke_c -lm && ./smoke_c
	cd $(BUILD)/single && $(CXX) -std=c++11 -O2 $(WARN) smoke.cpp -o smoke_cpp -lm && ./smoke_cpp

# Everything CI runs; closes with one countable "N passed, N failed" line over all suites.
check:   ## all + test + valgrind + sanitize + single + README snippet + flow-check: what CI runs
	@rm -f $(BUILD)/check-results
	@$(MAKE) --no-print-directory CHECK_RESULTS=$(CURDIR)/$(BUILD)/check-results all test valgrind sanitize single readme flow-check; \
	 rc=$$?; tests/summarize.sh $(BUILD)/check-results $$rc

# The README's drop-in example must be examples/dropin.c verbatim (which `all` compiles and this runs).
readme: $(BUILD)/examples/dropin
	@tools/check_readme.sh README.md examples/dropin.c && $(BUILD)/examples/dropin

# Every bench binary with its defaults, except bench_step, which runs only the tiny model here: one
# scalar step of the GPT-2-shaped model takes about a minute (run `make bench-gpt2` for it).
bench: $(BENCH_BINS)   ## all benchmarks (< 5 min); writes bench/results.md and bench/results.png
	@rm -f $(BUILD)/bench.log
	@for b in $(BENCH_BINS); do \
	    case $$b in *bench_step) args="--case step_tiny";; *) args="";; esac; \
	    AB_BENCH_LOG=$(CURDIR)/$(BUILD)/bench.log $$b $$args || exit 1; done
	tools/bench_report.sh $(BUILD)/bench.log bench/results.png > bench/results.md
	@echo "wrote bench/results.md"

bench-gpt2: $(BUILD)/bench/bench_step   ## the GPT-2-shaped training step vs the scalar path (~3 min)
	$(BUILD)/bench/bench_step --case step_gpt2

# The main job: the lab's data (0.1 s, deterministic), then the whole flow with its defaults.
run: $(BUILD)/examples/flow $(BUILD)/tools/gen_data   ## the lab: align -> fine-tune -> prune, HS/FA table (< 10 min)
	$(BUILD)/tools/gen_data --out $(BUILD)/data --quiet
	$(BUILD)/examples/flow --data $(BUILD)/data --cache $(BUILD)/cache --log $(BUILD)/flow-log.tsv $(FLOW_ARGS)

# `flow --quick` twice (1 and 2 threads, fresh and cached base): table structure, bitwise reproducibility.
flow-check: $(BUILD)/examples/flow $(BUILD)/tools/gen_data   ## the lab's --quick end-to-end check (~2 min)
	@tests/flow_check.sh $(BUILD)/examples/flow $(BUILD)/tools/gen_data $(BUILD)/flowcheck

# HS and FA over p and n for every method: CSV + plot (long: one full flow per point; SWEEP_ARGS=--quick).
sweep: $(BUILD)/examples/flow $(BUILD)/tools/gen_data   ## p and n sweeps: build/sweep/sweep.csv and sweep.png
	tools/sweep.sh --flow $(BUILD)/examples/flow --gen $(BUILD)/tools/gen_data --out $(BUILD)/sweep $(SWEEP_ARGS)

deps:   ## install the test dependencies (Debian, as root)
	tools/install-deps.sh

clean:
	rm -rf $(BUILD)
