# Non-recursive build of litefs (the node) and litefs-cloud (the backup service).
#
#   make                build everything into build/
#   make test           install deps, build, layering check, unit tests (ASan+UBSan), fuzz smoke, integration tests
#   make unit           unit tests only (add SANITIZE=1 for ASan+UBSan)
#   make integration    integration tests only (real FUSE mounts, real clients)
#   make fuzz           time-boxed libFuzzer run of every fuzz target (FUZZ_SECONDS=60)
#   make bench          benchmarks (print numbers; never fail on timing)
#   make demo           the demo (see README.md)
#   make demo-failover  a failover with the etcd lease, end to end (scripts/demo-failover)
#   make tsan           ThreadSanitizer build into build/tsan, then a multi-database
#                       workload and a few mount/replication tests against it
#
# SANITIZE=1 builds into $(BUILD)/san with -fsanitize=address,undefined.
# BUILD=dir puts objects elsewhere (default build/).

.DEFAULT_GOAL := all
SHELL := /bin/bash

CC ?= cc
PKG_CONFIG ?= pkg-config
PKGS := fuse3 sqlite3 liblz4 libzstd libcurl jansson yaml-0.1 libcrypto libxml-2.0

BUILD ?= build
OPT := -O2
ifeq ($(SANITIZE),1)
override BUILD := $(BUILD)/san
OPT := -O1
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

WARN := -Wall -Wextra -Wformat=2 -Wmissing-prototypes -Wshadow -Wno-unused-parameter
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -g $(OPT) $(WARN) \
	-iquote src $(PKG_CFLAGS) $(SAN_FLAGS) -MMD -MP $(CFLAGS)
ALL_LDFLAGS = $(SAN_FLAGS) $(LDFLAGS)
LIBS = $(PKG_LIBS) -lhttp_parser -lpthread -lm

# Every src/<part>/*.c except the program entry points forms the library
# that the programs, the unit tests, the fuzzers and the benchmarks link
# (docs/architecture.md: what each part is and what it may include).
MAIN_SRCS := src/cmd/main.c src/cmd/cloud_main.c
LIB_SRCS := $(filter-out $(MAIN_SRCS),$(wildcard src/*/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/src/cloud/cloud_ui_assets.o
# The dashboard's pages, compiled in (scripts/gen-ui-assets; docs/dashboard.md).
UI_ASSETS := $(wildcard src/cloud/ui/*.html src/cloud/ui/*.css src/cloud/ui/*.js src/cloud/ui/*.svg)
LIB := $(BUILD)/liblitefs.a

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELPER_SRCS := $(filter-out $(UNIT_SRCS),$(wildcard tests/unit/*.c))
UNIT_HELPER_OBJS := $(UNIT_HELPER_SRCS:%.c=$(BUILD)/%.o)

BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 60

PROGS := $(BUILD)/litefs $(BUILD)/litefs-cloud

.PHONY: all deps test unit integration fuzz fuzz-build bench demo demo-stop demo-failover clean tsan tsan-build
all: $(PROGS)

deps:
	@scripts/install-deps

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

%/gen/cloud_ui_assets.c: scripts/gen-ui-assets $(UI_ASSETS)
	@mkdir -p $(@D)
	scripts/gen-ui-assets $@ $(UI_ASSETS)

$(BUILD)/src/cloud/cloud_ui_assets.o: $(BUILD)/gen/cloud_ui_assets.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/litefs: $(BUILD)/src/cmd/main.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/litefs-cloud: $(BUILD)/src/cmd/cloud_main.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(UNIT_HELPER_OBJS) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# Fuzzers are always built with clang, libFuzzer, ASan and UBSan. The
# library is compiled once for them into build/fuzzobj (instrumented for
# coverage, without libFuzzer's main: fuzzer-no-link), and each fuzzer links
# what it needs from that archive (the library archive may be built by gcc).
FUZZ_FLAGS = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -g -O1 -iquote src $(PKG_CFLAGS) -fno-sanitize-recover=all
FUZZ_LIB := build/fuzzobj/libfuzz.a
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=build/fuzzobj/%.o) build/fuzzobj/gen/cloud_ui_assets.o
build/fuzzobj/%.o: %.c
	@mkdir -p $(@D)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c -o $@ $<
build/fuzzobj/gen/cloud_ui_assets.o: build/gen/cloud_ui_assets.c
	@mkdir -p $(@D)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<
$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	rm -f $@ && ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB)
	@mkdir -p $(@D)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIB) $(LIBS)

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

fuzz-build: $(FUZZ_BINS)

# The fuzzers run at the same time (each for FUZZ_SECONDS); a failing one
# prints the end of its log.
fuzz: deps $(FUZZ_BINS)
	@pids=(); for f in $(FUZZ_BINS); do \
		name=$$(basename $$f); corpus=build/fuzz/corpus/$$name; mkdir -p $$corpus; \
		tests/fuzz/seed-corpus $$name $$corpus; \
		echo "== $$f ($(FUZZ_SECONDS)s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -max_len=300000 -print_final_stats=1 $$corpus \
			>/dev/null 2>build/fuzz/$$name.log & pids+=($$!); \
	done; \
	fail=0; i=0; for f in $(FUZZ_BINS); do \
		name=$$(basename $$f); \
		if wait $${pids[$$i]}; then \
			echo "$$name: $$(grep -E 'stat::number_of_executed_units' build/fuzz/$$name.log)"; \
		else echo "== $$name FAILED"; tail -50 build/fuzz/$$name.log; fail=1; fi; \
		i=$$((i + 1)); \
	done; exit $$fail

integration: all
	@tests/run-integration

# ThreadSanitizer: the programs built by clang into build/tsan (a separate
# tree, so the normal build is untouched), then integration tests that run
# many FUSE workers and databases at once against them. Any report fails the
# target; reports are in build/tsan/reports. Not part of `make test`: it
# takes a few minutes. TSAN_TESTS picks other tests (pytest arguments).
TSAN_TESTS ?= tests/integration/test_multidb.py tests/integration/test_mount.py \
	tests/integration/test_replication.py -k 'multidb or concurrent_writers or clean_restart or kill9_node \
	or three_nodes or promptly'
tsan-build:
	@$(MAKE) --no-print-directory BUILD=build/tsan CC=clang \
		CFLAGS="-fsanitize=thread -O1 -fno-omit-frame-pointer" LDFLAGS=-fsanitize=thread \
		build/tsan/litefs build/tsan/litefs-cloud

tsan: tsan-build
	@rm -rf build/tsan/reports && mkdir -p build/tsan/reports
	@LITEFS_BIN=$(CURDIR)/build/tsan/litefs TSAN_OPTIONS="log_path=$(CURDIR)/build/tsan/reports/report $(TSAN_OPTIONS)" \
		tests/run-integration $(TSAN_TESTS); rc=$$?; \
	if ls build/tsan/reports/report.* >/dev/null 2>&1; then \
		grep -h '^SUMMARY' build/tsan/reports/report.* | sort | uniq -c; \
		echo "ThreadSanitizer reports in build/tsan/reports"; exit 1; \
	fi; exit $$rc

# Builds use every core (-j); the steps stay in order.
NPROC := $(shell nproc 2>/dev/null || echo 2)
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@scripts/check-layers $(BUILD)
	@$(MAKE) --no-print-directory -j$(NPROC) SANITIZE=1 unit
	@$(MAKE) --no-print-directory -j$(NPROC) FUZZ_SECONDS=$${FUZZ_SECONDS:-20} fuzz
	@$(MAKE) --no-print-directory integration

bench: deps all $(BENCH_BINS)
	@bench/run

demo: deps all
	@scripts/demo

demo-stop:
	@scripts/demo stop

demo-failover: deps all
	@scripts/demo-failover

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
