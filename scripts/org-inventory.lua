-- org-inventory.lua: an organisation's repositories as a CSV inventory:
-- name, language, stars, archived, last push.
--
--   gitfleet run scripts/org-inventory.lua OWNER [OUTPUT.csv] [--provider P]
--
-- Without OUTPUT the CSV goes to stdout. Values a provider does not have
-- are empty cells, never guesses: GitLab, Bitbucket and Gitea have no push
-- time (pushed_at), Bitbucket no stars and no archiving, and GitLab lists
-- carry no language.

local owner, output, provider
local argv = { ... }
local i = 1
while i <= #argv do
  if argv[i] == "--provider" then
    i = i + 1
    provider = argv[i]
  elseif not owner then
    owner = argv[i]
  elseif not output then
    output = argv[i]
  end
  i = i + 1
end
if not owner then
  io.stderr:write("usage: gitfleet run org-inventory.lua OWNER [OUTPUT.csv] [--provider P]\n")
  return 2
end

-- All pages; the host fetches them concurrently when the provider says
-- how many there are.
local repos, err = fleet.fetch_repositories(owner, { provider = provider })
if not repos then
  fleet.log.error(("%s: %s"):format(owner, tostring(err)))
  return 1
end

-- Most starred first, then by name (stars may be nil: counted as 0).
table.sort(repos, function(a, b)
  local sa, sb = a.stargazers_count or 0, b.stargazers_count or 0
  if sa ~= sb then return sa > sb end
  return a.name:lower() < b.name:lower()
end)

local ok, werr = fleet.write(repos, {
  format = "csv",
  output = output, -- nil or "-": stdout
  fields = { "name", "language", "stargazers_count", "archived", "pushed_at" },
})
if not ok then
  fleet.log.error(tostring(werr))
  return 1
end
fleet.log.info(("%s: %d repositories%s"):format(owner, #repos, output and (" written to " .. output) or ""))
return 0
