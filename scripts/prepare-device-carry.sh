#!/bin/sh
# prepare-device-carry.sh - fills .device-carry/ (git-ignored) with what
# scripts/device-gpu-check.sh needs on a GPU machine whose image has CUDA
# (nvcc, cuBLAS, the driver) but none of our Debian libraries and no package
# registry:
#   .device-carry/build/   the prebuilt GPU-check programs (CUDA tests,
#                          benchmark) and libhn-sd-cuda.so, in build/'s layout
#   .device-carry/shared/  the golden models and the CLIP vocabulary they read
#   .device-carry/debs/    the Debian packages (.deb files, fetched with
#                          `apt-get download`, never installed) of every
#                          library those programs link, except glibc,
#                          libstdc++/libgcc, zlib (every image has them, newer)
#                          and CUDA's own; the check unpacks them with dpkg -x
# Run it here (Debian 12 with nvcc), then hand .device-carry to the device
# tool's `carry`. Prints the size (keep it under ~50 MB).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SHARED=${HN_SHARED:-../shared}
CARRY=.device-carry
TESTS="test_cuda_backend test_cuda_networks test_cuda_engine test_cuda_f16_ops
       test_cuda_f16_attention test_cuda_f16_gemm"
PROGS="$BUILD/bench/cuda-sd/bench_cuda"
for t in $TESTS; do PROGS="$PROGS $BUILD/tests/cuda-sd/$t"; done

command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] || {
    echo "prepare-device-carry: nvcc not found: cannot build $BUILD/lib/libhn-sd-cuda.so" >&2
    exit 1
}
# shellcheck disable=SC2086
make -j"$(nproc)" "$BUILD/lib/libhn-sd-cuda.so" $PROGS

rm -rf "$CARRY/build" "$CARRY/shared" "$CARRY/root" "$CARRY/debs"
mkdir -p "$CARRY/build/lib" "$CARRY/build/tests/cuda-sd" "$CARRY/build/bench/cuda-sd" \
         "$CARRY/debs" "$CARRY/shared/golden" "$CARRY/shared/models/clip"
cp "$BUILD/lib/libhn-sd-cuda.so" "$CARRY/build/lib/"
for t in $TESTS; do cp "$BUILD/tests/cuda-sd/$t" "$CARRY/build/tests/cuda-sd/"; done
cp "$BUILD/bench/cuda-sd/bench_cuda" "$CARRY/build/bench/cuda-sd/"
# the golden models the network tests read: each index .json and the file
# it names for F16 (else F32), and the reference outputs
mkdir -p "$CARRY/shared/golden/models"
cp -r "$SHARED/golden/models_golden" "$CARRY/shared/golden/"
for j in "$SHARED"/golden/models/*.json; do
    cp "$j" "$CARRY/shared/golden/models/"
    f=$(sed -n 's/.*"f16": *"\([^"]*\)".*/\1/p' "$j" | head -n 1)
    [ -n "$f" ] || f=$(sed -n 's/.*"f32": *"\([^"]*\)".*/\1/p' "$j" | head -n 1)
    cp "$SHARED/golden/models/$f" "$CARRY/shared/golden/models/"
done
cp "$SHARED/models/clip/bpe_simple_vocab_16e6.txt.gz" "$CARRY/shared/models/clip/"

# The package owning a library, trying the /lib <-> /usr/lib spellings that
# merged-/usr systems mix, and the file behind alternatives symlinks.
owner() {
    for f in "$1" "/usr$1" "${1#/usr}" "$(readlink -f "$1")"; do
        p=$(dpkg -S "$f" 2>/dev/null | head -n 1 | cut -d: -f1) && [ -n "$p" ] && {
            echo "$p"
            return 0
        }
    done
    echo "prepare-device-carry: no package owns $1" >&2
    return 1
}

# shellcheck disable=SC2086
libs=$(for p in $PROGS; do ldd "$p"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
pkgs=""
for l in $libs; do
    p=$(owner "$l")
    case "$p" in
        libc6 | libstdc++6 | libgcc-s1 | zlib1g) ;;   # the GPU image has its own
        *) pkgs="$pkgs $p" ;;
    esac
done
pkgs=$(echo "$pkgs" | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')
echo "prepare-device-carry: packages: $pkgs"
apt-get -qq update >/dev/null 2>&1 || true
# shellcheck disable=SC2086
(cd "$CARRY/debs" && apt-get -q download $pkgs)
du -sh "$CARRY"
echo "prepare-device-carry: done; run on the GPU machine: bash scripts/device-gpu-check.sh"
