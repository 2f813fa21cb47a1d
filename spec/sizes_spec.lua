-- The sizes users bring, through the real command line: thousands of owners
-- as arguments, on standard input and in a file; a script given 10,000
-- arguments; fleet.map over 100,000 items; a page whose repositories carry
-- 10,000 topics each; a million records through each writer with memory
-- that stays flat. The emulator generates its big worlds (scenario
-- "generate", "topics_per_repo"): nothing large is stored. Each case prints
-- its figures ("sizes: ...").
--
-- GITFLEET_BIN is the binary (default ./gitfleet). Run from the repository's root.

local cjson = require("cjson")
local socket = require("socket")

local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")

-- The sanitizer build (make SANITIZE=1) is several times slower, and its
-- allocator keeps freed memory in quarantine, so its resident memory says
-- nothing about the writers': it streams a tenth of the records, with the
-- quarantine off.
local sanitized = os.execute("ASAN_OPTIONS=help=1 " .. gf.quote(gf.bin)
  .. " --version 2>&1 | grep -q quarantine_size_mb")

local function figure(fmt, ...)
  io.stdout:write("\nsizes: ", fmt:format(...), "\n")
  io.stdout:flush()
end

-- The records of an NDJSON output, counted by full_name.
local function count_names(text)
  local seen, total, dups = {}, 0, 0
  for line in text:gmatch("[^\n]+") do
    local r = cjson.decode(line)
    total = total + 1
    if seen[r.full_name] then dups = dups + 1 end
    seen[r.full_name] = (seen[r.full_name] or 0) + 1
  end
  return seen, total, dups
end

describe("a script's arguments", function()
  after_each(gf.cleanup)

  -- 50 arguments overflowed the main task's coroutine stack (SIGSEGV), 100
  -- corrupted the heap so that the run never ended.
  for _, n in ipairs({ 50, 100, 10000 }) do
    it("reach the script whole with " .. n .. " of them", function()
      local args = {}
      for i = 1, n do args[i] = "a" .. i end
      local started = socket.gettime()
      local r = gf.run_script([[
        print(1)
        print(select("#", ...), #arg, arg[#arg], (select(select("#", ...), ...)))
      ]], nil, { args = args, timeout = 60 })
      figure("gitfleet run with %d arguments: exit %s in %.2f s", n, tostring(r.code), socket.gettime() - started)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(("1\n%d\t%d\ta%d\ta%d\n"):format(n, n, n, n), r.stdout)
    end)
  end

  it("a task spawned with 300 arguments gets them all and returns them all", function()
    local r = gf.run_script([[
      local t = {}
      for i = 1, 300 do t[i] = i end
      local h = fleet.spawn(function(...) return ... end, table.unpack(t))
      local n, last = select("#", h:wait()), select(300, h:wait())
      print(n, last, select("#", h:result()))
    ]])
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("300\t300\t301\n", r.stdout)
  end)
end)

describe("fleet.map", function()
  after_each(gf.cleanup)

  it("over 100,000 items gives every result, in order", function()
    local started = socket.gettime()
    local r = gf.run_script([[
      local items = {}
      for i = 1, 100000 do items[i] = i end
      local results, errors = fleet.map(items, function(x) return x * 2 end, { concurrency = 64 })
      local sum, ordered = 0, true
      for i = 1, #items do
        sum = sum + results[i]
        if results[i] ~= 2 * i then ordered = false end
      end
      print(#results, sum, ordered, errors == nil)
    ]], nil, { timeout = 120 })
    figure("fleet.map over 100,000 items: exit %s in %.2f s", tostring(r.code), socket.gettime() - started)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("100000\t10000100000\ttrue\ttrue\n", r.stdout)
  end)
end)

describe("10,000 requests queued at once", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("each get their answer; the 5,001 identical ones share one request", function()
    local token = "ghp_QUEUEDaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    local emu = emulator.start({ scenario = { owners = { { name = "acme", kind = "org", repos = 5 } },
      tokens = { { token = token, provider = "github", account = "queued" } } } })
    local cfg = gf.config({ providers = { github = { base_url = emu.url, tokens = { { label = "t", token = token } } } } })
    local started = socket.gettime()
    local r = gf.run_script([[
      local tasks = {}
      for i = 1, 10000 do
        local page = i % 2 == 0 and 1 or i
        tasks[i] = fleet.spawn(function()
          local resp = assert(fleet.request("GET", "/orgs/acme/repos", { query = { page = page } }))
          return resp.status == 200 and #resp.data == (page == 1 and 5 or 0)
        end)
      end
      local ok = 0
      for _, t in ipairs(tasks) do if t:wait() then ok = ok + 1 end end
      print(ok)
    ]], cfg, { timeout = 300 })
    figure("10,000 requests queued at once: exit %s in %.2f s", tostring(r.code), socket.gettime() - started)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("10000\n", r.stdout)
    -- page 1 once (asked by 5,001 tasks), and 4,999 other pages
    assert.are.equal(5000, emu:stats().requests)
  end)
end)

describe("5,000 owners", function()
  local emu, config, owners, expected, expected_total

  setup(function()
    emu = emulator.start({ scenario = {
      generate = { count = 5000, total_repos = 10000, large = 0, prefix = "owner" },
      tokens = { { provider = "github", token = "sizes-t1" }, { provider = "github", token = "sizes-t2" } },
      limits = { github = { limit = 1000000 } },
    } })
    config = gf.config({ providers = { github = { base_url = emu.url, tokens = { "sizes-t1", "sizes-t2" } } } })
    -- Any valid token is a member of every org: an org's private
    -- repositories are listed, a user's are not.
    owners, expected, expected_total = {}, {}, 0
    local world = emu:world()
    for name, o in pairs(world.owners) do
      owners[#owners + 1] = name
      expected[name] = o.kind == "org" and o.repos or o.public
      expected_total = expected_total + expected[name]
    end
    table.sort(owners)
    assert.are.equal(5000, #owners)
  end)

  teardown(function()
    if emu then emu:stop() end
    gf.cleanup()
  end)

  -- Every repository of every owner exactly once, and none of anyone else.
  local function check(r, how, seconds)
    local seen, total, dups = count_names(r.stdout)
    figure("fetch of 5,000 owners %s: exit %s, %d records (%d expected), %d repeated, %.2f s", how,
      tostring(r.code), total, expected_total, dups, seconds)
    assert.are.equal(0, r.code, r.stderr:sub(1, 2000))
    assert.are.equal(0, dups)
    assert.are.equal(expected_total, total)
    local per_owner = {}
    for name in pairs(seen) do
      local owner = name:match("^([^/]+)/")
      per_owner[owner] = (per_owner[owner] or 0) + 1
    end
    for _, o in ipairs(owners) do assert.are.equal(expected[o], per_owner[o] or 0, o) end
  end

  local function fetch(args, opts)
    local full = { "--config", config, "-q", "fetch", "--format", "ndjson" }
    for _, a in ipairs(args) do full[#full + 1] = a end
    opts = opts or {}
    opts.timeout = 300
    local started = socket.gettime()
    local r = gf.run(full, opts)
    return r, socket.gettime() - started
  end

  it("as arguments", function()
    local r, seconds = fetch(owners)
    check(r, "as arguments", seconds)
  end)

  it("on standard input", function()
    local dir = gf.tmpdir()
    local list = gf.write(dir .. "/owners.txt", table.concat(owners, "\n") .. "\n")
    local r, seconds = fetch({ "--owners-file", "-" }, { stdin = list })
    check(r, "on standard input", seconds)
  end)

  it("in --owners-file", function()
    local dir = gf.tmpdir()
    local list = gf.write(dir .. "/owners.txt", table.concat(owners, "\n") .. "\n")
    local r, seconds = fetch({ "--owners-file", list })
    check(r, "in --owners-file", seconds)
  end)

  it("the first 200 as arguments", function()
    local first, total = {}, 0
    for i = 1, 200 do
      first[i] = owners[i]
      total = total + expected[owners[i]]
    end
    local r, seconds = fetch(first)
    local seen, n, dups = count_names(r.stdout)
    figure("fetch of 200 owners as arguments: exit %s, %d records (%d expected), %d repeated, %.2f s",
      tostring(r.code), n, total, dups, seconds)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(0, dups)
    assert.are.equal(total, n)
    for name in pairs(seen) do assert.is_truthy(expected[name:match("^([^/]+)/")]) end
  end)
end)

describe("a page of 100 repositories with 10,000 topics each", function()
  local emu

  setup(function()
    emu = emulator.start({ scenario = {
      owners = { { name = "topical", kind = "org", repos = 100 } },
      topics_per_repo = 10000,
      tokens = { { provider = "github", token = "sizes-topics" } },
    } })
  end)

  teardown(function()
    if emu then emu:stop() end
    gf.cleanup()
  end)

  for _, format in ipairs({ "ndjson", "json", "csv" }) do
    it("is fetched whole and written as " .. format, function()
      local config = gf.config({ providers = { github = { base_url = emu.url, tokens = { "sizes-topics" } } } })
      local started = socket.gettime()
      local r = gf.run({ "--config", config, "-q", "fetch", "--format", format, "topical" }, { timeout = 120 })
      figure("100 repositories x 10,000 topics as %s: exit %s, %d bytes out, %.2f s", format, tostring(r.code),
        #r.stdout, socket.gettime() - started)
      assert.are.equal(0, r.code, r.stderr)
      local records
      if format == "ndjson" then
        records = gf.ndjson(r.stdout)
      elseif format == "json" then
        records = cjson.decode(r.stdout)
      end
      if records then
        assert.are.equal(100, #records)
        for _, rec in ipairs(records) do
          assert.are.equal(10000, #rec.topics)
          assert.are.equal("topic-00000", rec.topics[1])
          assert.are.equal("topic-09999", rec.topics[10000])
        end
      else
        -- CSV (a description may hold a newline): every repository's row
        -- has its topics, the last one included.
        local _, rows = r.stdout:gsub("topic%-00000;", "")
        local _, last = r.stdout:gsub(";topic%-09999", "")
        assert.are.equal(100, rows)
        assert.are.equal(100, last)
      end
    end)
  end
end)

describe("a million records through a writer", function()
  after_each(gf.cleanup)

  -- The peak resident memory after 100,000 and after 1,000,000 records: a
  -- writer that streams holds the same memory at both.
  local SCRIPT = [[
    local format, batches = ...
    batches = tonumber(batches)
    local function peak_kb()
      local f = assert(io.open("/proc/self/status"))
      local kb = f:read("a"):match("VmHWM:%s*(%d+)")
      f:close()
      return tonumber(kb)
    end
    local w = assert(fleet.writer({ format = format, output = "/dev/null" }))
    local at_100k
    -- One batch of 1,000 records, renumbered for each write: the writer
    -- encodes what it is given, so the million records are all different.
    local batch_size, batch = 1000, {}
    for i = 1, batch_size do
      batch[i] = { provider = "github", owner = "owner", default_branch = "main", language = "Lua",
        description = "A repository, with \"quotes\", commas and é", private = false, archived = false,
        topics = { "cli", "lua" }, created_at = "2020-01-01T00:00:00Z" }
    end
    for b = 1, batches do
      for i = 1, batch_size do
        local n, r = (b - 1) * batch_size + i, batch[i]
        r.id, r.name, r.full_name, r.stargazers_count, r.fork = n, "repo" .. n, "owner/repo" .. n, n % 1000, n % 7 == 0
      end
      assert(w:write_many(batch))
      if b == batches // 10 then at_100k = peak_kb() end
    end
    assert(w:close())
    print(w:count(), at_100k, peak_kb())
  ]]

  local batches = sanitized and 100 or 1000
  for _, format in ipairs({ "ndjson", "json", "csv" }) do
    it("as " .. format .. " keeps its memory flat", function()
      local started = socket.gettime()
      local r = gf.run_script(SCRIPT, nil, { args = { format, batches }, timeout = 300,
        env = sanitized and { ASAN_OPTIONS = "quarantine_size_mb=0" } or nil })
      assert.are.equal(0, r.code, r.stderr)
      local count, at_100k, at_1m = r.stdout:match("^(%d+)\t(%d+)\t(%d+)\n$")
      count, at_100k, at_1m = tonumber(count), tonumber(at_100k), tonumber(at_1m)
      figure("%d records as %s: peak RSS %d KB at a tenth, %d KB at the end (x%.2f), %.2f s%s", count, format,
        at_100k, at_1m, at_1m / at_100k, socket.gettime() - started, sanitized and " (sanitizer build)" or "")
      assert.are.equal(batches * 1000, count)
      assert.is_true(at_1m <= 1.2 * at_100k, ("peak RSS %d KB at 1M > 1.2 x %d KB at 100k"):format(at_1m, at_100k))
    end)
  end
end)
