-- gitfleet fetch: every repository of the given owners, written as they
-- arrive. Owners are fetched concurrently; one that fails is reported and
-- the others' records are still written (exit status 1).
local cli = require("fleet.cli")
local core = require("fleet.core")
local owners = require("fleet.owners")
local progress = require("fleet.progress")

local usage = [[
usage: gitfleet fetch [OPTIONS] OWNER...

Fetches every repository of each OWNER (a user, organisation, group or
workspace; PROVIDER:OWNER picks a provider per owner), all owners at once,
and writes one record per repository to standard output or --output. An
owner given more than once (names compared ignoring case) is fetched and
written once. Records come out in owner order (owners as given, pages in
order), so two runs over unchanged data write identical files; the first
unfinished owner's pages are written as they arrive, the others' wait in a
bounded buffer.

Options:
  -p, --provider P       provider for owners without PROVIDER: (default: the
                         first configured one, else github)
  --owners-file FILE     more owners, one per line (# comments and blank
                         lines skipped; - for stdin)
  --keep-duplicates      fetch and write an owner given more than once
                         once per mention (default: once)
  -f, --format FORMAT    ndjson (default when stdout is not a terminal),
                         json (one array), csv, or table (the default on a
                         terminal)
  --fields a,b,...       fields to write, in order (default: every record
                         field); with --raw, raw.x.y reaches into the
                         provider's own object
  -o, --output FILE      write to FILE instead of standard output; FILE is
                         replaced when the run ends (written beside it, then
                         renamed), and an interrupted run leaves it as it was
  --keep-on-failure      leave FILE as it was when any owner failed (default:
                         replace it with the owners that succeeded, unless
                         none did)
  -t, --type T           the provider's owner filter (GitHub: all, owner,
                         member, public, private, forks, sources)
  --raw                  add the provider's own object as field "raw"
  -j, --concurrency N    owners fetched at once (default 64)
  -h, --help             show this help

Records have the same fields on every provider (see gitfleet(1)); a value a
provider does not have is null. Exit status: 0 when every owner was
fetched, 1 when some failed (the rest was written), 2 on a usage error,
141 when the reader of standard output went away (| head), which ends the
run quietly, 130 or 143 when interrupted.
]]

local opts, rest, fail = cli.parse("fetch", arg, {
  { "--help", "-h" }, { "--provider", "-p", arg = "P" }, { "--owners-file", arg = "FILE" },
  { "--format", "-f", arg = "FORMAT" }, { "--fields", arg = "LIST" }, { "--output", "-o", arg = "FILE" },
  { "--keep-on-failure" },
  { "--type", "-t", arg = "T" }, { "--raw" }, { "--concurrency", "-j", arg = "N" },
  { "--keep-duplicates" },
})
if opts.help then io.stdout:write(usage) return 0 end

local entries, eerr = owners.entries(rest, opts.owners_file)
if not entries then fail(eerr) end
if #entries == 0 then fail("no OWNER given") end

local to_terminal = not opts.output and core.isatty(1)
local format = opts.format or (to_terminal and "table" or "ndjson")
local formats = { ndjson = true, json = true, csv = true, table = true }
if not formats[format] then fail("--format must be ndjson, json, csv or table") end
-- 64 owners at once: an owner's first pages are round trips one after
-- another (an organisation that turns out to be a user costs a 404 first),
-- so against a provider 150 ms away 16 left the allowed requests in flight
-- unused (200 owners: 5.5-5.9 s at 16, 5.1-5.3 s at 64; peak RSS 27 -> 39 MB).
local concurrency = math.tointeger(tonumber(opts.concurrency or 64))
if not concurrency or concurrency < 1 then fail("--concurrency must be a positive whole number") end

local fields
if opts.fields then
  fields = {}
  for f in opts.fields:gmatch("[^,]+") do fields[#fields + 1] = f:match("^%s*(.-)%s*$") end
  if #fields == 0 then fail("--fields is empty") end
end

local providers = {}
for _, p in ipairs(fleet.providers()) do providers[p.name] = true end
if opts.provider and not providers[opts.provider] then fail("no provider named '" .. opts.provider .. "'") end
local jobs, jerr = owners.jobs(entries, providers, opts.provider or fleet.default_provider(), opts.keep_duplicates)
if not jobs then fail(jerr) end

-- The writer: a table on a terminal is a few columns per line. Both kinds
-- encode pages to text first (encode_many) so that pages can be held back
-- and written in order (see below).
local writer, werr
if format == "table" then
  -- Through a text writer: --output is replaced all at once, and a closed
  -- stdout ends the run quietly, as for the other formats.
  local out, oerr = core.writer("text", opts.output)
  if not out then
    io.stderr:write("gitfleet fetch: ", tostring(oerr), "\n")
    return 1
  end
  local function cell(v, w)
    v = v == nil and "" or tostring(v)
    if utf8.len(v) and utf8.len(v) > w then v = v:sub(1, utf8.offset(v, w) - 1) .. "…" end
    return v .. (" "):rep(w - (utf8.len(v) or #v))
  end
  out:write_encoded(cell("REPOSITORY", 40) .. " " .. cell("LANGUAGE", 12) .. " " .. cell("STARS", 7) .. " "
    .. cell("PUSHED", 20) .. "\n", 0)
  local n = 0
  writer = {
    encode_many = function(_, list)
      local lines = {}
      for i, r in ipairs(list) do
        lines[i] = cell(r.full_name, 40) .. " " .. cell(r.language, 12) .. " " .. cell(r.stargazers_count, 7) .. " "
          .. cell(r.pushed_at, 20) .. (r.archived and " (archived)" or "") .. "\n"
      end
      return table.concat(lines), #list
    end,
    write_encoded = function(_, text, count)
      n = n + count
      return out:write_encoded(text, count)
    end,
    close = function() return out:close() end,
    discard = function() return out:discard() end,
    count = function() return n end,
  }
else
  writer, werr = fleet.writer({ format = format, output = opts.output, fields = fields,
    all_fields = fields == nil })
  if not writer then
    io.stderr:write("gitfleet fetch: ", tostring(werr), "\n")
    return 1
  end
end

-- Records go out in owner order (owners as given, pages in page order), so
-- two runs over unchanged data write identical files. The owner at the
-- head of the order writes as its pages arrive; later owners' pages wait,
-- encoded (about 70 KB a page of 100), and an owner that finds more than
-- BUFFER_LIMIT waiting pauses until its turn, so memory stays bounded. On
-- 200 owners / 38,000 repositories, 2 MiB was as fast as 16 MiB on
-- loopback with half the peak memory; with long round trips the head owner
-- is slow, and 2 MiB held the later owners back while their requests could
-- have been in flight (bench/'s latency workload).
local BUFFER_LIMIT = 16 * 1024 * 1024
local order = { head = 1, buffered = 0, chunks = {}, done = {} }
local turn = core.condition()
local write_error

local function put(text, count)
  local ok, err = writer:write_encoded(text, count)
  if not ok then write_error = write_error or err end
end

-- Writes what the head owner has waiting, and moves the head past owners
-- that are finished.
local function advance()
  while order.head <= #jobs do
    local i = order.head
    for _, c in ipairs(order.chunks[i] or {}) do
      put(c.text, c.count)
      order.buffered = order.buffered - #c.text
    end
    order.chunks[i] = nil
    if not order.done[i] then break end
    order.head = i + 1
  end
  turn:signal()
end

local function emit(i, page)
  local text, count = writer:encode_many(page)
  if not text then
    write_error = write_error or ("cannot encode the records: " .. tostring(count))
    return
  end
  if i == order.head then
    put(text, count)
    return
  end
  order.chunks[i] = order.chunks[i] or {}
  table.insert(order.chunks[i], { text = text, count = count })
  order.buffered = order.buffered + #text
  while order.buffered > BUFFER_LIMIT and order.head ~= i do turn:wait() end
  if order.head == i then advance() end
end

local bar = progress.start(#jobs)
local failed = 0

local function fetch_one(job, i)
  -- Whatever fails for this owner (its pages, or an error raised on the
  -- way) is counted and said here: fleet.map would only return it.
  local ok, err = pcall(function()
    local pages, perr = fleet.each_repository_page(job.owner, { provider = job.provider or opts.provider,
      type = opts.type, raw = opts.raw })
    if not pages then error(perr or "no pages", 0) end
    for page in pages do
      emit(i, page)
      bar:add_repositories(#page)
    end
  end)
  if ok then err = nil end
  if err then
    failed = failed + 1
    bar:log(("gitfleet fetch: %s: %s"):format(job.label, cli.describe(err)))
  end
  order.done[i] = true
  if order.head == i then advance() end
  bar:owner_done()
end

fleet.map(jobs, fetch_one, { concurrency = concurrency })
bar:finish()
-- The end of the run: --output is replaced now, or left as it was when a
-- write failed, when every owner failed (nothing to replace it with), or
-- (--keep-on-failure) when any owner did.
local keep_old = write_error or (failed > 0 and (opts.keep_on_failure or failed == #jobs))
local closed, cerr
if keep_old then closed, cerr = writer:discard() else closed, cerr = writer:close() end
if not closed then write_error = write_error or cerr end
if write_error then
  io.stderr:write("gitfleet fetch: ", tostring(write_error), "\n")
  return 1
end
if failed > 0 then
  local fate = keep_old and opts.output and ("%s was left as it was"):format(opts.output)
    or ("the other owners' %d repositories were written"):format(writer:count())
  io.stderr:write(("gitfleet fetch: %d of %d owners failed; %s\n"):format(failed, #jobs, fate))
  return 1
end
return 0
