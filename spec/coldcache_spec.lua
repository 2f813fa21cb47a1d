-- The cache when the provider sends plain (not gzipped) bodies, through
-- the real binary against an emulator started with --no-gzip: the file
-- stays about the size it has with gzip bodies, a re-run is all 304s with
-- the same records, and a process killed in the middle of a cold run
-- leaves a file the next run opens without a word.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")

local TOKENS = {
  { token = "ghp_COLDaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", provider = "github", account = "c1" },
  { token = "ghp_COLDbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", provider = "github", account = "c2" },
}

local OWNERS = {
  { name = "acme", kind = "org", repos = 1500 },
  { name = "globex", kind = "org", repos = 700 },
  { name = "bob", kind = "user", repos = 40 },
}

local function start(owners)
  local emu = emulator.start({ args = { "--no-gzip" }, scenario = { owners = owners or OWNERS, tokens = TOKENS } })
  local dir = gf.tmpdir()
  local toks = {}
  for i, t in ipairs(TOKENS) do toks[i] = { label = "t" .. i, token = t.token, account = t.account } end
  -- The cache's path comes from the environment (a run names its own).
  local cfg = gf.config({ providers = { github = { base_url = emu.url, tokens = toks } },
    cache = { path = "${SPEC_CACHE}" } }, dir)
  return emu, cfg, dir
end

local function owner_names(owners)
  local names = {}
  for i, o in ipairs(owners or OWNERS) do names[i] = o.name end
  return names
end

-- gitfleet fetch of every owner into dir/name, with the cache at cache.
local function fetch_args(cfg, dir, name, cache, owners)
  local args = { "--config", cfg, "fetch", "--no-progress", "--output", dir .. "/" .. name }
  for _, o in ipairs(owner_names(owners)) do args[#args + 1] = o end
  return args, { env = { SPEC_CACHE = cache } }
end

local function fetch(cfg, dir, name, cache, owners)
  local args, opts = fetch_args(cfg, dir, name, cache, owners)
  local r = gf.run(args, opts)
  r.output = gf.slurp(dir .. "/" .. name) or ""
  return r
end

-- The bytes of a cache on disk: the file and its WAL, if one is left.
local function disk_size(cache)
  local n = 0
  for _, suffix in ipairs({ "", "-wal" }) do
    local f = io.open(cache .. suffix, "rb")
    if f then
      n = n + f:seek("end")
      f:close()
    end
  end
  return n
end

local function lines(s)
  local n = 0
  for _ in s:gmatch("[^\n]+") do n = n + 1 end
  return n
end

describe("cache with plain bodies (emulator --no-gzip)", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("is written deflated: the file stays within 1.5x of the gzip one; a re-run is all 304s, same records", function()
    local emu, cfg, dir = start()
    -- --no-gzip: plain bodies even to a client that asks for gzip.
    local status, headers = emu:request("/orgs/acme/repos?per_page=100",
      { headers = { authorization = "token " .. TOKENS[1].token, ["accept-encoding"] = "gzip" } })
    assert.are.equal(200, status)
    assert.is_nil(headers["content-encoding"])
    emu:reset()
    local plain_cache = dir .. "/plain/cache.sqlite"
    local first = fetch(cfg, dir, "1.ndjson", plain_cache)
    assert.are.equal(0, first.code, first.stderr)
    assert.are.equal("", first.stderr)
    local s1 = emu:stats()
    assert.is_true(s1.full_responses > 20, "too few pages to mean anything")

    emu:reset()
    local second = fetch(cfg, dir, "2.ndjson", plain_cache)
    assert.are.equal(0, second.code, second.stderr)
    local s2 = emu:stats()
    assert.are.equal(0, s2.full_responses)
    assert.are.equal(s2.requests, s2.not_modified)
    assert.are.equal(first.output, second.output)
    assert.is_true(lines(second.output) > 1500 + 700, "records missing") -- bob's private ones are not listed

    local stats = gf.run({ "--config", cfg, "cache", "stats" }, { env = { SPEC_CACHE = plain_cache } })
    assert.are.equal(0, stats.code, stats.stderr)
    assert.matches("dropped:%s+0\n", stats.stdout)

    -- The same job when the provider gzips: the size to stay near.
    emu:configure({ gzip = true })
    local gzip_cache = dir .. "/gzip/cache.sqlite"
    local third = fetch(cfg, dir, "3.ndjson", gzip_cache)
    assert.are.equal(0, third.code, third.stderr)
    assert.are.equal(first.output, third.output)
    local plain_size, gzip_size = disk_size(plain_cache), disk_size(gzip_cache)
    assert.is_true(gzip_size > 0)
    assert.is_true(plain_size <= 1.5 * gzip_size,
      ("the cache of plain bodies takes %d bytes, %.2fx the %d of gzip ones"):format(plain_size,
        plain_size / gzip_size, gzip_size))
  end)

  it("killed (SIGKILL) in the middle of a cold run, leaves a file the next run opens without a warning", function()
    local owners = {}
    for i = 1, 24 do owners[i] = { name = ("big-%02d"):format(i), kind = "org", repos = 600 } end
    local emu, cfg, dir = start(owners)
    local cache = dir .. "/cache.sqlite"
    local args, opts = fetch_args(cfg, dir, "killed.ndjson", cache, owners)
    local cmd = { "env SPEC_CACHE=" .. gf.quote(opts.env.SPEC_CACHE), gf.quote(gf.bin) }
    for _, a in ipairs(args) do cmd[#cmd + 1] = gf.quote(a) end
    local pid = gf.capture(table.concat(cmd, " ") .. " >/dev/null 2>" .. gf.quote(dir .. "/killed.err")
      .. " </dev/null & echo $!")
    assert.matches("^%d+$", pid)
    -- Kill it once the writer has put something in the file (its WAL
    -- grows), while pages are still coming.
    local killed_mid_run = false
    for _ = 1, 400 do
      if disk_size(cache .. "-wal") > 0 then
        killed_mid_run = os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
        break
      end
      os.execute("sleep 0.025")
    end
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    for _ = 1, 200 do
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
      os.execute("sleep 0.025")
    end
    assert.is_true(killed_mid_run, "the run ended before the cache was written to")

    local stats = gf.run({ "--config", cfg, "cache", "stats" }, { env = { SPEC_CACHE = cache } })
    assert.are.equal(0, stats.code, stats.stderr)
    assert.are.equal("", stats.stderr)

    emu:reset()
    local r = fetch(cfg, dir, "after.ndjson", cache, owners)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("", r.stderr) -- no "damaged; moved it to", no warning at all
    assert.are.equal(24 * 600, lines(r.output))
    local listing = gf.capture("ls " .. gf.quote(dir))
    assert.is_nil(listing:find("corrupt", 1, true), listing)

    -- And the file works: a third run is all 304s.
    emu:reset()
    local again = fetch(cfg, dir, "again.ndjson", cache, owners)
    assert.are.equal(0, again.code, again.stderr)
    local s = emu:stats()
    assert.are.equal(0, s.full_responses)
    assert.are.equal(r.output, again.output)
  end)
end)
