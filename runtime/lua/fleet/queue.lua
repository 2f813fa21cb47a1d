-- fleet.queue(name): a work queue in Redis (shared:), for any number of
-- processes on any number of machines. Items are owners ("PROVIDER:OWNER"
-- or "OWNER"); a Redis Stream carries them to a consumer group, so each is
-- delivered to one worker at a time; an item is done when acknowledged.
--
--   local q = fleet.queue("crawl")
--   q:push({ "acme", "gitlab:globex" })     -> added (an item already waiting is not added twice, whatever its case)
--   local items, left = q:take(8 [, doing, done])
--                                            -> { {id=, item=, attempts=, reclaimed=}, ... }, and the
--                                               items still queued or in progress after it
--                                               (acknowledges the items in `done` first)
--   q:ack(items[1])                          -> done
--   q:fail(items[2], "why")                  -> "retry" or "parked" (after shared.max_attempts)
--   q:touch(items)                           -> still working on them (keeps them from reclaim)
--   q:finished(item)                         -> done, its acknowledgement to follow (q:ack or
--                                               q:take's done); acknowledged at exit if the
--                                               process ends first
--   q:status()                               -> { waiting=, in_progress=, done=, failed={item=reason},
--                                               workers={consumer={at=, doing=}} }
--   q:wait(seconds)                          -> true when the queue changed since this process's last take
--                                               (items pushed or given back, or the queue finished)
--
-- An item held by a worker that stopped beating for longer than
-- shared.lease is claimed by the next take (XAUTOCLAIM). Items a process
-- still holds when it ends (SIGTERM, SIGINT, a script that returns
-- without acknowledging them) are given back then, for the next take to
-- claim at once; only a process that cannot run its end (SIGKILL, a lost
-- machine) leaves them for the lease. Every change is one Redis script,
-- so two workers never see a half-done change.
local core = require("fleet.core")
local json = require("cjson")
local owners = require("fleet.owners")

local Queue = {}
Queue.__index = Queue

-- Every change an idle worker waits for (items pushed or given back, the
-- last item done) is an entry on the queue's events stream, which
-- q:wait blocks on: a worker with nothing to do learns at once that the
-- queue finished or has work again, without asking over and over. The
-- stream keeps the last few entries only.
local EVENT = [[
-- Every key a script writes must be of its kind or absent: Redis does not
-- undo a script's first writes when a later command fails, and a half-done
-- change (an item in the queued set with no entry in the stream, say)
-- would leave workers waiting for it for ever. So a key of another kind
-- (another program's, under the same prefix) is refused before any write.
-- Returns the refusal (for redis.error_reply, which every Redis version
-- passes on as it is), or nil.
local function refused(...)
  local kinds = { ... }
  for i = 1, #kinds, 2 do
    local t = redis.call('TYPE', kinds[i])['ok']
    if t ~= 'none' and t ~= kinds[i + 1] then
      return 'WRONGTYPE ' .. kinds[i] .. ' holds a ' .. t .. ', not a ' .. kinds[i + 1]
        .. ': another program uses these keys (shared.prefix picks others)'
    end
  end
end
-- A finished item's entry is done when its acknowledgement lands, or when
-- it is still in the stream but no longer pending (its consumer group was
-- destroyed and made again, which forgot who held what): either way this
-- process wrote it. An entry already gone was acknowledged by another.
local function acked(stream, id)
  return redis.call('XACK', stream, 'workers', id) == 1 or #redis.call('XRANGE', stream, id, id) == 1
end
-- The set of items queued or in progress holds each in lower case: owner
-- names are compared ignoring case, as providers and `gitfleet fetch`
-- compare them. A removal takes the item as given too, which is how sets
-- written before held it.
local function enqueue(queued, item) return redis.call('SADD', queued, string.lower(item)) == 1 end
local function unqueue(queued, item) redis.call('SREM', queued, item, string.lower(item)) end
local function event(events, what)
  redis.call('XADD', events, 'MAXLEN', '~', 32, '*', 'e', what)
end
-- The items still queued or in progress; when a change (`changed`) left
-- none, the queue is finished, and says so.
local function left_after(queued, events, changed)
  local left = redis.call('SCARD', queued)
  if left == 0 and changed then event(events, 'finished') end
  return left
end
local function last_event(events)
  local e = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
  return e[1] and e[1][1] or '0-0'
end
]]

-- push: adds each item not already waiting or in progress (and makes the
-- consumer group once). An item parked before, or done, starts afresh:
-- its attempts are counted from none and it is no longer parked. KEYS:
-- stream, queued set, events, tries, failed. ARGV: items. Returns the
-- number added.
local PUSH = EVENT .. [[
local stream, queued, events, tries, failed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local bad = refused(stream, 'stream', queued, 'set', events, 'stream', tries, 'hash', failed, 'hash')
if bad then return redis.error_reply(bad) end
local added = 0
redis.pcall('XGROUP', 'CREATE', stream, 'workers', '0', 'MKSTREAM')
for _, item in ipairs(ARGV) do
  if enqueue(queued, item) then
    redis.call('XADD', stream, '*', 'item', item)
    redis.call('HDEL', tries, item)
    redis.call('HDEL', failed, item)
    added = added + 1
  end
end
if added > 0 then event(events, 'pushed') end
return added
]]

-- take: acknowledges what the caller finished (one round trip for both),
-- then takes entries idle past the lease (their worker is gone), then new
-- ones. An entry delivered more than max_attempts times is parked. KEYS:
-- stream, queued, tries, failed, workers, done, events. ARGV: consumer,
-- count, min idle ms, max attempts, beat, now, then id, item pairs to
-- acknowledge. Returns the number of items queued or in progress after the
-- take (so a worker with nothing to do learns whether to wait without
-- asking again), the id of the last event (q:wait waits for a later one),
-- then id, item, attempts, reclaimed...
local TAKE = EVENT .. [[
local stream, queued, tries, failed, workers, done, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local me, count, idle, max = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local bad = refused(stream, 'stream', queued, 'set', tries, 'hash', failed, 'hash', workers, 'hash', done, 'hash', events, 'stream')
if bad then return redis.error_reply(bad) end
redis.call('HSET', workers, me, ARGV[5])
local before = redis.call('SCARD', queued)
for i = 7, #ARGV, 2 do
  local id, item = ARGV[i], ARGV[i + 1]
  if acked(stream, id) then
    unqueue(queued, item)
    redis.call('HSET', done, item, ARGV[6])
    redis.call('HDEL', tries, item)
    redis.call('HDEL', failed, item)
  end
  redis.call('XDEL', stream, id)
end
local function finish(out)
  out[1] = left_after(queued, events, before > 0)
  out[2] = last_event(events)
  return out
end
-- Each item queued or in progress has one entry in the stream. Items
-- without one (the stream deleted or evicted, say) would never be
-- delivered, and every worker would wait for them for ever: they are put
-- back. Counting is cheap; the search runs only when the counts disagree.
local nqueued = redis.call('SCARD', queued)
if nqueued > 0 and redis.call('XLEN', stream) < nqueued then
  local has = {}
  for _, e in ipairs(redis.call('XRANGE', stream, '-', '+')) do
    for i = 1, #e[2], 2 do if e[2][i] == 'item' then has[string.lower(e[2][i + 1])] = true end end
  end
  redis.pcall('XGROUP', 'CREATE', stream, 'workers', '0', 'MKSTREAM')
  local lost = 0
  for _, item in ipairs(redis.call('SMEMBERS', queued)) do
    if not has[string.lower(item)] then -- sets written before held items as given
      redis.call('XADD', stream, '*', 'item', item)
      lost = lost + 1
    end
  end
  if lost > 0 then event(events, 'pushed') end
end
if redis.call('EXISTS', stream) == 0 then return finish({ 0, 0 }) end
local out = { 0, 0 }
local function deliver(id, fields, reclaimed)
  local item
  for i = 1, #fields, 2 do if fields[i] == 'item' then item = fields[i + 1] end end
  if not item then redis.call('XACK', stream, 'workers', id); redis.call('XDEL', stream, id); return end
  local n = redis.call('HINCRBY', tries, item, 1)
  if reclaimed and n > max then
    redis.call('HSET', failed, item, 'gave up after ' .. (n - 1) .. ' attempts: the worker holding it stopped')
    redis.call('XACK', stream, 'workers', id)
    redis.call('XDEL', stream, id)
    unqueue(queued, item)
    return
  end
  out[#out + 1] = id; out[#out + 1] = item; out[#out + 1] = n; out[#out + 1] = reclaimed and 1 or 0
end
local claimed = redis.pcall('XAUTOCLAIM', stream, 'workers', me, idle, '0-0', 'COUNT', count)
if claimed.err then
  -- A stream without its consumer group (deleted by hand): made again,
  -- from the start, so every entry is delivered; anything else is raised.
  if not claimed.err:find('NOGROUP', 1, true) then return claimed end
  redis.call('XGROUP', 'CREATE', stream, 'workers', '0')
  claimed = { '0-0', {} }
end
for _, e in ipairs(claimed[2]) do
  if e then deliver(e[1], e[2], true) end
end
local want = count - (#out - 2) / 4
if want > 0 then
  local got = redis.call('XREADGROUP', 'GROUP', 'workers', me, 'COUNT', want, 'STREAMS', stream, '>')
  if got then for _, e in ipairs(got[1][2]) do deliver(e[1], e[2], false) end end
end
return finish(out)
]]

-- ack: KEYS: stream, queued, tries, done, failed, events. ARGV: now, then
-- id, item pairs. An item acknowledged after a reclaim may be acked twice:
-- the second is a no-op.
local ACK = EVENT .. [[
local bad = refused(KEYS[1], 'stream', KEYS[2], 'set', KEYS[3], 'hash', KEYS[4], 'hash', KEYS[5], 'hash', KEYS[6], 'stream')
if bad then return redis.error_reply(bad) end
local n = 0
for i = 2, #ARGV, 2 do
  local id, item = ARGV[i], ARGV[i + 1]
  if acked(KEYS[1], id) then
    n = n + 1
    unqueue(KEYS[2], item)
    redis.call('HSET', KEYS[4], item, ARGV[1])
    redis.call('HDEL', KEYS[3], item)
    redis.call('HDEL', KEYS[5], item)
  end
  redis.call('XDEL', KEYS[1], id)
end
left_after(KEYS[2], KEYS[6], n > 0)
return n
]]

-- fail: KEYS: stream, queued, tries, failed, events. ARGV: id, item,
-- reason, max attempts, final ("1": no point retrying). Retries go to the
-- back of the stream.
local FAIL = EVENT .. [[
local id, item, reason, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local bad = refused(KEYS[1], 'stream', KEYS[2], 'set', KEYS[3], 'hash', KEYS[4], 'hash', KEYS[5], 'stream')
if bad then return redis.error_reply(bad) end
if redis.call('XACK', KEYS[1], 'workers', id) == 0 then return 'gone' end
redis.call('XDEL', KEYS[1], id)
local n = tonumber(redis.call('HGET', KEYS[3], item) or 0)
if ARGV[5] == '1' or n >= max then
  redis.call('HSET', KEYS[4], item, reason)
  unqueue(KEYS[2], item)
  left_after(KEYS[2], KEYS[5], true)
  return 'parked'
end
redis.call('XADD', KEYS[1], '*', 'item', item)
event(KEYS[5], 'retry')
return 'retry'
]]

-- touch: resets the idle time of entries still being worked on. KEYS:
-- stream, workers. ARGV: consumer, beat, ids.
local TOUCH = [[
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if #ARGV > 2 then
  redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, unpack(ARGV, 3, #ARGV))
end
return 1
]]

-- give_back: sent when the process ends (fleet.core.redis_at_exit) with
-- items still held: stopped by SIGTERM or SIGINT, or a script that ended
-- without acknowledging. Items finished but not yet acknowledged (see
-- Queue:finished) are acknowledged. Each other entry still this
-- consumer's is made idle for the lease, so the next take anywhere claims
-- it at once; its attempt is not counted (the claim counts it again).
-- The process's beat is removed: it no longer works on the queue.
-- KEYS: stream, queued, tries, done, failed, events, workers. ARGV:
-- consumer, lease ms, now, the number of finished pairs, then id, item
-- pairs (the finished first). Returns the number given back.
local GIVE_BACK = EVENT .. [[
local stream, queued, tries, done, failed, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local me, idle, now, nfinished = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local bad = refused(stream, 'stream', queued, 'set', tries, 'hash', done, 'hash', failed, 'hash', events, 'stream', KEYS[7], 'hash')
if bad then return redis.error_reply(bad) end
redis.call('HDEL', KEYS[7], me)
local nacked, given = 0, 0
for i = 5, #ARGV, 2 do
  local id, item = ARGV[i], ARGV[i + 1]
  if (i - 5) / 2 < nfinished then
    if acked(stream, id) then
      nacked = nacked + 1
      unqueue(queued, item)
      redis.call('HSET', done, item, now)
      redis.call('HDEL', tries, item)
      redis.call('HDEL', failed, item)
    end
    redis.call('XDEL', stream, id)
  elseif #redis.call('XPENDING', stream, 'workers', id, id, 1, me) == 1 then
    redis.call('XCLAIM', stream, 'workers', me, 0, id, 'IDLE', idle, 'JUSTID')
    if tonumber(redis.call('HGET', tries, item) or 0) > 0 then redis.call('HINCRBY', tries, item, -1) end
    given = given + 1
  end
end
if given > 0 then event(events, 'given back') else left_after(queued, events, nacked > 0) end
return given
]]

-- status: KEYS: stream, queued, done, failed, workers. ARGV: lease ms,
-- now (seconds), how long a worker's beat is kept without news (seconds).
-- Entries idle past the lease (given back, or their worker stopped) wait
-- for the next take: they are counted as waiting, not in progress. A beat
-- older than the last argument is removed (its worker stopped long ago).
local STATUS = [[
local pending, stale = 0, 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local ok = redis.pcall('XPENDING', KEYS[1], 'workers')
  if type(ok) == 'table' and not ok.err then
    pending = ok[1]
    if pending > 0 then
      stale = #redis.call('XPENDING', KEYS[1], 'workers', 'IDLE', ARGV[1], '-', '+', pending)
    end
  end
end
local beats = redis.call('HGETALL', KEYS[5])
local kept = {}
for i = 1, #beats, 2 do
  local ok, beat = pcall(cjson.decode, beats[i + 1])
  local at = ok and type(beat) == 'table' and tonumber(beat.at)
  if at and tonumber(ARGV[2]) - at > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[5], beats[i])
  else
    kept[#kept + 1] = beats[i]
    kept[#kept + 1] = beats[i + 1]
  end
end
return { redis.call('SCARD', KEYS[2]), pending - stale, redis.call('HLEN', KEYS[3]),
         redis.call('HGETALL', KEYS[4]), kept }
]]

-- A worker that stopped without its end (killed, its machine lost) leaves
-- its last beat; `status` shows it as stopped after the lease, and removes
-- it after a day.
local BEAT_KEPT = 86400

local scripts = {}
local function script(name, source)
  scripts[name] = scripts[name] or core.redis_script(source)
  return scripts[name]
end

local MAX_NAME = 64
-- As long as a line of an owners file, provider and all: whatever
-- `gitfleet fetch` takes can be queued.
local MAX_ITEM = owners.MAX_LINE

-- A queue name: what a person would type, and safe in a key and a file name.
local function check_name(name)
  if type(name) ~= "string" or name == "" or #name > MAX_NAME or not name:match("^[%w._-]+$") then
    local shown = type(name) == "string" and owners.shown(name) or tostring(name)
    return nil, ("bad queue name %s: use 1 to %d letters, digits, '.', '_' or '-'"):format(shown, MAX_NAME)
  end
  return name
end

-- An item: an owner, optionally PROVIDER:. No spaces or control characters.
function Queue.check_item(item)
  if type(item) ~= "string" or item == "" then return nil, "an empty owner" end
  if #item > MAX_ITEM then return nil, ("an owner longer than %d bytes"):format(MAX_ITEM) end
  if item:find("[%c%s]") then
    return nil, ("owner %s has spaces or control characters"):format(owners.shown(item))
  end
  local owner = item:match("^[%w_-]+:(.+)$") or item
  if owner == "." or owner == ".." or owner:find("^/") or owner:find("//", 1, true) then
    return nil, ("owner %s is not a name"):format(owners.shown(item))
  end
  return item
end

local opened = 0 -- queue objects, each with its own give-back at exit

function Queue.open(name)
  local ok, err = check_name(name)
  if not ok then error(err, 2) end
  local info = core.redis_info()
  if not info then error("fleet.queue needs a shared: section with a Redis url (see docs/scale-out.md)", 2) end
  local base = info.prefix .. ":queue:" .. name
  local self = setmetatable({
    name = name,
    info = info,
    keys = {
      stream = base .. ":stream", queued = base .. ":queued", tries = base .. ":tries",
      done = base .. ":done", failed = base .. ":failed", workers = base .. ":workers",
      events = base .. ":events",
      -- large owners whose pages several workers fetch (fleet/share.lua)
      shares = base .. ":shares", share = base .. ":share:",
    },
    last_event = "0-0", -- the newest event the last take saw
    consumer = info.worker,
    held = {}, -- id -> {item=, finished=}: taken here, not yet acknowledged or failed
  }, Queue)
  opened = opened + 1
  core.redis_at_exit("queue " .. opened, function() return self:give_back() end)
  return self
end

-- What this process holds, for GIVE_BACK when it ends: the arguments of
-- fleet.core.redis_at_exit's function, or nothing when it never took an
-- item (so never beat: a `queue push` or `status` has nothing to undo).
function Queue:give_back()
  if not self.beaten then return end
  local finished, others = {}, {}
  for id, h in pairs(self.held) do
    local list = h.finished and finished or others
    list[#list + 1] = id
    list[#list + 1] = h.item
  end
  local nfinished = #finished // 2
  local what = #finished + #others == 0 and ("this process's beat on queue %s removed"):format(self.name)
    or ("item(s) held here given back to queue %s, for others to take now"):format(self.name)
  for _, v in ipairs(others) do finished[#finished + 1] = v end
  local k = self.keys
  return what,
    GIVE_BACK, 7, k.stream, k.queued, k.tries, k.done, k.failed, k.events, k.workers, self.consumer,
    math.floor(self.info.lease * 1000), tostring(core.now()), nfinished, table.unpack(finished)
end

-- An item is finished but its acknowledgement waits (for a batch): if
-- the process ends first, it is acknowledged then rather than given back.
function Queue:finished(it)
  local h = self.held[it.id]
  if h then h.finished = true end
end

-- Adds items (a string or a list). Returns the number added, or nil, err.
function Queue:push(items)
  if type(items) == "string" then items = { items } end
  local added = 0
  for i = 1, #items, 500 do
    local chunk = {}
    for j = i, math.min(i + 499, #items) do
      local item, err = Queue.check_item(items[j])
      if not item then error(err, 2) end
      chunk[#chunk + 1] = item
    end
    local n, err = core.redis_eval(script("push", PUSH), 5, self.keys.stream, self.keys.queued,
      self.keys.events, self.keys.tries, self.keys.failed, table.unpack(chunk))
    if not n then return nil, err end
    added = added + n
  end
  return added
end

function Queue:beat(what)
  return json.encode({ at = core.now(), doing = what })
end

-- Up to n items, after acknowledging the items in `done` (a list, may be
-- nil). Returns a list (maybe empty) and the number of items still queued
-- or in progress (those just taken among them), or nil, err (nothing
-- acknowledged).
function Queue:take(n, doing, done)
  local count = math.tointeger(n or 1)
  if not count or count < 1 then
    error("bad argument #1 to 'take' (a whole number of items, at least 1, expected)", 2)
  end
  local k = self.keys
  local args = { self.consumer, count, math.floor(self.info.lease * 1000), self.info.max_attempts, self:beat(doing),
    tostring(core.now()) }
  for _, it in ipairs(done or {}) do
    args[#args + 1] = it.id
    args[#args + 1] = it.item
  end
  self.beaten = true
  local flat, err = core.redis_eval(script("take", TAKE), 7, k.stream, k.queued, k.tries, k.failed, k.workers,
    k.done, k.events, table.unpack(args))
  if not flat then return nil, err end
  self.last_event = flat[2]
  for _, it in ipairs(done or {}) do self.held[it.id] = nil end
  local out = {}
  for i = 3, #flat, 4 do
    out[#out + 1] = { id = flat[i], item = flat[i + 1], attempts = flat[i + 2], reclaimed = flat[i + 3] == 1 }
    self.held[flat[i]] = { item = flat[i + 1] }
  end
  return out, flat[1]
end

-- Acknowledges items (one or a list): each is done. Returns the count.
function Queue:ack(items)
  if items.id then items = { items } end
  if #items == 0 then return 0 end
  local args = { tostring(core.now()) }
  for _, it in ipairs(items) do
    args[#args + 1] = it.id
    args[#args + 1] = it.item
  end
  local k = self.keys
  local n, err = core.redis_eval(script("ack", ACK), 6, k.stream, k.queued, k.tries, k.done, k.failed, k.events,
    table.unpack(args))
  if n then
    for _, it in ipairs(items) do self.held[it.id] = nil end
  end
  return n, err
end

-- An item failed: retried later unless it used its attempts (or final).
function Queue:fail(it, reason, final)
  local k = self.keys
  local r, err = core.redis_eval(script("fail", FAIL), 5, k.stream, k.queued, k.tries, k.failed, k.events, it.id,
    it.item, tostring(reason):sub(1, 500), self.info.max_attempts, final and "1" or "0")
  if r then self.held[it.id] = nil end
  return r, err
end

-- Still working on items: they are not reclaimed by others.
function Queue:touch(items, doing)
  self.beaten = true
  local ids = {}
  for _, it in ipairs(items or {}) do ids[#ids + 1] = it.id end
  return core.redis_eval(script("touch", TOUCH), 2, self.keys.stream, self.keys.workers, self.consumer,
    self:beat(doing), table.unpack(ids))
end

-- Waits up to `seconds` for an event newer than the last take saw: items
-- pushed or given back for a retry, or the queue finished. Returns true
-- (take again), false (nothing happened), or nil, err. One round trip,
-- which holds this process's connection to Redis while it waits (what
-- else it sends waits too), so the budget units it holds go back first:
-- for a process with nothing else to do.
function Queue:wait(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds > 86400 then
    error("bad argument #1 to 'wait' (seconds from 0 to 86400 expected)", 2)
  end
  -- At least 1 ms: BLOCK 0 would wait for ever.
  local ms = math.max(1, math.floor(seconds * 1000 + 0.5))
  local r, err = core.redis_blocking("XREAD", "COUNT", "1", "BLOCK", tostring(ms), "STREAMS", self.keys.events,
    self.last_event)
  if r == nil and err then return nil, err end
  return type(r) == "table" and next(r) ~= nil
end

function Queue:status()
  local k = self.keys
  local r, err = core.redis_eval(script("status", STATUS), 5, k.stream, k.queued, k.done, k.failed, k.workers,
    math.floor(self.info.lease * 1000), tostring(core.now()), BEAT_KEPT)
  if not r then return nil, err end
  local st = { queued = r[1], in_progress = r[2], done = r[3], failed = {}, workers = {} }
  st.waiting = math.max(0, st.queued - st.in_progress)
  for i = 1, #r[4], 2 do st.failed[r[4][i]] = r[4][i + 1] end
  for i = 1, #r[5], 2 do
    local ok, beat = pcall(json.decode, r[5][i + 1])
    st.workers[r[5][i]] = ok and beat or {}
  end
  return st
end

return Queue
