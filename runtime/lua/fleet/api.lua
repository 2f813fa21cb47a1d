-- The API object a plugin works with: one provider instance, optionally
-- pinned to one token. It joins paths to the base URL, encodes queries,
-- adds the plugin's default headers, decodes JSON once, and turns HTTP
-- failures into structured errors. Credentials never pass through here:
-- the host attaches them in C.
local core = require("fleet.core")
local json = require("cjson")
local Pages = require("fleet.pages")
local util = require("fleet.plugin")

local Api = {}
Api.__index = Api

function Api.new(info)
  local plugin = info.plugin_table
  return setmetatable({
    name = info.name,
    base_url = info.base_url,
    plugin = plugin,
    pagination = plugin.pagination,
    default_headers = plugin.headers or {},
  }, Api)
end

local function copy_with(self, field, value)
  local copy = setmetatable({}, Api)
  for k, v in pairs(self) do copy[k] = v end
  copy[field] = value
  return copy
end

-- A copy of this API object whose requests all use the token `label`.
function Api:with_token(label)
  return copy_with(self, "token", label)
end

-- A copy of this API object whose pages build only the fields in `keep`
-- (a keep table, see runtime/json.h): what normalisation reads.
function Api:with_keep(keep)
  return copy_with(self, "keep", keep)
end

local query_escape = util.query_escape
Api.escape = util.escape

-- A query value as it is sent: a string, a finite number or true. Anything
-- else (a table, NaN) would go out as "table: 0x55..." or "-nan".
local function query_value(k, v)
  local t = type(v)
  if t == "string" then return v end
  if t == "boolean" then return "true" end
  if t == "number" and v == v and v ~= math.huge and v ~= -math.huge then return tostring(v) end
  error(("query parameter '%s' must be a string, a finite number or true, not %s"):format(k,
    t == "number" and tostring(v) or t), 0)
end

-- Absolute URL for a path ("/users/x/repos") or a full URL, with a query
-- table appended in sorted order (stable URLs make cache hits).
function Api:url(path, query)
  local url = path
  if not path:match("^https?://") then
    if path:sub(1, 1) ~= "/" then path = "/" .. path end
    url = self.base_url .. path
  end
  if query and next(query) then
    local keys = {}
    for k in pairs(query) do
      if type(k) ~= "string" then error(("a query parameter's name must be a string, not %s"):format(type(k)), 0) end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do
      local v = query[k]
      if v ~= nil and v ~= false then parts[#parts + 1] = query_escape(k) .. "=" .. query_escape(query_value(k, v)) end
    end
    if #parts > 0 then url = url .. (url:find("?", 1, true) and "&" or "?") .. table.concat(parts, "&") end
  end
  return url
end

-- The server's own words for an error, from a JSON or text body.
local function server_message(body)
  if not body or body == "" then return nil end
  local ok, data = pcall(json.decode, body)
  if ok and type(data) == "table" then
    local m = data.message or data.error_description or data.error
    if type(m) == "table" then m = m.message end
    if type(m) == "string" then return m end
  end
  if #body <= 200 and not body:find("<", 1, true) then return (body:gsub("%s+$", "")) end
end

-- resp, err = api:request(method, path, opts)
-- opts: query, headers, body (string, or a table sent as JSON), token,
-- resource, free, cache, secret_for (runtime/apps.h), ok_status = {[404] = true} (statuses returned as a
-- response instead of an error), decode = true (a JSON body comes back
-- decoded as resp.data instead of resp.body; {items =, keep =} as in
-- runtime/json.h).
function Api:request(method, path, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(self.default_headers) do headers[k] = v end
  if opts.headers then for k, v in pairs(opts.headers) do headers[k] = v end end
  local body = opts.body
  if type(body) == "table" then
    body = json.encode(body)
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  local url = self:url(path, opts.query)
  local token = opts.token or self.token
  if token and Api.prepare_token then Api.prepare_token(self, token) end
  local request_opts = {
    headers = headers, body = body, token = token,
    resource = opts.resource, free = opts.free, cache = opts.cache, decode = opts.decode,
    secret_for = opts.secret_for,
  }
  local resp, err = core.request(self.name, method, url, request_opts)
  -- a token that expired while the request waited is renewed, and the request made again once
  if not resp and token and Api.renew_refused and Api.renew_refused(self, token, err) then
    resp, err = core.request(self.name, method, url, request_opts)
  end
  if not resp then
    err.provider = self.name
    if err.status and opts.ok_status and opts.ok_status[err.status] then
      return { status = err.status, url = err.url, headers = err.headers or {}, body = err.body or "" }
    end
    local said = err.status and err.status >= 400 and server_message(err.body)
    if said then err.message = ("%s: %s"):format(err.message, said) end
    err.body = nil
    return nil, err
  end
  return resp
end

-- data, err = api:get(path, opts): the decoded JSON of one GET.
function Api:get(path, opts)
  local o = { decode = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  local resp, err = self:request("GET", path, o)
  if not resp then return nil, err end
  local data, derr = Pages.decode(self, resp)
  if not data then return nil, derr end
  return data, resp
end

-- pages, err = api:pages(path, opts): a Pages object (fleet.pages) whose
-- first page has been fetched; opts.query is applied to the first URL only
-- (later URLs come from the server).
function Api:pages(path, opts)
  opts = opts or {}
  local url = self:url(path, opts.query)
  local page_opts = {}
  for k, v in pairs(opts) do if k ~= "query" then page_opts[k] = v end end
  return Pages.open(self, url, page_opts)
end

-- items, err = api:collect(path, opts): every item of every page.
function Api:collect(path, opts)
  local pages, err = self:pages(path, opts)
  if not pages then return nil, err end
  return pages:all()
end

-- A small fact about this provider kept across runs in the response cache
-- (nil when the cache is off or the fact is older than max_age seconds,
-- a week by default).
function Api:recall(key, max_age)
  return core.memo_get(self.base_url .. " " .. key, max_age or 7 * 86400)
end

function Api:remember(key, value)
  core.memo_set(self.base_url .. " " .. key, value)
end

-- pages, err = api:owner_pages(owner, org_path, org_opts, user_path, user_opts)
-- Pages of an owner that may be an organisation (or group) or a user: the
-- organisation's path first, the user's after a 404. A user is remembered
-- for a week, so a re-run does not spend a request on the 404 again.
function Api:owner_pages(owner, org_path, org_opts, user_path, user_opts)
  local key = "owner-kind " .. owner:lower()
  if self:recall(key) ~= "user" then
    local pages, err = self:pages(org_path, org_opts)
    if pages or err.status ~= 404 then return pages, err end
  end
  local pages, err = self:pages(user_path, user_opts)
  if pages then self:remember(key, "user") end
  return pages, err
end

-- The JSON null sentinel as nil; everything else unchanged.
Api.value = util.value

return Api
