-- Tokens from credential helpers: token_command runs a program (no shell,
-- with a timeout) whose first line is the token; credential: git asks
-- `git credential fill` for the provider's host. A helper that fails,
-- prints nothing, hangs or cannot be run is a configuration error naming
-- the token's label, and what it printed is never shown.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local TOKEN = "ghp_HELPERsecret0123456789abcdefghijklmn"
local q = gf.quote

-- A config whose github tokens are the YAML flow mappings given.
local function config(dir, base_url, entries)
  local lines = { "providers:", "  github:", "    base_url: " .. base_url, "    tokens:" }
  for _, e in ipairs(entries) do lines[#lines + 1] = "      - " .. e end
  lines[#lines + 1] = "cache: { path: " .. dir .. "/cache.sqlite }"
  return gf.write(dir .. "/gitfleet.yaml", table.concat(lines, "\n") .. "\n")
end

local function helper(dir, name, body)
  local path = dir .. "/" .. name
  gf.write(path, "#!/bin/sh\n" .. body .. "\n")
  os.execute("chmod +x " .. q(path))
  return path
end

local function assert_clean(r)
  for _, text in ipairs({ r.stdout, r.stderr }) do
    assert.is_nil(text:find("HELPERsecret", 1, true), text)
    assert.is_nil(text:find("PRINTED", 1, true), text)
  end
end

local function start()
  return emulator.start({ scenario = {
    owners = { { name = "acme", kind = "org", repos = 30 } },
    tokens = { { token = TOKEN, provider = "github", account = "helper-user" } },
  } })
end

describe("token_command", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("gives the first line of the program's output as the token, with arguments passed as they are", function()
    local emu = start()
    local dir = gf.tmpdir()
    local h = helper(dir, "vault", 'printf "%s\\n" "$@" > "$(dirname "$0")/argv"\n' ..
      'echo "vault: unlocked" >&2\nprintf "' .. TOKEN .. '\\r\\nsecond line PRINTED\\n"')
    local cfg = config(dir, emu.url, { ("{ label: vault, token_command: [%s, 'a b', '$$HOME', ';', '*'] }"):format(h) })
    local r = gf.run({ "--config", cfg, "fetch", "acme" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(30, #gf.ndjson(r.stdout))
    local s = emu:stats()
    assert.are.equal(0, s.unauthorized)
    assert.are.equal(s.requests, s.credentialed_requests)
    assert.matches("vault: unlocked", r.stderr, 1, true) -- the helper's stderr is passed through
    assert.are.equal("a b\n$HOME\n;\n*\n", gf.slurp(dir .. "/argv"))
    assert_clean(r)
  end)

  it("takes the first of 10,000 lines", function()
    local emu = start()
    local dir = gf.tmpdir()
    local h = helper(dir, "many", 'echo ' .. TOKEN .. '\ni=0\nwhile [ $i -lt 10000 ]; do echo "line $i PRINTED"; i=$((i+1)); done')
    local cfg = config(dir, emu.url, { ("{ label: many, token_command: [%s] }"):format(h) })
    local r = gf.run({ "--config", cfg, "fetch", "acme" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(0, emu:stats().unauthorized)
  end)

  local failures = {
    { "exits non-zero", 'echo "PRINTED"; echo "helper: locked" >&2; exit 3', "exited with status 3" },
    { "prints nothing", "exit 0", "printed nothing" },
    { "prints an empty first line", 'printf "\\nPRINTED\\n"', "printed nothing" },
    { "prints a control character", 'printf "PRINTED\\001x\\n"', "control character" },
    { "prints a first line of more than 64 KiB", "head -c 200000 /dev/zero | tr '\\0' P", "first line longer than 64 KiB" },
    { "is killed", 'echo PRINTED; kill -9 $$', "killed by signal 9" },
  }
  for _, f in ipairs(failures) do
    it("that " .. f[1] .. " is a configuration error naming the label, not showing the output", function()
      local dir = gf.tmpdir()
      local h = helper(dir, "h", f[2])
      local cfg = config(dir, "http://127.0.0.1:9", { ("{ label: my-vault, token_command: [%s] }"):format(h) })
      local r = gf.run({ "--config", cfg, "config", "check" })
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("gitfleet.yaml:5:%d+: token my%-vault: token_command .*" .. f[3]:gsub("%-", "%%-"), r.stderr)
      assert_clean(r)
    end)
  end

  it("that hangs is stopped after its timeout, and its children do not keep the run waiting", function()
    local dir = gf.tmpdir()
    local h = helper(dir, "hang", "echo PRINTED\nsleep 5 &\nsleep 30")
    local cfg = config(dir, "http://127.0.0.1:9", { ("{ label: slow, token_command: [%s], timeout: 0.5 }"):format(h) })
    local r = gf.run({ "--config", cfg, "config", "check" }, { timeout = 20 })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("token slow: token_command did not finish within 0.5 s", r.stderr, 1, true)
    assert.is_true(r.seconds <= 10)
    assert_clean(r)
  end)

  it("that cannot be found says so", function()
    local dir = gf.tmpdir()
    local cfg = config(dir, "http://127.0.0.1:9", { "{ label: gone, token_command: [no-such-helper-xyz] }" })
    local r = gf.run({ "--config", cfg, "config", "check" })
    assert.are.equal(2, r.code)
    assert.matches("token gone: token_command could not be run: No such file or directory", r.stderr, 1, true)
  end)

  it("must be a list of arguments, and one source per entry", function()
    local dir = gf.tmpdir()
    for entry, want in pairs({
      ["{ label: s, token_command: 'pass show gh' }"] = "token_command: expected a list of 1 to 64 arguments",
      ["{ label: e, token_command: [] }"] = "token_command: expected a list of 1 to 64 arguments",
      ["{ label: x, token_command: [''] }"] = "the program name is empty",
      ["{ label: two, token: abc, token_command: [echo, x] }"] = "use one of token, token_file, token_command or credential",
      ["{ label: t, token: abc, timeout: 3 }"] = "timeout: only for token_command or credential",
      ["{ label: z, token_command: [echo, x], timeout: 0 }"] = "timeout: expected seconds",
      ["{ label: k, credential: pass }"] = "credential: the only helper is 'git'",
    }) do
      local r = gf.run({ "--config", config(dir, "http://127.0.0.1:9", { entry }), "config", "check" })
      assert.are.equal(2, r.code, entry)
      assert.matches(want, r.stderr, 1, true)
    end
  end)
end)

describe("credential: git", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  -- A git credential helper, configured the way a user would, in a git
  -- config file of its own.
  local function git_env(dir, body)
    local h = helper(dir, "git-credential-fake", body)
    gf.write(dir .. "/gitconfig", "[credential]\n\thelper = " .. h .. "\n")
    return { GIT_CONFIG_GLOBAL = dir .. "/gitconfig", GIT_CONFIG_NOSYSTEM = "1" }
  end

  it("asks git's helpers for the provider's host and uses the password as the token", function()
    local emu = start()
    local dir = gf.tmpdir()
    local env = git_env(dir, '[ "$1" = get ] || exit 0\ncat > "$(dirname "$0")/asked"\n' ..
      'echo username=x-access-token\necho password=' .. TOKEN)
    local cfg = config(dir, emu.url, { "{ label: from-git, credential: git }" })
    local r = gf.run({ "--config", cfg, "fetch", "acme" }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(30, #gf.ndjson(r.stdout))
    assert.are.equal(0, emu:stats().unauthorized)
    local asked = gf.slurp(dir .. "/asked")
    assert.matches("protocol=http\n", asked, 1, true)
    assert.matches("host=127.0.0.1:" .. emu.port .. "\n", asked, 1, true)
    assert_clean(r)
  end)

  for _, case in ipairs({
    { "without a helper that knows the host is a configuration error, not a prompt", "nobody", "exit 0", " exited" },
    { "with a helper that gives an empty password is a configuration error", "empty",
      '[ "$1" = get ] || exit 0\necho username=u\necho password=', " gave an empty password" },
  }) do
    it(case[1], function()
      local dir = gf.tmpdir()
      local env = git_env(dir, case[3])
      local cfg = config(dir, "https://api.example.test", { "{ label: " .. case[2] .. ", credential: git }" })
      local r = gf.run({ "--config", cfg, "config", "check" }, { env = env, timeout = 30 })
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("token " .. case[2] .. ": git credential fill for https://example.test" .. case[4], r.stderr, 1, true)
    end)
  end
end)
