--- The route of `scripts/bench routes`, appended to the shipped
-- lua/routes.lua (so it is served beside every shipped route): the smallest
-- Lua JSON answer, the same one nginx's content_by_lua_block gives in the
-- same run. format.lua, fallback.lua and policy.lua come from lua/.
route("GET", "/bench", { query = {} }, function(req)
  return 200, { hello = "world", n = 42 }
end)
