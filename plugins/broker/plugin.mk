# broker: the AI Horde v2 image API. Sources: every plugins/broker/*.c and
# broker/shared/modelref (the model reference parser, shared with kudos).
broker_SRCS      := $(wildcard plugins/broker/*.c) plugins/broker/shared/modelref.c
broker_LIBS      := -lpthread -lm $(shell pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8)
# prompt filters (filters.c) use PCRE2 (Debian: libpcre2-dev)
broker_CFLAGS    := $(shell pkg-config --cflags libpcre2-8 2>/dev/null)
# the C unit tests link the pure parts (no api table needed)
broker_TEST_SRCS := plugins/broker/map.c plugins/broker/util.c plugins/broker/bridge.c \
                    plugins/broker/image_check.c plugins/broker/model_ref.c \
                    plugins/broker/validate.c plugins/broker/request.c plugins/broker/price.c \
                    plugins/broker/index.c plugins/broker/shared/modelref.c

# make bench-broker: a node with a temporary config driven by wrk (see bench/).
.PHONY: bench-broker
bench-broker: all
	@sh plugins/broker/bench/run.sh $(BUILD)
BENCH_TARGETS += bench-broker
