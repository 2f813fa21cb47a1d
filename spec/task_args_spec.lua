-- A task gets every argument it is spawned with: the main task of a
-- script run with hundreds of arguments (and `fetch` with 200 owners on
-- the command line) used to overflow the new coroutine's stack.
local gf = require("spec.support.gitfleet")

describe("task arguments", function()
  after_each(gf.cleanup)

  it("reach a script run with 300 of them, and a spawned task given 500", function()
    local args = {}
    for i = 1, 300 do args[i] = "a" .. i end
    local r = gf.run_script([[
      local n, last = select("#", ...), select(select("#", ...), ...)
      local t = {}
      for i = 1, 500 do t[i] = i end
      local h = fleet.spawn(function(...) return select("#", ...) + select(500, ...) end, table.unpack(t))
      print(n, last, h:wait())
    ]], nil, { args = args })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("300\ta300\t1000\n", r.stdout)
  end)
end)
