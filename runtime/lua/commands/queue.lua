-- gitfleet queue push|status: fill a shared work queue in Redis and see
-- how it goes (see `gitfleet worker`).
local cli = require("fleet.cli")
local core = require("fleet.core")
local Queue = require("fleet.queue")
local owners = require("fleet.owners")

local usage = [[
usage: gitfleet queue push [--queue NAME] OWNER... | --owners-file FILE
       gitfleet queue status [--queue NAME] [--format json]

push     adds owners (PROVIDER:OWNER picks a provider) to the queue; an
         owner already waiting or being fetched (names compared ignoring
         case) is not added again
status   shows owners waiting, in progress, done and parked (with the
         reason), and when each worker last reported

Options:
  --queue NAME           the queue (default: default)
  --owners-file FILE     owners, one per line (# comments; - for stdin)
  -f, --format FORMAT    status as text (default) or json
  -h, --help             show this help

Needs a shared: section (Redis) in the configuration.
]]

local opts, rest, fail = cli.parse("queue", arg, {
  { "--help", "-h" }, { "--queue", arg = "NAME" }, { "--owners-file", arg = "FILE" },
  { "--format", "-f", arg = "FORMAT" },
})
if opts.help then io.stdout:write(usage) return 0 end
local action = table.remove(rest, 1)
if action ~= "push" and action ~= "status" then fail("expected push or status") end
if not core.redis_info() then fail("needs a shared: section with a Redis url in the configuration") end
local ok, q = pcall(Queue.open, opts.queue or "default")
if not ok then fail((tostring(q):gsub("^[^:]*:%d+: ", ""))) end

if action == "push" then
  -- Checked and kept once as fetch does, so a bad name fails here, where
  -- it was typed, and not later in a worker.
  local entries, eerr = owners.entries(rest, opts.owners_file)
  if not entries then fail(eerr) end
  if #entries == 0 then fail("no OWNER given") end
  local providers = {}
  for _, p in ipairs(fleet.providers()) do providers[p.name] = true end
  local jobs, jerr = owners.jobs(entries, providers, fleet.default_provider())
  if not jobs then fail(jerr .. "; nothing was pushed") end
  local names = {}
  for i, job in ipairs(jobs) do
    local good, why = Queue.check_item(job.label)
    if not good then fail(("%s: %s: %s; nothing was pushed"):format(job.where, owners.shown(job.label), why)) end
    names[i] = job.label
  end
  local added, err = q:push(names)
  if not added then
    io.stderr:write("gitfleet queue: ", cli.describe(err), "\n")
    return 1
  end
  local notes = {}
  if added < #names then notes[#notes + 1] = ("%d already queued"):format(#names - added) end
  if #names < #entries then notes[#notes + 1] = ("%d repeated in the input"):format(#entries - #names) end
  io.stderr:write(("gitfleet queue: %d owner(s) added to %s%s\n"):format(added, q.name,
    #notes > 0 and " (" .. table.concat(notes, ", ") .. ")" or ""))
  return 0
end

if opts.format and opts.format ~= "json" and opts.format ~= "text" then fail("--format must be text or json") end
local st, err = q:status()
if not st then
  io.stderr:write("gitfleet queue: ", cli.describe(err), "\n")
  return 1
end
if opts.format == "json" then
  io.stdout:write(fleet.json.encode(st), "\n")
  return 0
end
local now = core.now()
io.stdout:write(("queue %s: %d waiting, %d in progress, %d done, %d parked\n"):format(q.name, st.waiting,
  st.in_progress, st.done, (function() local n = 0 for _ in pairs(st.failed) do n = n + 1 end return n end)()))
local names = {}
for item in pairs(st.failed) do names[#names + 1] = item end
table.sort(names)
for _, item in ipairs(names) do io.stdout:write(("  parked %s: %s\n"):format(item, st.failed[item])) end
local workers = {}
for name in pairs(st.workers) do workers[#workers + 1] = name end
table.sort(workers)
local lease = core.redis_info().lease
for _, name in ipairs(workers) do
  local beat = st.workers[name]
  local ago = math.max(0, now - (beat.at or now))
  -- A worker beats at least every lease/3 while it runs: one silent for a
  -- whole lease was killed, lost its machine, or cannot reach Redis.
  local doing = ago > lease and "stopped (no beat for longer than shared.lease)" or (beat.doing or "?")
  io.stdout:write(("  worker %s: %s, last beat %.0fs ago\n"):format(name, doing, ago))
end
return 0
