-- POST /generate/async, rotating over many requesters (each has a
-- concurrency of 500 waiting images, as users of the horde have at most).
local common = dofile(os.getenv("BENCH_DIR") .. "/common.lua")
setup = common.setup
delay = common.delay
local keys, n
init = function()
  keys = common.lines(os.getenv("BENCH_KEYS"))
  n = math.random(1, #keys)
end
local body = '{"prompt": "a lighthouse at dusk###blurry", "models": ["bench-model"], ' ..
  '"nsfw": false, "params": {"width": 512, "height": 512, "steps": 20, "n": 1, ' ..
  '"sampler_name": "k_euler"}}'
request = function()
  n = n % #keys + 1
  return wrk.format("POST", "/api/v2/generate/async",
    {["apikey"] = keys[n], ["Content-Type"] = "application/json"}, body)
end
done = function(s, l) common.done(s, l) end
