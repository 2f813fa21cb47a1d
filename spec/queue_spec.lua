-- The shared work queue: gitfleet queue push|status and gitfleet worker,
-- real processes on a redis-server of the spec's own, against the emulator.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local redis = require("spec.support.redis")
local cjson = require("cjson")
local socket = require("socket")

local TOKENS = {
  { token = "ghp_QueueAlphaSECRET00000000001", provider = "github", account = "qa" },
  { token = "ghp_QueueBravoSECRET00000000002", provider = "github", account = "qb" },
}

local emu, r

local function config(extra)
  local cfg = {
    providers = { github = { base_url = emu.url, tokens = {} } },
    retry = { base_delay = 0.05, max_delay = 0.2 },
    cache = { enabled = false },
    shared = { url = r.url, lease = 3 },
  }
  for i, t in ipairs(TOKENS) do cfg.providers.github.tokens[i] = { label = "q" .. i, token = t.token } end
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return (gf.config(cfg))
end

local function owners(n)
  local list = {}
  for i = 1, n do list[i] = ("own-%04d"):format(i) end
  return list
end

local function expected(names) return emu:visible_repos(names) end

-- Every record in every DIR/*/*.ndjson: count, duplicates, files.
local function collect(dir)
  local seen, n, dup, files = {}, 0, 0, {}
  local p = io.popen("find " .. gf.quote(dir) .. " -name '*.ndjson' -type f | sort")
  for path in p:lines() do
    files[#files + 1] = path
    for line in io.lines(path) do
      local rec = cjson.decode(line)
      n = n + 1
      if seen[rec.full_name] then dup = dup + 1 end
      seen[rec.full_name] = true
    end
  end
  p:close()
  return n, dup, files
end

-- Workers started in the background: a spec that fails before it waits
-- for them would leave them running (on a Redis and an emulator that are
-- gone) after the spec file ends; after_each stops what is left.
local started = {}

-- Starts a worker in the background; returns its pid and output files.
local function start_worker(cfg, queue, dir, extra)
  local out = gf.tmpdir()
  local args = { gf.bin, "--config", cfg, "worker", "--queue", queue, "--output-dir", dir }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  for i, a in ipairs(args) do args[i] = gf.quote(a) end
  -- no wrapper: the pid is the worker's own, for the spec that kills it
  os.execute(("%s >%s/out 2>%s/err </dev/null & echo $! >%s/pid"):format(table.concat(args, " "), out, out, out))
  local w = { pid = tonumber(gf.slurp(out .. "/pid"):match("%d+")), dir = out }
  started[#started + 1] = w.pid
  return w
end

-- CPU seconds a process has used (Linux /proc).
local function cpu_seconds(pid)
  local stat = gf.slurp("/proc/" .. pid .. "/stat") or ""
  local fields = {}
  for f in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = f end
  return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100
end

-- While Redis is away, workers wait: none uses more than a third of a CPU
-- over 1.5 s (a worker that went round its loop without yielding used all
-- of one for as long as Redis was away).
local function assert_waiting(workers)
  socket.sleep(0.5)
  local before = {}
  for i, w in ipairs(workers) do before[i] = cpu_seconds(w.pid) end
  socket.sleep(1.5)
  for i, w in ipairs(workers) do
    local used = cpu_seconds(w.pid) - before[i]
    assert.is_true(used < 0.5, ("worker %d used %.2f CPU-s in 1.5 s without Redis"):format(i, used))
  end
end

local function wait_all(workers, limit)
  local deadline = socket.gettime() + (limit or 90)
  for _, w in ipairs(workers) do
    while socket.gettime() < deadline and os.execute("kill -0 " .. w.pid .. " 2>/dev/null") do socket.sleep(0.05) end
    if socket.gettime() >= deadline then os.execute("kill -KILL " .. w.pid .. " 2>/dev/null") end
    w.stderr = gf.slurp(w.dir .. "/err") or ""
  end
end

local function push(cfg, queue, list)
  local args = { "--config", cfg, "queue", "push", "--queue", queue }
  for _, o in ipairs(list) do args[#args + 1] = o end
  return gf.run(args)
end

-- For a describe: an emulator with the scenario and a redis-server of its
-- own, both fresh for every spec.
local function with_world(scenario)
  setup(function()
    emu = emulator.start({ scenario = scenario })
    r = redis.start()
  end)
  teardown(function()
    redis.stop_all()
    emulator.stop_all()
    gf.cleanup()
  end)
  before_each(function()
    emu:reset(true)
    r:cli("FLUSHALL")
  end)
  after_each(function()
    for _, pid in ipairs(started) do
      -- still a worker, not a process that was given its pid since
      if (gf.slurp("/proc/" .. pid .. "/cmdline") or ""):find("worker", 1, true) then
        os.execute("kill -KILL " .. pid .. " 2>/dev/null")
      end
    end
    started = {}
  end)
end

describe("the shared work queue", function()
  with_world({ generate = { count = 60, total_repos = 2400, prefix = "own", large = 2 }, tokens = TOKENS })

  it("has two workers write every owner's file once, each repository once", function()
    local cfg = config()
    local list = owners(60)
    local pushed = push(cfg, "crawl", list)
    assert.equals(0, pushed.code)
    assert.matches("60 owner%(s%) added to crawl", pushed.stderr)
    local dir = gf.tmpdir()
    local ws = { start_worker(cfg, "crawl", dir), start_worker(cfg, "crawl", dir) }
    wait_all(ws)
    local n, dup, files = collect(dir)
    assert.equals(60, #files)
    assert.equals(expected(list), n)
    assert.equals(0, dup)
    assert.matches("/github/own%-0001%.ndjson$", files[1])
    local st = gf.run({ "--config", cfg, "queue", "status", "--queue", "crawl", "--format", "json" })
    local status = cjson.decode(st.stdout)
    assert.equals(60, status.done)
    assert.equals(0, status.queued)
    local text = gf.run({ "--config", cfg, "queue", "status", "--queue", "crawl" })
    assert.matches("queue crawl: 0 waiting, 0 in progress, 60 done, 0 parked", text.stdout, 1, true)
    -- the workers ended, and took their beats with them
    assert.not_matches("worker ", text.stdout, 1, true)
    -- nothing temporary is left behind
    assert.equals("", gf.capture("find " .. gf.quote(dir) .. " -name '.*'"))
  end)

  it("loses nothing when a worker is killed in the middle, with faults", function()
    -- budgets tight enough that the job lasts a few seconds, so the
    -- killed worker certainly holds owners
    emu:configure({ faults = { rate = 0.1, kinds = { "5xx", "drop" }, seed = 3 },
      limits = { github = { limit = 25, window = 2 } } })
    local cfg = config({ retry = { base_delay = 0.05, max_delay = 0.2, reset_margin = 0.2 } })
    local list = owners(60)
    assert.equals(0, push(cfg, "kill", list).code)
    local dir = gf.tmpdir()
    local ws = {}
    for i = 1, 3 do ws[i] = start_worker(cfg, "kill", dir, { "-j", "2" }) end
    -- The owners a worker holds, as the queue's consumer group counts them
    -- (a worker's consumer name holds its pid).
    local function holding(pid)
      local info = r:cli("XINFO", "CONSUMERS", "gitfleet:queue:kill:stream", "workers")
      local name_seen = false
      for line in info:gmatch("[^\n]+") do
        if line:find(":" .. pid .. ":", 1, true) then name_seen = true
        elseif name_seen and tonumber(line) then return tonumber(line) end
      end
      return 0
    end
    -- Killed in the middle, while it holds owners: a worker between two
    -- takes (its owners acknowledged, the next not yet taken) holds none.
    socket.sleep(0.8)
    local deadline = socket.gettime() + 10
    while holding(ws[2].pid) == 0 and socket.gettime() < deadline do socket.sleep(0.01) end
    os.execute("kill -KILL " .. ws[2].pid)
    local killed_at = socket.gettime()
    local held = holding(ws[2].pid)
    wait_all({ ws[1], ws[3] })
    local n, dup, files = collect(dir)
    assert.equals(60, #files)
    assert.equals(expected(list), n)
    assert.equals(0, dup)
    -- the dead worker's owners were taken over once the lease (3 s) ran out
    -- (unless it had acknowledged them in the moment before the kill)
    if held > 0 then
      assert.matches("taken over from a worker that stopped", ws[1].stderr .. ws[3].stderr)
    end
    assert.is_true(socket.gettime() - killed_at < 3 + 20)
  end)

  it("gives back the owners a worker holds when SIGTERM stops it: the next worker takes them at once", function()
    -- a lease far longer than the spec may take: owners left for it would
    -- time the spec out
    emu:configure({ latency = 0.3 })
    local cfg = config({ shared = { url = r.url, lease = 600 } })
    local list = owners(12)
    assert.equals(0, push(cfg, "term", list).code)
    local dir = gf.tmpdir()
    local first = start_worker(cfg, "term", dir, { "-j", "4" })
    local stream = "gitfleet:queue:term:stream"
    local deadline = socket.gettime() + 20
    while socket.gettime() < deadline and (tonumber(r:cli("XPENDING", stream, "workers"):match("^%d+")) or 0) == 0 do
      socket.sleep(0.02)
    end
    os.execute("kill -TERM " .. first.pid)
    wait_all({ first }, 30)
    assert.matches("item%(s%) held here given back to queue term, for others to take now", first.stderr)
    local given = tonumber(first.stderr:match("(%d+) item%(s%) held here given back"))
    assert.is_true(given >= 1 and given <= 4, first.stderr)
    -- they wait for the next take, and the stopped worker is gone from the list
    local between = gf.run({ "--config", cfg, "queue", "status", "--queue", "term" })
    assert.matches(" waiting, 0 in progress", between.stdout, 1, true)
    assert.not_matches("worker ", between.stdout, 1, true)
    -- each is idle for the whole lease already: the next take claims it
    local idle = r:cli("XPENDING", stream, "workers", "IDLE", "600000", "-", "+", "100")
    assert.equals(given, select(2, idle:gsub("%d+%-%d+", "")), idle)
    local second = start_worker(cfg, "term", dir)
    wait_all({ second }, 60)
    assert.matches("taken over from a worker that stopped", second.stderr)
    local n, dup, files = collect(dir)
    assert.equals(12, #files)
    assert.equals(expected(list), n)
    assert.equals(0, dup)
    -- a give-back is not a failed attempt
    assert.equals("", r:cli("HGETALL", "gitfleet:queue:term:failed"))
    local status = gf.run({ "--config", cfg, "queue", "status", "--queue", "term" })
    assert.matches("0 waiting, 0 in progress, 12 done, 0 parked", status.stdout, 1, true)
  end)

  it("pauses workers while Redis restarts and finishes without loss or duplicate", function()
    local rr = redis.start({ appendonly = true })
    local cfg = config({ shared = { url = rr.url, lease = 3 } })
    emu:configure({ limits = { github = { limit = 6, window = 2 } } })
    local list = owners(30)
    assert.equals(0, push(cfg, "restart", list).code)
    local dir = gf.tmpdir()
    local ws = { start_worker(cfg, "restart", dir, { "-j", "4" }), start_worker(cfg, "restart", dir, { "-j", "4" }) }
    socket.sleep(1)
    rr:stop()
    assert_waiting(ws)
    rr:launch()
    wait_all(ws)
    local n, dup, files = collect(dir)
    assert.equals(30, #files)
    assert.equals(expected(list), n)
    assert.equals(0, dup)
    assert.matches("waiting for Redis at 127.0.0.1:" .. rr.port, ws[1].stderr .. ws[2].stderr, 1, true)
    assert.matches("connected to Redis at 127.0.0.1:" .. rr.port .. "/0 again", ws[1].stderr .. ws[2].stderr, 1, true)
    assert.equals("30", rr:cli("HLEN", "gitfleet:queue:restart:done"))
  end)

  it("adds an owner pushed twice once while it waits", function()
    local cfg = config()
    assert.equals(0, push(cfg, "twice", { "own-0001", "own-0002" }).code)
    local again = push(cfg, "twice", { "own-0001", "own-0001", "own-0003" })
    assert.equals(0, again.code)
    assert.matches("1 owner%(s%) added to twice %(1 already queued, 1 repeated in the input%)", again.stderr)
    -- owner names are compared ignoring case, as providers compare them:
    -- Own-0001 is own-0001, and would repeat its repositories in a second file
    local cased = push(cfg, "twice", { "Own-0001", "OWN-0003" })
    assert.equals(0, cased.code)
    assert.matches("0 owner%(s%) added to twice %(2 already queued%)", cased.stderr)
    local dir = gf.tmpdir()
    local w = start_worker(cfg, "twice", dir)
    wait_all({ w })
    local _, dup, files = collect(dir)
    assert.equals(3, #files)
    assert.equals(0, dup)
    assert.equals(3, emu:stats().by_path_kind.repo_list - (emu:stats().by_status["404"] or 0))
  end)

  it("gives an owner pushed again after it was parked its attempts afresh, and no longer lists it parked", function()
    emu:configure({ faults = { rate = 1, kinds = { "5xx" } } })
    local cfg = config({ retry = { max_attempts = 1, base_delay = 0.01, max_delay = 0.02 } })
    assert.equals(0, push(cfg, "again", { "own-0001" }).code)
    local first = gf.run({ "--config", cfg, "worker", "--queue", "again", "-d", gf.tmpdir() }, { timeout = 60 })
    assert.equals(1, first.code, first.stderr)
    assert.matches("parked after 3 attempt%(s%)", first.stderr)
    assert.matches("1 owner%(s%) added to again\n", push(cfg, "again", { "own-0001" }).stderr)
    local st = cjson.decode(gf.run({ "--config", cfg, "queue", "status", "--queue", "again", "-f", "json" }).stdout)
    assert.same({}, st.failed)
    assert.equals(1, st.waiting)
    -- three attempts again, not one: the count starts afresh
    local second = gf.run({ "--config", cfg, "worker", "--queue", "again", "-d", gf.tmpdir() }, { timeout = 60 })
    assert.equals(1, second.code, second.stderr)
    assert.matches("attempt 2 of 3", second.stderr, 1, true)
    assert.matches("parked after 3 attempt%(s%)", second.stderr)
    -- and once the server answers, a third push is fetched and written
    emu:configure({ faults = { rate = 0 } })
    push(cfg, "again", { "own-0001" })
    local dir = gf.tmpdir()
    local third = gf.run({ "--config", cfg, "worker", "--queue", "again", "-d", dir }, { timeout = 60 })
    assert.equals(0, third.code, third.stderr)
    assert.equals(1, #select(3, collect(dir)))
    st = cjson.decode(gf.run({ "--config", cfg, "queue", "status", "--queue", "again", "-f", "json" }).stdout)
    assert.same({}, st.failed)
    assert.equals(0, st.waiting)
  end)

  it("puts back owners whose entries Redis lost, and refuses another program's keys without a half-done push", function()
    local cfg = config()
    local base = "gitfleet:queue:lost:"
    -- the stream deleted (by hand, or evicted): its owners are still
    -- queued, and a worker finds and writes them instead of waiting for ever
    assert.equals(0, push(cfg, "lost", { "own-0001", "own-0002" }).code)
    r:cli("DEL", base .. "stream")
    local dir = gf.tmpdir()
    local run = gf.run({ "--config", cfg, "worker", "--queue", "lost", "-d", dir }, { timeout = 30 })
    assert.equals(0, run.code, run.stderr)
    assert.equals(2, #select(3, collect(dir)))
    -- the consumer group destroyed: made again, every owner delivered
    assert.equals(0, push(cfg, "lost", { "own-0003" }).code)
    r:cli("XGROUP", "DESTROY", base .. "stream", "workers")
    run = gf.run({ "--config", cfg, "worker", "--queue", "lost", "-d", dir }, { timeout = 30 })
    assert.equals(0, run.code, run.stderr)
    assert.equals(3, #select(3, collect(dir)))
    -- 10,000 owners whose stream went: one take puts them all back
    local many = {}
    for i = 1, 10000 do many[i] = ("gone-%05d"):format(i) end
    gf.write(dir .. "/many.txt", table.concat(many, "\n") .. "\n")
    assert.equals(0, gf.run({ "--config", cfg, "queue", "push", "--queue", "lostmany", "--owners-file",
      dir .. "/many.txt" }).code)
    r:cli("DEL", "gitfleet:queue:lostmany:stream")
    local took = gf.run_script([[
      local items, left = assert(fleet.queue("lostmany"):take(1))
      print(#items, left)
    ]], cfg)
    assert.equals(0, took.code, took.stderr)
    assert.equals("1\t10000\n", took.stdout)
    assert.equals("10000", r:cli("XLEN", "gitfleet:queue:lostmany:stream"))
    -- a key of another kind under the queue's name: the push is refused
    -- whole, before any write (Redis does not undo a script's writes)
    r:cli("SET", "gitfleet:queue:other:stream", "someone else's")
    local refused = push(cfg, "other", { "own-0004", "own-0005" })
    assert.equals(1, refused.code)
    assert.matches("WRONGTYPE gitfleet:queue:other:stream holds a string, not a stream", refused.stderr, 1, true)
    assert.matches("shared.prefix", refused.stderr, 1, true)
    assert.equals("0", r:cli("EXISTS", "gitfleet:queue:other:queued"))
    -- a worker on such keys stops, and says why, instead of waiting for Redis
    assert.equals(0, push(cfg, "theirs", { "own-0006" }).code)
    r:cli("SET", "gitfleet:queue:theirs:workers", "someone else's")
    local stopped = gf.run({ "--config", cfg, "worker", "--queue", "theirs", "-d", gf.tmpdir() }, { timeout = 30 })
    assert.equals(1, stopped.code, stopped.stderr)
    assert.matches("stopped: Redis refuses the queue's keys", stopped.stderr, 1, true)
    assert.not_matches("nothing left to do", stopped.stderr, 1, true)
    assert.not_matches("waiting for Redis", stopped.stderr, 1, true)
  end)

  it("counts an item acknowledged after its consumer group was destroyed and made again as done, once", function()
    local cfg = config()
    local base = "gitfleet:queue:regroup:"
    assert.equals(0, push(cfg, "regroup", { "own-0001", "own-0002", "own-0003" }).code)
    local out = gf.tmpdir()
    local script = gf.script([[
      local q = fleet.queue("regroup")
      local items = assert(q:take(2))
      fleet.sleep(1.5) -- the group is destroyed meanwhile
      print(q:ack(items))
    ]])
    os.execute(("%s --config %s run %s >%s/out 2>%s/err &"):format(gf.quote(gf.bin), gf.quote(cfg), gf.quote(script),
      out, out))
    local deadline = socket.gettime() + 20
    while socket.gettime() < deadline and (tonumber(r:cli("XPENDING", base .. "stream", "workers"):match("^%d+")) or 0) < 2 do
      socket.sleep(0.02)
    end
    r:cli("XGROUP", "DESTROY", base .. "stream", "workers")
    while socket.gettime() < deadline and not (gf.slurp(out .. "/out") or ""):find("\n") do socket.sleep(0.05) end
    assert.equals("2", (gf.slurp(out .. "/out") or ""):match("^%d+"), gf.slurp(out .. "/err"))
    assert.equals("2", r:cli("HLEN", base .. "done"))
    assert.equals("1", r:cli("SCARD", base .. "queued"))
    -- the next take gets the one left, and only it
    local left = gf.run_script([[
      local items = assert(fleet.queue("regroup"):take(10))
      for _, it in ipairs(items) do print(it.item) end
    ]], cfg)
    assert.equals(0, left.code, left.stderr)
    assert.equals("own-0003\n", left.stdout)
  end)

  it("shows given-back owners as waiting, stopped workers as stopped, and forgets a worker at its end", function()
    local cfg = config()
    local base = "gitfleet:queue:beats:"
    assert.equals(0, push(cfg, "beats", { "own-0001", "own-0002", "own-0003" }).code)
    -- a consumer that took two and went silent: in progress for the lease
    -- (3 s), then waiting for the next take
    r:cli("XREADGROUP", "GROUP", "workers", "gone-worker", "COUNT", "2", "STREAMS", base .. "stream", ">")
    local now = socket.gettime()
    r:cli("HSET", base .. "workers", "gone-worker", cjson.encode({ at = now - 10, doing = "fetching" }))
    r:cli("HSET", base .. "workers", "ancient-worker", cjson.encode({ at = now - 2 * 86400, doing = "fetching" }))
    local st = gf.run({ "--config", cfg, "queue", "status", "--queue", "beats" })
    assert.matches("1 waiting, 2 in progress", st.stdout, 1, true)
    assert.matches("worker gone-worker: stopped (no beat for longer than shared.lease)", st.stdout, 1, true)
    -- a beat a day old is removed
    assert.not_matches("ancient-worker", st.stdout, 1, true)
    assert.equals("0", r:cli("HEXISTS", base .. "workers", "ancient-worker"))
    socket.sleep(3.2)
    st = gf.run({ "--config", cfg, "queue", "status", "--queue", "beats" })
    assert.matches("3 waiting, 0 in progress", st.stdout, 1, true)
    -- a worker that ends removes its own beat
    r:cli("HDEL", base .. "workers", "gone-worker")
    local run = gf.run({ "--config", cfg, "worker", "--queue", "beats", "-d", gf.tmpdir() }, { timeout = 30 })
    assert.equals(0, run.code, run.stderr)
    assert.equals("0", r:cli("HLEN", base .. "workers"))
  end)

  it("reads an owners file saved with a byte order mark without it", function()
    local cfg = config()
    local dir = gf.tmpdir()
    gf.write(dir .. "/bom.txt", "\239\187\191own-0001\nown-0002\n")
    local run = gf.run({ "--config", cfg, "queue", "push", "--queue", "bom", "--owners-file", dir .. "/bom.txt" })
    assert.equals(0, run.code, run.stderr)
    local members = r:cli("SMEMBERS", "gitfleet:queue:bom:queued")
    assert.matches("^own%-000[12]\nown%-000[12]$", members)
  end)

  it("takes 10,000 owners in one push, and an empty owners file as a usage error", function()
    local cfg = config()
    local dir = gf.tmpdir()
    local lines = {}
    for i = 1, 10000 do lines[i] = ("owner-%05d"):format(i) end
    gf.write(dir .. "/many.txt", table.concat(lines, "\n") .. "\n# a comment\n\n")
    local run = gf.run({ "--config", cfg, "queue", "push", "--queue", "many", "--owners-file", dir .. "/many.txt" })
    assert.equals(0, run.code, run.stderr)
    assert.matches("10000 owner%(s%) added to many", run.stderr)
    local st = cjson.decode(gf.run({ "--config", cfg, "queue", "status", "--queue", "many", "-f", "json" }).stdout)
    assert.equals(10000, st.waiting)
    gf.write(dir .. "/empty.txt", "# nothing here\n")
    local empty = gf.run({ "--config", cfg, "queue", "push", "--queue", "many", "--owners-file", dir .. "/empty.txt" })
    assert.equals(2, empty.code)
    assert.matches("no OWNER given", empty.stderr, 1, true)
    local missing = gf.run({ "--config", cfg, "queue", "push", "--owners-file", dir .. "/absent.txt" })
    assert.equals(2, missing.code)
    assert.matches("absent.txt", missing.stderr, 1, true)
  end)

  it("lets a worker on a queue nobody pushed end at once", function()
    local dir = gf.tmpdir()
    local run = gf.run({ "--config", config(), "worker", "--queue", "nobody", "--output-dir", dir }, { timeout = 20 })
    assert.equals(0, run.code)
    assert.matches("queue nobody has nothing left to do", run.stderr, 1, true)
    assert.equals(0, emu:stats().requests)
  end)

  it("has an idle --follow worker wait in Redis for pushes, take them, and stop on SIGTERM", function()
    local cfg = config()
    local dir = gf.tmpdir()
    local w = start_worker(cfg, "follow", dir, { "--follow" })
    -- Idle, it waits on the queue's events (a blocked XREAD), not by asking
    -- over and over.
    local function blocked()
      local deadline = socket.gettime() + 30
      while socket.gettime() < deadline do
        if r:cli("CLIENT", "LIST"):find("cmd=xread", 1, true) then return true end
        socket.sleep(0.05)
      end
      return false
    end
    assert.is_true(blocked())
    for i, owner in ipairs({ "own-0001", "own-0002" }) do
      assert.equals(0, push(cfg, "follow", { owner }).code)
      local file = dir .. "/github/" .. owner .. ".ndjson"
      local deadline = socket.gettime() + 30
      while socket.gettime() < deadline and not gf.slurp(file) do socket.sleep(0.05) end
      local n = collect(dir)
      assert.equals(expected(i == 1 and { "own-0001" } or { "own-0001", "own-0002" }), n)
      assert.is_true(blocked()) -- and waits again
    end
    -- The pushes and the queue's end are on its events stream (the first
    -- owner may be acknowledged after the second push: one end at least).
    local events = r:cli("XRANGE", "gitfleet:queue:follow:events", "-", "+")
    local _, pushed = events:gsub("pushed", "")
    assert.equals(2, pushed)
    assert.matches("finished%s*$", events)
    -- a worker that runs is listed with its last beat
    local listed = gf.run({ "--config", cfg, "queue", "status", "--queue", "follow" })
    assert.matches("worker [^ ]+:" .. w.pid .. ":[^ ]+: idle, last beat %d+s ago", listed.stdout)
    os.execute("kill -TERM " .. w.pid)
    wait_all({ w }, 30)
    listed = gf.run({ "--config", cfg, "queue", "status", "--queue", "follow" })
    assert.not_matches("worker ", listed.stdout, 1, true)
    assert.is_false(os.execute("kill -0 " .. w.pid .. " 2>/dev/null") == true)
    assert.matches("interrupted", w.stderr, 1, true)
    local _, dup, files = collect(dir)
    assert.equals(0, dup)
    assert.equals(2, #files)
  end)

  it("parks an owner that does not exist, with the reason", function()
    local cfg = config()
    assert.equals(0, push(cfg, "missing", { "own-0001", "no-such-owner" }).code)
    local run = gf.run({ "--config", cfg, "worker", "--queue", "missing", "-d", gf.tmpdir() })
    assert.equals(1, run.code)
    assert.matches("no%-such%-owner: not found.*parked after 1 attempt", run.stderr)
    local st = gf.run({ "--config", cfg, "queue", "status", "--queue", "missing" })
    assert.matches("1 done, 1 parked", st.stdout, 1, true)
    assert.matches("parked no-such-owner: not found", st.stdout, 1, true)
  end)

  it("refuses odd queue names and owners with a clear error, pushing nothing", function()
    local cfg = config()
    for _, name in ipairs({ "a b", "../x", "", ("q"):rep(65), "q\ttab", "q:x" }) do
      local run = gf.run({ "--config", cfg, "queue", "push", "--queue", name, "own-0001" })
      assert.equals(2, run.code)
      assert.matches("bad queue name", run.stderr, 1, true)
      local w = gf.run({ "--config", cfg, "worker", "--queue", name, "-d", gf.tmpdir() })
      assert.equals(2, w.code)
    end
    for _, owner in ipairs({ "a b", "..", "x\1y", ("o"):rep(5000), "" }) do
      local run = gf.run({ "--config", cfg, "queue", "push", "--queue", "odd", "own-0001", owner })
      assert.equals(2, run.code)
      assert.matches("argument 2: .*nothing was pushed", run.stderr)
      -- a long name is shown by its first bytes and its length, not whole
      assert.is_true(#run.stderr < 400, run.stderr)
    end
    local long = gf.run({ "--config", cfg, "queue", "push", "--queue", "odd", ("o"):rep(5000) })
    assert.matches('argument 1: "' .. ("o"):rep(60) .. '"... (5000 bytes): an owner longer than 4096 bytes', long.stderr,
      1, true)
    local long_name = gf.run({ "--config", cfg, "queue", "push", "--queue", ("q"):rep(10000), "own-0001" })
    assert.equals(2, long_name.code)
    assert.matches("(10000 bytes)", long_name.stderr, 1, true)
    assert.is_true(#long_name.stderr < 400, long_name.stderr)
    assert.equals("0", r:cli("EXISTS", "gitfleet:queue:odd:stream"))
    local none = gf.run({ "--config", cfg, "queue", "push", "--queue", "odd" })
    assert.equals(2, none.code)
    assert.matches("no OWNER given", none.stderr, 1, true)
  end)

  it("writes a GitLab-style owner path as one file inside its folder", function()
    local cfg = config()
    local dotted = push(cfg, "paths", { "github:own-0001", "own-0002/../../etc" })
    assert.equals(2, dotted.code) -- refused where it was typed
    assert.matches("nothing was pushed", dotted.stderr, 1, true)
    assert.equals(0, push(cfg, "paths", { "github:own-0001", "own-0002/sub" }).code)
    local dir = gf.tmpdir()
    local run = gf.run({ "--config", cfg, "worker", "--queue", "paths", "-d", dir })
    assert.equals(1, run.code) -- the second owner does not exist
    local listing = gf.capture("cd " .. gf.quote(dir) .. " && find . -type f | sort")
    assert.equals("./github/own-0001.ndjson", listing)
  end)

  it("gives scripts the same queue through fleet.queue", function()
    local cfg = config()
    local run = gf.run_script([[
      local q = fleet.queue("scripted")
      assert(q:push({ "own-0001", "own-0002", "own-0001" }) == 2)
      local items, left = assert(q:take(5))
      assert(#items == 2, #items)
      -- What is left: both taken and not acknowledged; then one
      -- acknowledged with an empty take, whose second value says so.
      assert(left == 2, tostring(left))
      local none, after = q:take(5, "idle", { items[1] })
      assert(#none == 0 and after == 1, tostring(after))
      -- Nothing changed since that take; the end of the queue is a change.
      assert(q:wait(0.1) == false)
      for _, bad in ipairs({ "x", -1, 0 / 0, 1 / 0, 86401 }) do
        local ok, err = pcall(q.wait, q, bad)
        assert(not ok and err:find("seconds from 0 to 86400", 1, true), tostring(err))
      end
      for _, bad in ipairs({ "x", 0, -1, 1.5, 0 / 0, 1 / 0, {} }) do
        local ok, err = pcall(q.take, q, bad)
        assert(not ok and err:find("a whole number of items, at least 1", 1, true), tostring(err))
      end
      local names = {}
      for _, it in ipairs(items) do
        local repos = assert(fleet.fetch_repositories(it.item))
        names[#names + 1] = it.item .. "=" .. #repos
      end
      assert(q:ack(items) == 1) -- the first was acknowledged by the take
      assert(q:wait(30) == true)
      local st = assert(q:status())
      print(table.concat(names, " "), st.done, st.queued)
      local ok, err = pcall(fleet.queue, "bad name")
      print(ok, err:match("bad queue name") ~= nil)
    ]], cfg)
    assert.equals(0, run.code, run.stderr)
    local world = emu:world().owners
    local function n(o) return world[o].kind == "org" and world[o].repos or world[o].public end
    assert.equals(("own-0001=%d own-0002=%d\t2\t0\nfalse\ttrue\n"):format(n("own-0001"), n("own-0002")), run.stdout)
  end)

  it("gives back at a script's end what it took and did not acknowledge, and acknowledges what it finished", function()
    local cfg = config({ shared = { url = r.url, lease = 600 } })
    local run = gf.run_script([[
      local q = fleet.queue("leftover")
      assert(q:push({ "own-0001", "own-0002", "own-0003" }) == 3)
      local items = assert(q:take(3))
      assert(#items == 3)
      assert(q:ack(items[1]) == 1)
      q:finished(items[2]) -- its acknowledgement was to come later
    ]], cfg)
    assert.equals(0, run.code, run.stderr)
    assert.matches("1 item(s) held here given back to queue leftover, for others to take now", run.stderr, 1, true)
    local stream = "gitfleet:queue:leftover:stream"
    -- the one given back is idle for the whole lease: the next take claims it
    local idle = r:cli("XPENDING", stream, "workers", "IDLE", "600000", "-", "+", "10")
    assert.equals(1, select(2, idle:gsub("%d+%-%d+", "")), idle)
    -- so it is waiting, not in progress
    local status = gf.run({ "--config", cfg, "queue", "status", "--queue", "leftover" })
    assert.matches("1 waiting, 0 in progress, 2 done, 0 parked", status.stdout, 1, true)
    local again = gf.run_script([[
      local q = fleet.queue("leftover")
      local items = assert(q:take(3))
      print(#items, items[1].item, items[1].reclaimed, items[1].attempts)
      q:ack(items)
    ]], cfg)
    assert.equals(0, again.code, again.stderr)
    assert.equals("1\town-0003\ttrue\t1\n", again.stdout)
  end)

  it("gives back 10,000 items a script took and did not acknowledge, all at its end", function()
    local cfg = config({ shared = { url = r.url, lease = 600 } })
    local run = gf.run_script([[
      local q = fleet.queue("many")
      local items = {}
      for i = 1, 10000 do items[i] = ("own-%05d"):format(i) end
      assert(q:push(items) == 10000)
      local taken = assert(q:take(10000))
      print(#taken)
    ]], cfg)
    assert.equals(0, run.code, run.stderr)
    assert.equals("10000\n", run.stdout)
    assert.matches("10000 item(s) held here given back to queue many", run.stderr, 1, true)
    local idle = r:cli("XPENDING", "gitfleet:queue:many:stream", "workers", "IDLE", "600000", "-", "+", "20000")
    assert.equals(10000, select(2, idle:gsub("%d+%-%d+", "")))
  end)

  it("says fleet.queue needs shared: when there is none", function()
    local cfg = config({ shared = false })
    local run = gf.run_script('fleet.queue("x")', cfg)
    assert.equals(1, run.code)
    assert.matches("fleet.queue needs a shared: section", run.stderr, 1, true)
  end)

  it("parks an item whose provider its configuration lacks, with no request", function()
    local cfg = config()
    -- what own-0002 alone costs
    assert.equals(0, push(cfg, "alone", { "own-0002" }).code)
    assert.equals(0, gf.run({ "--config", cfg, "worker", "--queue", "alone", "-d", gf.tmpdir() }).code)
    local alone = emu:stats().by_path_kind.repo_list
    emu:reset(true)
    -- a script's q:push takes any item; `queue push` would refuse this one
    local pushed = gf.run_script('assert(fleet.queue("otherconf"):push({ "mygit:acme", "own-0002" }) == 2)', cfg)
    assert.equals(0, pushed.code, pushed.stderr)
    local dir = gf.tmpdir()
    local run = gf.run({ "--config", cfg, "worker", "--queue", "otherconf", "-d", dir })
    assert.equals(1, run.code, run.stderr)
    assert.matches("mygit:acme: unknown provider 'mygit' %(providers: [^)]*%) in this worker's configuration "
      .. "%(parked after 1 attempt%(s%)%)", run.stderr)
    local n, _, files = collect(dir)
    assert.equals(1, #files)
    assert.equals(expected({ "own-0002" }), n)
    -- nothing was asked about "mygit:acme" (the old worker looked it up
    -- on github, as an owner of that name); the tokens' account lookups
    -- (auth_user) are made by the first run only
    assert.equals(alone, emu:stats().by_path_kind.repo_list)
  end)

  it("parks an owner whose provider plugin raises, with the plugin's file and line, and ends", function()
    -- The github plugin, but its repositories() raises for own-0002. The
    -- raise ended the owner's task and left its slot taken: the worker
    -- never ended. Now it is the owner's failure, retried and parked, its
    -- reason the plugin's file and line.
    local dir = gf.tmpdir()
    local source = assert(io.open("providers/github.lua")):read("a")
    local patched, n = source:gsub("(function P%.repositories%(api, owner, opts%)\n)",
      '%1  if owner == "own-0002" then error("no such luck") end\n')
    assert.equals(1, n)
    gf.write(dir .. "/broken.lua", patched)
    local cfg = config({ plugin_paths = { dir } })
    local text = gf.slurp(cfg):gsub("(base_url: [^\n]*\n)", "%1    plugin: broken\n", 1)
    gf.write(cfg, text)
    assert.equals(0, push(cfg, "broken", owners(3)).code)
    local out = gf.tmpdir()
    local run = gf.run({ "--config", cfg, "worker", "--queue", "broken", "-d", out }, { timeout = 60 })
    assert.equals(1, run.code, run.stderr)
    assert.matches("own%-0002: [^\n]*/broken%.lua:%d+: no such luck %(parked after 3 attempt%(s%)%)", run.stderr)
    local got, dup, files = collect(out)
    assert.equals(2, #files)
    assert.equals(expected({ "own-0001", "own-0003" }), got)
    assert.equals(0, dup)
  end)

  it("takes nothing into a folder it cannot write to, and gives back what it cannot write", function()
    local cfg = config()
    local list = owners(12)
    assert.equals(0, push(cfg, "nowrite", list).code)
    -- DIR is a file: refused before anything is taken
    local file = gf.tmpdir() .. "/plain-file"
    assert(io.open(file, "w")):close()
    local refused = gf.run({ "--config", cfg, "worker", "--queue", "nowrite", "-d", file })
    assert.equals(2, refused.code)
    assert.matches("cannot make folder", refused.stderr, 1, true)
    assert.equals(0, emu:stats().requests)
    -- DIR/github is a file: the worker's first owners cannot be written
    -- there. They are given back, not failed: nothing parked, no attempt
    -- counted, and the worker takes no more (with -j 2, at most the first
    -- take's few owners were fetched).
    local dir = gf.tmpdir()
    assert(io.open(dir .. "/github", "w")):close()
    local stopped = gf.run({ "--config", cfg, "worker", "--queue", "nowrite", "-d", dir, "-j", "2" })
    assert.equals(1, stopped.code, stopped.stderr)
    assert.matches("stopped: it cannot write its files", stopped.stderr, 1, true)
    assert.matches("given back; this worker takes no more owners", stopped.stderr, 1, true)
    assert.not_matches("parked", stopped.stderr, 1, true)
    local st = cjson.decode(gf.run({ "--config", cfg, "queue", "status", "--queue", "nowrite", "--format", "json" }).stdout)
    assert.equals(0, st.done)
    assert.same({}, st.failed)
    assert.equals(12, st.waiting + st.in_progress)
    assert.is_true(emu:stats().requests <= 2 * 3, tostring(emu:stats().requests))
    -- a worker that can write takes them all at once (given back means
    -- idle for the whole lease) and writes each once, on its first attempt
    os.remove(dir .. "/github")
    local good = gf.run({ "--config", cfg, "worker", "--queue", "nowrite", "-d", dir })
    assert.equals(0, good.code, good.stderr)
    assert.matches("12 owner(s) written", good.stderr, 1, true)
    assert.not_matches("attempt [2-9]", good.stderr)
    local n, dup, files = collect(dir)
    assert.equals(12, #files)
    assert.equals(expected(list), n)
    assert.equals(0, dup)
  end)
end)

describe("a large owner's pages shared between workers", function()
  local HUGE = { name = "huge", kind = "org", repos = 6000 } -- 60 pages
  with_world({ owners = { HUGE, { name = "tiny", kind = "org", repos = 30 } }, tokens = TOKENS })

  -- The share keys a queue has left in Redis.
  local function share_keys(queue)
    local keys = r:cli("--scan", "--pattern", "gitfleet:queue:" .. queue .. ":share*")
    return keys == "" and {} or { keys }
  end

  -- The keys matching a pattern, one at a time.
  local function scan(pattern) return r:cli("--scan", "--pattern", pattern):gmatch("%S+") end

  -- Until a condition holds (at most 20 s): whether it did.
  local function until_true(cond)
    local deadline = socket.gettime() + 20
    while not cond() and socket.gettime() < deadline do socket.sleep(0.01) end
    return cond()
  end

  -- Pushes "tiny" to the queue, held by a worker that is not there (so a
  -- worker started then first finds nothing to take, and takes it over
  -- after the 3 s lease), and plants a share of "huge" by that worker,
  -- its pages at base_url and ranges of `size`. Returns its key.
  local function plant_share(cfg, queue, base_url, size)
    assert.equals(0, push(cfg, queue, { "tiny" }).code)
    local base = "gitfleet:queue:" .. queue
    r:cli("XREADGROUP", "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", base .. ":stream", ">")
    local meta = base .. ":share:ghost.1"
    r:cli("HSET", meta, "owner", "huge", "provider", "github", "template", base_url .. "/orgs/huge/repos?page=2",
      "last", "10", "size", size, "front", "1", "back", "11", "opts", "{}", "lead", "ghost")
    r:cli("PEXPIRE", meta, "60000")
    r:cli("ZADD", base .. ":shares", "1", "ghost.1")
    return meta
  end

  -- Starts a worker, which takes the (one) owner pushed to the queue and
  -- shares its pages, then a second once the share exists; returns both
  -- once the second holds a range of it.
  local function lead_and_helper(cfg, queue, dir)
    local lead = start_worker(cfg, queue, dir)
    local prefix = "gitfleet:queue:" .. queue .. ":share:*"
    assert.is_true(until_true(function() return scan(prefix)() ~= nil end), "no share")
    local helper = start_worker(cfg, queue, dir)
    assert.is_true(until_true(function()
      for key in scan(prefix .. ":claims") do
        if tonumber(r:cli("ZCARD", key)) > 0 then return true end
      end
      return false
    end), "no range was claimed")
    return lead, helper
  end

  it("has an idle worker fetch part of the pages: every repository once, nothing left in Redis", function()
    -- a far server: the owner's pages take a while, as on the internet
    emu:configure({ latency = 0.05 })
    local cfg = config()
    assert.equals(0, push(cfg, "big", { "huge" }).code)
    local dir = gf.tmpdir()
    local ws = { start_worker(cfg, "big", dir), start_worker(cfg, "big", dir) }
    wait_all(ws)
    local n, dup, files = collect(dir)
    assert.equals(1, #files)
    assert.equals(6000, n)
    assert.equals(0, dup)
    -- the one that did not take the owner fetched some of its pages
    local helped = (ws[1].stderr .. ws[2].stderr):match("fetched (%d+) page%(s%) of other workers' large owners")
    assert.is_truthy(helped, ws[1].stderr .. ws[2].stderr)
    assert.is_true(tonumber(helped) > 0 and tonumber(helped) < 60)
    assert.same({}, share_keys("big"))
    assert.equals("0", r:cli("ZCARD", "gitfleet:queue:big:shares"))
    -- each page once: nothing fetched twice
    assert.equals(60, emu:stats().by_path_kind.repo_list)
  end)

  it("shares pages under 10% injected faults: every repository once, nothing left in Redis", function()
    emu:configure({ latency = 0.02, faults = { rate = 0.1, kinds = { "5xx", "drop" }, seed = 3 } })
    local cfg = config()
    assert.equals(0, push(cfg, "faults", { "huge", "tiny" }).code)
    local dir = gf.tmpdir()
    local ws = {}
    for i = 1, 3 do ws[i] = start_worker(cfg, "faults", dir) end
    wait_all(ws)
    local n, dup, files = collect(dir)
    assert.equals(2, #files)
    assert.equals(6030, n)
    assert.equals(0, dup)
    local said = ws[1].stderr .. ws[2].stderr .. ws[3].stderr
    assert.matches("fetched %d+ page%(s%) of other workers' large owners", said)
    assert.is_true(emu:stats().faults["5xx"] + emu:stats().faults.drop > 0)
    assert.same({}, share_keys("faults"))
  end)

  it("fetches in the lead the pages a killed helper held, once its lease is out", function()
    emu:configure({ latency = 0.3 })
    local cfg = config()
    assert.equals(0, push(cfg, "kill", { "huge" }).code)
    local dir = gf.tmpdir()
    -- the first worker takes the owner and shares its pages; the second
    -- starts then, claims a range, and is killed holding it
    local lead, helper = lead_and_helper(cfg, "kill", dir)
    os.execute("kill -KILL " .. helper.pid)
    local killed_at = socket.gettime()
    wait_all({ lead })
    local n, dup = collect(dir)
    assert.equals(6000, n)
    assert.equals(0, dup)
    assert.matches("huge: pages %d+%-%d+ were left by a worker that stopped or failed; fetched here", lead.stderr)
    -- the lease is 3 s
    assert.is_true(socket.gettime() - killed_at < 3 + 10)
    assert.same({}, share_keys("kill"))
  end)

  it("gives the owner back when its lead is stopped by SIGTERM: the helper takes it over at once", function()
    emu:configure({ latency = 0.3 })
    -- a lease longer than the spec may take: an owner left for it would
    -- time the spec out
    local cfg = config({ shared = { url = r.url, lease = 600 } })
    assert.equals(0, push(cfg, "lead", { "huge" }).code)
    local dir = gf.tmpdir()
    local lead, helper = lead_and_helper(cfg, "lead", dir)
    os.execute("kill -TERM " .. lead.pid)
    wait_all({ lead }, 30)
    assert.matches("1 item(s) held here given back to queue lead", lead.stderr, 1, true)
    -- and its share is closed, so its helper stops working for it: by the
    -- lead itself when its next page is refused as interrupted, or at its
    -- exit (which says so) when it was still waiting for pages in flight
    assert.is_nil(scan("gitfleet:queue:lead:share:*_" .. lead.pid .. "_*")())
    wait_all({ helper }, 120)
    assert.matches("huge: taken over from a worker that stopped", helper.stderr)
    local n, dup, files = collect(dir)
    assert.equals(1, #files)
    assert.equals(6000, n)
    assert.equals(0, dup)
    local status = gf.run({ "--config", cfg, "queue", "status", "--queue", "lead" })
    assert.matches("0 waiting, 0 in progress, 1 done, 0 parked", status.stdout, 1, true)
    assert.same({}, share_keys("lead"))
  end)

  it("goes on across a Redis restart in the middle of a share: every repository once", function()
    emu:configure({ latency = 0.3 })
    local rr = redis.start({ appendonly = true })
    local cfg = config({ shared = { url = rr.url, lease = 3 } })
    assert.equals(0, push(cfg, "restart", { "huge" }).code)
    local dir = gf.tmpdir()
    local function claimed()
      for key in rr:cli("--scan", "--pattern", "gitfleet:queue:restart:share:*:claims"):gmatch("%S+") do
        if tonumber(rr:cli("ZCARD", key)) > 0 then return true end
      end
      return false
    end
    local ws = { start_worker(cfg, "restart", dir) }
    ws[2] = start_worker(cfg, "restart", dir)
    local deadline = socket.gettime() + 20
    while not claimed() and socket.gettime() < deadline do socket.sleep(0.01) end
    assert.is_true(claimed(), "no range was claimed")
    rr:stop()
    assert_waiting(ws)
    rr:launch()
    wait_all(ws)
    local n, dup = collect(dir)
    assert.equals(6000, n)
    assert.equals(0, dup)
    assert.equals("1", rr:cli("HLEN", "gitfleet:queue:restart:done"))
    assert.equals("", rr:cli("--scan", "--pattern", "gitfleet:queue:restart:share*"))
  end)

  it("has a helper claim at most half of a share's unclaimed pages at a time, so the last ones are split", function()
    local cfg = config()
    -- pages 2-10 unclaimed, ranges of up to 8: halves of what is left are
    -- 6-10, 4-5, 3 and 2 (ranges of 8 would have been 3-10, then 2)
    local meta = plant_share(cfg, "halves", emu.url, "8")
    local dir = gf.tmpdir()
    local w = start_worker(cfg, "halves", dir)
    wait_all({ w }, 30)
    assert.matches("fetched 9 page%(s%) of other workers' large owners", w.stderr)
    local parts = {}
    for key in r:cli("HKEYS", meta .. ":parts"):gmatch("%S+") do parts[#parts + 1] = key end
    table.sort(parts, function(a, b) return tonumber(a:match("^%d+")) < tonumber(b:match("^%d+")) end)
    assert.same({ "2:2", "3:3", "4:5", "6:10" }, parts)
    -- each page once, and the owner it was waiting for written
    assert.equals(10, emu:stats().by_path_kind.repo_list)
    local n, dup, files = collect(dir)
    assert.equals(1, #files)
    assert.equals(30, n)
    assert.equals(0, dup)
  end)

  it("has a lead alone on a far server widen its window: many of its pages in flight at once", function()
    -- the lead starts with 2 pages ahead and doubles that after each page
    -- it had to wait for with nothing else to do
    emu:configure({ latency = 0.05 })
    local cfg = config()
    assert.equals(0, push(cfg, "far", { "huge" }).code)
    local dir = gf.tmpdir()
    local w = start_worker(cfg, "far", dir)
    wait_all({ w })
    local n, dup = collect(dir)
    assert.equals(6000, n)
    assert.equals(0, dup)
    local stats = emu:stats()
    assert.equals(60, stats.by_path_kind.repo_list)
    assert.is_true(stats.max_in_flight >= 8, "at most " .. stats.max_in_flight .. " in flight")
  end)

  it("takes nothing from a share whose fields are not ranges (size 0, a claim that is not a range)", function()
    local cfg = config()
    local meta = plant_share(cfg, "junk", emu.url, "0")
    r:cli("ZADD", meta .. ":claims", "0", "not-a-range")
    local dir = gf.tmpdir()
    local w = start_worker(cfg, "junk", dir)
    wait_all({ w }, 30)
    local n, dup, files = collect(dir)
    assert.equals(1, #files)
    assert.equals(30, n)
    assert.equals(0, dup)
    assert.not_matches("fetched %d+ page", w.stderr)
    assert.equals("0", r:cli("ZCARD", meta .. ":claims"))
    assert.equals("11", r:cli("HGET", meta, "back"))
    assert.equals(1, emu:stats().by_path_kind.repo_list)
  end)

  it("drops a share whose page URL is not the provider's: no request goes there, with or without a token", function()
    local elsewhere = emulator.start({ scenario = { owners = { HUGE }, tokens = TOKENS } })
    local cfg = config()
    local meta = plant_share(cfg, "odd", elsewhere.url, "4")
    local dir = gf.tmpdir()
    local w = start_worker(cfg, "odd", dir)
    wait_all({ w })
    assert.matches("a shared owner in Redis %(huge%) was dropped: a shared page URL outside", w.stderr)
    assert.equals(0, elsewhere:stats().requests)
    assert.same({}, share_keys("odd"))
    local n, dup, files = collect(dir)
    assert.equals(1, #files)
    assert.equals(30, n)
    assert.equals(0, dup)
  end)
end)

-- A GitLab owner can be a path of subgroups up to 256 bytes, and each '/'
-- takes three bytes in its file's name: more than a file name holds.
local function subgroup_chain(depth, width)
  local node
  for d = depth, 1, -1 do
    node = { name = string.char(96 + d):rep(width), repos = 2, subgroups = node and { node } or nil }
  end
  return node
end

describe("an owner whose file name would be too long", function()
  local GL_TOKEN = "glpat-QueueLongNameSECRET0001"
  with_world({
    owners = { { name = "g", kind = "org", repos = 2, subgroups = { subgroup_chain(6, 40) } } },
    tokens = { { token = GL_TOKEN, provider = "gitlab" } },
  })

  local function gl_config()
    return (gf.config({
      providers = { gitlab = { base_url = emu.url .. "/api/v4", tokens = { { label = "gl", token = GL_TOKEN, account = "me" } } } },
      cache = { enabled = false },
      shared = { url = r.url, lease = 3 },
    }))
  end

  it("is written once, under a shortened name, on the first attempt", function()
    local parts = { "g" }
    for d = 1, 6 do parts[#parts + 1] = string.char(96 + d):rep(40) end
    local owner = table.concat(parts, "/") -- 247 bytes, 259 written as a name
    local cfg = gl_config()
    assert.equals(0, push(cfg, "long", { "gitlab:" .. owner }).code)
    local dir = gf.tmpdir()
    local run = gf.run({ "--config", cfg, "worker", "--queue", "long", "-d", dir })
    assert.equals(0, run.code, run.stderr)
    assert.matches("1 owner(s) written", run.stderr, 1, true)
    local n, dup, files = collect(dir)
    assert.equals(1, #files)
    assert.equals(2, n)
    assert.equals(0, dup)
    local name = files[1]:match("[^/]+$")
    assert.is_true(#name <= 255 - 17, name) -- its temporary file's name fits too
    assert.matches("^g%%2Faaaa[a-f%%0-9F]*~" .. ("%x"):rep(32) .. "%.ndjson$", name)
    assert.equals(1, emu:stats().requests) -- one page, no attempt repeated
  end)

  it("gets a name that keeps every escape whole and differs from every other owner's", function()
    local run = gf.run_script([[
      local core = require("fleet.core")
      local names, lines = {}, {}
      local function add(owner)
        local name = core.file_name(owner)
        assert(not name:find("/", 1, true) and not name:find("^%.") and #name <= 216, name)
        assert(not names[name], "two owners share " .. name)
        names[name] = owner
        return name
      end
      -- short names as they were: escaped, nothing cut
      assert(add("own-0001") == "own-0001")
      assert(add(".x") == "%2Ex")
      assert(add("a/b") == "a%2Fb")
      assert(add(("z"):rep(200)) == ("z"):rep(200))
      -- the cut falls at every offset against an escape: never inside one
      for pad = 180, 186 do
        local owner = ("p"):rep(pad) .. ("/q"):rep(30)
        local name = add(owner)
        local head = name:match("^(.-)~%x+$")
        assert(head and not head:find("%%.?$"), name)
        assert(#head >= 181 and #head <= 183, name)
      end
      -- the same first 183 bytes, different ends
      add(("r"):rep(230) .. "1")
      add(("r"):rep(230) .. "2")
      add(("\xc3\xa9"):rep(128))
      print("ok")
    ]])
    assert.equals(0, run.code, run.stderr)
    assert.equals("ok\n", run.stdout)
  end)
end)

describe("10,000 owners through two workers", function()
  -- no rate limits: 10,000 owners take some 15,000 requests, more than the
  -- two tokens' hourly budgets
  with_world({ generate = { count = 10000, total_repos = 20000, prefix = "w", large = 0 }, tokens = TOKENS,
    limits = { github = cjson.null } })

  it("writes every owner's file once and every repository once", function()
    local cfg = config()
    local names = {}
    for name in pairs(emu:world().owners) do names[#names + 1] = name end
    table.sort(names)
    assert.equals(10000, #names)
    local dir = gf.tmpdir()
    gf.write(dir .. "/owners.txt", table.concat(names, "\n") .. "\n")
    local pushed = gf.run({ "--config", cfg, "queue", "push", "--queue", "tenk", "--owners-file", dir .. "/owners.txt" })
    assert.equals(0, pushed.code, pushed.stderr)
    local out = gf.tmpdir()
    local ws = { start_worker(cfg, "tenk", out), start_worker(cfg, "tenk", out) }
    wait_all(ws, 300)
    local written = 0
    for _, w in ipairs(ws) do
      written = written + tonumber(w.stderr:match("(%d+) owner%(s%) written") or 0)
      assert.not_matches("parked", w.stderr, 1, true)
    end
    assert.equals(10000, written)
    local n, dup, files = collect(out)
    assert.equals(10000, #files)
    assert.equals(expected(names), n)
    assert.equals(0, dup)
    local st = cjson.decode(gf.run({ "--config", cfg, "queue", "status", "--queue", "tenk", "-f", "json" }).stdout)
    assert.equals(10000, st.done)
    assert.equals(0, st.queued)
  end)
end)
