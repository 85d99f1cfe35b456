import { LuaScript } from '../util/script.js'

/**
 * Checks every limit of a policy and consumes from all of them, or from none, in one atomic step.
 * Each limit is a fixed window: a counter created with the window as its TTL. A counter above its
 * points is a block (rate-limiter-flexible's semantics: a blocked key holds points + 1 until the
 * block ends); an allowed request never takes a counter above its points, so nothing else does.
 *
 * KEYS[i] the counter of limit i (all under one hash tag).
 * ARGV[1] cost; ARGV[2] block ms to apply to each exceeded limit (0: none); ARGV[3] 1 when the
 * block replaces the window (it lasts exactly ARGV[2] ms), 0 when it lasts until the window ends
 * if that is later; ARGV[2+2i], ARGV[3+2i] points and window ms of limit i.
 * Returns { status, used_1, ttl_1, ..., used_n, ttl_n }: status 1 allowed (used counts include
 * this request), 0 rejected by a limit (now blocked when ARGV[2] > 0), -1 rejected because the key
 * was already blocked.
 */
export const CONSUME = new LuaScript(`
local cost = tonumber(ARGV[1])
local out = {1}
local blocked = false
for i = 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  local used = 0
  if ttl > 0 then
    used = tonumber(redis.call('GET', KEYS[i])) or 0
  else
    -- missing, or left without expiry by hand: start a fresh window
    ttl = -1
  end
  local points = tonumber(ARGV[2 + 2 * i])
  if used > points then blocked = true end
  if used + cost > points then out[1] = 0 end
  out[2 * i] = used
  out[1 + 2 * i] = ttl
end
if blocked then
  out[1] = -1
  return out
end
if out[1] == 0 then
  local blockMs = tonumber(ARGV[2])
  if blockMs > 0 then
    local replace = ARGV[3] == '1'
    for i = 1, #KEYS do
      local points = tonumber(ARGV[2 + 2 * i])
      if out[2 * i] + cost > points then
        -- unless it replaces the window, never shorter than the window left: a block must not
        -- hand out a fresh window early
        local ms = blockMs
        if not replace then ms = math.max(blockMs, out[1 + 2 * i]) end
        redis.call('SET', KEYS[i], points + 1, 'PX', ms)
        out[2 * i] = points + 1
        out[1 + 2 * i] = ms
      end
    end
  end
  return out
end
for i = 1, #KEYS do
  if out[1 + 2 * i] < 0 then
    local window = tonumber(ARGV[3 + 2 * i])
    redis.call('SET', KEYS[i], cost, 'PX', window)
    out[1 + 2 * i] = window
  else
    redis.call('INCRBY', KEYS[i], cost)
  end
  out[2 * i] = out[2 * i] + cost
end
return out
`)

/** Same reply as {@link CONSUME} for a cost of 1, without consuming or blocking. */
export const PEEK = new LuaScript(`
local out = {1}
for i = 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  local used = 0
  if ttl > 0 then used = tonumber(redis.call('GET', KEYS[i])) or 0 else ttl = -1 end
  local points = tonumber(ARGV[2 + 2 * i])
  if used > points then out[1] = -1 elseif used + 1 > points and out[1] == 1 then out[1] = 0 end
  out[2 * i] = used
  out[1 + 2 * i] = ttl
end
return out
`)

/**
 * Gives `ARGV[1]` points back to every counter in KEYS that still exists (never below 0, TTL
 * kept), except a counter above its points (`ARGV[1 + i]`): that is a block, which a refund must
 * not lift. Returns nothing useful.
 */
export const REFUND = new LuaScript(`
local cost = tonumber(ARGV[1])
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]))
  if used and used > 0 and used <= tonumber(ARGV[1 + i]) then
    redis.call('DECRBY', KEYS[i], math.min(cost, used))
  end
end
return 1
`)

/**
 * Blocks a key by hand: sets the counter above its points for ARGV[2] ms, or until its window
 * ends if that is later, so that a block never hands out a fresh window early; for exactly ARGV[2]
 * ms when ARGV[3] is 1 (the block replaces the window). KEYS[1] counter; ARGV[1] points + 1.
 * Returns the block's length in ms.
 */
export const BLOCK = new LuaScript(`
local ms = tonumber(ARGV[2])
if ARGV[3] ~= '1' then ms = math.max(ms, redis.call('PTTL', KEYS[1])) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
return ms
`)
