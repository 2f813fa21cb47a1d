-- GitHub Apps through the real binary and the emulator, which verifies
-- RS256 JWTs against the app's public key and issues expiring
-- installation tokens with budgets of their own.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local PERSONAL = "ghp_APPSpersonal000000000000000000000000"
local q = gf.quote

local function keypair(dir, name)
  local key, pub = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".pub"
  assert(os.execute(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s 2>/dev/null && " ..
    "openssl pkey -in %s -pubout -out %s && chmod 600 %s"):format(q(key), q(key), q(pub), q(key))))
  return key, gf.slurp(pub)
end

-- owners: list of {name, repos}; apps: list of {id, pub, installations = {{id, account}}}
local function start(owners, apps, extra)
  local list = {}
  for i, o in ipairs(owners) do list[i] = { name = o[1], kind = "org", repos = o[2] } end
  local scenario = { owners = list, apps = {},
    tokens = { { token = PERSONAL, provider = "github", account = "personal" } } }
  for i, a in ipairs(apps) do
    local inst = {}
    for j, x in ipairs(a.installations) do inst[j] = { id = x[1], account = x[2] } end
    scenario.apps[i] = { id = a.id, public_key = a.pub, installations = inst, token_lifetime = a.lifetime }
  end
  for k, v in pairs(extra or {}) do scenario[k] = v end
  return emulator.start({ scenario = scenario })
end

-- apps: list of {label, id, key}
local function config(dir, emu, apps, with_personal, extra)
  local lines = { "providers:", "  github:", "    base_url: " .. emu.url }
  if with_personal ~= false then
    lines[#lines + 1] = "    tokens:"
    lines[#lines + 1] = "      - { label: personal, token: " .. PERSONAL .. " }"
  end
  lines[#lines + 1] = "    apps:"
  for _, a in ipairs(apps) do
    lines[#lines + 1] = ("      - { label: %s, app_id: %d, private_key_file: %s%s }"):format(a[1], a[2], a[3],
      a[4] and (", installations: " .. a[4]) or "")
  end
  lines[#lines + 1] = "cache: { path: " .. dir .. "/cache.sqlite }"
  lines[#lines + 1] = "retry: { base_delay: 0.05, max_delay: 2, reset_margin: 0.25 }"
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  return gf.write(dir .. "/gitfleet.yaml", table.concat(lines, "\n") .. "\n")
end

local function expected(world, names)
  local n = 0
  for _, name in ipairs(names) do n = n + world.owners[name].repos end
  return n
end

-- Requests per scenario credential: 0 is the personal token, then one per
-- installation in the order the scenario lists them.
local function per_token(stats, i) return stats.tokens[tostring(i)] end

local function assert_no_secret(text, key_pem)
  assert.is_nil(text:find("ghs_", 1, true), "an installation token leaked:\n" .. text)
  assert.is_nil(text:find("eyJhbGciOiJSUzI1NiIs", 1, true), "a JWT leaked:\n" .. text)
  assert.is_nil(text:find("PRIVATE KEY", 1, true), "a private key leaked:\n" .. text)
  local body = key_pem:match("\n(%S+)\n")
  assert.is_nil(text:find(body, 1, true), "a private key leaked:\n" .. text)
end

describe("GitHub Apps", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("send each owner's requests on the installation covering it, and the rest on the other tokens", function()
    local dir = gf.tmpdir()
    local key, pub = keypair(dir, "app")
    local emu = start({ { "acme", 450 }, { "globex", 120 }, { "initech", 40 } },
      { { id = 101, pub = pub, installations = { { 1001, "acme" }, { 1002, "globex" } } } })
    local cfg = config(dir, emu, { { "inventory", 101, key } })
    local r = gf.run({ "--config", cfg, "fetch", "acme", "globex", "initech" })
    assert.are.equal(0, r.code, r.stderr)
    local records = gf.ndjson(r.stdout)
    assert.are.equal(expected(emu:world(), { "acme", "globex", "initech" }), #records)
    local s = emu:stats()
    assert.are.equal(5, per_token(s, 1).ok)     -- acme: 5 pages, all on its installation
    assert.are.equal(2, per_token(s, 2).ok)     -- globex: 2 pages
    assert.are.equal(1, per_token(s, 0).ok)     -- initech: no installation covers it
    assert.are.equal(1, s.apps.installation_lists)
    assert.are.equal(2, s.apps.tokens_issued)
    assert.are.equal(0, s.apps.jwt_refused)
    assert.are.equal(0, s.unauthorized)
    -- JWT calls draw on no installation's budget
    assert.are.equal(5, s.budgets["github:installation-1001:core"].used)
    assert_no_secret(r.stderr, gf.slurp(key))
  end)

  it("lists every page of installations and uses only those asked for", function()
    local dir = gf.tmpdir()
    local key, pub = keypair(dir, "app")
    local owners, inst = {}, {}
    for i = 1, 130 do
      owners[i] = { ("org-%03d"):format(i), 1 }
      inst[i] = { 5000 + i, owners[i][1] }
    end
    local emu = start(owners, { { id = 7, pub = pub, installations = inst } })
    -- two by id, one by login, one that does not exist
    local cfg = config(dir, emu, { { "listed", 7, key, "[5001, '5002', ORG-130, 99999]" } })
    local r = gf.run({ "--config", cfg, "fetch", "org-001", "org-002", "org-130", "org-050" })
    assert.are.equal(0, r.code, r.stderr)
    local s = emu:stats()
    assert.are.equal(3, s.apps.tokens_issued)
    assert.are.equal(2, s.by_path_kind.app_installations) -- 130 installations: two pages of 100
    assert.matches("app listed: no installation 99999 among the app's installations", r.stderr, 1, true)
    assert.are.equal(1, per_token(s, 0).ok) -- org-050: its installation was not asked for
    assert.are.equal(4, #gf.ndjson(r.stdout))
  end)

  it("with a key GitHub rejects are disabled with one message, and the run goes on with the other tokens", function()
    local dir = gf.tmpdir()
    local _, pub = keypair(dir, "registered")
    local wrong = keypair(dir, "wrong")
    local emu = start({ { "acme", 150 }, { "globex", 20 } },
      { { id = 101, pub = pub, installations = { { 1001, "acme" } } } })
    local cfg = config(dir, emu, { { "mis-keyed", 101, wrong } })
    local r = gf.run({ "--config", cfg, "fetch", "acme", "globex" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(expected(emu:world(), { "acme", "globex" }), #gf.ndjson(r.stdout))
    local _, count = r.stderr:gsub("app mis%-keyed of github is disabled for this run: GitHub refused its JWT %(401%)", "")
    assert.are.equal(1, count, r.stderr)
    local s = emu:stats()
    assert.are.equal(1, s.apps.jwt_refused)
    assert.are.equal(0, s.apps.tokens_issued)
    assert.are.equal(3, per_token(s, 0).ok) -- all of it on the personal token
    assert_no_secret(r.stderr, gf.slurp(wrong))
  end)

  it("fetch 200 owners through two Apps of two installations and a personal token, renewing 20-second tokens", function()
    local dir = gf.tmpdir()
    local key1, pub1 = keypair(dir, "one")
    local key2, pub2 = keypair(dir, "two")
    local owners, names, covered = {}, {}, { [50] = 1001, [100] = 1002, [150] = 2001, [200] = 2002 }
    for i = 1, 200 do
      owners[i] = { ("owner-%03d"):format(i), covered[i] and 3000 or 5 }
      names[i] = owners[i][1]
    end
    local emu = start(owners, {
      { id = 1, pub = pub1, lifetime = 20, installations = { { 1001, names[50] }, { 1002, names[100] } } },
      { id = 2, pub = pub2, lifetime = 20, installations = { { 2001, names[150] }, { 2002, names[200] } } },
    }, { limits = { github = { limit = 10, window = 1 } } })
    local cfg = config(dir, emu, { { "one", 1, key1 }, { "two", 2, key2 } })
    local owners_file = gf.write(dir .. "/owners.txt", table.concat(names, "\n") .. "\n")
    local r = gf.run({ "--config", cfg, "fetch", "--owners-file", owners_file }, { timeout = 300 })
    assert.are.equal(0, r.code, r.stderr)
    local seen, n = {}, 0
    for _, rec in ipairs(gf.ndjson(r.stdout)) do
      assert.is_nil(seen[rec.full_name], rec.full_name)
      seen[rec.full_name], n = true, n + 1
    end
    assert.are.equal(expected(emu:world(), names), n)
    local s = emu:stats()
    for i = 1, 4 do assert.are.equal(30, per_token(s, i).ok, cjson.encode(s.tokens)) end -- each on its own
    assert.are.equal(196, per_token(s, 0).ok)
    assert.are.equal(0, s.primary_limited)
    assert.are.equal(0, s.unauthorized)
    assert.are.equal(0, s.apps.expired_token_used)
    assert.is_true(s.apps.tokens_issued > 4, cjson.encode(s.apps)) -- renewed in the middle of the run
    io.stderr:write(("\n[apps] 200 owners: %d repositories, %d requests, %d tokens issued, %s\n")
      :format(n, s.requests, s.apps.tokens_issued, cjson.encode(s.by_status)))
  end)

  it("renew installation tokens before they expire, so a run that outlives them has no failed request", function()
    local dir = gf.tmpdir()
    local key, pub = keypair(dir, "app")
    local emu = start({ { "acme", 3000 } },
      { { id = 101, pub = pub, lifetime = 6, installations = { { 1001, "acme" } } } },
      { limits = { github = { limit = 4, window = 1 } } })
    local cfg = config(dir, emu, { { "short", 101, key } })
    local r = gf.run({ "--config", cfg, "fetch", "acme" }, { timeout = 120 })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(3000, #gf.ndjson(r.stdout))
    local s = emu:stats()
    assert.is_true(s.apps.tokens_issued >= 3, cjson.encode(s.apps)) -- 30 pages at 4 a second: over 7 s
    assert.are.equal(0, s.apps.expired_token_used)
    assert.are.equal(0, s.unauthorized)
    assert.are.equal(0, s.primary_limited)
    assert.are.equal(30, per_token(s, 1).ok)
  end)

  it("are shown by rate-limit with their installations' budgets", function()
    local dir = gf.tmpdir()
    local key, pub = keypair(dir, "app")
    local emu = start({ { "acme", 5 }, { "globex", 5 } },
      { { id = 101, pub = pub, installations = { { 1001, "acme" }, { 1002, "globex" } } } })
    local cfg = config(dir, emu, { { "inventory", 101, key } })
    local r = gf.run({ "--config", cfg, "rate-limit", "--format", "json" })
    assert.are.equal(0, r.code, r.stderr)
    local rows = {}
    for _, row in ipairs(cjson.decode(r.stdout)) do rows[row.token] = row end
    assert.are.equal("app", rows["inventory"].kind)
    assert.are.equal("installation", rows["inventory/acme"].kind)
    assert.are.equal("installation", rows["inventory/globex"].kind)
    assert.are.equal(5000, rows["inventory/acme"].limit)
    assert.is_number(rows["inventory/acme"].expires_at)
    assert.are.equal("token", rows["personal"].kind)
    local t = gf.run({ "--config", cfg, "rate-limit" })
    assert.matches("inventory/globex%s+installation", t.stdout)
    local c = gf.run({ "--config", cfg, "config", "check" })
    assert.matches("app inventory (app id 101, installations: auto)", c.stdout, 1, true)
    assert_no_secret(r.stdout .. r.stderr .. t.stdout .. t.stderr, gf.slurp(key))
  end)

  it("are configuration errors when the key or the entry is wrong, naming the app, never the key", function()
    local dir = gf.tmpdir()
    local key = keypair(dir, "app")
    gf.write(dir .. "/notakey.pem", "-----BEGIN PRIVATE KEY-----\nAAAASECRETLOOKING\n-----END PRIVATE KEY-----\n")
    os.execute("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " .. q(dir .. "/ec.pem") ..
      " 2>/dev/null")
    local emu = { url = "http://127.0.0.1:9" }
    for entry, want in pairs({
      ["{ label: a, app_id: 1, private_key_file: missing.pem }"] = "app a: private_key_file cannot read",
      ["{ label: a, app_id: 1, private_key_file: notakey.pem }"] = "app a: the private key is not a PEM private key",
      ["{ label: a, app_id: 1, private_key_file: ec.pem }"] = "is not an RSA key of at least 2048 bits",
      ["{ label: a, app_id: x1, private_key_file: " .. key .. " }"] = "app a: app_id must be a number",
      ["{ label: a, private_key_file: " .. key .. " }"] = "app a: app_id is required",
      ["{ label: a, app_id: 1 }"] = "app a: give one of private_key or private_key_file",
      ["{ label: personal, app_id: 1, private_key_file: " .. key .. " }"] = "app label personal is also a token label",
      ["{ label: a, app_id: 1, private_key_file: " .. key .. ", installations: [] }"] = "installations: expected auto or a list",
      ["{ label: a, app_id: 1, private_key: '${APP_KEY}' }"] = "app a: the private key is not a PEM private key",
    }) do
      local lines = { "providers:", "  github:", "    base_url: " .. emu.url, "    tokens: [{ label: personal, token: x1234567 }]",
        "    apps:", "      - " .. entry }
      local cfg = gf.write(dir .. "/gitfleet.yaml", table.concat(lines, "\n") .. "\n")
      local r = gf.run({ "--config", cfg, "config", "check" }, { env = { APP_KEY = "SECRETLOOKINGKEY" } })
      assert.are.equal(2, r.code, entry)
      assert.matches(want, r.stderr, 1, true)
      assert.is_nil(r.stderr:find("SECRETLOOKING", 1, true))
    end
  end)
end)

describe("the emulator's Apps", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  local function b64url(s)
    local p = io.popen("printf %s " .. q(s) .. " | base64 -w0 | tr '+/' '-_' | tr -d '='")
    local out = p:read("a")
    p:close()
    return out
  end

  local function jwt(key, claims, header)
    local signed = b64url(header or '{"alg":"RS256","typ":"JWT"}') .. "." .. b64url(cjson.encode(claims))
    local p = io.popen("printf %s " .. q(signed) .. " | openssl dgst -sha256 -sign " .. q(key) ..
      " | base64 -w0 | tr '+/' '-_' | tr -d '='")
    local sig = p:read("a")
    p:close()
    return signed .. "." .. sig
  end

  it("answer 401 to a forged, expired, future-dated or too long JWT, and 200 to a good one", function()
    local dir = gf.tmpdir()
    local key, pub = keypair(dir, "app")
    local other = keypair(dir, "other")
    local emu = start({ { "acme", 1 } }, { { id = 101, pub = pub, installations = { { 1001, "acme" } } } })
    local now = os.time()
    local function status(token)
      local st = emu:request("/app/installations", { headers = { Authorization = "Bearer " .. token } })
      return st
    end
    assert.are.equal(200, status(jwt(key, { iat = now - 60, exp = now + 540, iss = "101" })))
    assert.are.equal(401, status(jwt(other, { iat = now - 60, exp = now + 540, iss = "101" })))        -- wrong key
    assert.are.equal(401, status(jwt(key, { iat = now - 900, exp = now - 300, iss = "101" })))         -- expired
    assert.are.equal(401, status(jwt(key, { iat = now + 600, exp = now + 900, iss = "101" })))         -- future
    assert.are.equal(401, status(jwt(key, { iat = now - 60, exp = now + 3600, iss = "101" })))         -- > 10 min
    assert.are.equal(401, status(jwt(key, { iat = now - 60, exp = now + 540, iss = "102" })))          -- other app
    assert.are.equal(401, status(jwt(key, { iat = now - 60, exp = now + 540, iss = "101" }, '{"alg":"none"}')))
    local good = jwt(key, { iat = now - 60, exp = now + 540, iss = "101" })
    assert.are.equal(401, status(good:sub(1, -4) .. (good:sub(-3) == "AAA" and "BBB" or "AAA")))    -- tampered
    local st, _, body = emu:request("/app/installations/1001/access_tokens",
      { method = "POST", headers = { Authorization = "Bearer " .. good } })
    assert.are.equal(201, st)
    local tok = cjson.decode(body).token
    assert.are.equal(200, (emu:request("/orgs/acme/repos", { headers = { Authorization = "Bearer " .. tok } })))
    assert.are.equal(401, (emu:request("/orgs/acme/repos", { headers = { Authorization = "Bearer ghs_made_up" } })))
  end)
end)
