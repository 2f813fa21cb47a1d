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

for _, offset in ipairs({ -600, 600 }) do
  describe("with the provider's clock " .. math.abs(offset) // 60 .. " minutes "
    .. (offset < 0 and "behind" or "ahead"), function()
    local emu, config

    setup(function()
      emu = emulator.start({ scenario = {
        clock_offset = offset,
        owners = { { name = "bigorg", kind = "org", repos = 450 } },
        tokens = { { provider = "github", token = "skew-token" } },
        limits = { github = { limit = 2, window = 2 } },
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
