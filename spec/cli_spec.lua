-- The command line as a data person uses it: formats, partial failure,
-- progress on a terminal only, help texts that agree with the man page,
-- and an installation that finds its plugins.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local TOKEN = "ghp_CLIxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
local OWNERS = {
  { name = "acme", kind = "org", repos = 420 }, { name = "globex", kind = "org", repos = 130 },
  { name = "ada", kind = "user", repos = 35 }, { name = "linus", kind = "user", repos = 12 },
}

local function setup(extra_scenario)
  local scenario = { owners = OWNERS }
  for k, v in pairs(extra_scenario or {}) do scenario[k] = v end
  return gf.one_token_world(scenario, TOKEN)
end

local function run(cfg, ...)
  local args = { "--config", cfg }
  for _, a in ipairs({ ... }) do args[#args + 1] = a end
  return gf.run(args)
end

-- Parses CSV with Python's csv module; returns the rows as JSON.
local function parse_csv(path)
  local p = io.popen(("python3 -c 'import csv,json,sys; print(json.dumps(list(csv.reader(open(sys.argv[1], newline=\"\", encoding=\"utf-8\")))))' %s")
    :format(gf.quote(path)))
  local text = p:read("a")
  p:close()
  return cjson.decode(text)
end

describe("gitfleet fetch", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("writes the same records as NDJSON, one JSON array, and CSV with Unicode intact", function()
    local _, cfg, dir = setup()
    local names = { "acme", "globex", "ada", "linus" }
    local a = run(cfg, "fetch", "--output", dir .. "/r.ndjson", table.unpack(names))
    assert.are.equal(0, a.code, a.stderr)
    local b = run(cfg, "fetch", "--format", "json", "--output", dir .. "/r.json", table.unpack(names))
    assert.are.equal(0, b.code, b.stderr)
    local c = run(cfg, "fetch", "--format", "csv", "--output", dir .. "/r.csv", "--fields",
      "full_name,description,owner,topics,stargazers_count", table.unpack(names))
    assert.are.equal(0, c.code, c.stderr)

    local nd = gf.ndjson(gf.slurp(dir .. "/r.ndjson"))
    local js = cjson.decode(gf.slurp(dir .. "/r.json"))
    local rows = parse_csv(dir .. "/r.csv")
    assert.are.equal(#nd, #js)
    assert.are.equal(#nd + 1, #rows) -- the header row
    assert.are.same({ "full_name", "description", "owner", "topics", "stargazers_count" }, rows[1])
    local unicode = 0
    for i, rec in ipairs(nd) do
      assert.are.equal(rec.full_name, js[i].full_name)
      assert.are.equal(rec.full_name, rows[i + 1][1])
      local desc = rec.description == cjson.null and "" or rec.description
      assert.are.equal(desc, rows[i + 1][2])
      if desc:find("[\128-\255]") then unicode = unicode + 1 end
      local topics = {}
      for _, t in ipairs(rec.topics) do topics[#topics + 1] = t end
      assert.are.equal(table.concat(topics, ";"), rows[i + 1][4])
    end
    assert.is_true(unicode > 0, "no description with non-ASCII text to check")
    -- every record carries every field, null where absent
    for _, field in ipairs({ "provider", "id", "name", "full_name", "owner", "description", "html_url",
      "clone_url", "ssh_url", "default_branch", "language", "private", "visibility", "fork", "archived",
      "stargazers_count", "forks_count", "watchers_count", "open_issues_count", "topics", "created_at",
      "updated_at", "pushed_at" }) do
      assert.is_not_nil(nd[1][field], field)
    end
  end)

  it("reports an unknown owner, writes everyone else's records, and exits 1", function()
    local emu, cfg, dir = setup()
    local r = run(cfg, "fetch", "--output", dir .. "/r.ndjson", "acme", "nobody-like-this", "ada", "globex")
    assert.are.equal(1, r.code)
    assert.matches("gitfleet fetch: nobody%-like%-this: not found", r.stderr)
    local world = emu:world().owners
    local expected = world.acme.repos + world.globex.repos + world.ada.public
    assert.are.equal(expected, #gf.ndjson(gf.slurp(dir .. "/r.ndjson")))
  end)

  it("reads owners from a file and standard input, and takes provider:owner", function()
    local _, cfg, dir = setup()
    gf.write(dir .. "/owners.txt", "# my owners\nacme\n\n  ada  # a person\n")
    local r = run(cfg, "fetch", "--owners-file", dir .. "/owners.txt", "--format", "csv", "--fields", "full_name")
    assert.are.equal(0, r.code, r.stderr)
    local s = gf.run({ "--config", cfg, "fetch", "--owners-file", "-", "github:linus", "--format", "csv",
      "--fields", "owner" }, { stdin = dir .. "/owners.txt" })
    assert.are.equal(0, s.code, s.stderr)
    -- owners on the command line come first, then the file's, in order
    assert.matches("^owner\r\nlinus\r\n", s.stdout)
    assert.matches("\r\nlinus\r\nacme\r\n", s.stdout)
    assert.matches("\r\nacme\r\nada\r\n", s.stdout)
    assert.matches("\r\nada\r\n$", s.stdout)
  end)

  it("writes identical files on two runs over unchanged data", function()
    local _, cfg, dir = setup()
    for i = 1, 2 do
      local r = run(cfg, "--no-cache", "fetch", "--output", dir .. "/" .. i, "linus", "acme", "ada", "globex")
      assert.are.equal(0, r.code, r.stderr)
    end
    assert.are.equal(gf.slurp(dir .. "/1"), gf.slurp(dir .. "/2"))
  end)

  it("shows no progress when stderr is not a terminal", function()
    local _, cfg, dir = setup()
    local r = run(cfg, "fetch", "--output", dir .. "/r.ndjson", "acme", "ada")
    assert.are.equal(0, r.code)
    assert.are.equal("", r.stderr)
  end)

  it("shows a progress line on a terminal and clears it at the end (tmux)", function()
    local _, cfg, dir = setup({ faults = { rate = 1, kinds = { "slow" }, slow_seconds = 0.4 } })
    local session = "gitfleet-spec-" .. tostring(os.time()) .. tostring(math.random(1e6))
    local script = gf.write(dir .. "/run.sh", ("%s --config %s fetch acme globex ada linus --output %s/r.ndjson; echo EXIT=$?\n")
      :format(gf.quote(gf.bin), gf.quote(cfg), dir))
    assert.is_true(os.execute(("tmux new-session -d -s %s -x 160 -y 20 'sh %s; sleep 30'"):format(session, script)))
    local function screen()
      local p = io.popen("tmux capture-pane -p -t " .. session)
      local text = p:read("a")
      p:close()
      return text
    end
    local seen, final
    for _ = 1, 300 do
      local text = screen()
      if text:match("owners %d+/4 · [%d,]+ repositories · %d+ req/s") then seen = true end
      if text:match("EXIT=%d") then
        final = text
        break
      end
      os.execute("sleep 0.05")
    end
    os.execute("tmux kill-session -t " .. session .. " 2>/dev/null")
    assert.is_true(seen, "no progress line seen")
    assert.is_truthy(final, "the run did not end")
    assert.matches("EXIT=0", final)
    assert.is_nil(final:match("owners %d+/4"), "the progress line was not cleared:\n" .. final)
  end)
end)

describe("gitfleet command line", function()
  after_each(gf.cleanup)

  it("prints help for itself and every command, and exits 0", function()
    for _, args in ipairs({ { "--help" }, { "help" }, { "fetch", "--help" }, { "rate-limit", "--help" },
      { "providers", "--help" }, { "config", "--help" }, { "cache", "--help" }, { "run", "--help" },
      { "help", "fetch" } }) do
      local r = gf.run(args)
      assert.are.equal(0, r.code, table.concat(args, " ") .. ": " .. r.stderr)
      assert.matches("usage: gitfleet", r.stdout)
    end
    assert.matches("^gitfleet %d+%.%d+%.%d+", gf.run({ "--version" }).stdout)
  end)

  it("answers a usage error with a short hint and status 2", function()
    for _, args in ipairs({ { "frobnicate" }, { "--bogus" }, { "fetch" }, { "fetch", "--format", "xml", "a" },
      { "fetch", "--nope", "a" }, { "run" }, { "config" }, { "rate-limit", "--format", "csv" },
      { "--config" } }) do
      local r = gf.run(args)
      assert.are.equal(2, r.code, table.concat(args, " "))
      assert.is_true(#r.stderr > 0 and #r.stderr < 400, table.concat(args, " ") .. ": " .. r.stderr)
    end
  end)

  it("accepts the global options after the command", function()
    local dir = gf.tmpdir()
    local cfg = gf.config({ providers = { gitea = { base_url = "http://127.0.0.1:9" } } }, dir)
    local r = gf.run({ "providers", "--config", cfg, "-q", "--no-progress", "-v" })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("http://127.0.0.1:9", r.stdout)
  end)

  it("documents in the man page every option the help texts list", function()
    local man = gf.slurp("man/gitfleet.1"):gsub("\\%-", "-"):gsub("\\f[BIR]", "")
    for _, args in ipairs({ { "--help" }, { "fetch", "--help" }, { "rate-limit", "--help" } }) do
      local help = gf.run(args).stdout
      for option in help:gmatch("%-%-[%w-]+") do
        assert.is_truthy(man:find(option, 1, true), option .. " is in `gitfleet " .. table.concat(args, " ")
          .. "` but not in the man page")
      end
    end
  end)

  it("installs with make install and then finds its providers", function()
    local prefix = gf.tmpdir() .. "/prefix"
    -- the build being tested: the sanitizer one when GITFLEET_BIN is it
    local flavour = gf.bin:find("build/asan/", 1, true) and "SANITIZE=1" or ""
    local ok = os.execute(("make -s install PREFIX=%s %s >/dev/null 2>&1"):format(gf.quote(prefix), flavour))
    assert.is_true(ok)
    for _, f in ipairs({ "/bin/gitfleet", "/share/gitfleet/providers/github.lua", "/share/man/man1/gitfleet.1",
      "/share/gitfleet/scripts/org-inventory.lua", "/share/bash-completion/completions/gitfleet" }) do
      assert.is_truthy(gf.slurp(prefix .. f), f .. " not installed")
    end
    local p = io.popen(gf.quote(prefix .. "/bin/gitfleet") .. " providers")
    local text = p:read("a")
    p:close()
    assert.matches(prefix:gsub("%p", "%%%0") .. "/share/gitfleet/providers/github.lua", text)
  end)
end)
