-- One large owner's pages fetched by several workers (gitfleet worker).
--
-- A queue hands out whole owners, and one organisation can hold most of a
-- crawl's repositories. Near the end of a crawl the worker that took the
-- last large owner would fetch and decode its pages alone while the others
-- sit idle. So the worker that takes an owner (its lead) and learns from
-- the first page that many pages follow opens a share in Redis: the lead
-- reads pages from the front, reserving pages ahead of what it reads
-- (`front`; only as far ahead as the network needs, see Share.lead); a
-- worker that finds nothing to take, and has room to spare, claims a
-- range of pages from the back (`back`), fetches and normalises it, and
-- puts it back in Redis as ndjson. Where the two meet the lead stops; it
-- then collects the helpers' ranges and writes the owner's file in page
-- order, so the file is the same whoever fetched what, and is written
-- once, by the one worker holding the owner's queue entry.
--
-- A helper's claim is a lease (shared.lease): a range whose helper stopped,
-- or gave it back after a failure, is fetched by the lead itself (or by
-- another helper). The share's keys live while the lead renews them; a lead
-- that stopped leaves them to expire, and whoever takes its owner over
-- opens a share of its own. Every change is one Redis script; times are
-- Redis's own (TIME), so machines with different clocks agree.
local core = require("fleet.core")
local json = require("cjson")
local Repositories = require("fleet.repositories")

local Share = {
  -- pages of others' owners this process fetched and handed back
  pages_helped = 0,
  -- how the process reports what happened to a share: log(fmt, ...)
  log = function() end,
}

local NOW = [[
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
]]

-- A range for a helper in one share: a claim that ran out first (its
-- helper stopped or gave it back), else the next `size` pages below
-- `back` and above the lead's `front`, but no more than half of them, so
-- the last pages are split between the lead and its helpers instead of
-- all going to the one that asked first. Returns from, to, or nil.
local CLAIM_IN = [[
local function claim_in(meta, now, lease)
  local claims = meta .. ':claims'
  local range = redis.call('ZRANGEBYSCORE', claims, '-inf', now, 'LIMIT', 0, 1)[1]
  local from, to
  if range then
    from, to = range:match('^(%d+):(%d+)$')
    from, to = tonumber(from), tonumber(to)
  end
  if not from then
    if range then redis.call('ZREM', claims, range) end -- not a range of ours
    range = nil
    local f = redis.call('HMGET', meta, 'front', 'back', 'size')
    local front, back, size = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
    if not front or not back or not size or size < 1 or back - 1 <= front then return nil end
    size = math.min(size, math.ceil((back - 1 - front) / 2))
    from, to = math.max(back - size, front + 1), back - 1
    redis.call('HSET', meta, 'back', from)
    range = from .. ':' .. to
  end
  redis.call('ZADD', claims, now + lease, range)
  local ttl = redis.call('PTTL', meta)
  if ttl > 0 then redis.call('PEXPIRE', claims, ttl) end
  return from, to
end
]]

-- open: KEYS shares, meta, events. ARGV gen, ttl ms, then the share's
-- fields as name, value pairs.
local OPEN = NOW .. [[
redis.call('DEL', KEYS[2], KEYS[2] .. ':claims', KEYS[2] .. ':parts')
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 32, '*', 'e', 'shared')
return 1
]]

-- reserve (the lead): moves front up to ARGV[1], not into a helper's
-- range. KEYS meta. ARGV front wanted, ttl ms. Returns the front, or -1
-- when the share is gone.
local RESERVE = [[
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 0 then return -1 end
local f = redis.call('HMGET', meta, 'front', 'back')
local front = math.max(tonumber(f[1]), math.min(tonumber(ARGV[1]), tonumber(f[2]) - 1))
redis.call('HSET', meta, 'front', front)
for _, k in ipairs({ meta, meta .. ':claims', meta .. ':parts' }) do redis.call('PEXPIRE', k, ARGV[2]) end
return front
]]

-- claim (a helper): up to ARGV[3] ranges, from the shares with the most
-- pages left unclaimed, but not its own. KEYS shares. ARGV key base, lease
-- ms, want, the helper's name.
-- Returns { gen, from, to, {owner, provider, template, last, opts} }...
local CLAIM = NOW .. CLAIM_IN .. [[
local now, lease, want = now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3])
local open = {}
for _, gen in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local meta = ARGV[1] .. gen
  local f = redis.call('HMGET', meta, 'front', 'back', 'lead')
  if not f[1] then
    redis.call('ZREM', KEYS[1], gen)
  elseif f[3] ~= ARGV[4] then
    open[#open + 1] = { gen = gen, meta = meta, left = tonumber(f[2]) - 1 - tonumber(f[1]) }
  end
end
table.sort(open, function(a, b) return a.left > b.left end)
local out = {}
for _, s in ipairs(open) do
  while #out < want do
    local from, to = claim_in(s.meta, now, lease)
    if not from then break end
    out[#out + 1] = { s.gen, from, to, redis.call('HMGET', s.meta, 'owner', 'provider', 'template', 'last', 'opts') }
  end
  if #out >= want then break end
end
return out
]]

-- put (a helper): the records of range ARGV[1] (ARGV[2]: "count\nndjson",
-- or '' when the range failed: given back at once), then the next range
-- of the same share when ARGV[4] is '1'. KEYS meta. ARGV range, records,
-- lease ms, more. Returns { from, to }, { 0 } (nothing more) or { -1 }
-- (the share is gone).
local PUT = NOW .. CLAIM_IN .. [[
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 0 then return { -1 } end
local claims, parts = meta .. ':claims', meta .. ':parts'
if ARGV[2] == '' then
  if redis.call('ZSCORE', claims, ARGV[1]) then redis.call('ZADD', claims, 0, ARGV[1]) end
  return { 0 }
end
if redis.call('ZREM', claims, ARGV[1]) == 1 then
  redis.call('HSET', parts, ARGV[1], ARGV[2])
  local ttl = redis.call('PTTL', meta)
  if ttl > 0 then redis.call('PEXPIRE', parts, ttl) end
end
if ARGV[4] ~= '1' then return { 0 } end
local from, to = claim_in(meta, now_ms(), tonumber(ARGV[3]))
if not from then return { 0 } end
return { from, to }
]]

-- collect (the lead, once front met back): claims that ran out become the
-- lead's own ({ 1, ranges }); while helpers still work, { 1, {} }; when
-- every range is in, the records and the share gone ({ 2, range, records,
-- ... }). KEYS shares, meta. ARGV gen, ttl ms. { -1 }: the share is gone.
local COLLECT = NOW .. [[
local meta = KEYS[2]
if redis.call('EXISTS', meta) == 0 then return { -1 } end
local claims, parts = meta .. ':claims', meta .. ':parts'
local mine = redis.call('ZRANGEBYSCORE', claims, '-inf', now_ms())
for _, r in ipairs(mine) do redis.call('ZREM', claims, r) end
if #mine > 0 or redis.call('ZCARD', claims) > 0 then
  for _, k in ipairs({ meta, claims, parts }) do redis.call('PEXPIRE', k, ARGV[2]) end
  return { 1, mine }
end
local got = redis.call('HGETALL', parts)
redis.call('DEL', meta, claims, parts)
redis.call('ZREM', KEYS[1], ARGV[1])
return { 2, got }
]]

-- close: the share gone (its lead failed, or needs no help any more).
-- KEYS shares, meta. ARGV gen.
local CLOSE = [[
redis.call('DEL', KEYS[2], KEYS[2] .. ':claims', KEYS[2] .. ':parts')
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
]]

-- close_all: at exit (fleet.core.redis_at_exit), the shares this process
-- still leads, so that helpers stop working for it at once. ARGV: shares
-- key, meta key, gen, for each. Returns how many.
local CLOSE_ALL = [[
for i = 1, #ARGV, 3 do
  local meta = ARGV[i + 1]
  redis.call('DEL', meta, meta .. ':claims', meta .. ':parts')
  redis.call('ZREM', ARGV[i], ARGV[i + 2])
end
return #ARGV / 3
]]

-- touch: renews what this process holds. ARGV lease ms, ttl ms, then
-- meta key, range ('' for a share this process leads) pairs.
local TOUCH = NOW .. [[
local now = now_ms()
for i = 3, #ARGV, 2 do
  local meta, range = ARGV[i], ARGV[i + 1]
  if range == '' then
    for _, k in ipairs({ meta, meta .. ':claims', meta .. ':parts' }) do redis.call('PEXPIRE', k, ARGV[2]) end
  else
    redis.call('ZADD', meta .. ':claims', 'XX', now + tonumber(ARGV[1]), range)
  end
end
return 1
]]

local scripts = {}
local function script(name, source)
  scripts[name] = scripts[name] or core.redis_script(source)
  return scripts[name]
end

local function lease_ms(q) return math.floor(q.info.lease * 1000) end
-- A share outlives its lead's last renewal by a lease: helpers stop
-- working for a lead that stopped as soon as its owner can be taken over.
local ttl_ms = lease_ms

-- What this process holds, for touch: leads[meta] = {shares=, gen=};
-- claims[meta][range] = true.
local leads, claims = {}, {}
local closing_at_exit = false -- the at-exit close of the shares led is registered

-- Redis calls a share cannot do without wait while Redis is away (the
-- worker says so on its own line); they never fail the owner for it. An
-- error Redis answers (something else under a share's key) is returned.
local function eval_retrying(name, source, ...)
  local pause = 0.1
  while true do
    local r, err = core.redis_eval(script(name, source), ...)
    if r ~= nil then return r end
    if type(err) ~= "table" or err.kind ~= "network" then return nil, err end
    core.sleep(pause)
    pause = math.min(2, pause * 2)
  end
end

-- The lead's window and reservations (Share.lead): at least this many
-- pages ahead and reserved at a time; a wait of IDLE_FOR_NETWORK seconds
-- with the process idle counts as a wait for the network.
local AHEAD_AT_LEAST, RESERVE_AT_LEAST, IDLE_FOR_NETWORK = 2, 8, 0.0002

-- What a helper needs to request the lead's pages as the lead does: the
-- field holding the items. nil when the pages send more with each request
-- (a plugin's own headers or resource): those are not shared, so a helper
-- can never be told through Redis what to send with its token.
local function page_opts_of(pages)
  for k in pairs(pages.opts) do
    if k ~= "decode" and k ~= "items" and k ~= "window" then return nil end
  end
  return json.encode({ items = pages.items_field })
end

-- Whether this process has the provider a share names.
local function providers_known(name)
  for _, p in ipairs(core.providers()) do
    if p.name == name then return true end
  end
  return false
end

-- page_chunk = Share.chunker(normalize, encoder): page_chunk(items) is
-- one page's records as a chunk of ndjson, { text =, n = }, or nil, err.
-- Pages wait for their owner's file as text, which the collector need not
-- walk, not as tables of records.
function Share.chunker(normalize, encoder)
  return function(items)
    local records = {}
    local n, err = normalize(items, records, 0)
    if not n then return nil, err end
    local text
    text, n = encoder:encode_many(records)
    return { text = text, n = n }
  end
end

-- chunks, err = Share.lead(q, it, owner, provider, pages, page_chunk): the
-- chunks of pages 2..last in page order, fetched with whichever workers
-- help; nil when the owner is too small to share (the caller reads on
-- alone). it: the queue item; pages: the owner's pages, the first already
-- read; page_chunk: Share.chunker's.
function Share.lead(q, it, owner, provider, pages, page_chunk)
  local step = pages.window
  local size = math.max(4, step // 2)
  -- Worth it when helpers can have two ranges beyond the lead's first window.
  local page_opts = page_opts_of(pages)
  if not pages.last or pages.last < 1 + step + 2 * size or not page_opts then return nil end
  local gen = (q.consumer .. "." .. it.id):gsub("[^%w._-]", "_")
  local meta = q.keys.share .. gen
  pages.limit = 1 + step
  local opened = core.redis_eval(script("open", OPEN), 3, q.keys.shares, meta, q.keys.events, gen, ttl_ms(q),
    "owner", owner, "provider", provider, "template", pages.template, "last", pages.last, "size", size,
    "front", pages.limit, "back", pages.last + 1, "opts", page_opts, "lead", q.consumer)
  if not opened then
    pages.limit = nil -- Redis away: no share, the lead reads every page
    return nil
  end
  leads[meta] = { shares = q.keys.shares, gen = gen }
  if not closing_at_exit then
    closing_at_exit = true
    core.redis_at_exit("shares led", function()
      local args = {}
      for m, l in pairs(leads) do
        args[#args + 1] = l.shares
        args[#args + 1] = m
        args[#args + 1] = l.gen
      end
      if #args == 0 then return end
      return "share(s) of a large owner's pages closed: their helpers stop", CLOSE_ALL, 0, table.unpack(args)
    end)
  end
  local function close()
    leads[meta] = nil
    core.redis_eval(script("close", CLOSE), 2, q.keys.shares, meta, gen)
  end

  -- The lead reads up to front; as its window reaches front, it reserves
  -- the next window's worth (at least RESERVE_AT_LEAST pages, which bounds
  -- its round trips), unless helpers have claimed up to there (met).
  --
  -- Its window is only as wide as the network needs: pages it fetches
  -- ahead are pages no helper can take, and a worker that decodes faster
  -- than pages arrive (a near server) left the other waiting at the end of
  -- a crawl while it decoded a window it had fetched long before. So the
  -- window starts at AHEAD_AT_LEAST pages, doubles (up to the reader's
  -- window) after a page the lead had to wait for while the process sat
  -- idle, which is a wait for the network, and otherwise shrinks by one:
  -- a page not there yet because the process was busy with other work is
  -- no reason to fetch further ahead.
  local full = pages.window
  pages.window = math.min(full, AHEAD_AT_LEAST)
  local chunks, met, reserving, gone = {}, false, false, false
  local reserved = core.condition()
  local function reserve()
    local want = pages.limit + math.max(pages.window, RESERVE_AT_LEAST)
    local front = eval_retrying("reserve", RESERVE, 1, meta, math.min(want, pages.last), ttl_ms(q))
    if front == -1 or math.type(front) ~= "integer" then
      -- expired while Redis was away, or unusable: the lead does it all
      gone = true
      pages.limit, met = pages.last, true
    else
      met = front < want or front >= pages.last
      pages.limit = math.max(pages.limit, front)
    end
    reserving = false
    reserved:signal()
  end
  while true do
    if not met and not reserving and not pages.ended and pages.next_page + pages.window - 1 > pages.limit then
      reserving = true
      core.spawn(reserve)
    end
    local waiting = pages.next_page <= pages.limit and not pages:arrived(pages.next_page)
    local idle = core.idle()
    local items, err = pages:next()
    if waiting and core.idle() - idle >= IDLE_FOR_NETWORK then
      pages.window = math.min(full, pages.window * 2)
    elseif items then
      pages.window = math.max(math.min(full, AHEAD_AT_LEAST), pages.window - 1)
    end
    if items then
      local c
      c, err = page_chunk(items)
      if not c then
        close()
        return nil, err
      end
      chunks[#chunks + 1] = c
    elseif err then
      close()
      return nil, err
    elseif reserving then
      reserved:wait()
    elseif met or pages.ended then
      break
    end
  end
  pages.window = full -- for the pages of helpers that stopped, if any
  local front = pages.limit
  -- An empty page ended the list before the last page said (Pages:next):
  -- the helpers' ranges lie past its end.
  if front >= pages.last or pages.ended then
    if not gone then close() end
    return chunks
  end

  -- The helpers' ranges, front+1..last: collected when all are in; a
  -- range whose helper stopped or failed is fetched here.
  local theirs, pause = {}, 0.002
  while true do
    local r = eval_retrying("collect", COLLECT, 2, q.keys.shares, meta, gen, ttl_ms(q))
    if type(r) ~= "table" or r[1] == -1 then
      -- gone while Redis was away: what helpers put went with it
      leads[meta] = nil
      local list, err = pages:map(page_chunk, front + 1, pages.last)
      if not list then return nil, err end
      theirs = { [front + 1] = { chunks = list, to = pages.last } }
      break
    elseif r[1] == 2 then
      leads[meta] = nil
      for i = 1, #r[2], 2 do
        local from, to = r[2][i]:match("^(%d+):(%d+)$")
        local n, text = r[2][i + 1]:match("^(%d+)\n(.*)$")
        if from and n then
          theirs[tonumber(from)] = { chunks = { { text = text, n = tonumber(n) } }, to = tonumber(to) }
        end
      end
      break
    elseif #r[2] > 0 then
      for _, range in ipairs(r[2]) do
        local from, to = tostring(range):match("^(%d+):(%d+)$")
        from, to = tonumber(from), tonumber(to)
        if not from or from <= front or to > pages.last or to < from then
          close()
          return nil, core.error({ kind = "http", message = ("the shared pages of %s in Redis are not ranges of"
            .. " its pages"):format(owner) })
        end
        Share.log("%s: pages %d-%d were left by a worker that stopped or failed; fetched here", owner, from, to)
        local list, err = pages:map(page_chunk, from, to)
        if not list then
          close()
          return nil, err
        end
        theirs[from] = { chunks = list, to = to }
      end
      pause = 0.002
    else
      core.sleep(pause)
      pause = math.min(0.25, pause * 2)
    end
  end
  local p = front + 1
  while p <= pages.last do
    local c = theirs[p]
    if not c or c.to < p or c.to > pages.last then
      return nil, core.error({ kind = "http", message = ("pages %d-%d of %s were lost on the way back from"
        .. " another worker"):format(p, pages.last, owner) })
    end
    table.move(c.chunks, 1, #c.chunks, #chunks + 1, chunks)
    p = c.to + 1
  end
  return chunks
end

-- ranges = Share.claim(q, want): up to `want` ranges of others' large
-- owners for this process to fetch (Share.help), or nil, err.
function Share.claim(q, want)
  local r, err = core.redis_eval(script("claim", CLAIM), 1, q.keys.shares, q.keys.share, lease_ms(q), want,
    q.consumer)
  if not r then return nil, err end
  local out = {}
  for _, c in ipairs(r) do
    local m = c[4]
    local meta = q.keys.share .. c[1]
    claims[meta] = claims[meta] or {}
    claims[meta][c[2] .. ":" .. c[3]] = true
    out[#out + 1] = { meta = meta, gen = c[1], from = c[2], to = c[3], owner = m[1], provider = m[2],
      template = m[3], last = tonumber(m[4]), opts = m[5] }
  end
  return out
end

-- Share.help(q, range, encoder): fetches a claimed range, puts its records
-- for the lead and goes on with the next range of the same owner, until
-- none is left. A range that fails is given back for the lead.
function Share.help(q, range, encoder)
  local ok, page_opts = pcall(json.decode, range.opts or "")
  if ok and type(page_opts) == "table" then
    page_opts = { items = type(page_opts.items) == "string" and page_opts.items or nil }
  end
  local pages, normalize
  if ok and type(page_opts) == "table" and range.last and type(range.owner) == "string"
    and type(range.template) == "string" and providers_known(range.provider) then
    pages, normalize = Repositories.open_at(range.owner, { provider = range.provider }, range.template, range.last,
      page_opts)
  end
  if not pages then
    -- Not a share this process can work on (a URL outside the provider's,
    -- a provider it does not have): dropped, and its lead does the rest.
    Share.log("a shared owner in Redis (%s) was dropped: %s", tostring(range.owner),
      type(normalize) == "table" and tostring(normalize.message) or "its fields are not usable here")
    claims[range.meta] = nil
    core.redis_eval(script("close", CLOSE), 2, q.keys.shares, range.meta, range.gen)
    return
  end
  local page_chunk = Share.chunker(normalize, encoder)
  local held = claims[range.meta]
  local from, to = range.from, range.to
  while from do
    local key = from .. ":" .. to
    -- The range's records, "count\nndjson", or "" when it failed.
    local records, list = "", pages:map(page_chunk, from, to)
    if list then
      local texts, n = {}, 0
      for i, c in ipairs(list) do
        texts[i] = c.text
        n = n + c.n
      end
      records = n .. "\n" .. table.concat(texts)
    end
    -- While Redis is away the records wait here: the lead may still want them.
    local r = eval_retrying("put", PUT, 1, range.meta, key, records, lease_ms(q), list and "1" or "0")
    held[key] = nil
    if list and type(r) == "table" and r[1] ~= -1 then Share.pages_helped = Share.pages_helped + to - from + 1 end
    from, to = nil, nil
    if type(r) == "table" and r[1] > 0 then
      from, to = r[1], r[2]
      held[from .. ":" .. to] = true
    end
  end
  if next(held) == nil then claims[range.meta] = nil end
end

-- Renews the shares this process leads and the ranges it holds.
function Share.touch(q)
  local args = {}
  for meta in pairs(leads) do
    args[#args + 1] = meta
    args[#args + 1] = ""
  end
  for meta, ranges in pairs(claims) do
    for range in pairs(ranges) do
      args[#args + 1] = meta
      args[#args + 1] = range
    end
  end
  if #args == 0 then return true end
  return core.redis_eval(script("touch", TOUCH), 0, lease_ms(q), ttl_ms(q), table.unpack(args))
end

return Share
