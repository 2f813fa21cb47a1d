-- The parse floor: decode every page body with lua-cjson, the bodies read
-- into memory beforehand, so that only decoding is timed (os.clock: CPU
-- time of this single-threaded process, garbage collection included).
--
--   lua5.4 bench/floor_parse.lua DIR LIST     (LIST: one file name of DIR a line)
local cjson = require("cjson")
local dir, list = arg[1], arg[2]
assert(dir and list, "usage: lua5.4 floor_parse.lua DIR LIST")

local bodies = {}
for name in io.lines(list) do
  local f = assert(io.open(dir .. "/" .. name, "rb"))
  bodies[#bodies + 1] = f:read("a")
  f:close()
end

local started = os.clock()
local records = 0
for i = 1, #bodies do
  records = records + #cjson.decode(bodies[i])
end
local elapsed = os.clock() - started
print(("pages=%d records=%d cpu=%.3f"):format(#bodies, records, elapsed))
