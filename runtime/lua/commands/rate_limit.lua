-- gitfleet rate-limit: one row per token (and resource): what the provider
-- allows, what is left, and when it resets.
local cli = require("fleet.cli")

local usage = [[
usage: gitfleet rate-limit [--provider P] [--format table|json] [--all-resources]

Shows each token's budget: provider, token label, kind (token; app: a
GitHub App's own calls; installation: an App installation's token, as
APP/ACCOUNT), account, limit, remaining, used, reset time (local time and
how long until then) and state (ok, spent, paused, disabled). Budgets are refreshed from the provider's
rate-limit endpoint where it has one (free of quota on GitHub). By default
only GitHub's core resource is shown; --all-resources shows every one.
]]

local opts, rest, fail = cli.parse("rate-limit", arg, {
  { "--help", "-h" }, { "--provider", "-p", arg = "P" }, { "--format", "-f", arg = "FORMAT" },
  { "--all-resources" },
})
if opts.help then io.stdout:write(usage) return 0 end
if #rest > 0 then fail("unexpected argument '" .. rest[1] .. "'") end
local format = opts.format or "table"
if format ~= "table" and format ~= "json" then fail("--format must be table or json") end

-- Without --provider: the configured providers (or all, when none is).
local rows = {}
if opts.provider then
  rows = fleet.rate_limit(opts.provider)
else
  local any_configured = false
  for _, p in ipairs(fleet.providers()) do any_configured = any_configured or p.configured end
  for _, p in ipairs(fleet.providers()) do
    if p.configured or not any_configured then
      for _, r in ipairs(fleet.rate_limit(p.name)) do rows[#rows + 1] = r end
    end
  end
end
local shown = {}
for _, r in ipairs(rows) do
  if opts.all_resources or not r.resource or r.resource == "core" or r.provider ~= "github" or r.kind == "app" then
    shown[#shown + 1] = r
  end
end

if format == "json" then
  local list = {}
  for i, r in ipairs(shown) do
    list[i] = { provider = r.provider, token = r.token, account = r.account or fleet.null,
      resource = r.resource or fleet.null, limit = r.limit or fleet.null, remaining = r.remaining or fleet.null,
      used = r.used or fleet.null, reset = r.reset or fleet.null, state = r.state, kind = r.kind,
      expires_at = r.expires_at or fleet.null }
  end
  -- cjson writes an empty table as {}: the empty list is spelled out.
  io.stdout:write(#list > 0 and fleet.json.encode(list) or "[]", "\n")
  return 0
end

local now = fleet.now()
local out = {}
for _, r in ipairs(shown) do
  local reset = r.reset and (cli.clock(r.reset) .. " (" .. cli.until_text(r.reset, now) .. ")") or ""
  out[#out + 1] = { r.provider, r.token, r.kind or "token", r.account or "", r.resource or "", r.limit or "?",
    r.remaining or "?", r.used or "?", reset, r.state }
end
cli.table(io.stdout, { "PROVIDER", "TOKEN", "KIND", "ACCOUNT", "RESOURCE", "LIMIT", "REMAINING", "USED", "RESET",
  "STATE" }, out)
return 0
