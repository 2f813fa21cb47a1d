-- The owner list of `gitfleet fetch` and `gitfleet queue push`: read from arguments, a file or
-- standard input, checked where the user typed it, and each owner kept once.
--
-- An owner is OWNER or PROVIDER:OWNER. It is refused (a usage error that
-- names the argument or file:line) when it is empty, when PROVIDER is not a
-- provider, when it holds a space or a control character, or when one of
-- its "/"-separated parts is empty, "." or ".." (no provider allows such a
-- name, and a dot segment would change which API path is called).
local owners = {}

-- A line of an owners file longer than this is refused: no owner name is
-- near it, and reading /dev/zero must not fill the memory.
owners.MAX_LINE = 4096
local BLOCK = 65536

-- lines, err = owners.read_lines(path): the lines of a file ("-" for
-- standard input), each as { text =, line = n }, with blank lines, lines
-- starting with # and what follows a # removed. err is one line naming
-- the file when it cannot be read as lines.
function owners.read_lines(path)
  local f, err
  if path == "-" then
    f, path = io.stdin, "standard input"
  else
    f, err = io.open(path, "rb")
    if not f then return nil, ("cannot read --owners-file %s"):format(err) end
  end
  local out, pending, n = {}, "", 0
  local function take(line)
    n = n + 1
    line = line:gsub("\r$", "")
    -- A byte order mark, as some editors save UTF-8, is not part of the
    -- first owner's name.
    if n == 1 then line = line:gsub("^\239\187\191", "") end
    line = line:gsub("#.*", ""):match("^%s*(.-)%s*$")
    if line ~= "" then out[#out + 1] = { text = line, line = n } end
  end
  local problem
  while true do
    local chunk, rerr = f:read(BLOCK)
    if not chunk then
      if rerr then problem = ("cannot read %s: %s"):format(path, rerr) end
      break
    end
    local start = 1
    while true do
      local nl = chunk:find("\n", start, true)
      if not nl then break end
      local line = pending .. chunk:sub(start, nl - 1)
      pending = ""
      if #line > owners.MAX_LINE then break end
      take(line)
      start = nl + 1
    end
    pending = pending .. chunk:sub(start)
    if #pending > owners.MAX_LINE then
      problem = ("%s: line %d is longer than %d bytes"):format(path, n + 1, owners.MAX_LINE)
      break
    end
  end
  if not problem and pending ~= "" then take(pending) end
  if f ~= io.stdin then f:close() end
  if problem then return nil, problem end
  return out
end

-- nil when name is a valid owner name, else why not.
local function name_problem(name)
  if name == "" then return "empty owner" end
  if name:find("[%s%c]") then return "an owner name holds no space or control character" end
  for part in (name .. "/"):gmatch("([^/]*)/") do
    if part == "" then return "an owner name has no empty part (leading, trailing or double '/')" end
    if part == "." or part == ".." then return "'.' and '..' are not owner names" end
  end
  return nil
end
owners.name_problem = name_problem

-- An owner as an error message shows it: quoted, with a newline as \n,
-- and one too long to read cut to its first bytes and its length.
function owners.shown(text)
  local cut = text
  if #text > 80 then
    local n = 60
    while n > 0 and (text:byte(n + 1) or 0) & 0xC0 == 0x80 do n = n - 1 end -- not inside a UTF-8 character
    cut = text:sub(1, n)
  end
  local shown = ("%q"):format(cut):gsub("\\\n", "\\n")
  if cut ~= text then shown = ("%s... (%d bytes)"):format(shown, #text) end
  return shown
end

-- job, err = owners.parse(text, providers): text is OWNER or
-- PROVIDER:OWNER; providers maps provider names to true. The job is
-- { provider =, owner =, label = text } (provider nil: the default).
function owners.parse(text, providers)
  local prefix, name = text:match("^([^:/]*):(.*)$")
  local provider
  if prefix then
    if prefix == "" then return nil, "empty provider before ':'" end
    if not providers[prefix] then
      local names = {}
      for p in pairs(providers) do names[#names + 1] = p end
      table.sort(names)
      return nil, ("unknown provider '%s' (providers: %s)"):format(prefix, table.concat(names, ", "))
    end
    if name == "" then return nil, ("empty owner after '%s:'"):format(prefix) end
    provider = prefix
  else
    name = text
  end
  local problem = name_problem(name)
  if problem then return nil, problem end
  return { provider = provider, owner = name, label = text }
end

-- entries, err = owners.entries(positional, owners_file): the owners as
-- typed, arguments first, then the lines of owners_file ("-": standard
-- input), each { text =, where = "argument 3" | "FILE:12" }.
function owners.entries(positional, owners_file)
  local entries = {}
  for i, o in ipairs(positional) do entries[#entries + 1] = { text = o, where = "argument " .. i } end
  if owners_file then
    local lines, err = owners.read_lines(owners_file)
    if not lines then return nil, err end
    local name = owners_file == "-" and "stdin" or owners_file
    for _, l in ipairs(lines) do entries[#entries + 1] = { text = l.text, where = name .. ":" .. l.line } end
  end
  return entries
end

-- jobs, err = owners.jobs(entries, providers, default_provider, keep_duplicates)
-- entries: { text =, where = "argument 3" | "FILE:12" }. An owner given
-- more than once (same provider, names equal ignoring case, as on every
-- provider) is kept once, at its first place, unless keep_duplicates.
function owners.jobs(entries, providers, default_provider, keep_duplicates)
  local jobs, seen = {}, {}
  for _, e in ipairs(entries) do
    local job, err = owners.parse(e.text, providers)
    if not job then return nil, ("%s: %s: %s"):format(e.where, owners.shown(e.text), err) end
    job.where = e.where
    local key = (job.provider or default_provider or "") .. ":" .. job.owner:lower()
    if keep_duplicates or not seen[key] then
      seen[key] = true
      jobs[#jobs + 1] = job
    end
  end
  return jobs
end

return owners
