--- horcrux.filters: the container filters of GET /api/containers,
-- GET /api/stats and the stacks, one meaning everywhere.
--
--   local f, q = filters.parse(req.args, { all = input.boolean })
--       -> filter (empty: none given), the route's own keys
--        | nil, message, "bad_request", key
--   filters.daemon(f)      -> Docker's `filters` table ({key = {values}})
--   filters.match(f, rec)  -> true | false | nil, key (rec does not say)
--   filters.list(f, all [, sources])      -> GET /api/containers with filters
--   filters.stats(f, all [, sources])     -> GET /api/stats with filters
--
-- Keys (each repeatable; a query may give several keys):
--   status=WORD      Docker's state word; any of the values (implies all)
--   label=KEY        the label is set; label=KEY=VALUE it has that value;
--                    every label value must match
--   network=NAME|ID  attached to that network (name, or an id prefix)
--   name=RE          the name matches: letters, digits, _ . - and /, an
--                    optional ^ and $; "." is any character (the daemon
--                    reads it as a Go regexp, which on this subset is the
--                    same), matched against the name with and without "/"
--   ancestor=IMAGE   the container's image: a reference (no tag means
--                    :latest) or an image id prefix
-- Values of one key are alternatives (any matches) except label (all
-- must); different keys must all match -- the daemon's rules.
--
-- Where they are applied. A source whose `filters` capability covers every
-- key asked (the Engine API: all of them) is given them as opts.filters;
-- any other lists without them and match() picks its records. A source
-- whose records do not say what a filter needs (the cgroup files know no
-- labels) cannot answer that query and hands over to the next one; when
-- none can, the answer is 503 with what each said. Without the daemon,
-- `ancestor` compares references and ids as written: it cannot know that
-- two tags name one image, nor an image's descendants.
local json = require "horcrux.json"
local metrics = require "horcrux.metrics"
local config = require "horcrux.config"

local null = json.null

local M = {}

--- The filter keys, and the state words `status` accepts.
M.KEYS = { "status", "label", "network", "name", "ancestor" }
M.STATES = {
  created = true, restarting = true, running = true, removing = true,
  paused = true, exited = true, dead = true,
}

local MAX_VALUES = 32 -- values of one key
local MAX_LEN = 255   -- bytes of one value (a label value: 1024)

local IS_KEY = {}
for _, k in ipairs(M.KEYS) do
  IS_KEY[k] = true
end

local function printable(s)
  return not s:find("[%c\127]")
end

-- Checks one value of key; returns it (normalized) or nil, message.
local CHECK = {
  status = function(v)
    if M.STATES[v] then
      return v
    end
    return nil, "status must be one of created, restarting, running, "
      .. "removing, paused, exited, dead"
  end,
  label = function(v)
    local key, value = v:match("^([^=]*)=(.*)$")
    key = key or v
    if key == "" or #key > MAX_LEN or not key:match("^[%w][%w._/-]*$") then
      return nil, "label must be KEY or KEY=VALUE, KEY made of letters, "
        .. "digits and . _ / - (at most 255 bytes)"
    end
    if value and (#value > 1024 or not printable(value)) then
      return nil, "a label VALUE is at most 1024 printable bytes"
    end
    return v
  end,
  network = function(v)
    if #v <= MAX_LEN and v:match("^[%w][%w_.-]*$") then
      return v
    end
    return nil, "network must be a network name or id"
  end,
  name = function(v)
    if #v <= MAX_LEN and v:match("^%^?/?[%w_.-]+%$?$") then
      return v
    end
    return nil, "name must be letters, digits and _ . - (an optional "
      .. "leading / or ^ and trailing $)"
  end,
  ancestor = function(v)
    if #v <= MAX_LEN and v:match("^[%w][%w._/:@-]*$") then
      return v
    end
    return nil, "ancestor must be an image reference or id"
  end,
}

--- The filters in `args` (the request's ordered {key, value} pairs).
-- Keys in `others` ({key = checker}, a checker as horcrux.input's:
-- function(text) -> value | nil, why) are the route's own: each at most
-- once, checked, returned in the second table. Any other key is an error
-- naming it. Returns the filter ({key = {values}}; empty when none was
-- given) and the others, or nil, message, "bad_request", key.
function M.parse(args, others)
  local f, q = {}, {}
  others = others or {}
  for _, kv in ipairs(args or {}) do
    local k, v = kv[1], kv[2]
    if IS_KEY[k] then
      local ok, why = CHECK[k](v)
      if not ok then
        return nil, ("query %s=%q: %s"):format(k, v:sub(1, 80), why),
          "bad_request", k
      end
      local list = f[k] or {}
      if #list >= MAX_VALUES then
        return nil, ("query %s: at most %d values"):format(k, MAX_VALUES),
          "bad_request", k
      end
      list[#list + 1] = ok
      f[k] = list
    elseif others[k] then
      if q[k] ~= nil then
        return nil, ("query parameter %q given twice"):format(k),
          "bad_request", k
      end
      local val, why = others[k](v)
      if val == nil then
        return nil, ("query %s=%q: %s"):format(k, v:sub(1, 80), why),
          "bad_request", k
      end
      q[k] = val
    else
      local known = {}
      for name in pairs(others) do
        known[#known + 1] = name
      end
      for _, name in ipairs(M.KEYS) do
        known[#known + 1] = name
      end
      table.sort(known)
      return nil, ("unknown query parameter %q (this route takes: %s)")
        :format(k:sub(1, 80), table.concat(known, ", ")), "bad_request", k
    end
  end
  return f, q
end

--- True when f asks for nothing.
function M.none(f)
  return not f or next(f) == nil
end

--- Docker's `filters` for f: the same keys and values, as arrays.
function M.daemon(f)
  local out = {}
  for k, list in pairs(f) do
    out[k] = json.array({ table.unpack(list) })
  end
  return out
end

local function known(v)
  return v ~= nil and v ~= null
end

-- "^/web.1$" -> a Lua pattern with the same meaning on names.
local function name_pattern(v)
  return (v:gsub("%-", "%%-"))
end

-- An image reference as the daemon compares it: no registry prefix of
-- Docker Hub, and :latest when there is neither a tag nor a digest.
local function norm_image(ref)
  ref = ref:gsub("^docker%.io/", ""):gsub("^library/", "")
  -- the last path segment, found without a pattern (the image comes from
  -- the daemon: no backtracking over it)
  local from = 1
  while true do
    local slash = ref:find("/", from, true)
    if not slash then
      break
    end
    from = slash + 1
  end
  if not ref:find(":", from, true) and not ref:find("@", 1, true) then
    ref = ref .. ":latest"
  end
  return ref
end

local function hex_of(v)
  local h = v:match("^sha256:(%x+)$") or v:match("^(%x+)$")
  return h and h:lower()
end

-- Whether test(v) holds for one of values at least.
local function any(values, test)
  for _, v in ipairs(values) do
    if test(v) then
      return true
    end
  end
  return false
end

local MATCH = {
  status = function(rec, values)
    if not known(rec.status) then
      return nil
    end
    return any(values, function(v) return rec.status == v end)
  end,
  label = function(rec, values) -- every value must hold
    if type(rec.labels) ~= "table" then
      return nil
    end
    return not any(values, function(v)
      local key, value = v:match("^([^=]*)=(.*)$")
      local have = rec.labels[key or v]
      return have == nil or (value and have ~= value)
    end)
  end,
  network = function(rec, values)
    if type(rec.networks) ~= "table" then
      return nil
    end
    return any(values, function(v)
      for name, id in pairs(rec.networks) do
        if name == v or (type(id) == "string" and #v > 0
            and id:sub(1, #v) == v) then
          return true
        end
      end
    end)
  end,
  name = function(rec, values)
    if not known(rec.name) then
      return nil
    end
    local bare = rec.name:gsub("^/", "")
    return any(values, function(v)
      local p = name_pattern(v)
      return bare:find(p) or ("/" .. bare):find(p)
    end)
  end,
  ancestor = function(rec, values)
    if not known(rec.image) then
      return nil
    end
    local image = norm_image(rec.image)
    local ids = {}
    for _, s in ipairs({ rec.image, known(rec.image_id) and rec.image_id or nil }) do
      ids[#ids + 1] = hex_of(s)
    end
    return any(values, function(v)
      local h = hex_of(v)
      return norm_image(v) == image or (h and any(ids, function(id)
        return id:sub(1, #h) == h
      end))
    end)
  end,
}

--- Whether rec matches f: true, false, or nil and the first key whose
-- field rec does not have (status, labels, networks, name, image).
-- rec: {status, name, image, image_id, labels = {k = v}, networks =
-- {name = id}}; a missing field (or json.null) is "not known".
function M.match(f, rec)
  local unknown
  for _, k in ipairs(M.KEYS) do
    local values = f[k]
    if values then
      local r = MATCH[k](rec, values)
      if r == false then
        return false
      elseif r == nil then
        unknown = unknown or k
      end
    end
  end
  if unknown then
    return nil, unknown
  end
  return true
end

local FIELD = {
  status = "state", label = "labels", network = "networks", name = "name",
  ancestor = "image",
}

-- Picks the records of list that match f; a record that does not say
-- what f needs makes the source unable to answer.
local function select(f, list, who)
  local out = json.array()
  for _, rec in ipairs(list) do
    local ok, key = M.match(f, rec)
    if ok == nil then
      return nil, ("%s: cannot apply the %s filter: it does not know "
        .. "containers' %s"):format(who, key, FIELD[key]), "unsupported"
    elseif ok then
      out[#out + 1] = rec
    end
  end
  return out
end
M.select = select

--- Whether src applies every key of f itself (its `filters` capability).
function M.applies(src, f)
  if type(src.filters) ~= "table" or type(src.list) ~= "function" then
    return false
  end
  for k in pairs(f) do
    if not src.filters[k] then
      return false
    end
  end
  return true
end

-- The sources, each made to answer list(opts) under f: one that applies f
-- itself gets it as opts.filters; any other lists without filters and
-- select() picks.
local function filtered(f, sources)
  local out = {}
  for i, src in ipairs(config.order(sources)) do
    if M.applies(src, f) then
      out[i] = src
    else
      out[i] = {
        name = src.name,
        list = function(opts)
          if type(src.list) ~= "function" then
            return nil, tostring(src.name) .. " cannot give list",
              "unsupported"
          end
          local list, err, kind = src.list({ all = opts.all })
          if not list then
            return nil, err, kind
          end
          local picked, why, k = select(f, list, tostring(src.name))
          if not picked then
            return nil, why, k
          end
          return picked, err -- err: "partial" when the source says so
        end,
      }
    end
  end
  return out
end

--- GET /api/containers: the containers, with f applied; answer, where
-- from. From the collector's view when it holds every container's
-- metadata (no daemon call: "view"), else the list of metrics.list. A
-- status filter lists stopped containers too, as the daemon does. Given
-- `sources`, those are asked, not the view.
function M.list(f, all, sources)
  all = all or f.status ~= nil
  if sources == nil then
    local list = require("horcrux.live").list(f, all)
    if list then
      return list, "view"
    end
  end
  if M.none(f) then
    return metrics.list({ all = all }, sources)
  end
  return metrics.list({ all = all, filters = M.daemon(f) },
    filtered(f, sources))
end

-- The records of running containers that match f, from the first source
-- whose running() answers and says what f needs (the Engine API's list
-- carries labels, networks and image ids); nil and the reasons when none
-- could.
local function running_matches(f, sources)
  local why = {}
  for _, src in ipairs(config.order(sources)) do
    if type(src.running) == "function" then
      local list, err = src.running()
      if list then
        local picked, msg = select(f, list, tostring(src.name))
        if picked then
          return picked
        end
        why[#why + 1] = msg
      else
        why[#why + 1] = tostring(src.name) .. ": " .. tostring(err)
      end
    end
  end
  return nil, why
end

local function from_view(f, all)
  local view = require "horcrux.view"
  local recs = {}
  for i, rec in ipairs(all) do
    local meta = type(rec.id) == "string" and #rec.id == 64
      and view.meta(rec.id) or {}
    recs[i] = {
      record = rec,
      name = rec.name,
      status = known(meta.status) and meta.status or "running",
      image = meta.image,
      labels = meta.labels,
      networks = meta.networks,
    }
  end
  local picked, msg = select(f, recs, "live view")
  if not picked then
    return nil, msg
  end
  local out = json.array()
  for _, r in ipairs(picked) do
    out[#out + 1] = r.record
  end
  return out
end

--- /api/stats filtered from what the collector keeps (no daemon call): the
-- running containers whose metadata matches f, their records from `all`,
-- and those the view holds no figures for yet (started since the last
-- round) sampled now.
function M.stats_from_view(f, all, sources)
  local view = require "horcrux.view"
  local want, order = {}, {}
  for _, meta in ipairs(view.metas()) do
    if meta.status == "running" and M.match(f, {
      status = meta.status, name = meta.name, image = meta.image,
      image_id = meta.image_id, labels = meta.labels or {},
      networks = meta.networks or {} }) then
      want[meta.full_id] = true
      order[#order + 1] = meta.full_id
    end
  end
  local out, held = json.array(), {}
  for _, rec in ipairs(all) do
    if want[rec.id] then
      out[#out + 1] = rec
      held[rec.id] = true
    end
  end
  local missing = {}
  for _, id in ipairs(order) do
    if not held[id] then
      missing[#missing + 1] = id
    end
  end
  for _, r in ipairs(#missing > 0 and metrics.stats_many(missing, sources)
      or {}) do
    if r.record then
      out[#out + 1] = r.record
    end
  end
  return out
end

--- GET /api/stats: the records of `all` (live.all()) whose container
-- matches f. Which ones match is asked of the first source whose running()
-- says what f needs -- and a matching running container that `all` lacks
-- (started since the collector's last round) is sampled now; when none
-- can say, match() decides from what the live view knows of each
-- (view.meta: name, image, status, labels and networks). `all` nil:
-- nothing is sampled yet, so only the matches are; nil (no reason) when no
-- source can say which match, and the caller samples all and asks again.
function M.stats(f, all, sources)
  if M.none(f) then
    return all
  end
  if require("horcrux.live").trusted() then
    return M.stats_from_view(f, all or {}, sources)
  end
  local list, why = running_matches(f, sources)
  if not list and all == nil then
    return nil
  end
  all = all or {}
  if not list then
    local out, msg = from_view(f, all)
    if not out then
      why[#why + 1] = msg
      return nil, table.concat(why, "; "), "metrics_unavailable"
    end
    return out
  end
  local want, held, out = {}, {}, json.array()
  for _, c in ipairs(list) do
    want[c.id] = true
  end
  for _, rec in ipairs(all) do
    if want[rec.id] then
      out[#out + 1] = rec
      held[rec.id] = true
    end
  end
  local missing = {}
  for _, c in ipairs(list) do
    if not held[c.id] then
      missing[#missing + 1] = c.id
    end
  end
  if #missing > 0 then
    local names = {}
    for _, c in ipairs(list) do
      names[c.id] = c.name
    end
    for i, r in ipairs(metrics.stats_many(missing, sources)) do
      if r.record then
        -- a record from the cgroup files knows no name (null); the list may
        if type(r.record.name) ~= "string"
            and type(names[missing[i]]) == "string" then
          r.record.name = names[missing[i]]
        end
        out[#out + 1] = r.record
      end
    end
  end
  return out
end

return M
