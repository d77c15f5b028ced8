/* placeholder: replaced by the real module */
#include "aux.h"
HX_EXPORT int luaopen_horcrux_json(lua_State *L) { return luaL_error(L, "horcrux.json: not built yet"); }
