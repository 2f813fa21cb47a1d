-- The example scripts (scripts/*.lua) through the real binary, against the
-- emulator. Each script is run as a user would: `gitfleet --config FILE run
-- scripts/NAME.lua ARGS...`.
--
--   GITFLEET_BIN=$PWD/gitfleet lua5.4 /usr/bin/busted spec/scripts_spec.lua

local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")

local ROOT = gf.capture("pwd")

-- Runs scripts/NAME.lua with args (a list); returns {code, stdout, stderr}.
local function run_script(config, name, args)
  local full = { "--config", config, "run", ROOT .. "/scripts/" .. name .. ".lua" }
  for _, a in ipairs(args or {}) do full[#full + 1] = a end
  return gf.run(full, { env = { GITFLEET_PROVIDERS = ROOT .. "/providers" } })
end

local function lines(text)
  local out = {}
  for line in text:gmatch("[^\r\n]+") do out[#out + 1] = line end -- CSV lines end in CRLF
  return out
end

local TOKENS = {
  { provider = "github", token = "gh-tok-1", account = "alice" },
  { provider = "github", token = "gh-tok-2", account = "bob" },
  { provider = "gitlab", token = "gl-tok-1", account = "alice" },
  { provider = "bitbucket", token = "bb-tok-1", account = "alice" },
  { provider = "gitea", token = "gt-tok-1", account = "alice" },
}

local function config_text(url, github_tokens)
  return ([[
providers:
  github:
    base_url: "%s"
    tokens:
%s
  gitlab:
    base_url: "%s/api/v4"
    tokens: [ { label: gl-1, token: gl-tok-1 } ]
  bitbucket:
    base_url: "%s/2.0"
    tokens: [ { label: bb-1, token: bb-tok-1 } ]
  gitea:
    base_url: "%s/api/v1"
    tokens: [ { label: gt-1, token: gt-tok-1 } ]
retry: { max_attempts: 8, base_delay: 0.01, max_delay: 0.05, secondary_wait: 1, max_wait: 30 }
cache: { enabled: false }
]]):format(url, github_tokens or "      - { label: gh-1, token: gh-tok-1 }\n      - { label: gh-2, token: gh-tok-2 }",
    url, url, url)
end

describe("example scripts", function()
  local emu, dir, config, world

  setup(function()
    emu = emulator.start({ scenario = {
      tokens = TOKENS,
      -- A small GitLab budget, so that the report has a token to flag.
      limits = { gitlab = { limit = 100, window = 3600 } },
    } })
    dir = gf.tmpdir()
    config = gf.write(dir .. "/gitfleet.yaml", config_text(emu.url))
    world = emu:world().owners
  end)

  teardown(function()
    if emu then emu:stop() end
    gf.cleanup()
  end)

  before_each(function()
    emu:reset(true)
  end)

  describe("fetch-with-fallback.lua", function()
    it("falls back to the next provider for an owner the first one lacks", function()
      -- acme/tools is a GitLab subgroup: GitHub answers 404 for it.
      local r = run_script(config, "fetch-with-fallback", { "--providers", "github,gitlab", "acme/tools", "umbrella" })
      assert.equal(0, r.code, r.stderr)
      local by_provider, n = {}, 0
      for _, rec in ipairs(gf.ndjson(r.stdout)) do
        by_provider[rec.provider] = (by_provider[rec.provider] or 0) + 1
        n = n + 1
      end
      assert.equal(world.acme.subgroup_repos + world.umbrella.repos, n)
      assert.same({ gitlab = world.acme.subgroup_repos, github = world.umbrella.repos }, by_provider)
      assert.truthy(r.stderr:find("acme/tools: found on gitlab", 1, true), r.stderr)
    end)

    it("exits 1 and says so when an owner fails everywhere, delivering the rest", function()
      local r = run_script(config, "fetch-with-fallback", { "--providers", "gitea,bitbucket", "nobody-here", "alice" })
      assert.equal(1, r.code)
      assert.equal(world.alice.repos, #lines(r.stdout))
      assert.truthy(r.stderr:find("nobody-here: failed on every provider", 1, true), r.stderr)
      assert.truthy(r.stderr:find("not_found", 1, true))
    end)

    it("needs no token handling of its own: a refused token and server faults are the host's", function()
      local cfg = dir .. "/flaky.yaml"
      gf.write(cfg, config_text(emu.url,
        "      - { label: gh-revoked, token: revoked }\n      - { label: gh-1, token: gh-tok-1 }\n" ..
        "      - { label: gh-2, token: gh-tok-2 }"))
      emu:configure({ faults = { rate = 0.3, kinds = { "5xx" }, seed = 11 } })
      local r = run_script(cfg, "fetch-with-fallback", { "--providers", "github", "globex", "acme" })
      assert.equal(0, r.code, r.stderr)
      assert.equal(world.globex.repos + world.acme.repos, #lines(r.stdout))
      local stats = emu:stats()
      assert.truthy((stats.faults["5xx"] or 0) > 0)   -- faults happened, and were retried
      assert.truthy(stats.unauthorized >= 1)          -- the revoked token was tried, then dropped
    end)

    it("refuses an unknown provider name with exit 2", function()
      local r = run_script(config, "fetch-with-fallback", { "--providers", "nosuchforge", "acme" })
      assert.equal(2, r.code)
      assert.truthy(r.stderr:find("nosuchforge", 1, true))
    end)
  end)

  describe("rate-limit-report.lua", function()
    it("shows every token per provider and flags the ones under 10 %", function()
      -- Spend 95 of the GitLab token's 100 requests.
      for _ = 1, 95 do
        local status = emu:request("/api/v4/user", { headers = { Authorization = "Bearer gl-tok-1" } })
        assert.equal(200, status)
      end
      local r = run_script(config, "rate-limit-report")
      assert.equal(0, r.code, r.stderr)
      local rows = {}
      for _, line in ipairs(lines(r.stdout)) do
        local provider, token = line:match("^(%S+)%s+(%S+)")
        if provider and provider ~= "PROVIDER" then rows[provider .. " " .. token] = line end
      end
      for _, key in ipairs({ "github gh-1", "github gh-2", "gitlab gl-1", "bitbucket bb-1", "gitea gt-1" }) do
        assert.truthy(rows[key], key .. " missing from:\n" .. r.stdout)
      end
      assert.truthy(rows["gitlab gl-1"]:find("LOW", 1, true), rows["gitlab gl-1"])
      assert.truthy(rows["gitlab gl-1"]:find("100", 1, true))
      assert.falsy(rows["github gh-1"]:find("LOW", 1, true))
      -- Two accounts on GitHub: each row names its own.
      assert.truthy(rows["github gh-1"]:find("alice", 1, true))
      assert.truthy(rows["github gh-2"]:find("bob", 1, true))
      assert.truthy(r.stdout:find("1 token budget(s) under 10%", 1, true), r.stdout)
    end)

    it("--no-probe spends no request on providers without a rate-limit endpoint", function()
      local r = run_script(config, "rate-limit-report", { "--no-probe" })
      assert.equal(0, r.code, r.stderr)
      local by = emu:stats().by_provider
      assert.is_nil(by.gitlab)
      assert.is_nil(by.bitbucket)
      assert.is_nil(by.gitea)
      assert.truthy(r.stdout:find("gitlab", 1, true))
    end)
  end)

  describe("org-inventory.lua", function()
    it("writes an organisation's repositories to CSV", function()
      local out = dir .. "/acme.csv"
      local r = run_script(config, "org-inventory", { "acme", out, "--provider", "github" })
      assert.equal(0, r.code, r.stderr)
      local rows = lines(gf.slurp(out))
      assert.equal("name,language,stargazers_count,archived,pushed_at", rows[1])
      assert.equal(world.acme.repos + 1, #rows)
      local archived, last_stars = 0, math.huge
      for i = 2, #rows do
        local name, language, stars, arch, pushed = rows[i]:match("^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$")
        assert.truthy(name, rows[i])
        assert.truthy(arch == "true" or arch == "false")
        assert.truthy(pushed:match("^%d%d%d%d%-%d%d%-%d%dT"), pushed)
        assert.truthy(tonumber(stars) <= last_stars) -- most starred first
        last_stars = tonumber(stars)
        if arch == "true" then archived = archived + 1 end
        local _ = language
      end
      assert.equal(world.acme.archived, archived)
    end)

    it("writes to stdout without OUTPUT, with empty cells for what a provider lacks", function()
      local r = run_script(config, "org-inventory", { "umbrella", "--provider", "bitbucket" })
      assert.equal(0, r.code, r.stderr)
      local rows = lines(r.stdout)
      assert.equal("name,language,stargazers_count,archived,pushed_at", rows[1])
      assert.equal(world.umbrella.repos + 1, #rows)
      for i = 2, #rows do
        assert.truthy(rows[i]:match(",,,$"), rows[i]) -- no stars, archiving or push time on Bitbucket
      end
    end)

    it("exits 1 for an unknown organisation", function()
      local r = run_script(config, "org-inventory", { "no-such-org", dir .. "/none.csv" })
      assert.equal(1, r.code)
      assert.truthy(r.stderr:find("no-such-org", 1, true))
    end)
  end)

  describe("same-owner-everywhere.lua", function()
    it("puts one owner's counts and fields side by side", function()
      local r = run_script(config, "same-owner-everywhere", { "acme" })
      assert.equal(0, r.code, r.stderr)
      local out = r.stdout
      for _, p in ipairs({ "github", "bitbucket", "gitea" }) do
        assert.truthy(out:find(("\n%s%%s+%d%%s"):format(p, world.acme.repos)), p .. ":\n" .. out)
      end
      assert.truthy(out:find(("\ngitlab%%s+%d%%s"):format(world.acme.repos + world.acme.subgroup_repos)), out)
      -- Field coverage: pushed_at only on GitHub; stars not on Bitbucket.
      local pushed = out:match("\n(pushed_at[^\n]*)")
      assert.truthy(pushed:match("^pushed_at%s+100%%%s+0%%%s+0%%%s+0%%$"), pushed)
      local stars = out:match("\n(stargazers_count[^\n]*)")
      assert.truthy(stars:match("^stargazers_count%s+100%%%s+100%%%s+0%%%s+100%%$"), stars)
      -- Agreement: no field differs between providers.
      for _, f in ipairs({ "name", "description", "language", "default_branch", "archived", "fork" }) do
        local agree, differ = out:match("\n" .. f .. "%s+(%d+)%s+(%d+)%s+%d+")
        assert.truthy(agree, f .. ":\n" .. out)
        assert.equal("0", differ, f)
      end
      local agree_names = out:match("\nname%s+(%d+)%s+%d+%s+%d+")
      assert.equal(("%d"):format(3 * world.acme.repos), agree_names)
    end)

    it("exits 2 without an owner", function()
      local r = run_script(config, "same-owner-everywhere", {})
      assert.equal(2, r.code)
      assert.truthy(r.stderr:find("usage", 1, true))
    end)
  end)
end)
