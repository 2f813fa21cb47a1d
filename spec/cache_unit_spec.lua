-- The response cache (runtime/cache.c) and SHA-256 (runtime/sha256.c),
-- below the binary: busted cannot call C in-process, so this spec builds
-- spec/support/cache_probe.c with them into a temporary folder and runs its
-- scenarios, each over a cache file of its own. The probe checks what it
-- can itself (and exits 1 with "FAIL: ..." otherwise); this spec checks
-- the exit status, the warnings on stderr and the files left behind.
--
-- Run from the repository's root. Needs cc and SQLite's headers
-- (libsqlite3-dev), as the build does.

local gf = require("spec.support.gitfleet")

local function count(s, pattern)
    local n = 0
    for _ in s:gmatch(pattern) do n = n + 1 end
    return n
end

local function files_in(dir)
    local list = {}
    for name in gf.capture("ls -a " .. gf.quote(dir)):gmatch("[^\n]+") do
        if name ~= "." and name ~= ".." then list[#list + 1] = name end
    end
    return list
end

local SECRET = "ghp_CACHESPECSECRET0123456789abcdefABCD"

describe("response cache (runtime/cache.c via spec/support/cache_probe)", function()
    local tmp, probe
    local n = 0

    -- Runs one probe scenario in a new folder; returns the result and the folder.
    local function run(command, ...)
        n = n + 1
        local dir = ("%s/s%d-%s"):format(tmp, n, command)
        assert(os.execute("mkdir -p " .. gf.quote(dir)))
        local args = { gf.quote(probe), command, gf.quote(dir) }
        for _, a in ipairs({ ... }) do args[#args + 1] = gf.quote(a) end
        local r = gf.sh(table.concat(args, " "))
        r.dir = dir
        return r
    end

    local function assert_ok(r)
        assert.are.equal(0, r.code, "probe failed:\n" .. r.stdout .. r.stderr)
        assert.is_nil(r.stdout:find("FAIL", 1, true), r.stdout)
    end

    local function warnings(r)
        return count(r.stderr, "gitfleet: warning: ")
    end

    setup(function()
        tmp = gf.tmpdir()
        -- Run as root, the read-only scenarios drop to nobody, who must be
        -- able to reach the folders inside.
        assert(os.execute("chmod 711 " .. gf.quote(tmp)))
        probe = tmp .. "/cache_probe"
        local flags = gf.capture("pkg-config --cflags --libs sqlite3 zlib libdeflate 2>/dev/null")
        if flags == "" then flags = "-lsqlite3 -lz -ldeflate" end
        local r = gf.sh(("cc -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Iruntime -o %s spec/support/cache_probe.c "
            .. "runtime/cache.c runtime/zpack.c runtime/sha256.c runtime/log.c runtime/redact.c %s"):format(gf.quote(probe), flags))
        assert.are.equal(0, r.code, "cannot build the probe:\n" .. r.stderr)
    end)

    teardown(function()
        -- The scenarios leave read-only files and folders behind.
        if tmp then os.execute("chmod -R u+rwX " .. gf.quote(tmp) .. " 2>/dev/null") end
        gf.cleanup()
    end)

    it("SHA-256 gives the NIST digests (FIPS 180-4 examples, one million 'a', incremental)", function()
        local r = run("sha256")
        assert_ok(r)
        local want = {
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
        }
        assert.are.same(want, (function()
            local got = {}
            for line in r.stdout:gmatch("[^\n]+") do got[#got + 1] = line end
            return got
        end)())
    end)

    it("hits after a store, misses for another credential, replaces on store, never stores the secret", function()
        local r = run("basic", SECRET)
        assert_ok(r)
        assert.are.equal(0, warnings(r), r.stderr)
        assert.is_truthy(r.stdout:find("ok hit after store, miss for another credential", 1, true))
        assert.is_truthy(r.stdout:find("ok replace on store", 1, true))
        local path = r.stdout:match("path (%S+)")
        local db = gf.slurp(path)
        assert.is_truthy(db and #db > 0, "no database file")
        assert.is_truthy(db:find("https://api.github.test/orgs/acme/repos", 1, true), "the probe's entries are not in " .. path)
        for _, suffix in ipairs({ "", "-wal", "-shm" }) do
            local bytes = gf.slurp(path .. suffix)
            if bytes then
                assert.is_nil(bytes:find(SECRET, 1, true), "the secret is in " .. path .. suffix)
                assert.is_nil(bytes:find("CACHESPECSECRET", 1, true), "part of the secret is in " .. path .. suffix)
            end
        end
    end)

    it("evicts least recently used entries first and keeps the total under max_size", function()
        local r = run("evict")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("ok LRU eviction order", 1, true))
        assert.is_truthy(r.stdout:find("ok size cap", 1, true))
        assert.is_truthy(r.stdout:find("ok smaller cap on reopen", 1, true))
        assert.are.equal(0, warnings(r), r.stderr)
    end)

    describe("a damaged file", function()
        local function assert_set_aside(r)
            assert_ok(r)
            assert.are.equal(1, warnings(r), r.stderr)
            local path = r.dir .. "/corrupt.sqlite"
            local aside = r.stderr:match("gitfleet: warning: cache file " .. path:gsub("%p", "%%%0")
                .. " is damaged; moved it to (%S+%.corrupt%-%d+) and started a new one\n")
            assert.is_truthy(aside, "expected the damaged-file warning, got: " .. r.stderr)
            assert.is_truthy(gf.slurp(aside), "the damaged file is not at " .. aside)
        end

        it("(garbage in the middle) is set aside with one warning; no wrong answer, and it works after", function()
            local r = run("corrupt", "middle")
            assert_set_aside(r)
            assert.is_truthy(r.stdout:find("all correct; the new file works", 1, true), r.stdout)
        end)

        it("(garbage over the header) is set aside at open", function()
            local r = run("corrupt", "header")
            assert_set_aside(r)
            assert.is_truthy(r.stdout:find("ok after damage: 0 of 300", 1, true), r.stdout)
        end)

        it("(a body changed on disk, invisible to SQLite) is caught by the entry's checksum", function()
            local r = run("corrupt", "body")
            assert_set_aside(r)
            assert.is_truthy(r.stdout:find("ok damaged body detected, not served", 1, true), r.stdout)
        end)
    end)

    it("an unreadable file is set aside and a new one started", function()
        local r = run("unreadable")
        assert_ok(r)
        assert.are.equal(1, warnings(r), r.stderr)
        assert.is_truthy(r.stderr:find("cannot be read; moved it to", 1, true), r.stderr)
        local names = table.concat(files_in(r.dir), " ")
        assert.is_truthy(names:find("unreadable.sqlite.corrupt-", 1, true), names)
    end)

    it("a read-only file serves lookups; stores are refused with one warning", function()
        local r = run("readonly")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("lookup hit, stores refused", 1, true), r.stdout)
        assert.are.equal(1, warnings(r), r.stderr)
        assert.is_truthy(r.stderr:find("cannot write to cache file", 1, true), r.stderr)
    end)

    it("a read-only folder does not crash and warns once at most", function()
        local r = run("readonly-dir")
        assert_ok(r)
        assert.is_true(warnings(r) <= 1, r.stderr)
    end)

    it("a write failure mid-run (file size limit, as a full disk) warns once; lookups go on", function()
        local r = run("diskfull")
        assert_ok(r)
        assert.are.equal(1, warnings(r), r.stderr)
        assert.is_truthy(r.stderr:find("cannot write to cache file", 1, true), r.stderr)
    end)

    it("two processes store into and read from one file at the same time (WAL)", function()
        local r = run("twoproc", "300")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("ok child 0 stored 300", 1, true), r.stdout)
        assert.is_truthy(r.stdout:find("ok child 1 stored 300", 1, true), r.stdout)
        assert.is_truthy(r.stdout:find("ok both processes' 600 entries present", 1, true), r.stdout)
        assert.are.equal(0, warnings(r), r.stderr)
    end)

    it("a store under another process's write lock neither waits nor is lost", function()
        local r = run("locked")
        assert_ok(r)
        assert.are.equal(3, count(r.stdout, "\nok ") + (r.stdout:match("^ok ") and 1 or 0), r.stdout)
        assert.are.equal(0, warnings(r), r.stderr)
    end)

    it("a full write queue drops its oldest stores, counted in stats, rather than wait; close is bounded", function()
        local r = run("queue")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("ok a full queue dropped %d+ of 100 stores instead of waiting"), r.stdout)
        assert.is_truthy(r.stdout:find("ok the kept ones are written once the lock is free, the drops counted", 1, true),
            r.stdout)
        assert.is_truthy(r.stdout:find("ok close under a lock returns", 1, true), r.stdout)
        local dropped = tonumber(r.stdout:match("dropped (%d+) of 100"))
        -- at close (the level -v shows): the queue's drops and the store the lock kept out
        assert.is_truthy(r.stderr:find(("gitfleet: cache: %d responses were not stored"):format(dropped + 1), 1, true),
            r.stderr)
        assert.are.equal(0, warnings(r), r.stderr)
    end)

    it("stores plain bodies deflated and reads them back; gzip, incompressible, empty bodies as they came; 10,000 stores", function()
        local r = run("deflate")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("ok plain bodies deflated", 1, true), r.stdout)
        assert.is_truthy(r.stdout:find("ok a deflated body of the wrong size is not served", 1, true), r.stdout)
        assert.is_truthy(r.stdout:find("ok ten thousand stores and memos", 1, true), r.stdout)
        -- the one damaged-file warning: the entry whose size was changed
        assert.are.equal(1, warnings(r), r.stderr)
        assert.is_truthy(r.stderr:find("is damaged; moved it to", 1, true), r.stderr)
    end)

    it("each cache file has its own random salt", function()
        local r = run("salt")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("ok salts differ", 1, true))
    end)

    it("leaves another program's database alone (one warning, no cache)", function()
        local r = run("foreign")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("ok another program's database left alone", 1, true), r.stdout)
        assert.are.equal(1, warnings(r), r.stderr)
        assert.is_truthy(r.stderr:find("it is not a gitfleet cache", 1, true), r.stderr)
    end)

    it("clear removes every entry and shrinks the file", function()
        local r = run("clear")
        assert_ok(r)
        assert.is_truthy(r.stdout:find("ok clear", 1, true))
    end)
end)
