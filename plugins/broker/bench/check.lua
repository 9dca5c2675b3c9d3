-- GET /generate/check/{id}, rotating over existing requests.
local common = dofile(os.getenv("BENCH_DIR") .. "/common.lua")
setup = common.setup
delay = common.delay
local ids, n
init = function()
  ids = common.lines(os.getenv("BENCH_IDS"))
  n = math.random(1, #ids)
end
request = function()
  n = n % #ids + 1
  return wrk.format("GET", "/api/v2/generate/check/" .. ids[n])
end
done = function(s, l) common.done(s, l) end
