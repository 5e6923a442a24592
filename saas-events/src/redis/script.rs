//! The Lua scripts that make reading a partition and checking that the
//! group has nothing unsettled there one atomic step.

/// Hands out at most one entry of the group from the partitions in `KEYS`
/// (tried in order), keeping at most one unsettled entry per partition.
///
/// `ARGV`: group, consumer, min idle (ms) before a pending entry is taken
/// over, tenant filter (`""` for none), how many entries of other tenants
/// to skip per call.
///
/// A partition with a pending entry is only looked at to take that entry
/// over once idle long enough (a dead consumer's, or a nack parked
/// back-dated); otherwise it waits, which is what keeps per-key order.
/// A partition with none gets its next entry read; entries of other
/// tenants are acknowledged for the group on the server and never sent.
///
/// Returns `{index, id, fields, attempt}` (index 1-based into `KEYS`);
/// `{0}` if entries were skipped and the caller should call again at once;
/// or `{-1, last_id…}`, the newest id of each partition, to block on.
pub(super) const TAKE: &str = r"
local group, consumer, min_idle, tenant = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local skip_budget = tonumber(ARGV[5])
local skipped = false
local function tenant_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'tenant' then return fields[i + 1] end
  end
  return ''
end
for index, key in ipairs(KEYS) do
  local pending = redis.call('XPENDING', key, group)[1]
  if pending > 0 then
    local claimed = redis.call('XAUTOCLAIM', key, group, consumer, min_idle, '0-0', 'COUNT', 1)[2]
    local entry = claimed[1]
    if entry then
      local id = entry[1]
      local info = redis.call('XPENDING', key, group, id, id, 1)[1]
      if entry[2] and tenant ~= '' and tenant_of(entry[2]) ~= tenant then
        redis.call('XACK', key, group, id)
        skipped = true
      elseif entry[2] then
        return {index, id, entry[2], info[4]}
      else
        -- Trimmed away while pending: settle it so the partition moves on.
        redis.call('XACK', key, group, id)
        skipped = true
      end
    end
  else
    while skip_budget > 0 do
      local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', key, '>')
      if not read then break end
      local entry = read[1][2][1]
      if tenant == '' or tenant_of(entry[2]) == tenant then
        return {index, entry[1], entry[2], 1}
      end
      redis.call('XACK', key, group, entry[1])
      skip_budget = skip_budget - 1
      skipped = true
    end
  end
end
if skipped then return {0} end
local result = {-1}
for _, key in ipairs(KEYS) do
  local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  result[#result + 1] = newest and newest[1] or '0-0'
end
return result
";

/// Creates the group on every partition in `KEYS` (`ARGV`: group, start
/// id); an existing group is left where it is.
pub(super) const CREATE_GROUP: &str = r"
for _, key in ipairs(KEYS) do
  local ok = redis.pcall('XGROUP', 'CREATE', key, ARGV[1], ARGV[2], 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP') then
    return redis.error_reply(ok.err)
  end
end
return #KEYS
";
