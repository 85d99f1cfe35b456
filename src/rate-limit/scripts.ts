import { LuaScript } from '../util/script.js'

/**
 * Checks every limit of a policy and consumes from all of them, or from none, in one atomic step.
 * Each limit is a fixed window: a counter created with the window as its TTL.
 *
 * KEYS[1] block key; KEYS[2..n+1] one counter per limit (all under one hash tag).
 * ARGV[1] cost; ARGV[2] block ms to set when the request exceeds a limit (0: none);
 * ARGV[1+2i], ARGV[2+2i] points and window ms of limit i.
 * Returns { status, blockMs, used_1, ttl_1, ..., used_n, ttl_n }: status 1 allowed (used counts
 * include this request), 0 rejected by a limit, -1 rejected because the key is blocked.
 */
export const CONSUME = new LuaScript(`
local cost = tonumber(ARGV[1])
local n = #KEYS - 1
local out = {1, 0}
for i = 1, n do
  local key = KEYS[i + 1]
  local ttl = redis.call('PTTL', key)
  local used = 0
  if ttl > 0 then
    used = tonumber(redis.call('GET', key)) or 0
  else
    -- missing, or left without expiry by hand: start a fresh window
    ttl = -1
  end
  out[1 + 2 * i] = used
  out[2 + 2 * i] = ttl
  if used + cost > tonumber(ARGV[1 + 2 * i]) then out[1] = 0 end
end
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then
  out[1] = -1
  out[2] = blocked
  return out
end
if out[1] == 0 then
  local blockMs = tonumber(ARGV[2])
  if blockMs > 0 then
    redis.call('SET', KEYS[1], 1, 'PX', blockMs)
    out[2] = blockMs
  end
  return out
end
for i = 1, n do
  local key = KEYS[i + 1]
  if out[2 + 2 * i] < 0 then
    local window = tonumber(ARGV[2 + 2 * i])
    redis.call('SET', key, cost, 'PX', window)
    out[2 + 2 * i] = window
  else
    redis.call('INCRBY', key, cost)
  end
  out[1 + 2 * i] = out[1 + 2 * i] + cost
end
return out
`)

/** Same reply as {@link CONSUME} without consuming or blocking (status 1 when a cost of 1 would pass). */
export const PEEK = new LuaScript(`
local n = #KEYS - 1
local out = {1, 0}
for i = 1, n do
  local key = KEYS[i + 1]
  local ttl = redis.call('PTTL', key)
  local used = 0
  if ttl > 0 then used = tonumber(redis.call('GET', key)) or 0 else ttl = -1 end
  out[1 + 2 * i] = used
  out[2 + 2 * i] = ttl
  if used + 1 > tonumber(ARGV[1 + 2 * i]) then out[1] = 0 end
end
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then
  out[1] = -1
  out[2] = blocked
end
return out
`)

/**
 * Gives `ARGV[1]` points back to every counter in KEYS that still exists (never below 0, TTL
 * kept). Returns nothing useful.
 */
export const REFUND = new LuaScript(`
local cost = tonumber(ARGV[1])
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]))
  if used and used > 0 then
    redis.call('DECRBY', KEYS[i], math.min(cost, used))
  end
end
return 1
`)
