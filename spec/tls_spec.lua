-- TLS: the peer and its host name are verified by default; http.ca_file
-- adds a CA; http.insecure turns verification off, loudly.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")

describe("TLS", function()
  local dir, emu
  setup(function()
    dir = gf.tmpdir()
    -- a self-signed certificate for 127.0.0.1, valid for a day
    assert.is_true(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem "
      .. "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(dir, dir)))
    emu = emulator.start({ scenario = { owners = { { name = "acme", kind = "org", repos = 150 } } },
      tls = { cert = dir .. "/cert.pem", key = dir .. "/key.pem" } })
  end)
  teardown(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  local function fetch(http)
    local cfg = gf.config({ providers = { github = { base_url = emu.url } }, http = http,
      retry = { max_attempts = 3, base_delay = 0.01 } }, gf.tmpdir())
    return gf.run({ "--config", cfg, "fetch", "acme", "--format", "csv", "--fields", "full_name" })
  end

  it("refuses a server whose certificate it cannot verify, without retrying", function()
    assert.matches("^https://", emu.url)
    local r = fetch(nil)
    assert.are.equal(1, r.code)
    assert.matches("acme: network failure on github: .-[Cc]ertificate", r.stderr)
    assert.is_nil(r.stderr:find("after 3 attempts", 1, true))
  end)

  it("trusts a CA given in http.ca_file", function()
    local r = fetch({ ca_file = dir .. "/cert.pem" })
    assert.are.equal(0, r.code, r.stderr)
    local p = io.popen("curl -sk " .. emu.url .. "/_emulator/world")
    local world = require("cjson").decode(p:read("a"))
    p:close()
    -- the header, then every public repository (two pages: links are https too)
    assert.are.equal(1 + world.owners.acme.public, select(2, r.stdout:gsub("\n", "")))
  end)

  it("turns verification off only with http.insecure, and warns", function()
    local r = fetch({ insecure = true })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("warning: .-insecure", r.stderr)
  end)
end)
