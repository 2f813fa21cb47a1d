-- Start, query and stop the provider emulator (spec/support/emulator.py) from busted specs.
--
--   local emulator = require("spec.support.emulator")
--   local emu = emulator.start({ scenario = { tokens = { ... } } })
--   -- emu.port, emu.url, emu:stats(), emu:world(), emu:reset(), emu:configure{...}
--   emu:stop()
--
-- The emulator is started in the background with --parent-pid set to this Lua
-- process, so it exits by itself if the spec run dies without calling stop().
-- Uses lua-socket (socket.http, ltn12) and lua-cjson.

local http = require("socket.http")
local ltn12 = require("ltn12")
local socket = require("socket")
local cjson = require("cjson")

local M = {}

local Emulator = {}
Emulator.__index = Emulator

local START_TIMEOUT = 10    -- seconds to wait for the port file
local STOP_TIMEOUT = 5      -- seconds to wait after SIGTERM before SIGKILL
local CONTROL_TIMEOUT = 10  -- seconds for one control request

local function script_dir()
  local source = debug.getinfo(1, "S").source
  local dir = source:sub(1, 1) == "@" and source:sub(2):match("^(.*)/") or "."
  if dir:sub(1, 1) ~= "/" then
    dir = (os.getenv("PWD") or ".") .. "/" .. dir
  end
  return dir
end

M.script = script_dir() .. "/emulator.py"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

-- The pid of this Lua process.  /proc/self is read by Lua itself; without
-- /proc, the shell that io.popen starts reports its parent, which is us.
local function self_pid()
  local stat = read_file("/proc/self/stat")
  local pid = stat and stat:match("^(%d+)")
  if not pid then
    local p = io.popen("echo $PPID")
    pid = p:read("l")
    p:close()
  end
  return assert(tonumber(pid), "cannot find the pid of the Lua process")
end

local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if stat then
    return stat:match("%) (%a)") ~= "Z"   -- an unreaped zombie has exited
  end
  if read_file("/proc/self/stat") then return false end   -- /proc works: no entry, no process
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

-- Wait until fn() is truthy or `timeout` seconds have passed; returns fn()'s last value.
local function wait_for(timeout, fn)
  local deadline = socket.gettime() + timeout
  local value = fn()
  while not value and socket.gettime() < deadline do
    socket.sleep(0.02)
    value = fn()
  end
  return value
end

local live = {}   -- emulators started and not stopped, for stop_all()

--- Start an emulator.
-- opts.scenario: a Lua table encoded to the scenario JSON (use cjson.null for JSON null).
-- opts.python: the interpreter (default $PYTHON or python3).
-- opts.args: extra command-line arguments (a list of strings).
-- Raises an error carrying the emulator's stderr when it does not come up.
function M.start(opts)
  opts = opts or {}
  local base = os.tmpname()   -- created empty: holds the scenario
  local self = setmetatable({
    files = { scenario = base, port = base .. ".port", err = base .. ".err", pid = base .. ".pid",
              launcher = base .. ".launcher" },
  }, Emulator)
  write_file(self.files.scenario, cjson.encode(opts.scenario or {}))
  local extra = {}
  for _, arg in ipairs(opts.args or {}) do extra[#extra + 1] = quote(arg) end
  if opts.tls then -- { cert = PEM file, key = PEM file }: serve HTTPS (the control
    -- methods below speak plain HTTP: use curl -k for them)
    extra[#extra + 1] = "--tls-cert " .. quote(opts.tls.cert) .. " --tls-key " .. quote(opts.tls.key)
  end
  local cmd = string.format(
    "%s %s --host 127.0.0.1 --port 0 --port-file %s --pid-file %s --parent-pid %d --quiet --scenario %s %s"
      .. " </dev/null >/dev/null 2>%s & echo $! >%s",
    quote(opts.python or os.getenv("PYTHON") or "python3"), quote(M.script), quote(self.files.port),
    quote(self.files.pid), self_pid(), quote(self.files.scenario), table.concat(extra, " "),
    quote(self.files.err), quote(self.files.launcher))
  if not os.execute(cmd) then
    self:_cleanup()
    error("emulator: cannot run: " .. cmd, 2)
  end
  -- $! is the launched command, which may be a wrapper around the emulator:
  -- it tells whether the start failed; the emulator's own pid comes from --pid-file.
  local launcher = tonumber(wait_for(2, function()
    local text = read_file(self.files.launcher)
    return text and text:match("^(%d+)%s")
  end))
  local port = wait_for(START_TIMEOUT, function()
    local text = read_file(self.files.port)
    if text and text:match("^%d+\n$") then return tonumber(text) end
    if launcher and not alive(launcher) then return "exited" end
    return nil
  end)
  local pid = read_file(self.files.pid)
  self.pid = tonumber(pid and pid:match("^(%d+)\n$")) or launcher
  if type(port) ~= "number" then
    local stderr = read_file(self.files.err) or ""
    self:stop()
    error("emulator did not start" .. (stderr ~= "" and (":\n" .. stderr) or " (no output)"), 2)
  end
  self.port = port
  self.url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port
  live[self] = true
  return self
end

--- One HTTP request to the emulator.
-- Returns status, headers (lower-case names), body; or nil, error message.
-- opts: method, headers, body, timeout (seconds).
function Emulator:request(path, opts)
  opts = opts or {}
  local chunks = {}
  local timeout = opts.timeout or CONTROL_TIMEOUT
  local request_headers = {}
  for k, v in pairs(opts.headers or {}) do request_headers[k:lower()] = v end
  if opts.body and not request_headers["content-length"] then
    -- without it lua-socket sends a chunked body, which the emulator does not accept
    request_headers["content-length"] = tostring(#opts.body)
  end
  local ok, status, headers = http.request({
    url = self.url .. path,
    method = opts.method or "GET",
    headers = request_headers,
    source = opts.body and ltn12.source.string(opts.body) or nil,
    sink = ltn12.sink.table(chunks),
    redirect = false,
    create = function()
      local sock = socket.tcp()
      sock:settimeout(timeout)
      return sock
    end,
  })
  if not ok then return nil, status end
  return status, headers, table.concat(chunks)
end

local function control(self, method, path, payload)
  local headers, body = nil, nil
  if payload ~= nil then
    body = cjson.encode(payload)
    headers = { ["content-type"] = "application/json" }
  end
  local status, _, text = self:request(path, { method = method, headers = headers, body = body })
  if status ~= 200 then
    error(string.format("emulator %s %s: %s %s", method, path, tostring(status), tostring(text)), 3)
  end
  return cjson.decode(text)
end

--- Counters: requests, by_status, by_path_kind, faults, tokens (by scenario index), budgets, ...
function Emulator:stats() return control(self, "GET", "/_emulator/stats") end

--- Checks that each of the first n tokens got at most max_refusals
--- secondary-limit refusals and never had more than max_in_flight requests
--- in flight at once; returns the stats.
function Emulator:assert_secondary_bounds(n, max_refusals, max_in_flight)
  local s = self:stats()
  for i = 0, n - 1 do
    local t = s.tokens[tostring(i)]
    assert(t.secondary_limited <= max_refusals,
      ("token %d got %d secondary-limit responses"):format(i, t.secondary_limited))
    assert(t.max_in_flight <= max_in_flight,
      ("token %d had %d requests in flight, %d allowed"):format(i, t.max_in_flight, max_in_flight))
  end
  return s
end

--- Owners with kind and repository counts, and totals.
function Emulator:world() return control(self, "GET", "/_emulator/world") end

--- Repositories a token of none of the owners' accounts sees: all of an
-- organisation's (as a member would), a user's public ones.
function Emulator:visible_repos(names)
  local owners, total = self:world().owners, 0
  for _, name in ipairs(names) do
    local o = owners[name]
    total = total + (o.kind == "org" and o.repos or o.public)
  end
  return total
end

--- The live configuration (faults, secondary, limits, redirects, gzip, ...).
function Emulator:config() return control(self, "GET", "/_emulator/config") end

--- Clear counters and budgets; with restore_config also undo every configure().
function Emulator:reset(restore_config)
  return control(self, "POST", "/_emulator/reset", { config = restore_config and true or false })
end

--- Give a repository one more star (its pages change ETag): { owner =, repo = (optional) }.
function Emulator:star(tbl) return control(self, "POST", "/_emulator/star", tbl) end

--- Merge into the live faults, secondary, limits, redirects (see README); returns the new config.
function Emulator:configure(tbl) return control(self, "POST", "/_emulator/config", tbl) end

function Emulator:_cleanup()
  for _, path in pairs(self.files) do os.remove(path) end
end

--- SIGTERM, wait for the process to exit (SIGKILL after a few seconds), remove temp files.
function Emulator:stop()
  if self.stopped then return end
  self.stopped = true
  live[self] = nil
  if self.pid and alive(self.pid) then
    os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
    if not wait_for(STOP_TIMEOUT, function() return not alive(self.pid) end) then
      os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
      wait_for(1, function() return not alive(self.pid) end)
    end
  end
  self:_cleanup()
end

--- Stop every emulator this process started and has not stopped.
function M.stop_all()
  for emu in pairs(live) do emu:stop() end
end

M.alive = alive
M.self_pid = self_pid

return M
