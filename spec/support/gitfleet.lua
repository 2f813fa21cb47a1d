-- Running the real gitfleet binary from specs: temp files, configs that
-- point at an emulator, scripts, and the captured outcome of a run.
--
--   local gf = require("spec.support.gitfleet")
--   local r = gf.run({ "--config", cfg, "run", script }, { env = { X = "1" } })
--   r.code, r.stdout, r.stderr
local M = {}

M.bin = os.getenv("GITFLEET_BIN") or "./gitfleet"
-- A command put before the binary (make valgrind sets a valgrind line).
M.wrapper = os.getenv("GITFLEET_WRAPPER")

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = quote

function M.slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

function M.write(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
  return path
end

local dirs = {}

-- A fresh temporary folder, removed by M.cleanup().
function M.tmpdir()
  local p = io.popen("mktemp -d")
  local dir = p:read("l")
  p:close()
  dirs[#dirs + 1] = dir
  return dir
end

function M.cleanup()
  for _, d in ipairs(dirs) do os.execute("rm -rf " .. quote(d)) end
  dirs = {}
end

-- Writes a Lua script to a temp file and returns its path.
function M.script(source, dir)
  dir = dir or M.tmpdir()
  return M.write(dir .. "/script.lua", source)
end

-- YAML for a config: providers = { github = { base_url =, tokens = {...} } },
-- plus any of http, retry, cache, log, lua as flat tables. Tokens are
-- strings or { label =, token =, account =, username =, token_file = }.
function M.yaml(cfg)
  local out = {}
  local function scalar(v)
    if type(v) == "string" then return ('"%s"'):format(v:gsub('\\', '\\\\'):gsub('"', '\\"')) end
    return tostring(v)
  end
  if cfg.providers then
    out[#out + 1] = "providers:"
    local names = {}
    for name in pairs(cfg.providers) do names[#names + 1] = name end
    table.sort(names)
    if cfg.order then names = cfg.order end
    for _, name in ipairs(names) do
      local p = cfg.providers[name]
      out[#out + 1] = "  " .. name .. ":"
      for _, k in ipairs({ "plugin", "base_url" }) do
        if p[k] then out[#out + 1] = ("    %s: %s"):format(k, scalar(p[k])) end
      end
      if p.tokens then
        out[#out + 1] = "    tokens:"
        for _, t in ipairs(p.tokens) do
          if type(t) == "string" then
            out[#out + 1] = "      - " .. scalar(t)
          else
            local parts = {}
            for _, k in ipairs({ "label", "token", "token_file", "account", "username" }) do
              if t[k] then parts[#parts + 1] = k .. ": " .. scalar(t[k]) end
            end
            out[#out + 1] = "      - { " .. table.concat(parts, ", ") .. " }"
          end
        end
      end
    end
  end
  for _, section in ipairs({ "http", "retry", "cache", "log", "lua", "shared" }) do
    if cfg[section] then
      out[#out + 1] = section .. ":"
      local keys = {}
      for k in pairs(cfg[section]) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do out[#out + 1] = ("  %s: %s"):format(k, scalar(cfg[section][k])) end
    end
  end
  if cfg.plugin_paths then
    out[#out + 1] = "plugins:"
    out[#out + 1] = "  paths:"
    for _, p in ipairs(cfg.plugin_paths) do out[#out + 1] = "    - " .. scalar(p) end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Writes a config file and returns its path. Unless cfg.cache names a path,
-- the cache lives in the same temp folder (tests never share one, nor touch
-- the user's own cache).
function M.config(cfg, dir)
  dir = dir or M.tmpdir()
  cfg.cache = cfg.cache or {}
  cfg.cache.path = cfg.cache.path or dir .. "/cache.sqlite"
  return M.write(dir .. "/gitfleet.yaml", M.yaml(cfg)), dir
end

-- An emulator serving `scenario` with one GitHub token (account "acme"),
-- and a config for it in a fresh temp folder; returns emu, config path, dir.
function M.one_token_world(scenario, token)
  scenario.tokens = { { token = token, provider = "github", account = "acme" } }
  local emu = require("spec.support.emulator").start({ scenario = scenario })
  local cfg, dir = M.config({ providers = { github = { base_url = emu.url, tokens = { { label = "t", token = token } } } } })
  return emu, cfg, dir
end

-- Runs a shell command line with its standard output and error captured;
-- returns { code, stdout, stderr, seconds }. opts.pipe: a shell command that
-- reads the command's standard output (r.stdout is then what it printed, and
-- r.code its exit status).
function M.sh(cmd, opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local out, err = dir .. "/stdout", dir .. "/stderr"
  if opts.pipe then
    cmd = cmd .. " 2>" .. quote(err) .. " | " .. opts.pipe .. " >" .. quote(out)
  else
    cmd = cmd .. " >" .. quote(out) .. " 2>" .. quote(err)
  end
  local started = os.time()
  local _, _, code = os.execute(cmd)
  return { code = code, stdout = M.slurp(out) or "", stderr = M.slurp(err) or "", seconds = os.time() - started }
end

-- Standard output of a shell command, without its trailing whitespace.
function M.capture(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("a")
  p:close()
  return (s:gsub("%s+$", ""))
end

-- Runs gitfleet with args (a list); returns { code, stdout, stderr }.
-- opts.env: extra environment; opts.unset: names of variables to remove
-- from it; opts.stdin: a file for standard input; opts.timeout: seconds
-- before the run is killed (default 120); opts.before: shell commands run
-- first, in the same shell (traps, ulimit); opts.pipe: as for M.sh.
function M.run(args, opts)
  opts = opts or {}
  local cmd = {}
  if opts.before then cmd[#cmd + 1] = opts.before end
  if opts.env or opts.unset then
    cmd[#cmd + 1] = "env"
    -- env takes its -u options before the assignments.
    for _, k in ipairs(opts.unset or {}) do cmd[#cmd + 1] = "-u " .. quote(k) end
    for k, v in pairs(opts.env or {}) do cmd[#cmd + 1] = k .. "=" .. quote(v) end
  end
  cmd[#cmd + 1] = "timeout -s KILL " .. tostring(opts.timeout or 120)
  if M.wrapper and not opts.no_wrapper then cmd[#cmd + 1] = M.wrapper end
  cmd[#cmd + 1] = quote(M.bin)
  for _, a in ipairs(args) do cmd[#cmd + 1] = quote(a) end
  cmd[#cmd + 1] = "<" .. quote(opts.stdin or "/dev/null")
  return M.sh(table.concat(cmd, " "), opts)
end

-- Runs a Lua script (source text) with a config; returns the run.
function M.run_script(source, config, opts)
  local path = M.script(source)
  local args = {}
  if config then args = { "--config", config } end
  args[#args + 1] = "run"
  args[#args + 1] = path
  for _, a in ipairs(opts and opts.args or {}) do args[#args + 1] = a end
  return M.run(args, opts)
end

-- Decodes NDJSON text into a list of tables.
function M.ndjson(text)
  local cjson = require("cjson")
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

-- Asserts that a list of names holds expected_total names, none twice.
function M.assert_each_once(list, expected_total)
  local seen = {}
  for _, name in ipairs(list) do
    assert(seen[name] == nil, "record returned twice: " .. tostring(name))
    seen[name] = true
  end
  assert(#list == expected_total, ("%d records, %d expected"):format(#list, expected_total))
end

return M
