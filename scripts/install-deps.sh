#!/bin/sh
# Installs every Debian package horde-node needs to build, run and test.
# Idempotent: runs apt-get only when something is missing (and `apt-get update`
# first in that case), so `make run` / `make test` stay fast on a ready machine.
set -eu

PACKAGES="
build-essential pkg-config
libevent-dev libjansson-dev libconfig-dev libcmocka-dev
libsqlite3-dev libssl-dev libcurl4-openssl-dev libpcre2-dev libpq-dev
libopenblas-dev libpng-dev libwebp-dev zlib1g-dev
python3 python3-pytest python3-requests
clang libclang-rt-14-dev
postgresql wrk
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing" >&2
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: not root; run: sudo apt-get install$missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
