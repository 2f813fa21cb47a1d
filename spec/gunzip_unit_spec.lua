-- Decoding compressed bodies (runtime/gunzip.c) and the cache's raw
-- deflate (runtime/zpack.c), below the binary: this spec builds
-- spec/support/gunzip_probe.c with them, under ASan and UBSan where the
-- compiler has them, and runs its cases on a real page
-- (fuzz/corpus/gunzip/github-page.json.gz). Each case's input is made by
-- zlib, an encoder independent of the libdeflate fast path.
--
-- Run from the repository's root. Needs cc and the build's headers.

local gf = require("spec.support.gitfleet")

describe("gzip bodies (runtime/gunzip.c via spec/support/gunzip_probe)", function()
    local out, code

    setup(function()
        local tmp = gf.tmpdir()
        local probe = tmp .. "/gunzip_probe"
        local build = "cc -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -Iruntime %s -o %s "
            .. "spec/support/gunzip_probe.c runtime/gunzip.c runtime/zpack.c -lz -ldeflate"
        local r = gf.sh(build:format("-fsanitize=address,undefined -fno-sanitize-recover=undefined", gf.quote(probe)))
        if r.code ~= 0 then r = gf.sh(build:format("", gf.quote(probe))) end
        assert.are.equal(0, r.code, "cannot build the probe:\n" .. r.stderr)
        r = gf.sh(gf.quote(probe) .. " fuzz/corpus/gunzip/github-page.json.gz")
        out, code = r.stdout .. r.stderr, r.code
    end)

    teardown(gf.cleanup)

    local function case(name)
        local line = out:match("\n?(%a+ " .. name:gsub("%-", "%%-") .. ":[^\n]*)")
        assert.is_not_nil(line, "no case " .. name .. " in:\n" .. out)
        assert.are.equal("ok", line:match("^%a+"), line)
    end

    it("decodes a page gzipped by zlib, and one in a zlib wrapper (Content-Encoding: deflate)", function()
        case("page")
        case("zlib-gzip")
        case("zlib-wrapper")
    end)

    it("decodes a body of several gzip members to all of them, 10,000 empty members too", function()
        case("two-members")
        case("many-members")
        case("empty-member")
    end)

    it("ignores bytes after the last member that are not a member, as gzip(1) does", function()
        case("trailing-bytes")
    end)

    it("calls a body corrupt whose trailer lies about its length or CRC, and never gives it the claimed size",
        function()
        case("isize-high")
        case("isize-low")
        case("isize-huge")
        case("crc")
        case("plain")
    end)

    it("refuses every cut of a body as truncated or corrupt", function()
        case("truncated")
    end)

    it("stops a bomb (256 MB of zeros in 250 KB) at the cap, with a buffer no larger; decodes exactly at the cap",
        function()
        case("bomb")
        case("at-cap")
        case("over-cap")
        case("at-cap-then-empty")
        case("at-cap-then-cut")
    end)

    it("reads the cache's raw deflate back exactly, from zlib's and its own, and fails on any mismatch", function()
        case("zunpack-zlib")
        case("zunpack-short")
        case("zunpack-cut")
        case("zpack-round-trip")
        case("zunpack-extra")
    end)

    it("ran every case and exited 0, without a sanitizer's report", function()
        assert.are.equal(0, code, out)
        assert.is_nil(out:find("ERROR: ", 1, true), out)
    end)
end)
