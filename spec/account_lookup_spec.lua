-- Learning which account a token belongs to costs nothing it need not:
-- no /user for a provider with one token, and on a re-run the answer
-- comes from the cache (revalidated with its ETag, which GitHub does not
-- count) instead of a counted request.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local TOKENS = {
  { token = "ghp_ACCTaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", provider = "github", account = "acct-one" },
  { token = "ghp_ACCTbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", provider = "github", account = "acct-two" },
  { token = "ghp_ACCTcccccccccccccccccccccccccccccccc", provider = "github", account = "acct-three" },
}
local OWNERS = {}
for i = 1, 4 do OWNERS[i] = { name = "quota-org-" .. i, kind = "org", repos = 3000 } end

local function start(owners, limits)
  return emulator.start({ scenario = { owners = owners, tokens = TOKENS, limits = limits } })
end

local function config(emu, ntokens, dir)
  local toks = {}
  for i = 1, ntokens do toks[i] = { label = "t" .. i, token = TOKENS[i].token } end
  return (gf.config({ providers = { github = { base_url = emu.url, tokens = toks } },
    http = { max_connections = 64, per_token_concurrency = 8 },
    retry = { base_delay = 0.05, max_delay = 2, reset_margin = 0.25 } }, dir))
end

local function fetch(cfg, owners, extra)
  local args = { "--config", cfg, "-q", "fetch" }
  for _, o in ipairs(owners) do args[#args + 1] = o.name end
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return gf.run(args, { timeout = 300 })
end

describe("account lookups", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("spend nothing for a provider with one token", function()
    local emu = start({ { name = "solo", kind = "org", repos = 5 } })
    local cfg = config(emu, 1)
    local r = fetch(cfg, { { name = "solo" } })
    assert.are.equal(0, r.code, r.stderr)
    local s = emu:stats()
    assert.are.equal(1, s.requests, cjson.encode(s.by_path_kind))
  end)

  it("are remembered per credential, so the quota-bound job re-run spends exactly its 120 pages", function()
    local emu = start(OWNERS, { github = { limit = 20, window = 3 } })
    local cfg = config(emu, 3)
    local first = fetch(cfg, OWNERS)
    assert.are.equal(0, first.code, first.stderr)
    local s1 = emu:stats()
    assert.are.equal(3, s1.by_path_kind.auth_user, cjson.encode(s1.by_path_kind))
    emu:reset()
    local second = fetch(cfg, OWNERS)
    assert.are.equal(0, second.code, second.stderr)
    local s2 = emu:stats()
    assert.is_nil(s2.by_path_kind.auth_user, cjson.encode(s2.by_path_kind))
    assert.are.equal(120, s2.requests, cjson.encode(s2.by_status))
    assert.are.equal(0, s2.primary_limited)
    -- the cache holds the credential's salted hash, never the token
    local db = gf.slurp(cfg:gsub("gitfleet%.yaml$", "cache.sqlite"))
    for _, t in ipairs(TOKENS) do assert.is_nil(db:find(t.token, 1, true)) end
    assert.is_truthy(db:find("account-of", 1, true))
  end)

  it("are not remembered from a run without the cache", function()
    local emu = start({ { name = "small", kind = "org", repos = 5 } })
    local cfg = config(emu, 2)
    assert.are.equal(0, fetch(cfg, { { name = "small" } }, { "--no-cache" }).code)
    emu:reset()
    assert.are.equal(0, fetch(cfg, { { name = "small" } }, { "--no-cache" }).code)
    assert.are.equal(2, emu:stats().by_path_kind.auth_user)
  end)

  it("with 10,000 tokens do not hold the run: four at a time in the background, the rest left to later runs", function()
    local toks, conf = {}, {}
    for i = 1, 10000 do
      toks[i] = { token = ("ghp_MANY%032d"):format(i), provider = "github", account = "acct-" .. (i % 7) }
      conf[i] = { label = "t" .. i, token = toks[i].token }
    end
    local emu = emulator.start({ scenario = { owners = { { name = "small", kind = "org", repos = 5 } },
      tokens = toks } })
    local cfg = gf.config({ providers = { github = { base_url = emu.url, tokens = conf } } })
    for run = 1, 2 do
      local r = fetch(cfg, { { name = "small" } }, { "--format", "ndjson" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(5, select(2, r.stdout:gsub("\n", "")))
      -- the run's own page, and the lookups made four at a time while it
      -- went on (those in flight at its end answered, and kept): a few,
      -- not 10,000
      local s = emu:stats()
      local asked = s.by_path_kind.auth_user or 0
      assert.is_true(asked >= 1 and asked <= 500, ("run %d: %s"):format(run, cjson.encode(s.by_path_kind)))
      assert.are.equal(0, s.by_status["401"] or 0)
      emu:reset()
    end
  end)
end)
