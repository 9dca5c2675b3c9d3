-- POST /generate/pop as a few workers of one (trusted) owner. The last result
-- column counts pops that got a job.
local common = dofile(os.getenv("BENCH_DIR") .. "/common.lua")
setup = common.setup
delay = common.delay
local key, model, n = nil, nil, 0
got = 0
init = function()
  key = common.lines(os.getenv("BENCH_OWNER"))[1]
  model = os.getenv("BENCH_POP_MODEL") or "bench-model"
  n = math.random(1, 8)
end
request = function()
  n = n % 8 + 1
  local body = '{"name": "bench-worker-' .. n .. '", "models": ["' .. model .. '"], ' ..
    '"bridge_agent": "horde-node:0.1.0:bench", "max_pixels": 1048576, "amount": 1, "nsfw": true}'
  return wrk.format("POST", "/api/v2/generate/pop",
    {["apikey"] = key, ["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 200 and not body:find('"id":null', 1, true) then got = got + 1 end
end
done = function(s, l) common.done(s, l, "got") end
