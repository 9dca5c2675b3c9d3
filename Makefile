# horde-node build. `make` builds the node and every plugin; `make test` sets
# up the machine (Debian packages) and runs every test; `make run` starts the
# all-in-one node. See README.md.
#
# Plugins: every folder plugins/<name>/ builds build/plugins/<name>.so. By
# default from plugins/<name>/*.c; a plugins/<name>/plugin.mk may set
#   <name>_SRCS       sources of the .so (default: plugins/<name>/*.c)
#   <name>_LIBS       libraries to link (-lsqlite3 ...)
#   <name>_CFLAGS     extra compile flags
#   <name>_TEST_SRCS  sources linked into the plugin's C tests (default: none)
# and each plugins/<name>/tests/test_*.c becomes a cmocka test program linked
# with <name>_TEST_SRCS, run by `make test`. Source that other plugins compile
# in lives in its owner's plugins/<owner>/shared/ (docs/PLUGINS.md, "Code
# shared between plugins"): a plugin lists the shared/*.c it needs in its
# <name>_SRCS / <name>_TEST_SRCS, so each .so carries its copy.

CC       ?= cc
PREFIX   ?= /usr/local
BUILD    ?= build
VERSION  := 0.1.0
PKGS     := libevent libevent_pthreads jansson libconfig
SANITIZE ?=
OPT      ?= -O2

WARN     := -std=c11 -Wall -Wextra -Werror
CFLAGS_BASE := $(WARN) $(OPT) -g -D_GNU_SOURCE -fno-strict-aliasing $(SANITIZE)
SDK_CFLAGS  := -Icore/include $(shell pkg-config --cflags jansson 2>/dev/null)
CORE_CFLAGS := $(CFLAGS_BASE) $(SDK_CFLAGS) -Icore -DHN_VERSION=\"$(VERSION)\" \
               -DHN_PREFIX=\"$(PREFIX)\" $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CORE_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lpthread -lm
PLUGIN_CFLAGS := $(CFLAGS_BASE) $(SDK_CFLAGS) -fPIC -fvisibility=hidden -Iplugins
# -z defs: a plugin may only use symbols of libraries it names, never the
# core's (the core exports none): the api table is the whole contract.
PLUGIN_LDFLAGS := -shared -Wl,-z,defs $(SANITIZE)
JANSSON_LIBS := $(shell pkg-config --libs jansson 2>/dev/null)

.PHONY: all deps run test check check-asan unit-tests plugin-tests abi-tests \
        example-test integration-tests install clean bench gpu-check
.DEFAULT_GOAL := all

# ---- core -------------------------------------------------------------------
CORE_SRCS := $(filter-out core/main.c,$(wildcard core/*.c))
CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/obj/%.o)
CORE_HDRS := $(wildcard core/*.h core/include/hn/*.h core/include/hn/*.def)

$(BUILD)/obj/core/%.o: core/%.c $(CORE_HDRS) | $(BUILD)/obj/core
	$(CC) $(CORE_CFLAGS) -c $< -o $@

$(BUILD)/horde-node: $(BUILD)/obj/core/main.o $(CORE_OBJS)
	$(CC) $(SANITIZE) -o $@ $^ $(CORE_LIBS)

$(BUILD)/obj/core:
	mkdir -p $@

# ---- code shared between plugins --------------------------------------------
# Plugins link nothing of the core (-z defs), so code several plugins need is
# compiled into each: it lives in its owner's plugins/<owner>/shared/, built
# once by the owner's rule (position-independent, hidden symbols) and linked
# into every plugin that lists it. Included as "<owner>/shared/<file>.h".
SHARED_HDRS := $(wildcard plugins/*/shared/*.h)

# ---- plugins ----------------------------------------------------------------
PLUGINS := $(notdir $(patsubst %/,%,$(dir $(wildcard plugins/*/))))
-include $(wildcard plugins/*/plugin.mk)

define plugin_template
$(1)_SRCS ?= $$(wildcard plugins/$(1)/*.c)
$(1)_OBJS := $$($(1)_SRCS:%.c=$(BUILD)/obj/%.o)
$(1)_TEST_OBJS := $$($(1)_TEST_SRCS:%.c=$(BUILD)/obj/%.o)
$(1)_TESTS := $$(patsubst plugins/$(1)/tests/%.c,$(BUILD)/tests/$(1)/%,$$(wildcard plugins/$(1)/tests/test_*.c))
$(BUILD)/obj/plugins/$(1)/%.o: plugins/$(1)/%.c $(CORE_HDRS) $(SHARED_HDRS) $$(wildcard plugins/$(1)/*.h plugins/$(1)/*/*.h)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(PLUGIN_CFLAGS) $$($(1)_CFLAGS) -Iplugins/$(1) -c $$< -o $$@
$(BUILD)/plugins/$(1).so: $$($(1)_OBJS)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(PLUGIN_LDFLAGS) -o $$@ $$^ $$($(1)_LIBS) $$(JANSSON_LIBS) -lm
$(BUILD)/tests/$(1)/%: plugins/$(1)/tests/%.c $$($(1)_TEST_OBJS)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(PLUGIN_CFLAGS) $$($(1)_CFLAGS) -Iplugins/$(1) -o $$@ $$^ $$($(1)_LIBS) $$(JANSSON_LIBS) -lcmocka -lm $(SANITIZE)
PLUGIN_SOS += $(BUILD)/plugins/$(1).so
PLUGIN_TESTS += $$($(1)_TESTS)
endef
$(foreach p,$(PLUGINS),$(eval $(call plugin_template,$(p))))

all: $(BUILD)/horde-node $(PLUGIN_SOS)

# fuzzers and their corpus replay, crash/abuse tests (issue 11)
-include tests/fuzz/fuzz.mk tests/reliability/reliability.mk

# ---- tests ------------------------------------------------------------------
UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_TESTS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/unit/%)

$(BUILD)/tests/unit/%: tests/unit/%.c $(CORE_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CORE_CFLAGS) -o $@ $^ $(CORE_LIBS) -lcmocka

deps:
	@sh scripts/install-deps.sh

unit-tests: $(UNIT_TESTS) $(PLUGIN_TESTS)
	@sh scripts/run-c-tests.sh $(UNIT_TESTS) $(PLUGIN_TESTS)

abi-tests: all
	@$(MAKE) --no-print-directory -C tests/abi HN_BUILD=$(abspath $(BUILD)) SANITIZE="$(SANITIZE)"

integration-tests: all abi-tests
	HN_BUILD=$(abspath $(BUILD)) sh scripts/pytest -q tests/integration $(wildcard plugins/*/tests/test_*.py) tests/reliability
	HN_BUILD=$(abspath $(BUILD)) sh scripts/pytest -q --storage=postgres $(wildcard plugins/broker/tests/test_broker_*.py)
	HN_BUILD=$(abspath $(BUILD)) sh scripts/pytest -q --storage=postgres-cluster $(wildcard plugins/broker/tests/test_broker_*.py)

check: all unit-tests abi-tests integration-tests fuzz-replay

# The README's test command (and CI's): the suite, then the same suite under
# ASan + UBSan (issue 11 wants sanitizers in CI; both fit well inside CI's
# 30-minute budget on 2 cores).
test: deps
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory check-asan

# AddressSanitizer + UBSan over the same suite, in its own build folder.
check-asan: deps
	@$(MAKE) --no-print-directory check BUILD=build-asan OPT=-O1 \
	    SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

run: deps all
	$(BUILD)/horde-node -c etc/horde-node.conf

# ---- install ----------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/horde-node/plugins \
	    $(DESTDIR)$(PREFIX)/include/hn $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/etc
	install -m 755 $(BUILD)/horde-node $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(PLUGIN_SOS) $(DESTDIR)$(PREFIX)/lib/horde-node/plugins/
	install -m 644 core/include/hn/*.h core/include/hn/*.def $(DESTDIR)$(PREFIX)/include/hn/
	install -m 644 etc/*.conf $(DESTDIR)$(PREFIX)/etc/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' core/horde-node-plugin.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/horde-node-plugin.pc

# Benchmarks: each plugin.mk adds its targets to BENCH_TARGETS.
bench: deps all $(BENCH_TARGETS)

clean:
	rm -rf build build-asan
