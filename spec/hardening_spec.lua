-- Untrusted input, runaway Lua and signals: each gets a clear error within
-- the configured bounds, and the rest of the run goes on.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local TOKEN = "ghp_HARDENING000000000000000000000000000"

local function setup(extra)
  local emu = emulator.start({ scenario = {
    owners = { { name = "fine", kind = "org", repos = 130 } },
    tokens = { { token = TOKEN, provider = "github", account = "alice" } },
  } })
  local cfg = { providers = { github = { base_url = emu.url, tokens = { { label = "t", token = TOKEN } } } },
    retry = { max_attempts = 2, base_delay = 0.05 } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return emu, (gf.config(cfg))
end

-- Fetches `bad` then `fine`; prints the error kind of the first and the
-- count of the second.
local BOTH = [[
local bad, err = fleet.fetch_repositories((...))
print(bad and #bad or "nil", err and err.kind, err and err.message)
local fine = assert(fleet.fetch_repositories("fine"))
print(#fine)
]]

describe("untrusted input", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("refuses an oversized response with too_large, quickly #valgrind", function()
    local _, cfg = setup({ http = { max_response_size = "1MiB" } })
    local r = gf.run_script(BOTH, cfg, { args = { "x-oversize" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^nil\ttoo_large\t.-larger than http.max_response_size %(1048576 bytes%)\n130\n$", r.stdout)
  end)

  it("writes invalid UTF-8 from a server as valid UTF-8", function()
    local _, cfg = setup()
    local dir = gf.tmpdir()
    local r = gf.run({ "--config", cfg, "fetch", "x-badutf8", "--output", dir .. "/out.ndjson" })
    assert.are.equal(0, r.code, r.stderr)
    local text = gf.slurp(dir .. "/out.ndjson")
    assert.is_truthy(utf8.len(text), "output is not valid UTF-8")
    assert.is_truthy(text:find("\u{FFFD}", 1, true))
    for line in text:gmatch("[^\n]+") do cjson.decode(line) end
  end)

  it("reports deeply nested JSON as a decode error #valgrind", function()
    local _, cfg = setup()
    local r = gf.run_script(BOTH, cfg, { args = { "x-nested" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^nil\tdecode\t.-not valid JSON.-\n130\n$", r.stdout)
  end)

  -- `gitfleet fetch BAD fine`: the emulator, the run, and what it wrote.
  local function fetch_with_fine(bad)
    local emu, cfg = setup()
    local out = gf.tmpdir() .. "/out.ndjson"
    local r = gf.run({ "--config", cfg, "fetch", bad, "fine", "--output", out }, { timeout = 60 })
    return emu, r, gf.slurp(out) or ""
  end

  it("stops a list at its first empty page when the server claims a last page of 1,000,000", function()
    local emu, r, text = fetch_with_fine("x-lyinglast")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(6 + 130, select(2, text:gsub("\n", "")))
    -- pages 1-3, at most a window (up to 32) fetched ahead past the end,
    -- and fine's 2 pages: not a million
    assert.is_true(emu:stats().requests <= 3 + 32 + 2, ("%d requests"):format(emu:stats().requests))
  end)

  it("fails an owner whose next links go round in a loop after one round, and writes the others", function()
    local emu, r, text = fetch_with_fine("x-nextloop")
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("x%-nextloop: unreadable response on github: .-page=2: the next link leads back to a page already"
      .. " read; the list stops here", r.stderr)
    -- pages 1, 2 and 3 once each, then the loop is seen; and fine's 2 pages
    assert.are.equal(3 + 2, emu:stats().requests)
    assert.matches('"full_name":"fine/', text)
  end)

  it("gives up on a header line without end", function()
    local _, cfg = setup()
    local r = gf.run_script(BOTH, cfg, { args = { "x-hugeheader" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^nil\t%a+\t.-after 2 attempts\n130\n$", r.stdout)
  end)

  it("times out a server that never answers", function()
    local _, cfg = setup({ http = { timeout = 1 } })
    local r = gf.run_script(BOTH, cfg, { args = { "x-hang" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^nil\ttimeout\t.-after 2 attempts\n130\n$", r.stdout)
  end)

  it("times out a body sent slowly forever", function()
    local _, cfg = setup({ http = { timeout = 1 } })
    local r = gf.run_script(BOTH, cfg, { args = { "x-slowbody" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^nil\ttimeout\t.-after 2 attempts\n130\n$", r.stdout)
  end)
end)

describe("a plugin that cannot read what a provider sent", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  -- A config with the emulator as github and as "brittle", a plugin whose
  -- every reader raises on what the emulator sends.
  local function brittle_config(repos)
    local emu = emulator.start({ scenario = { owners = { { name = "acme", kind = "org", repos = repos } } } })
    local dir = gf.tmpdir()
    os.execute("mkdir -p " .. dir .. "/plugins")
    gf.write(dir .. "/plugins/brittle.lua", [[
      local util = require("fleet.plugin")
      return {
        base_url = "http://127.0.0.1:9", auth = { header = "Authorization", scheme = "Bearer" },
        pagination = { style = "link", page_param = "page" },
        repositories = function(api, owner) return api:pages("/orgs/" .. owner .. "/repos") end,
        normalize_repository = function(r) return { name = r.name .. r.owner } end,
        repository_details = function(api, owner, repo) return api:get("/repos/" .. owner .. "/" .. repo) end,
        branches = function(api, owner, repo)
          return util.list(api, "/repos/" .. owner .. "/" .. repo .. "/branches", {},
            function(b) return { name = b.name .. b.commit } end)
        end,
        user_info = function(api) local u = api:get("/user"); return { login = u.login .. u.id .. u.plan } end,
      }
    ]])
    return gf.config({ providers = { brittle = { base_url = emu.url }, github = { base_url = emu.url } },
      plugin_paths = { dir .. "/plugins" } }, dir)
  end

  it("costs that owner a decode error, not the run", function()
    local r = gf.run_script([[
      local repos, err = fleet.fetch_repositories("acme", { provider = "brittle" })
      print(repos, err.kind, err.owner, err.provider)
      print(#assert(fleet.fetch_repositories("acme", { provider = "github" })))
    ]], brittle_config(20))
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^nil\tdecode\tacme\tbrittle\n%d+\n$", r.stdout)
  end)

  it("costs a branches, details or user call a decode error naming the plugin's file and line", function()
    local r = gf.run_script([[
      local repo = assert(fleet.fetch_repositories("acme", { provider = "github" }))[1].name
      for _, call in ipairs({
        function() return fleet.fetch_branches("acme", repo, { provider = "brittle" }) end,
        function() return fleet.fetch_repository_details("acme", repo, { provider = "brittle" }) end,
        function() return fleet.fetch_user_info("brittle") end,
      }) do
        local ok, err = call()
        print(ok, err.kind, err.provider, err.message)
      end
      print(#assert(fleet.fetch_branches("acme", repo, { provider = "github" })) > 0)
    ]], brittle_config(3))
    assert.are.equal(0, r.code, r.stderr)
    local lines = {}
    for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(4, #lines, r.stdout)
    for i = 1, 3 do
      assert.matches("^nil\tdecode\tbrittle\tthe brittle plugin could not read .*brittle%.lua:%d+:", lines[i])
    end
    assert.are.equal("true", lines[4])
  end)
end)

describe("runaway Lua", function()
  after_each(gf.cleanup)

  it("stops a script at lua.memory_limit with a clear message #valgrind", function()
    local cfg = gf.config({ lua = { memory_limit = "32MiB" } })
    local r = gf.run_script([[
      local t = {}
      for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end
    ]], cfg)
    assert.are.equal(1, r.code)
    assert.matches("out of memory: the Lua state reached lua.memory_limit %(32 MiB%)", r.stderr)
  end)

  it("stops a plugin whose loading never ends, naming the file", function()
    local dir = gf.tmpdir()
    os.execute("mkdir -p " .. dir .. "/plugins")
    gf.write(dir .. "/plugins/spin.lua", "while true do end\n")
    local cfg = gf.config({ plugin_paths = { dir .. "/plugins" }, lua = { plugin_instructions = 100000 } }, dir)
    local r = gf.run({ "--config", cfg, "providers" })
    assert.are.equal(2, r.code)
    assert.matches("spin.lua: error while loading the plugin: .-instruction budget", r.stderr)
  end)
end)

describe("signals", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  local function interrupted_fetch(signal)
    local emu = emulator.start({ scenario = {
      owners = { { name = "big", kind = "org", repos = 3000 }, { name = "big2", kind = "org", repos = 3000 } },
      tokens = { { token = TOKEN, provider = "github", account = "alice" } },
      faults = { rate = 1, kinds = { "slow" }, slow_seconds = 0.2 },
    } })
    local dir = gf.tmpdir()
    local cfg = gf.config({ providers = { github = { base_url = emu.url, tokens = { { label = "t", token = TOKEN } } } },
      http = { per_token_concurrency = 2 } }, dir)
    local out = dir .. "/out.ndjson"
    -- Standard output, which streams (an --output file is left as it was
    -- by an interrupted run: atomic_output_spec).
    local cmd = ("%s --config %s fetch big big2 >%s 2>%s & pid=$!; sleep 1.5; kill -%s $pid; "
      .. "start=$(date +%%s.%%N); wait $pid; code=$?; end=$(date +%%s.%%N); echo $code $start $end")
      :format(gf.quote(gf.bin), gf.quote(cfg), gf.quote(out), gf.quote(dir .. "/err"), signal)
    local p = io.popen(cmd)
    local line = p:read("a")
    p:close()
    local code, t0, t1 = line:match("(%d+) ([%d.]+) ([%d.]+)")
    return tonumber(code), tonumber(t1) - tonumber(t0), gf.slurp(out) or "", gf.slurp(dir .. "/err")
  end

  for _, case in ipairs({ { "INT", 130 }, { "TERM", 143 } }) do
    it("stops on SIG" .. case[1] .. " within a second or so, leaving only complete NDJSON lines", function()
      local code, seconds, text, err = interrupted_fetch(case[1])
      assert.are.equal(case[2], code, err)
      -- How long the stop took is measured by tools/measure-stop.sh, not
      -- asserted here; the spec only needs the process to end by itself.
      assert.is_number(seconds)
      assert.is_true(#text > 0, "nothing was written before the signal")
      assert.are.equal("\n", text:sub(-1))
      local n = 0
      for l in text:gmatch("[^\n]+") do
        cjson.decode(l)
        n = n + 1
      end
      assert.is_true(n < 6000)
      assert.matches("interrupted", err)
    end)
  end
end)
