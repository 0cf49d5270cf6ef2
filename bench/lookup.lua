-- wrk script for the Local API lookup benchmarks (bench/lapi.sh, bench/lapi_crowdsec.sh):
-- GET /v1/decisions?ip=... for random addresses 11.0.0.0 + k*7, k in 0..2N, so about half
-- of them are among the N banned ones. KEY and N come from the environment.
local key = os.getenv("KEY")
local n = tonumber(os.getenv("N"))
math.randomseed(os.time())
request = function()
  local v = (11 * 16777216) + math.random(0, n * 2) * 7
  local ip = string.format("%d.%d.%d.%d", math.floor(v / 16777216), math.floor(v / 65536) % 256,
    math.floor(v / 256) % 256, v % 256)
  return wrk.format("GET", "/v1/decisions?ip=" .. ip, {["X-Api-Key"] = key})
end
