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
chromium nodejs
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

# The rating page's browser test drives Debian's chromium with playwright-core
# (plugins/ratings/tests/browser: package.json + package-lock.json, no browser
# download). Installed once; `npm ci` reads only the lock file.
BROWSER_TEST=plugins/ratings/tests/browser
if [ -f "$BROWSER_TEST/package-lock.json" ] && [ ! -d "$BROWSER_TEST/node_modules/playwright-core" ]; then
    # Debian's nodejs ships without npm (NodeSource's includes it): add Debian's
    # npm package only where no npm is on PATH, so neither setup is disturbed.
    if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm
    fi
    if command -v npm >/dev/null 2>&1; then
        echo "install-deps: npm ci in $BROWSER_TEST" >&2
        (cd "$BROWSER_TEST" && npm ci --no-audit --no-fund)
    else
        echo "install-deps: npm not found; the rating page's browser test will install it or fail" >&2
    fi
fi
