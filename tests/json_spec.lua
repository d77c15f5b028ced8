-- horcrux.json: decoding, encoding, shapes, numbers, errors.
local json = require("horcrux.json")

-- Asserts the nil, message, kind triple of a failure; returns the message.
local function failure(kind, v, msg, k)
  assert.is_nil(v)
  assert.is_string(msg)
  assert.are.equal(kind, k)
  return msg
end

local function decode_fails(text, opts)
  return failure("protocol", json.decode(text, opts))
end

local function encode_fails(value, opts)
  return failure("bad_request", json.encode(value, opts))
end

local function read_fixture(name)
  local f = assert(io.open("tests/fixtures/json/" .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function nested(n, open, close)
  return string.rep(open, n) .. string.rep(close, n)
end

describe("horcrux.json", function()
  it("exposes null, the array metatable and the functions", function()
    assert.are.equal("userdata", type(json.null))
    assert.are.equal("table", type(json.array_mt))
    for _, f in ipairs({ "decode", "encode", "encoder", "array", "is_array" }) do
      assert.are.equal("function", type(json[f]))
    end
  end)

  it("encoder(opts) encodes as encode(value, opts) does, its options read once", function()
    local opts = { sort_keys = true }
    local enc = json.encoder(opts)
    opts.sort_keys, opts.pretty = false, true -- read once: no effect
    local v = { b = 1, a = { 2, 3 }, c = "x" }
    assert.are.equal(json.encode(v, { sort_keys = true }), enc(v))
    assert.are.equal('{"a":[2,3],"b":1,"c":"x"}', enc(v))
    assert.are.equal(json.encode(v, { pretty = true, sort_keys = true }),
      json.encoder({ pretty = true, sort_keys = true })(v))
    assert.are.equal("[]", json.encoder()(json.array()))
    local text, msg, kind = enc({ [1.5] = true })
    assert.is_nil(text)
    assert.truthy(msg:find("not an integer", 1, true), msg)
    assert.are.equal("bad_request", kind)
    assert.has_error(function() json.encoder({ pretty = "yes" }) end)
  end)

  describe("decode", function()
    it("decodes scalars", function()
      assert.are.equal(true, json.decode("true"))
      assert.are.equal(false, json.decode("false"))
      assert.are.equal(json.null, json.decode("null"))
      assert.are.equal("hi", json.decode('"hi"'))
      assert.are.equal("", json.decode('""'))
      assert.are.equal(1.5, json.decode("1.5"))
      assert.are.equal(-0.25, json.decode(" -0.25 "))
    end)

    it("decodes integral numbers as integers", function()
      for text, want in pairs({ ["0"] = 0, ["-1"] = -1, ["42"] = 42, ["1.0"] = 1, ["1e3"] = 1000, ["-0"] = 0 }) do
        local v = json.decode(text)
        assert.are.equal(want, v)
        assert.are.equal("integer", math.type(v), text)
      end
      assert.are.equal("float", math.type(json.decode("1.5")))
    end)

    it("keeps counters exact up to the int64 range", function()
      local two53 = 1 << 53
      assert.are.equal(two53, json.decode("9007199254740992"))
      assert.are.equal("integer", math.type(json.decode("9007199254740992")))
      -- 2^53 + 1 is not a double: read from the text, not rounded.
      assert.are.equal(two53 + 1, json.decode("9007199254740993"))
      assert.are.equal(123456789012345678, json.decode("123456789012345678"))
      assert.are.equal(math.maxinteger, json.decode("9223372036854775807"))
      assert.are.equal(math.mininteger, json.decode("-9223372036854775808"))
      assert.are.equal("integer", math.type(json.decode("-9223372036854775808")))
    end)

    it("decodes the cgroup v1 'no limit' as that exact integer", function()
      local v = json.decode("9223372036854771712")
      assert.are.equal("integer", math.type(v))
      assert.are.equal(9223372036854771712, v)
      assert.is_true(v > 0)
      assert.are.equal("9223372036854771712", tostring(v))
      assert.are.equal("9223372036854771712", json.encode(v))
      assert.are.equal("[9223372036854771712]", json.encode(json.decode("[9223372036854771712]")))
    end)

    it("keeps numbers beyond int64 as floats", function()
      local v = json.decode("18446744073709551615")
      assert.are.equal("float", math.type(v))
      assert.are.equal(18446744073709551615.0, v)
      assert.is_true(v > 0)
      assert.are.equal("float", math.type(json.decode("9223372036854775808")))
      assert.are.equal(2.0 ^ 63, json.decode("9223372036854775808"))
      assert.are.equal(-(2.0 ^ 63) - 2048, json.decode("-9223372036854777856"))
      assert.are.equal("float", math.type(json.decode("-9223372036854775809")))
      assert.are.equal("float", math.type(json.decode("1e300")))
      -- Above 2^53 only integer literals become integers.
      assert.are.equal("float", math.type(json.decode("1e17")))
    end)

    it("rejects numbers that overflow a double", function()
      assert.matches("out of range", decode_fails("[1, 1e400]"))
      assert.matches("out of range", decode_fails("-1e999"))
    end)

    it("round-trips floats exactly", function()
      for _, x in ipairs({ 0.1, 1e300, -2.5e-10, 1 / 3, math.pi, 5e-324, 1.7976931348623157e308, 123.456 }) do
        local v = json.decode(json.encode(x))
        assert.are.equal(x, v)
      end
      assert.are.equal("0.1", json.encode(0.1))
      assert.are.equal("1e+300", json.encode(1e300))
    end)

    it("decodes objects as tables and arrays as tagged sequences", function()
      local v = json.decode('{"a": [1, "two", {"b": null}], "c": {"d": false}}')
      assert.are.equal(1, v.a[1])
      assert.are.equal("two", v.a[2])
      assert.are.equal(json.null, v.a[3].b)
      assert.are.equal(false, v.c.d)
      assert.are.equal(3, #v.a)
      assert.is_true(json.is_array(v.a))
      assert.are.equal(json.array_mt, getmetatable(v.a))
      assert.is_false(json.is_array(v))
      assert.is_nil(getmetatable(v.c))
    end)

    it("keeps null elements in place", function()
      local v = json.decode("[1, null, 3, null]")
      assert.are.equal(4, #v)
      assert.are.equal(json.null, v[2])
      assert.are.equal(json.null, v[4])
      assert.are.equal("[1,null,3,null]", json.encode(v))
    end)

    it("round-trips [] as [] and {} as {}", function()
      local a, o = json.decode("[]"), json.decode("{}")
      assert.are.equal("table", type(a))
      assert.are.equal(nil, next(a))
      assert.is_true(json.is_array(a))
      assert.is_false(json.is_array(o))
      assert.are.equal("[]", json.encode(a))
      assert.are.equal("{}", json.encode(o))
      assert.are.equal('{"a":[]}', json.encode(json.decode('{"a":[]}')))
      local v = json.decode('{"x": [[], {}]}')
      assert.are.equal('{"x":[[],{}]}', json.encode(v))
    end)

    it("decodes escapes and unicode", function()
      assert.are.equal('"\\/\b\f\n\r\t', json.decode('"\\"\\\\\\/\\b\\f\\n\\r\\t"'))
      assert.are.equal("é", json.decode('"\\u00e9"'))
      assert.are.equal("é", json.decode('"\\u00E9"'))
      assert.are.equal("€", json.decode('"\\u20ac"'))
      assert.are.equal("😀", json.decode('"\\ud83d\\ude00"'))
      assert.are.equal("😀 ü", json.decode('"😀 ü"'))
      assert.are.equal("<&>", json.decode('"\\u003c\\u0026\\u003e"'))
    end)

    it("decodes \\u0000 into an embedded zero, keeping the rest", function()
      local s = json.decode('"a\\u0000b"')
      assert.are.equal(3, #s)
      assert.are.equal("a\0b", s)
      local v = json.decode('{"k\\u0000":"x\\u0000y","n":[9007199254740993,"\\u0000",' ..
        '12345678901234567890,"\\\\u0000",-9223372036854775808,"\\ud83d\\ude00\\u0000"]}')
      assert.are.equal("x\0y", v["k\0"])
      assert.are.equal(9007199254740993, v.n[1])
      assert.are.equal("\0", v.n[2])
      assert.are.equal("float", math.type(v.n[3]))
      assert.are.equal("\\u0000", v.n[4])
      assert.are.equal(math.mininteger, v.n[5])
      assert.are.equal("😀\0", v.n[6])
      assert.are.equal('"a\\u0000b"', json.encode(s))
    end)

    it("rejects bad \\u escapes that cJSON would read as U+0000", function()
      assert.matches("bad \\u escape at byte offset 3", decode_fails('"ab\\uZZZZ"'), 1, true)
      assert.matches("byte offset", decode_fails('"\\ud800"'))
      assert.matches("byte offset", decode_fails('"\\udc00"'))
      assert.matches("byte offset", decode_fails('"\\ud83dx"'))
    end)

    it("reports truncated input as the end of input", function()
      for _, text in ipairs({ "[1,2", '{"a":', '{"a": 1', '"abc', '{"a', "[tr", "[1,2,", "{", '["a\\' }) do
        assert.matches("unexpected end of input", decode_fails(text), 1, true)
      end
    end)

    it("reports where the syntax error is", function()
      assert.are.equal("invalid JSON: syntax error at byte offset 3 near 'x]'", decode_fails("[1,x]"))
      assert.matches("byte offset %d+ near", decode_fails("{a:1}"))
      assert.matches("byte offset", decode_fails("[1,]"))
      assert.matches("byte offset", decode_fails("NaN"))
      assert.matches("byte offset", decode_fails("Infinity"))
      assert.matches("byte offset", decode_fails("'x'"))
      -- Not mistaken for a string that runs off the end.
      assert.are.equal("invalid JSON: syntax error at byte offset 4 near 'x'", decode_fails('["a"x'))
      assert.are.equal("invalid JSON: syntax error at byte offset 4 near '\"b'", decode_fails('["a""b'))
    end)

    it("rejects trailing garbage but allows trailing whitespace", function()
      assert.are.equal("invalid JSON: trailing garbage at byte offset 5", decode_fails("[1,2]x"))
      assert.matches("trailing garbage", decode_fails("[1] [2]"))
      assert.matches("trailing garbage", decode_fails("1 2"))
      assert.matches("trailing garbage", decode_fails('{"a":1}}'))
      assert.matches("trailing garbage", decode_fails("[1]\0"))
      assert.are.same({ 1 }, json.decode(" \t\r\n[1] \n\t"))
    end)

    it("rejects empty input", function()
      assert.are.equal("invalid JSON: empty input", decode_fails(""))
      assert.are.equal("invalid JSON: empty input", decode_fails(" \n\t "))
    end)

    it("limits nesting without crashing", function()
      assert.matches("nested deeper than 128", decode_fails(nested(10000, "[", "]")))
      assert.matches("nested deeper than 128", decode_fails(string.rep("[", 10000)))
      assert.matches("nested deeper than 128", decode_fails(string.rep('{"a":', 10000)))
      assert.matches("nested deeper than 128", decode_fails(nested(129, "[", "]")))
      assert.is_table(json.decode(nested(128, "[", "]")))
      local deep = json.decode(nested(1000, "[", "]"), { max_depth = 1000 })
      for _ = 1, 999 do deep = deep[1] end
      assert.are.same({}, deep)
      assert.matches("nested deeper than 5", decode_fails(nested(6, "[", "]"), { max_depth = 5 }))
      assert.matches("nested deeper than 1 ", decode_fails("[[1]]", { max_depth = 1 }))
      assert.are.equal(1, json.decode("[1]", { max_depth = 1 })[1])
    end)

    it("raises on bad options", function()
      assert.has_error(function() json.decode("1", { max_depth = 0 }) end)
      assert.has_error(function() json.decode("1", { max_depth = 1001 }) end)
      assert.has_error(function() json.decode("1", { max_depth = "x" }) end)
      assert.has_error(function() json.decode({}) end)
    end)

    it("decodes a recorded stats reply with huge counters exactly", function()
      local s = json.decode(read_fixture("container_stats.json"))
      assert.are.equal(123456789012345678, s.cpu_stats.cpu_usage.total_usage)
      assert.are.equal(61728394506172839, s.cpu_stats.cpu_usage.percpu_usage[2])
      assert.are.equal(1000, s.cpu_stats.cpu_usage.usage_in_usermode)
      assert.are.equal(math.maxinteger, s.cpu_stats.system_cpu_usage)
      assert.are.equal(9223372036854771712, s.memory_stats.limit)
      assert.are.equal("integer", math.type(s.memory_stats.stats.hierarchical_memory_limit))
      assert.are.equal(9007199254740993, s.blkio_stats.io_service_bytes_recursive[2].value)
      assert.are.equal("float", math.type(s.pids_stats.limit))
      assert.are.equal(json.null, s.blkio_stats.io_serviced_recursive)
      assert.are.equal("a && b > c", s.labels["com.example.cmd"])
      assert.are.equal("😀", s.labels.emoji)
      assert.are.equal("x\0y", s.labels.nul)
      assert.are.equal(0, #s.cpu_stats.cpu_usage.percpu_usage - 2)
      assert.are.equal(1234, s.networks.eth0.rx_bytes)
      -- And back: the same values come out again.
      assert.are.same(s, json.decode(json.encode(s)))
    end)

    it("decodes a large document", function()
      local parts = {}
      for i = 1, 20000 do
        parts[i] = string.format('{"id":%d,"name":"c%d","v":%d.5}', i, i, i)
      end
      local v = json.decode("[" .. table.concat(parts, ",") .. "]")
      assert.are.equal(20000, #v)
      assert.are.equal(19999.5, v[19999].v)
      assert.are.equal("c20000", v[20000].name)
    end)
  end)

  describe("encode", function()
    it("encodes scalars", function()
      assert.are.equal("true", json.encode(true))
      assert.are.equal("false", json.encode(false))
      assert.are.equal("null", json.encode(nil))
      assert.are.equal("null", json.encode(json.null))
      assert.are.equal('"s"', json.encode("s"))
      assert.are.equal("1.5", json.encode(1.5))
    end)

    it("prints integers exactly", function()
      assert.are.equal("0", json.encode(0))
      assert.are.equal("-1", json.encode(-1))
      assert.are.equal("9007199254740992", json.encode(1 << 53))
      assert.are.equal("9007199254740993", json.encode((1 << 53) + 1))
      assert.are.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.are.equal("-9223372036854775808", json.encode(math.mininteger))
      assert.are.equal("[1,-22,333]", json.encode({ 1, -22, 333 }))
    end)

    it("prints floats that read back as the same number", function()
      assert.are.equal("2", json.encode(2.0))
      assert.are.equal(2, json.decode(json.encode(2.0)))
      assert.are.equal("1e+15", json.encode(1e15))
      assert.are.equal(1e15, json.decode(json.encode(1e15)))
      assert.are.equal(2.0 ^ 63, json.decode(json.encode(2.0 ^ 63)))
      assert.are.equal(0.1 + 0.2, json.decode(json.encode(0.1 + 0.2)))
      assert.are.equal("0.30000000000000004", json.encode(0.1 + 0.2))
    end)

    it("refuses NaN and infinities", function()
      assert.matches("NaN", encode_fails(0 / 0))
      assert.matches("infinity", encode_fails(math.huge))
      assert.matches("infinity at %$%.x", encode_fails({ x = -math.huge }))
    end)

    it("refuses functions, threads and userdata", function()
      assert.matches("function", encode_fails(print))
      assert.matches("thread", encode_fails(coroutine.create(print)))
      assert.matches("userdata", encode_fails({ io.stdout }))
      assert.are.equal("cannot encode to JSON: a value of type function at $.a.b[2]",
        encode_fails({ a = { b = { 1, print } } }))
      assert.matches('at %$%["odd key"%]', encode_fails({ ["odd key"] = print }))
    end)

    it("encodes sequences as arrays and string keys as objects", function()
      assert.are.equal("[1,2,3]", json.encode({ 1, 2, 3 }))
      assert.are.equal('{"a":1}', json.encode({ a = 1 }))
      assert.are.equal('[{"a":[true]}]', json.encode({ { a = { true } } }))
      assert.are.equal("{}", json.encode({}))
      assert.are.equal("[]", json.encode(json.array()))
      assert.are.equal("[1,2]", json.encode(json.array({ 1, 2 })))
      local t = {}
      for i = 1, 100 do t[i] = i end
      local s = json.encode(t)
      assert.are.equal(100, #json.decode(s))
      -- Keys 1..n in the hash part, in any order, still make an array.
      local h = {}
      h[3] = "c"; h[1] = "a"; h[2] = "b"
      assert.are.equal('["a","b","c"]', json.encode(h))
      local r = {}
      for i = 50, 1, -1 do r[i] = i end
      assert.are.same(r, json.decode(json.encode(r)))
    end)

    it("refuses mixed and sparse tables and odd keys", function()
      assert.matches("mixes array and object keys", encode_fails({ 1, 2, a = 3 }))
      assert.matches("mixes array and object keys", encode_fails({ a = 1, [1] = 2 }))
      assert.matches("sparse array", encode_fails({ 1, nil, 3 }))
      assert.matches("sparse array", encode_fails({ [2] = 1 }))
      assert.matches("sparse array", encode_fails({ [0] = 1 }))
      assert.matches("sparse array", encode_fails({ [-1] = 1, [1] = 1 }))
      assert.matches("sparse array", encode_fails({ [1] = 1, [1000000] = 2 }))
      assert.matches("key 1.5 is not an integer", encode_fails({ [1.5] = 1 }))
      assert.matches("key of type boolean", encode_fails({ [true] = 1 }))
      assert.matches("key of type table", encode_fails({ [{}] = 1 }))
    end)

    it("encodes a tagged array as t[1..#t], holes as null", function()
      assert.are.equal("[1,null,3]", json.encode(json.array({ 1, nil, 3 })))
      local a = json.array({ 1, 2 })
      a.ignored = true
      assert.are.equal("[1,2]", json.encode(a))
    end)

    it("refuses cycles and too deep nesting", function()
      local t = {}
      t.self = t
      assert.matches("nested deeper than 128 levels", encode_fails(t))
      local a = json.array()
      a[1] = a
      assert.matches("nested deeper than", encode_fails(a))
      local deep = {}
      local cur = deep
      for _ = 1, 199 do
        cur[1] = {}
        cur = cur[1]
      end
      assert.matches("nested deeper than 128", encode_fails(deep))
      assert.are.equal(string.rep("[", 199) .. "{}" .. string.rep("]", 199), json.encode(deep, { max_depth = 200 }))
      assert.matches("nested deeper than 2", encode_fails({ { {} } }, { max_depth = 2 }))
      assert.are.equal("[[{}]]", json.encode({ { {} } }, { max_depth = 3 }))
    end)

    it("escapes strings per RFC 8259", function()
      assert.are.equal([["\"\\/\b\f\n\r\t"]], json.encode('"\\/\b\f\n\r\t'))
      assert.are.equal([["\u0000\u0001\u001f "]], json.encode("\0\1\31 "))
      assert.are.equal('"é€😀"', json.encode("é€😀"))
      assert.are.equal('{"k\\"ey\\n":1}', json.encode({ ['k"ey\n'] = 1 }))
      local all = {}
      for i = 0, 127 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      assert.are.equal(all, json.decode(json.encode(all)))
    end)

    it("escapes each control character in its one form", function()
      local short = { [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r" }
      for i = 0, 31 do
        local want = short[i] or ("\\u%04x"):format(i)
        assert.are.equal('"' .. want .. '"', json.encode(string.char(i)), "byte " .. i)
      end
      assert.are.equal('"\127~"', json.encode("\127~"))
    end)

    it("replaces bytes that are not UTF-8 with U+FFFD", function()
      assert.are.equal('"a\\ufffdb"', json.encode("a\255b"))
      -- Each byte outside a well-formed sequence is replaced, as Go does.
      assert.are.equal('"\\ufffd\\ufffd"', json.encode("\xc0\xaf")) -- overlong '/'
      assert.are.equal('"\\ufffd\\ufffd\\ufffd"', json.encode("\xed\xa0\x80")) -- surrogate
      assert.are.equal('"\\ufffd\\ufffd"', json.encode("\xe2\x82")) -- cut short
      assert.are.equal('"\\ufffd\\ufffd\\ufffd\\ufffd"', json.encode("\xf4\x90\x80\x80")) -- > U+10FFFF
      assert.are.equal('"\xf4\x8f\xbf\xbf"', json.encode("\xf4\x8f\xbf\xbf")) -- U+10FFFF
    end)

    it("pretty-prints text that decodes back", function()
      assert.are.equal('{\n  "a": [\n    1,\n    2\n  ]\n}', json.encode({ a = { 1, 2 } }, { pretty = true }))
      assert.are.equal("[]", json.encode(json.array(), { pretty = true }))
      assert.are.equal('[\n  {}\n]', json.encode({ {} }, { pretty = true }))
      local v = { id = "abc", list = { 1, 2.5, "x", json.null, { deep = { true, false } } }, empty = json.array() }
      local text = json.encode(v, { pretty = true })
      assert.matches("\n", text)
      assert.are.same(v, json.decode(text))
      assert.is_true(json.is_array(json.decode(text).empty))
    end)

    it("raises on bad options", function()
      assert.has_error(function() json.encode(1, { pretty = "yes" }) end)
      assert.has_error(function() json.encode(1, { max_depth = 0 }) end)
      assert.has_error(function() json.encode() end)
    end)

    it("pretty-prints nested objects and sequences the same, sorted or not", function()
      local v = { b = { 1, { x = 1 } }, a = { c = json.array() } }
      local want = '{\n  "a": {\n    "c": []\n  },\n  "b": [\n    1,\n    {\n      "x": 1\n    }\n  ]\n}'
      assert.are.equal(want, json.encode(v, { pretty = true, sort_keys = true }))
      local unsorted = json.encode(v, { pretty = true })
      assert.are.equal(#want, #unsorted)
      assert.are.same(v, json.decode(unsorted))
      -- a table that starts as a sequence and is not one is checked whole
      assert.matches("sparse array", select(2, json.encode({ 1, 2, [4] = 4 }, { pretty = true })))
    end)

    it("encodes a large table", function()
      local rows = {}
      for i = 1, 20000 do
        rows[i] = { id = i, name = "container-" .. i, cpu = i / 7, tags = json.array() }
      end
      local text = json.encode(rows)
      local back = json.decode(text)
      assert.are.equal(20000, #back)
      assert.are.equal(20000 / 7, back[20000].cpu)
      assert.are.equal("container-1", back[1].name)
    end)
  end)

  describe("array helpers", function()
    it("tags a table, or a new one", function()
      local t = { 1 }
      assert.are.equal(t, json.array(t))
      assert.is_true(json.is_array(t))
      local n = json.array()
      assert.is_true(json.is_array(n))
      assert.are.equal(nil, next(n))
      assert.are.equal(t, json.array(t)) -- tagging twice is fine
    end)

    it("refuses a table that has another metatable", function()
      assert.has_error(function() json.array(setmetatable({}, {})) end)
      assert.has_error(function() json.array("x") end)
    end)

    it("says no for anything that is not a tagged table", function()
      assert.is_false(json.is_array({}))
      assert.is_false(json.is_array("x"))
      assert.is_false(json.is_array(json.null))
      assert.is_false(json.is_array(setmetatable({}, {})))
    end)

    it("shares the metatable with other loads of the module", function()
      package.loaded["horcrux.json"] = nil
      local again = require("horcrux.json")
      assert.are.equal(json.array_mt, again.array_mt)
      assert.are.equal(json.null, again.null)
    end)
  end)

  describe("encode with sort_keys", function()
    it("prints object keys in byte order, at every depth", function()
      local v = { b = 1, a = 2, c = { z = 1, y = json.array({ { k2 = 1, k1 = 2 } }) }, ab = 3 }
      assert.are.equal('{"a":2,"ab":3,"b":1,"c":{"y":[{"k1":2,"k2":1}],"z":1}}',
        json.encode(v, { sort_keys = true }))
    end)

    it("is stable for a large object, and pretty-prints sorted", function()
      local t = {}
      for i = 1, 5000 do
        t[string.format("k%05d", (i * 7919) % 5000)] = i
      end
      local text = assert(json.encode(t, { sort_keys = true }))
      local last = ""
      for k in text:gmatch('"(k%d+)"') do
        assert.is_true(k > last)
        last = k
      end
      assert.are.equal('{\n  "a": 1,\n  "b": 2\n}',
        json.encode({ b = 2, a = 1 }, { sort_keys = true, pretty = true }))
    end)

    it("still refuses what cannot be encoded, naming where", function()
      local r, err, kind = json.encode({ b = { x = 0 / 0 }, a = 1 }, { sort_keys = true })
      assert.is_nil(r)
      assert.are.equal("bad_request", kind)
      assert.truthy(err:find("$.b.x", 1, true))
      r, err = json.encode({ a = 1, [1] = 2 }, { sort_keys = true })
      assert.is_nil(r)
      assert.is_string(err)
    end)
  end)
end)

