-- Starts spec/support/recorder.py (a server that records the raw request
-- targets it receives) and reads what it recorded.
--
--   local rec = recorder.start()    -- rec.url, rec.port
--   rec:requests()                  -- { {method=, target=, authorization=}, ... }
--   rec:stop()
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local M = {}
local Recorder = {}
Recorder.__index = Recorder

local function self_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("l"):match("^(%d+)")
  f:close()
  return pid
end

function M.start()
  local dir = gf.tmpdir()
  local port_file, log = dir .. "/port", dir .. "/requests.ndjson"
  os.execute(("python3 spec/support/recorder.py %s %s %s >/dev/null 2>&1 &"):format(gf.quote(port_file),
    gf.quote(log), self_pid()))
  for _ = 1, 200 do
    local text = gf.slurp(port_file)
    local pid, port = (text or ""):match("^(%d+) (%d+)\n$")
    if port then
      return setmetatable({ pid = pid, port = tonumber(port), url = "http://127.0.0.1:" .. port, log = log },
        Recorder)
    end
    os.execute("sleep 0.05")
  end
  error("the recorder did not start")
end

function Recorder:requests()
  local out = {}
  for line in (gf.slurp(self.log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

function Recorder:stop()
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
end

return M
