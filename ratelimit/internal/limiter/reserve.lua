-- Cluster mode: record a request's token reservation once every hash slot's decide script allowed
-- it, in decide.lua's format (counter key -> "hits:algorithm:interval", read by
-- uplion.ratelimit.settle). KEYS[1]: the reservation (its only key: the counters may be in any
-- slot). ARGV: ttl_ms, then per reserved hit 5 values: counter key, hits, algorithm (f | g),
-- window_ms, limit (after the account's override).
local resv = KEYS[1]
for b = 2, #ARGV, 5 do
  local interval = 0
  if ARGV[b + 2] == 'g' then interval = tonumber(ARGV[b + 3]) / math.max(tonumber(ARGV[b + 4]), 1) end
  redis.call('HSET', resv, ARGV[b], tonumber(ARGV[b + 1]) .. ':' .. ARGV[b + 2] .. ':' .. interval)
end
if tonumber(ARGV[1]) > 0 and redis.call('EXISTS', resv) == 1 then
  redis.call('PEXPIRE', resv, ARGV[1])
end
return 1
