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

  it("refuses a NUL byte in a URL, a header or an output path, a method that is not one, and a query value that "
    .. "would go out as junk, sending nothing", function()
    local rec, cfg = recorded()
    local r = gf.run_script([[
local function try(f, ...)
  local ok, err = pcall(f, ...)
  print(ok, (tostring(err):gsub("^.-:%d+: ", "")))
end
try(fleet.request, "GET", "/users/acme\0/../x")
try(fleet.request, "GET /x HTTP/1.1\r\nX: y", "/users/acme")
try(fleet.request, "G\0T", "/users/acme")
try(fleet.request, "", "/users/acme")
try(fleet.request, "GET", "/users/acme", { headers = { ["X-A"] = "a\0b" } })
try(fleet.request, "GET", "/users/acme", { query = { a = { b = 1 } } })
try(fleet.request, "GET", "/users/acme", { query = { n = 0/0 } })
try(fleet.request, "GET", "/users/acme", { query = { [1] = "x" } })
try(fleet.paginate, "/users/acme/repos", { window = 0 })
try(fleet.write, { { name = "a" } }, { output = (...) .. "/a\0b" })
]], cfg, { args = { gf.tmpdir() } })
    rec:stop()
    assert.are.equal(0, r.code, r.stderr)
    local want = {
      "bad argument #3 to 'request' (a URL holds no NUL byte)",
      "bad argument #2 to 'request' (not an HTTP method (letters, at most 32))",
      "bad argument #2 to 'request' (not an HTTP method (letters, at most 32))",
      "bad argument #2 to 'request' (not an HTTP method (letters, at most 32))",
      "header 'X-A' contains a forbidden character",
      "query parameter 'a' must be a string, a finite number or true, not table",
      "query parameter 'n' must be a string, a finite number or true, not ",
      "a query parameter's name must be a string, not number",
      "window must be a whole number of pages from 1 to 1000, not 0",
      "bad argument #2 to 'writer' (a path holds no NUL byte)",
    }
    local lines = {}
    for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(#want, #lines, r.stdout)
    for i, w in ipairs(want) do assert.are.equal("false\t" .. w, lines[i]:sub(1, #w + 6)) end
    assert.are.same({}, rec:requests())
  end)

  it("refuses a header of 10 MB at once, instead of retrying what libcurl cannot build", function()
    local rec, cfg = recorded({ retry = { max_attempts = 6, base_delay = 0.5 } })
    local r = gf.run_script([[
local ok, err = pcall(fleet.request, "GET", "/users/acme", { headers = { ["X-A"] = ("a"):rep(10 * 1024 * 1024) } })
print(ok, (tostring(err):gsub("^.-:%d+: ", "")), fleet.stats().retries)
]], cfg)
    rec:stop()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("false\theader 'X-A' is longer than 65536 bytes\t0\n", r.stdout)
    assert.are.same({}, rec:requests())
  end)

  it("fails with a clear error when stdout or stderr was closed, instead of writing into the first socket opened",
    function()
    local emu = emulator.start({ scenario = { owners = { { name = "acme", kind = "org", repos = 30 } },
      tokens = { { token = TOKEN, provider = "github", account = "a" } } } })
    local cfg = gf.config({ providers = { github = { base_url = emu.url, tokens = { { label = "t", token = TOKEN } } } } })
    local cmd = gf.quote(gf.bin) .. " --config " .. gf.quote(cfg) .. " fetch acme"
    local closed_out = gf.sh("( exec >&-; " .. cmd .. " )")
    assert.are.equal(1, closed_out.code)
    assert.matches("cannot write to stdout: Bad file descriptor", closed_out.stderr, 1, true)
    -- without stderr the records still come whole (its messages are dropped)
    local closed_err = gf.sh("( exec 2>&-; " .. cmd .. " )")
    emu:stop()
    assert.are.equal(0, closed_err.code)
    assert.are.equal(30, select(2, closed_err.stdout:gsub("\n", "")))
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
    local script = gf.script(([[
assert(fleet.request("GET", %q))
assert(fleet.request("GET", "/own"))
]]):format(other.url .. "/elsewhere"))
    local r = gf.run({ "-vv", "--config", cfg, "run", script })
    rec:stop()
    other:stop()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ { method = "GET", target = "/elsewhere", authorization = false } }, other:requests())
    assert.are.same({ { method = "GET", target = "/own", authorization = true } }, rec:requests())
    -- and -vv says so, rather than naming a token it did not send
    local function lit(text) return (text:gsub("%p", "%%%0")) end
    assert.matches(lit("GET " .. other.url .. "/elsewhere (no token: outside ") .. "%a+'s origin%)", r.stderr)
    assert.matches(lit("GET " .. rec.url .. "/own (token ") .. "(%a+):%1%-t%)", r.stderr)
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

-- Each line of docs/providers.md "The sandbox", tried by a plugin.
describe("the plugin sandbox", function()
  after_each(gf.cleanup)

  -- A plugin named `name` whose top level runs `top` (with `report(what,
  -- value)` at hand) and whose repositories() runs `call`; the script then
  -- runs `script` with P = the plugin's table. Returns the run.
  local function probe(top, call, script, args)
    local rec = recorder.start()
    local dir = gf.tmpdir()
    gf.write(dir .. "/probe.lua", ([[
local P = { base_url = %q, auth = { header = "Authorization" }, pagination = { style = "none" },
  report = {} }
local function report(what, value) P.report[what] = tostring(value) end
local function tries(f, ...) local ok, err = pcall(f, ...) return ok or tostring(err) end
%s
function P.repositories(api, owner, opts)
%s
  return api:pages("/list/" .. util_escape(owner))
end
function P.normalize_repository(r) return { name = r.name } end
return P
]]):format(rec.url, "util_escape = require('fleet.plugin').escape\n" .. top, call or ""))
    local cfg = gf.config({ providers = { probe = { base_url = rec.url } }, plugin_paths = { dir } })
    local r = gf.run_script("local P = fleet.provider('probe').plugin\n" .. (script or ""), cfg, { args = args })
    rec:stop()
    return r, rec
  end

  it("a plugin's repositories() that raises, returns a message, a number or nothing costs that owner only", function()
    -- A raise here ended fetch's task for the owner: the owner was lost
    -- with exit 0 and not a word, and a worker waited for it for ever.
    local rec = recorder.start()
    local dir = gf.tmpdir()
    gf.write(dir .. "/shaky.lua", ([[
local P = { base_url = %q, auth = { header = "Authorization" }, pagination = { style = "none" } }
function P.repositories(api, owner, opts)
  if owner == "raises" then error("no such luck") end
  if owner == "says" then return nil, "a bare message" end
  if owner == "number" then return 42 end
  if owner == "nothing" then return nil end
  return api:pages("/list/" .. owner)
end
function P.normalize_repository(r) return { name = r.name } end
return P
]]):format(rec.url))
    local cfg = gf.config({ providers = { shaky = { base_url = rec.url } }, plugin_paths = { dir } })
    local r = gf.run({ "--config", cfg, "fetch", "-p", "shaky", "raises", "says", "number", "nothing", "fine" })
    local s = gf.run_script([[
for _, o in ipairs({ "raises", "says", "number", "nothing", "fine" }) do
  local ok, recs, err = pcall(fleet.fetch_repositories, o, { provider = "shaky" })
  if not ok then recs, err = "raised", { kind = tostring(recs):match("shaky%.lua:%d+: no such luck") } end
  print(o, type(recs) == "table" and #recs or tostring(recs), err and err.kind or "-")
end
]], cfg)
    rec:stop()
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("raises: [^\n]*shaky%.lua:3: no such luck", r.stderr)
    assert.matches("says: [^\n]*a bare message", r.stderr)
    assert.matches("number: [^\n]*repositories%(%) returned a number, not pages", r.stderr)
    assert.matches("nothing: [^\n]*returned neither pages nor an error", r.stderr)
    assert.matches("4 of 5 owners failed", r.stderr)
    -- a script gets the plugin's raise as a raise (as an argument error
    -- of its own would be), naming the plugin's line, and the rest as
    -- nil, err
    assert.are.equal(0, s.code, s.stderr)
    assert.are.equal("raises\traised\tshaky.lua:3: no such luck\nsays\tnil\tdecode\nnumber\tnil\tdecode\n"
      .. "nothing\tnil\tdecode\nfine\t0\t-\n", s.stdout)
  end)

  it("says whose budgets could not be refreshed when a plugin's rate_limit raises or fails", function()
    -- fleet.rate_limit dropped both without a word, and showed the rows as
    -- if refreshed.
    local dir = gf.tmpdir()
    gf.write(dir .. "/limits.lua", [[
local P = { base_url = "http://127.0.0.1:9", auth = { header = "Authorization" }, pagination = { style = "none" } }
function P.repositories(api, owner) return api:pages("/x") end
function P.normalize_repository(r) return r end
function P.rate_limit(api) if api.name == "limits" then error("no limits here") end return api:get("/rate") end
return P
]])
    local cfg = gf.config({ providers = {
      limits = { base_url = "http://127.0.0.1:9", tokens = { { label = "one", token = "tok-limits-one-SECRET" } } },
      offline = { plugin = "limits", base_url = "http://127.0.0.1:9",
        tokens = { { label = "two", token = "tok-offline-two-SECRET" } } },
    }, retry = { max_attempts = 1, base_delay = 0.01 }, plugin_paths = { dir } })
    local r = gf.run({ "--config", cfg, "rate-limit" })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("limits: the budgets of token one could not be refreshed: [^\n]*limits%.lua:4: no limits here",
      r.stderr)
    assert.matches("offline: the budgets of token two could not be refreshed: [^\n]*127%.0%.0%.1:9/rate", r.stderr)
    assert.is_nil(r.stderr:find("SECRET", 1, true))
    assert.is_nil(r.stdout:find("SECRET", 1, true))
  end)

  it("takes the shared string metatable out of a plugin's reach (issue: __index hijack)", function()
    local r = probe([[
report("getmetatable('')", getmetatable(""))
report("hijack", tries(function() getmetatable("").__index = function() return "PWNED" end end))
report("rawset string", tries(function() rawset(string, "find", function() return "PWNED" end) end))
report("own view", string.find == nil and "none" or string.find("abc", "b"))
]], nil, [[
print(P.report["getmetatable('')"], P.report["own view"], ("abc"):find("b"), string.find("abc", "b"))
print(P.report.hijack:match("attempt to index a nil value") ~= nil)
]])
    assert.are.equal(0, r.code, r.stderr)
    -- the plugin's own view of string changed; nobody else's did
    assert.are.equal("nil\tPWNED\t2\t2\t2\ntrue\n", r.stdout)
  end)

  it("a plugin that reaches for the string metatable at its top level fails to load, naming its file", function()
    local dir = gf.tmpdir()
    gf.write(dir .. "/hijack.lua", [[
getmetatable("").__index = function(s, k) error("hijacked " .. k) end
return { base_url = "http://127.0.0.1:1", auth = { header = "Authorization" }, pagination = { style = "none" },
  repositories = function() end, normalize_repository = function() end }
]])
    local cfg = gf.config({ providers = { hijack = {} }, plugin_paths = { dir } })
    local r = gf.run({ "--config", cfg, "fetch", "-p", "github", "acme" })
    assert.are.equal(2, r.code)
    assert.matches(dir:gsub("%p", "%%%0") .. "/hijack.lua:1: attempt to index a nil value", r.stderr)
    assert.is_falsy(r.stderr:find("hijacked", 1, true))
  end)

  it("refuses writes to the shared libraries and to required modules", function()
    local r = probe([[
report("string.rep", tries(function() string.rep = nil end))
report("json", tries(function() json.decode = nil end))
report("cjson", tries(function() require("cjson").encode = nil end))
report("util", tries(function() require("fleet.plugin").escape = nil end))
report("os", tries(function() os.time = nil end))
report("math", tries(function() math.pi = 3 end))
]], nil, [[
for _, k in ipairs({ "string.rep", "json", "cjson", "util", "os", "math" }) do
  print(k, (P.report[k]:match("read%-only")))
end
print(("x"):rep(3), require("cjson").encode({ 1 }), require("fleet.plugin").escape("a b"))
]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("string.rep\tread-only\njson\tread-only\ncjson\tread-only\nutil\tread-only\n"
      .. "os\tread-only\nmath\tread-only\nxxx\t[1]\ta%20b\n", r.stdout)
  end)

  it("lets a plugin require only cjson and fleet.plugin", function()
    local r = probe([[
for _, m in ipairs({ "fleet.core", "fleet", "fleet.api", "fleet.cli", "io", "os", "debug", "string" }) do
  report(m, tries(require, m))
end
report("cjson", type(require("cjson").decode))
report("fleet.plugin", type(require("fleet.plugin").list))
]], nil, [[
for _, m in ipairs({ "fleet.core", "fleet", "fleet.api", "fleet.cli", "io", "os", "debug", "string" }) do
  print(m, P.report[m]:match("may require only cjson and fleet.plugin") ~= nil)
end
print(P.report.cjson, P.report["fleet.plugin"])
]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(("fleet.core\ttrue\nfleet\ttrue\nfleet.api\ttrue\nfleet.cli\ttrue\nio\ttrue\nos\ttrue\n"
      .. "debug\ttrue\nstring\ttrue\nfunction\tfunction\n"), r.stdout)
  end)

  it("has no io, load, debug, coroutine, package, print or the rest of os", function()
    local r = probe([[
for _, g in ipairs({ "io", "load", "loadfile", "dofile", "debug", "coroutine", "package", "print",
  "collectgarbage" }) do report(g, type(_ENV[g])) end
for _, f in ipairs({ "execute", "getenv", "exit", "remove", "rename", "tmpname" }) do report("os." .. f, type(os[f])) end
report("os.time", type(os.time))
]], nil, [[
local keys = {}
for k in pairs(P.report) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do io.write(k, "=", P.report[k], " ") end
]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("collectgarbage=nil coroutine=nil debug=nil dofile=nil io=nil load=nil loadfile=nil "
      .. "os.execute=nil os.exit=nil os.getenv=nil os.remove=nil os.rename=nil os.time=function "
      .. "os.tmpname=nil package=nil print=nil ", r.stdout)
  end)

  it("gives a plugin globals of its own: another plugin and scripts do not see them", function()
    local r = probe([[
mine = "set by probe"
report("rawset base", tries(function() rawset(getmetatable(_ENV) or {}, "x", 1) end))
]], nil, [[
print(mine, P.report["rawset base"])
local gh = fleet.provider("github").plugin
print(gh.title)
]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("nil\ttrue\nGitHub\n", r.stdout)
  end)

  it("lets a plugin set and read metatables of its own tables only, never the host's objects'", function()
    local r = probe([[
local mt = { __index = function(_, k) return k .. "!" end }
local t = setmetatable({}, mt)
report("own", t.x)
report("own getmetatable", getmetatable(t) == mt)
]], [[
  report("api mt", getmetatable(api))
  report("set api mt", tries(setmetatable, api, {}))
  report("protected", tries(setmetatable, setmetatable({}, { __metatable = "no" }), {}))
  P.calls = (P.calls or 0) + 1
  if P.calls == 1 then -- the next call must not see these
    api.base_url = "http://127.0.0.1:1"
    api.request = function() error("replaced by the plugin") end
  end
  report("string mt", getmetatable("x"))
]], [[
local api = fleet.provider("probe")
local before = api.base_url
print(pcall(fleet.fetch_repositories, "acme", { provider = "probe" }))
print(P.report.own, P.report["own getmetatable"], P.report["api mt"], P.report["string mt"])
print(P.report["set api mt"]:match("only on tables they made") ~= nil, P.report.protected)
print(fleet.provider("probe").base_url == before, getmetatable(api) ~= nil)
print(#assert(fleet.fetch_repositories("acme", { provider = "probe" })))
]])
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^false\t.-\nx!\ttrue\tnil\tnil\ntrue\tcannot change a protected metatable\ntrue\ttrue\n0\n$",
      r.stdout)
  end)
end)

describe("a script that never yields", function()
  after_each(gf.cleanup)

  -- Starts gitfleet with args in the background, sends `signal` once the
  -- file `ready` exists (and `delay` seconds more), and returns the run; a stuck run is killed after
  -- 30 s (exit 137), which fails the spec.
  local function signalled(signal, args, ready, delay)
    local cmd = { gf.quote(gf.bin) }
    for _, a in ipairs(args) do cmd[#cmd + 1] = gf.quote(a) end
    return gf.sh(([[(
%s </dev/null & pid=$!
( sleep 30; kill -KILL $pid ) 2>/dev/null & guard=$!
for i in $(seq 1 200); do [ -s %s ] && break; sleep 0.05; done
sleep %s
kill -%s $pid; wait $pid; code=$?; kill $guard 2>/dev/null; exit $code)]]):format(table.concat(cmd, " "),
      gf.quote(ready), delay or 0, signal))
  end

  local LOOP = [[
local out = ...
assert(fleet.write({ { name = "one" }, { name = "two" } }, { format = "ndjson", output = out, fields = { "name" } }))
while true do pcall(function() while true do end end) end
]]

  for signal, code in pairs({ TERM = 143, INT = 130 }) do
    it("stops on the first SIG" .. signal .. " with exit " .. code .. ", the output written so far intact", function()
      local dir = gf.tmpdir()
      local out = dir .. "/out.ndjson"
      local r = signalled(signal, { "run", gf.script(LOOP, dir), out }, out)
      assert.are.equal(code, r.code, r.stderr)
      assert.are.equal('{"name":"one"}\n{"name":"two"}\n', gf.slurp(out))
      assert.matches("interrupted", r.stderr)
    end)
  end

  it("stops a plugin function that loops forever", function()
    local dir = gf.tmpdir()
    gf.write(dir .. "/spin.lua", [[
return { base_url = "http://127.0.0.1:1", auth = { header = "Authorization" }, pagination = { style = "none" },
  repositories = function() while true do end end, normalize_repository = function() end }
]])
    local cfg = gf.config({ plugin_paths = { dir } })
    local ready = gf.write(dir .. "/ready", "x")
    -- a plugin cannot write a file to say it is spinning: give it time
    local r = signalled("TERM", { "--config", cfg, "fetch", "-p", "spin", "acme" }, ready, 1.5)
    assert.are.equal(143, r.code, r.stderr)
  end)

  it("stops at lua.script_timeout with exit 124, the output written so far intact", function()
    local dir = gf.tmpdir()
    local out = dir .. "/out.ndjson"
    local cfg = gf.config({ lua = { script_timeout = 0.5 } })
    local r = gf.run({ "--config", cfg, "run", gf.script(LOOP, dir), out }, { timeout = 30 })
    assert.are.equal(124, r.code, r.stderr)
    assert.matches("lua.script_timeout %(0.5s%)", r.stderr)
    assert.are.equal('{"name":"one"}\n{"name":"two"}\n', gf.slurp(out))
  end)
end)

describe("configuration values that would mislead a run", function()
  after_each(gf.cleanup)

  local function config_check(yaml)
    local dir = gf.tmpdir()
    local path = gf.write(dir .. "/c.yaml", yaml)
    return gf.run({ "--config", path, "config", "check" }, { timeout = 20 }), dir
  end

  it("refuses a FIFO, a socket or a device as token_file instead of hanging", function()
    local dir = gf.tmpdir()
    assert(os.execute("mkfifo " .. gf.quote(dir .. "/fifo")))
    for _, file in ipairs({ dir .. "/fifo", "/dev/zero", "/dev/null" }) do
      local r = config_check(("providers:\n  github:\n    tokens: [{token_file: %s}]\n"):format(file))
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("c%.yaml:3:%d+: token file " .. file:gsub("%p", "%%%0") .. " is not a regular file", r.stderr)
    end
  end)

  it("refuses a base_url with a fragment, a query, a bad port, an unclosed [ or a dot segment", function()
    for url, why in pairs({
      ["http://127.0.0.1:8/api#x"] = "no fragment",
      ["http://127.0.0.1:8/api?x=1"] = "no query",
      ["http://127.0.0.1:99999/api"] = "port must be a number from 1 to 65535",
      ["http://127.0.0.1:0"] = "port must be a number from 1 to 65535",
      ["http://[::1/api"] = "unclosed '%['",
      ["http://h/api/../v3"] = "'%.' or '%.%.' segment",
    }) do
      local r = config_check(("providers:\n  github:\n    base_url: %q\n"):format(url))
      assert.are.equal(2, r.code, url .. ": " .. r.stderr)
      assert.matches("c%.yaml:3:%d+: base_url: .-" .. why, r.stderr)
    end
    local ok = config_check('providers:\n  github:\n    base_url: "http://[::1]:8080/api/v3"\n')
    assert.are.equal(0, ok.code, ok.stderr)
  end)

  it("sends nothing with the token to a base_url that had a fragment (it is refused first)", function()
    local rec = recorder.start()
    local dir = gf.tmpdir()
    local path = gf.write(dir .. "/c.yaml", ("providers:\n  github:\n    base_url: %q\n    tokens: [%q]\n")
      :format(rec.url .. "/#frag", TOKEN))
    local r = gf.run({ "--config", path, "fetch", "acme" })
    rec:stop()
    assert.are.equal(2, r.code, r.stderr)
    assert.are.same({}, rec:requests())
    assert.is_falsy(r.stderr:find(TOKEN, 1, true))
  end)
end)
