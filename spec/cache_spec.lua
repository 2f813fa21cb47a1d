-- The response cache through the real binary: a re-run costs no quota,
-- changed content is fetched again, identical requests in flight are
-- merged, damage is survived, and two processes share one cache.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")

local TOKENS = {
  { token = "ghp_CACHEaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", provider = "github", account = "a1" },
  { token = "ghp_CACHEbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", provider = "github", account = "a2" },
  { token = "ghp_CACHEccccccccccccccccccccccccccccccc", provider = "github", account = "a3" },
}

local function setup(extra, owners)
  local emu = emulator.start({ scenario = {
    owners = owners or { { name = "acme", kind = "org", repos = 950 }, { name = "bob", kind = "user", repos = 40 } },
    tokens = TOKENS,
  } })
  local dir = gf.tmpdir()
  local toks = {}
  for i, t in ipairs(TOKENS) do toks[i] = { label = "t" .. i, token = t.token, account = t.account } end
  local cfg = { providers = { github = { base_url = emu.url, tokens = toks } }, cache = { path = dir .. "/cache.sqlite" } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return emu, (gf.config(cfg, dir)), dir
end

local function fetch(cfg, dir, name, args)
  local out = dir .. "/" .. name
  local full = { "--config", cfg }
  for _, a in ipairs(args or {}) do full[#full + 1] = a end
  for _, a in ipairs({ "fetch", "acme", "bob", "--output", out }) do full[#full + 1] = a end
  local r = gf.run(full)
  r.output = gf.slurp(out)
  return r
end

describe("cache", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("makes a re-run cost no full response, with byte-identical records", function()
    local emu, cfg, dir = setup()
    local first = fetch(cfg, dir, "1.ndjson")
    assert.are.equal(0, first.code, first.stderr)
    local s1 = emu:stats()
    assert.is_true(s1.full_responses > 0)
    emu:reset()
    local second = fetch(cfg, dir, "2.ndjson")
    assert.are.equal(0, second.code, second.stderr)
    local s2 = emu:stats()
    assert.are.equal(0, s2.full_responses)
    assert.are.equal(s1.full_responses, s2.not_modified)
    -- nor a 404 to find out again that bob is a user, not an organisation
    assert.are.equal(s2.not_modified, s2.requests)
    assert.are.equal(first.output, second.output)
  end)

  it("fetches again what changed, and only that comes back in full", function()
    local emu, cfg, dir = setup()
    assert.are.equal(0, fetch(cfg, dir, "1.ndjson").code)
    local starred = emu:star({ owner = "bob" })
    emu:reset()
    local r = fetch(cfg, dir, "2.ndjson")
    assert.are.equal(0, r.code, r.stderr)
    local s = emu:stats()
    assert.is_true(s.full_responses >= 1, require("cjson").encode(s))
    assert.is_true(s.not_modified >= 10, require("cjson").encode(s))
    local found
    for _, rec in ipairs(gf.ndjson(r.output)) do
      if rec.full_name == "bob/" .. starred.repo then found = rec end
    end
    assert.are.equal(starred.stars, found.stargazers_count)
  end)

  it("is not used with --no-cache", function()
    local emu, cfg, dir = setup()
    assert.are.equal(0, fetch(cfg, dir, "1.ndjson").code)
    emu:reset()
    assert.are.equal(0, fetch(cfg, dir, "2.ndjson", { "--no-cache" }).code)
    assert.are.equal(0, emu:stats().not_modified)
  end)

  it("evicts least recently used entries beyond cache.max_size", function()
    -- Bodies are stored compressed (about 60 KB a page of 100): 30 pages
    -- of acme overflow 1 MiB.
    local emu, cfg, dir = setup({ cache = { max_size = "1MiB" } },
      { { name = "acme", kind = "org", repos = 3000 }, { name = "bob", kind = "user", repos = 40 } })
    local function one(owner)
      local r = gf.run({ "--config", cfg, "fetch", owner, "--output", dir .. "/" .. owner })
      assert.are.equal(0, r.code, r.stderr)
    end
    one("bob")  -- a small page, then thirty big ones: bob's goes
    one("acme")
    local stats = gf.run_script('print(require("fleet.core").cache_stats().bytes)', cfg)
    assert.are.equal(0, stats.code, stats.stderr)
    local bytes = tonumber(stats.stdout)
    assert.is_true(bytes > 0 and bytes <= 1024 * 1024, stats.stdout)
    emu:reset()
    one("bob")
    assert.are.equal(0, emu:stats().not_modified)
    emu:reset()
    one("bob") -- stored again just now
    assert.are.equal(1, emu:stats().not_modified)
  end)

  it("merges identical GETs in flight into one request", function()
    local emu, cfg = setup({ cache = { enabled = false } })
    local r = gf.run_script([[
      local hs = {}
      for i = 1, 5 do hs[i] = fleet.spawn(fleet.request, "GET", "/orgs/acme/repos?per_page=100") end
      local sizes = {}
      for i = 1, 5 do sizes[i] = #hs[i]:wait().data end
      print(table.concat(sizes, ","), fleet.stats().merged)
    ]], cfg)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("100,100,100,100,100\t4\n", r.stdout)
    assert.are.equal(1, emu:stats().requests)
  end)

  it("sets a damaged cache file aside with a warning and still answers correctly", function()
    local emu, cfg, dir = setup()
    local first = fetch(cfg, dir, "1.ndjson")
    assert.are.equal(0, first.code, first.stderr)
    -- garbage over the middle of the database
    local f = assert(io.open(dir .. "/cache.sqlite", "r+b"))
    local size = f:seek("end")
    f:seek("set", size // 2)
    f:write(("\255garbage\0"):rep(4096))
    f:close()
    local r = fetch(cfg, dir, "2.ndjson")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("cache file .- is damaged; moved it to", r.stderr)
    assert.are.equal(first.output, r.output)
    local moved = io.popen("ls " .. dir):read("a")
    assert.matches("cache.sqlite.corrupt%-", moved)
    emu:reset()
  end)

  it("is shared by two processes at once", function()
    local emu, cfg, dir = setup()
    local cmd = ("for i in 1 2; do %s --config %s fetch acme bob --output %s/p$i.ndjson 2>%s/e$i & done; wait")
      :format(gf.quote(gf.bin), gf.quote(cfg), dir, dir)
    os.execute(cmd)
    local a, b = gf.slurp(dir .. "/p1.ndjson"), gf.slurp(dir .. "/p2.ndjson")
    assert.are.equal("", gf.slurp(dir .. "/e1") .. gf.slurp(dir .. "/e2"))
    assert.are.equal(a, b)
    assert.is_true(#a > 0)
    emu:reset()
    local r = fetch(cfg, dir, "3.ndjson")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(0, emu:stats().full_responses)
    assert.are.equal(a, r.output)
  end)

  it("shows and clears itself with gitfleet cache", function()
    local _, cfg, dir = setup()
    assert.are.equal(0, fetch(cfg, dir, "1.ndjson").code)
    local st = gf.run({ "--config", cfg, "cache", "stats" })
    assert.are.equal(0, st.code, st.stderr)
    assert.matches("entries", st.stdout)
    local cl = gf.run({ "--config", cfg, "cache", "clear" })
    assert.are.equal(0, cl.code, cl.stderr)
    local st2 = gf.run({ "--config", cfg, "cache", "stats" })
    assert.matches("entries%s*:?%s*0", st2.stdout)
  end)
end)
