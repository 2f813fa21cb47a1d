-- gitfleet cache stats|clear: what the HTTP response cache holds, and
-- emptying it.
local cli = require("fleet.cli")
local core = require("fleet.core")

local usage = [[
usage: gitfleet cache stats
       gitfleet cache clear

  stats   where the cache file is, how many responses it holds and their
          size, the size of the file on disk, the configured maximum, how
          many responses runs could not store in time (dropped), and
          whether runs use the cache
  clear   removes every stored response and gives the space back

The cache keeps API responses with their validators (ETag, Last-Modified),
so that later runs ask "has this changed?" instead of fetching again: a
304 Not Modified answer does not count against GitHub's rate limit. It is
configured under cache: in the configuration (path, max_size, enabled);
--no-cache turns it off for one run. Several gitfleet processes may share
one cache file.
]]

local opts, rest, fail = cli.parse("cache", arg, { { "--help", "-h" } })
if opts.help then io.stdout:write(usage) return 0 end
local sub = rest[1]
if sub == nil then fail("missing subcommand: stats or clear") end
if sub ~= "stats" and sub ~= "clear" then fail("unknown subcommand '" .. sub .. "' (stats or clear)") end
if #rest > 1 then fail("unexpected argument '" .. rest[2] .. "'") end

-- 1536 -> "1.5 KiB"
local function size(n)
  n = n or 0
  if n < 1024 then return ("%d B"):format(n) end
  local units = { "KiB", "MiB", "GiB", "TiB" }
  local v, u = n / 1024, 1
  while v >= 1024 and u < #units do v, u = v / 1024, u + 1 end
  return ("%.1f %s"):format(v, units[u])
end

local function plural(n, one, many)
  return ("%d %s"):format(n, n == 1 and one or many)
end

local function fail_run(err)
  io.stderr:write("gitfleet cache: ", tostring(err), "\n")
  return 1
end

local before, err = core.cache_stats()
if not before then return fail_run(err) end

if sub == "stats" then
  local state
  if before.enabled then
    state = "on"
  elseif core.options().no_cache then
    state = "off (--no-cache)"
  else
    state = "off (cache.enabled is false)"
  end
  local rows = {
    { "path", before.path .. (before.exists and "" or " (no file yet)") },
    { "entries", tostring(before.entries) },
    { "stored", size(before.bytes) },
    { "file size", size(before.file_size) },
    { "max size", size(before.max_size) },
    -- Responses a run fetched but could not store because the disk fell
    -- behind the network (or the file stayed locked): the next run fetches
    -- them in full. Counted since the file was made or last cleared.
    { "dropped", tostring(before.dropped or 0) },
    { "caching", state },
  }
  for _, r in ipairs(rows) do
    io.stdout:write(("%-10s %s\n"):format(r[1] .. ":", r[2]))
  end
  return 0
end

-- clear
if not before.exists then
  io.stdout:write(("The cache is empty (no file at %s).\n"):format(before.path))
  return 0
end
local ok, cerr = core.cache_clear()
if not ok then return fail_run(cerr) end
local after = core.cache_stats() or { file_size = 0 }
local freed = math.max(0, before.file_size - after.file_size)
io.stdout:write(("Cleared %s: removed %s (%s); freed %s on disk (the file is now %s).\n"):format(
  before.path, plural(before.entries, "response", "responses"), size(before.bytes), size(freed),
  size(after.file_size)))
return 0
