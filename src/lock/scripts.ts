import { LuaScript } from '../util/script.js'

/**
 * Acquire on one server. KEYS = n lock keys, then their n fence keys; ARGV = token, ttl ms, n.
 * Every lock key must be free (or already ours: a retried command that did run) before any is
 * set; each SET is paired with the INCR of its resource's fence key in this one script, so the
 * fence is issued in the same atomic step as the lease. Returns the n fences, or the remaining
 * lease (ms) of the first key held by someone else.
 */
export const ACQUIRE = new LuaScript(`
local n = tonumber(ARGV[3])
for i = 1, n do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    local left = redis.call('PTTL', KEYS[i])
    if left < 0 then left = 0 end
    return left
  end
end
local fences = {}
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  fences[i] = redis.call('INCR', KEYS[n + i])
end
return fences
`)

/** Extend: KEYS = lock keys; ARGV = token, ttl ms. 1 when every key was still ours, else 0. */
export const EXTEND = new LuaScript(`
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
`)

/** Release: KEYS = lock keys; ARGV = token. Deletes only keys still ours; returns how many. */
export const RELEASE = new LuaScript(`
local count = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    count = count + 1
  end
end
return count
`)

/**
 * Second round of a multi-server acquisition: KEYS = n lock keys, then n fence keys; ARGV = token,
 * fence list (one per resource, `,`-separated), n. While the lease is still ours, raises each fence
 * counter to at least the fence handed out, so any later quorum (which shares a server with this
 * one) issues a larger number. 1 when done, 0 when the lease is gone.
 */
export const RAISE_FENCE = new LuaScript(`
local n = tonumber(ARGV[3])
for i = 1, n do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
local i = 1
for fence in string.gmatch(ARGV[2], '[^,]+') do
  local current = tonumber(redis.call('GET', KEYS[n + i]) or '0')
  if current < tonumber(fence) then redis.call('SET', KEYS[n + i], fence) end
  i = i + 1
end
return 1
`)

/**
 * Record with a lease (once / idempotency): KEYS[1] = record; ARGV = value to claim it with,
 * lease ms. Claims the record when absent and returns 'claimed'; otherwise returns the stored
 * value and its remaining ms.
 */
export const CLAIM = new LuaScript(`
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'claimed'
end
return {current, redis.call('PTTL', KEYS[1])}
`)

/** KEYS[1] = record; ARGV = expected value, new value, ttl ms. Replaces it only if unchanged. */
export const REPLACE_IF = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

/** KEYS[1] = record; ARGV = expected value, ttl ms. Extends it only if unchanged. */
export const EXPIRE_IF = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

/** KEYS[1] = record; ARGV = expected value. Deletes it only if unchanged. */
export const DELETE_IF = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`)
