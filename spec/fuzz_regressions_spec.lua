-- The fuzz harnesses (fuzz/), kept compilable and correct without libFuzzer:
-- each is built with fuzz/standalone_main.c and plain ASan + UBSan
-- (`make -C fuzz standalone`, into build/fuzz/standalone/) and replays its
-- seed corpus (fuzz/corpus/NAME/) and the inputs the fuzzers found
-- (fuzz/regressions/NAME/). A harness aborts on any broken invariant and
-- LeakSanitizer fails the run on a leak, so "exit 0, N inputs" is a pass.
--
-- The findings (plugins that raised on bad data, loutput.c's undefined
-- behaviour) are replayed too: each once failed, and must pass now.
-- Without clang the harness specs are pending (make test installs clang).
--
-- The CSV writer regression also runs through the real binary (GITFLEET_BIN,
-- default ./gitfleet), which is how it was reached.
-- Needs clang (as `make fuzz` does). Run from the repository's root.

local gf = require("spec.support.gitfleet")

local quote = gf.quote
local HARNESSES = { "link", "retry_after", "config", "output", "records", "json", "gunzip", "provider_url" }
local SANITIZER_ENV = "ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "

-- Runs a shell command; returns exit code and its output (stdout + stderr).
local function sh(cmd)
  -- exec 2>&1 first: the shell's own "Aborted" notice is output too
  local p = assert(io.popen("exec 2>&1; " .. cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  return code, out
end

local function is_dir(path)
  return os.execute("test -d " .. quote(path)) == true
end

local function count_files(dirs)
  local _, out = sh("find " .. table.concat(dirs, " ") .. " -type f | wc -l")
  return tonumber(out:match("%d+"))
end

local function list_files(dir)
  local files = {}
  local p = assert(io.popen("find " .. quote(dir) .. " -type f -name '*.json' | sort"))
  for line in p:lines() do files[#files + 1] = line end
  p:close()
  return files
end

-- Replays dirs through build/fuzz/standalone/NAME (or another build folder).
local function replay(name, dirs, env, build)
  local bin = (build or "build/fuzz") .. "/standalone/" .. name
  local quoted = {}
  for i, d in ipairs(dirs) do quoted[i] = quote(d) end
  return sh(SANITIZER_ENV .. (env or "") .. quote(bin) .. " " .. table.concat(quoted, " ") .. " </dev/null")
end

local have_clang = os.execute("command -v clang >/dev/null 2>&1") == true
local built

-- Builds the standalone harnesses once; pending without clang.
local function build()
  if not have_clang then pending("clang is not installed (tools/deps.sh fuzz installs it)") end
  if built == nil then
    local code, out = sh("make -s -C fuzz standalone")
    built = code == 0 or out
  end
  assert(built == true, "make -C fuzz standalone failed:\n" .. tostring(built))
end

describe("fuzz harnesses, replayed without libFuzzer #fuzz", function()
  for _, name in ipairs(HARNESSES) do
    it(name .. ": the seed corpus and the regression inputs pass", function()
      build()
      local dirs = { "fuzz/corpus/" .. name }
      if is_dir("fuzz/regressions/" .. name) then dirs[#dirs + 1] = "fuzz/regressions/" .. name end
      local n = count_files(dirs)
      assert.is_true(n > 0, "no inputs for " .. name)
      local code, out = replay(name, dirs)
      assert.are.equal(0, code, name .. " failed:\n" .. out)
      assert.are.equal(n, tonumber(out:match("(%d+) inputs\n")), out)
    end)
  end

  -- A plugin must not raise on bad data (the host calls normalize_repository
  -- on whatever a page holds). Inputs are in records-plugins/PLUGIN/.
  for _, plugin in ipairs({ "bitbucket", "gitea", "github", "gitlab" }) do
    it("records: " .. plugin .. ".lua normalises every input the fuzzer found a problem with", function()
      local dir = "fuzz/regressions/records-plugins/" .. plugin
      assert.is_true(is_dir(dir), dir .. " is missing")
      build()
      local failing, files = {}, list_files(dir)
      assert.is_true(#files > 0, dir .. " holds no input")
      for _, file in ipairs(files) do
        local code, out = replay("records", { file },
          "FUZZ_PLUGIN_ERRORS=fatal FUZZ_PLUGIN_ERROR_MATCH=" .. quote(plugin .. ":") .. " ")
        if code ~= 0 then
          failing[#failing + 1] = file .. ": " .. (out:match("plugin %S+ raised on bad data: ([^\n]*)") or out)
        end
      end
      assert(#failing == 0, ("%d input(s) make providers/%s.lua raise:\n  %s"):format(#failing, plugin,
        table.concat(failing, "\n  ")))
    end)
  end

  -- loutput.c computed w->ents + base while w->ents was NULL (clang's UBSan:
  -- "applying zero offset to null pointer"); found by the records fuzzer.
  it("records: the writer has no undefined behaviour on nested empty tables (clang UBSan)", function()
    build()
    local code, out = replay("records", { "fuzz/regressions/records-strict" })
    assert.are.equal(0, code, out)
  end)
end)

describe("fuzz regressions through gitfleet #fuzz", function()
  after_each(gf.cleanup)

  local function write_csv(record_lua)
    local dir = gf.tmpdir()
    local out = dir .. "/out.csv"
    local r = gf.run_script(([[
local core = require("fleet.core")
local w = assert(core.writer("csv", %q, { fields = { "name", "topics", "raw" } }))
assert(w:write(%s))
assert(w:close())
]]):format(out, record_lua))
    return r, gf.slurp(out)
  end

  -- output.c: an empty list in a CSV cell, before any non-empty one, reached
  -- fleet_csv_field(row, NULL, 0) (found by the records seed "[]").
  it("writes an empty list as an empty CSV cell", function()
    local r, text = write_csv('{ name = "a", topics = {} }')
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("name,topics,raw\r\na,,\r\n", text)
  end)

  -- loutput.c: an empty table nested in a CSV cell (found by the records
  -- fuzzer, fuzz/regressions/records-strict/).
  it("writes a list holding an empty table as JSON in a CSV cell", function()
    local r, text = write_csv('{ name = "a", raw = { {} } }')
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("name,topics,raw\r\na,,[]\r\n", text)
  end)
end)
