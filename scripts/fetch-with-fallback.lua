-- fetch-with-fallback.lua: every repository of some owners, trying the
-- providers in turn: when an owner fails on one provider (not found there,
-- or still failing after the host's retries), the next provider is asked.
--
--   gitfleet run scripts/fetch-with-fallback.lua [--providers github,gitlab] OWNER...
--
-- Records go to stdout as NDJSON; what failed goes to stderr, and the exit
-- status is 1 if some owner failed on every provider.
--
-- Note what is NOT here: no token rotation, no waiting for rate-limit
-- resets, no retry loop. The host picks a token for each request from the
-- pool (the one with the most budget left), waits for resets, pauses a
-- token hit by a secondary limit, drops a token refused with 401 and
-- retries 5xx and network faults. An error that reaches this script is one
-- the host could not get past.

local argv, args, order = { ... }, {}, nil
local i = 1
while i <= #argv do
  if argv[i] == "--providers" then
    i = i + 1
    order = {}
    for name in (argv[i] or ""):gmatch("[^,%s]+") do order[#order + 1] = name end
  else
    args[#args + 1] = argv[i]
  end
  i = i + 1
end
if #args == 0 then
  io.stderr:write("usage: gitfleet run fetch-with-fallback.lua [--providers P1,P2,...] OWNER...\n")
  return 2
end

-- Default order: the configured providers, as the configuration lists them.
if not order then
  order = {}
  for _, p in ipairs(fleet.providers()) do
    if p.configured then order[#order + 1] = p.name end
  end
  if #order == 0 then order[1] = fleet.default_provider() end
end
local installed = {}
for _, p in ipairs(fleet.providers()) do installed[p.name] = true end
for _, name in ipairs(order) do
  if not installed[name] then
    io.stderr:write(("fetch-with-fallback: no provider named '%s' (see `gitfleet providers`)\n"):format(name))
    return 2
  end
end

-- One owner: the first provider that delivers wins.
local function fetch(owner)
  local failures = {}
  for _, provider in ipairs(order) do
    local records, err = fleet.fetch_repositories(owner, { provider = provider })
    if records then
      if #failures > 0 then
        fleet.log.info(("%s: found on %s after: %s"):format(owner, provider, table.concat(failures, "; ")))
      end
      return { provider = provider, records = records }
    end
    -- err.kind says why: not_found, auth, rate_limited, server, network, ...
    failures[#failures + 1] = ("%s: %s (%s)"):format(provider, err.kind, tostring(err))
  end
  return nil, table.concat(failures, "; ")
end

-- All owners at once: fleet.map runs them concurrently on the host's
-- scheduler (and returns the results in the order of the owners).
local results, errors = fleet.map(args, fetch, { concurrency = 8 })

local out = fleet.writer({ format = "ndjson" })
for n, owner in ipairs(args) do
  local r = results[n]
  if r then
    out:write_many(r.records)
    fleet.log.info(("%s: %d repositories from %s"):format(owner, #r.records, r.provider))
  else
    fleet.log.error(("%s: failed on every provider: %s"):format(owner, tostring(errors[n])))
  end
end
out:close()
return errors and 1 or 0
