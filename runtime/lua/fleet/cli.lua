-- Helpers for the built-in commands: option parsing, tables, times.
local cli = {}

-- Parses args against spec, a list of { long, short, arg = "NAME", many = bool }.
-- Returns options (keyed by the long name without dashes, "-" as "_")
-- and positional arguments; on a usage error prints it with a hint and
-- ends the run with status 2.
function cli.parse(command, args, spec)
  local opts, rest = {}, {}
  local by_name = {}
  for _, s in ipairs(spec) do
    by_name[s[1]] = s
    if s[2] then by_name[s[2]] = s end
  end
  local function fail(msg)
    io.stderr:write(("gitfleet %s: %s\nTry 'gitfleet %s --help'.\n"):format(command, msg, command))
    os.exit(2)
  end
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do rest[#rest + 1] = args[j] end
      break
    end
    local name, value = a:match("^(%-%-[^=]+)=(.*)$")
    name = name or a
    local s = by_name[name]
    if s then
      local key = s[1]:gsub("^%-+", ""):gsub("%-", "_")
      if s.arg then
        if not value then
          i = i + 1
          value = args[i]
          if value == nil then fail(("%s needs %s"):format(name, s.arg)) end
        end
        if s.many then
          opts[key] = opts[key] or {}
          table.insert(opts[key], value)
        else
          opts[key] = value
        end
      else
        if value then fail(("%s takes no value"):format(name)) end
        opts[key] = true
      end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      fail(("unknown option '%s'"):format(a))
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return opts, rest, fail
end

-- Prints rows (arrays of strings) as aligned columns under headers.
function cli.table(out, headers, rows)
  local widths = {}
  for c, h in ipairs(headers) do widths[c] = utf8.len(h) or #h end
  for _, row in ipairs(rows) do
    for c = 1, #headers do
      local cell = tostring(row[c] == nil and "" or row[c])
      row[c] = cell
      local w = utf8.len(cell) or #cell
      if w > widths[c] then widths[c] = w end
    end
  end
  local function line(cells)
    local parts = {}
    for c = 1, #headers do
      local cell = cells[c]
      local pad = widths[c] - (utf8.len(cell) or #cell)
      parts[c] = c < #headers and cell .. (" "):rep(pad) or cell
    end
    out:write(table.concat(parts, "  "), "\n")
  end
  line(headers)
  for _, row in ipairs(rows) do line(row) end
end

-- "14:03:10" for an epoch time today, else "2026-11-29 14:03".
function cli.clock(epoch)
  if not epoch then return "" end
  if os.date("%Y-%m-%d", math.floor(epoch)) == os.date("%Y-%m-%d") then
    return os.date("%H:%M:%S", math.ceil(epoch))
  end
  return os.date("%Y-%m-%d %H:%M", math.ceil(epoch))
end

-- "in 12m", "in 40s", "in 2h05m", "now".
function cli.until_text(epoch, now)
  if not epoch then return "" end
  local d = math.ceil(epoch - now)
  if d <= 0 then return "now" end
  if d < 60 then return ("in %ds"):format(d) end
  if d < 3600 then return ("in %dm"):format(d // 60) end
  return ("in %dh%02dm"):format(d // 3600, d % 3600 // 60)
end

-- The owners of a command line: the positional ones, then those of
-- --owners-file (one per line, # comments, - for standard input). A file
-- that cannot be read ends the run through fail.
function cli.owners(positional, owners_file, fail)
  local owners = {}
  for _, o in ipairs(positional) do owners[#owners + 1] = o end
  if owners_file then
    local f, err
    if owners_file == "-" then f = io.stdin else f, err = io.open(owners_file) end
    if not f then fail(err) end
    for line in f:lines() do
      line = line:gsub("#.*", ""):match("^%s*(.-)%s*$")
      if line ~= "" then owners[#owners + 1] = line end
    end
    if f ~= io.stdin then f:close() end
  end
  return owners
end

-- One line saying what went wrong, for a person: the kind first, then
-- the details the error carries.
function cli.describe(err)
  if type(err) ~= "table" then return tostring(err) end
  local what = ({
    not_found = "not found",
    auth = "refused (credentials)",
    rate_limited = "rate limited",
    timeout = "timed out",
    network = "network failure",
    server = "server error",
    decode = "unreadable response",
    too_large = "response too large",
    interrupted = "interrupted",
  })[err.kind]
  local provider = err.provider and (" on " .. err.provider) or ""
  if what then return ("%s%s: %s"):format(what, provider, tostring(err.message or err)) end
  return tostring(err.message or err)
end

return cli
