-- Cluster mode: take back the hits one hash slot's decide script counted, when another slot's
-- refused the request (or failed). KEYS: counter keys of one hash slot; ARGV per key, 4 values:
-- algorithm (f | g), hits, window_ms, limit (after the account's override, as decide reported it).
-- Fixed window: the count goes down by hits, not below 0; GCRA: the theoretical arrival time goes
-- back by hits intervals. TTLs are kept; a key that has expired meanwhile is left alone.
-- Returns the number of keys changed.
local changed = 0
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local hits = tonumber(ARGV[b + 2])
  local v = redis.call('GET', KEYS[i])
  if v and hits > 0 then
    if ARGV[b + 1] == 'f' then
      if redis.call('DECRBY', KEYS[i], hits) < 0 then redis.call('SET', KEYS[i], '0', 'KEEPTTL') end
    else
      local interval = tonumber(ARGV[b + 3]) / math.max(tonumber(ARGV[b + 4]), 1)
      redis.call('SET', KEYS[i], tostring(tonumber(v) - hits * interval), 'KEEPTTL')
    end
    changed = changed + 1
  end
end
return changed
