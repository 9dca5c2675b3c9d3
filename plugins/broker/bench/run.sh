#!/bin/sh
# make bench-broker: starts a broker node (storage-sqlite, auth, images-fs,
# broker) with a temporary config and data dir on a free loopback port, drives
# it with wrk and the lua scripts next to this file, and writes the numbers to
# docs/BENCHMARKS.md under "## Broker" (replacing that section); then
# cluster_pg.py writes "## Broker on PostgreSQL" (one node vs two on one database).
#
#   sh plugins/broker/bench/run.sh [BUILD_DIR]
#   BENCH_DURATION=5 (seconds per run), BENCH_CONNS="16 64", BENCH_OUT=docs/BENCHMARKS.md
set -eu

BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/horde-node
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/../../.." && pwd)
DUR=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNS:-"16 64"}
OUT=${BENCH_OUT:-$ROOT/docs/BENCHMARKS.md}
PY=/usr/bin/python3
export BENCH_DIR

command -v wrk >/dev/null || { echo "bench-broker: wrk is missing (make deps)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench-broker: $BIN not built (make)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/hn-bench-broker.XXXXXX)
NODE_PID=""
SHM=""
cleanup() {
    if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
    [ -z "$SHM" ] || rm -rf "$SHM"
}
trap cleanup EXIT INT TERM

RESULTS=$WORK/results.txt
: > "$RESULTS"

# ---- a node -------------------------------------------------------------------
start_node() { # $1: name of the node's folder; $2: images-fs settings (optional)
    NODE_DIR=$WORK/$1
    IMAGES_CONF=${2:-}
    mkdir -p "$NODE_DIR"
    PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    URL=http://127.0.0.1:$PORT
    cat > "$NODE_DIR/node.conf" <<CONF
node: { listen = "127.0.0.1:$PORT"; data_dir = "data"; log_level = "warn"; };
load = [ "storage-sqlite", "auth", "images-fs", "broker" ];
providers: { storage = "sqlite"; images = "fs"; };
plugins: { auth: { concurrency = 500; }; broker: { }; images-fs: { $IMAGES_CONF }; };
CONF
    # 384 requesters (a user may have at most 500 waiting images, and the
    # async runs leave everything they make in the queue), 4 more for the
    # check ids, 128 to fill the queue before the pop runs, and one worker owner
    : > "$NODE_DIR/keys"
    : > "$NODE_DIR/check_keys"
    : > "$NODE_DIR/fill_keys"
    i=0
    while [ $i -lt 516 ]; do
        keyfile=$NODE_DIR/keys
        [ $i -lt 384 ] || keyfile=$NODE_DIR/check_keys
        [ $i -lt 388 ] || keyfile=$NODE_DIR/fill_keys
        "$BIN" -c "$NODE_DIR/node.conf" --data-dir "$NODE_DIR/data" user create "req$i" 2>/dev/null \
            | tail -n 1 >> "$keyfile"
        i=$((i + 1))
    done
    "$BIN" -c "$NODE_DIR/node.conf" --data-dir "$NODE_DIR/data" user create owner --trusted 2>/dev/null \
        | tail -n 1 > "$NODE_DIR/owner"
    "$BIN" -c "$NODE_DIR/node.conf" --data-dir "$NODE_DIR/data" --listen "127.0.0.1:$PORT" \
        > "$NODE_DIR/node.log" 2>&1 &
    NODE_PID=$!
    $PY - "$URL" <<'PYEOF'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(sys.argv[1] + "/api/v2/status/heartbeat", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.05)
sys.exit("node did not start")
PYEOF
    export BENCH_KEYS=$NODE_DIR/keys BENCH_OWNER=$NODE_DIR/owner
}

stop_node() {
    kill "$NODE_PID"
    wait "$NODE_PID" || true
    NODE_PID=""
}

# ---- one wrk run: bench NAME CONNS SCRIPT [RATE] --------------------------------------
# CPU time of the node so far, in clock ticks (user + system)
node_ticks() { awk '{print $14 + $15}' "/proc/$NODE_PID/stat"; }

bench() {
    name=$1 conns=$2 script=$3 rate=${4:-}
    t0=$(node_ticks)
    line=$(BENCH_RATE=$rate BENCH_CONNS_N=$conns BENCH_THREADS=2 \
        wrk -t2 -c"$conns" -d"${DUR}s" --latency -s "$BENCH_DIR/$script" "$URL" 2>&1 \
        | grep '^RESULT' | tail -n 1)
    t1=$(node_ticks)
    [ -n "$line" ] || { echo "bench-broker: wrk gave no result for $name" >&2; exit 1; }
    echo "$name $conns $line $((t1 - t0))" >> "$RESULTS"
    echo "  $name c=$conns: $line cpu_ticks=$((t1 - t0))"
}

# ---- the runs -------------------------------------------------------------------------
echo "bench-broker: ${DUR}s per run, connections: $CONNS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
start_node a
for c in $CONNS; do bench heartbeat "$c" heartbeat.lua; done
for c in $CONNS; do bench async "$c" async.lua; done
# the check ids: 1000 requests made just for that
$PY - "$URL" "$NODE_DIR/check_keys" "$WORK/ids" <<'PYEOF'
import json, sys, urllib.request
url, keys, out = sys.argv[1], open(sys.argv[2]).read().split(), sys.argv[3]
with open(out, "w") as f:
    for i in range(1000):
        req = urllib.request.Request(url + "/api/v2/generate/async", method="POST",
            data=json.dumps({"prompt": "check me", "models": ["check-model"]}).encode(),
            headers={"apikey": keys[i % len(keys)], "Content-Type": "application/json"})
        f.write(json.load(urllib.request.urlopen(req))["id"] + "\n")
PYEOF
export BENCH_IDS=$WORK/ids
for c in $CONNS; do bench check "$c" check.lua; done
# paced at the target rates, 64 connections: the latency a client sees there
bench async@5000 64 async.lua 5000
bench check@20000 64 check.lua 20000
# pop with work: before each run 1500 requests of 20 images each (30000 jobs,
# more than a run pops) join what the async runs left in the queue
fill_queue() {
    $PY - "$URL" "$NODE_DIR/fill_keys" "$1" <<'PYEOF'
import http.client, json, sys, urllib.parse
url, keys, part = sys.argv[1], open(sys.argv[2]).read().split(), int(sys.argv[3])
keys = keys[part * 64:(part + 1) * 64]
conn = http.client.HTTPConnection(urllib.parse.urlparse(url).netloc)
body = json.dumps({"prompt": "fill", "models": ["bench-model"], "nsfw": False,
                   "params": {"width": 512, "height": 512, "steps": 20, "n": 20}})
for i in range(1500):
    conn.request("POST", "/api/v2/generate/async", body=body,
                 headers={"apikey": keys[i % len(keys)], "Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 202:
        sys.exit("fill: HTTP %d" % r.status)
PYEOF
}
part=0
for c in $CONNS; do
    fill_queue $part
    part=$((part + 1))
    bench pop-work "$c" pop.lua
done
stop_node

start_node b
export BENCH_POP_MODEL=nothing-queued
for c in $CONNS; do bench pop-empty "$c" pop.lua; done
unset BENCH_POP_MODEL
for c in $CONNS; do bench cycle "$c" cycle.lua; done
bench cycle@2000 64 cycle.lua 8000
stop_node

# The same cycle with the image files on a tmpfs: on some disks creating a
# file costs far more CPU than everything else in the cycle (see the report)
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    SHM=$(mktemp -d /dev/shm/hn-bench-images.XXXXXX)
    start_node c "dir = \"$SHM\";"
    for c in $CONNS; do bench cycle-shm "$c" cycle.lua; done
    stop_node
    rm -rf "$SHM"
    SHM=""
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

# ---- the report ----------------------------------------------------------------------------
$PY - "$RESULTS" "$OUT" "$DUR" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PYEOF'
import os, platform, re, subprocess, sys
results, out, dur, load_before, load_after = sys.argv[1:6]
rows = [l.split() for l in open(results) if l.strip()]
cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem = ""
try:
    kb = int(open("/proc/meminfo").readline().split()[1])
    mem = ", %d GiB RAM" % round(kb / 1048576)
except (OSError, ValueError, IndexError):
    pass
machine = "%d cores (%s)%s, %s %s" % (os.cpu_count() or 0, cpu, mem, platform.system(),
                                        platform.release())
what = {
    "heartbeat": "GET /status/heartbeat",
    "async": "POST /generate/async (512x512, 20 steps; 202 after the commit)",
    "check": "GET /generate/check/{id}, rotating over 1000 requests",
    "pop-work": "POST /generate/pop, work queued",
    "pop-empty": "POST /generate/pop, nothing to do",
    "cycle": "full cycle async -> pop -> submit (inline WebP) -> status",
    "cycle-shm": "the same cycle, image files on tmpfs",
    "async@5000": "async paced at about 5000 requests/s",
    "check@20000": "check paced at about 20000 requests/s",
    "cycle@2000": "cycle paced at about 2000 cycles/s (8000 requests/s)",
}
lines = ["## Broker", "",
         "`make bench-broker` (plugins/broker/bench/): one node with storage-sqlite, auth, "
         "images-fs and broker on loopback, driven by wrk 4.1 (2 threads) for %ss per run; "
         "wrk runs on the same machine. Machine: %s. Load average before/after the runs: "
         "%s / %s." % (dur, machine, load_before, load_after), "",
         "\"node CPU\" is the CPU time (user + system) the node used per request during the run: "
         "unlike requests/s it hardly depends on what else runs on the machine.", "",
         "| run | conns | requests/s | p50 ms | p99 ms | non-2xx | socket errors | node CPU us/req | note |",
         "|---|---|---|---|---|---|---|---|---|"]
tick = os.sysconf("SC_CLK_TCK")
for name, conns, _, rps, p50, p99, bad, sock, extra, ticks in rows:
    cpu = "%.0f" % (int(ticks) / tick * 1e6 / (float(rps) * float(dur))) if float(rps) else "-"
    note = what.get(name, name)
    if name == "pop-work":
        note += ": %.0f jobs/s" % (int(extra) / float(dur))
    if name.startswith("cycle"):
        note += ": %.0f cycles/s" % (int(extra) / float(dur))
    lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (name, conns, rps, p50, p99,
                                                                    bad, sock, cpu, note))
lines += ["",
          "Reading it:",
          "- Unpaced runs are closed loops (every connection sends its next request as soon as "
          "the last is answered), so at saturation the mean latency is connections / throughput "
          "(Little's law): 64 connections at 6000 requests/s wait about 10 ms on average whatever "
          "the server does. The paced runs (`@rate`) offer the target rate instead and show the "
          "latency at that load.",
          "- `cycle` stores every image as a new file (images-fs). Creating a file costs this "
          "VM's ext4 about 0.4 ms of CPU (0.7 ms soon after many deletions; measured with a "
          "plain loop of open(O_CREAT)), a large share of a cycle (compare the node CPU of "
          "`cycle` and `cycle-shm`, which repeats it with the image files on a tmpfs).",
          "- Every answer of async, pop and submit waits for a commit (one fsync per batch); on "
          "this VM's disk a commit now and then takes 10-20 ms (seen with a timer around the "
          "writer's commit), which bounds the p99 of those endpoints.",
          "- The machine is shared (see the load average): other processes took CPU during the "
          "runs, which shows most in the p99 column.",
          ""]
section = "\n".join(lines) + "\n"
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n\n"
m = re.search(r"^## Broker\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
text = text[:m.start()] + section + "\n" + text[m.end():] if m else text.rstrip("\n") + "\n\n" + section
open(out, "w").write(text.rstrip("\n") + "\n")
print("bench-broker: wrote %s" % out)
PYEOF

# ---- PostgreSQL: one node vs two nodes on one database (cluster mode) -----------------------
echo "bench-broker: PostgreSQL runs (storage-pg + images-db)"
$PY "$BENCH_DIR/cluster_pg.py" "$BUILD" "$OUT" "$DUR" || echo "bench-broker: the PostgreSQL runs failed" >&2
