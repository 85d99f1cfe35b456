import { LuaScript } from '../util/script.js'

// Hash layout of one session: data fields are stored under '.' + name (one serialized value per
// top-level field, so concurrent writers can merge field by field), bookkeeping under '#':
// '#v' version, '#u' indexed user, '#x' score of the session's entry in that user's index,
// '#t' TTL to extend the session by when a request reads it (express store only).
// Times come from Redis's own clock (TIME), so index scores and key expiry agree across app servers.
//
// A user index entry is scored at expiry + one TTL of slack. A touch therefore only has to move
// the entry once per TTL (when the session would outlive its score); the rest of the time it is a
// plain PEXPIRE, as cheap as with a store without an index. Readers verify that each entry's
// session still exists, so an expired session is never listed even while its entry lingers.

const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`

// Keeps an index (sorted set of session ids) free of entries past their score and makes the
// index key itself expire with its last entry.
const INDEX_ADD = `local function index_add(idx, id, score, now)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', now)
  redis.call('ZADD', idx, score, id)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', idx, top[2])
end`

/**
 * Writes a session and its per-user index entry in one step.
 * KEYS[1] session hash; KEYS[ARGV[7]] index of the user ARGV[4]; KEYS[ARGV[8]] old user index.
 * ARGV: 1 id, 2 ttl ms (-1 keeps the current TTL), 3 user mode, 4 user id, 5 version loaded by
 * the caller, 6 mode ('n' new: replace; 'p' patch: merge into an existing session; 's' strict
 * patch: refuse when the version moved), 7/8 index key positions (0 = none), 9 number N of fields
 * to set, 10 largest size in bytes of the session's data fields once written (0: no limit), then
 * N name/value pairs, then names of fields to delete.
 * The size is checked on the merged result (what is stored, with this write's fields set and
 * deleted), before anything is written: concurrent writers that each stay under the limit cannot
 * together store a session that every later save would refuse. A data field counts its name
 * (without the prefix) and its value, as the callers count them.
 * User modes: 'set' indexes the session under ARGV[4], 'clear' drops its user, 'keep' leaves the
 * stored user as it is (a save that did not change the user must not undo another request's
 * login, logout or switch, which the merged data fields keep) and only moves its index entry to
 * the new expiry; ARGV[4] is then the user the caller expects to be stored.
 * Returns { status ('ok', 'gone', 'conflict' or 'too large', then with the size in the second
 * place), version, conflict (0|1), expiresAt (ms, 0 if unknown), index score (0 if
 * none), 1 when the caller must still add the index entry (its index was not among KEYS: another
 * slot on Cluster, or another user than expected) else 0, the indexed user }.
 */
export const WRITE = new LuaScript(`${INDEX_ADD}
local key = KEYS[1]
local mode = ARGV[6]
local conflict = 0
if mode ~= 'n' then
  -- a session destroyed meanwhile (logout, revoke) is never brought back by a late write
  if redis.call('EXISTS', key) == 0 then return {'gone', '', 0, 0, 0, 0, ''} end
  local stored = redis.call('HGET', key, '#v') or ''
  if stored ~= ARGV[5] then
    if mode == 's' then return {'conflict', stored, 1, 0, 0, 0, ''} end
    conflict = 1
  end
end
local n = tonumber(ARGV[9])
local first = 11
local limit = tonumber(ARGV[10]) or 0
if limit > 0 then
  local sizes = {}
  local total = 0
  if mode ~= 'n' then
    for _, name in ipairs(redis.call('HKEYS', key)) do
      if string.byte(name, 1) == 46 then
        local size = #name - 1 + redis.call('HSTRLEN', key, name)
        sizes[name] = size
        total = total + size
      end
    end
  end
  for i = first, first + 2 * n - 1, 2 do
    local name = ARGV[i]
    if string.byte(name, 1) == 46 then
      local size = #name - 1 + #ARGV[i + 1]
      total = total - (sizes[name] or 0) + size
      sizes[name] = size
    end
  end
  for i = first + 2 * n, #ARGV do
    total = total - (sizes[ARGV[i]] or 0)
    sizes[ARGV[i]] = 0
  end
  if total > limit then return {'too large', tostring(total), conflict, 0, 0, 0, ''} end
end
if mode == 'n' then redis.call('DEL', key) end
if n > 0 then redis.call('HSET', key, unpack(ARGV, first, first - 1 + 2 * n)) end
if #ARGV >= first + 2 * n then redis.call('HDEL', key, unpack(ARGV, first + 2 * n, #ARGV)) end
local user = false
if ARGV[3] == 'set' then
  user = ARGV[4]
  redis.call('HSET', key, '#u', user)
elseif ARGV[3] == 'clear' then
  redis.call('HDEL', key, '#u', '#x')
else
  user = redis.call('HGET', key, '#u')
end
local version = redis.call('HINCRBY', key, '#v', 1)
${NOW}
local ttl = tonumber(ARGV[2])
local expires_at = 0
if ttl >= 0 then
  redis.call('PEXPIRE', key, ttl)
  expires_at = now + ttl
else
  local left = redis.call('PTTL', key)
  if left > 0 then expires_at = now + left end
end
local score = 0
local later = 0
if user and ttl >= 0 then
  score = expires_at + ttl
  redis.call('HSET', key, '#x', score)
  local new_idx = tonumber(ARGV[7])
  if new_idx > 0 and user == ARGV[4] then index_add(KEYS[new_idx], ARGV[1], score, now) else later = 1 end
end
local old_idx = tonumber(ARGV[8])
if old_idx > 0 then redis.call('ZREM', KEYS[old_idx], ARGV[1]) end
return {'ok', tostring(version), conflict, expires_at, score, later, user or ''}
`)

/**
 * Adds one entry to a user index (used on Cluster when the session hash lives in another slot).
 * KEYS[1] index; ARGV: 1 id, 2 score (ms).
 */
export const INDEX_PUT = new LuaScript(`${INDEX_ADD}
${NOW}
index_add(KEYS[1], ARGV[1], tonumber(ARGV[2]), now)
return 1
`)

/**
 * Extends a session's TTL and moves its index entry to the new expiry + one TTL of slack. Never
 * creates a session that is gone. KEYS[1] session; KEYS[2] index of the user ARGV[3] (absent on
 * Cluster when it lives in another slot: the caller then adds the entry with INDEX_PUT). ARGV:
 * 1 ttl ms, 2 id, 3 the user the caller read. Returns the new index score, 0 when the session does
 * not exist, or -1 when its user is no longer ARGV[3] (another request changed it since): the
 * session is extended but '#x' and the index are left alone, so the score never claims an entry of
 * the stored user that was not moved.
 */
export const TOUCH = new LuaScript(`${INDEX_ADD}
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], '#u') ~= ARGV[3] then return -1 end
${NOW}
local score = now + 2 * tonumber(ARGV[1])
redis.call('HSET', KEYS[1], '#x', score)
if KEYS[2] then index_add(KEYS[2], ARGV[2], score, now) end
return score
`)

/**
 * Extends a session's TTL and reports whether its index entry must move too, without reading the
 * session's data: most programmatic touches are this one call. KEYS[1] session. ARGV: 1 ttl ms,
 * 2 margin ms (see INDEX_MARGIN_MS). Returns false when the session does not exist, 1 when
 * nothing else is needed (no indexed user, or the entry's score still covers the new expiry with
 * the margin, or a quarter of the TTL if less), else the indexed user id (a string, which may be
 * empty): the caller then moves the entry with TOUCH (and on Cluster INDEX_PUT). The score ('#x')
 * is only rewritten by TOUCH, so it never claims a move that did not happen.
 */
export const EXTEND = new LuaScript(`if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return false end
local user = redis.call('HGET', KEYS[1], '#u')
if not user then return 1 end
local score = tonumber(redis.call('HGET', KEYS[1], '#x') or '0') or 0
${NOW}
local ttl = tonumber(ARGV[1])
if now + ttl + math.min(tonumber(ARGV[2]), ttl / 4) < score then return 1 end
return user
`)

/**
 * Deletes a session. Returns { deleted (0|1), user id it was indexed under or '' }. Tolerates a
 * key of another type (a corrupt entry is deleted too).
 */
export const REMOVE = new LuaScript(`local user = redis.pcall('HGET', KEYS[1], '#u')
if type(user) ~= 'string' then user = '' end
if ARGV[1] and ARGV[1] ~= user then return {0, user} end
local deleted = redis.call('DEL', KEYS[1])
return {deleted, user}
`)

/**
 * Lists a user index after dropping entries past their score. KEYS[1] index.
 * Returns a flat list id, score, id, score...
 */
export const INDEX_LIST = new LuaScript(`${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
`)

/**
 * Reads a session hash as one JSON array of name/value strings (false when absent): one bulk
 * reply is markedly cheaper for the client to decode than an HGETALL map of a dozen strings, and
 * this read runs on every request. With ARGV[1] = '1' it also extends the session by its access
 * TTL ('#t', written by the express store on save): the touch a request of an unchanged session
 * would send at its end, done in the same round trip as the read. The reply carries the indexed
 * user and its entry's score ('#u', '#x'), so the caller sees when the extended session would
 * outlive that entry and moves it (about once per TTL). KEYS[1] session.
 */
export const READ = new LuaScript(`local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
if ARGV[1] == '1' then
  for i = 1, #h, 2 do
    if h[i] == '#t' then
      local ttl = tonumber(h[i + 1])
      if ttl and ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
      break
    end
  end
end
return cjson.encode(h)
`)
