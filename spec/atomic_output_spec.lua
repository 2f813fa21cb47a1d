-- Files gitfleet writes for the user are replaced all at once: --output
-- and fleet.write's path go to a temporary file beside the target that is
-- renamed over it at the end. A failed, interrupted or refused run leaves
-- the old file byte for byte and no temporary file; a reader that closes
-- stdout ends the run quietly.
local emulator = require("spec.support.emulator")
local gf = require("spec.support.gitfleet")
local cjson = require("cjson")

local TOKEN = "ghp_ATOMICxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
local PRECIOUS = "PRECIOUS\n"

local function setup(scenario)
  return gf.one_token_world(scenario or {}, TOKEN)
end

local function fetch(cfg, args, opts)
  local all = { "--config", cfg, "fetch" }
  for _, a in ipairs(args) do all[#all + 1] = a end
  return gf.run(all, opts)
end

-- The names in dir that are temporary files of ours.
local function leftovers(dir)
  local found = {}
  local p = assert(io.popen("ls -A " .. gf.quote(dir)))
  for name in p:lines() do
    if name:find("%.gitfleet%-") then found[#found + 1] = name end
  end
  p:close()
  return found
end

local function lines_of(text)
  local n = 0
  for _ in text:gmatch("[^\n]+") do n = n + 1 end
  return n
end

local function mode_of(path)
  return gf.capture("stat -c %a " .. gf.quote(path))
end

-- Whether this machine lets us mount a small tmpfs in a private mount
-- namespace (root, or a kernel with unprivileged user namespaces).
local function can_mount()
  return os.execute("unshare -m sh -c 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d' >/dev/null 2>&1")
end

local OWNERS = {
  { name = "acme", kind = "org", repos = 420 }, { name = "ada", kind = "user", repos = 35 },
}

describe("--output is replaced all at once", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  it("an owner that does not exist leaves the previous file as it was", function()
    local _, cfg, dir = setup({ owners = OWNERS })
    local out = gf.write(dir .. "/repos.ndjson", PRECIOUS)
    local r = fetch(cfg, { "no-such-owner", "--output", out })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal(PRECIOUS, gf.slurp(out))
    assert.is_truthy(r.stderr:find("1 of 1 owners failed; " .. out .. " was left as it was", 1, true), r.stderr)
    assert.are.same({}, leftovers(dir))
  end)

  it("by default some owners failing replaces the file with the others; --keep-on-failure keeps it", function()
    local _, cfg, dir = setup({ owners = OWNERS })
    local ada = fetch(cfg, { "ada" })
    assert.are.equal(0, ada.code, ada.stderr)
    local out = gf.write(dir .. "/repos.ndjson", PRECIOUS)
    local r = fetch(cfg, { "ada", "no-such-owner", "--output", out })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal(ada.stdout, gf.slurp(out))
    assert.is_truthy(r.stderr:find(("1 of 2 owners failed; the other owners' %d repositories were written")
      :format(#gf.ndjson(ada.stdout)), 1, true), r.stderr)

    gf.write(out, PRECIOUS)
    r = fetch(cfg, { "ada", "no-such-owner", "--output", out, "--keep-on-failure" })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal(PRECIOUS, gf.slurp(out))
    assert.is_truthy(r.stderr:find("1 of 2 owners failed; " .. out .. " was left as it was", 1, true), r.stderr)

    r = fetch(cfg, { "ada", "--output", out, "--keep-on-failure" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(ada.stdout, gf.slurp(out))
    assert.are.same({}, leftovers(dir))
  end)

  it("keeps an existing file's mode, gives a new one 0666 less the umask, and follows a symlink", function()
    local _, cfg, dir = setup({ owners = OWNERS })
    local old = gf.write(dir .. "/old.ndjson", PRECIOUS)
    os.execute("chmod 600 " .. gf.quote(old))
    local r = fetch(cfg, { "ada", "--output", old }, { before = "umask 022;" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("600", mode_of(old))

    r = fetch(cfg, { "ada", "--output", dir .. "/new.ndjson" }, { before = "umask 027;" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("640", mode_of(dir .. "/new.ndjson"))

    os.execute(("mkdir %s/real && ln -s real/target.ndjson %s/link.ndjson"):format(gf.quote(dir), gf.quote(dir)))
    gf.write(dir .. "/real/target.ndjson", PRECIOUS)
    r = fetch(cfg, { "ada", "--format", "table", "--output", dir .. "/link.ndjson" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("real/target.ndjson", gf.capture("readlink " .. gf.quote(dir .. "/link.ndjson")))
    local table_text = gf.slurp(dir .. "/real/target.ndjson")
    assert.is_truthy(table_text:find("^REPOSITORY"), table_text)
    assert.are.equal(1 + #gf.ndjson(gf.slurp(old)), lines_of(table_text)) -- a header, then ada's rows
    assert.are.same({}, leftovers(dir))
    assert.are.same({}, leftovers(dir .. "/real"))
  end)

  for _, sig in ipairs({ "TERM", "INT" }) do
    it("SIG" .. sig .. " in the middle of a 200-owner fetch leaves the old file byte for byte", function()
      -- Slow answers keep the run going long after its first 64 KiB reach
      -- the temporary file; the signal comes then.
      local _, cfg, dir = setup({ generate = { count = 200, total_repos = 10000, prefix = "owner", large = 2 },
        faults = { rate = 0.5, kinds = { "slow" }, slow_seconds = 0.4, seed = 3 } })
      local old = {}
      for i = 0, 255 do old[#old + 1] = string.char(i) end
      local out = gf.write(dir .. "/all.ndjson", table.concat(old):rep(64))
      local args = { gf.quote(gf.bin), "--config", gf.quote(cfg), "fetch", "-j", "8", "--output", gf.quote(out) }
      for i = 1, 200 do args[#args + 1] = ("owner-%04d"):format(i) end
      local script = table.concat({
        table.concat(args, " ") .. " 2>" .. gf.quote(dir .. "/stderr") .. " &",
        "pid=$!",
        "i=0",
        -- bounded: 30 s for the first records to reach the temporary file
        ("while [ $i -lt 600 ] && ! find %s -maxdepth 1 -name '.all.ndjson.gitfleet-*' -size +0c | grep -q .; do"
          .. " sleep 0.05; i=$((i+1)); done"):format(gf.quote(dir)),
        "kill -" .. sig .. " $pid",
        "wait $pid; echo $?",
      }, "\n")
      local r = gf.sh("timeout -s KILL 120 sh -c " .. gf.quote(script))
      assert.are.equal(sig == "TERM" and "143" or "130", r.stdout:match("%d+"), gf.slurp(dir .. "/stderr"))
      assert.are.equal(table.concat(old):rep(64), gf.slurp(out))
      assert.are.same({}, leftovers(dir))
    end)
  end

  it("a missing folder, a folder as the file, an empty name: one clear line, exit 1", function()
    local _, cfg, dir = setup({ owners = OWNERS })
    for path, why in pairs({ [dir .. "/no/such/r.ndjson"] = "No such file or directory",
      [dir] = "Is a directory", [""] = "No such file or directory" }) do
      local r = fetch(cfg, { "ada", "--output", path })
      assert.are.equal(1, r.code, r.stderr)
      assert.are.equal(("gitfleet fetch: cannot write to %s: %s\n"):format(path, why), r.stderr)
    end
    assert.are.same({}, leftovers(dir))
  end)

  it("a file under /dev/shm (a file system mounted under /dev) is replaced all at once like any other", function()
    local p = io.popen("mktemp -d -p /dev/shm 2>/dev/null")
    local shm = p:read("l")
    p:close()
    if not shm then return end -- no /dev/shm on this machine
    finally(function() os.execute("rm -rf " .. gf.quote(shm)) end)
    local _, cfg = setup({ owners = OWNERS })
    local out = gf.write(shm .. "/repos.ndjson", PRECIOUS)
    local r = fetch(cfg, { "no-such-owner", "--output", out })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal(PRECIOUS, gf.slurp(out))
    r = fetch(cfg, { "acme", "--output", out })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(420, lines_of(gf.slurp(out)))
    assert.are.same({}, leftovers(shm))
  end)

  it("--output /dev/stdout writes through to the shell's file: the same file, not one renamed over it", function()
    local _, cfg, dir = setup({ owners = OWNERS })
    local out = gf.write(dir .. "/shell.ndjson", "")
    local cmd = ("ino=$(stat -c %%i %s); %s --config %s fetch acme --output /dev/stdout >%s 2>/dev/null; "
      .. "echo $? $ino $(stat -c %%i %s)"):format(gf.quote(out), gf.quote(gf.bin), gf.quote(cfg), gf.quote(out),
      gf.quote(out))
    local code, before, after = gf.capture(cmd):match("^(%d+) (%d+) (%d+)$")
    assert.are.equal("0", code)
    assert.are.equal(before, after)
    assert.are.equal(420, lines_of(gf.slurp(out)))
    assert.are.same({}, leftovers(dir))
  end)

  it("/dev/full: one clear line, exit 1", function()
    local _, cfg = setup({ owners = OWNERS })
    local r = fetch(cfg, { "acme", "--output", "/dev/full" })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal("gitfleet fetch: cannot write to /dev/full: No space left on device\n", r.stderr)
  end)

  it("a file that cannot grow (RLIMIT_FSIZE) leaves the old file and no temporary file", function()
    local _, cfg, dir = setup({ owners = OWNERS })
    local out = gf.write(dir .. "/repos.ndjson", PRECIOUS)
    local r = fetch(cfg, { "--no-cache", "acme", "--output", out }, { before = "trap '' XFSZ; ulimit -f 100;" })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal(("gitfleet fetch: cannot write to %s: File too large\n"):format(out), r.stderr)
    assert.are.equal(PRECIOUS, gf.slurp(out))
    assert.are.same({}, leftovers(dir))
  end)

  -- A real full disk and a read-only file system, on a small tmpfs in a
  -- private mount namespace.
  local function in_tmpfs(cfg, dir, mount_opts, fetch_args)
    local script = table.concat({
      "set -e",
      "mkdir -p " .. gf.quote(dir .. "/mnt"),
      "mount -t tmpfs -o size=64k tmpfs " .. gf.quote(dir .. "/mnt"),
      "printf 'PRECIOUS\\n' > " .. gf.quote(dir .. "/mnt/repos.ndjson"),
      mount_opts and ("mount -o remount," .. mount_opts .. " " .. gf.quote(dir .. "/mnt")) or ":",
      "set +e",
      gf.quote(gf.bin) .. " --config " .. gf.quote(cfg) .. " fetch " .. fetch_args .. " --output "
        .. gf.quote(dir .. "/mnt/repos.ndjson") .. " 2>" .. gf.quote(dir .. "/stderr"),
      "echo $? > " .. gf.quote(dir .. "/rc"),
      "cat " .. gf.quote(dir .. "/mnt/repos.ndjson") .. " > " .. gf.quote(dir .. "/after"),
      "ls -A " .. gf.quote(dir .. "/mnt") .. " > " .. gf.quote(dir .. "/listing"),
    }, "\n")
    gf.sh("timeout -s KILL 120 unshare -m sh -c " .. gf.quote(script))
    return tonumber(gf.slurp(dir .. "/rc")), gf.slurp(dir .. "/stderr"), gf.slurp(dir .. "/after"),
      gf.slurp(dir .. "/listing")
  end

  -- cases: what the tmpfs is, the mount option that makes it so, the owner
  -- fetched (acme's records do not fit in 64 KiB), the error.
  for _, case in ipairs({
    { what = "a full disk", owner = "acme", why = "No space left on device" },
    { what = "a read-only folder", mount_opts = "ro", owner = "ada", why = "Read-only file system" },
  }) do
    it(case.what .. ": one clear line, exit 1, the old file untouched, no temporary file", function()
      if not can_mount() then
        pending("no tmpfs mount here (needs root or user namespaces)")
        return
      end
      local _, cfg, dir = setup({ owners = OWNERS })
      local code, stderr, after, listing = in_tmpfs(cfg, dir, case.mount_opts, case.owner)
      assert.are.equal(1, code, stderr)
      assert.are.equal(("gitfleet fetch: cannot write to %s/mnt/repos.ndjson: %s\n"):format(dir, case.why), stderr)
      assert.are.equal(PRECIOUS, after)
      assert.are.equal("repos.ndjson\n", listing)
    end)
  end
end)

describe("a reader that closes stdout", function()
  after_each(function()
    emulator.stop_all()
    gf.cleanup()
  end)

  -- Runs `gitfleet ARGS | head -N`; returns gitfleet's exit status, what
  -- head printed, and gitfleet's stderr.
  local function piped(cfg, args, head)
    local dir = gf.tmpdir()
    local cmd = { gf.quote(gf.bin), "--config", gf.quote(cfg) }
    for _, a in ipairs(args) do cmd[#cmd + 1] = gf.quote(a) end
    local script = ("%s 2>%s </dev/null | head %s; echo ${PIPESTATUS[0]} >%s"):format(table.concat(cmd, " "),
      gf.quote(dir .. "/stderr"), head, gf.quote(dir .. "/rc"))
    local r = gf.sh("timeout -s KILL 120 bash -c " .. gf.quote(script))
    return tonumber(gf.slurp(dir .. "/rc")), r.stdout, gf.slurp(dir .. "/stderr")
  end

  it("fetch | head -1 ends quietly with 141, in every format, and the cache stays usable", function()
    -- Far more than a pipe holds (64 KiB) in every format.
    local _, cfg = setup({ owners = { { name = "acme", kind = "org", repos = 2500 }, OWNERS[2] } })
    for _, format in ipairs({ "ndjson", "json", "csv", "table" }) do
      local args = { "fetch", "--format", format, "acme", "ada" }
      if format == "csv" then
        args[#args + 1] = "--fields"
        args[#args + 1] = "full_name,description,html_url,clone_url,ssh_url,topics,created_at,pushed_at"
      end
      local code, out, err = piped(cfg, args, "-1")
      assert.are.equal("", err, format)
      assert.are.equal(141, code, format)
      assert.are.equal(1, lines_of(out), format)
    end
    local r = gf.run({ "--config", cfg, "fetch", "acme", "ada" })
    assert.are.equal(0, r.code, r.stderr)
    assert.is_true(#gf.ndjson(r.stdout) > 2000)
  end)

  it("a script's writer on stdout: nothing after the failed write runs, nothing on stderr", function()
    local path = gf.script([[
local w = fleet.writer({ format = "ndjson", fields = { "id", "pad" } })
for i = 1, 100000 do w:write({ id = i, pad = ("x"):rep(200) }) end
w:close()
io.stderr:write("still running\n")
]])
    local code, out, err = piped(gf.config({}), { "run", path }, "-c 10")
    assert.are.equal("", err)
    assert.are.equal(141, code)
    assert.are.equal(10, #out)
  end)
end)

describe("fleet.write to a path", function()
  after_each(function()
    gf.cleanup()
  end)

  it("replaces the file on success and leaves it when a record cannot be written", function()
    local dir = gf.tmpdir()
    local out = gf.write(dir .. "/out.ndjson", PRECIOUS)
    local r = gf.run_script(([[
local ok, err = fleet.write({ { id = 1 }, { id = 2, bad = print } }, { output = %q })
io.stdout:write(tostring(ok), " ", tostring(err), "\n")
]]):format(out))
    assert.are.equal(0, r.code, r.stderr)
    assert.is_truthy(r.stdout:find("^nil record 2: field 'bad': cannot encode a function"), r.stdout)
    assert.are.equal(PRECIOUS, gf.slurp(out))

    local many = {}
    for i = 1, 10000 do many[i] = ("{ id = %d }"):format(i) end
    r = gf.run_script(([[
assert(fleet.write({ %s }, { output = %q }))
]]):format(table.concat(many, ", "), out))
    assert.are.equal(0, r.code, r.stderr)
    local records = gf.ndjson(gf.slurp(out))
    assert.are.equal(10000, #records)
    assert.are.equal(10000, records[10000].id)
    assert.are.same({}, leftovers(dir))
  end)

  it("a writer the script never closes leaves the path as it was, and says so", function()
    local dir = gf.tmpdir()
    local out = gf.write(dir .. "/out.ndjson", PRECIOUS)
    local r = gf.run_script(([[
local w = fleet.writer({ output = %q })
w:write({ id = 1 })
error("the script fails before closing")
]]):format(out))
    assert.are.equal(1, r.code)
    assert.is_truthy(r.stderr:find(out .. " was left as it was: its writer was never closed", 1, true), r.stderr)
    assert.are.equal(PRECIOUS, gf.slurp(out))
    assert.are.same({}, leftovers(dir))
    assert.is_nil(r.stdout:find(cjson.encode({ id = 1 }), 1, true))
  end)

  it("w:close() in a task syncs the file off the event loop: other tasks run meanwhile", function()
    -- The commit (fsync, rename, fsync of the folder) runs on a thread of
    -- its own; the closing task waits for it, the others go on, and the
    -- file is complete under its name when close returns.
    local dir = gf.tmpdir()
    local a, b = dir .. "/a.ndjson", dir .. "/b.ndjson"
    gf.write(b, PRECIOUS)
    local r = gf.run_script(([[
local order = {}
local function lines(path)
  local n = 0
  for _ in io.lines(path) do n = n + 1 end
  return n
end
local function write(path, n)
  local w = fleet.writer({ output = path })
  for i = 1, n do w:write({ id = i }) end
  order[#order + 1] = "closing " .. n
  assert(w:close())
  assert(w:close()) -- again: the same answer
  order[#order + 1] = "closed " .. lines(path)
  return w
end
local ta = fleet.spawn(write, %q, 1000)
local tb = fleet.spawn(write, %q, 3)
local other = fleet.spawn(function() order[#order + 1] = "other" end)
local w = ta:wait()
tb:wait()
other:wait()
print(table.concat(order, ","))
local ok, err = pcall(w.write, w, { id = 0 })
print(ok, err and err:match("closed") ~= nil)
]]):format(a, b))
    assert.are.equal(0, r.code, r.stderr)
    local order, closed = r.stdout:match("^([^\n]+)\n([^\n]+)")
    assert.are.equal("false\ttrue", closed)
    -- both closes were under way before the other task ran
    assert.is_truthy(order:find("^closing 1000,closing 3,other,"), order)
    assert.is_truthy(order:find("closed 1000", 1, true) and order:find("closed 3", 1, true), order)
    assert.are.equal(1000, #gf.ndjson(gf.slurp(a)))
    assert.are.equal(3, #gf.ndjson(gf.slurp(b)))
    assert.are.same({}, leftovers(dir))
  end)

  it("files closed with sync_later are synced together, also one moved away first; descriptors stay bounded", function()
    -- gitfleet worker renames each owner's file into place at once and
    -- syncs a batch of them before acknowledging; a consumer may take a
    -- file away as it appears, and the sync goes through the descriptor,
    -- not the name. With 64 descriptors, at most 16 wait for a sync: the
    -- closes beyond sync at once, and all 300 files are written.
    local dir = gf.tmpdir()
    local r = gf.run_script(([[
local core = require("fleet.core")
local closed = {}
for i = 1, 300 do
  local w = assert(fleet.writer({ output = ("%%s/f%%03d.ndjson"):format(%q, i), sync_later = true }))
  assert(w:write({ id = i }))
  assert(w:close())
  closed[i] = w
end
assert(os.rename(%q .. "/f001.ndjson", %q .. "/taken.ndjson"))
print(core.sync_written(closed))
print(core.sync_written(closed)) -- again: nothing left to sync
print(pcall(core.sync_written, { 1 }))
local open = assert(fleet.writer({ output = %q .. "/open.ndjson", sync_later = true }))
print(pcall(core.sync_written, { open }))
open:discard()
]]):format(dir, dir, dir, dir), nil, { before = "ulimit -n 64;" })
    assert.are.equal(0, r.code, r.stderr)
    local lines = {}
    for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal("true", lines[1])
    assert.are.equal("true", lines[2])
    assert.matches("^false\t.*bad argument #1 to 'fleet.core.sync_written' %(expected closed writers%)", lines[3])
    assert.matches("^false\t.*expected closed writers", lines[4])
    local n = tonumber((gf.capture("ls -A " .. gf.quote(dir) .. " | wc -l"):gsub("%s", "")))
    assert.are.equal(300, n)
    assert.are.equal(1, gf.ndjson(gf.slurp(dir .. "/taken.ndjson"))[1].id)
    assert.are.equal(300, gf.ndjson(gf.slurp(dir .. "/f300.ndjson"))[1].id)
    assert.are.same({}, leftovers(dir))
  end)

  it("2,000 tasks closing a writer each at once, with 256 file descriptors: every file is written", function()
    -- A close in a task waits for its commit with the file open; commits
    -- beyond a few waiting are done at once, so descriptors do not pile up.
    local dir = gf.tmpdir()
    local r = gf.run_script(([[
local tasks = {}
for i = 1, 2000 do
  tasks[i] = fleet.spawn(function()
    local w = assert(fleet.writer({ output = ("%%s/f%%04d.ndjson"):format(%q, i) }))
    assert(w:write({ id = i }))
    return assert(w:close())
  end)
end
local failed = 0
for i = 1, #tasks do
  local ok, err = tasks[i]:result()
  if not ok then
    failed = failed + 1
    if failed == 1 then io.stderr:write(tostring(err), "\n") end
  end
end
print(failed)
]]):format(dir), nil, { before = "ulimit -n 256;" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("0\n", r.stdout)
    local n = tonumber((gf.capture("ls -A " .. gf.quote(dir) .. " | wc -l"):gsub("%s", "")))
    assert.are.equal(2000, n)
    assert.are.same({}, leftovers(dir))
    assert.are.equal(2000, gf.ndjson(gf.slurp(dir .. "/f2000.ndjson"))[1].id)
  end)
end)
