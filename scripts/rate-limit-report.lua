-- rate-limit-report.lua: every token's budget, per provider, with the
-- tokens under 10 % of their limit flagged.
--
--   gitfleet run scripts/rate-limit-report.lua [--no-probe] [--all-resources] [--threshold 0.10]
--
-- fleet.rate_limit() asks the provider's rate-limit endpoint where there is
-- one (GitHub's costs no quota) and otherwise reports what response headers
-- taught the host. A token that has made no request yet has no figures: by
-- default the report "probes" it with one cheap request (the account the
-- token belongs to), which teaches the host its budget headers. --no-probe
-- spends nothing and leaves such tokens unknown.
--
-- Tokens of one account share one budget (GitHub counts all personal
-- tokens of a user together), so their rows show the same figures; the
-- ACCOUNT column says which rows are one budget.

local probe, all_resources, threshold = true, false, 0.10
local argv = { ... }
local i = 1
while i <= #argv do
  local a = argv[i]
  if a == "--no-probe" then probe = false
  elseif a == "--all-resources" then all_resources = true
  elseif a == "--threshold" then i = i + 1; threshold = tonumber(argv[i]) or threshold
  else io.stderr:write("rate-limit-report: unknown argument '" .. a .. "'\n"); return 2 end
  i = i + 1
end

local rows = fleet.rate_limit()

-- Probe the tokens the host knows nothing about yet (one request each).
if probe then
  local todo = {}
  for _, r in ipairs(rows) do
    if r.remaining == nil and r.limit == nil and not r.anonymous and r.state ~= "disabled" then
      todo[#todo + 1] = r
    end
  end
  if #todo > 0 then
    fleet.map(todo, function(r) return fleet.fetch_user_info(r.provider, { token = r.token }) end)
    rows = fleet.rate_limit()
  end
end

-- GitHub has a dozen resources per token; by default only "core" shows.
local shown = {}
for _, r in ipairs(rows) do
  if all_resources or r.provider ~= "github" or r.resource == nil or r.resource == "core" then
    shown[#shown + 1] = r
  end
end
table.sort(shown, function(a, b)
  if a.provider ~= b.provider then return a.provider < b.provider end
  if a.token ~= b.token then return a.token < b.token end
  return (a.resource or "") < (b.resource or "")
end)

local function cell(x) return x == nil and "?" or tostring(x) end
local now = fleet.now()
local out, low = {}, 0
for _, r in ipairs(shown) do
  local share, flag = nil, ""
  if r.limit and r.limit > 0 and r.remaining then
    share = r.remaining / r.limit
    if share < threshold then flag, low = "LOW", low + 1 end
  end
  local reset = r.reset and ("in %ds"):format(math.max(0, math.ceil(r.reset - now))) or "?"
  out[#out + 1] = { r.provider, r.token, r.account or "", r.resource or "", cell(r.remaining), cell(r.limit),
    share and ("%d%%"):format(math.floor(share * 100)) or "?", reset, r.state, flag }
end

-- Aligned columns.
local head = { "PROVIDER", "TOKEN", "ACCOUNT", "RESOURCE", "REMAINING", "LIMIT", "LEFT", "RESET", "STATE", "" }
local width = {}
for c, h in ipairs(head) do width[c] = #h end
for _, row in ipairs(out) do
  for c, v in ipairs(row) do width[c] = math.max(width[c], utf8.len(v) or #v) end
end
local function line(row)
  local parts = {}
  for c, v in ipairs(row) do parts[c] = v .. (" "):rep(width[c] - (utf8.len(v) or #v)) end
  print((table.concat(parts, "  "):gsub("%s+$", "")))
end
line(head)
for _, row in ipairs(out) do line(row) end
print(("%d token budget(s) under %d%%"):format(low, math.floor(threshold * 100 + 0.5)))
return 0
