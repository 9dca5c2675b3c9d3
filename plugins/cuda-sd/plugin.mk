# cuda-sd: the SD engine (engine/, pure C), its backends (backend/), and the
# plugin glue (*.c at the top). Sources are picked up by folder, so adding a
# file needs no edit here.
CUDA_SD_ENGINE_SRCS := $(wildcard plugins/cuda-sd/engine/*.c plugins/cuda-sd/backend/*.c \
                                  plugins/cuda-sd/backend/cpu/*.c)
cuda-sd_SRCS      := $(wildcard plugins/cuda-sd/*.c) $(CUDA_SD_ENGINE_SRCS)
cuda-sd_TEST_SRCS := $(CUDA_SD_ENGINE_SRCS)
cuda-sd_CFLAGS    := $(shell pkg-config --cflags openblas libpng libwebp zlib 2>/dev/null)
cuda-sd_LIBS      := $(shell pkg-config --libs openblas libpng libwebp zlib 2>/dev/null) -lpthread

# ---- CUDA backend (backend/cuda/, helper E4) ---------------------------------
# The CUDA code is its own library, loaded at run time by backend/cuda_loader.c
# (dlopen), so cuda-sd.so never links CUDA and loads on machines without it:
#   $(BUILD)/lib/libhn-sd-cuda.so      nvcc build, only where nvcc is found
#                                      (PATH or /usr/local/cuda/bin); SASS for
#                                      Hopper (sm_90) + compute_80 and compute_75
#                                      PTX that the driver JIT-compiles for
#                                      Ampere/Ada and Turing GPUs
#   $(BUILD)/lib/libhn-sd-cuda-emu.so  the same .cu sources built with $(CXX)
#                                      against the CPU emulation of CUDA
#                                      (backend/cuda/emu): lets the tests run the
#                                      kernels on machines without a GPU
# `make gpu-check` runs the CUDA tests requiring a GPU, then the GPU benchmark.
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# compute_80 PTX as well: Ampere/Ada GPUs (the 8 GB cards) JIT it and get the
# m16n8k16 MMAs and cp.async of the attention kernel, which compute_75 lacks
CUDA_SD_GENCODE ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80 \
                   -gencode arch=compute_75,code=compute_75
CUDA_SD_CU_SRCS := $(wildcard plugins/cuda-sd/backend/cuda/*.cu)
CUDA_SD_CU_HDRS := $(wildcard plugins/cuda-sd/backend/cuda/*.h plugins/cuda-sd/backend/cuda/emu/*.h \
                     plugins/cuda-sd/backend/*.h plugins/cuda-sd/engine/half.h \
                     plugins/cuda-sd/engine/model_file.h)
CUDA_SD_LIB     := $(BUILD)/lib/libhn-sd-cuda.so
CUDA_SD_EMU_LIB := $(BUILD)/lib/libhn-sd-cuda-emu.so
CUDA_SD_LIBS    := $(CUDA_SD_EMU_LIB) $(if $(NVCC),$(CUDA_SD_LIB))

$(BUILD)/obj/plugins/cuda-sd/backend/cuda/%.o: plugins/cuda-sd/backend/cuda/%.cu $(CUDA_SD_CU_HDRS)
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O3 $(CUDA_SD_GENCODE) -D_GNU_SOURCE -Iplugins/cuda-sd \
	    -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror -c $< -o $@
$(CUDA_SD_LIB): $(CUDA_SD_CU_SRCS:plugins/%.cu=$(BUILD)/obj/plugins/%.o)
	@mkdir -p $(dir $@)
	$(NVCC) -shared -o $@ $^ -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -Xlinker -rpath,$(CUDA_HOME)/lib64

CUDA_SD_EMU_CXXFLAGS := -std=c++17 -O2 -g -fPIC -fvisibility=hidden -ftls-model=initial-exec -fno-strict-aliasing -Wall -Wextra -Werror \
                        -D_GNU_SOURCE -DSD_CUDA_EMU -Iplugins/cuda-sd $(SANITIZE)
$(BUILD)/obj/plugins/cuda-sd/backend/cuda-emu/%.o: plugins/cuda-sd/backend/cuda/%.cu $(CUDA_SD_CU_HDRS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_SD_EMU_CXXFLAGS) -x c++ -c $< -o $@
$(BUILD)/obj/plugins/cuda-sd/backend/cuda-emu/cuda_emu.o: plugins/cuda-sd/backend/cuda/emu/cuda_emu.cpp $(CUDA_SD_CU_HDRS)
	@mkdir -p $(dir $@)
	$(CXX) $(CUDA_SD_EMU_CXXFLAGS) -c $< -o $@
$(CUDA_SD_EMU_LIB): $(CUDA_SD_CU_SRCS:plugins/cuda-sd/backend/cuda/%.cu=$(BUILD)/obj/plugins/cuda-sd/backend/cuda-emu/%.o) \
                    $(BUILD)/obj/plugins/cuda-sd/backend/cuda-emu/cuda_emu.o
	@mkdir -p $(dir $@)
	$(CXX) -shared $(SANITIZE) -o $@ $^

# `make install` puts the CUDA library where the loader looks from the
# installed plugin: <prefix>/lib/horde-node/plugins/../lib/
install: install-cuda-sd-lib
install-cuda-sd-lib: $(if $(NVCC),$(CUDA_SD_LIB))
	$(if $(NVCC),install -d $(DESTDIR)$(PREFIX)/lib/horde-node/lib && \
	    install -m 755 $(CUDA_SD_LIB) $(DESTDIR)$(PREFIX)/lib/horde-node/lib/)
.PHONY: install-cuda-sd-lib

# built by `make` (all) and before the CUDA test program runs (order-only:
# the test loads them with dlopen, it does not link them)
all: $(CUDA_SD_LIBS)
CUDA_SD_GPU_TESTS := $(BUILD)/tests/cuda-sd/test_cuda_backend $(BUILD)/tests/cuda-sd/test_cuda_networks \
                     $(BUILD)/tests/cuda-sd/test_cuda_engine $(BUILD)/tests/cuda-sd/test_cuda_f16_ops \
                     $(BUILD)/tests/cuda-sd/test_cuda_f16_attention $(BUILD)/tests/cuda-sd/test_cuda_f16_gemm
$(CUDA_SD_GPU_TESTS): | $(CUDA_SD_LIBS)

# The GPU benchmark (bench/cuda/bench_cuda.c): UNet steps/s, whole-image
# time, memory, and agreement with the CPU backend on SD1.5-shaped random
# weights (E2's bench/sd15_weights.c writes them once, ~2.1 GB).
# GPU_BENCH_ARGS adds options (--runs N, --steps N, --size PX, --no-image...).
CUDA_SD_GPU_BENCH := $(BUILD)/bench/cuda-sd/bench_cuda
GPU_BENCH_WEIGHTS ?= $(BUILD)/bench/sd15-random-f16.safetensors
GPU_BENCH_ARGS ?= --profile
$(CUDA_SD_GPU_BENCH): $(BUILD)/obj/plugins/cuda-sd/bench/cuda/bench_cuda.o \
                      $(BUILD)/obj/plugins/cuda-sd/bench/sd15_weights.o \
                      $(CUDA_SD_ENGINE_SRCS:%.c=$(BUILD)/obj/%.o) | $(CUDA_SD_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(SANITIZE) -o $@ $(filter %.o,$^) $(cuda-sd_LIBS) $(JANSSON_LIBS) -ldl -lm
all: $(CUDA_SD_GPU_BENCH)

gpu-check: $(CUDA_SD_LIBS) $(CUDA_SD_GPU_TESTS) $(CUDA_SD_GPU_BENCH)
	@test -n "$(NVCC)" || { echo "gpu-check: nvcc not found (PATH, /usr/local/cuda/bin): cannot build $(CUDA_SD_LIB)"; exit 1; }
	@# A GPU is required here: say so once, up front, rather than only in each test's failure.
	@nvidia-smi -L >/dev/null 2>&1 || echo "gpu-check: no NVIDIA GPU answers 'nvidia-smi -L' here; the CUDA tests below require one and will fail"
	HN_SD_REQUIRE_GPU=1 sh scripts/run-c-tests.sh $(CUDA_SD_GPU_TESTS)
	@mkdir -p $(dir $(GPU_BENCH_WEIGHTS))
	$(CUDA_SD_GPU_BENCH) --weights $(GPU_BENCH_WEIGHTS) \
	    --vocab $(or $(HN_SHARED),../shared)/models/clip/bpe_simple_vocab_16e6.txt.gz $(GPU_BENCH_ARGS)

# The memory plan without a GPU: bench_cuda --memory-plan on the emulated
# library in a dry run (exact device peaks of the backend's own allocations
# per phase of a 512x512 SD1.5 image; backend/cuda/README.md).
memory-plan-sd: $(CUDA_SD_EMU_LIB) $(CUDA_SD_GPU_BENCH)
	@mkdir -p $(dir $(GPU_BENCH_WEIGHTS))
	HN_SD_CUDA_LIB=$(abspath $(CUDA_SD_EMU_LIB)) $(CUDA_SD_GPU_BENCH) --memory-plan \
	    --weights $(GPU_BENCH_WEIGHTS) \
	    --vocab $(or $(HN_SHARED),../shared)/models/clip/bpe_simple_vocab_16e6.txt.gz
.PHONY: memory-plan-sd

# ---- benchmark (helper E2): `make bench-sd` ----------------------------------
# SD1.5-shaped random F16 checkpoint under $(BUILD)/bench/ (written once,
# ~2.1 GB, deterministic), then UNet step and whole-image timings with peak
# RSS, printed as Markdown for docs/BENCHMARKS.md. BENCH_SD_ARGS adds options
# (--threads N, --runs N, --steps N, --no-image, --profile).
CUDA_SD_BENCH_SRCS := $(wildcard plugins/cuda-sd/bench/*.c)
CUDA_SD_BENCH_OBJS := $(CUDA_SD_BENCH_SRCS:%.c=$(BUILD)/obj/%.o)
BENCH_SD_ARGS ?= --profile
$(BUILD)/bench/cuda-sd/bench_sd: $(CUDA_SD_BENCH_OBJS) $(CUDA_SD_ENGINE_SRCS:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(SANITIZE) -o $@ $^ $(cuda-sd_LIBS) $(JANSSON_LIBS) -ldl -lm
bench-sd: $(BUILD)/bench/cuda-sd/bench_sd
	@mkdir -p $(BUILD)/bench
	$(BUILD)/bench/cuda-sd/bench_sd --weights $(BUILD)/bench/sd15-random-f16.safetensors \
	    --vocab $(or $(HN_SHARED),../shared)/models/clip/bpe_simple_vocab_16e6.txt.gz $(BENCH_SD_ARGS)
BENCH_TARGETS += bench-sd
.PHONY: bench-sd
