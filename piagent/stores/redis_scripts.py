"""The Lua scripts of the Redis store: each runs atomically inside Redis (layout in redis.py)."""

# Forgets one conversation (`<owner>:<id>`): its keys, and its entries in both indexes.
FORGET = """
local function forget(prefix, member)
  local sep = string.find(member, ':', 1, true)
  redis.call('ZREM', prefix .. 'o:' .. string.sub(member, 1, sep - 1), string.sub(member, sep + 1))
  redis.call('DEL', prefix .. 'c:' .. member, prefix .. 't:' .. member)
  redis.call('ZREM', prefix .. 'lru', member)
end
"""

# KEYS: meta, turns, owner index, lru. ARGV: id, owner, agent, now, ttl, ttl_ms, max_turns,
# max_conversations, preview, prefix, turn...
APPEND = (
    FORGET
    + """
local meta, turns, owner_index, lru = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, owner, prefix = ARGV[1], ARGV[2], ARGV[10]
local member = owner .. ':' .. id
local now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local current = redis.call('HGET', meta, 'updated_at')
local fresh = true
if current then
  if tonumber(current) <= now - ttl then
    forget(prefix, member)
  else
    fresh = false
  end
end
if fresh then redis.call('HSET', meta, 'owner', owner, 'preview', ARGV[9]) end
redis.call('HSET', meta, 'agent', ARGV[3], 'updated_at', ARGV[4])
redis.call('RPUSH', turns, unpack(ARGV, 11))
redis.call('LTRIM', turns, -tonumber(ARGV[7]), -1)
redis.call('PEXPIRE', meta, ARGV[6])
redis.call('PEXPIRE', turns, ARGV[6])
redis.call('ZADD', owner_index, ARGV[4], id)
redis.call('PEXPIRE', owner_index, ARGV[6])
redis.call('ZADD', lru, ARGV[4], member)
if fresh then
  local excess = redis.call('ZCARD', lru) - tonumber(ARGV[8])
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', lru, 0, excess - 1)) do forget(prefix, old) end
  end
end
return 1
"""
)

# KEYS: meta, turns. ARGV: limit (0: all). Returns {} when unknown, else {owner, agent, updated_at, turn...}.
# One script instead of a MULTI pipeline: a single command to send and parse, where piagent's CPU goes.
READ = """
local meta = redis.call('HMGET', KEYS[1], 'owner', 'agent', 'updated_at')
if not meta[1] then return {} end
local limit = tonumber(ARGV[1])
local turns = redis.call('LRANGE', KEYS[2], limit > 0 and -limit or 0, -1)
table.insert(turns, 1, meta[3])
table.insert(turns, 1, meta[2])
table.insert(turns, 1, meta[1])
return turns
"""

# KEYS: meta. ARGV: `<owner>:<id>`, horizon, prefix. Returns 1 when a live conversation went.
DELETE = (
    FORGET
    + """
local current = redis.call('HGET', KEYS[1], 'updated_at')
if not current then return 0 end
forget(ARGV[3], ARGV[1])
if tonumber(current) <= tonumber(ARGV[2]) then return 0 end
return 1
"""
)

# ARGV: prefix, id. Renames one conversation of layout 1 (`c:<id>`) to layout 2; the expiry goes along.
MIGRATE = """
local prefix, id = ARGV[1], ARGV[2]
local old = prefix .. 'c:' .. id
local owner = redis.call('HGET', old, 'owner')
if not owner then return 0 end
local member = owner .. ':' .. id
local score = redis.call('ZSCORE', prefix .. 'lru', id)
redis.call('RENAME', old, prefix .. 'c:' .. member)
if redis.call('EXISTS', prefix .. 't:' .. id) == 1 then
  redis.call('RENAME', prefix .. 't:' .. id, prefix .. 't:' .. member)
end
redis.call('ZREM', prefix .. 'lru', id)
if score then redis.call('ZADD', prefix .. 'lru', score, member) end
return 1
"""

# KEYS: lru. ARGV: horizon, batch, prefix. Returns how many expired conversations went.
PURGE = (
    FORGET
    + """
local expired = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(expired) do forget(ARGV[3], id) end
return #expired
"""
)
