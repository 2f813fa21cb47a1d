-- Redaction of registered secrets (runtime/redact.c), below the binary:
-- spec/support/redact_probe.c is built with it into a temporary folder and
-- compares it with the plain definition (every occurrence of every secret,
-- one secret at a time, overlapping ones included). The probe prints
-- "FAIL: ..." and exits 1 on the first difference.
--
-- Run from the repository's root. Needs cc.

local gf = require("spec.support.gitfleet")

describe("redaction of secrets (runtime/redact.c via spec/support/redact_probe)", function()
  local probe

  setup(function()
    probe = gf.tmpdir() .. "/redact_probe"
    local r = gf.sh(("cc -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Iruntime -o %s spec/support/redact_probe.c "
      .. "runtime/redact.c"):format(gf.quote(probe)))
    assert.are.equal(0, r.code, "cannot build the probe:\n" .. r.stderr)
  end)

  teardown(function() gf.cleanup() end)

  local function run(...)
    local args = { gf.quote(probe) }
    for _, a in ipairs({ ... }) do args[#args + 1] = gf.quote(a) end
    local r = gf.sh(table.concat(args, " "))
    assert.are.equal(0, r.code, "probe failed:\n" .. r.stdout .. r.stderr)
    assert.is_nil(r.stdout:find("FAIL", 1, true), r.stdout)
    return r
  end

  it("stars what the plain definition stars, on secrets and texts made to collide", function()
    -- 4-letter alphabet, secrets of 1 to 40 bytes sharing heads and tails,
    -- repeated pieces, texts built from pieces of the secrets: keys collide
    -- and occurrences overlap, start the text and end it
    for seed = 1, 8 do run("random", tostring(seed), "2000") end
  end)

  it("finds every one of 1,000 tokens and their Basic forms over 1 MiB of text", function()
    local r = run("many", "1000")
    assert.matches("1000 tokens %(2000 secrets%)", r.stdout)
  end)

  it("redacts nothing once the secrets are forgotten, and again once registered again", function()
    run("forget")
  end)
end)
