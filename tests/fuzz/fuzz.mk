# Fuzzing (issue 11): libFuzzer targets for every parser that reads outside
# input, and a replay of their regression corpus that `make test` runs.
#
#   make fuzz          builds tests/fuzz/fuzz_<target>.c with clang
#                      (-fsanitize=fuzzer,address,undefined) into $(FUZZ_BUILD)
#                      and runs each for FUZZ_SECONDS (default 60); new inputs
#                      go to $(FUZZ_BUILD)/corpus/<target>, crashes to
#                      $(FUZZ_BUILD)/crashes/. FUZZ_TARGETS picks some.
#   make fuzz-replay   builds each target WITHOUT libFuzzer (tests/fuzz/
#                      replay_main.c feeds files) with $(CC) + ASan/UBSan and
#                      runs it over tests/fuzz/corpus/<target>/ (seeds and
#                      every input that once crashed). Part of `make check`.
#
# A target's sources: fuzz_<t>_SRCS (project files linked in), its libraries
# fuzz_<t>_LIBS. Objects are built per flavour, never shared with $(BUILD)/obj.

FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_ALL     := http config broker_json model_file pickle zip prompt image signed_url
FUZZ_TARGETS ?= $(FUZZ_ALL)
# the CLIP vocabulary for the tokenizer target (it fuzzes the weights parser
# only when the file is missing)
FUZZ_VOCAB   ?= $(abspath $(or $(HN_SHARED),../shared))/models/clip/bpe_simple_vocab_16e6.txt.gz

FUZZ_CORE_SRCS := $(filter-out core/main.c,$(wildcard core/*.c))
FUZZ_ENGINE    := plugins/cuda-sd/engine
fuzz_http_SRCS        := $(FUZZ_CORE_SRCS)
fuzz_http_LIBS        := $(CORE_LIBS)
fuzz_config_SRCS      := $(FUZZ_CORE_SRCS)
fuzz_config_LIBS      := $(CORE_LIBS)
fuzz_broker_json_SRCS := $(broker_TEST_SRCS)
fuzz_broker_json_LIBS := $(JANSSON_LIBS) -lpthread -lm
fuzz_model_file_SRCS  := $(FUZZ_ENGINE)/model_file.c $(FUZZ_ENGINE)/pickle.c $(FUZZ_ENGINE)/zip.c \
                         $(FUZZ_ENGINE)/error_text.c
fuzz_model_file_LIBS  := $(JANSSON_LIBS) -lz -lm
fuzz_pickle_SRCS      := $(FUZZ_ENGINE)/pickle.c
fuzz_pickle_LIBS      := -lm
fuzz_zip_SRCS         := $(FUZZ_ENGINE)/zip.c $(FUZZ_ENGINE)/error_text.c
fuzz_zip_LIBS         := -lz
fuzz_prompt_SRCS      := $(FUZZ_ENGINE)/tokenizer.c $(FUZZ_ENGINE)/prompt_weights.c \
                         $(FUZZ_ENGINE)/text_normalize.c $(wildcard $(FUZZ_ENGINE)/unicode_data_*.c) \
                         $(FUZZ_ENGINE)/error_text.c
fuzz_prompt_LIBS      := $(JANSSON_LIBS) -lz -lm
fuzz_image_SRCS       := $(FUZZ_ENGINE)/image_io.c $(FUZZ_ENGINE)/error_text.c
fuzz_image_LIBS       := $(shell pkg-config --libs libpng libwebp 2>/dev/null) -lm
fuzz_signed_url_SRCS  := plugins/images-fs/shared/images_url.c
fuzz_signed_url_LIBS  := -lcrypto

# Every header folder a harness or a linked file needs; a plugin's own folder
# first for its files (their names do not collide across these plugins).
FUZZ_INCLUDES := -Icore/include -Icore -Iplugins -Iplugins/broker -Iplugins/cuda-sd -Iplugins/images-fs \
                 $(shell pkg-config --cflags $(PKGS) libpng libwebp 2>/dev/null)
FUZZ_DEFS     := -D_GNU_SOURCE -DHN_VERSION=\"$(VERSION)\" -DHN_PREFIX=\"$(PREFIX)\"
fuzz_plugin_dir = $(if $(filter plugins/%,$(1)),-Iplugins/$(word 2,$(subst /, ,$(1))))

# ---- libFuzzer flavour (clang) ----------------------------------------------
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
REPLAY_SAN  := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -Wall -Wextra -Werror -O1 -g -fno-strict-aliasing $(FUZZ_DEFS) $(FUZZ_SAN) \
               -fsanitize=fuzzer-no-link

$(FUZZ_BUILD)/obj/%.o: %.c $(CORE_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(call fuzz_plugin_dir,$<) $(FUZZ_INCLUDES) -c $< -o $@

define fuzz_template
$(FUZZ_BUILD)/fuzz_$(1): $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_$(1).o $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_defaults.o \
        $$(fuzz_$(1)_SRCS:%.c=$(FUZZ_BUILD)/obj/%.o)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $$@ $$^ $$(fuzz_$(1)_LIBS)
$(BUILD)/fuzz-replay/replay_$(1): $(BUILD)/fuzz-replay/obj/tests/fuzz/fuzz_$(1).o \
        $(BUILD)/fuzz-replay/obj/tests/fuzz/replay_main.o $$(fuzz_$(1)_SRCS:%.c=$(BUILD)/fuzz-replay/obj/%.o)
	$(CC) $(REPLAY_SAN) -o $$@ $$^ $$(fuzz_$(1)_LIBS)
endef
$(foreach t,$(FUZZ_ALL),$(eval $(call fuzz_template,$(t))))

# One run per target; -rss_limit_mb leaves room for the largest image the
# decoder accepts (16384^2 RGBA refused before allocation beyond that).
fuzz: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/crashes tests/fuzz/corpus/$$t; \
	    echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	    HN_FUZZ_VOCAB=$(FUZZ_VOCAB) LSAN_OPTIONS=suppressions=$(abspath tests/fuzz/lsan.supp):print_suppressions=0 \
	    $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=3072 -timeout=20 \
	        -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/crashes/$$t- \
	        $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t > $(FUZZ_BUILD)/fuzz_$$t.log 2>&1 \
	        || { tail -60 $(FUZZ_BUILD)/fuzz_$$t.log; echo "fuzz: $$t FAILED (input in $(FUZZ_BUILD)/crashes/)"; exit 1; }; \
	    grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' $(FUZZ_BUILD)/fuzz_$$t.log; \
	done

# ---- replay flavour ($(CC), no libFuzzer) ------------------------------------
REPLAY_CFLAGS := $(WARN) -O1 -g -fno-strict-aliasing $(FUZZ_DEFS) $(REPLAY_SAN)

$(BUILD)/fuzz-replay/obj/%.o: %.c $(CORE_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(REPLAY_CFLAGS) $(call fuzz_plugin_dir,$<) $(FUZZ_INCLUDES) -c $< -o $@

fuzz-replay: $(FUZZ_ALL:%=$(BUILD)/fuzz-replay/replay_%)
	@set -e; for t in $(FUZZ_ALL); do \
	    HN_FUZZ_VOCAB=$(FUZZ_VOCAB) ASAN_OPTIONS=detect_leaks=1 \
	    LSAN_OPTIONS=suppressions=$(abspath tests/fuzz/lsan.supp):print_suppressions=0 $(BUILD)/fuzz-replay/replay_$$t tests/fuzz/corpus/$$t; \
	done

.PHONY: fuzz fuzz-replay

clean: clean-fuzz
clean-fuzz:
	rm -rf $(FUZZ_BUILD)
.PHONY: clean-fuzz
