-- The progress line of long commands: one updating line on stderr, only
-- on a terminal and unless -q or --no-progress; cleared at the end. It
-- shows owners done, repositories, requests per second, and why and until
-- when the run is waiting. Log lines are written above it.
local core = require("fleet.core")
local cli = require("fleet.cli")

local Progress = {}
Progress.__index = Progress

local function thousands(n)
  local s = tostring(math.floor(n))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

function Progress.start(total)
  local self = setmetatable({ total = total, done = 0, repos = 0, enabled = core.options().progress,
    started = core.now(), waiting = nil }, Progress)
  if not self.enabled then return self end
  core.on("rate_limited", function(e)
    if e.resume_at and e.token then
      self.waiting = { text = ("waiting for reset of %s:%s at %s"):format(e.provider, e.token, cli.clock(e.resume_at)),
        resume_at = e.resume_at }
    end
  end)
  core.on("secondary_limit", function(e)
    self.waiting = { text = ("%s:%s paused (secondary limit) until %s"):format(e.provider, e.token,
      cli.clock(e.resume_at)), resume_at = e.resume_at }
  end)
  -- The ticker redraws four times a second and stops as soon as finish()
  -- signals, so the run does not outlast its work by a tick.
  self.stop = core.condition()
  self.ticker = core.spawn(function()
    local last_requests, last_time = 0, core.now()
    while not self.finished do
      local now = core.now()
      local requests = core.stats().requests
      local rate = (requests - last_requests) / math.max(now - last_time, 0.001)
      last_requests, last_time = requests, now
      local parts = { ("owners %d/%d"):format(self.done, self.total), ("%s repositories"):format(thousands(self.repos)),
        ("%.0f req/s"):format(rate) }
      if self.waiting and self.waiting.resume_at > now then parts[#parts + 1] = self.waiting.text end
      local shared = core.redis_info()
      if shared and not shared.up then parts[#parts + 1] = shared.waiting end
      core.progress(table.concat(parts, " · "))
      self.stop:wait(0.25)
    end
  end)
  return self
end

function Progress:add_repositories(n) self.repos = self.repos + n end
function Progress:owner_done() self.done = self.done + 1 end

-- A line for stderr that must not be mixed into the progress line.
function Progress:log(line)
  if self.enabled then core.log_line(line) else io.stderr:write(line, "\n") end
end

function Progress:finish()
  self.finished = true
  if self.enabled then
    self.stop:signal()
    core.progress(nil)
  end
end

return Progress
