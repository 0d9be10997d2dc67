# gpamm - build, test, benchmark. Out-of-tree: everything goes to $(BUILD).
#   make            library (static + shared) and the gpamm CLI
#   make run        the main job
#   make test       build and run every test
#   make bench      benchmarks (print figures and ratios)
#   make check-asan the tests under ASan + UBSan + LSan
#   make check-tsan the tests under ThreadSanitizer
#   make man        the manual page, docs/gpamm.1 (man, mandoc or groff)
#   make help       this list

BUILD   ?= build
ifeq ($(origin CC),default)
CC      := gcc
endif
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ifeq ($(CI),true)
WERROR  ?= 1
endif
ifeq ($(WERROR),1)
WARN    += -Werror
endif
CPPFLAGS += -Iinclude -Isrc -D_GNU_SOURCE $(URCU_INLINE)
ALL_CFLAGS = -std=c11 -fPIC -pthread $(WARN) $(CFLAGS) $(SANFLAGS)
LDLIBS  += -lurcu-bp -lxxhash -pthread -lm

# liburcu's read-side primitives inlined (a few ns instead of a call of
# about 30 ns on every walk). Not under the sanitizers: UBSan flags the
# library's own reader record as misaligned for its declared alignment,
# and the out-of-line calls are not instrumented.
URCU_INLINE := -D_LGPL_SOURCE
ifeq ($(SAN),1)
URCU_INLINE :=
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
CPPFLAGS += -DGPAMM_DEBUG=1
endif
# ThreadSanitizer: liburcu's grace periods and the guest stacks are
# annotated (src/rcu.h, vcpu.c); a report fails the test that caused it.
ifeq ($(TSAN),1)
URCU_INLINE :=
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
CPPFLAGS += -DGPAMM_DEBUG=1
endif
ifeq ($(DEBUG),1)
CPPFLAGS += -DGPAMM_DEBUG=1
endif

LIB_SRCS   := $(wildcard src/*.c src/arch/loongarch/*.c src/host/*.c)
LIB_OBJS   := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_SRCS   := $(wildcard tools/gpamm/*.c)
CLI_OBJS   := $(CLI_SRCS:%.c=$(BUILD)/%.o)
# Migration: the stream format and its transport (tools/gpamm/mig/), in the
# CLI and in the tests named test_mig_*.
MIG_SRCS   := $(wildcard tools/gpamm/mig/*.c)
MIG_OBJS   := $(MIG_SRCS:%.c=$(BUILD)/%.o)
MIG_TESTS  := $(filter $(BUILD)/tests/unit/test_mig_%,$(patsubst %.c,$(BUILD)/%,$(wildcard tests/unit/*.c)))
HARN_SRCS  := $(wildcard tests/harness/*.c)
HARN_OBJS  := $(HARN_SRCS:%.c=$(BUILD)/%.o)
TEST_SRCS  := $(wildcard tests/unit/*.c tests/model/*.c tests/stress/*.c)
TEST_BINS  := $(patsubst %.c,$(BUILD)/%,$(TEST_SRCS))
# The benchmark system: suites in bench/, their machinery in bench/lib/,
# all run by the CLI ("gpamm bench SUITE", "gpamm bench all").
BENCH_SRCS := $(wildcard bench/*.c bench/lib/*.c)
BENCH_OBJS := $(BENCH_SRCS:%.c=$(BUILD)/%.o)

LIB_A  := $(BUILD)/libgpamm.a
LIB_SO := $(BUILD)/libgpamm.so
CLI    := $(BUILD)/gpamm

.PHONY: all run test bench check-asan check-tsan help clean deps tests man
all: $(LIB_A) $(LIB_SO) $(CLI)

# Missing packages are installed (as root) or named, once per build tree.
DEPS_OK := $(BUILD)/.deps-ok
$(DEPS_OK): scripts/deps.sh
	@mkdir -p $(BUILD)
	@scripts/deps.sh spin
	@touch $@
$(LIB_OBJS) $(HARN_OBJS): | $(DEPS_OK)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIB_A): $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(LIB_SO): $(LIB_OBJS)
	$(CC) -shared $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(CLI_OBJS) $(BENCH_OBJS): CPPFLAGS += -Ibench
$(CLI_OBJS) $(MIG_OBJS): CPPFLAGS += -Itools/gpamm
$(MIG_OBJS): | $(DEPS_OK)
$(CLI): $(CLI_OBJS) $(MIG_OBJS) $(BENCH_OBJS) $(LIB_A)
	$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJS) $(MIG_OBJS) $(BENCH_OBJS) $(LIB_A) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(HARN_OBJS) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests $(ALL_CFLAGS) -MMD -MP -o $@ $< $(HARN_OBJS) $(LIB_A) $(LDLIBS)

# The migration tests link the stream and transport objects as well.
$(MIG_TESTS): $(BUILD)/tests/unit/test_mig_%: tests/unit/test_mig_%.c $(HARN_OBJS) $(MIG_OBJS) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests -Itools/gpamm $(ALL_CFLAGS) -MMD -MP -o $@ $< $(HARN_OBJS) $(MIG_OBJS) $(LIB_A) $(LDLIBS)

tests: $(TEST_BINS)

deps:
	@scripts/deps.sh

# The main job: a guest live-migrated through the dirty log, verified.
run: all
	$(CLI) migrate

test: all tests
	@tests/run.sh $(TEST_BINS)

# Every suite at small sizes; each target with PASS or MISS (a MISS is not a failure).
bench: all
	$(CLI) bench all

check-asan:
	$(MAKE) BUILD=build-asan SAN=1 OPT=-O1 test

check-tsan:
	TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/sanitizers/tsan.supp $(TSAN_OPTIONS)" \
		$(MAKE) BUILD=build-tsan TSAN=1 OPT=-O1 test

# Whichever formatter is here; nothing is built or installed.
man:
	@if command -v man >/dev/null 2>&1; then man -l docs/gpamm.1; \
	elif command -v mandoc >/dev/null 2>&1; then mandoc -man docs/gpamm.1 | $${PAGER:-less}; \
	elif command -v groff >/dev/null 2>&1; then groff -man -t -Tutf8 docs/gpamm.1 | $${PAGER:-less -R}; \
	else echo "make man: no man, mandoc or groff here; read docs/gpamm.1 or docs/cli.md"; fi

help:
	@sed -n '2,10s/^# //p' Makefile

clean:
	rm -rf $(BUILD) build-asan build-tsan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
