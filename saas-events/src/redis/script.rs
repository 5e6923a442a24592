//! The Lua script that creates a group on every partition of a topic.

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
