-- gitfleet worker: takes owners from a shared queue (Redis, see shared:),
-- fetches each, writes its records to DIR/PROVIDER/OWNER.ndjson through a
-- temporary file and a rename, and only then acknowledges it. Any number
-- of workers on any number of machines can work on one queue; an owner
-- held by a worker that died is taken over after shared.lease.
local cli = require("fleet.cli")
local core = require("fleet.core")
local owners = require("fleet.owners")
local Queue = require("fleet.queue")
local Repositories = require("fleet.repositories")
local Share = require("fleet.share")

local usage = [[
usage: gitfleet worker --queue NAME --output-dir DIR [OPTIONS]

Takes owners from the queue NAME (filled by `gitfleet queue push`), fetches
every repository of each, and writes them to DIR/PROVIDER/OWNER.ndjson: the
file appears whole (written to a temporary name, then renamed) and is on
disk (synced, with the others written meanwhile) before the owner is
acknowledged. Needs a shared: section in the configuration. In
OWNER, bytes outside [A-Za-z0-9._-] are written %XX (a/b is a%2Fb); a name
longer than 200 bytes so written is cut and ends with ~ and a digest.

A large owner's later pages are shared: a worker with nothing to take
fetches some of them and hands them back through Redis to the worker that
holds the owner, which writes its file (docs/scale-out.md).

An owner whose worker stops (killed, machine lost) is taken over by another
worker once it has been idle for shared.lease seconds. An owner that fails
is retried up to shared.max_attempts times, then parked with its reason
(`gitfleet queue status` lists them); one that does not exist is parked at
once.

Options:
  --queue NAME           the queue (letters, digits, '.', '_', '-')
  -d, --output-dir DIR   where the files go
  -p, --provider P       provider for owners pushed without PROVIDER:
  -j, --concurrency N    owners fetched at once (default 64)
  --follow               when the queue is empty, wait for more work
                         instead of exiting
  -h, --help             show this help

SIGTERM or SIGINT stops a worker at once: the owners whose files are
written and synced are acknowledged, and the others it holds (still
fetching, or their files not yet synced) are given back, for another
worker to take at once. A worker that cannot end that way
(SIGKILL, a lost machine) leaves its owners to others after shared.lease.

A worker checks that it can write files in DIR before it takes an owner. One
that cannot write an owner's file later (disk full, say) gives that owner
back without counting an attempt, takes no more, and exits with status 1
when the owners it holds are done or given back.

A worker whose queue's keys in Redis are of another kind (another program
uses them: shared.prefix picks other keys) stops the same way.

Exit status: 0 when the queue has nothing left, 1 when this worker parked an
owner or stopped because it cannot write its files or use the queue's keys, 2 on a usage or
configuration error (a DIR it cannot write to), 143 or 130 when stopped by
SIGTERM or SIGINT.
]]

local opts, rest, fail = cli.parse("worker", arg, {
  { "--help", "-h" }, { "--queue", arg = "NAME" }, { "--output-dir", "-d", arg = "DIR" },
  { "--provider", "-p", arg = "P" }, { "--concurrency", "-j", arg = "N" }, { "--follow" },
})
if opts.help then io.stdout:write(usage) return 0 end
if #rest > 0 then fail("unexpected argument '" .. rest[1] .. "'") end
if not opts.queue then fail("--queue NAME is required") end
if not opts.output_dir then fail("--output-dir DIR is required") end
local concurrency = math.tointeger(tonumber(opts.concurrency or 64))
if not concurrency or concurrency < 1 or concurrency > 1000 then fail("--concurrency must be from 1 to 1000") end
if not core.redis_info() then fail("needs a shared: section with a Redis url in the configuration") end
local providers = {}
for _, p in ipairs(fleet.providers()) do providers[p.name] = true end
if opts.provider and not providers[opts.provider] then fail("no provider named '" .. opts.provider .. "'") end
local ok, qerr = pcall(Queue.open, opts.queue)
if not ok then fail(tostring(qerr):gsub("^[^:]*:%d+: ", "")) end
local q = qerr
local made, merr = core.mkdir(opts.output_dir)
if not made then fail(merr) end
-- A folder this worker cannot write to fails here, before it takes an
-- owner: else it would fetch every owner of the queue and write none.
local probe, perr = fleet.writer({ format = "ndjson", output = opts.output_dir .. "/.gitfleet-worker-probe" })
if not probe then
  fail(("cannot write files in %s: %s"):format(opts.output_dir, tostring(perr):match(": ([^:]+)$") or perr))
end
probe:discard()

local lease = core.redis_info().lease

-- File names: the owner with every byte outside [A-Za-z0-9._-] written
-- as %XX (a GitLab subgroup "a/b" is "a%2Fb"), so no owner reaches outside
-- its folder; one too long for a file name is cut and ends with a digest
-- of the whole (fleet.core.file_name).
local file_name = core.file_name

-- An item is read as `gitfleet queue push` read it: PROVIDER:OWNER or
-- OWNER. One whose provider this worker's configuration lacks (another
-- machine's queue push, or a script's q:push) is an error, not an owner
-- named "gitlab:acme" to look up on the default provider.
local function split(item)
  local job, err = owners.parse(item, providers)
  if not job then return nil, nil, err end
  return job.provider or opts.provider or fleet.default_provider(), job.owner
end

-- Encodes each page as it comes (Share.chunker). Only its encode_many is
-- used; it never writes to its stdout.
local encoder = fleet.writer({ format = "ndjson" })

-- The owner's records as ndjson chunks in page order ({ text =, n = }
-- each), or nil, err. A large owner's later pages are shared with workers
-- that have nothing to take (fleet/share.lua).
local function fetch_pages(it, provider, owner)
  local pages, normalize = Repositories.open(owner, { provider = provider })
  if not pages then return nil, normalize end
  local page_chunk = Share.chunker(normalize, encoder)
  local first, err = page_chunk(pages:next())
  if not first then return nil, err end
  local chunks
  chunks, err = Share.lead(q, it, owner, provider, pages, page_chunk)
  if not chunks and not err then chunks, err = pages:map(page_chunk) end
  if not chunks then return nil, err end
  table.insert(chunks, 1, first)
  return chunks
end

-- Fetches owner and writes its records to DIR/PROVIDER/OWNER.ndjson
-- through a temporary file and a rename, so the file appears whole. The
-- file is written at the end, at once: one open file per worker, however
-- many owners it fetches at a time. Returns the file's writer, closed (the
-- file is in place, not yet synced: see sync_written), or nil, err (a
-- fetch error as a table, a file error as text), and true when the failure
-- is this worker's files, not the owner.
local function fetch_owner(it, provider, owner)
  local chunks, perr = fetch_pages(it, provider, owner)
  if not chunks then
    if type(perr) == "table" then
      perr.owner = perr.owner or owner
      perr.provider = perr.provider or provider
    end
    return nil, perr
  end
  local function failed(e) return nil, "cannot write " .. owner .. ": " .. tostring(e), true end
  local dir = opts.output_dir .. "/" .. file_name(provider)
  local made_dir, derr = core.mkdir(dir)
  if not made_dir then return failed(derr) end
  -- The writer replaces the file at once (a temporary file beside it,
  -- renamed): the owner's file is complete under its own name. It is on
  -- disk before the owner is acknowledged: sync_written.
  local w, werr = fleet.writer({ format = "ndjson", output = dir .. "/" .. file_name(owner) .. ".ndjson",
    sync_later = true })
  if not w then return failed(werr) end
  for _, c in ipairs(chunks) do
    local written, e = w:write_encoded(c.text, c.n)
    if not written then
      w:discard()
      return failed(e)
    end
  end
  local closed, cerr = w:close()
  if not closed then return failed(cerr) end
  return w
end

local active, nactive = {}, 0
local helping = 0 -- ranges of others' large owners being fetched (fleet/share.lua)
local acks = {}
local finished = core.condition()
local parked, done = 0, 0
-- Set when this worker cannot write its files (disk full, read-only): it
-- takes no more owners and gives back those it holds.
local cannot_write
-- Set when Redis refuses the queue's keys (another program's keys under
-- the same prefix): waiting would not change that, so the worker stops
-- the same way.
local cannot_take
local last_flush = core.now()

local function log(fmt, ...) io.stderr:write(("gitfleet worker: " .. fmt .. "\n"):format(...)) end
Share.log = log

-- What the main loop does next changed (an owner done or written, a sync
-- over). A signal while the loop is not waiting (a take in flight) would
-- be lost and the loop would wait out its timeout: `changed` makes it look
-- again at once instead.
local changed = false
local function wake()
  changed = true
  finished:signal()
end

local function release(it)
  active[it.id] = nil
  nactive = nactive - 1
  wake()
end

-- Owners whose files are in place but not yet synced to disk. One sync at
-- a time makes all of them durable together (fleet.core.sync_written): an
-- fsync per file would cost a journal commit and its disk writes each.
-- Only then are they done and acknowledged; until then they hold their
-- slots, and a worker that stops gives them back.
local unsynced, syncing = {}, false

local function sync_written()
  local batch = unsynced
  unsynced = {}
  local files = {}
  for i, it in ipairs(batch) do
    files[i] = it.file
    it.file = nil
  end
  local synced, err = core.sync_written(files)
  if not synced then cannot_write = cannot_write or err end
  for _, it in ipairs(batch) do
    if synced then
      acks[#acks + 1] = it
      q:finished(it)
      done = done + 1
    else
      log("%s: %s (given back; this worker takes no more owners)", it.item, err)
    end
    release(it)
  end
  syncing = false
end

local function work(it)
  local provider, owner, bad = split(it.item)
  local written, err, local_failure
  if bad then
    err = { kind = "config", message = bad .. " in this worker's configuration" }
  else
    -- An error raised on the way (a provider plugin's, say) is this
    -- owner's failure like any other: retried, then parked with the
    -- error's file and line. Uncaught, it ended the owner's task with its
    -- slot taken, and the worker never ended.
    local ok, a, b, c = xpcall(fetch_owner, debug.traceback, it, provider, owner)
    if ok then
      written, err, local_failure = a, b, c
    else
      written, err = nil, { kind = "raised", message = tostring(a):match("^[^\n]*"), provider = provider,
        owner = owner }
      log("%s: %s", it.item, tostring(a))
    end
  end
  if written then
    it.file = written
    unsynced[#unsynced + 1] = it
    wake()
    return
  elseif local_failure then
    -- Not the owner's failure, so not one of its attempts: the owner is
    -- given back when this worker ends, for a worker that can write.
    cannot_write = cannot_write or err
    log("%s: %s (given back; this worker takes no more owners)", it.item, err)
  elseif type(err) == "table" and err.kind == "interrupted" then
    -- stopped by a signal: not a failed attempt; the queue gives the
    -- owner back when this process ends (Queue:give_back)
    log("%s: %s (given back for another worker)", it.item, cli.describe(err))
  elseif err then
    local final = type(err) == "table" and (err.kind == "not_found" or err.kind == "auth" or err.kind == "config")
    local reason = cli.describe(err)
    local verdict = q:fail(it, reason, final)
    if verdict == "parked" then
      parked = parked + 1
      log("%s: %s (parked after %d attempt(s))", it.item, reason, it.attempts)
    elseif verdict == "retry" then
      log("%s: %s (attempt %d of %d; retried later)", it.item, reason, it.attempts, q.info.max_attempts)
    else
      log("%s: %s (left for another worker)", it.item, reason)
    end
  end
  release(it)
end

-- Pages of another worker's large owner: fetched, then put back for it.
local function help(range)
  local ok, err = pcall(Share.help, q, range, encoder)
  if not ok then log("helping with %s: %s", tostring(range.owner), tostring(err)) end
  nactive, helping = nactive - 1, helping - 1
  wake()
end

-- Acknowledgements go in batches; one that cannot be sent (Redis away)
-- is kept for the next try: the file is already in place.
local function flush_acks()
  last_flush = core.now()
  if #acks == 0 then return true end
  local batch = acks
  acks = {}
  local n, err = q:ack(batch)
  if not n then
    for _, it in ipairs(batch) do acks[#acks + 1] = it end
    return nil, err
  end
  return true
end

local function held()
  local list = {}
  for _, it in pairs(active) do list[#list + 1] = it end
  return list
end

local redis_away = false
local last_touch, last_empty = core.now(), -math.huge
local empty_while_busy = false -- the last take found nothing while owners were still running
-- Idle (nothing under way, nothing to take): the worker waits for the
-- queue to change (q:wait: owners pushed or given back, or the last one
-- done, which ends the queue and this worker with it at once), and takes
-- again at least every IDLE_WAIT seconds, which is how owners held by a
-- worker that stopped are taken over once their lease is out.
local IDLE_WAIT = math.max(0.5, math.min(5, lease / 3))
local low = math.max(1, concurrency // 2)
-- Owners taken at a time: few, so that workers started together share the
-- large owners at the head of the queue instead of the first taking them all
-- (one Redis round trip per take still serves several owners' requests).
local TAKE_AT_MOST = 4
local HELP_AT_ONCE = 2

-- Whether this worker has room to help with others' large owners: nothing
-- of its own under way, or its loop sat idle for a fifth of the time since
-- it last asked (its owners wait for the network, not for its CPU). A
-- worker whose CPU is busy with its own owners would only move work from
-- one busy worker to another, and each page it helps with goes through
-- Redis twice.
local idle_seen, idle_seen_at = core.idle(), core.now()
local function spare()
  local idle, now = core.idle(), core.now()
  local share_idle = (idle - idle_seen) / math.max(now - idle_seen_at, 0.001)
  idle_seen, idle_seen_at = idle, now
  return nactive == helping or share_idle >= 0.2
end

while true do
  changed = false
  if #unsynced > 0 and not syncing then
    syncing = true
    core.spawn(sync_written)
  end
  local now = core.now()
  -- Take whenever a slot is free; after an empty take, wait a moment
  -- before asking again ...
  local took, asked = 0, false
  -- ... and only while no request waits for a slot: owners this worker
  -- could not start now are left in the queue for other workers.
  local room = core.http_waiting() == 0
  -- Once the last owner is done, ask again at once: the queue may be
  -- finished (and the worker with it) or hold owners others gave back.
  -- Idle, the wait on the queue's events below ends when asking is due.
  local due = now - last_empty >= 0.5 or (nactive == 0 and empty_while_busy)
  if cannot_write or cannot_take then
    if nactive == 0 then break end
  elseif nactive < concurrency and room and due then
    asked = true
    local finished_items = acks
    acks = {}
    local items, left = q:take(math.min(concurrency - nactive, TAKE_AT_MOST), nactive > 0 and "fetching" or "idle",
      finished_items)
    if not items then
      for _, it in ipairs(finished_items) do acks[#acks + 1] = it end
      if type(left) == "table" and left.kind == "redis" and tostring(left.message):find("^WRONGTYPE") then
        cannot_take = cli.describe(left)
      else
        if not redis_away then log("waiting for Redis: %s", cli.describe(left)) end
        redis_away = true
        core.sleep(0.5)
      end
    else
      if redis_away then log("Redis is back") end
      redis_away = false
      took = #items
      for _, it in ipairs(items) do
        active[it.id] = it
        nactive = nactive + 1
        if it.reclaimed then log("%s: taken over from a worker that stopped (attempt %d)", it.item, it.attempts) end
        core.spawn(work, it)
      end
      -- Nothing to take while others still fetch: help with their large
      -- owners' pages (two ranges at a time keep requests going), if this
      -- worker has room for it (spare).
      if #items == 0 and left > 0 and helping < HELP_AT_ONCE and spare() then
        for _, r in ipairs(Share.claim(q, HELP_AT_ONCE - helping) or {}) do
          nactive, helping = nactive + 1, helping + 1
          core.spawn(help, r)
          took = took + 1
        end
      end
      empty_while_busy = took == 0 and nactive > 0
      if took == 0 then
        last_empty = now
        -- The take said what is left: nothing queued or held by anyone
        -- (acknowledgements that came in while it was out are sent first,
        -- and the queue asked again).
        if nactive == 0 then
          flush_acks()
          if left == 0 and #acks == 0 and not opts.follow then break end
        end
      else
        last_empty = -math.huge
      end
    end
  end
  -- Finished owners are acknowledged with the next take; when no take is
  -- due, in a batch of their own.
  if #acks >= low or (#acks > 0 and now - last_flush >= 1) then flush_acks() end
  if now - last_touch >= lease / 3 then
    last_touch = now
    q:touch(held(), nactive > 0 and "fetching" or "idle")
    Share.touch(q)
  end
  if redis_away then
    -- A take that failed has slept already. A loop that did not ask (no
    -- slot free, or requests waiting for budgets Redis holds) waits here
    -- for an owner to end or the next take to be due: before, it went
    -- round without yielding, a CPU at 100% for as long as Redis was away.
    if not asked and not changed then finished:wait(0.5) end
  -- Slots still free after a take that brought owners: fill them first.
  elseif not (took > 0 and nactive < concurrency) then
    if nactive == 0 and last_empty > -math.huge then
      -- A wait that fails (Redis away, or something else's key under the
      -- events' name) is a pause all the same, never a loop of retries; the
      -- next take shows what is wrong.
      if q:wait(IDLE_WAIT) == nil then core.sleep(math.min(IDLE_WAIT, 1)) end
      last_empty = -math.huge
    else
      -- Busy: look again soon, as requests leave the wait before owners end.
      if not changed then finished:wait((nactive > 0 and not room) and 0.05 or 0.5) end
    end
  end
end
flush_acks()
if done == 0 and parked == 0 and not cannot_write and not cannot_take then
  log("queue %s has nothing left to do", opts.queue)
elseif done > 0 or parked > 0 then
  log("%d owner(s) written to %s%s", done, opts.output_dir, parked > 0 and (", %d parked"):format(parked) or "")
end
if Share.pages_helped > 0 then
  log("fetched %d page(s) of other workers' large owners", Share.pages_helped)
end
if cannot_write then log("stopped: it cannot write its files (%s)", cannot_write) end
if cannot_take then log("stopped: Redis refuses the queue's keys (%s)", cannot_take) end
local s = fleet.stats()
if s.redis_round_trips and s.requests > 0 then
  log("%d requests, %d Redis round trips (%.3f per request; %d budget updates)", s.requests, s.redis_round_trips,
    s.redis_round_trips / s.requests, s.shared_syncs)
end
return (parked > 0 or cannot_write or cannot_take) and 1 or 0
