-- Tokens never reach Lua, stdout, stderr (at any log level), error
-- objects, rate-limit output or the cache, and never follow a redirect to
-- another host. Each spec tries to make one leak and fails if it does.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local recorder = require("spec.support.recorder")

local GOOD = "ghp_SECRETgood0123456789abcdefghijklmnop"
local BAD = "ghp_SECRETrevoked0123456789abcdefghijkl"
local BB_PASS = "SECRETbitbucketAppPassword0123"

local function assert_clean(text, where)
  for _, s in ipairs({ GOOD, BAD, BB_PASS, "SECRETgood", "SECRETrevoked", "SECRETbitbucket" }) do
    assert.is_nil(text:find(s, 1, true), ("a secret reached %s:\n%s"):format(where, text))
  end
end

-- Walks everything reachable from the registry and _G (tables, keys,
-- function upvalues, metatables) and prints every string it finds.
local HEAP_WALK = [[
local seen, out = {}, {}
local function walk(v, depth)
  if depth > 60 then return end
  local t = type(v)
  if t == "string" then out[#out + 1] = v return end
  if (t ~= "table" and t ~= "function" and t ~= "userdata" and t ~= "thread") or seen[v] then return end
  seen[v] = true
  if t == "table" then
    for k, x in next, v do walk(k, depth + 1) walk(x, depth + 1) end
  elseif t == "function" then
    for i = 1, 255 do
      local name, x = debug.getupvalue(v, i)
      if not name then break end
      walk(x, depth + 1)
    end
  end
  local mt = debug.getmetatable(v)
  if mt then walk(mt, depth + 1) end
end
]]

describe("secrets", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  local function setup(extra_scenario)
    local scenario = {
      owners = { { name = "acme", kind = "org", repos = 150 }, { name = "old-name", kind = "org", repos = 20 } },
      tokens = { { token = GOOD, provider = "github", account = "alice" },
        { username = "alice", password = BB_PASS, provider = "bitbucket", account = "alice" } },
    }
    for k, v in pairs(extra_scenario or {}) do scenario[k] = v end
    local emu = emulator.start({ scenario = scenario })
    local dir = gf.tmpdir()
    local cfg = gf.config({ providers = {
      github = { base_url = emu.url, tokens = { { label = "good", token = "${GOOD_TOKEN}" },
        { label = "revoked", token = BAD } } },
      bitbucket = { base_url = emu.url .. "/2.0", tokens = { { label = "bb", username = "alice",
        token = "${BB_PASS}" } } },
    } }, dir)
    return emu, cfg, dir, { GOOD_TOKEN = GOOD, BB_PASS = BB_PASS }
  end

  it("never reach the Lua state, stdout or stderr, even at -vv with a refused token #valgrind", function()
    local emu, cfg, _, env = setup()
    local script = gf.script(HEAP_WALK .. [[
      fleet.on("token_disabled", function(e) print("disabled", e.token) end)
      local repos, err = fleet.fetch_repositories("acme")
      print(#repos, err)
      local _, nf = fleet.fetch_repositories("no-such-owner")
      for k, v in pairs(nf) do print("err", k, v) end
      for _, r in ipairs(fleet.rate_limit()) do for k, v in pairs(r) do print("rl", k, v) end end
      for _, c in ipairs(fleet.validate_credentials("github")) do for k, v in pairs(c) do print("vc", k, v) end end
      local resp = fleet.request("GET", "/user")
      for k, v in pairs(resp.headers) do print("hdr", k, v) end
      print(fleet.json.encode(fleet.config()))
      walk(debug.getregistry(), 0)
      walk(_G, 0)
      print(table.concat(out, "\n"))
    ]])
    local r = gf.run({ "--config", cfg, "-vv", "run", script }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("disabled\trevoked", r.stdout)
    assert.matches("token revoked of github was refused", r.stderr)
    assert_clean(r.stdout, "stdout")
    assert_clean(r.stderr, "stderr")
    assert.is_true(#r.stdout > 10000) -- the heap walk did print the state's strings
    assert.is_true(emu:stats().credentialed_requests > 0)
  end)

  it("never appear in config check, providers, rate-limit or fetch output", function()
    local _, cfg, _, env = setup()
    for _, args in ipairs({ { "config", "check" }, { "providers" }, { "rate-limit", "--format", "json" },
      { "rate-limit" }, { "fetch", "acme", "--format", "json" }, { "-vv", "fetch", "acme", "no-such-owner" } }) do
      local full = { "--config", cfg }
      for _, a in ipairs(args) do full[#full + 1] = a end
      local r = gf.run(full, { env = env })
      assert_clean(r.stdout, table.concat(args, " ") .. " stdout")
      assert_clean(r.stderr, table.concat(args, " ") .. " stderr")
    end
  end)

  it("are not stored in the cache file", function()
    local _, cfg, dir, env = setup()
    local r = gf.run({ "--config", cfg, "fetch", "acme", "--output", dir .. "/out.ndjson" }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    for _, f in ipairs({ "cache.sqlite", "cache.sqlite-wal" }) do
      local data = gf.slurp(dir .. "/" .. f)
      if data then assert_clean(data, f) end
    end
    assert.is_truthy(gf.slurp(dir .. "/cache.sqlite"))
  end)

  it("stay behind when a redirect leaves the provider's host #valgrind", function()
    local other = emulator.start({ scenario = {
      owners = { { name = "old-name", kind = "org", repos = 20 } } } })
    local emu, cfg, _, env = setup({ redirects = { ["old-name"] = other.url } })
    local r = gf.run_script([[
      local repos, err = fleet.fetch_repositories("old-name", { provider = "github" })
      print(repos and #repos, err)
    ]], cfg, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    -- without the credential, the other host shows only public repositories
    assert.are.equal(("%d\tnil\n"):format(other:world().owners["old-name"].public), r.stdout)
    local s = other:stats()
    assert.is_true(s.requests > 0, require("cjson").encode(s))
    assert.are.equal(0, s.credentialed_requests)
    assert.is_true(emu:stats().credentialed_requests > 0)
  end)

  it("cannot be dumped: the process is not dumpable", function()
    local r = gf.run_script([[
      local f = io.open("/proc/self/status")
      local text = f:read("a")
      f:close()
      -- prctl(PR_SET_DUMPABLE, 0) makes /proc/self owned by root and core dumps off
      local limit = io.open("/proc/self/limits"):read("a")
      print(limit:match("Max core file size%s+(%S+)"))
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("0\n", r.stdout)
  end)

  -- Runs gitfleet once per argument list; each must succeed, and
  -- check(text, where) is applied to its stdout and stderr.
  local function run_each(cfg, env, arg_lists, check)
    for _, args in ipairs(arg_lists) do
      local full = { "--config", cfg }
      for _, a in ipairs(args) do full[#full + 1] = a end
      local r = gf.run(full, { env = env })
      assert.are.equal(0, r.code, r.stderr)
      check(r.stdout, args[#args] .. " stdout")
      check(r.stderr, args[#args] .. " stderr")
    end
  end

  it("from credential helpers never reach the Lua state, stdout, stderr or the cache, even at -vv", function()
    local emu = setup()
    local dir = gf.tmpdir()
    local cmd = gf.write(dir .. "/vault", "#!/bin/sh\necho " .. GOOD .. "\n")
    local git_helper = gf.write(dir .. "/git-helper", "#!/bin/sh\n[ \"$1\" = get ] || exit 0\n" ..
      "echo username=x\necho password=" .. BAD .. "\n")
    os.execute("chmod +x " .. gf.quote(cmd) .. " " .. gf.quote(git_helper))
    gf.write(dir .. "/gitconfig", "[credential]\n\thelper = " .. git_helper .. "\n")
    local cfg = gf.write(dir .. "/gitfleet.yaml", table.concat({
      "providers:", "  github:", "    base_url: " .. emu.url, "    tokens:",
      "      - { label: vault, token_command: [" .. cmd .. "] }",
      "      - { label: git, credential: git }",
      "cache: { path: " .. dir .. "/cache.sqlite }", "" }, "\n"))
    local script = gf.script(HEAP_WALK .. [[
      local repos = fleet.fetch_repositories("acme")
      print(#repos)
      for _, c in ipairs(fleet.validate_credentials("github")) do for k, v in pairs(c) do print("vc", k, v) end end
      print(fleet.json.encode(fleet.config()))
      walk(debug.getregistry(), 0)
      walk(_G, 0)
      print(table.concat(out, "\n"))
    ]])
    local env = { GIT_CONFIG_GLOBAL = dir .. "/gitconfig", GIT_CONFIG_NOSYSTEM = "1" }
    run_each(cfg, env, { { "-vv", "run", script }, { "config", "check" }, { "rate-limit" } }, assert_clean)
    assert.is_true(emu:stats().credentialed_requests > 0)
    for _, f in ipairs({ "cache.sqlite", "cache.sqlite-wal" }) do
      local data = gf.slurp(dir .. "/" .. f)
      if data then assert_clean(data, f) end
    end
  end)

  it("of GitHub Apps (key, JWTs, installation tokens) never reach the Lua state, output, logs or the cache", function()
    local dir = gf.tmpdir()
    local key, pub = dir .. "/app.pem", dir .. "/app.pub"
    assert(os.execute(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s 2>/dev/null && " ..
      "openssl pkey -in %s -pubout -out %s && chmod 600 %s"):format(gf.quote(key), gf.quote(key), gf.quote(pub),
      gf.quote(key))))
    local key_body = gf.slurp(key):match("\n(%S+)\n")
    local emu = emulator.start({ scenario = {
      owners = { { name = "acme", kind = "org", repos = 150 } },
      apps = { { id = 77, public_key = gf.slurp(pub), token_lifetime = 3,
        installations = { { id = 7001, account = "acme" } } } },
      limits = { github = { limit = 1, window = 1 } } } })
    local cfg = gf.write(dir .. "/gitfleet.yaml", table.concat({
      "providers:", "  github:", "    base_url: " .. emu.url, "    apps:",
      "      - { label: app, app_id: 77, private_key: \"${APP_KEY}\" }",
      "cache: { path: " .. dir .. "/cache.sqlite }", "" }, "\n"))
    local function clean(text, where)
      for _, s in ipairs({ "ghs_", "eyJhbGciOiJSUzI1NiIs", "PRIVATE KEY", key_body }) do
        assert.is_nil(text:find(s, 1, true), ("a secret reached %s:\n%s"):format(where, text))
      end
    end
    -- 2 pages at 1 a second on 3-second tokens: renewed at least once
    local script = gf.script(HEAP_WALK .. [[
      local repos, err = fleet.fetch_repositories("acme")
      print(#repos, err)
      for _, r in ipairs(fleet.rate_limit()) do for k, v in pairs(r) do print("rl", k, v) end end
      print(fleet.json.encode(fleet.config()))
      walk(debug.getregistry(), 0)
      walk(_G, 0)
      print(table.concat(out, "\n"))
    ]])
    run_each(cfg, { APP_KEY = gf.slurp(key) },
      { { "-vv", "run", script }, { "config", "check" }, { "rate-limit", "--format", "json" } }, clean)
    local s = emu:stats()
    assert.is_true(s.apps.tokens_issued >= 2, require("cjson").encode(s.apps))
    for _, f in ipairs({ "cache.sqlite", "cache.sqlite-wal" }) do
      local data = gf.slurp(dir .. "/" .. f)
      if data then clean(data, f) end
    end
  end)
  it("sent back by a server, in a body or a header, are redacted before Lua sees them, with 10,000 tokens", function()
    -- 10,000 tokens of the same shape as GitHub's (one in use) and a
    -- Bitbucket password sent as HTTP Basic: the echoes of each reach the
    -- script starred, and the 20,002 secrets cost the run no pass apiece.
    local rec = recorder.start()
    local dir = gf.tmpdir()
    local rng, alphabet = 12345, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    local tokens, lines = {}, { "providers:", "  github:", "    base_url: " .. rec.url, "    tokens:" }
    for i = 1, 10000 do
      local t = { "ghp_" }
      for k = 2, 37 do
        rng = (rng * 1103515245 + 12345) % 2147483648
        local c = rng % 62 + 1
        t[k] = alphabet:sub(c, c)
      end
      tokens[i] = table.concat(t)
      -- one account: no lookup of 10,000 accounts before the run can end
      lines[#lines + 1] = ("      - { label: t%d, token: %s, account: bot }"):format(i, tokens[i])
    end
    lines[#lines + 1] = "  bitbucket:"
    lines[#lines + 1] = "    base_url: " .. rec.url
    lines[#lines + 1] = ("    tokens: [ { label: bb, username: someone, token: %s } ]"):format(BB_PASS)
    lines[#lines + 1] = "cache: { path: " .. dir .. "/cache.sqlite }"
    local cfg = gf.write(dir .. "/gitfleet.yaml", table.concat(lines, "\n") .. "\n")
    local r = gf.run_script([[
      for _, how in ipairs({ { provider = "github", token = "t7777" }, { provider = "bitbucket" } }) do
        local resp = assert(fleet.request("GET", "/_echo", how))
        print(resp.data.authorization)
        print(resp.data.message)
        print(resp.headers["x-echo"])
      end
    ]], cfg)
    rec:stop()
    assert.are.equal(0, r.code, r.stderr)
    local basic = "Basic " .. gf.capture("printf %s " .. gf.quote("someone:" .. BB_PASS) .. " | base64 -w0")
    for _, text in ipairs({ r.stdout, r.stderr }) do
      assert.is_nil(text:find(tokens[7777], 1, true), text)
      assert.is_nil(text:find(basic:sub(7), 1, true), text)
      assert_clean(text, "the output")
    end
    -- each echo arrived, starred: 3 for the token, 3 for the Basic form
    local starred = select(2, r.stdout:gsub(("%*"):rep(36) .. "+", ""))
    assert.are.equal(6, starred, r.stdout)
    assert.matches("bad credentials: Bearer %*+!", r.stdout)
    assert.matches("bad credentials: Basic %*+!", r.stdout)
    local sent = rec:requests()
    assert.are.equal(2, #sent)
    assert.is_true(sent[1].authorization and sent[2].authorization)
  end)
end)
