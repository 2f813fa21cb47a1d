-- Pagination over any endpoint, in the provider's own style.
--
-- The first page is fetched at once (so "not found" is an ordinary error
-- before any iteration). When it reveals the last page — a Link rel="last",
-- a total-pages header, or a total count in the body — the remaining pages
-- are fetched concurrently, a bounded window ahead of the reader, and still
-- handed out in page order. Otherwise the next link is followed as given.
local core = require("fleet.core")

local Pages = {}
Pages.__index = Pages

-- Sets (or adds) a query parameter of a URL.
local function with_param(url, name, value)
  local base, query = url:match("^([^?#]*)%??([^#]*)")
  local parts, found = {}, false
  for pair in query:gmatch("[^&]+") do
    local k = pair:match("^([^=]*)")
    if k == name then
      if not found then parts[#parts + 1] = name .. "=" .. value end
      found = true
    else
      parts[#parts + 1] = pair
    end
  end
  if not found then parts[#parts + 1] = name .. "=" .. value end
  return base .. "?" .. table.concat(parts, "&")
end
Pages.with_param = with_param

local function param(url, name)
  local query = url:match("%?([^#]*)") or ""
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)")
    if k == name then return v end
  end
end

-- Items of a decoded page: the body itself, or body[field].
local function items_of(data, field)
  if field then
    local items = type(data) == "table" and data[field]
    return type(items) == "table" and items or {}
  end
  return type(data) == "table" and data or {}
end

-- Whether a decoded page holds no items: an empty array, as the body or
-- as body[field]. A page without the field is not taken for the end.
local function is_empty_page(data, field)
  local items = data
  if field then items = type(data) == "table" and data[field] end
  return type(items) == "table" and next(items) == nil
end

-- The decoded body of a response made with opts.decode (fleet.core decodes
-- JSON straight from the transfer's buffer), or nil, err (kind "decode").
local function decode(api, resp)
  if resp.data ~= nil then return resp.data end
  if resp.status == 204 or resp.body == "" then return {} end
  return nil, core.error({ kind = "decode", provider = api.name, url = resp.url, status = resp.status,
    message = resp.decode_error and ("%s: the response is not valid JSON (%s)"):format(resp.url, resp.decode_error)
      or ("%s: the response is not JSON (%s)"):format(resp.url, tostring(resp.headers["content-type"])) })
end
Pages.decode = decode

-- Pages fetched ahead by default: as many as the provider's tokens may
-- have in flight at once, so that one large owner can use all of it when
-- round trips are long (4 ahead left most of it idle at 150 ms a round
-- trip), and no more than MAX_WINDOW, which bounds the decoded pages a
-- slow reader can have waiting.
local MAX_WINDOW = 32
local window_of = {}
local function default_window(api)
  local w = window_of[api.name]
  if w then return w end
  local http = core.config().http
  local tokens = 1
  for _, p in ipairs(core.providers()) do
    if p.name == api.name and p.tokens > 0 then tokens = p.tokens end
  end
  w = math.max(4, math.min(MAX_WINDOW, http.max_connections, http.per_token_concurrency * tokens))
  window_of[api.name] = w
  return w
end

-- A reader of a list's pages, before any page is read. Every page is
-- decoded as it arrives, building only the fields the API object keeps
-- (api.keep: what normalisation reads), if it says.
local function new_pages(api, opts)
  local request_opts = {}
  for k, v in pairs(opts or {}) do request_opts[k] = v end
  local w = request_opts.window
  if w ~= nil and not (math.type(w) == "integer" and w >= 1 and w <= 1000) then
    error(("window must be a whole number of pages from 1 to 1000, not %s"):format(tostring(w)), 0)
  end
  local items_field = request_opts.items or api.pagination.items
  request_opts.decode = { items = items_field, keep = api.keep }
  return setmetatable({
    api = api,
    opts = request_opts,
    items_field = items_field,
    page_param = api.pagination.page_param or "page",
    window = request_opts.window or api.pagination.window or default_window(api),
    pending = {},       -- page number -> task handle fetching it
    ready = {},         -- page number -> decoded page, until read
    failed = {},        -- page number -> error
    next_page = 2,      -- the number of the page the reader gets next
    style = api.pagination.style,
  }, Pages)
end

-- pages = Pages.open(api, url, opts): fetches the first page.
-- opts.items: field holding the items (default: the plugin's pagination.items)
-- opts.window: how many pages to fetch ahead when the last page is known
--   (default: the plugin's pagination.window, else default_window)
function Pages.open(api, url, opts)
  local self = new_pages(api, opts)
  local first, err = api:request("GET", url, self.opts)
  if not first then return nil, err end
  local data, derr = decode(api, first)
  if not data then return nil, derr end
  self.first_items = items_of(data, self.items_field)
  self:plan(first, data)
  return self
end

-- pages = Pages.at(api, template, last, opts): pages of a list whose last
-- page another process learned (its first page fetched there), opened
-- without a request; set next_page and limit before reading. opts as
-- Pages.open's.
function Pages.at(api, template, last, opts)
  local self = new_pages(api, opts)
  self.last, self.template = last, template
  return self
end

-- Works out how the following pages are found.
function Pages:plan(resp, data)
  local pg = self.api.pagination
  if self.style == "link" then
    local links = core.parse_link(resp.headers.link)
    local last_page = links.last and tonumber(param(links.last, self.page_param))
    if not last_page and pg.total_pages_header then
      last_page = tonumber(resp.headers[pg.total_pages_header:lower()])
    end
    if last_page and last_page >= 1 then
      self.last = last_page
      self.template = links.last or links.next or resp.url
    else
      self.next_url = links.next
    end
  elseif self.style == "body" then
    local next_url = type(data) == "table" and data[pg.next or "next"]
    if type(next_url) ~= "string" then next_url = nil end
    local size = type(data) == "table" and tonumber(data[pg.total or "size"])
    local per = type(data) == "table" and tonumber(data[pg.page_size or "pagelen"])
    if next_url and size and per and per > 0 and param(next_url, self.page_param) then
      self.last = math.ceil(size / per)
      self.template = next_url
    else
      self.next_url = next_url
    end
  end
end

-- Fetches page n in a task of its own. The task decodes the page and
-- leaves it in self.ready (or the error in self.failed) rather than
-- returning it, so nothing keeps the page alive once the reader has it.
function Pages:fetch_async(n)
  local url = with_param(self.template, self.page_param, tostring(n))
  local api, opts, ready, failed = self.api, self.opts, self.ready, self.failed
  self.pending[n] = core.spawn(function()
    local resp, err = api:request("GET", url, opts)
    if not resp then
      failed[n] = err
      return
    end
    local data, derr = decode(api, resp)
    resp = nil -- the body can go before the page is read
    if data then ready[n] = data else failed[n] = derr end
  end)
end

-- Whether page n has arrived (read and decoded, or failed) and waits for
-- the reader.
function Pages:arrived(n)
  return self.ready[n] ~= nil or self.failed[n] ~= nil
end

-- Returns the next page's items (an array), nil at the end, or nil, err.
function Pages:next()
  if self.first_items then
    local items = self.first_items
    self.first_items = nil
    return items
  end
  local data, err
  if self.last then
    local n = self.next_page
    -- limit: the last page this reader may fetch (the worker shares the
    -- rest of a large owner's pages with others, fleet/share.lua)
    local stop = self.limit or self.last
    if n > stop or (self.ended and n > self.ended) then return nil end
    for k = n, math.min(stop, n + self.window - 1) do
      if not self.pending[k] then self:fetch_async(k) end
    end
    local task = self.pending[n]
    self.pending[n] = nil
    self.next_page = n + 1
    task:wait()
    data, err = self.ready[n], self.failed[n]
    self.ready[n], self.failed[n] = nil, nil
    -- A page with no items ends the list (`ended`), whatever the last page
    -- said: the pages are offsets, so none after it has any either (the
    -- list shrank while it was read, or a server claims a last page of a
    -- million). Pages already in flight past it are dropped.
    if data and n < stop and is_empty_page(data, self.items_field) then self.ended = n end
  elseif self.next_url then
    -- A next link back to a page already read would go round for ever,
    -- spending the budget on the same pages: the list fails there instead.
    self.visited = self.visited or {}
    if self.visited[self.next_url] then
      local url = self.next_url
      self.next_url = nil
      return nil, core.error({ kind = "decode", provider = self.api.name, url = url,
        message = url .. ": the next link leads back to a page already read; the list stops here" })
    end
    self.visited[self.next_url] = true
    local resp
    resp, err = self.api:request("GET", self.next_url, self.opts)
    if resp then
      data, err = decode(self.api, resp)
      if data then
        -- plan may learn the last page only now: the concurrent path
        -- then goes on from the page after this one
        self.next_page = self.next_page + 1
        self:plan(resp, data)
      end
    end
  else
    return nil
  end
  if not data then
    self.last, self.next_url = nil, nil -- nothing more after a failure
    return nil, err
  end
  return items_of(data, self.items_field)
end

-- fn(items) of every page from the reader's place (or page `from`) up to
-- page `to` (or the last), in page order: a list, or nil, err (a page's
-- failure, or fn's nil, err). Each page can go as soon as fn has seen it.
function Pages:map(fn, from, to)
  if from then self.next_page = from end
  self.limit = to
  local out = {}
  while true do
    local items, err = self:next()
    if not items then
      if err then return nil, err end
      return out
    end
    local v, ferr = fn(items)
    if v == nil then return nil, ferr end
    out[#out + 1] = v
  end
end

-- Every item of every page, or nil, err.
function Pages:all()
  local out = {}
  local read, err = self:map(function(items)
    table.move(items, 1, #items, #out + 1, out)
    return true
  end)
  if not read then return nil, err end
  return out
end

return Pages
