-- gitfleet config check: validates the configuration and shows what was
-- loaded. Tokens appear by label only.
local cli = require("fleet.cli")

local usage = [[
usage: gitfleet config check

Loads the configuration (--config FILE, else $GITFLEET_CONFIG, else
./gitfleet.yaml, else $XDG_CONFIG_HOME/gitfleet/config.yaml, else the
built-in defaults), checks it and every provider plugin, and prints what was
loaded. Tokens are shown by label, never by value. Exit status 2 if
anything is wrong, with the file, line and column.
]]

local opts, rest = cli.parse("config", arg, { { "--help", "-h" } })
if opts.help then io.stdout:write(usage) return 0 end
if rest[1] ~= "check" or #rest > 1 then
  io.stderr:write("gitfleet config: expected 'check'\nTry 'gitfleet config --help'.\n")
  return 2
end

local c = fleet.config()
local out = io.stdout
out:write(("configuration: %s\n"):format(c.path or "(none found: built-in defaults)"))
out:write("providers:\n")
local configured = {}
for _, p in ipairs(c.providers) do configured[p.name] = p end
for _, p in ipairs(fleet.providers()) do
  local pc = configured[p.name]
  out:write(("  %s: plugin %s (%s), %s\n"):format(p.name, p.plugin, p.file, p.base_url))
  if pc and #pc.tokens > 0 then
    for _, t in ipairs(pc.tokens) do
      local extra = {}
      if t.account then extra[#extra + 1] = "account " .. t.account end
      if t.username then extra[#extra + 1] = "basic auth as " .. t.username end
      out:write(("    token %s%s\n"):format(t.label, #extra > 0 and " (" .. table.concat(extra, ", ") .. ")" or ""))
    end
  else
    out:write("    no tokens: unauthenticated\n")
  end
  for _, a in ipairs(pc and pc.apps or {}) do
    local inst = type(a.installations) == "table" and table.concat(a.installations, ", ") or a.installations
    out:write(("    app %s (app id %s, installations: %s)\n"):format(a.label, a.app_id, inst))
  end
end
local h, r = c.http, c.retry
out:write(("http: max_connections %d, per_token_concurrency %d, timeout %gs, connect_timeout %gs, max_response_size %d bytes%s\n")
  :format(h.max_connections, h.per_token_concurrency, h.timeout, h.connect_timeout, h.max_response_size,
    h.insecure and ", TLS VERIFICATION OFF (insecure)" or ""))
if h.ca_file then out:write(("  ca_file %s\n"):format(h.ca_file)) end
if h.ca_path then out:write(("  ca_path %s\n"):format(h.ca_path)) end
out:write(("retry: max_attempts %d, base_delay %gs, max_delay %gs, secondary_wait %gs, reset_margin %gs, max_wait %gs\n")
  :format(r.max_attempts, r.base_delay, r.max_delay, r.secondary_wait, r.reset_margin, r.max_wait))
out:write(("cache: %s, %s, max_size %d bytes\n"):format(c.cache.enabled and "enabled" or "disabled",
  c.cache.path or "-", c.cache.max_size))
out:write(("lua: memory_limit %d bytes, plugin_instructions %d\n"):format(c.lua.memory_limit,
  c.lua.plugin_instructions))
out:write(("plugins.paths: %s\n"):format(#c.plugin_paths > 0 and table.concat(c.plugin_paths, ", ") or "(none)"))
out:write(("log.level: %s\n"):format(c.log_level))
local shared = require("fleet.core").redis_info()
if shared then
  out:write(("shared: Redis at %s (connected), prefix %s, lease %gs, max_attempts %d; password never shown\n")
    :format(shared.name, shared.prefix, shared.lease, shared.max_attempts))
end
out:write("configuration is valid\n")
return 0
