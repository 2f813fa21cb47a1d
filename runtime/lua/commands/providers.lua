-- gitfleet providers: the provider instances, their plugins and tokens.
local cli = require("fleet.cli")

local usage = [[
usage: gitfleet providers

Lists each provider: its name, what it is, base URL, the number of tokens
configured, and the plugin file it comes from. Plugins are found in the
installed providers folder and in the folders of plugins.paths.
]]

local opts, rest = cli.parse("providers", arg, { { "--help", "-h" } })
if opts.help then io.stdout:write(usage) return 0 end
if #rest > 0 then
  io.stderr:write("gitfleet providers: takes no arguments\nTry 'gitfleet providers --help'.\n")
  return 2
end

local rows = {}
for _, p in ipairs(fleet.providers()) do
  rows[#rows + 1] = { p.name, p.title or p.plugin, p.base_url, tostring(p.tokens), p.file }
end
cli.table(io.stdout, { "NAME", "TITLE", "BASE URL", "TOKENS", "FILE" }, rows)
return 0
