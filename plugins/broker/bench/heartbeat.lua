-- GET /status/heartbeat
local common = dofile(os.getenv("BENCH_DIR") .. "/common.lua")
setup = common.setup
delay = common.delay
request = function() return wrk.format("GET", "/api/v2/status/heartbeat") end
done = function(s, l) common.done(s, l) end
