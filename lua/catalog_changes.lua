-- What changed in the catalogue since the version an instance has applied (see catalog_announce.lua).
--
-- KEYS[1]  <prefix>catalog:{catalog}:version
-- KEYS[2]  <prefix>catalog:{catalog}:changed
-- ARGV[1]  the version the caller has applied (-1: none yet)
-- ARGV[2]  how many versions the sorted set remembers (as given to catalog_announce.lua)
-- ARGV[3]  most members to return
--
-- Returns strings: {version} when nothing changed; {version, member, ...} with the members announced after ARGV[1];
-- {version, 'all'} when the caller must drop everything: it is further behind than the set remembers, has
-- applied a version Redis no longer has (Redis lost data), or more members changed than ARGV[3].
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local seen = tonumber(ARGV[1])
if seen == version then
    return {tostring(version)}
end
if seen < 0 or seen > version or seen < version - tonumber(ARGV[2]) then
    return {tostring(version), 'all'}
end
local limit = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. seen, '+inf', 'LIMIT', 0, limit + 1)
if #members > limit then
    return {tostring(version), 'all'}
end
table.insert(members, 1, tostring(version))
return members
