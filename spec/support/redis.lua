-- A redis-server of a spec's own: a free loopback port, a temporary
-- folder, no system service. Stopped by :stop() (or stop_all()).
--
--   local redis = require("spec.support.redis")
--   local r = redis.start({ appendonly = true })
--   r.port, r.url ("redis://127.0.0.1:PORT"), r.dir
--   r:cli("HGETALL", "key")        -- redis-cli's output, trimmed
--   r:restart() / r:stop()
local M = {}

local gf = require("spec.support.gitfleet")
local socket = require("socket")

local started = {}

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local Redis = {}
Redis.__index = Redis

function Redis:launch()
  local args = {
    "redis-server", "--port", tostring(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
    "--daemonize", "yes", "--pidfile", self.dir .. "/redis.pid", "--logfile", self.dir .. "/redis.log",
    "--save", "''", "--rdbcompression", "no", "--appendonly", self.appendonly and "yes" or "no",
  }
  if self.password then
    args[#args + 1] = "--requirepass"
    args[#args + 1] = gf.quote(self.password)
  end
  local ok = os.execute(table.concat(args, " ") .. " >/dev/null 2>&1")
  assert(ok, "redis-server did not start")
  for _ = 1, 100 do
    if self:cli("PING") == "PONG" then return self end
    socket.sleep(0.05)
  end
  error("redis-server did not answer on port " .. self.port .. ": " .. (gf.slurp(self.dir .. "/redis.log") or ""))
end

function M.start(opts)
  opts = opts or {}
  local self = setmetatable({ dir = gf.tmpdir(), port = free_port(), appendonly = opts.appendonly,
    password = opts.password }, Redis)
  self.url = "redis://127.0.0.1:" .. self.port
  started[#started + 1] = self
  return self:launch()
end

-- redis-cli with the arguments (each quoted); its output without the
-- trailing newline.
function Redis:cli(...)
  local parts = { "redis-cli", "--no-auth-warning", "-p", tostring(self.port) }
  if self.password then parts[#parts + 1] = "-a " .. gf.quote(self.password) end
  for _, a in ipairs({ ... }) do parts[#parts + 1] = gf.quote(a) end
  return gf.capture(table.concat(parts, " ") .. " 2>&1")
end

function Redis:pid()
  return tonumber((gf.slurp(self.dir .. "/redis.pid") or ""):match("%d+"))
end

function Redis:stop()
  local pid = self:pid()
  if not pid then return end
  os.execute("kill " .. pid .. " 2>/dev/null")
  for _ = 1, 100 do
    if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
    socket.sleep(0.05)
  end
  os.remove(self.dir .. "/redis.pid")
end

function Redis:restart()
  self:stop()
  return self:launch()
end

-- Every byte Redis holds, keys and values, as one string: a fresh
-- uncompressed snapshot file.
function Redis:dump()
  assert(self:cli("SAVE") == "OK", "SAVE failed")
  return gf.slurp(self.dir .. "/dump.rdb") or ""
end

function M.stop_all()
  for _, r in ipairs(started) do r:stop() end
  started = {}
end

return M
