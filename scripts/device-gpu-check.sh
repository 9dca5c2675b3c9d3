#!/bin/bash
# device-gpu-check.sh - `make gpu-check` on a GPU machine that has CUDA but
# not our Debian libraries, from a copy of the repository plus .device-carry/
# (made here by scripts/prepare-device-carry.sh):
#   1. unpacks the carried .deb files with dpkg -x into .device-carry/root
#      (nothing is installed) and points LD_LIBRARY_PATH there;
#   2. finds cuBLAS (/usr/local/cuda, else anywhere on the machine, e.g.
#      PyTorch's nvidia-cublas wheel); rebuilds libhn-sd-cuda.so with the
#      machine's nvcc only if the carried one cannot load;
#   3. runs the CUDA tests with HN_SD_REQUIRE_GPU=1 (no GPU = failure), the
#      benchmark (UNet steps/s, whole image, VRAM, CPU agreement), then the
#      op tests under compute-sanitizer when it is there (report only).
# Logs go to $OUT (the device tool's output folder; default
# /tmp/gpu-check-out): gpu-check.log (everything), bench.md (the benchmark's
# Markdown for docs/BENCHMARKS.md), tests.log, sanitizer.log, machine.txt.
# Exit status: 0 when the tests and the benchmark's agreement checks pass.
set -u
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
CARRY=$PWD/.device-carry
BIN=$CARRY/build
exec > >(tee "$OUT/gpu-check.log") 2>&1
status=0
step() { echo; echo "=== $* ($(date +%T))"; }

step machine
{
    uname -a
    nvidia-smi 2>&1 | head -n 20
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
} | tee "$OUT/machine.txt"
[ -d "$BIN" ] || { echo "no $BIN: run scripts/prepare-device-carry.sh first and carry .device-carry"; exit 2; }
chmod +x "$BIN"/tests/cuda-sd/* "$BIN"/bench/cuda-sd/* 2>/dev/null   # in case the copy lost the bits

step "runtime libraries from .device-carry/debs"
rm -rf "$CARRY/root"
mkdir -p "$CARRY/root"
for d in "$CARRY"/debs/*.deb; do
    if command -v dpkg >/dev/null; then
        dpkg -x "$d" "$CARRY/root" || { echo "cannot unpack $d"; status=1; }
    else                        # no dpkg: a .deb is an ar archive holding data.tar.*
        member=$(ar t "$d" | grep '^data\.tar')
        ar p "$d" "$member" | tar -x -a -f - -C "$CARRY/root" 2>/dev/null ||
            ar p "$d" "$member" | tar -x --xz -f - -C "$CARRY/root" ||
            { echo "cannot unpack $d"; status=1; }
    fi
done
R=$CARRY/root
export LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ls "$CARRY/debs"

step "cuBLAS and the CUDA backend library"
LIB=$BIN/lib/libhn-sd-cuda.so
if ldd "$LIB" | grep -q "libcublas.so.[0-9]* => not found"; then
    cublas=$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name 'libcublas.so.13' -print 2>/dev/null | head -n 1)
    if [ -n "$cublas" ]; then
        LD_LIBRARY_PATH="$(dirname "$cublas"):$LD_LIBRARY_PATH"
        export LD_LIBRARY_PATH
        echo "cuBLAS found at $cublas"
    fi
fi
if ldd "$LIB" | grep -q "not found"; then
    echo "the carried $LIB does not load here:"
    ldd "$LIB" | grep "not found"
    echo "rebuilding it with this machine's nvcc"
    make build/lib/libhn-sd-cuda.so NVCC="$(command -v nvcc)" && cp build/lib/libhn-sd-cuda.so "$LIB" || status=1
fi
ldd "$LIB" | grep -E "cublas|not found"
for p in "$BIN"/tests/cuda-sd/* "$BIN"/bench/cuda-sd/*; do
    if ldd "$p" | grep -q "not found"; then
        echo "$p is missing libraries:"
        ldd "$p" | grep "not found"
        status=1
    fi
done
command -v cuobjdump >/dev/null && cuobjdump --list-elf --list-ptx "$LIB" | sed 's/^/  /'

export HN_SHARED=$CARRY/shared HN_SD_REQUIRE_GPU=1
step "CUDA tests (HN_SD_REQUIRE_GPU=1)"
for t in "$BIN"/tests/cuda-sd/test_cuda_backend "$BIN"/tests/cuda-sd/test_cuda_networks \
         "$BIN"/tests/cuda-sd/test_cuda_engine "$BIN"/tests/cuda-sd/test_cuda_f16_ops \
         "$BIN"/tests/cuda-sd/test_cuda_f16_attention "$BIN"/tests/cuda-sd/test_cuda_f16_gemm; do
    echo "== $t"
    timeout 300 "$t" 2>&1 | tee -a "$OUT/tests.log"
    rc=${PIPESTATUS[0]}
    echo "== $(basename "$t"): exit $rc"
    [ "$rc" -eq 0 ] || status=1
done

step "benchmark"
# shellcheck disable=SC2086  # GPU_BENCH_ARGS: extra options, split on purpose
timeout 600 "$BIN"/bench/cuda-sd/bench_cuda --weights /tmp/sd15-random-f16.safetensors \
    --vocab "$CARRY/shared/models/clip/bpe_simple_vocab_16e6.txt.gz" --profile \
    ${GPU_BENCH_ARGS:-} \
    > "$OUT/bench.md"
rc=$?
cat "$OUT/bench.md"
echo "== bench_cuda: exit $rc"
[ "$rc" -eq 0 ] || status=1

if command -v compute-sanitizer >/dev/null && [ "${SKIP_SANITIZER:-0}" != 1 ]; then
    step "compute-sanitizer memcheck on the op tests (report only)"
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$BIN"/tests/cuda-sd/test_cuda_backend > "$OUT/sanitizer.log" 2>&1
    echo "compute-sanitizer: exit $? (0 = clean, 9 = errors found, 124 = timed out)"
    grep -E "ERROR SUMMARY|Invalid|out of bounds|PASSED|FAILED" "$OUT/sanitizer.log" | head -n 40
fi

step "done: status $status"
exit $status
