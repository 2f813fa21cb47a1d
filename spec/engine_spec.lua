-- The engine: scheduler, token pool, classification and retries, driven
-- through the real binary against the provider emulator.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local function tokens(n, prefix)
  local list = {}
  for i = 1, n do
    list[i] = { token = ("ghp_%s%02dSECRETVALUE0000000000"):format(prefix or "T", i), provider = "github",
      account = "acct" .. i }
  end
  return list
end

local function config_for(emu, scenario_tokens, extra)
  local cfg = { providers = { github = { base_url = emu.url, tokens = {} } } }
  for i, t in ipairs(scenario_tokens) do
    cfg.providers.github.tokens[i] = { label = "t" .. i, token = t.token }
  end
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return (gf.config(cfg))
end

-- Fetches owners and prints one line per record: full_name.
local FETCH = [[
local owners = { ... }
local failed = false
for _, owner in ipairs(owners) do
  local repos, err = fleet.fetch_repositories(owner)
  if not repos then
    io.stderr:write("FAILED ", owner, " ", tostring(err), " kind=", tostring(err.kind), "\n")
    failed = true
  else
    for _, r in ipairs(repos) do io.write(r.full_name, "\n") end
  end
end
return failed and 1 or 0
]]

local function lines(text)
  local out = {}
  for l in text:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local assert_each_once = gf.assert_each_once

describe("engine", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("spreads requests over tokens so none is overdrawn", function()
    local toks = tokens(3)
    local emu = emulator.start({ scenario = {
      owners = { { name = "big", kind = "org", repos = 3000 } },
      tokens = toks, limits = { github = { limit = 20, window = 30 } },
    } })
    local r = gf.run_script(FETCH, config_for(emu, toks), { args = { "big" } })
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(lines(r.stdout), 3000)
    local s = emu:stats()
    assert.are.equal(0, s.primary_limited)
    for i = 0, 2 do
      local t = s.tokens[tostring(i)]
      assert.is_true(t.requests <= 20, "token " .. i .. " overdrawn: " .. t.requests)
      assert.is_true(t.requests >= 5, "token " .. i .. " barely used: " .. t.requests)
    end
  end)

  it("waits for the reset rather than sending on a spent token, and says so with -v", function()
    -- 30 pages, 2 tokens of 10 requests per 6 s: one wait for a reset.
    local toks = tokens(2)
    local emu = emulator.start({ scenario = {
      owners = { { name = "big", kind = "org", repos = 3000 } },
      tokens = toks, limits = { github = { limit = 10, window = 6 } },
    } })
    local cfg = config_for(emu, toks, { retry = { reset_margin = 0.2 } })
    local r = gf.run({ "--config", cfg, "-v", "run", gf.script(FETCH), "big" })
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(lines(r.stdout), 3000)
    assert.are.equal(0, emu:stats().primary_limited, "a request went out on a spent token")
    assert.matches("waiting [%d.]+s: every token of github is spent or paused; github:t%d frees up first", r.stderr)
  end)

  it("fails with rate_limited and the reset time when the wait would pass retry.max_wait", function()
    local toks = tokens(1)
    local emu = emulator.start({ scenario = {
      owners = { { name = "big", kind = "org", repos = 3000 } },
      tokens = toks, limits = { github = { limit = 3, window = 600 } },
    } })
    local cfg = config_for(emu, toks, { retry = { max_wait = 1 } })
    local r = gf.run_script([[
      local repos, err = fleet.fetch_repositories("big")
      print(repos, err.kind, type(err.reset), err.reset and err.reset > os.time() + 60)
    ]], cfg)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("nil\trate_limited\tnumber\ttrue\n", r.stdout)
    assert.are.equal(0, emu:stats().primary_limited)
  end)

  it("disables exactly the token a provider refuses (401) and carries on with the rest #valgrind", function()
    local toks = tokens(2)
    local emu = emulator.start({ scenario = {
      owners = { { name = "acme", kind = "org", repos = 450 }, { name = "bob", kind = "user", repos = 120 } },
      tokens = toks,
    } })
    local cfg = gf.config({ providers = { github = { base_url = emu.url, tokens = {
      { label = "good1", token = toks[1].token }, { label = "revoked", token = "ghp_UNKNOWNUNKNOWNUNKNOWN" },
      { label = "good2", token = toks[2].token } } } } })
    local r = gf.run_script([[
      local disabled = {}
      fleet.on("token_disabled", function(e) disabled[#disabled + 1] = e.token end)
      local total = 0
      for _, o in ipairs({ "acme", "bob" }) do
        local repos = assert(fleet.fetch_repositories(o))
        total = total + #repos
      end
      fleet.sleep(0)
      print(total, table.concat(disabled, ","))
    ]], cfg)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(("%d\trevoked\n"):format(emu:visible_repos({ "acme", "bob" })), r.stdout)
    assert.matches("token revoked of github was refused %(HTTP 401%): disabled for this run", r.stderr)
    assert.are.equal(1, emu:stats().unauthorized)
    assert.is_nil(r.stderr:find("UNKNOWNUNKNOWN", 1, true))
  end)

  it("pauses only the token that hit a secondary limit and learns its concurrency", function()
    -- Each answer is held 0.2 s, long next to the client's own time: with
    -- answers served at once, a client slowed by the sanitizer on a busy
    -- machine reads them so late that it cannot tell what the provider
    -- held at once from what it merely has not read yet (as against a
    -- real provider, which is never this fast).
    local toks = tokens(2)
    local emu = emulator.start({ scenario = {
      owners = { { name = "big", kind = "org", repos = 4000 } },
      tokens = toks, secondary = { max_concurrency = 2, retry_after = 1 }, latency = 0.2,
    } })
    local r = gf.run_script([[
      local events = {}
      fleet.on("secondary_limit", function(e) events[#events + 1] = e.token end)
      local repos = assert(fleet.fetch_repositories("big"))
      fleet.sleep(0)
      print(#repos, #events)
    ]], config_for(emu, toks))
    assert.are.equal(0, r.code, r.stderr)
    local count, nevents = r.stdout:match("^(%d+)\t(%d+)")
    assert.are.equal("4000", count)
    local s = emu:assert_secondary_bounds(2, 2, 3)
    assert.are.equal(tonumber(nevents), s.secondary_limited)
    assert.is_true(s.secondary_limited >= 1, "the limit was never met: the spec tests nothing")
  end)

  it("loses nothing under faults: 5xx, dropped connections, truncated bodies", function()
    local toks = tokens(3)
    local owners = {}
    for i = 1, 30 do owners[i] = { name = ("own%02d"):format(i), kind = i % 2 == 0 and "org" or "user",
      repos = (i * 37) % 260 } end
    local emu = emulator.start({ scenario = {
      owners = owners, tokens = toks,
      faults = { rate = 0.2, kinds = { "5xx", "drop", "truncate" }, seed = 11 },
    } })
    local cfg = config_for(emu, toks, { retry = { base_delay = 0.01, max_delay = 0.05, max_attempts = 12 } })
    local names = {}
    for i, o in ipairs(owners) do names[i] = o.name end
    local r = gf.run_script([[
      local owners = { ... }
      local results, errors = fleet.map(owners, function(o) return fleet.fetch_repositories(o) end,
        { concurrency = 8 })
      for i = 1, #owners do
        if errors and errors[i] then io.stderr:write(tostring(errors[i]), "\n") os.exit(1) end
        for _, r in ipairs(results[i]) do io.write(r.full_name, "\n") end
      end
      io.stderr:write("retries=", fleet.stats().retries, "\n")
    ]], cfg, { args = names })
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(lines(r.stdout), emu:visible_repos(names))
    local s = emu:stats()
    local faults = (s.faults["5xx"] or 0) + (s.faults.drop or 0) + (s.faults.truncate or 0)
    -- libcurl itself resends a request whose reused connection was found
    -- closed, so some dropped connections cost no retry of ours.
    local retries = tonumber(r.stderr:match("retries=(%d+)"))
    assert.is_true(faults > 0 and retries > 0 and retries <= faults, ("faults %d, retries %d"):format(faults, retries))
  end)

  it("honours Retry-After on a server error", function()
    local toks = tokens(1)
    local emu = emulator.start({ scenario = {
      owners = { { name = "acme", kind = "org", repos = 250 } }, tokens = toks,
      faults = { rate = 0.5, kinds = { "5xx" }, retry_after = 1, seed = 3 },
    } })
    local r = gf.run_script([[
      local delays = {}
      fleet.on("retry", function(e) delays[#delays + 1] = e.delay end)
      assert(fleet.fetch_repositories("acme"))
      fleet.sleep(0)
      print(#delays > 0, #delays > 0 and math.min(table.unpack(delays)), #delays > 0 and math.max(table.unpack(delays)))
    ]], config_for(emu, toks, { retry = { max_attempts = 20 } }))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("true\t1.0\t1.0\n", r.stdout)
  end)

  it("gives a final 4xx to the caller without retrying #valgrind", function()
    local toks = tokens(1)
    local emu = emulator.start({ scenario = { tokens = toks } })
    local r = gf.run_script([[
      local repos, err = fleet.fetch_repositories("nobody-here")
      print(repos, err.kind, err.status, err.owner, err.provider)
      print(fleet.stats().retries)
    ]], config_for(emu, toks))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("nil\tnot_found\t404\tnobody-here\tgithub\n0\n", r.stdout)
    assert.are.equal(2, emu:stats().requests) -- /orgs then /users, once each
  end)

  it("keeps within the per-token and global concurrency caps", function()
    local toks = tokens(3)
    local emu = emulator.start({ scenario = {
      owners = { { name = "big", kind = "org", repos = 3000 } }, tokens = toks,
      faults = { rate = 1, kinds = { "slow" }, slow_seconds = 0.05 },
    } })
    local r = gf.run_script(FETCH, config_for(emu, toks, { http = { per_token_concurrency = 2,
      max_connections = 4 } }), { args = { "big" } })
    assert.are.equal(0, r.code, r.stderr)
    local s = emu:stats()
    assert.is_true(s.max_in_flight <= 4, "max in flight " .. s.max_in_flight)
    for i = 0, 2 do assert.is_true(s.tokens[tostring(i)].max_in_flight <= 2) end
  end)

  it("fetches pages concurrently once the last page is known, and returns them in order", function()
    local toks = tokens(2)
    local emu = emulator.start({ scenario = {
      owners = { { name = "big", kind = "org", repos = 2500 } }, tokens = toks,
      faults = { rate = 1, kinds = { "slow" }, slow_seconds = 0.05 },
    } })
    local r = gf.run_script([[
      local repos = assert(fleet.fetch_repositories("big"))
      -- the same pages one by one, following the next links as given
      local seq, url = {}, "/orgs/big/repos?per_page=100"
      while url do
        local resp = assert(fleet.request("GET", url))
        for _, r in ipairs(resp.data) do seq[#seq + 1] = r.full_name end
        url = require("fleet.core").parse_link(resp.headers.link).next
      end
      for i = 1, #seq do assert(seq[i] == repos[i].full_name, "out of order at " .. i) end
      print(#repos, #seq)
    ]], config_for(emu, toks))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("2500\t2500\n", r.stdout)
    assert.is_true(emu:stats().max_in_flight >= 4)
  end)

  it("reports counters in fleet.stats() #valgrind", function()
    local toks = tokens(1)
    local emu = emulator.start({ scenario = {
      owners = { { name = "acme", kind = "org", repos = 250 } }, tokens = toks } })
    local r = gf.run_script([[
      assert(fleet.fetch_repositories("acme"))
      local s = fleet.stats()
      print(s.requests, s.ok, s.retries, s.bytes > 10000) -- bytes received, gzip-compressed
    ]], config_for(emu, toks))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("3\t3\t0\ttrue\n", r.stdout)
  end)
end)

describe("scheduler #valgrind", function()
  after_each(gf.cleanup)

  it("runs spawned functions concurrently and returns results in input order from fleet.map", function()
    local r = gf.run_script([[
      local order = {}
      local a = fleet.spawn(function() fleet.sleep(0.2) order[#order + 1] = "A" return "a", 1 end)
      local b = fleet.spawn(function() fleet.sleep(0.05) order[#order + 1] = "B" return "b" end)
      local x, n = a:wait()
      print(x, n, b:wait(), table.concat(order))
      local res = fleet.map({ 3, 1, 2 }, function(v) fleet.sleep(v / 20) return v * 10 end, { concurrency = 3 })
      print(res[1], res[2], res[3], res.n)
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("a\t1\tb\tBA\n30\t10\t20\t3\n", r.stdout)
  end)

  it("ends a condition wait at its signal or its timeout, whichever comes first, and only once", function()
    local r = gf.run_script([[
      local core = require("fleet.core")
      local cond, cond2, order = core.condition(), core.condition(), {}
      local function note(s) order[#order + 1] = s end
      -- A times out, then sleeps: B's signal must not cut the sleep short.
      local a = fleet.spawn(function()
        note("A " .. tostring(cond:wait(0.05)))
        fleet.sleep(0.3)
        note("A slept")
      end)
      local b = fleet.spawn(function()
        fleet.sleep(0.1)
        cond:signal()
        note("B signalled")
        fleet.sleep(0.1)
        note("B later")
      end)
      a:wait() b:wait()
      -- C is signalled before its timeout: the timer must not end its next wait.
      local c = fleet.spawn(function()
        note("C " .. tostring(cond:wait(0.2)))
        note("C " .. tostring(cond2:wait()))
      end)
      fleet.sleep(0.05)
      cond:signal()
      fleet.sleep(0.4)
      note("signal 2")
      cond2:signal()
      c:wait()
      print(table.concat(order, ","))
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("A false,B signalled,B later,A slept,C true,signal 2,C true\n", r.stdout)
  end)

  it("gives a spawned function's error its own traceback", function()
    local r = gf.run_script([[
      local h = fleet.spawn(function()
        local t = nil
        return t.field
      end)
      local ok, err = h:result()
      print(ok, err:match("script.lua:3: attempt to index a nil value") ~= nil, err:find("stack traceback") ~= nil)
      local ok2, err2 = pcall(function() return h:wait() end)
      print(ok2, tostring(err2):match("script.lua:3:") ~= nil)
      local _, errors = fleet.map({ 1, 2 }, function(v) if v == 2 then error("bad " .. v) end return v end)
      print(errors[1], errors[2]:match("bad 2") ~= nil)
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("false\ttrue\ttrue\nfalse\ttrue\nnil\ttrue\n", r.stdout)
  end)

  it("reports a spawned error nobody waited for, and exits 1", function()
    local r = gf.run_script([[
      fleet.spawn(function() error("lost in the background") end)
      print("main done")
    ]])
    assert.are.equal(1, r.code)
    assert.are.equal("main done\n", r.stdout)
    assert.matches("spawned task failed: .-script.lua:1: lost in the background", r.stderr)
    assert.matches("stack traceback", r.stderr)
  end)

  it("waits for spawned work after the script's body ends", function()
    local r = gf.run_script([[
      fleet.spawn(function() fleet.sleep(0.1) print("late") end)
      print("body ends")
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("body ends\nlate\n", r.stdout)
  end)

  it("explains a wait called from a coroutine the script made itself", function()
    local r = gf.run_script([[
      local co = coroutine.wrap(function() fleet.sleep(0.01) end)
      co()
    ]])
    assert.are.equal(1, r.code)
    assert.matches("must be called from the script's body or a fleet.spawn'ed function", r.stderr)
  end)

  it("detects tasks that wait for each other", function()
    local r = gf.run_script([[
      local a, b
      a = fleet.spawn(function() fleet.sleep(0.01) return b:wait() end)
      b = fleet.spawn(function() fleet.sleep(0.01) return a:wait() end)
      a:wait()
    ]])
    assert.are.equal(1, r.code)
    assert.matches("deadlock", r.stderr)
  end)

  it("exits with the status os.exit gives, and an integer the script returns", function()
    assert.are.equal(3, gf.run_script("os.exit(3)").code)
    assert.are.equal(4, gf.run_script("return 4").code)
    assert.are.equal(0, gf.run_script("os.exit(true)").code)
  end)

  it("ends the run at once on os.exit, from the main chunk or a spawned task, while other tasks still wait", function()
    -- the others sleep 60 s and the run is killed after 30: the code says which came first
    local main = gf.run_script("fleet.spawn(fleet.sleep, 60)\nprint('spawned')\nos.exit(3)\n", nil, { timeout = 30 })
    assert.are.equal(3, main.code, main.stderr)
    assert.are.equal("spawned\n", main.stdout)
    assert.are.equal("", main.stderr)
    local spawned = gf.run_script("fleet.spawn(function() fleet.sleep(0.1) os.exit(5) end)\nfleet.sleep(60)\n", nil,
      { timeout = 30 })
    assert.are.equal(5, spawned.code, spawned.stderr)
    assert.not_matches("failed", spawned.stderr, 1, true)
  end)

  it("shows a runtime error with a traceback naming the script and line", function()
    local r = gf.run_script("local x = 1\nlocal function f() return nil + x end\nf()\n")
    assert.are.equal(1, r.code)
    assert.matches("gitfleet: error: .-script.lua:2: attempt to perform arithmetic on a nil value", r.stderr)
    assert.matches("stack traceback:.-script.lua:3: in main chunk", r.stderr)
  end)

  it("reports a syntax error with file and line", function()
    local r = gf.run_script("local x = = 1\n")
    assert.are.equal(1, r.code)
    assert.matches("gitfleet: error: .-script.lua:1: unexpected symbol near '='", r.stderr)
  end)

  it("gives the script its arguments as the lua interpreter does", function()
    local r = gf.run_script("print(#arg, arg[1], arg[2], select('#', ...), ...)\nprint(arg[0]:match('script.lua$'))",
      nil, { args = { "one", "two" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("2\tone\ttwo\t2\tone\ttwo\nscript.lua\n", r.stdout)
  end)
end)
