--- The route of `scripts/bench routes`: the smallest Lua JSON answer, the
-- same one nginx's content_by_lua_block gives in the same run. format.lua
-- and fallback.lua come from the shipped lua/ folder.
route("GET", "/bench", function(req)
  return 200, { hello = "world", n = 42 }
end)
