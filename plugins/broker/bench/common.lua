-- Shared by the broker's wrk scripts: reading keys and ids from files the
-- runner wrote, and one machine-readable result line at the end:
--   RESULT <requests/s> <p50 ms> <p99 ms> <non-2xx> <socket errors> <extra>
local M = {}

function M.lines(path)
  local out = {}
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if #line > 0 then out[#out + 1] = line end
  end
  f:close()
  return out
end

M.threads = {}

function M.setup(thread)
  table.insert(M.threads, thread)
end

-- extra: a per-thread counter name to sum into the last column
function M.done(summary, latency, extra)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local sock = e.connect + e.read + e.write + e.timeout
  local sum = 0
  if extra then
    for _, t in ipairs(M.threads) do sum = sum + (tonumber(t:get(extra)) or 0) end
  end
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d %d\n", summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, e.status, sock, sum))
end

-- Paced runs: with BENCH_RATE (requests/s over all connections),
-- BENCH_CONNS_N (connections) and BENCH_THREADS (wrk threads) set, each
-- connection waits before each request so that the node sees about that rate
-- instead of all it can take, and the latencies show what a client sees at
-- that load. The wait starts at conns/rate and is corrected once a second by
-- the rate this thread achieved (wrk's Lua has only a one-second clock).
-- Scripts install it with `delay = common.delay` (nil when unpaced).
local rate = tonumber(os.getenv("BENCH_RATE") or "")
local conns = tonumber(os.getenv("BENCH_CONNS_N") or "")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "") or 2
if rate and conns and rate > 0 then
  local ms = 1000 * conns / rate
  local per_thread = rate / nthreads
  local sec, count = os.time(), 0
  M.delay = function()
    count = count + 1
    local now = os.time()
    if now ~= sec then
      local achieved = count / (now - sec)
      ms = math.max(0, math.min(1000, ms * achieved / per_thread))
      sec, count = now, 0
    end
    return ms
  end
end

return M
