-- Concurrency against a far provider: the emulator holds every response
-- for `latency` seconds, so requests overlap the way they do over a real
-- network, and its counters tell how many were in flight at once. No
-- assertion here is about time; they are about what was in flight.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local LATENCY = 0.2

local function tokens(n)
  local list = {}
  for i = 1, n do
    list[i] = { token = ("ghp_LAT%02dSECRETVALUE0000000000"):format(i), provider = "github", account = "lat" .. i }
  end
  return list
end

local function config_for(emu, scenario_tokens, per_token)
  local cfg = { providers = { github = { base_url = emu.url, tokens = {} } },
    http = { per_token_concurrency = per_token } }
  for i, t in ipairs(scenario_tokens) do
    cfg.providers.github.tokens[i] = { label = "t" .. i, token = t.token, account = t.account }
  end
  return (gf.config(cfg))
end

-- Fetches through the command line; returns the run and the full names.
local function fetch(cfg, owners)
  local args = { "--config", cfg, "fetch", "--no-progress", "--format", "ndjson" }
  for _, o in ipairs(owners) do args[#args + 1] = o end
  local r = gf.run(args)
  local names = {}
  for line in r.stdout:gmatch("[^\n]+") do names[#names + 1] = cjson.decode(line).full_name end
  return r, names
end

local assert_each_once = gf.assert_each_once

-- n organisations of `repos` repositories each, named prefix01...; and
-- their names.
local function orgs(prefix, n, repos)
  local owners, names = {}, {}
  for i = 1, n do
    owners[i] = { name = ("%s%02d"):format(prefix, i), kind = "org", repos = repos }
    names[i] = owners[i].name
  end
  return owners, names
end

-- n transfers at once from one curl process; returns their status codes.
local function curl_parallel(n, url)
  local urls = {}
  for i = 1, n do urls[i] = ("'%s?n=%d'"):format(url, i) end
  local p = io.popen(("curl -s -m 30 -Z --parallel-immediate --parallel-max %d -w '%%{http_code}\\n' -o /dev/null %s"):format(
    n, table.concat(urls, " -o /dev/null ")) .. " 2>/dev/null")
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

describe("a far provider (emulator latency)", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("the emulator serves requests side by side while each waits out the latency", function()
    local emu = emulator.start({ scenario = { latency = 2 } })
    local codes = curl_parallel(40, emu.url .. "/users/alice")
    assert.are.equal(40, #codes)
    for _, c in ipairs(codes) do assert.are.equal("200", c) end
    -- Counted in flight from arrival to the response: all 40 were there at
    -- once, so none waited for another's latency.
    assert.are.equal(40, emu:stats().max_in_flight)
  end)

  it("the latency switch refuses bad values and keeps the old one", function()
    local emu = emulator.start({ scenario = { latency = 0.25 } })
    for _, bad in ipairs({ -1, "0.1", true, 61, 1e308, {} }) do
      local ok, err = pcall(emu.configure, emu, { latency = bad })
      assert.is_false(ok)
      assert.matches("400 .*latency must be", err)
      assert.are.equal(0.25, emu:config().latency)
    end
    assert.are.equal(0, emu:configure({ latency = cjson.null }).latency) -- null: off
    assert.are.equal(1.5, emu:configure({ latency = 1.5 }).latency)
    assert.are.equal(0.25, (function() emu:reset(true) return emu:config().latency end)())
  end)

  it("a bad latency in a scenario stops the emulator with the key named", function()
    local ok, err = pcall(emulator.start, { scenario = { latency = "slow" } })
    assert.is_false(ok)
    assert.matches("latency must be a number", err)
  end)

  it("each token reaches its configured concurrency on large owners", function()
    -- 120 pages of two organisations, 3 tokens of 8: windows of pages ahead
    -- and token windows that grow while nothing pushes back let 24 go at
    -- once.
    local toks = tokens(3)
    local emu = emulator.start({ scenario = {
      owners = { { name = "far1", kind = "org", repos = 6000 }, { name = "far2", kind = "org", repos = 6000 } },
      -- A whole second each: long against the client's own time per page,
      -- even in the sanitizer build, so only the windows limit what is in
      -- flight.
      tokens = toks, limits = { github = cjson.null }, latency = 1,
    } })
    local r, names = fetch(config_for(emu, toks, 8), { "far1", "far2" })
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(names, 12000)
    local s = emu:stats()
    assert.are.equal(0, s.secondary_limited)
    assert.are.equal(120, s.requests)
    for i = 0, 2 do
      assert.are.equal(8, s.tokens[tostring(i)].max_in_flight,
        ("token %d: at most %d in flight, 8 allowed"):format(i, s.tokens[tostring(i)].max_in_flight))
    end
  end)

  it("many small owners at once fill the tokens too", function()
    local toks = tokens(2)
    local owners, names = orgs("small", 40, 150)
    local emu = emulator.start({ scenario = { owners = owners, tokens = toks, limits = { github = cjson.null },
      latency = LATENCY } })
    local r, got = fetch(config_for(emu, toks, 4), names)
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(got, 40 * 150)
    local s = emu:stats()
    for i = 0, 1 do assert.are.equal(4, s.tokens[tostring(i)].max_in_flight) end
  end)

  it("a provider's concurrency limit costs each token at most one refusal after the first", function()
    -- The provider takes 3 at once per token where 8 are configured: a
    -- token's window grows (1, 2, 4), the fourth request is refused, and
    -- the window is cut to 3 and stays there. The round trip is long next
    -- to the client's own time (as it is for a far provider, and even for a
    -- sanitizer build on a busy machine), so what the client counts in
    -- flight is what the provider holds.
    local toks = tokens(3)
    local emu = emulator.start({ scenario = {
      owners = { { name = "far", kind = "org", repos = 6000 } }, tokens = toks,
      limits = { github = cjson.null }, latency = 0.5,
      secondary = { max_concurrency = 3, retry_after = 1 },
    } })
    local r, names = fetch(config_for(emu, toks, 8), { "far" })
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(names, 6000)
    local s = emu:assert_secondary_bounds(3, 2, 3)
    assert.is_true(s.secondary_limited >= 1, "the limit was never met: the spec tests nothing")
  end)

  it("every token's first request goes out at once", function()
    -- Over plain http:// a request must not wait for another connection's
    -- first answer to learn whether it multiplexes (HTTP/1.1 never does).
    local toks = tokens(3)
    local owners, names = orgs("first", 3, 10)
    local emu = emulator.start({ scenario = { owners = owners, tokens = toks, limits = { github = cjson.null },
      latency = 0.5 } })
    local r, got = fetch(config_for(emu, toks, 8), names)
    assert.are.equal(0, r.code, r.stderr)
    assert_each_once(got, 30)
    local ramp = emu:stats().ramp
    assert.are.same({ 1, 2, 3 }, ramp, "in flight as each request came: " .. table.concat(ramp, " "))
  end)

  it("a 404 grows the window as a 200 does", function()
    -- Owners that exist under neither kind: every answer is a 404 (with
    -- the budget's figures, as GitHub sends them), and each token still
    -- reaches its configured concurrency.
    local toks = tokens(2)
    local names = {}
    for i = 1, 40 do names[i] = ("nobody%02d"):format(i) end
    local emu = emulator.start({ scenario = { owners = { { name = "somebody", kind = "org", repos = 1 } },
      tokens = toks, latency = LATENCY } })
    local r = fetch(config_for(emu, toks, 4), names)
    assert.are.equal(1, r.code, r.stderr)
    local s = emu:stats()
    assert.are.equal(s.requests, s.by_status["404"], "every answer a 404")
    for i = 0, 1 do
      assert.are.equal(4, s.tokens[tostring(i)].max_in_flight, ("token %d"):format(i))
    end
  end)
end)
