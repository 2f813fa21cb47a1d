-- The provider plugins (providers/*.lua) through the real binary, against
-- the emulator (spec/support/emulator.py), which serves the same world of
-- owners as GitHub, GitLab, Bitbucket Cloud and Gitea.
--
-- Each test writes a small Lua script, runs `gitfleet --config FILE run
-- SCRIPT`, and reads what the script printed (one JSON document on stdout).
--
-- GITFLEET_BIN is the binary (default ./gitfleet); providers are taken from
-- ./providers (GITFLEET_PROVIDERS), so a binary built elsewhere works too.
-- Run from the repository's root:
--   GITFLEET_BIN=$PWD/gitfleet lua5.4 /usr/bin/busted spec/providers_spec.lua

local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local ROOT = gf.capture("pwd")
local PROVIDERS_DIR = ROOT .. "/providers"
local RUN = { env = { GITFLEET_PROVIDERS = PROVIDERS_DIR } }

-- Runs the binary with args (a list); returns {code, stdout, stderr}.
local function gitfleet(args)
  return gf.run(args, RUN)
end

-- Runs a Lua script (source text) with the configuration; the script's last
-- stdout line is decoded as JSON into r.json.
local function run(config, source)
  local r = gf.run_script(source, config, RUN)
  local last = r.stdout:match("([^\n]*)\n?$")
  if last and last ~= "" then
    local ok, data = pcall(cjson.decode, last)
    if ok then r.json = data end
  end
  return r
end

-- A script that prints fleet.json.encode(BODY's result).
local function script(body)
  return "local function main(...)\n" .. body .. "\nend\nprint(fleet.json.encode(main(...)))\n"
end

local function ok_run(config, body)
  local r = run(config, script(body))
  assert(r.code == 0 and r.json ~= nil,
    ("script failed (exit %s)\nstdout:\n%s\nstderr:\n%s"):format(tostring(r.code), r.stdout, r.stderr))
  return r.json
end

local PROVIDERS = { "github", "gitlab", "bitbucket", "gitea" }

local TOKENS = {
  { provider = "github", token = "gh-tok-1", account = "alice" },
  { provider = "github", token = "gh-tok-2", account = "alice" },
  { provider = "gitlab", token = "gl-tok-1", account = "alice" },
  { provider = "bitbucket", token = "bb-tok-1", account = "alice" },
  { provider = "bitbucket", username = "alice", password = "bb-app-password" },
  { provider = "gitea", token = "gt-tok-1", account = "alice" },
}

local function config_text(url, extra)
  extra = extra or {}
  return ([[
providers:
  github:
    base_url: "%s"
    tokens:
      - { label: gh-1, token: gh-tok-1 }
      - { label: gh-2, token: gh-tok-2 }
%s
  gitlab:
    base_url: "%s/api/v4"
    tokens:
      - { label: gl-1, token: gl-tok-1 }
%s
  bitbucket:
    base_url: "%s/2.0"
    tokens:
      - { label: bb-1, token: bb-tok-1 }
      - { label: bb-app, username: alice, token: bb-app-password }
%s
  gitea:
    base_url: "%s/api/v1"
    tokens:
      - { label: gt-1, token: gt-tok-1 }
%s
retry: { max_attempts: 6, base_delay: 0.01, max_delay: 0.05, secondary_wait: 1, max_wait: 30 }
cache: { enabled: false }
%s
]]):format(url, extra.github or "", url, extra.gitlab or "", url, extra.bitbucket or "", url, extra.gitea or "",
    extra.tail or "")
end

describe("provider plugins", function()
  local emu, dir, config, world

  setup(function()
    emu = emulator.start({ scenario = { tokens = TOKENS } })
    dir = gf.tmpdir()
    config = gf.write(dir .. "/gitfleet.yaml", config_text(emu.url))
    world = emu:world().owners
  end)

  teardown(function()
    if emu then emu:stop() end
    gf.cleanup()
  end)

  -- What each provider lists for the user alice (the tokens' own account)
  -- and the organisation acme.
  local function expected_user(p)
    -- GitHub's /users/{u}/repos lists public repositories only, even to
    -- their owner; the others show the owner its private ones too.
    return p == "github" and world.alice.public or world.alice.repos
  end
  local function expected_org(p)
    -- GitLab includes the subgroups' projects.
    return p == "gitlab" and world.acme.repos + world.acme.subgroup_repos or world.acme.repos
  end

  for _, p in ipairs(PROVIDERS) do
    describe(p, function()
      it("fetch_repositories lists a user's repositories", function()
        local r = ok_run(config, ([[
          local recs, err = fleet.fetch_repositories("alice", { provider = %q })
          assert(recs, tostring(err))
          local owners = {}
          for _, rec in ipairs(recs) do owners[rec.owner] = true; assert(rec.provider == %q) end
          return { n = #recs, owners = owners }
        ]]):format(p, p))
        assert.equal(expected_user(p), r.n)
        assert.same({ alice = true }, r.owners)
      end)

      it("fetch_repositories lists an organisation's (group's, workspace's) repositories", function()
        local r = ok_run(config, ([[
          local recs, err = fleet.fetch_repositories("acme", { provider = %q })
          assert(recs, tostring(err))
          local owners, ids = {}, {}
          for _, rec in ipairs(recs) do
            owners[rec.owner] = (owners[rec.owner] or 0) + 1
            assert(not ids[tostring(rec.id)], "duplicate id " .. tostring(rec.id))
            ids[tostring(rec.id)] = true
          end
          return { n = #recs, owners = owners }
        ]]):format(p))
        assert.equal(expected_org(p), r.n)
        if p == "gitlab" then
          assert.same({ acme = world.acme.repos, ["acme/tools"] = world.acme.subgroups.tools,
            ["acme/tools/cli"] = world.acme.subgroups["tools/cli"] }, r.owners)
        else
          assert.same({ acme = world.acme.repos }, r.owners)
        end
      end)

      it("fetch_repositories of an unknown owner is nil, err with kind not_found", function()
        local r = ok_run(config, ([[
          local recs, err = fleet.fetch_repositories("no-such-owner", { provider = %q })
          return { recs = recs ~= nil, kind = err.kind, status = err.status, provider = err.provider,
            owner = err.owner, text = tostring(err) }
        ]]):format(p))
        assert.is_false(r.recs)
        assert.equal("not_found", r.kind)
        assert.equal(404, r.status)
        assert.equal(p, r.provider)
        assert.equal("no-such-owner", r.owner)
        assert.truthy(r.text:find("404", 1, true))
      end)

      it("each_repository walks every page of a large owner", function()
        local r = ok_run(config, ([[
          local n, names = 0, {}
          local it, err = fleet.each_repository("globex", { provider = %q })
          assert(it, tostring(err))
          for rec in it do
            n = n + 1
            assert(not names[rec.name], "twice: " .. rec.name)
            names[rec.name] = true
          end
          local all = fleet.fetch_repositories("globex", { provider = %q })
          return { n = n, fetched = #all }
        ]]):format(p, p))
        assert.equal(world.globex.repos, r.n)
        assert.equal(r.n, r.fetched)
      end)

      it("opts.type filters forks and sources", function()
        local r = ok_run(config, ([[
          local out = {}
          for _, t in ipairs({ "forks", "sources", "public", "private" }) do
            local recs, err = fleet.fetch_repositories("acme", { provider = %q, type = t })
            assert(recs, tostring(err))
            local bad = 0
            for _, rec in ipairs(recs) do
              if (t == "forks" and rec.fork ~= true) or (t == "sources" and rec.fork ~= false)
                or (t == "public" and rec.private ~= false) or (t == "private" and rec.private ~= true) then
                bad = bad + 1
              end
            end
            out[t] = { n = #recs, bad = bad }
          end
          return out
        ]]):format(p))
        for _, t in ipairs({ "forks", "sources", "public", "private" }) do
          assert.equal(0, r[t].bad, t)
        end
        assert.equal(expected_org(p), r.forks.n + r.sources.n)
        assert.equal(expected_org(p), r.public.n + r.private.n)
        if p ~= "gitlab" then
          assert.equal(world.acme.forks, r.forks.n)
          assert.equal(world.acme.private, r.private.n)
        end
      end)

      it("fetch_user_info is the token's account", function()
        local r = ok_run(config, ([[
          local u, err = fleet.fetch_user_info(%q)
          assert(u, tostring(err))
          return u
        ]]):format(p))
        assert.equal("alice", r.login)
        assert.equal(p, r.provider)
        assert.truthy(r.id)
        assert.equal("User", r.type)
        for k in pairs(r) do
          assert.truthy(({ provider = 1, login = 1, id = 1, name = 1, email = 1, html_url = 1, type = 1,
            created_at = 1 })[k], "unexpected user field " .. k)
        end
      end)

      it("validate_credentials checks every token", function()
        -- (The list carries an `n` field from fleet.map: copied to a plain array
        -- so that it encodes as a JSON array.)
        local r = ok_run(config, ([[
          local rows = fleet.validate_credentials(%q)
          return { table.unpack(rows, 1, #rows) }
        ]]):format(p))
        assert.equal(({ github = 2, gitlab = 1, bitbucket = 2, gitea = 1 })[p], #r)
        for _, row in ipairs(r) do
          assert.is_true(row.valid, row.token)
          assert.equal("alice", row.account)
          assert.equal(p, row.provider)
        end
      end)

      it("fetch_repository_details returns one record with the listing's fields", function()
        local r = ok_run(config, ([[
          local list = assert(fleet.fetch_repositories("acme", { provider = %q }))
          local pick
          for _, rec in ipairs(list) do
            if rec.owner == "acme" and rec.default_branch then pick = rec break end
          end
          local d, err = fleet.fetch_repository_details(pick.owner, pick.name, { provider = %q, raw = true })
          assert(d, tostring(err))
          local missing, derr = fleet.fetch_repository_details("acme", "no-such-repo", { provider = %q })
          return { listed = pick, details = { name = d.name, full_name = d.full_name, id = d.id, owner = d.owner,
            provider = d.provider, fork = d.fork, private = d.private, default_branch = d.default_branch,
            language = d.language, has_raw = type(d.raw) == "table" }, missing = missing ~= nil,
            kind = derr and derr.kind }
        ]]):format(p, p, p))
        local l, d = r.listed, r.details
        for _, f in ipairs({ "name", "full_name", "id", "owner", "fork", "private", "default_branch" }) do
          assert.same(l[f], d[f], f)
        end
        if p ~= "gitlab" then assert.same(l.language, d.language) end
        assert.equal(p, d.provider)
        assert.is_true(d.has_raw)
        assert.is_false(r.missing)
        assert.equal("not_found", r.kind)
      end)

      it("rate_limit reports each token of the provider", function()
        local r = ok_run(config, ([[
          assert(fleet.fetch_repositories("umbrella", { provider = %q }))
          assert(fleet.validate_credentials(%q))
          return fleet.rate_limit(%q)
        ]]):format(p, p, p))
        local by_token = {}
        for _, row in ipairs(r) do
          assert.equal(p, row.provider)
          if not row.resource or row.resource == "core" or row.resource == "api" then
            by_token[row.token] = row
          end
        end
        if p == "github" then
          assert.equal(5000, by_token["gh-1"].limit)
          assert.truthy(by_token["gh-1"].remaining < 5000)
          assert.truthy(by_token["gh-1"].reset)
        elseif p == "gitlab" then
          local row = by_token["gl-1"]
          assert.equal(2000, row.limit)
          assert.truthy(row.remaining <= 2000 - 2)
          assert.truthy(row.reset > os.time() - 5)
        elseif p == "bitbucket" then
          -- Bitbucket sends X-RateLimit-Limit to access tokens only, and never
          -- a remaining count or a reset.
          assert.equal(1000, by_token["bb-1"].limit)
          assert.is_nil(by_token["bb-1"].remaining)
          assert.is_nil(by_token["bb-1"].reset)
          assert.truthy(by_token["bb-app"])
          assert.is_nil(by_token["bb-app"].limit)
        else
          -- Gitea has no rate limit: rows without figures.
          assert.truthy(by_token["gt-1"])
          assert.is_nil(by_token["gt-1"].limit)
          assert.is_nil(by_token["gt-1"].remaining)
        end
        for _, row in pairs(by_token) do assert.equal("ok", row.state) end
      end)

      it("fleet.request and fleet.paginate reach any endpoint", function()
        local list_path = ({ github = "/orgs/acme/repos", gitlab = "/groups/acme/projects",
          bitbucket = "/repositories/acme", gitea = "/orgs/acme/repos" })[p]
        local small = ({ github = "per_page", gitlab = "per_page", bitbucket = "pagelen", gitea = "limit" })[p]
        local r = ok_run(config, ([[
          local resp, err = fleet.request("GET", "/user", { provider = %q })
          assert(resp, tostring(err))
          local items, perr = fleet.paginate(%q, { provider = %q, query = { [%q] = 10 } })
          assert(items, tostring(perr))
          local miss, merr = fleet.request("GET", "/no/such/endpoint", { provider = %q })
          return { status = resp.status, data = resp.data, n = #items, first = items[1] and items[1].name,
            miss = miss ~= nil, kind = merr.kind }
        ]]):format(p, list_path, p, small, p))
        assert.equal(200, r.status)
        assert.truthy(r.data.login == "alice" or r.data.username == "alice")
        assert.equal(world.acme.repos, r.n)
        assert.truthy(r.first)
        assert.is_false(r.miss)
        assert.equal("not_found", r.kind)
      end)
    end)
  end

  describe("GitLab", function()
    it("fetches a subgroup given by its full path (one URL-encoded segment)", function()
      local r = ok_run(config, [[
        local recs, err = fleet.fetch_repositories("acme/tools", { provider = "gitlab" })
        assert(recs, tostring(err))
        local owners = {}
        for _, rec in ipairs(recs) do owners[rec.owner] = true end
        local cli = assert(fleet.fetch_repositories("acme/tools/cli", { provider = "gitlab" }))
        local b, berr = fleet.fetch_branches(cli[1].owner, cli[1].name, { provider = "gitlab" })
        assert(b, tostring(berr))
        return { n = #recs, owners = owners, cli = #cli, full_name = cli[1].full_name }
      ]])
      assert.equal(world.acme.subgroups.tools + world.acme.subgroups["tools/cli"], r.n)
      assert.same({ ["acme/tools"] = true, ["acme/tools/cli"] = true }, r.owners)
      assert.equal(world.acme.subgroups["tools/cli"], r.cli)
      assert.truthy(r.full_name:find("^acme/tools/cli/"))
    end)

    it("asks for the group first and the user only after a 404", function()
      emu:reset()
      ok_run(config, [[ return #assert(fleet.fetch_repositories("umbrella", { provider = "gitlab" })) ]])
      local after_group = emu:stats().by_provider.gitlab
      emu:reset()
      ok_run(config, [[ return #assert(fleet.fetch_repositories("alice", { provider = "gitlab" })) ]])
      local after_user = emu:stats().by_provider.gitlab
      assert.equal(1, after_group)
      assert.equal(2, after_user)
    end)

    it("fills language in details from the project's languages", function()
      local r = ok_run(config, [[
        local gh = assert(fleet.fetch_repositories("acme", { provider = "github" }))
        local out = {}
        for i = 1, 8 do
          local d = assert(fleet.fetch_repository_details("acme", gh[i].name, { provider = "gitlab" }))
          out[i] = { gh = gh[i].language or false, gl = d.language or false }
        end
        return out
      ]])
      local known = 0
      for _, pair in ipairs(r) do
        assert.equal(pair.gh, pair.gl)
        if pair.gl then known = known + 1 end
      end
      assert.truthy(known > 0)
    end)

    it("refuses an opts.type it does not know, naming the valid ones", function()
      local r = run(config, [[ fleet.fetch_repositories("acme", { provider = "gitlab", type = "bogus" }) ]])
      assert.equal(1, r.code)
      assert.truthy(r.stderr:find("unknown repository type 'bogus'", 1, true))
      assert.truthy(r.stderr:find("forks", 1, true))
    end)
  end)

  it("fetch -p P reads the owners given without PROVIDER: on P; PROVIDER: still picks its own", function()
    -- -p was read for checks and duplicates only: the owners went to the
    -- default provider (github here).
    local r = gitfleet({ "--config", config, "fetch", "-p", "gitlab", "acme", "bitbucket:acme" })
    assert.equal(0, r.code, r.stderr)
    local by = {}
    for line in r.stdout:gmatch("[^\n]+") do
      local rec = cjson.decode(line)
      by[rec.provider] = (by[rec.provider] or 0) + 1
    end
    assert.same({ gitlab = expected_org("gitlab"), bitbucket = expected_org("bitbucket") }, by)
  end)

  describe("contributors", function()
    it("agree between GitHub and GitLab (all pages)", function()
      local r = ok_run(config, [[
        local gh = assert(fleet.fetch_repositories("globex", { provider = "github" }))
        -- The repository with the most contributors among the first 40.
        local counts = fleet.map({ table.unpack(gh, 1, 40) }, function(rec)
          local list = fleet.fetch_contributors("globex", rec.name, { provider = "github" })
          return list and #list or 0
        end)
        local best = 1
        for i = 1, #counts do if counts[i] > counts[best] then best = i end end
        local name = gh[best].name
        local a = assert(fleet.fetch_contributors("globex", name, { provider = "github" }))
        local b = assert(fleet.fetch_contributors("globex", name, { provider = "gitlab" }))
        local sa, sb = 0, 0
        for _, c in ipairs(a) do sa = sa + c.contributions end
        for _, c in ipairs(b) do sb = sb + c.contributions; assert(c.provider == "gitlab" and c.name) end
        return { github = #a, gitlab = #b, sa = sa, sb = sb, login = a[1].login }
      ]])
      assert.truthy(r.github > 0)
      assert.equal(r.github, r.gitlab)
      assert.equal(r.sa, r.sb)
      assert.truthy(r.login)
    end)

    it("are not supported on Bitbucket and Gitea: nil, err saying so", function()
      local r = ok_run(config, [[
        local out = {}
        for _, p in ipairs({ "bitbucket", "gitea" }) do
          local list, err = fleet.fetch_contributors("acme", "anything", { provider = p })
          out[p] = { list = list ~= nil, message = tostring(err), provider = err.provider }
        end
        return out
      ]])
      for _, p in ipairs({ "bitbucket", "gitea" }) do
        assert.is_false(r[p].list)
        assert.equal(p, r[p].provider)
        assert.truthy(r[p].message:find("does not support contributors", 1, true), r[p].message)
      end
    end)
  end)

  describe("branches", function()
    local big -- a globex repository with more branches than one page holds

    setup(function()
      big = ok_run(config, [[
        local gh = assert(fleet.fetch_repositories("globex", { provider = "github" }))
        local counts = fleet.map(gh, function(rec)
          local list = fleet.fetch_branches("globex", rec.name, { provider = "github" })
          return list and #list or 0
        end)
        local best = 1
        for i = 1, #counts do if counts[i] > counts[best] then best = i end end
        return { name = gh[best].name, n = counts[best] }
      ]])
    end)

    it("the world has a repository with several pages of branches", function()
      assert.truthy(big.n > 100, "largest: " .. tostring(big.n))
    end)

    for _, p in ipairs(PROVIDERS) do
      it(p .. " fetches every page, the same branches as GitHub", function()
        local per_page = p == "gitea" and 50 or 100
        local before = emu:stats().by_path_kind.branches or 0
        local r = ok_run(config, ([[
          local repo = %q
          if %q == "bitbucket" then repo = repo:lower() end -- Bitbucket slugs are lower case
          local list, err = fleet.fetch_branches("globex", repo, { provider = %q })
          assert(list, tostring(err))
          local gh = assert(fleet.fetch_branches("globex", %q, { provider = "github" }))
          local names, shas = {}, {}
          for _, b in ipairs(gh) do names[b.name] = b.commit_sha end
          local same, protected = 0, 0
          for _, b in ipairs(list) do
            if names[b.name] == b.commit_sha then same = same + 1 end
            if b.protected then protected = protected + 1 end
            assert(b.provider == %q)
          end
          return { n = #list, same = same, protected = protected }
        ]]):format(big.name, p, p, big.name, p))
        local pages = (emu:stats().by_path_kind.branches or 0) - before
        assert.equal(big.n, r.n)
        assert.equal(big.n, r.same)
        assert.truthy(pages >= math.ceil(big.n / per_page) + math.ceil(big.n / 100),
          ("%d requests for %d branches"):format(pages, big.n))
        if p == "bitbucket" then
          assert.equal(0, r.protected) -- protection is not part of a Bitbucket branch: nil
        else
          assert.equal(1, r.protected) -- the default branch
        end
      end)
    end
  end)

  describe("records", function()
    local recs -- provider -> array of records for acme (its own repositories), decoded from NDJSON

    setup(function()
      recs = {}
      for _, p in ipairs(PROVIDERS) do
        local file = dir .. "/acme-" .. p .. ".ndjson"
        ok_run(config, ([[
          local list = assert(fleet.fetch_repositories("acme", { provider = %q }))
          local own = {}
          for _, r in ipairs(list) do if r.owner == "acme" then own[#own + 1] = r end end
          -- Only the fields of DESIGN.md, nothing else.
          local allowed = {}
          for _, f in ipairs(fleet.records.repository_fields) do allowed[f] = true end
          for _, r in ipairs(own) do
            for k in pairs(r) do assert(allowed[k], "field not in the record shape: " .. k) end
          end
          assert(fleet.write(own, { format = "ndjson", output = %q }))
          return #own
        ]]):format(p, file))
        recs[p] = {}
        for line in io.lines(file) do recs[p][#recs[p] + 1] = cjson.decode(line) end
      end
    end)

    it("have identical field names on every provider", function()
      local function keys(rec)
        local out = {}
        for k in pairs(rec) do out[#out + 1] = k end
        table.sort(out)
        return table.concat(out, ",")
      end
      local reference = keys(recs.github[1])
      for _, p in ipairs(PROVIDERS) do
        assert.equal(world.acme.repos, #recs[p], p)
        for _, rec in ipairs(recs[p]) do assert.equal(reference, keys(rec), p) end
      end
    end)

    it("agree where the providers agree", function()
      local null = cjson.null
      local function val(x) if x == null then return nil end return x end
      local function index(list)
        local out = {}
        for _, r in ipairs(list) do out[r.name:lower()] = r end
        return out
      end
      local gh = index(recs.github)
      local checked = 0
      for _, p in ipairs({ "gitlab", "bitbucket", "gitea" }) do
        for key, r in pairs(index(recs[p])) do
          local g = assert(gh[key], p .. ": " .. key .. " is not on GitHub")
          local where = p .. " " .. key .. " "
          -- name: Bitbucket's is the lower-case slug.
          if p == "bitbucket" then
            assert.equal(val(g.name):lower(), val(r.name), where .. "name")
          else
            assert.equal(val(g.name), val(r.name), where .. "name")
          end
          -- description: Bitbucket and Gitea send "" where there is none.
          if p == "gitlab" then
            assert.equal(val(g.description), val(r.description), where .. "description")
          else
            assert.equal(val(g.description) or "", val(r.description), where .. "description")
          end
          -- language: none in GitLab lists; lower case on Bitbucket.
          if p == "gitlab" then
            assert.is_nil(val(r.language), where .. "language")
          elseif p == "bitbucket" then
            assert.equal(val(g.language) and val(g.language):lower(), val(r.language), where .. "language")
          else
            assert.equal(val(g.language), val(r.language), where .. "language")
          end
          -- default_branch: GitLab and Bitbucket have none for an empty repository.
          if val(r.default_branch) ~= nil or p == "gitea" then
            assert.equal(val(g.default_branch), val(r.default_branch), where .. "default_branch")
          end
          -- archived: Bitbucket Cloud cannot archive.
          if p == "bitbucket" then
            assert.is_nil(val(r.archived), where .. "archived")
          else
            assert.equal(val(g.archived), val(r.archived), where .. "archived")
          end
          assert.equal(val(g.fork), val(r.fork), where .. "fork")
          assert.equal(val(g.private), val(r.private), where .. "private")
          assert.equal(val(g.visibility), val(r.visibility), where .. "visibility")
          assert.equal("acme", val(r.owner), where .. "owner")
          assert.equal(p, val(r.provider))
          -- Counts where the provider has them; nil (never 0) where it has not.
          if p == "bitbucket" then
            assert.is_nil(val(r.stargazers_count))
            assert.is_nil(val(r.forks_count))
            assert.is_nil(val(r.topics))
          else
            assert.equal(val(g.stargazers_count), val(r.stargazers_count), where .. "stars")
            assert.equal(val(g.forks_count), val(r.forks_count), where .. "forks")
          end
          assert.is_nil(val(r.pushed_at), where .. "pushed_at") -- no push time outside GitHub
          assert.equal("string", type(val(r.created_at)), where .. "created_at")
          assert.equal("string", type(val(r.clone_url)), where .. "clone_url")
          assert.truthy(val(r.clone_url):match("^https?://[^@]+%.git$"), where .. "clone_url")
          assert.truthy(val(r.ssh_url):match("^git@"), where .. "ssh_url")
          checked = checked + 1
        end
      end
      assert.equal(3 * world.acme.repos, checked)
    end)
  end)

  describe("json.null", function()
    it("becomes nil in every field, nested objects included, on every provider", function()
      local r = ok_run(config, [[
        local nulls = {
          github = '{"id":null,"name":null,"full_name":null,"owner":null,"description":null,"html_url":null,'
            .. '"clone_url":null,"ssh_url":null,"default_branch":null,"language":null,"private":null,'
            .. '"visibility":null,"fork":null,"archived":null,"stargazers_count":null,"forks_count":null,'
            .. '"watchers_count":null,"open_issues_count":null,"topics":null,"created_at":null,'
            .. '"updated_at":null,"pushed_at":null}',
          gitlab = '{"id":null,"path":null,"name":null,"path_with_namespace":null,"namespace":null,'
            .. '"description":null,"web_url":null,"http_url_to_repo":null,"ssh_url_to_repo":null,'
            .. '"default_branch":null,"visibility":null,"archived":null,"forked_from_project":null,'
            .. '"star_count":null,"forks_count":null,"open_issues_count":null,"topics":null,"tag_list":null,'
            .. '"created_at":null,"updated_at":null,"_gitfleet_languages":null}',
          bitbucket = '{"uuid":null,"slug":null,"name":null,"full_name":null,"workspace":null,'
            .. '"description":null,"links":{"html":null,"clone":[null,{"name":null,"href":null}]},'
            .. '"mainbranch":null,"language":null,"is_private":null,"parent":null,"created_on":null,'
            .. '"updated_on":null}',
          gitea = '{"id":null,"name":null,"full_name":null,"owner":null,"description":null,"html_url":null,'
            .. '"clone_url":null,"ssh_url":null,"default_branch":null,"language":null,"private":null,'
            .. '"internal":null,"fork":null,"archived":null,"stars_count":null,"forks_count":null,'
            .. '"watchers_count":null,"open_issues_count":null,"topics":null,"created_at":null,'
            .. '"updated_at":null}',
        }
        local out = {}
        for p, text in pairs(nulls) do
          local api = fleet.provider(p)
          for _, detailed in ipairs({ false, true }) do
            local rec = api.plugin.normalize_repository(fleet.json.decode(text), api, detailed)
            local bad = {}
            for k, x in pairs(rec) do
              if x == fleet.null or type(x) == "userdata" then bad[#bad + 1] = k end
            end
            out[p] = out[p] or {}
            out[p][#out[p] + 1] = { bad = table.concat(bad, ","), n = #bad }
          end
        end
        return out
      ]])
      for _, p in ipairs(PROVIDERS) do
        for _, case in ipairs(r[p]) do assert.equal("", case.bad, p) end
      end
    end)
  end)

  describe("credentials", function()
    it("a refused token is disabled and the other tokens carry on", function()
      local cfg = dir .. "/bad-tokens.yaml"
      gf.write(cfg, config_text(emu.url, {
        github = "      - { label: gh-bad, token: not-a-token }",
        gitlab = "      - { label: gl-bad, token: not-a-token }",
        bitbucket = "      - { label: bb-bad, username: alice, token: wrong-password }",
        gitea = "      - { label: gt-bad, token: not-a-token }",
      }))
      local r = ok_run(cfg, [[
        local out = {}
        for _, p in ipairs({ "github", "gitlab", "bitbucket", "gitea" }) do
          local rows = fleet.validate_credentials(p)
          local bad
          for _, row in ipairs(rows) do if not row.valid then bad = row end end
          local recs, err = fleet.fetch_repositories("globex", { provider = p })
          out[p] = { bad = bad and bad.token, kind = bad and bad.kind, n = recs and #recs, err = tostring(err) }
        end
        return out
      ]])
      local bad = { github = "gh-bad", gitlab = "gl-bad", bitbucket = "bb-bad", gitea = "gt-bad" }
      for _, p in ipairs(PROVIDERS) do
        assert.equal(bad[p], r[p].bad, p)
        assert.equal("auth", r[p].kind, p)
        assert.equal(world.globex.repos, r[p].n, p .. ": " .. r[p].err)
      end
    end)

    it("tokens of one GitHub account share one budget in fleet.rate_limit()", function()
      local r = ok_run(config, [[
        -- Some requests, spread by the pool over both tokens.
        assert(fleet.fetch_repositories("globex", { provider = "github" }))
        assert(fleet.fetch_repositories("acme", { provider = "github" }))
        fleet.validate_credentials("github") -- learns each token's account
        local out = {}
        for _, row in ipairs(fleet.rate_limit("github")) do
          if row.resource == "core" then out[row.token] = row end
        end
        return out
      ]])
      local a, b = r["gh-1"], r["gh-2"]
      assert.equal("alice", a.account)
      assert.equal("alice", b.account)
      assert.equal(a.remaining, b.remaining)
      assert.equal(a.reset, b.reset)
      assert.truthy(a.remaining < 5000)
      local server = emu:stats().budgets["github:alice:core"]
      assert.equal(server.remaining, a.remaining)
    end)
  end)

  describe("plugins from plugins.paths", function()
    it("a copy of gitea.lua under a new name is a provider of its own", function()
      local pdir = dir .. "/myplugins"
      os.execute("mkdir -p " .. gf.quote(pdir))
      gf.write(pdir .. "/myforge.lua", gf.slurp(PROVIDERS_DIR .. "/gitea.lua"))
      local cfg = dir .. "/myforge.yaml"
      gf.write(cfg, ([[
providers:
  myforge:
    base_url: "%s/api/v1"
    tokens: [ { label: mf-1, token: gt-tok-1 } ]
plugins: { paths: [ "%s" ] }
cache: { enabled: false }
]]):format(emu.url, pdir))
      local list = gitfleet({ "--config", cfg, "providers" })
      assert.equal(0, list.code, list.stderr)
      local line = list.stdout:match("\n(myforge[^\n]*)")
      assert.truthy(line, list.stdout)
      assert.truthy(line:find(pdir .. "/myforge.lua", 1, true))
      assert.truthy(line:find(emu.url .. "/api/v1", 1, true))
      local r = ok_run(cfg, [[
        local recs, err = fleet.fetch_repositories("acme")
        assert(recs, tostring(err))
        return { n = #recs, provider = recs[1].provider, default = fleet.default_provider() }
      ]])
      assert.equal(world.acme.repos, r.n)
      assert.equal("myforge", r.provider)
      assert.equal("myforge", r.default)
    end)

    it("the example plugin of docs/providers.md works against the emulator", function()
      local doc = assert(gf.slurp(ROOT .. "/docs/providers.md"))
      local code = doc:match("<!%-%- example%-plugin: tinyforge%.lua %-%->%s*```lua\n(.-)```")
      assert.truthy(code, "no example plugin block in docs/providers.md")
      local pdir = dir .. "/doc-example"
      os.execute("mkdir -p " .. gf.quote(pdir))
      gf.write(pdir .. "/tinyforge.lua", code)
      local cfg = dir .. "/tinyforge.yaml"
      gf.write(cfg, ([[
plugins: { paths: [ "%s" ] }
providers:
  tinyforge: { base_url: "%s/api/v1", tokens: [ gt-tok-1 ] }
cache: { enabled: false }
]]):format(pdir, emu.url))
      local list = gitfleet({ "--config", cfg, "providers" })
      assert.equal(0, list.code, list.stderr)
      assert.truthy(list.stdout:find("\ntinyforge%s+Tinyforge"), list.stdout)
      local r = ok_run(cfg, [[
        local repos = assert(fleet.fetch_repositories("acme"))
        local users = assert(fleet.fetch_repositories("alice"))
        local d = assert(fleet.fetch_repository_details(repos[1].owner, repos[1].name))
        local b = assert(fleet.fetch_branches(repos[1].owner, repos[1].name))
        local c, cerr = fleet.fetch_contributors(repos[1].owner, repos[1].name)
        local ok = pcall(fleet.fetch_repositories, "acme", { type = "forks" })
        return { n = #repos, users = #users, details = d.full_name == repos[1].full_name, branches = #b,
          login = fleet.fetch_user_info().login, contributors = c ~= nil, cerr = tostring(cerr),
          bad_type_raises = not ok, provider = repos[1].provider }
      ]])
      assert.equal(world.acme.repos, r.n)
      assert.equal(world.alice.repos, r.users)
      assert.is_true(r.details)
      assert.truthy(r.branches > 0)
      assert.equal("alice", r.login)
      assert.is_false(r.contributors)
      assert.truthy(r.cerr:find("does not support contributors", 1, true))
      assert.is_true(r.bad_type_raises)
      assert.equal("tinyforge", r.provider)
    end)

    local function broken(name, text)
      local pdir = dir .. "/broken-" .. name
      os.execute("mkdir -p " .. gf.quote(pdir))
      gf.write(pdir .. "/" .. name .. ".lua", text)
      local cfg = pdir .. "/config.yaml"
      gf.write(cfg, ("plugins: { paths: [ %q ] }\ncache: { enabled: false }\n"):format(pdir))
      return gitfleet({ "--config", cfg, "providers" }), pdir .. "/" .. name .. ".lua"
    end

    local valid = [[
return {
  base_url = "https://forge.example/api",
  auth = { header = "Authorization", scheme = "Bearer" },
  pagination = { style = "link" },
  repositories = function(api, owner, opts) return api:pages("/users/" .. owner .. "/repos") end,
  normalize_repository = function(r) return { name = r.name } end,
}
]]

    it("a valid minimal plugin loads", function()
      local r = broken("minimal", valid)
      assert.equal(0, r.code, r.stderr)
      assert.truthy(r.stdout:find("minimal", 1, true))
    end)

    it("a syntax error is reported with the file, exit 2", function()
      local r, file = broken("syntax", "return { base_url = 'x' ,, }\n")
      assert.equal(2, r.code)
      assert.truthy(r.stderr:find(file, 1, true), r.stderr)
    end)

    -- A plugin `name` made of `source` fails to load, exit 2, naming its file and `field`.
    local function assert_names_field(name, source, field)
      local r, file = broken(name, source)
      assert.equal(2, r.code)
      assert.truthy(r.stderr:find(file, 1, true), r.stderr)
      assert.truthy(r.stderr:find("'" .. field .. "'", 1, true), r.stderr)
    end

    it("a missing required field is reported with the file and the field, exit 2", function()
      assert_names_field("nofunc", (valid:gsub("  repositories = [^\n]*\n", "")), "repositories")
      assert_names_field("noauth", (valid:gsub("  auth = [^\n]*\n", "")), "auth")
    end)

    it("a field of the wrong type or value is reported with the file and the field, exit 2", function()
      assert_names_field("badstyle", (valid:gsub('style = "link"', 'style = "cursor"')), "pagination.style")
      assert_names_field("badtype", (valid:gsub('base_url = "[^"]*"', "base_url = 42")), "base_url")
    end)

    it("a plugin cannot reach io or os.execute at its top level (the sandbox)", function()
      local r, file = broken("sandbox", "local f = io.open('/etc/passwd')\n" .. valid)
      assert.equal(2, r.code)
      assert.truthy(r.stderr:find(file, 1, true), r.stderr)
      local r2 = broken("sandbox2", "os.execute('true')\n" .. valid)
      assert.equal(2, r2.code)
    end)
  end)
end)

-- Each plugin's budget headers and limit statuses, against small budgets.
describe("provider plugins under rate limits", function()
  local emu, dir, config, world

  setup(function()
    emu = emulator.start({ scenario = {
      tokens = {
        { provider = "gitlab", token = "gl-tok-1", account = "alice" },
        { provider = "bitbucket", token = "bb-tok-1", account = "alice" },
        { provider = "gitea", token = "gt-tok-1", account = "alice" },
      },
      limits = {
        gitlab = { limit = 3, window = 2 },
        bitbucket = { limit = 3, window = 2 },
        gitea = { limit = 3, window = 2 },
      },
    } })
    dir = gf.tmpdir()
    config = dir .. "/limits.yaml"
    gf.write(config, ([[
providers:
  gitlab: { base_url: "%s/api/v4", tokens: [ { label: gl-1, token: gl-tok-1 } ] }
  bitbucket: { base_url: "%s/2.0", tokens: [ { label: bb-1, token: bb-tok-1 } ] }
  gitea: { base_url: "%s/api/v1", tokens: [ { label: gt-1, token: gt-tok-1 } ] }
retry: { base_delay: 0.01, max_delay: 0.05, secondary_wait: 1, reset_margin: 0.2, max_wait: 30 }
cache: { enabled: false }
]]):format(emu.url, emu.url, emu.url))
    world = emu:world().owners
  end)

  teardown(function()
    if emu then emu:stop() end
    gf.cleanup()
  end)

  before_each(function() emu:reset() end)

  local function fetch_many(p)
    return ok_run(config, ([[
      local events = {}
      for _, e in ipairs({ "rate_limited", "secondary_limit" }) do
        fleet.on(e, function(info) events[e] = (events[e] or 0) + 1 end)
      end
      local n = 0
      for _, owner in ipairs({ "globex", "acme", "umbrella" }) do
        local recs, err = fleet.fetch_repositories(owner, { provider = %q })
        assert(recs, tostring(err))
        n = n + #recs
      end
      fleet.sleep(0) -- let the hooks run
      return { n = n, events = events, stats = fleet.stats() }
    ]]):format(p))
  end

  it("GitLab: RateLimit-* headers let the host wait for the reset without being refused", function()
    local r = fetch_many("gitlab")
    assert.equal(world.globex.repos + world.acme.repos + world.acme.subgroup_repos + world.umbrella.repos, r.n)
    assert.truthy((r.events.rate_limited or 0) >= 1) -- it waited for a reset
    assert.equal(0, emu:stats().primary_limited)     -- and sent nothing that would be refused
  end)

  it("Bitbucket: a 429 without figures pauses the token, and the fetch completes", function()
    local r = fetch_many("bitbucket")
    assert.equal(world.globex.repos + world.acme.repos + world.umbrella.repos, r.n)
    assert.truthy(r.stats.secondary_limited >= 1)
    assert.truthy((r.events.secondary_limit or 0) >= 1)
    assert.truthy(emu:stats().requests < 20) -- paused, not hammering
  end)

  it("Gitea: a 429 with Retry-After pauses the token, and the fetch completes", function()
    local r = fetch_many("gitea")
    assert.equal(world.globex.repos + world.acme.repos + world.umbrella.repos, r.n)
    assert.truthy(r.stats.secondary_limited >= 1)
    assert.truthy(emu:stats().requests < 25) -- paused, not hammering
  end)
end)
