-- Clock skew: a provider whose clock runs 10 minutes behind this machine's
-- gives rate-limit resets that look 10 minutes old here. gitfleet reads
-- them on its own clock through the provider's Date header, so the figures
-- are shown and a spent token waits for its real reset instead of being
-- sent requests the provider refuses.
--
-- GITFLEET_BIN is the binary (default ./gitfleet). Run from the repository's root.

local cjson = require("cjson")

local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")

-- The third case: a third of the responses take a second longer, so the
-- Date headers of one window arrive after very different delays.
for _, case in ipairs({ { -600 }, { 600 }, { -600, { rate = 0.3, kinds = { "slow" }, slow_seconds = 1 } } }) do
  local offset, faults = case[1], case[2]
  describe("with the provider's clock " .. math.abs(offset) // 60 .. " minutes "
    .. (offset < 0 and "behind" or "ahead") .. (faults and ", slow responses" or ""), function()
    local emu, config

    setup(function()
      emu = emulator.start({ scenario = {
        clock_offset = offset,
        owners = { { name = "bigorg", kind = "org", repos = 450 } },
        tokens = { { provider = "github", token = "skew-token" } },
        limits = { github = { limit = 2, window = 2 } },
        faults = faults,
      } })
      config = gf.config({
        providers = { github = { base_url = emu.url, tokens = { { label = "skewed", token = "skew-token" } } } },
        retry = { secondary_wait = 2, max_wait = 120 },
      })
    end)

    teardown(function()
      if emu then emu:stop() end
      gf.cleanup()
    end)

    before_each(function() emu:reset() end)

    it("rate-limit shows the figures the provider gave", function()
      local r = gf.run({ "--config", config, "rate-limit", "--format", "json" })
      assert.are.equal(0, r.code, r.stderr)
      local rows = cjson.decode(r.stdout)
      assert.are.equal(1, #rows)
      local row = rows[1]
      assert.are.equal(2, row.limit)
      assert.are.equal(2, row.remaining)
      assert.are.equal(0, row.used)
      local t = gf.run({ "--config", config, "rate-limit" })
      assert.are.equal(0, t.code, t.stderr)
      assert.is_falsy(t.stdout:find("?", 1, true), t.stdout)
    end)

    it("a spent token waits for its reset: no request is refused", function()
      local r = gf.run({ "--config", config, "-q", "fetch", "--format", "ndjson", "bigorg" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(450, #gf.ndjson(r.stdout))
      local stats = emu:stats()
      io.stdout:write(("\nskew %+d s: %d requests, by status %s\n"):format(offset, stats.requests,
        cjson.encode(stats.by_status)))
      assert.are.equal(0, stats.primary_limited)
      assert.are.equal(0, stats.secondary_limited)
      assert.is_nil(stats.by_status["403"])
      assert.is_nil(stats.by_status["429"])
    end)
  end)
end

-- A Date header that is missing, empty, malformed, huge or implausibly far
-- off says nothing about the provider's clock: the figures and the reset
-- are shown as the provider gave them.
describe("a broken Date header", function()
  local server_script = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") .. "/support/date_server.py"

  local function serve(date)
    local dir = gf.tmpdir()
    local port_file = dir .. "/port"
    local pid = gf.capture("echo $PPID")
    os.execute(("timeout 120 python3 %s --date %s --port-file %s --parent-pid %s </dev/null >/dev/null 2>&1 &")
      :format(gf.quote(server_script), gf.quote(date), gf.quote(port_file), pid))
    local text
    for _ = 1, 100 do
      text = gf.slurp(port_file)
      if text then break end
      os.execute("sleep 0.1")
    end
    local port, reset = assert(text, "the Date server did not start"):match("^(%d+) (%d+)")
    return tonumber(port), tonumber(reset)
  end

  after_each(gf.cleanup)

  for _, date in ipairs({ "none", "", "yesterday", "Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT",
    ("x"):rep(10000) }) do
    it(("leaves the reset as given (Date: %q)"):format(date:sub(1, 40)), function()
      local port, reset = serve(date)
      local config = gf.config({ providers = { github = { base_url = "http://127.0.0.1:" .. port,
        tokens = { "date-token" } } } })
      local r = gf.run({ "--config", config, "--no-cache", "rate-limit", "--format", "json" })
      assert.are.equal(0, r.code, r.stderr)
      local row = cjson.decode(r.stdout)[1]
      assert.are.equal(5000, row.limit)
      assert.are.equal(4000, row.remaining)
      assert.are.equal(1000, row.used)
      assert.are.equal(reset, row.reset)
    end)
  end
end)
