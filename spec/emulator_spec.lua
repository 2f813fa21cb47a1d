-- Specs for the provider emulator itself (spec/support/emulator.py).
-- Run from the repository root: busted spec/emulator_spec.lua

local emulator = require("spec.support.emulator")
local socket = require("socket")
local cjson = require("cjson")

local TOKENS = {
  { token = "ghp_ALICE", provider = "github", account = "alice" },       -- 0
  { token = "ghp_ALICE2", provider = "github", account = "alice" },      -- 1: same account as 0
  { token = "ghp_BOB", provider = "github", account = "bob" },           -- 2
  { token = "glpat-ALICE", provider = "gitlab", account = "alice" },     -- 3
  { token = "bbat-ALICE", provider = "bitbucket", account = "alice" },   -- 4
  { username = "alice", password = "app-pass", provider = "bitbucket", account = "alice" },  -- 5
  { token = "gitea-ALICE", provider = "gitea", account = "alice" },      -- 6
}
local GH = { authorization = "token ghp_ALICE" }
local GL = { ["private-token"] = "glpat-ALICE" }
local BB = { authorization = "Bearer bbat-ALICE" }
local GT = { authorization = "token gitea-ALICE" }

-- Helpers -------------------------------------------------------------------

local function decode(body) return cjson.decode(body) end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- rel -> URL, plus the rels in the order they appear.
local function links(header)
  local out, order = {}, {}
  for url, rel in (header or ""):gmatch('<([^>]*)>; rel="(%w+)"') do
    out[rel] = url
    order[#order + 1] = rel
  end
  return out, table.concat(order, ",")
end

-- A raw HTTP exchange on a fresh connection: returns everything received and
-- the receive error ("closed" is the normal end; "timeout" when nothing came).
local function raw(port, request, timeout)
  local c = assert(socket.tcp())
  c:settimeout(timeout or 5)
  assert(c:connect("127.0.0.1", port))
  assert(c:send(request))
  local data, err, partial = c:receive("*a")
  c:close()
  return data or partial, err
end

local function raw_get(port, path, headers)
  local lines = { "GET " .. path .. " HTTP/1.1", "Host: 127.0.0.1:" .. port, "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  return raw(port, table.concat(lines, "\r\n") .. "\r\n\r\n")
end

-- Split a raw response into status, headers (lower-case names) and body.
local function parse(data)
  local head, body = data:match("^(.-)\r\n\r\n(.*)$")
  if not head then return nil end
  local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do headers[name:lower()] = value end
  return status, headers, body
end

-- Run `n` curl processes at once; returns their "status retry-after" lines.
local function curl_parallel(n, url, header)
  local cmd = {}
  for _ = 1, n do
    cmd[#cmd + 1] = string.format(
      "curl -s -m 10 -o /dev/null -H '%s' -w '%%{http_code} %%header{retry-after}\\n' '%s' &", header, url)
  end
  local p = io.popen(table.concat(cmd, " ") .. " wait")
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local function gunzip(data)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  local p = io.popen("gzip -dc < " .. path)
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

local function wait_until(epoch)
  while socket.gettime() < epoch do socket.sleep(0.05) end
end

-- Specs ---------------------------------------------------------------------

describe("provider emulator", function()
  local emu

  local function get(path, headers, timeout)
    local status, h, body = emu:request(path, { headers = headers, timeout = timeout })
    assert(status, h)
    return status, h, body
  end

  -- Follow GitHub/GitLab/Gitea Link rel="next" from `path`; returns all items and the page count.
  local function walk(path, headers)
    local items, pages, url = {}, 0, emu.url .. path
    while url and pages < 100 do
      local status, h, body = get(url:sub(#emu.url + 1), headers)
      assert.are.equal(200, status)
      for _, item in ipairs(decode(body)) do items[#items + 1] = item end
      pages = pages + 1
      url = links(h.link).next
    end
    return items, pages
  end

  setup(function()
    emu = emulator.start({ scenario = { tokens = TOKENS } })
  end)

  teardown(function()
    emulator.stop_all()
  end)

  before_each(function()
    emu:reset(true)   -- counters, budgets and configuration back to the scenario's
  end)

  describe("world and control endpoints", function()
    it("reports owners, kinds, repository counts and totals", function()
      local w = emu:world()
      assert.are.equal("org", w.owners.acme.kind)
      assert.are.equal("user", w.owners.alice.kind)
      assert.are.equal(45, w.owners.acme.repos)
      assert.are.equal(12, w.owners.acme.subgroups.tools)
      assert.are.equal(3, w.owners.acme.subgroups["tools/cli"])
      local repos, public = 0, 0
      for _, o in pairs(w.owners) do
        repos, public = repos + o.repos, public + o.public
        assert.are.equal(o.repos, o.public + o.private)
      end
      assert.are.equal(repos, w.totals.repos)
      assert.are.equal(public, w.totals.public)
    end)

    it("generates owners deterministically with the reported split", function()
      local scenario = { seed = 3, generate = { count = 40, total_repos = 5000, prefix = "gen", large = 2 } }
      local a = emulator.start({ scenario = scenario })
      local b = emulator.start({ scenario = scenario })
      local wa, wb = a:world(), b:world()
      assert.are.equal(5000, wa.totals.repos)
      assert.are.equal(40, wa.totals.owners)
      local large = 0
      for name, o in pairs(wa.owners) do
        assert.are.same(o, wb.owners[name])
        if o.repos >= 1000 then large = large + 1 else assert.is_true(o.repos <= 60) end
      end
      assert.are.equal(2, large)
      local _, _, body = a:request("/users/gen-0001/repos?per_page=3")
      local _, _, body2 = b:request("/users/gen-0001/repos?per_page=3")
      assert.are.equal(body:gsub(":" .. a.port, ""), (body2:gsub(":" .. b.port, "")))
      a:stop()
      b:stop()
    end)

    it("counts requests by status and path kind, and credentialed requests", function()
      get("/orgs/acme/repos", GH)
      get("/orgs/nobody/repos")
      get("/users/alice")
      local s = emu:stats()
      assert.are.equal(3, s.requests)
      assert.are.equal(2, s.by_status["200"])
      assert.are.equal(1, s.by_status["404"])
      assert.are.equal(2, s.by_path_kind.repo_list)
      assert.are.equal(1, s.credentialed_requests)
      assert.are.equal(2, s.full_responses)
      assert.are.equal(1, s.tokens["0"].requests)
      assert.are.equal(1, s.tokens["0"].ok)
      assert.are.equal(2, s.anonymous.requests)
    end)

    it("rejects an unknown configuration key and keeps the old configuration", function()
      local status, _, body = emu:request("/_emulator/config", { method = "POST", body = '{"fautls":{}}' })
      assert.are.equal(400, status)
      assert.matches("fautls", body)
      assert.are.equal(cjson.null, emu:config().faults)
    end)

    it("refuses to start with a bad scenario and reports why", function()
      local ok, err = pcall(emulator.start, { scenario = { owners = { { name = "a", kind = "team" } } } })
      assert.is_false(ok)
      assert.matches("kind must be 'org' or 'user'", err)
    end)
  end)

  describe("GitHub", function()
    it("pages with Link headers in GitHub's format and order", function()
      local public = emu:world().owners.acme.public
      local last = math.ceil(public / 10)
      local base = emu.url .. "/orgs/acme/repos?per_page=10&page="
      local _, h1, b1 = get("/orgs/acme/repos?per_page=10")
      assert.are.equal(10, #decode(b1))
      assert.are.equal(string.format('<%s2>; rel="next", <%s%d>; rel="last"', base, base, last), h1.link)
      local _, h2 = get("/orgs/acme/repos?per_page=10&page=2")
      local _, order2 = links(h2.link)
      assert.are.equal("prev,next,last,first", order2)
      local _, hl, bl = get("/orgs/acme/repos?per_page=10&page=" .. last)
      local rels, orderl = links(hl.link)
      assert.are.equal("prev,first", orderl)
      assert.are.equal(base .. (last - 1), rels.prev)
      assert.are.equal(public - 10 * (last - 1), #decode(bl))
      local _, hs = get("/orgs/acme/repos?per_page=100")
      assert.is_nil(hs.link)   -- one page: no Link at all
    end)

    it("defaults per_page to 30 and caps it at 100", function()
      local _, _, b = get("/orgs/globex/repos")
      assert.are.equal(30, #decode(b))
      _, _, b = get("/orgs/globex/repos?per_page=500")
      assert.are.equal(100, #decode(b))
    end)

    it("lists exactly the world's repositories: public ones anonymously, all with a member token", function()
      local w = emu:world().owners.globex
      local anon, pages = walk("/orgs/globex/repos?per_page=100")
      assert.are.equal(w.public, #anon)
      assert.are.equal(math.ceil(w.public / 100), pages)
      local all = walk("/orgs/globex/repos?per_page=100", GH)
      assert.are.equal(w.repos, #all)
      local seen = {}
      for _, r in ipairs(all) do
        assert.is_nil(seen[r.full_name])
        seen[r.full_name] = true
      end
      local private = walk("/orgs/globex/repos?type=private&per_page=100", GH)
      assert.are.equal(w.private, #private)
      local via_users = walk("/users/globex/repos?per_page=100", GH)   -- public only, as on GitHub
      assert.are.equal(w.public, #via_users)
    end)

    it("renders full repository objects, with permissions only when authenticated", function()
      local _, _, body = get("/orgs/acme/repos?per_page=1")
      local r = decode(body)[1]
      for _, field in ipairs({ "id", "node_id", "name", "full_name", "private", "owner", "html_url", "fork",
        "url", "forks_url", "keys_url", "archive_url", "created_at", "updated_at", "pushed_at", "git_url",
        "ssh_url", "clone_url", "svn_url", "size", "stargazers_count", "watchers_count", "has_issues",
        "has_projects", "has_downloads", "has_wiki", "has_pages", "has_discussions", "forks_count",
        "archived", "disabled", "open_issues_count", "allow_forking", "is_template",
        "web_commit_signoff_required", "topics", "visibility", "forks", "open_issues", "watchers",
        "default_branch" }) do
        assert.is_not_nil(r[field], field)
      end
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", r.created_at)
      assert.are.equal("acme", r.owner.login)
      assert.are.equal("Organization", r.owner.type)
      assert.is_nil(r.permissions)
      assert.is_true(#body > 3000)
      _, _, body = get("/orgs/acme/repos?per_page=1", GH)
      assert.is_table(decode(body)[1].permissions)
    end)

    it("has null and tricky descriptions, null languages, forks, archived and empty topics", function()
      local all = walk("/orgs/globex/repos?per_page=100", GH)
      local seen = {}
      for _, r in ipairs(all) do
        if r.description == cjson.null then seen.null_description = true end
        if r.language == cjson.null then seen.null_language = true end
        if r.fork then seen.fork = true end
        if r.archived then seen.archived = true end
        if r.private then seen.private = true end
        if r.license == cjson.null then seen.no_license = true end
        if #r.topics == 0 then seen.no_topics = true end
        local d = r.description ~= cjson.null and r.description or ""
        if d:find("\n", 1, true) then seen.newline = true end
        if d:find('"', 1, true) and d:find(",", 1, true) then seen.quote_comma = true end
        if d:find("[\xe4-\xe9][\x80-\xbf][\x80-\xbf]") then seen.cjk = true end
        if d:find("\xf0\x9f") then seen.emoji = true end
        if d:find("\xd7[\x90-\xaa]") or d:find("\xd8[\xa0-\xbf]") then seen.rtl = true end
      end
      for _, what in ipairs({ "null_description", "null_language", "fork", "archived", "private", "no_license",
        "no_topics", "newline", "quote_comma", "cjk", "emoji", "rtl" }) do
        assert.is_true(seen[what], what)
      end
    end)

    it("serves GitHub Enterprise paths under /api/v3", function()
      local _, h, body = get("/api/v3/orgs/acme/repos?per_page=10")
      assert.matches("^<" .. emu.url:gsub("%p", "%%%0") .. "/api/v3/orgs/acme/repos%?per_page=10&page=2>", h.link)
      local r = decode(body)[1]
      assert.are.equal(emu.url .. "/" .. r.full_name, r.html_url)
      assert.are.equal(emu.url .. "/api/v3/repos/" .. r.full_name, r.url)
    end)

    it("answers 404 with GitHub's body for a user on /orgs and for unknown names", function()
      for _, path in ipairs({ "/orgs/alice/repos", "/orgs/nobody/repos", "/users/nobody", "/orgs/alice",
        "/repos/acme/no-such-repo" }) do
        local status, h, body = get(path)
        assert.are.equal(404, status, path)
        local err = decode(body)
        assert.are.equal("Not Found", err.message)
        assert.matches("^https://docs.github.com/rest", err.documentation_url)
        assert.is_not_nil(h["x-ratelimit-remaining"])
      end
      local status = get("/users/alice/repos")
      assert.are.equal(200, status)
      status = get("/orgs/acme")
      assert.are.equal(200, status)
    end)

    it("requires a token for /user and answers 401 to an unknown one", function()
      local status, _, body = get("/user")
      assert.are.equal(401, status)
      assert.are.equal("Requires authentication", decode(body).message)
      local _, _, me = get("/user", GH)
      assert.are.equal("alice", decode(me).login)
      local _, _, mine = get("/user/repos?per_page=100", GH)
      assert.are.equal(emu:world().owners.alice.repos, #decode(mine))
      status, _, body = get("/user/repos?type=owner&visibility=all", GH)
      assert.are.equal(422, status)
      status, _, body = get("/orgs/acme/repos", { authorization = "token ghp_NOPE" })
      assert.are.equal(401, status)
      assert.are.equal("Bad credentials", decode(body).message)
      local s = emu:stats()
      assert.are.equal(2, s.unauthorized)   -- /user without a token, and the unknown token
    end)

    it("does not count /rate_limit against the budget", function()
      get("/users/alice", GH)
      local _, h1, body = get("/rate_limit", GH)
      local _, h2 = get("/rate_limit", GH)
      local rl = decode(body)
      assert.are.equal(5000, rl.resources.core.limit)
      assert.are.equal(4999, rl.resources.core.remaining)
      assert.are.same(rl.resources.core, rl.rate)
      assert.are.equal(h1["x-ratelimit-remaining"], h2["x-ratelimit-remaining"])
      assert.are.equal("4999", h2["x-ratelimit-remaining"])
      local _, _, anon = get("/rate_limit")
      assert.are.equal(60, decode(anon).resources.core.limit)
    end)

    it("serves repository details, branches and contributors (204 for an empty repository)", function()
      local all = walk("/orgs/globex/repos?per_page=100")
      local empty, full
      for _, r in ipairs(all) do
        if r.size == 0 then empty = empty or r else full = full or r end
      end
      assert.is_not_nil(empty, "the default world has an empty public repository in globex")
      local status, _, body = get("/repos/" .. full.full_name)
      assert.are.equal(200, status)
      assert.are.equal(full.id, decode(body).id)
      status, _, body = get("/repos/" .. empty.full_name .. "/contributors")
      assert.are.equal(204, status)
      assert.are.equal("", body)
      local branches = walk("/repos/" .. full.full_name .. "/branches?per_page=100")
      assert.is_true(#branches >= 1)
      assert.matches("^%x+$", branches[1].commit.sha)
      local contributors = walk("/repos/" .. full.full_name .. "/contributors?per_page=100")
      assert.is_true(#contributors >= 1)
      assert.is_number(contributors[1].contributions)
    end)
  end)

  describe("GitLab", function()
    it("pages with x-* headers and Link", function()
      local status, h, body = get("/api/v4/groups/acme/projects?per_page=10", GL)
      assert.are.equal(200, status)
      assert.are.equal(10, #decode(body))
      assert.are.equal("45", h["x-total"])
      assert.are.equal("5", h["x-total-pages"])
      assert.are.equal("1", h["x-page"])
      assert.are.equal("10", h["x-per-page"])
      assert.are.equal("2", h["x-next-page"])
      assert.are.equal("", h["x-prev-page"])
      local rels, order = links(h.link)
      assert.are.equal("next,first,last", order)
      assert.matches("page=5", rels.last)
      _, h = get("/api/v4/groups/acme/projects?per_page=10&page=5", GL)
      assert.are.equal("", h["x-next-page"])
      assert.are.equal("4", h["x-prev-page"])
      local items = walk("/api/v4/groups/acme/projects?per_page=100", GL)
      assert.are.equal(45, #items)
      _, h = get("/api/v4/groups/acme/projects")   -- anonymous: public projects only, default per_page 20
      assert.are.equal(string.format("%d", emu:world().owners.acme.public), h["x-total"])
      assert.are.equal("20", h["x-per-page"])
    end)

    it("renders project objects with GitLab's fields and dates", function()
      local _, _, body = get("/api/v4/groups/acme/projects?per_page=100", GL)
      local fork
      for _, p in ipairs(decode(body)) do
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", p.created_at)
        assert.are.equal("group", p.namespace.kind)
        assert.matches("^acme/", p.path_with_namespace)
        assert.is_not_nil(p.http_url_to_repo)
        if p.forked_from_project then fork = p end
      end
      assert.is_not_nil(fork)
      local _, _, user = get("/api/v4/users/alice/projects", GL)
      assert.are.equal("user", decode(user)[1].namespace.kind)
    end)

    it("includes subgroups on request and resolves url-encoded paths", function()
      local _, h = get("/api/v4/groups/acme/projects?include_subgroups=true&per_page=100", GL)
      assert.are.equal("60", h["x-total"])
      local _, _, body = get("/api/v4/groups/acme/projects?include_subgroups=true&per_page=100", GL)
      local deep
      for _, p in ipairs(decode(body)) do
        if p.path_with_namespace:match("^acme/tools/cli/") then deep = p end
      end
      assert.is_not_nil(deep)
      local _, _, subs = get("/api/v4/groups/acme/subgroups")
      assert.are.equal("tools", decode(subs)[1].path)
      local _, _, group = get("/api/v4/groups/acme%2Ftools")
      assert.are.equal("acme/tools", decode(group).full_path)
      local _, _, byid = get("/api/v4/groups/" .. math.tointeger(decode(group).id) .. "/subgroups")
      assert.are.equal("acme/tools/cli", decode(byid)[1].full_path)
      local encoded = deep.path_with_namespace:gsub("/", "%%2F")
      local status, _, project = get("/api/v4/projects/" .. encoded, GL)
      assert.are.equal(200, status)
      assert.are.equal(deep.id, decode(project).id)
      status = get("/api/v4/projects/" .. math.tointeger(deep.id) .. "/repository/branches", GL)
      assert.are.equal(200, status)
    end)

    it("finds users, and answers GitLab's 404s", function()
      local _, _, body = get("/api/v4/users?username=alice")
      assert.are.equal("alice", decode(body)[1].username)
      _, _, body = get("/api/v4/users?username=acme")
      assert.are.equal(0, #decode(body))
      local status
      status, _, body = get("/api/v4/users/acme/projects")
      assert.are.equal(404, status)
      assert.are.equal("404 User Not Found", decode(body).message)
      status, _, body = get("/api/v4/groups/alice/projects")
      assert.are.equal(404, status)
      assert.are.equal("404 Group Not Found", decode(body).message)
      status, _, body = get("/api/v4/projects/acme%2Fnope")
      assert.are.equal("404 Project Not Found", decode(body).message)
    end)

    it("accepts PRIVATE-TOKEN and Bearer, and answers 401 otherwise", function()
      local _, _, me = get("/api/v4/user", GL)
      assert.are.equal("alice", decode(me).username)
      local status = get("/api/v4/user", { authorization = "Bearer glpat-ALICE" })
      assert.are.equal(200, status)
      local body
      status, _, body = get("/api/v4/user", { ["private-token"] = "ghp_ALICE" })
      assert.are.equal(401, status)
      assert.are.equal("401 Unauthorized", decode(body).message)
      status = get("/api/v4/user")
      assert.are.equal(401, status)
    end)

    it("sends RateLimit-* headers", function()
      local _, h = get("/api/v4/groups/acme", GL)
      assert.are.equal("2000", h["ratelimit-limit"])
      assert.are.equal("1", h["ratelimit-observed"])
      assert.are.equal("1999", h["ratelimit-remaining"])
      assert.are.equal("throttle_authenticated_api", h["ratelimit-name"])
      assert.matches("^%d+$", h["ratelimit-reset"])
    end)

    it("supports keyset pagination by id", function()
      local items, pages = walk("/api/v4/groups/acme/projects?pagination=keyset&order_by=id&sort=asc&per_page=20", GL)
      assert.are.equal(45, #items)
      assert.are.equal(3, pages)
      for i = 2, #items do assert.is_true(items[i].id > items[i - 1].id) end
    end)

    it("drops x-total, x-total-pages and rel=last above 10,000 records", function()
      local big = emulator.start({ scenario = {
        owners = { { name = "huge", kind = "org", repos = 10001 }, { name = "exact", kind = "org", repos = 10000 } },
        tokens = { { token = "glpat-M", provider = "gitlab", account = "member" } } } })
      local member = { headers = { ["private-token"] = "glpat-M" } }   -- sees private projects too
      local _, h = big:request("/api/v4/groups/huge/projects?per_page=100", member)
      assert.is_nil(h["x-total"])
      assert.is_nil(h["x-total-pages"])
      assert.are.equal("2", h["x-next-page"])
      local rels = links(h.link)
      assert.is_nil(rels.last)
      assert.is_not_nil(rels.next)
      _, h = big:request("/api/v4/groups/exact/projects?per_page=100", member)
      assert.are.equal("10000", h["x-total"])
      assert.are.equal("100", h["x-total-pages"])
      big:stop()
    end)
  end)

  describe("Bitbucket", function()
    it("pages with the values/next envelope", function()
      local _, _, body = get("/2.0/repositories/acme", BB)
      local page = decode(body)
      assert.are.equal(10, page.pagelen)
      assert.are.equal(45, page.size)
      assert.are.equal(1, page.page)
      assert.are.equal(10, #page.values)
      assert.are.equal(emu.url .. "/2.0/repositories/acme?page=2", page.next)
      local total, pages, url = 0, 0, "/2.0/repositories/acme?pagelen=20"
      while url and pages < 10 do
        page = decode(select(3, get(url, BB)))
        total, pages = total + #page.values, pages + 1
        url = page.next and page.next:sub(#emu.url + 1)
      end
      assert.are.equal(45, total)
      assert.are.equal(3, pages)
      assert.is_nil(page.next)
      assert.are.equal(100, decode(select(3, get("/2.0/repositories/globex?pagelen=500", BB))).pagelen)
    end)

    it("renders repository objects with Bitbucket's fields", function()
      local r = decode(select(3, get("/2.0/repositories/acme", BB))).values[1]
      assert.are.equal("repository", r.type)
      assert.matches("^{%x+%-%x+%-%x+%-%x+%-%x+}$", r.uuid)
      assert.matches("^acme/", r.full_name)
      assert.matches("%+00:00$", r.created_on)
      assert.are.equal("workspace", r.workspace.type)
      assert.are.equal("https", r.links.clone[1].name)
      assert.are.equal("ssh", r.links.clone[2].name)
      assert.is_boolean(r.is_private)
      local status, _, detail = get("/2.0/repositories/" .. r.full_name, BB)
      assert.are.equal(200, status)
      assert.are.equal(r.uuid, decode(detail).uuid)
      status = get("/2.0/repositories/" .. r.full_name .. "/refs/branches", BB)
      assert.are.equal(200, status)
      local ws = decode(select(3, get("/2.0/workspaces/acme")))
      assert.are.equal("acme", ws.slug)
    end)

    it("sends X-RateLimit-* only to access tokens", function()
      local _, h = get("/2.0/repositories/acme", BB)
      assert.are.equal("1000", h["x-ratelimit-limit"])
      assert.are.equal("false", h["x-ratelimit-nearlimit"])
      assert.is_not_nil(h["x-ratelimit-resource"])
      local status
      status, h = get("/2.0/repositories/acme", { authorization = "Basic " .. (require("mime").b64("alice:app-pass")) })
      assert.are.equal(200, status)
      assert.is_nil(h["x-ratelimit-limit"])
      _, h = get("/2.0/repositories/acme")
      assert.is_nil(h["x-ratelimit-limit"])
    end)

    it("answers 401 to a wrong app password, counted for that credential", function()
      local status, _, body = get("/2.0/user", { authorization = "Basic " .. (require("mime").b64("alice:wrong")) })
      assert.are.equal(401, status)
      assert.are.equal("error", decode(body).type)
      local s = emu:stats()
      assert.are.equal(1, s.tokens["5"].unauthorized)
      assert.are.equal(1, s.unauthorized)
      local _, _, me = get("/2.0/user", BB)
      assert.are.equal("alice", decode(me).username)
    end)

    it("answers 404 with Bitbucket's error body", function()
      local status, _, body = get("/2.0/repositories/nobody")
      assert.are.equal(404, status)
      local err = decode(body)
      assert.are.equal("error", err.type)
      assert.is_string(err.error.message)
    end)
  end)

  describe("Gitea", function()
    it("pages with a comma-joined Link header and X-Total-Count", function()
      local _, h, body = get("/api/v1/orgs/acme/repos?limit=10&page=2", GT)
      assert.are.equal(10, #decode(body))
      assert.are.equal("45", h["x-total-count"])
      local base = emu.url .. "/api/v1/orgs/acme/repos?limit=10&page="
      assert.are.equal(string.format('<%s3>; rel="next",<%s5>; rel="last",<%s1>; rel="first",<%s1>; rel="prev"',
        base, base, base, base), h.link)
      _, _, body = get("/api/v1/orgs/globex/repos?limit=100", GT)
      assert.are.equal(50, #decode(body))
      local items = walk("/api/v1/orgs/acme/repos?limit=50", GT)
      assert.are.equal(45, #items)
    end)

    it("renders Gitea repository objects and answers Gitea's 404", function()
      local r = decode(select(3, get("/api/v1/repos/acme/" .. decode(select(3, get("/api/v1/orgs/acme/repos")))[1].name)))
      assert.is_number(r.stars_count)
      assert.are.equal("acme", r.owner.login)
      assert.matches("[+-]%d%d:%d%d$", r.created_at)
      local status, h, body = get("/api/v1/orgs/alice")
      assert.are.equal(404, status)
      assert.is_string(decode(body).message)
      assert.is_nil(h["x-ratelimit-limit"])   -- limits.gitea is null by default
      status = get("/api/v1/users/alice/repos", GT)
      assert.are.equal(200, status)
      local _, _, me = get("/api/v1/user", GT)
      assert.are.equal("alice", decode(me).login)
    end)
  end)

  describe("budgets", function()
    it("GitHub: a spent budget answers 403 with remaining 0, and resets at the advertised second", function()
      emu:configure({ limits = { github = { limit = 3, window = 2 } } })
      local remaining = {}
      local reset
      for i = 1, 3 do
        local status, h = get("/users/alice", GH)
        assert.are.equal(200, status)
        remaining[i] = h["x-ratelimit-remaining"]
        reset = reset or tonumber(h["x-ratelimit-reset"])
        assert.are.equal(reset, tonumber(h["x-ratelimit-reset"]))
        assert.are.equal(tostring(i), h["x-ratelimit-used"])
        assert.are.equal("core", h["x-ratelimit-resource"])
      end
      assert.are.same({ "2", "1", "0" }, remaining)
      assert.is_true(reset <= math.ceil(socket.gettime() + 2))
      local status, h, body = get("/users/alice", GH)
      assert.are.equal(403, status)
      assert.are.equal("0", h["x-ratelimit-remaining"])
      assert.matches("^API rate limit exceeded", decode(body).message)
      assert.matches("rate%-limits", decode(body).documentation_url)
      wait_until(reset)
      status, h = get("/users/alice", GH)
      assert.are.equal(200, status)
      assert.are.equal("2", h["x-ratelimit-remaining"])
      local s = emu:stats()
      assert.are.equal(1, s.primary_limited)
      assert.are.equal(1, s.tokens["0"].primary_limited)
      assert.are.equal(2, s.budgets["github:alice:core"].remaining)
    end)

    it("GitHub: the primary-limit status can be 429", function()
      emu:configure({ limits = { github = { limit = 1, status = 429 } } })
      get("/users/alice", GH)
      local status = get("/users/alice", GH)
      assert.are.equal(429, status)
    end)

    it("two tokens of one account share one budget; another account has its own", function()
      emu:configure({ limits = { github = { limit = 2 } } })
      local _, h = get("/users/alice", { authorization = "token ghp_ALICE" })
      assert.are.equal("1", h["x-ratelimit-remaining"])
      _, h = get("/users/alice", { authorization = "Bearer ghp_ALICE2" })
      assert.are.equal("0", h["x-ratelimit-remaining"])
      local status = get("/users/alice", { authorization = "token ghp_ALICE2" })
      assert.are.equal(403, status)
      status, h = get("/users/alice", { authorization = "token ghp_BOB" })
      assert.are.equal(200, status)
      assert.are.equal("1", h["x-ratelimit-remaining"])
    end)

    it("anonymous requests share the anonymous budget", function()
      emu:configure({ limits = { anonymous = { limit = 2 } } })
      get("/users/alice")
      local _, h = get("/users/alice")
      assert.are.equal("0", h["x-ratelimit-remaining"])
      assert.are.equal("2", h["x-ratelimit-limit"])
      local status, _, body = get("/users/alice")
      assert.are.equal(403, status)
      assert.matches("^API rate limit exceeded for", decode(body).message)
      status = get("/users/alice", GH)
      assert.are.equal(200, status)
    end)

    it("GitLab: 429 'Retry later' with Retry-After and RateLimit-ResetTime", function()
      emu:configure({ limits = { gitlab = { limit = 1, window = 60 } } })
      get("/api/v4/groups/acme", GL)
      local status, h, body = get("/api/v4/groups/acme", GL)
      assert.are.equal(429, status)
      assert.matches("^Retry later", body)
      local retry = tonumber(h["retry-after"])
      assert.is_true(retry >= 1 and retry <= 61)
      assert.is_not_nil(h["ratelimit-resettime"]:match("GMT$"))
      assert.are.equal("0", h["ratelimit-remaining"])
    end)

    it("Bitbucket: a rolling window; 429 with a plain body and no Retry-After", function()
      emu:configure({ limits = { bitbucket = { limit = 2, window = 1.5 } } })
      local t0 = socket.gettime()
      get("/2.0/repositories/acme", BB)
      get("/2.0/repositories/acme", BB)
      local status, h, body = get("/2.0/repositories/acme", BB)
      assert.are.equal(429, status)
      assert.are.equal("Rate limit for this resource has been exceeded", body)
      assert.is_nil(h["retry-after"])
      wait_until(t0 + 1.6)
      status = get("/2.0/repositories/acme", BB)
      assert.are.equal(200, status)
    end)
  end)

  describe("conditional requests and compression", function()
    it("answers If-None-Match with 304 without spending budget", function()
      local _, h1 = get("/orgs/acme/repos", GH)
      local etag = h1.etag
      assert.matches('^"%x+"$', etag)
      for _, inm in ipairs({ etag, "W/" .. etag, '"nope", ' .. etag }) do
        local status, h, body = get("/orgs/acme/repos", { authorization = GH.authorization, ["if-none-match"] = inm })
        assert.are.equal(304, status)
        assert.are.equal("", body)
        assert.are.equal(etag, h.etag)
        assert.are.equal(h1["x-ratelimit-remaining"], h["x-ratelimit-remaining"])
      end
      local status = get("/orgs/acme/repos", { authorization = GH.authorization, ["if-none-match"] = '"other"' })
      assert.are.equal(200, status)
      local s = emu:stats()
      assert.are.equal(3, s.not_modified)
      assert.are.equal(3, s.tokens["0"].not_modified)
      assert.are.equal(4998, s.budgets["github:alice:core"].remaining)
    end)

    it("answers If-Modified-Since with 304 when nothing changed since", function()
      local _, h = get("/users/alice")
      assert.is_not_nil(h["last-modified"])
      local status = get("/users/alice", { ["if-modified-since"] = h["last-modified"] })
      assert.are.equal(304, status)
      status = get("/users/alice", { ["if-modified-since"] = "Thu, 01 Jan 2009 00:00:00 GMT" })
      assert.are.equal(200, status)
    end)

    it("gzips when asked, with the same ETag", function()
      local _, plain_h, plain = get("/orgs/acme/repos?per_page=50", GH)
      local data = raw_get(emu.port, "/orgs/acme/repos?per_page=50",
        { ["Accept-Encoding"] = "gzip", Authorization = GH.authorization })
      local status, h, body = parse(data)
      assert.are.equal(200, status)
      assert.are.equal("gzip", h["content-encoding"])
      assert.matches("Accept%-Encoding", h.vary)
      assert.are.equal(tonumber(h["content-length"]), #body)
      assert.are.equal(plain_h.etag, h.etag)
      assert.are.equal(plain, gunzip(body))
      assert.is_true(#body < #plain / 3)
    end)
  end)

  describe("secondary limits", function()
    it("GitHub: a token with too many requests in flight gets 403 and Retry-After, budget untouched", function()
      emu:configure({ secondary = { max_concurrency = 2, retry_after = 1 },
                      faults = { rate = 1, kinds = { "slow" }, slow_seconds = 1 } })
      local out = curl_parallel(5, emu.url .. "/users/alice", "Authorization: token ghp_ALICE")
      table.sort(out)
      assert.are.same({ "200 ", "200 ", "403 1", "403 1", "403 1" }, out)
      local s = emu:stats()
      assert.are.equal(3, s.secondary_limited)
      assert.are.equal(3, s.tokens["0"].secondary_limited)
      assert.are.equal(2, s.tokens["0"].max_in_flight)
      assert.are.equal(4998, s.budgets["github:alice:core"].remaining)
      emu:configure({ faults = cjson.null })
      local _, _, body = emu:request("/users/alice", { headers = GH })
      assert.is_nil(decode(body).message)
    end)

    it("GitHub: the secondary-limit body carries GitHub's message and remaining > 0", function()
      emu:configure({ secondary = { max_concurrency = 1, retry_after = cjson.null },
                      faults = { rate = 1, kinds = { "slow" }, slow_seconds = 1 } })
      local p = io.popen(string.format("curl -s -m 5 -o /dev/null -H 'Authorization: token ghp_ALICE' '%s/users/alice'",
        emu.url))
      socket.sleep(0.3)
      emu:configure({ faults = cjson.null })
      local status, h, body = get("/users/alice", GH)
      p:close()
      assert.are.equal(403, status)
      assert.matches("secondary rate limit", decode(body).message)
      assert.matches("secondary%-rate%-limits$", decode(body).documentation_url)
      assert.is_nil(h["retry-after"])
      assert.is_true(tonumber(h["x-ratelimit-remaining"]) > 0)
    end)

    it("GitLab: 429 with Retry-After and no RateLimit headers", function()
      emu:configure({ secondary = { max_concurrency = 1, retry_after = 2 },
                      faults = { rate = 1, kinds = { "slow" }, slow_seconds = 1 } })
      local p = io.popen(string.format("curl -s -m 5 -o /dev/null -H 'PRIVATE-TOKEN: glpat-ALICE' '%s/api/v4/user'",
        emu.url))
      socket.sleep(0.3)
      emu:configure({ faults = cjson.null })
      local status, h = get("/api/v4/user", GL)
      p:close()
      assert.are.equal(429, status)
      assert.are.equal("2", h["retry-after"])
      assert.is_nil(h["ratelimit-remaining"])
      assert.is_nil(h["ratelimit-limit"])
    end)
  end)

  describe("faults", function()
    local function fault(kind, extra)
      local f = { rate = 1, kinds = { kind } }
      for k, v in pairs(extra or {}) do f[k] = v end
      emu:configure({ faults = f })
    end

    it("5xx: 502 or 503 with Retry-After when configured, without spending budget", function()
      fault("5xx", { retry_after = 3 })
      for _ = 1, 4 do
        local status, h = get("/users/alice", GH)
        assert.is_true(status == 502 or status == 503)
        assert.are.equal("3", h["retry-after"])
      end
      local s = emu:stats()
      assert.are.equal(4, s.faults["5xx"])
      assert.are.equal(5000, s.budgets["github:alice:core"].remaining)
    end)

    it("drop: closes the connection without a response", function()
      fault("drop")
      local data = raw_get(emu.port, "/users/alice")
      assert.are.equal("", data)
      assert.are.equal(1, emu:stats().faults.drop)
    end)

    it("truncate: sends the full Content-Length but half the body, without spending budget", function()
      fault("truncate")
      local status, h, body = parse(raw_get(emu.port, "/orgs/acme/repos", { Authorization = GH.authorization }))
      assert.are.equal(200, status)
      local length = tonumber(h["content-length"])
      assert.is_true(#body < length)
      assert.is_true(#body > 0)
      assert.are.equal(5000, emu:stats().budgets["github:alice:core"].remaining)
    end)

    it("slow: answers normally after slow_seconds", function()
      fault("slow", { slow_seconds = 0.3 })
      local t0 = socket.gettime()
      local status = get("/users/alice", GH)
      assert.are.equal(200, status)
      assert.is_true(socket.gettime() - t0 >= 0.3)
      assert.are.equal(4999, emu:stats().budgets["github:alice:core"].remaining)
    end)

    it("draws again on every retry, so retries succeed; control endpoints are never faulted", function()
      fault("5xx", { rate = 0.5, kinds = { "5xx", "drop" } })
      local attempts = 0
      for _ = 1, 10 do   -- ten fetches, each retried until it succeeds (bounded)
        local ok = false
        while not ok and attempts < 200 do
          attempts = attempts + 1
          ok = emu:request("/users/alice", { headers = GH }) == 200
        end
        assert.is_true(ok)
      end
      for _ = 1, 5 do
        assert.is_number(emu:stats().requests)   -- would fail half the time if faulted
      end
      local s = emu:stats()
      assert.is_true((s.faults["5xx"] or 0) + (s.faults.drop or 0) > 0)
      assert.are.equal(attempts, s.requests)
    end)

    it("is deterministic for a given seed", function()
      local function sequence()
        emu:reset(true)
        fault("5xx", { rate = 0.5, seed = 11 })
        local codes = {}
        for i = 1, 12 do codes[i] = (emu:request("/users/alice")) end
        return table.concat(codes, ",")
      end
      local first = sequence()
      assert.matches("200", first)
      assert.matches("50[23]", first)
      assert.are.equal(first, sequence())
    end)
  end)

  describe("special owners", function()
    it("x-oversize: a valid JSON array of exactly oversize_bytes", function()
      emu:configure({ oversize_bytes = 300000 })
      local status, h, body = parse(raw_get(emu.port, "/users/x-oversize/repos"))
      assert.are.equal(200, status)
      assert.are.equal("300000", h["content-length"])
      assert.are.equal(300000, #body)
      local items = decode(body)
      assert.is_true(#items > 10)
      assert.are.equal("string", type(items[#items]))
    end)

    it("x-badutf8: descriptions with invalid UTF-8", function()
      local status, h, body = parse(raw_get(emu.port, "/orgs/x-badutf8/repos"))
      assert.are.equal(200, status)
      assert.are.equal(tonumber(h["content-length"]), #body)
      assert.is_not_nil(body:find("\xff\xfe", 1, true))
    end)

    it("x-nested: JSON nested 100,000 arrays deep", function()
      local status, _, body = parse(raw_get(emu.port, "/users/x-nested/repos"))
      assert.are.equal(200, status)
      assert.are.equal(200000, #body)
      assert.are.equal(string.rep("[", 100000), body:sub(1, 100000))
    end)

    it("x-hugeheader: a 1 MiB header line that never ends", function()
      local data = raw_get(emu.port, "/users/x-hugeheader/repos")
      assert.is_true(#data > 1024 * 1024)
      assert.is_nil(data:find("\r\n\r\n", 1, true))
    end)

    it("x-hang: never answers", function()
      local data, err = raw(emu.port, "GET /users/x-hang/repos HTTP/1.1\r\nHost: x\r\n\r\n", 0.5)
      assert.are.equal("timeout", err)
      assert.are.equal("", data)
    end)

    it("x-slowbody: a large Content-Length, then one byte per second", function()
      local c = assert(socket.tcp())
      c:settimeout(3)
      assert(c:connect("127.0.0.1", emu.port))
      c:send("GET /orgs/x-slowbody/repos HTTP/1.1\r\nHost: x\r\n\r\n")
      local length
      repeat
        local line = assert(c:receive("*l"))
        length = length or tonumber(line:match("^Content%-Length: (%d+)"))
      until line == ""
      assert.is_true(length >= 1024 * 1024)
      local t0 = socket.gettime()
      assert.are.equal("[ ", c:receive(2))
      assert.is_true(socket.gettime() - t0 >= 0.5)
      c:close()
    end)
  end)

  describe("redirects", function()
    it("answers 301 towards another instance, which serves the owner", function()
      local other = emulator.start({ scenario = { tokens = TOKENS } })
      emu:configure({ redirects = { acme = other.url } })
      local status, h, body = get("/orgs/acme/repos?per_page=5", GH)
      assert.are.equal(301, status)
      assert.are.equal(other.url .. "/orgs/acme/repos?per_page=5", h.location)
      assert.are.equal("Moved Permanently", decode(body).message)
      status, h = get("/repos/acme/anything/branches")
      assert.are.equal(301, status)
      assert.are.equal(other.url .. "/repos/acme/anything/branches", h.location)
      local _, h2, body2 = other:request("/orgs/acme/repos?per_page=5", { headers = GH })
      assert.are.equal(5, #decode(body2))
      assert.matches(":" .. other.port .. "/orgs/acme/repos", h2.link)
      status = get("/orgs/globex/repos")   -- other owners are not redirected
      assert.are.equal(200, status)
      other:stop()
    end)
  end)

  describe("HTTP details", function()
    it("keeps the connection alive across requests", function()
      local req = "GET /users/alice HTTP/1.1\r\nHost: x\r\n\r\n"
      local data = raw(emu.port, req .. req .. "GET /users/alice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local n = 0
      for _ in data:gmatch("HTTP/1%.1 200 OK\r\n") do n = n + 1 end
      assert.are.equal(3, n)
    end)

    it("sends Date and Content-Type everywhere, and no body for HEAD", function()
      local data = raw(emu.port, "HEAD /users/alice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local status, h, body = parse(data)
      assert.are.equal(200, status)
      assert.is_not_nil(h.date)
      assert.are.equal("application/json; charset=utf-8", h["content-type"])
      assert.is_true(tonumber(h["content-length"]) > 0)
      assert.are.equal("", body)
    end)

    it("refuses writes with 405 instead of serving the GET body", function()
      local status, h = emu:request("/orgs/acme/repos", { method = "POST", body = "{}", headers = GH })
      assert.are.equal(405, status)
      assert.are.equal("GET, HEAD", h.allow)
    end)

    it("answers a malformed request with 400 and closes", function()
      local status = parse(raw(emu.port, "NONSENSE\r\n\r\n"))
      assert.are.equal(400, status)
    end)
  end)

  describe("process lifecycle", function()
    it("exits by itself when the parent process is gone", function()
      local p = io.popen("sleep 0.5 >/dev/null & echo $!")
      local parent = tonumber(p:read("l"))
      p:close()
      local pid_file = os.tmpname()
      os.remove(pid_file)
      os.execute(string.format("python3 %s --port 0 --pid-file %s --parent-pid %d --quiet "
        .. "</dev/null >/dev/null 2>&1 &", emulator.script, pid_file, parent))
      local deadline = socket.gettime() + 6
      local pid
      repeat
        local f = io.open(pid_file)
        pid = f and tonumber(f:read("l"))
        if f then f:close() end
        if not pid then socket.sleep(0.05) end
      until pid or socket.gettime() > deadline
      assert.is_number(pid)
      while emulator.alive(pid) and socket.gettime() < deadline do socket.sleep(0.1) end
      local gone = not emulator.alive(pid)
      if not gone then os.execute("kill -TERM " .. pid) end
      os.remove(pid_file)
      assert.is_true(gone)
    end)

    it("stops promptly on SIGTERM even with a hung request in flight", function()
      local e = emulator.start({})
      local c = assert(socket.tcp())
      c:settimeout(5)
      assert(c:connect("127.0.0.1", e.port))
      c:send("GET /users/x-hang/repos HTTP/1.1\r\nHost: x\r\n\r\n")
      socket.sleep(0.1)
      local t0 = socket.gettime()
      e:stop()
      assert.is_true(socket.gettime() - t0 < 2)
      assert.is_false(emulator.alive(e.pid))
      c:close()
    end)
  end)

  it("leaves no count behind for the control endpoints", function()
    emu:stats()
    emu:world()
    emu:config()
    assert.are.equal(0, emu:stats().requests)
    assert.are.equal(0, count(emu:stats().by_status))
  end)
end)
