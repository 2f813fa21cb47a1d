-- Helpers the provider plugins share: local util = require("fleet.plugin")
local json = require("cjson")

local util = {}

util.null = json.null

-- The JSON null sentinel as nil; everything else unchanged.
function util.value(x)
  if x == json.null then return nil end
  return x
end

-- x when it is a JSON object or array (a table), nil otherwise: for the
-- fields a normaliser reads into, so a provider sending a number where an
-- object belongs gives nil fields rather than an error.
function util.object(x)
  if type(x) == "table" then return x end
  return nil
end

local function percent_encode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- One URL path segment: every byte but the unreserved ones percent-encoded,
-- so "acme/tools" becomes "acme%2Ftools" (GitLab's full paths). An empty
-- value, "." and ".." raise: as a segment they would change which endpoint
-- is called ("/orgs/../repos" is "/repos"), and no provider has such names.
function util.escape(s)
  s = tostring(s)
  if s == "" or s == "." or s == ".." then
    error(("'%s' cannot be a part of an API path"):format(s), 2)
  end
  return percent_encode(s)
end

-- A query-string name or value, percent-encoded the same way (any value).
util.query_escape = percent_encode

-- A page source that drops the items keep(item) refuses; it has next()
-- like the host's pages object, which is all fleet asks of repositories().
function util.filtered(pages, keep)
  return {
    next = function()
      local items, err = pages:next()
      if not items then return nil, err end
      local out = {}
      for _, item in ipairs(items) do
        if keep(item) then out[#out + 1] = item end
      end
      return out
    end,
  }
end

-- Every item of every page at path (api:collect), each read by
-- read(item) into a record: an array, or nil, err. An item that is not a
-- JSON object raises, which the host reports as a decode error.
function util.list(api, path, opts, read)
  local items, err = api:collect(path, opts)
  if not items then return nil, err end
  local out = {}
  for i, item in ipairs(items) do
    if type(item) ~= "table" then error(("item %d of %s is not an object"):format(i, path), 0) end
    out[i] = read(item)
  end
  return out
end

return util
