-- One decision: check all of a request's limits, then count the hits only if the request is allowed
-- (rejected hits consume nothing); record token reservations to settle later.
-- KEYS: n counter keys, then n override-hash keys ("" placeholders allowed), then the reservation
-- key (or "", or left out: Redis Cluster refuses "", a key of slot 0, next to other slots' keys;
-- there the override placeholder is the hit's own counter key, with override field ""). ARGV: now_ms, n, reservation_ttl_ms, then per hit 7 values: limit, window_ms,
-- algorithm (f | g), hits, shadow (0|1), override field ("" none), reserve (0|1).
-- Returns {rejected, then per hit: over, limit, remaining, reset_ms}.
-- A reservation is a hash: counter key -> "hits:algorithm:interval"; uplion.ratelimit.settle
-- (SETTLE) reads that format.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local out = {0}
local st = {}
local rejected = false
for i = 1, n do
  local b = 4 + (i - 1) * 7
  local limit = tonumber(ARGV[b])
  local window = tonumber(ARGV[b + 1])
  local algo = ARGV[b + 2]
  local hits = tonumber(ARGV[b + 3])
  local shadow = ARGV[b + 4] == '1'
  local ofield = ARGV[b + 5]
  if ofield ~= '' and KEYS[n + i] ~= '' then
    local v = redis.call('HGET', KEYS[n + i], ofield)
    if v then limit = tonumber(v) end
  end
  local over, remaining, reset, after
  if limit >= 4294967295 then
    -- no limit unless the account sets one: nothing to read or count
    over, remaining, reset, after, hits = false, limit, 0, 0, 0
  elseif algo == 'f' then
    local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
    after = cur + hits
    over = after > limit
    if over then remaining = math.max(limit - cur, 0) else remaining = limit - after end
    reset = window - (now % window)
  else
    local interval = window / math.max(limit, 1)
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    after = tat + hits * interval
    over = limit == 0 or (after - now) > window
    local used = after - now
    if over then used = tat - now end
    remaining = math.max(math.floor((window - used) / interval), 0)
    -- allowed: when the limit is whole again; refused: when this request would fit
    if over then reset = math.max(math.ceil(after - now - window), 1) else reset = math.ceil(used) end
  end
  st[i] = {after, window, algo, hits, ARGV[b + 6], reset}
  if over and not shadow then rejected = true end
  out[#out + 1] = over and 1 or 0
  out[#out + 1] = limit
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
if rejected then
  out[1] = 1
  return out
end
local resv = KEYS[2 * n + 1] or ''
for i = 1, n do
  local s = st[i]
  if s[4] > 0 then
    if s[3] == 'f' then
      local v = redis.call('INCRBY', KEYS[i], s[4])
      if v == s[4] then redis.call('PEXPIRE', KEYS[i], s[6] + 1000) end
    else
      redis.call('SET', KEYS[i], tostring(s[1]), 'PX', math.ceil(s[1] - now) + 1000)
    end
    if resv ~= '' and s[5] == '1' then
      local interval = 0
      if s[3] == 'g' then interval = s[2] / math.max(tonumber(out[3 + (i - 1) * 4]), 1) end
      redis.call('HSET', resv, KEYS[i], s[4] .. ':' .. s[3] .. ':' .. interval)
    end
  end
end
if resv ~= '' and tonumber(ARGV[3]) > 0 and redis.call('EXISTS', resv) == 1 then
  redis.call('PEXPIRE', resv, ARGV[3])
end
return out
