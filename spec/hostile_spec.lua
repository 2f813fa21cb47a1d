-- Hostile owners, plugins and scripts, tried through the real command line.
-- What goes on the wire is checked with a server that records the raw
-- request targets it receives (spec/support/recorder.py).
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local recorder = require("spec.support.recorder")

local TOKEN = "ghp_HOSTILE0000000000000000000000000000000"

-- A config whose github, gitlab and bitbucket all point at the recorder.
local function recorded(extra)
  local rec = recorder.start()
  local cfg = { providers = {}, retry = { max_attempts = 1 } }
  for _, p in ipairs({ "github", "gitlab", "bitbucket" }) do
    cfg.providers[p] = { base_url = rec.url, tokens = { { label = p .. "-t", token = TOKEN } } }
  end
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local path, dir = gf.config(cfg)
  return rec, path, dir
end

describe("owners and names that would leave the API path", function()
  after_each(gf.cleanup)

  for _, owner in ipairs({ "gitlab:..", "bitbucket:.", "github:..", "github:.", "gitlab:acme/..",
    "github:./acme" }) do
    it("refuses " .. owner .. " as a usage error, before any request", function()
      local rec, cfg = recorded()
      local r = gf.run({ "--config", cfg, "fetch", "good", owner })
      rec:stop()
      assert.are.equal(2, r.code, r.stderr)
      assert.matches('argument 2: "' .. owner:gsub("%p", "%%%0") .. '": .-not owner names', r.stderr)
      assert.are.same({}, rec:requests())
    end)
  end

  it("answers fleet.* calls with '.' or '..' names with an invalid error, sending nothing", function()
    local rec, cfg = recorded()
    local r = gf.run_script([[
for _, call in ipairs({
  function() return fleet.fetch_repositories("..", { provider = "gitlab" }) end,
  function() return fleet.fetch_repositories(".", { provider = "bitbucket" }) end,
  function() return fleet.fetch_repository_details("acme", "..") end,
  function() return fleet.fetch_branches("..", "x") end,
  function() return fleet.fetch_contributors("acme", ".", { provider = "github" }) end,
}) do
  local v, err = call()
  print(v, err and err.kind)
end
]], cfg)
    rec:stop()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(("nil\tinvalid\n"):rep(5), r.stdout)
    assert.are.same({}, rec:requests())
  end)

  it("refuses any URL whose path holds a dot segment, raw or percent-encoded", function()
    local rec, cfg = recorded()
    local r = gf.run_script([[
for _, path in ipairs({ "/orgs/../repos", "/orgs/./repos", "/orgs/%2e%2e/repos", "/orgs/.%2E", "/a/..",
    "/orgs/%2E/repos" }) do
  local ok, err = pcall(fleet.request, "GET", path)
  print(ok, (tostring(err):match("holds a '.' or '..' segment")))
end
-- dots that are not a whole segment are names like any other
assert(fleet.request("GET", "/repos/a/..b/.c...?q=../x"))
]], cfg)
    rec:stop()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(("false\tholds a '.' or '..' segment\n"):rep(6), r.stdout)
    local got = rec:requests()
    assert.are.equal(1, #got)
    assert.are.equal("/repos/a/..b/.c...?q=../x", got[1].target)
  end)

  it("logs each URL exactly as it is sent (-vv)", function()
    local rec, cfg = recorded()
    local r = gf.run({ "--config", cfg, "-vv", "fetch", "gitlab:acme/tools", "github:a.b" })
    rec:stop()
    assert.are.equal(0, r.code, r.stderr)
    local got = rec:requests()
    assert.are.equal(2, #got)
    for _, req in ipairs(got) do
      assert.is_truthy(r.stderr:find("GET " .. rec.url .. req.target .. " ", 1, true), req.target .. "\n" .. r.stderr)
    end
  end)

  it("sends no token with a full URL outside the provider's origin", function()
    local rec, cfg = recorded()
    local other = recorder.start()
    local r = gf.run_script(([[
assert(fleet.request("GET", %q))
assert(fleet.request("GET", "/own"))
]]):format(other.url .. "/elsewhere"), cfg)
    rec:stop()
    other:stop()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ { method = "GET", target = "/elsewhere", authorization = false } }, other:requests())
    assert.are.same({ { method = "GET", target = "/own", authorization = true } }, rec:requests())
  end)
end)

describe("owner lists", function()
  local emu

  setup(function()
    emu = emulator.start({ scenario = {
      owners = { { name = "acme", kind = "org", repos = 45 }, { name = "bob", kind = "user", repos = 3 } },
    } })
  end)
  teardown(function() emulator.stop_all() end)
  after_each(gf.cleanup)

  local function config()
    return (gf.config({ providers = { github = { base_url = emu.url } } }))
  end

  -- Every public repository of acme and bob, each exactly once.
  local function assert_each_once(stdout)
    local world = emu:world().owners
    local seen, n = {}, 0
    for _, rec in ipairs(gf.ndjson(stdout)) do
      assert.is_nil(seen[rec.full_name], rec.full_name .. " written twice")
      seen[rec.full_name] = true
      n = n + 1
    end
    assert.are.equal(world.acme.public + world.bob.public, n)
  end

  it("fetches and writes an owner given more than once only once", function()
    local r = gf.run({ "--config", config(), "fetch", "-f", "ndjson", "acme", "acme", "ACME", "bob", "github:acme" })
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(r.stdout)
    local k = gf.run({ "--config", config(), "fetch", "-f", "ndjson", "--keep-duplicates", "acme", "acme", "bob" })
    assert.are.equal(0, k.code, k.stderr)
    local world = emu:world().owners
    assert.are.equal(2 * world.acme.public + world.bob.public, #gf.ndjson(k.stdout))
  end)

  it("reads a 5,000-line owners file (and stdin) with duplicates, blanks and comments once each", function()
    local dir = gf.tmpdir()
    local lines = {}
    local kinds = { "acme", "", "# acme is here again", "  bob  ", "github:acme", "\t", "Bob # a comment",
      "#", "acme\r" }
    for i = 1, 5000 do lines[i] = kinds[(i - 1) % #kinds + 1] end
    local file = gf.write(dir .. "/owners.txt", table.concat(lines, "\n") .. "\n")
    local r = gf.run({ "--config", config(), "fetch", "-f", "ndjson", "--owners-file", file, "bob" })
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(r.stdout)
    local s = gf.run({ "--config", config(), "fetch", "-f", "ndjson", "--owners-file", "-" }, { stdin = file })
    assert.are.equal(0, s.code, s.stderr)
    assert_each_once(s.stdout)
  end)

  it("refuses empty owners, unknown providers and empty names where they were typed", function()
    local dir = gf.tmpdir()
    local cases = {
      { { "acme", "" }, 'argument 2: "": empty owner' },
      { { "nosuch:foo" }, "argument 1: \"nosuch:foo\": unknown provider 'nosuch' %(providers: .*github" },
      { { "github:" }, "argument 1: \"github:\": empty owner after 'github:'" },
      { { ":acme" }, "argument 1: \":acme\": empty provider before ':'" },
      { { "ac me" }, "argument 1: .-no space or control character" },
      { { "acme//x" }, "argument 1: .-no empty part" },
    }
    for _, c in ipairs(cases) do
      local args = { "--config", config(), "fetch" }
      for _, a in ipairs(c[1]) do args[#args + 1] = a end
      local r = gf.run(args)
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("gitfleet fetch: " .. c[2], r.stderr)
      assert.are.equal("", r.stdout)
    end
    local file = gf.write(dir .. "/owners.txt", "acme\n# fine\n\nnosuch:foo\n")
    local r = gf.run({ "--config", config(), "fetch", "--owners-file", file })
    assert.are.equal(2, r.code)
    assert.matches(file:gsub("%p", "%%%0") .. ":4: \"nosuch:foo\": unknown provider", r.stderr)
  end)

  it("gives one clear line for an owners file that cannot be read as lines", function()
    local dir = gf.tmpdir()
    local long = gf.write(dir .. "/long.txt", "acme\n" .. ("x"):rep(5000) .. "\n")
    for _, c in ipairs({
      { dir, "cannot read " .. dir:gsub("%p", "%%%0") .. ": Is a directory" },
      { "/dev/zero", "/dev/zero: line 1 is longer than 4096 bytes" },
      { long, long:gsub("%p", "%%%0") .. ": line 2 is longer than 4096 bytes" },
      { dir .. "/missing", "cannot read %-%-owners%-file .*missing: No such file or directory" },
    }) do
      local r = gf.run({ "--config", config(), "fetch", "--owners-file", c[1] }, { timeout = 20 })
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("^gitfleet fetch: " .. c[2] .. "\nTry 'gitfleet fetch %-%-help'.\n$", r.stderr)
      assert.is_falsy(r.stderr:find("traceback", 1, true))
    end
  end)
end)
