-- shared: budgets in Redis. Several real gitfleet processes share tokens
-- through a redis-server of the spec's own, against the emulator.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local redis = require("spec.support.redis")

local TOKENS = {
  { token = "ghp_SharedAlphaSECRET0000000001", provider = "github", account = "alpha" },
  { token = "ghp_SharedBravoSECRET0000000002", provider = "github", account = "bravo" },
  { token = "ghp_SharedCharlieSECRET00000003", provider = "github", account = "charlie" },
}

local SCENARIO = {
  owners = { { name = "big1", kind = "org", repos = 500 }, { name = "big2", kind = "user", repos = 400 } },
  generate = { count = 24, total_repos = 240, prefix = "own", large = 0 },
  tokens = TOKENS,
  limits = { github = { limit = 20, window = 3 } },
}

local OWNERS = { "big1", "big2" }
for i = 1, 24 do OWNERS[#OWNERS + 1] = ("own-%04d"):format(i) end

-- Fetches its share of the owners (every n-th from k) and prints
-- full_name lines, then its stats on stderr.
local SCRIPT = [[
local k, n = tonumber(arg[1]), tonumber(arg[2])
local owners = { table.unpack(arg, 3) }
local failed = 0
for i, owner in ipairs(owners) do
  if (i - 1) % n == k - 1 then
    local repos, err = fleet.fetch_repositories(owner)
    if repos then
      for _, r in ipairs(repos) do io.write(r.full_name, "\n") end
    else
      failed = failed + 1
      io.stderr:write("FAILED ", owner, " ", tostring(err), "\n")
    end
  end
end
local s = fleet.stats()
io.stderr:write(("STATS requests=%d refused=%d redis=%s\n"):format(s.requests, s.primary_limited,
  tostring(s.redis_round_trips)))
return failed == 0 and 0 or 1
]]

local function config(emu, r, extra)
  local cfg = {
    providers = { github = { base_url = emu.url, tokens = {} } },
    retry = { reset_margin = 0.3, max_wait = 120 },
    cache = { enabled = false },
    shared = r and { url = r.url, lease = 5 } or nil,
  }
  for i, t in ipairs(TOKENS) do cfg.providers.github.tokens[i] = { label = "t" .. i, token = t.token } end
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return (gf.config(cfg))
end

-- Runs `n` processes at once; returns their runs.
local function run_parallel(n, cfg, owners, each_all)
  local dir = gf.tmpdir()
  local script = gf.script(SCRIPT, dir)
  local cmds = {}
  for k = 1, n do
    local args = { "timeout", "-s", "KILL", "120", gf.bin, "--config", cfg, "run", script,
      tostring(each_all and 1 or k), tostring(each_all and 1 or n) }
    for _, o in ipairs(owners) do args[#args + 1] = o end
    for i, a in ipairs(args) do args[i] = gf.quote(a) end
    cmds[k] = ("%s >%s/out%d 2>%s/err%d </dev/null & echo $! >%s/pid%d"):format(table.concat(args, " "), dir, k,
      dir, k, dir, k)
  end
  os.execute(table.concat(cmds, "\n") .. "\nwait")
  local runs = {}
  for k = 1, n do
    runs[k] = { stdout = gf.slurp(dir .. "/out" .. k) or "", stderr = gf.slurp(dir .. "/err" .. k) or "" }
  end
  return runs, dir
end

local function expected_repos(emu, owners) return emu:visible_repos(owners) end

local function count_lines(runs)
  local seen, dup, n = {}, 0, 0
  for _, r in ipairs(runs) do
    for line in r.stdout:gmatch("[^\n]+") do
      n = n + 1
      if seen[line] then dup = dup + 1 end
      seen[line] = true
    end
  end
  return n, dup
end

describe("shared budgets in Redis", function()
  local emu, r
  setup(function()
    emu = emulator.start({ scenario = SCENARIO })
    r = redis.start()
  end)
  teardown(function()
    redis.stop_all()
    emulator.stop_all()
    gf.cleanup()
  end)
  before_each(function()
    emu:reset()
    r:cli("FLUSHALL")
  end)

  it("lets 4 processes on 3 tokens share the owners without one refused request", function()
    local runs = run_parallel(4, config(emu, r), OWNERS)
    for _, run in ipairs(runs) do assert.matches("STATS requests=%d+ refused=0", run.stderr) end
    local n, dup = count_lines(runs)
    assert.equals(expected_repos(emu, OWNERS), n)
    assert.equals(0, dup)
    assert.equals(0, emu:stats().primary_limited)
  end)

  -- Overlapping crawls (cron jobs that run into each other) on the same
  -- owners: without shared: they overdraw; with it, none is refused.
  it("keeps overlapping crawls of the same owners within the budget", function()
    local same = { "big1", "big2", "own-0001", "own-0002", "own-0003" }
    local runs = run_parallel(4, config(emu, r, { http = { per_token_concurrency = 8 } }), same, true)
    for _, run in ipairs(runs) do
      assert.matches("STATS requests=%d+ refused=0", run.stderr)
      local n, dup = count_lines({ run })
      assert.equals(expected_repos(emu, same), n)
      assert.equals(0, dup)
    end
    assert.equals(0, emu:stats().primary_limited)
    emu:reset()
    runs = run_parallel(4, config(emu, nil, { http = { per_token_concurrency = 8 } }), same, true)
    for _, run in ipairs(runs) do assert.equals(expected_repos(emu, same), (count_lines({ run }))) end
    assert.is_true(emu:stats().primary_limited > 0)
  end)

  it("keeps every token value out of Redis keys and values", function()
    run_parallel(2, config(emu, r), { "big1", "own-0001", "own-0002" })
    local dump = r:dump()
    assert.is_true(#dump > 100)
    assert.matches("gitfleet:salt", dump, 1, true)
    for _, t in ipairs(TOKENS) do
      assert.is_nil(dump:find(t.token, 1, true))
      assert.is_nil(dump:find(t.token:sub(5, 20), 1, true)) -- no fragment either
    end
    local keys = r:cli("--scan")
    assert.matches("gitfleet:budget:", keys, 1, true)
    for _, label in ipairs({ "t1", "t2", "t3" }) do assert.is_nil(keys:find("|" .. label .. "|", 1, true)) end
  end)

  it("pauses while Redis is away and finishes when it is back", function()
    local rr = redis.start({ appendonly = true })
    local cfg = config(emu, rr)
    emu:configure({ limits = { github = { limit = 5, window = 2 } } })
    finally(function() emu:reset(true) end)
    local dir = gf.tmpdir()
    local script = gf.script(SCRIPT, dir)
    local args = { gf.bin, "-v", "--config", cfg, "run", script, "1", "1" }
    for _, o in ipairs(OWNERS) do args[#args + 1] = o end
    for i, a in ipairs(args) do args[i] = gf.quote(a) end
    os.execute(("timeout -s KILL 120 %s >%s/out 2>%s/err </dev/null & echo $! >%s/pid"):format(
      table.concat(args, " "), dir, dir, dir))
    require("socket").sleep(1)
    rr:stop()
    require("socket").sleep(2)
    rr:launch()
    local pid = gf.slurp(dir .. "/pid"):match("%d+")
    for _ = 1, 600 do
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
      require("socket").sleep(0.1)
    end
    local run = { stdout = gf.slurp(dir .. "/out"), stderr = gf.slurp(dir .. "/err") }
    assert.matches("waiting for Redis at 127.0.0.1:" .. rr.port, run.stderr, 1, true)
    assert.matches("connected to Redis at 127.0.0.1:" .. rr.port .. "/0 again", run.stderr, 1, true)
    local n, dup = count_lines({ run })
    assert.equals(expected_repos(emu, OWNERS), n)
    assert.equals(0, dup)
  end)

  it("stops with one clear line and exit 2 when Redis is down at start", function()
    local down = redis.start()
    local cfg = config(emu, down)
    down:stop()
    local run = gf.run({ "--config", cfg, "fetch", "own-0001" })
    assert.equals(2, run.code)
    assert.equals("", run.stdout)
    assert.matches("^gitfleet: error: shared: cannot use Redis at 127%.0%.0%.1:%d+/0: Connection refused\n$",
      run.stderr)
  end)

  it("names a refused password without printing it", function()
    local locked = redis.start({ password = "right-horse-battery" })
    local cfg = config(emu, locked, { shared = { url = locked.url, password = "${REDIS_PW}" } })
    local run = gf.run({ "--config", cfg, "fetch", "own-0001" }, { env = { REDIS_PW = "wrong-staple-value" } })
    assert.equals(2, run.code)
    assert.matches("Redis refused the password", run.stderr, 1, true)
    assert.is_nil(run.stderr:find("wrong-staple-value", 1, true))
    local none = gf.run({ "--config", config(emu, locked), "fetch", "own-0001" })
    assert.equals(2, none.code)
    assert.matches("Redis wants a password: set shared.password or shared.password_file", none.stderr, 1, true)
    local ok = gf.run({ "--config", cfg, "fetch", "own-0001" }, { env = { REDIS_PW = "right-horse-battery" } })
    assert.equals(0, ok.code)
  end)

  it("refuses a bad shared: section with the file, line and reason", function()
    local cases = {
      { { url = "redis://user:pw@127.0.0.1:1" }, "a password in the URL is not allowed" },
      { { url = "http://127.0.0.1:1" }, "expected redis://HOST%[:PORT%]%[/DB%] or unix:///PATH" },
      { { url = "redis://127.0.0.1:99999" }, "the port must be a number from 1 to 65535" },
      { { url = "redis://127.0.0.1:1/x" }, "the path of a redis:// URL is the database number" },
      { { lease = 5 }, "shared: url is required" },
      { { url = "redis://127.0.0.1:1", block = 0 }, "shared.block must be greater than zero" },
      { { url = "redis://127.0.0.1:1", prefix = "" }, "shared.prefix: use 1 to 64 printable characters" },
    }
    for _, c in ipairs(cases) do
      local cfg = config(emu, nil, { shared = c[1] })
      local run = gf.run({ "--config", cfg, "config", "check" })
      assert.equals(2, run.code)
      assert.matches("gitfleet%.yaml:%d+:%d+: [%w.]*:? ?" .. c[2], run.stderr)
    end
  end)
end)
