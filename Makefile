# gitfleet — build, test, install.
#
#   make               build ./gitfleet
#   make test          install what is missing, build, run every spec
#   make SANITIZE=1 test   the same with ASan + UBSan (build/asan/gitfleet)
#   make demo          build and fetch from the bundled emulator
#   make bench         benchmark against peers (not part of test)
#   make valgrind      the specs tagged #valgrind under valgrind
#   make fuzz          every fuzz harness for FUZZ_SECONDS (60) each
#   make install PREFIX=/usr/local

VERSION := 0.1.0
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
DATADIR = $(PREFIX)/share/gitfleet
MANDIR = $(PREFIX)/share/man/man1
COMPDIR = $(PREFIX)/share/bash-completion/completions

CC ?= cc
PKGS = lua5.4 lua5.4-cjson libcurl yaml-0.1 sqlite3 zlib libdeflate hiredis libcrypto
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

ifeq ($(SANITIZE),1)
BUILD = build/asan
BIN = $(BUILD)/gitfleet
OPT = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD = build/release
BIN = gitfleet
OPT = -O2 -g
endif

# The sanitizer build links a Lua built with its C API checks on, from
# Debian's source package (tools/lua-apicheck.sh): a push past the stack a C
# function was given aborts there instead of corrupting memory.
ifeq ($(SANITIZE),1)
LUA_APICHECK = build/lua-apicheck
PKG_CFLAGS := -I$(LUA_APICHECK)/include $(PKG_CFLAGS)
PKG_LIBS := $(LUA_APICHECK)/liblua.a $(filter-out -llua5.4,$(PKG_LIBS)) -ldl
endif

WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS ?=
override CFLAGS += -std=c11 -D_GNU_SOURCE -DFLEET_VERSION='"$(VERSION)"' $(OPT) $(WARN) $(PKG_CFLAGS) -iquote runtime -I$(BUILD)
LDLIBS = $(PKG_LIBS) -lm

SRCS = $(wildcard runtime/*.c)
OBJS = $(SRCS:runtime/%.c=$(BUILD)/%.o) $(BUILD)/embedded.o
LUA_SRCS = $(shell find runtime/lua -name '*.lua' | sort)

# "runtime/lua/fleet/init.lua" -> "fleet", "runtime/lua/fleet/x.lua" -> "fleet.x",
# "runtime/lua/commands/fetch.lua" -> "commands.fetch".
lua_name = $(subst /,.,$(patsubst runtime/lua/%.lua,%,$(patsubst %/init.lua,%.lua,$(1))))

FUZZ_SECONDS ?= 60

.PHONY: all deps test test-deps demo bench install uninstall clean valgrind fuzz
all: $(BIN)

$(BIN): $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)
ifeq ($(SANITIZE),1)
	@ln -sfn ../../providers $(BUILD)/providers
endif

$(BUILD)/%.o: runtime/%.c | $(BUILD)/.deps-ok
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/embedded.c: $(LUA_SRCS) $(BUILD)/embed
	$(BUILD)/embed $@ $(foreach f,$(LUA_SRCS),$(call lua_name,$(f))=$(f))

$(BUILD)/embedded.o: $(BUILD)/embedded.c runtime/embedded.h
	$(CC) -std=c11 -O0 -Iruntime -c -o $@ $<

$(BUILD)/embed: tools/embed.c | $(BUILD)/.deps-ok
	$(CC) -std=c11 -O2 -Wall -Wextra -o $@ $<

# Build dependencies are checked once per build folder.
$(BUILD)/.deps-ok: tools/deps.sh
	@mkdir -p $(BUILD)
	@tools/deps.sh build
	@touch $@

ifeq ($(SANITIZE),1)
$(BUILD)/.deps-ok $(BIN): $(LUA_APICHECK)/liblua.a
$(LUA_APICHECK)/liblua.a: tools/lua-apicheck.sh
	@tools/deps.sh sanitize
	@tools/lua-apicheck.sh $(LUA_APICHECK)
endif

deps:
	@tools/deps.sh build test

test-deps:
	@tools/deps.sh build test

test: test-deps $(BIN)
	GITFLEET_BIN=$(abspath $(BIN)) lua5.4 /usr/bin/busted

demo: test-deps $(BIN)
	@tools/demo.sh $(abspath $(BIN))

bench: test-deps $(BIN)
	@tools/deps.sh bench
	@bench/run.sh $(abspath $(BIN))

valgrind: test-deps $(BIN)
	@tools/deps.sh valgrind
	GITFLEET_BIN=$(abspath $(BIN)) GITFLEET_WRAPPER="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$(abspath tools/valgrind.supp)" \
		lua5.4 /usr/bin/busted --tags=valgrind

# Every libFuzzer harness (fuzz/) for FUZZ_SECONDS each.
fuzz:
	@tools/deps.sh fuzz
	$(MAKE) -C fuzz run SECONDS=$(FUZZ_SECONDS)

install: $(BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/providers $(DESTDIR)$(DATADIR)/scripts \
		$(DESTDIR)$(DATADIR)/config $(DESTDIR)$(MANDIR) $(DESTDIR)$(COMPDIR)
	install -m 755 $(BIN) $(DESTDIR)$(BINDIR)/gitfleet
	install -m 644 providers/*.lua $(DESTDIR)$(DATADIR)/providers/
	install -m 644 scripts/*.lua $(DESTDIR)$(DATADIR)/scripts/
	install -m 644 config/gitfleet.example.yaml $(DESTDIR)$(DATADIR)/config/
	install -m 644 man/gitfleet.1 $(DESTDIR)$(MANDIR)/gitfleet.1
	install -m 644 tools/gitfleet.bash-completion $(DESTDIR)$(COMPDIR)/gitfleet

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/gitfleet $(DESTDIR)$(MANDIR)/gitfleet.1 $(DESTDIR)$(COMPDIR)/gitfleet
	rm -rf $(DESTDIR)$(DATADIR)

clean:
	rm -rf build gitfleet

-include $(wildcard $(BUILD)/*.d)
