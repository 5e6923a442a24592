//! The Lua scripts: each quota operation is one of them, so Redis runs it
//! as one atomic step.
//!
//! `KEYS[1]` is the counter's hash: field `used` (consumed, committed and
//! reserved units), field `reserved` (units of live reservations) and one
//! field `r:<id>` per live reservation holding its amount. `KEYS[2]` is a
//! sorted set of the live reservation ids scored by their expiry (µs since
//! the Unix epoch, below 2^53 so exact in a double).
//!
//! Amounts reach `i64::MAX`, beyond what a Lua number (a double) holds
//! exactly, so the scripts never do arithmetic in Lua: `HINCRBY` adds
//! exactly (and refuses to overflow), values are read back as strings, and
//! [`PRELUDE`]'s `le` compares decimal strings.
//!
//! Times come from the caller's clock (`ARGV[1]`), never the server's.

/// Shared helpers, prepended to every script.
const PRELUDE: &str = r"
local h, z = KEYS[1], KEYS[2]
-- a <= b for decimal strings of non-negative integers without leading zeros.
local function le(a, b)
  if #a ~= #b then return #a < #b end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return true
end
local function sub(field, amount)
  if amount ~= '0' then redis.call('HINCRBY', h, field, '-' .. amount) end
end
-- Gives back the units of reservations expired at `now`, each exactly once.
local function reclaim(now)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, id in ipairs(expired) do
    local amount = redis.call('HGET', h, 'r:' .. id)
    if amount then
      sub('used', amount)
      sub('reserved', amount)
      redis.call('HDEL', h, 'r:' .. id)
    end
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
local function used()
  return redis.call('HGET', h, 'used') or '0'
end
-- A counter back at zero with nothing reserved is deleted, so denied and
-- given-back keys leave nothing behind.
local function tidy()
  if used() == '0' and redis.call('ZCARD', z) == 0 then redis.call('DEL', h) end
end
-- Adds `amount` if the sum stays at most `limit`; whether it did.
local function add(amount, limit)
  local sum = redis.pcall('HINCRBY', h, 'used', amount)
  if type(sum) == 'table' and sum.err then
    -- Above i64::MAX, so above any limit.
    return false
  end
  if le(used(), limit) then return true end
  sub('used', amount)
  return false
end
";

/// `ARGV`: now, amount, limit. Returns `{granted (0|1), used}`.
const TRY_CONSUME: &str = r"
reclaim(ARGV[1])
local granted = add(ARGV[2], ARGV[3])
local now_used = used()
tidy()
return {granted and 1 or 0, now_used}
";

/// `ARGV`: now, amount, limit, reservation id, expiry (µs). Returns
/// `{reserved (0|1), used}`.
const RESERVE: &str = r"
reclaim(ARGV[1])
local granted = add(ARGV[2], ARGV[3])
if granted then
  redis.call('HINCRBY', h, 'reserved', ARGV[2])
  redis.call('HSET', h, 'r:' .. ARGV[4], ARGV[2])
  redis.call('ZADD', z, ARGV[5], ARGV[4])
end
local now_used = used()
tidy()
return {granted and 1 or 0, now_used}
";

/// `ARGV`: now, reservation id. Returns 1 if committed, 0 if the
/// reservation is not live.
const COMMIT: &str = r"
reclaim(ARGV[1])
local amount = redis.call('HGET', h, 'r:' .. ARGV[2])
if not amount then return 0 end
redis.call('HDEL', h, 'r:' .. ARGV[2])
redis.call('ZREM', z, ARGV[2])
sub('reserved', amount)
return 1
";

/// `ARGV`: reservation id. Returns 1 if units went back, 0 if the
/// reservation was not live.
const RELEASE: &str = r"
local amount = redis.call('HGET', h, 'r:' .. ARGV[1])
if not amount then return 0 end
redis.call('HDEL', h, 'r:' .. ARGV[1])
redis.call('ZREM', z, ARGV[1])
sub('used', amount)
sub('reserved', amount)
tidy()
return 1
";

/// `ARGV`: now, amount. Returns 1 if given back, 0 (nothing changed) if
/// `amount` is more than the units used outside live reservations.
const GIVE_BACK: &str = r"
reclaim(ARGV[1])
local amount = ARGV[2]
if amount == '0' then tidy() return 1 end
sub('used', amount)
local left = used()
local reserved = redis.call('HGET', h, 'reserved') or '0'
if string.sub(left, 1, 1) == '-' or not le(reserved, left) then
  redis.call('HINCRBY', h, 'used', amount)
  tidy()
  return 0
end
tidy()
return 1
";

/// `ARGV`: now. Returns the used amount.
const USED: &str = r"
reclaim(ARGV[1])
local now_used = used()
tidy()
return now_used
";

/// The loaded scripts (each sent by `EVALSHA`, loaded on first use).
pub(super) struct Scripts {
    pub(super) try_consume: redis::Script,
    pub(super) reserve: redis::Script,
    pub(super) commit: redis::Script,
    pub(super) release: redis::Script,
    pub(super) give_back: redis::Script,
    pub(super) used: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            try_consume: script(TRY_CONSUME),
            reserve: script(RESERVE),
            commit: script(COMMIT),
            release: script(RELEASE),
            give_back: script(GIVE_BACK),
            used: script(USED),
        }
    }
}

/// Built once per process (hashing the code is the only work).
pub(super) static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(Scripts::new);
