-- horcrux.errors: the kinds, their statuses and structured failures.
local errors = require "horcrux.errors"

describe("horcrux.errors", function()
  it("gives every kind the modules return a status, and 500 to the rest", function()
    for kind, status in pairs({ bad_request = 400, unauthorized = 401,
      forbidden = 403, not_found = 404, method_not_allowed = 405,
      conflict = 409, too_large = 413, unsupported_media_type = 415,
      too_many_requests = 429, internal = 500, unsupported = 501,
      server = 502, protocol = 502, limit = 502, unavailable = 503,
      metrics_unavailable = 503, io = 503, timeout = 504 }) do
      assert.are.equal(status, errors.status(kind), kind)
      assert.are.equal(status, errors.KINDS[kind], kind)
    end
    assert.are.equal(500, errors.status("no_such_kind"))
    assert.are.equal(500, errors.status(nil))
  end)

  it("check passes values through and raises the failure of nil, msg, kind", function()
    local a, b, c = errors.check(1, "two", 3)
    assert.are.same({ 1, "two", 3 }, { a, b, c })
    assert.are.equal(false, select(2, pcall(errors.check, false)) and false)
    local ok, e = pcall(errors.check, nil, "docker: No such container: x",
      "not_found", { field = "id" })
    assert.is_false(ok)
    assert.is_true(errors.is(e))
    assert.are.equal("not_found", e.kind)
    assert.are.equal("docker: No such container: x", e.message)
    assert.are.equal("id", e.field)
    assert.are.equal("docker: No such container: x (not_found)", tostring(e))
  end)

  it("ignores the HTTP status horcrux.engine gives as a 4th value", function()
    local _, e = pcall(errors.check, nil, "docker: No such container: x",
      "not_found", 404)
    assert.are.equal("not_found", e.kind)
    assert.is_nil(e.field)
  end)

  it("takes a string extra as the field, and re-raises a failure as it is", function()
    local _, e = pcall(errors.check, nil, "query x: bad", "bad_request", "x")
    assert.are.equal("x", e.field)
    local f = errors.new("conflict", "busy")
    local _, e2 = pcall(errors.check, nil, f)
    assert.are.equal(f, e2)
  end)

  it("answers a failure with its status and the error shape", function()
    local status, body = errors.answer("forbidden", "no",
      { field = "privileged" })
    assert.are.equal(403, status)
    assert.are.same({ error = { code = "forbidden", message = "no",
      field = "privileged" } }, body)
    local s2, b2 = errors.answer(errors.new("timeout", "slow"))
    assert.are.equal(504, s2)
    assert.are.same({ error = { code = "timeout", message = "slow" } }, b2)
    assert.are.same({ error = { code = "internal", message = "m" } },
      errors.body(nil, "m"))
  end)

  it("gives an extra's headers as the answer's, not in the body", function()
    local f = errors.new("unavailable", "busy, ask again",
      { headers = { ["Retry-After"] = "5" }, field = "x" })
    local status, body, headers = errors.answer(f)
    assert.are.equal(503, status)
    assert.are.same({ error = { code = "unavailable",
      message = "busy, ask again", field = "x" } }, body)
    assert.are.same({ ["Retry-After"] = "5" }, headers)
    assert.are.equal(2, select("#", errors.answer("conflict", "no")))
  end)

  it("raise throws a failure, not a string", function()
    local ok, e = pcall(errors.raise, "unavailable", "daemon down")
    assert.is_false(ok)
    assert.is_true(errors.is(e))
    assert.is_false(errors.is("unavailable"))
    assert.is_false(errors.is({ kind = "x", message = "y" }))
  end)
end)
