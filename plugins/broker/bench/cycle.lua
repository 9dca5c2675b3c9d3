-- The full cycle: async -> pop -> submit (inline WebP) -> status, then again,
-- as many cycles in flight as connections. response() cannot tell which
-- connection answered, and wrk asks that connection for its next request
-- only when its socket is writable again (other connections may go first),
-- so each response queues its cycle's next step in a FIFO and request() sends
-- the oldest queued step, or starts a new cycle when none is queued. Every
-- response leads to exactly one request(), so the number of cycles in flight
-- stays equal to the number of connections. The last result column counts
-- completed cycles.
local common = dofile(os.getenv("BENCH_DIR") .. "/common.lua")
setup = common.setup
delay = common.delay
local keys, owner, n, last_id = nil, nil, 0, nil
local queue, head, tail = {}, 1, 0
cycles = 0
local webp = "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="
local body = '{"prompt": "a lighthouse at dusk", "models": ["cycle-model"], "nsfw": false, ' ..
  '"r2": false, "params": {"width": 512, "height": 512, "steps": 20, "sampler_name": "k_euler"}}'
init = function()
  keys = common.lines(os.getenv("BENCH_KEYS"))
  owner = common.lines(os.getenv("BENCH_OWNER"))[1]
  n = math.random(1, #keys)
end
local function json_headers(key)
  return {["apikey"] = key, ["Content-Type"] = "application/json"}
end
local function async_req()
  n = n % #keys + 1
  return wrk.format("POST", "/api/v2/generate/async", json_headers(keys[n]), body)
end
local function pop_req()
  local w = '{"name": "cycle-worker-' .. (n % 8) .. '", "models": ["cycle-model"], ' ..
    '"bridge_agent": "horde-node:0.1.0:bench", "max_pixels": 1048576, "nsfw": true}'
  return wrk.format("POST", "/api/v2/generate/pop", json_headers(owner), w)
end
local function push(r)
  tail = tail + 1
  queue[tail] = r
end
request = function()
  if head <= tail then
    local r = queue[head]
    queue[head] = nil
    head = head + 1
    return r
  end
  return async_req()
end
response = function(status, headers, body)
  if body:find('"reward"', 1, true) then            -- submit done: read a status
    push(wrk.format("GET", "/api/v2/generate/status/" .. last_id))
  elseif body:find('"payload"', 1, true) then       -- pop answered
    local job = body:match('"id":"([%x%-]+)"')
    if job then
      push(wrk.format("POST", "/api/v2/generate/submit", json_headers(owner),
        '{"id": "' .. job .. '", "generation": "' .. webp .. '", "state": "ok", "seed": 7}'))
    else
      push(pop_req())                                 -- nothing yet: pop again
    end
  elseif body:find('"generations"', 1, true) then   -- status: one cycle done
    cycles = cycles + 1
  elseif status == 202 then                         -- async accepted
    last_id = body:match('"id":"([%x%-]+)"')
    push(pop_req())
  end
end
done = function(s, l) common.done(s, l, "cycles") end
