-- same-owner-everywhere.lua: one owner on every configured provider, side
-- by side: how many repositories each has, which record fields each
-- provider fills, and — for repositories found on several providers under
-- the same name — whether the providers agree on their fields.
--
--   gitfleet run scripts/same-owner-everywhere.lua OWNER
--
-- Records have the same field names on every provider; a value a provider
-- does not have is nil (shown as "-"), never a guess. Names are compared
-- without case (Bitbucket slugs are lower case), and so is the language
-- (Bitbucket's are lower case too); nil and "" descriptions count as equal.

local owner = ...
if not owner then
  io.stderr:write("usage: gitfleet run same-owner-everywhere.lua OWNER\n")
  return 2
end

local providers = {}
for _, p in ipairs(fleet.providers()) do
  if p.configured then providers[#providers + 1] = p.name end
end

-- Every provider at once.
local results, errors = fleet.map(providers, function(name)
  return fleet.fetch_repositories(owner, { provider = name })
end)

-- 1. Counts.
local function count(list, pred)
  local n = 0
  for _, r in ipairs(list) do if pred(r) then n = n + 1 end end
  return n
end
print(("%-12s %6s %7s %7s %6s %8s"):format("PROVIDER", "REPOS", "PUBLIC", "PRIVATE", "FORKS", "ARCHIVED"))
for i, name in ipairs(providers) do
  local list = results[i]
  if list then
    print(("%-12s %6d %7d %7d %6d %8d"):format(name, #list,
      count(list, function(r) return r.private == false end),
      count(list, function(r) return r.private == true end),
      count(list, function(r) return r.fork == true end),
      count(list, function(r) return r.archived == true end)))
  else
    print(("%-12s failed: %s"):format(name, tostring(errors[i])))
  end
end

-- 2. Which fields each provider fills (share of records with a value).
print()
local fields = fleet.records.repository_fields
local header = { ("%-18s"):format("FIELD") }
for _, name in ipairs(providers) do header[#header + 1] = ("%10s"):format(name) end
print(table.concat(header, " "))
for _, f in ipairs(fields) do
  local cells = { ("%-18s"):format(f) }
  for i in ipairs(providers) do
    local list = results[i]
    local filled = list and count(list, function(r) return r[f] ~= nil end)
    cells[#cells + 1] = ("%10s"):format(not list and "" or #list == 0 and "-" or
      ("%d%%"):format(math.floor(100 * filled / #list)))
  end
  print(table.concat(cells, " "))
end

-- 3. Agreement on the repositories several providers have.
local function same(field, a, b)
  if field == "description" then return (a or "") == (b or "") end
  if a == nil or b == nil then return nil end -- one does not know: no verdict
  if field == "name" or field == "language" then return a:lower() == b:lower() end
  return a == b
end
local compared = { "name", "description", "language", "default_branch", "archived", "fork" }
-- Only the owner's own repositories (GitLab also lists its subgroups').
local by_name = {} -- lower-case name -> { [provider] = record }
for i, name in ipairs(providers) do
  for _, r in ipairs(results[i] or {}) do
    if (r.owner or ""):lower() == owner:lower() then
      local key = r.name:lower()
      by_name[key] = by_name[key] or {}
      by_name[key][name] = r
    end
  end
end
print()
print(("%-16s %6s %8s %8s"):format("FIELD", "AGREE", "DIFFER", "UNKNOWN"))
local differences = {}
for _, f in ipairs(compared) do
  local agree, differ, unknown = 0, 0, 0
  for key, recs in pairs(by_name) do
    local first
    for _, name in ipairs(providers) do
      local r = recs[name]
      if r then
        if not first then
          first = { name = name, value = r[f] }
        else
          local verdict = same(f, first.value, r[f])
          if verdict == true then agree = agree + 1
          elseif verdict == false then
            differ = differ + 1
            differences[#differences + 1] = ("%s.%s: %s=%s %s=%s"):format(key, f, first.name,
              tostring(first.value), name, tostring(r[f]))
          else unknown = unknown + 1 end
        end
      end
    end
  end
  print(("%-16s %6d %8d %8d"):format(f, agree, differ, unknown))
end
table.sort(differences)
for n, d in ipairs(differences) do
  if n > 20 then print(("... and %d more differences"):format(#differences - 20)) break end
  print("  " .. d)
end
return errors and 1 or 0
